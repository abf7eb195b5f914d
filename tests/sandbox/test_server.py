"""The emulator base: routing, request log, rate limits, fault injection and control endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from sandbox.server import Emulator, FaultRule, HttpError, RateLimit, Request, Response


class Toy(Emulator):
    api_prefix = "/api"
    name = "toy"

    def __init__(self) -> None:
        super().__init__(fault_seed=7)
        self.items: dict[str, str] = {}
        self.add_route("GET", r"/api/items/(?P<id>[^/]+)", "items.get", self.get_item)
        self.add_route("PUT", r"/api/items/(?P<id>[^/]+)", "items.put", self.put_item)

    def get_item(self, request: Request) -> Response:
        if request.params["id"] not in self.items:
            raise HttpError(404, "missing", f"no item {request.params['id']}")
        return Response.json({"id": request.params["id"], "value": self.items[request.params["id"]]})

    def put_item(self, request: Request) -> Response:
        self.items[request.params["id"]] = request.json()["value"]
        return Response.empty()

    def reset(self) -> None:
        self.items.clear()

    def snapshot(self) -> dict[str, object]:
        return {"items": dict(self.items)}


@pytest.fixture
def toy() -> Iterator[Toy]:
    with Toy() as emulator:
        yield emulator  # type: ignore[misc]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def test_routes_decode_params_and_render_errors(toy: Toy, http: httpx.Client) -> None:
    assert http.put(f"{toy.base_url}/items/a%2Fb", json={"value": "x"}).status_code == 204
    assert http.get(f"{toy.base_url}/items/a%2Fb").json() == {"id": "a/b", "value": "x"}
    missing = http.get(f"{toy.base_url}/items/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "missing", "message": "no item nope"}
    assert http.post(f"{toy.base_url}/items/a").status_code == 405
    assert http.get(f"{toy.base_url}/other").status_code == 404
    assert http.put(f"{toy.base_url}/items/z", content=b"{not json").status_code == 400


def test_request_log_counts_per_route_and_writes(toy: Toy, http: httpx.Client) -> None:
    http.put(f"{toy.base_url}/items/1", json={"value": "v"})
    for _ in range(3):
        http.get(f"{toy.base_url}/items/1")
    http.get(f"{toy.origin}/_control/snapshot")  # control calls are not counted
    summary = http.get(f"{toy.origin}/_control/requests").json()
    assert summary["by_route"] == {"items.get": 3, "items.put": 1}
    assert summary["writes"] == 1
    assert summary["total"] == 4
    assert http.delete(f"{toy.origin}/_control/requests").status_code == 204
    assert toy.log.total == 0


def test_rate_limit_answers_429_with_retry_after_then_recovers(toy: Toy, http: httpx.Client) -> None:
    toy.items["1"] = "v"
    limits = {"items.*": {"burst": 2, "per_second": 4.0}}
    assert http.put(f"{toy.origin}/_control/limits", json=limits).status_code == 200
    statuses = [http.get(f"{toy.base_url}/items/1").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = http.get(f"{toy.base_url}/items/1")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    time.sleep(0.3)  # a quarter second refills one token at 4 per second
    assert http.get(f"{toy.base_url}/items/1").status_code == 200


def test_a_limit_without_retry_after_sends_none(toy: Toy, http: httpx.Client) -> None:
    toy.limits.configure({"items.get": RateLimit(burst=1, per_second=1.0, retry_after=False)})
    toy.items["1"] = "v"
    http.get(f"{toy.base_url}/items/1")
    limited = http.get(f"{toy.base_url}/items/1")
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers


def test_faults_are_seeded_and_counted(toy: Toy, http: httpx.Client) -> None:
    toy.items["1"] = "v"
    body = {"seed": 3, "rules": [{"route": "items.get", "kind": "error", "status": 503, "rate": 0.5}]}

    def run() -> list[int]:
        http.put(f"{toy.origin}/_control/faults", json=body)
        return [http.get(f"{toy.base_url}/items/1").status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second  # same seed, same sequence
    assert 0 < first.count(503) < 20
    assert set(first) == {200, 503}


def test_a_limited_count_of_faults_then_normal_service(toy: Toy, http: httpx.Client) -> None:
    toy.items["1"] = "v"
    toy.faults.configure([FaultRule("items.get", kind="error", status=500, count=2)])
    assert [http.get(f"{toy.base_url}/items/1").status_code for _ in range(3)] == [500, 500, 200]


def test_a_dropped_request_times_out_at_the_client(toy: Toy, http: httpx.Client) -> None:
    toy.items["1"] = "v"
    toy.faults.configure([FaultRule("items.get", kind="drop", count=1)])
    with pytest.raises(httpx.TransportError):
        http.get(f"{toy.base_url}/items/1")
    assert http.get(f"{toy.base_url}/items/1").status_code == 200
    assert [e.status for e in toy.log.entries()] == [0, 200]


def test_reset_clears_state_log_limits_and_faults(toy: Toy, http: httpx.Client) -> None:
    http.put(f"{toy.base_url}/items/1", json={"value": "v"})
    toy.limits.configure({"*": RateLimit(1, 1.0)})
    toy.faults.configure([FaultRule("*", rate=0.0)])
    assert http.post(f"{toy.origin}/_control/reset").status_code == 204
    assert http.get(f"{toy.origin}/_control/snapshot").json() == {"items": {}}
    assert toy.log.total == 0
    assert toy.limits.rules() == {}
    assert toy.faults.rules() == []


def test_bad_control_input_is_a_clear_400(toy: Toy, http: httpx.Client) -> None:
    bad = http.put(f"{toy.origin}/_control/faults", json={"rules": [{"route": "*", "kind": "explode"}]})
    assert bad.status_code == 400
    assert "unknown fault kind" in bad.json()["message"]


def test_only_loopback_is_allowed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Emulator(host="0.0.0.0")  # noqa: S104 - the point of the test
