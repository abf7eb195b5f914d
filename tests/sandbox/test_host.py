"""The sandbox Functions host drives a v2 app's HTTP, queue and timer functions like the real host."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import httpx
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from sandbox.azurite import Azurite
from sandbox.host import FunctionsHost, HostConfigurationError, compile_route, parse_timespan

pytestmark = pytest.mark.azurite

KEY = "test-function-key"
HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "functionTimeout": "00:05:00",
    "extensions": {
        "queues": {
            "batchSize": 2,
            "newBatchThreshold": 1,
            "maxDequeueCount": 3,
            # Long on purpose: the tests pass visibility_timeout_s=0.2, so retries only happen in
            # time if the override wins.
            "visibilityTimeout": "00:00:30",
        },
        "http": {"routePrefix": "api"},
    },
}


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    active: int = 0
    max_active: int = 0

    def add(self, name: str, **data: Any) -> None:
        with self.lock:
            self.calls.setdefault(name, []).append({"at": time.monotonic(), **data})

    def get(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.calls.get(name, []))


def build_app(run_id: str, rec: Recorder) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("items")
    @app.route(route="items/{item_id}", methods=["GET", "POST"])
    def items(req: func.HttpRequest) -> func.HttpResponse:
        payload = {
            "route_params": dict(req.route_params),
            "params": dict(req.params),
            "method": req.method,
            "body": req.get_body().decode(),
            "header": req.headers.get("x-test"),
            "url": req.url,
            "thread": threading.current_thread().name,
        }
        return func.HttpResponse(
            json.dumps(payload),
            status_code=201 if req.method == "POST" else 200,
            headers={"X-Served-By": "items"},
            mimetype="application/json",
        )

    @app.function_name("special")
    @app.route(route="items/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def special(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("special", headers={"X-Thread": threading.current_thread().name})

    @app.function_name("open")
    @app.route(route="open", auth_level=func.AuthLevel.ANONYMOUS)
    async def open_(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(0)
        return func.HttpResponse("open to all")

    @app.function_name("admin_only")
    @app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin")

    @app.function_name("boom")
    @app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("the function failed")

    @app.function_name("nap")
    @app.route(route="nap", auth_level=func.AuthLevel.ANONYMOUS)
    async def nap(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(float(req.params["s"]))
        return func.HttpResponse("rested")

    @app.function_name("plain")
    @app.route(route="plain", auth_level=func.AuthLevel.ANONYMOUS)
    def plain(req: func.HttpRequest) -> str:
        return "just text"

    @app.function_name("echo")
    @app.queue_trigger(arg_name="msg", queue_name=f"echo-{run_id}", connection="AzureWebJobsStorage")
    def echo(msg: func.QueueMessage, context: func.Context) -> None:
        rec.add(
            "echo",
            body=msg.get_body(),
            id=msg.id,
            dequeue_count=msg.dequeue_count,
            insertion_time=msg.insertion_time,
            pop_receipt=msg.pop_receipt,
            invocation_id=context.invocation_id,
            function_name=context.function_name,
            thread=threading.current_thread().name,
        )

    @app.function_name("flaky")
    @app.queue_trigger(arg_name="msg", queue_name=f"flaky-{run_id}", connection="AzureWebJobsStorage")
    def flaky(msg: func.QueueMessage) -> None:
        rec.add("flaky", body=msg.get_body(), dequeue_count=msg.dequeue_count)
        if msg.dequeue_count <= 2:
            raise RuntimeError(f"transient failure {msg.dequeue_count}")

    @app.function_name("doomed")
    @app.queue_trigger(arg_name="msg", queue_name=f"doomed-{run_id}", connection="AzureWebJobsStorage")
    def doomed(msg: func.QueueMessage) -> None:
        rec.add("doomed", dequeue_count=msg.dequeue_count)
        raise RuntimeError("always fails")

    @app.function_name("slow")
    @app.queue_trigger(arg_name="msg", queue_name=f"slow-{run_id}", connection="AzureWebJobsStorage")
    async def slow(msg: func.QueueMessage) -> None:
        with rec.lock:
            rec.active += 1
            rec.max_active = max(rec.max_active, rec.active)
        try:
            rec.add("slow", body=msg.get_body(), thread=threading.current_thread().name)
            await asyncio.sleep(float(msg.get_body().decode()))
        finally:
            with rec.lock:
                rec.active -= 1

    @app.function_name("tick")
    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
    def tick(timer: func.TimerRequest) -> str:
        rec.add("tick", past_due=timer.past_due)
        return "ticked"

    return app


@dataclass
class Env:
    host: FunctionsHost
    rec: Recorder
    run_id: str
    connection: str

    def producer(self, queue: str, base64: bool = True) -> QueueClient:
        policy = TextBase64EncodePolicy() if base64 else None
        return QueueClient.from_connection_string(self.connection, queue, message_encode_policy=policy)

    def queue_count(self, queue: str) -> int:
        with QueueClient.from_connection_string(self.connection, queue) as client:
            return int(client.get_queue_properties().approximate_message_count or 0)


@pytest.fixture
def env(azurite: Azurite, run_id: str) -> Iterator[Env]:
    rec = Recorder()
    host = FunctionsHost(
        build_app(run_id, rec),
        storage_connection=azurite.connection_string,
        host_json=HOST_JSON,
        visibility_timeout_s=0.2,
        polling_interval_s=0.02,
        function_key=KEY,
    )
    with host:
        yield Env(host, rec, run_id, azurite.connection_string)


# ------------------------------------------------------------------------------------ HTTP


def test_routes_pass_route_params_query_headers_and_body(env: Env) -> None:
    base = env.host.base_url
    assert base.startswith("http://127.0.0.1:") and base.endswith("/api")

    r = httpx.get(f"{base}/items/42?x=1&x=2&empty=&code={KEY}", headers={"X-Test": "yes"})
    assert r.status_code == 200
    assert r.headers["x-served-by"] == "items"
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["route_params"] == {"item_id": "42"}
    assert body["params"] == {"x": "1,2", "empty": "", "code": KEY}
    assert body["method"] == "GET"
    assert body["header"] == "yes"
    assert body["url"] == f"{base}/items/42?x=1&x=2&empty=&code={KEY}"
    assert body["thread"].startswith("functions-sync")  # sync functions run in the worker's pool

    r = httpx.post(f"{base}/items/a%20b", content=b"payload", headers={"x-functions-key": KEY})
    assert r.status_code == 201
    assert r.json()["route_params"] == {"item_id": "a b"}
    assert r.json()["body"] == "payload"

    # A literal route wins over a parameter at the same position; async functions run on the loop.
    r = httpx.get(f"{base}/items/special")
    assert r.status_code == 200 and r.text == "special"
    assert r.headers["x-thread"] == f"functions-host-loop-{env.host.instance_id}"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_unknown_routes_are_404_and_wrong_methods_405(env: Env) -> None:
    base = env.host.base_url
    root = base.removesuffix("/api")
    assert httpx.get(f"{base}/nothing-here").status_code == 404
    assert httpx.get(f"{root}/items/1?code={KEY}").status_code == 404  # outside the route prefix
    assert httpx.get(f"{base}/items/1/extra?code={KEY}").status_code == 404
    r = httpx.delete(f"{base}/items/1?code={KEY}")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert httpx.post(f"{base}/admin-only?code={KEY}").status_code == 405
    # A method the literal route does not take falls through to the parameter route that takes it.
    r = httpx.post(f"{base}/items/special?code={KEY}")
    assert r.status_code == 201 and r.json()["route_params"] == {"item_id": "special"}
    assert env.host.stats()["_host"]["unrouted_requests"] == 3


def test_auth_levels_need_the_function_key(env: Env) -> None:
    base = env.host.base_url
    assert httpx.get(f"{base}/items/1").status_code == 401
    assert httpx.get(f"{base}/items/1?code=wrong").status_code == 401
    assert httpx.get(f"{base}/items/1", headers={"x-functions-key": "wrong"}).status_code == 401
    assert httpx.get(f"{base}/items/1?code={KEY}").status_code == 200
    assert httpx.get(f"{base}/items/1", headers={"x-functions-key": KEY}).status_code == 200
    assert httpx.get(f"{base}/admin-only").status_code == 401
    assert httpx.get(f"{base}/admin-only?code={KEY}").text == "admin"
    r = httpx.get(f"{base}/open")
    assert r.status_code == 200 and r.text == "open to all"
    # A rejected request never reaches the function.
    stats = env.host.stats()
    assert stats["items"]["invocations"] == 2
    assert stats["admin_only"]["invocations"] == 1


def test_failures_answer_500_and_str_returns_are_text(env: Env) -> None:
    base = env.host.base_url
    r = httpx.get(f"{base}/boom")
    assert r.status_code == 500 and r.content == b""
    r = httpx.get(f"{base}/plain")
    assert r.status_code == 200 and r.text == "just text"
    stats = env.host.stats()
    assert (stats["boom"]["invocations"], stats["boom"]["failed"]) == (1, 1)
    assert stats["boom"]["answer_time_s"]["count"] == 1
    assert stats["plain"]["succeeded"] == 1


def test_invoke_http_without_the_socket(env: Env) -> None:
    by_name = env.host.invoke_http(
        "items", "POST", body="hi", route_params={"item_id": "7"}, headers={"x-functions-key": KEY}
    )
    assert by_name.status_code == 201
    assert by_name.json()["route_params"] == {"item_id": "7"}
    assert by_name.json()["body"] == "hi"
    by_path = env.host.invoke_http("items/8", params={"code": KEY, "q": "v"})
    assert by_path.status_code == 200
    assert by_path.json()["params"] == {"code": KEY, "q": "v"}
    assert env.host.invoke_http("items/8").status_code == 401
    assert env.host.invoke_http("nope").status_code == 404
    answers = env.host.stats(raw=True)["items"]["samples"]["answer_time_s"]
    assert len(answers) == 3 and all(0 < t < 5 for t in answers)


def test_no_key_configured_means_no_key_checks_and_prebuilt_functions(azurite: Azurite, run_id: str) -> None:
    app = build_app(run_id, Recorder())
    functions = app.get_functions()  # indexed once, handed over
    with FunctionsHost.from_functions(
        functions, storage_connection=azurite.connection_string, host_json=HOST_JSON
    ) as host:
        assert httpx.get(f"{host.base_url}/items/1").status_code == 200
        assert httpx.get(f"{host.base_url}/admin-only").status_code == 200
        assert host.queue_names() == sorted(f"{p}-{run_id}" for p in ("doomed", "echo", "flaky", "slow"))
    # A second host on the same app object reuses the first index instead of failing on duplicates.
    other = build_app(run_id, Recorder())
    with FunctionsHost(other, storage_connection=azurite.connection_string, host_json=HOST_JSON) as h1:
        assert httpx.get(f"{h1.base_url}/plain").text == "just text"
    with FunctionsHost(other, storage_connection=azurite.connection_string, host_json=HOST_JSON) as h2:
        assert httpx.get(f"{h2.base_url}/plain").text == "just text"


def test_an_http_only_host_answers_requests_and_leaves_the_queues_to_the_other_instances(
    azurite: Azurite, run_id: str
) -> None:
    """Flex Consumption's per-function scaling, as the benchmarks run it: the HTTP group's instance
    polls no queue; a message waits for an instance that runs the queue functions."""
    rec = Recorder()
    functions = build_app(run_id, rec).get_functions()
    options = {"storage_connection": azurite.connection_string, "host_json": HOST_JSON, "polling_interval_s": 0.02}
    queue = f"echo-{run_id}"
    producer = QueueClient.from_connection_string(
        azurite.connection_string, queue, message_encode_policy=TextBase64EncodePolicy()
    )

    def waiting() -> int:
        return int(producer.get_queue_properties().approximate_message_count or 0)

    with producer:
        producer.create_queue()
        with FunctionsHost.from_functions(functions, run_queues=False, **options) as web:  # type: ignore[arg-type]
            assert httpx.get(f"{web.base_url}/plain").text == "just text"
            producer.send_message("for a worker")
            assert web.wait_idle(5) and rec.get("echo") == [] and waiting() == 1
            with FunctionsHost.from_functions(functions, serve_http=False, **options) as worker:  # type: ignore[arg-type]
                assert worker.wait_idle(10)
        assert [c["body"] for c in rec.get("echo")] == [b"for a worker"] and waiting() == 0


# ------------------------------------------------------------------------------------ queues


def test_base64_messages_round_trip_and_are_deleted(env: Env) -> None:
    queue = f"echo-{env.run_id}"
    text = '{"user": "héllo wörld"}'
    with env.producer(queue) as producer:
        sent = producer.send_message(text)
    assert env.host.wait_idle(10)
    (call,) = env.rec.get("echo")
    assert call["body"] == text.encode("utf-8")
    assert call["id"] == sent.id
    assert call["dequeue_count"] == 1
    assert call["insertion_time"] is not None and call["pop_receipt"]
    assert call["function_name"] == "echo" and call["invocation_id"]
    assert call["thread"].startswith("functions-sync")
    assert env.queue_count(queue) == 0
    stats = env.host.stats()["echo"]
    assert (stats["invocations"], stats["succeeded"], stats["failed"]) == (1, 1, 0)
    assert stats["queue_wait_s"]["count"] == 1 and stats["run_time_s"]["count"] == 1


def test_text_that_is_not_base64_goes_to_poison_without_an_invocation(env: Env) -> None:
    queue = f"echo-{env.run_id}"
    with env.producer(queue, base64=False) as raw:
        raw.send_message("this is not base64 !!")
    assert env.host.wait_idle(10)
    assert env.rec.get("echo") == []
    with QueueClient.from_connection_string(env.connection, f"{queue}-poison") as poison:
        assert [m.content for m in poison.peek_messages(max_messages=5)] == ["this is not base64 !!"]
    assert env.host.stats()["echo"]["poisoned"] == 1


def test_message_encoding_none_passes_text_through(azurite: Azurite, run_id: str) -> None:
    rec = Recorder()
    host_json = json.loads(json.dumps(HOST_JSON))
    host_json["extensions"]["queues"]["messageEncoding"] = "none"
    with FunctionsHost(
        build_app(run_id, rec),
        storage_connection=azurite.connection_string,
        host_json=host_json,
        polling_interval_s=0.02,
    ) as host:
        with QueueClient.from_connection_string(azurite.connection_string, f"echo-{run_id}") as raw:
            raw.send_message("plain text, no base64")
        assert host.wait_idle(10)
    assert [c["body"] for c in rec.get("echo")] == [b"plain text, no base64"]


def test_failed_messages_return_after_the_visibility_timeout_with_growing_dequeue_count(env: Env) -> None:
    queue = f"flaky-{env.run_id}"
    with env.producer(queue) as producer:
        producer.send_message("retry me")
    assert env.host.wait_idle(10)
    calls = env.rec.get("flaky")
    assert [c["dequeue_count"] for c in calls] == [1, 2, 3]
    assert all(c["body"] == b"retry me" for c in calls)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.18 for gap in gaps), gaps  # invisible for the 0.2 s visibility timeout
    assert all(gap < 5 for gap in gaps), gaps  # ... and not host.json's 30 s
    stats = env.host.stats()["flaky"]
    assert (stats["invocations"], stats["failed"], stats["succeeded"], stats["poisoned"]) == (3, 2, 1, 0)
    assert env.queue_count(queue) == 0
    assert not _queue_exists(env, f"{queue}-poison")  # created only when a message is poisoned


def _queue_exists(env: Env, name: str) -> bool:
    with QueueClient.from_connection_string(env.connection, name) as client:
        try:
            client.get_queue_properties()
        except Exception:
            return False
        return True


def test_messages_that_fail_max_dequeue_count_times_move_to_the_poison_queue(env: Env) -> None:
    queue = f"doomed-{env.run_id}"
    assert not _queue_exists(env, f"{queue}-poison")
    with env.producer(queue) as producer:
        producer.send_message("poison me, ünïcode")
    assert env.host.wait_idle(10)
    assert [c["dequeue_count"] for c in env.rec.get("doomed")] == [1, 2, 3]  # maxDequeueCount 3
    assert env.queue_count(queue) == 0
    with QueueClient.from_connection_string(
        env.connection, f"{queue}-poison", message_decode_policy=TextBase64DecodePolicy()
    ) as poison:
        assert [m.content for m in poison.peek_messages(max_messages=5)] == ["poison me, ünïcode"]
    stats = env.host.stats()["doomed"]
    assert (stats["invocations"], stats["failed"], stats["poisoned"]) == (3, 3, 1)


def test_max_dequeue_count_one_poisons_on_the_first_failure(azurite: Azurite, run_id: str) -> None:
    rec = Recorder()
    host_json = json.loads(json.dumps(HOST_JSON))
    host_json["extensions"]["queues"]["maxDequeueCount"] = 1
    queue = f"doomed-{run_id}"
    with FunctionsHost(
        build_app(run_id, rec),
        storage_connection=azurite.connection_string,
        host_json=host_json,
        visibility_timeout_s=5,  # a retry would need this long; the poison move must not
        polling_interval_s=0.02,
    ) as host:
        with QueueClient.from_connection_string(
            azurite.connection_string, queue, message_encode_policy=TextBase64EncodePolicy()
        ) as producer:
            producer.send_message("once")
        assert host.wait_idle(3)
        assert host.stats()["doomed"]["poisoned"] == 1
    assert [c["dequeue_count"] for c in rec.get("doomed")] == [1]


def test_concurrency_is_batch_size_plus_new_batch_threshold(env: Env) -> None:
    queue = f"slow-{env.run_id}"
    with env.producer(queue) as producer:
        # Uneven run times, so that completions do not all land in the same instant.
        for i in range(10):
            producer.send_message("0.1" if i % 2 else "0.25")
    assert env.host.wait_idle(15)
    calls = env.rec.get("slow")
    assert len(calls) == 10
    assert env.rec.max_active == 3  # batchSize 2 + newBatchThreshold 1
    assert {c["thread"] for c in calls} == {f"functions-host-loop-{env.host.instance_id}"}  # one loop for all


def test_wait_idle_is_bounded_and_sees_running_work(env: Env) -> None:
    with env.producer(f"slow-{env.run_id}") as producer:
        producer.send_message("1.0")
    assert env.host.wait_idle(0.3) is False  # gives up (pytest-timeout would catch a hang)
    assert env.host.wait_idle(10) is True
    assert len(env.rec.get("slow")) == 1

    # An HTTP request in flight counts as work too.
    answers: list[int] = []
    client = threading.Thread(target=lambda: answers.append(httpx.get(f"{env.host.base_url}/nap?s=0.8").status_code))
    client.start()
    time.sleep(0.2)
    assert env.host.wait_idle(0.3) is False
    assert env.host.wait_idle(5) is True
    client.join(5)
    assert answers == [200]


# ------------------------------------------------------------------------------------ timers


def test_timers_run_on_demand_with_past_due(env: Env) -> None:
    assert env.host.schedule("tick") == "0 */5 * * * *"
    assert env.host.run_timer("tick", past_due=True) == "ticked"
    assert env.host.run_timer("tick") == "ticked"
    assert [c["past_due"] for c in env.rec.get("tick")] == [True, False]
    assert env.host.stats()["tick"]["invocations"] == 2
    with pytest.raises(KeyError):
        env.host.run_timer("items")


# ------------------------------------------------------------------------------------ lifecycle


def test_stop_is_bounded_and_releases_the_running_message(azurite: Azurite, run_id: str) -> None:
    rec = Recorder()
    host = FunctionsHost(
        build_app(run_id, rec),
        storage_connection=azurite.connection_string,
        host_json=HOST_JSON,
        polling_interval_s=0.02,
    ).start()
    port = host.port
    queue = f"slow-{run_id}"
    with QueueClient.from_connection_string(
        azurite.connection_string, queue, message_encode_policy=TextBase64EncodePolicy()
    ) as producer:
        producer.send_message("30")
    deadline = time.monotonic() + 10
    while not rec.get("slow") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rec.get("slow"), "the message was never picked up"

    host.stop(grace_s=0.2)
    mine = (f"functions-host-loop-{host.instance_id}", f"functions-host-http-{host.instance_id}")
    assert not [t.name for t in threading.enumerate() if t.name in mine and t.is_alive()]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    host.stop()  # idempotent
    # The interrupted message is visible again at once (peek sees only visible messages).
    with QueueClient.from_connection_string(azurite.connection_string, queue) as client:
        peeked = client.peek_messages(max_messages=5)
    assert [m.dequeue_count for m in peeked] == [1]


def test_bindings_the_host_cannot_serve_are_refused() -> None:
    app = func.FunctionApp()

    @app.function_name("fan_out")
    @app.route(route="fan-out")
    @app.queue_output(arg_name="out", queue_name="outbox", connection="AzureWebJobsStorage")
    def fan_out(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse("x")

    with pytest.raises(HostConfigurationError, match="queue"):
        FunctionsHost(app, storage_connection="UseDevelopmentStorage=true")


def test_route_templates_and_timespans() -> None:
    pattern, _ = compile_route("users/{id:int}/{section?}")
    assert pattern.match("users/12").groupdict() == {"id": "12", "section": None}  # type: ignore[union-attr]
    assert pattern.match("Users/12/roles").groupdict() == {"id": "12", "section": "roles"}  # type: ignore[union-attr]
    assert pattern.match("users/abc") is None
    pattern, _ = compile_route("files/{*path}")
    assert pattern.match("files/a/b/c").group("path") == "a/b/c"  # type: ignore[union-attr]
    assert parse_timespan("00:00:30") == 30
    assert parse_timespan("1.02:00:00.5") == 86400 + 7200.5
    assert parse_timespan(2000, int_unit_s=0.001) == 2.0
