"""The Graph emulator's notification sender misbehaves like Graph when asked to, and repeatably: items
lost, delivered more than once, and out of order, all from a seed."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox.graph.notify import Delivery, Notifier


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def deliveries(count: int, url: str = "http://127.0.0.1:1/notify") -> list[Delivery]:
    return [Delivery(url, {"n": n}) for n in range(count)]


def drain(notifier: Notifier, clock: FakeClock, until: float, step: float = 0.05) -> list[tuple[float, int]]:
    """Advance ``clock`` to ``until`` in steps, taking what is due at each: (time taken, item)."""
    taken: list[tuple[float, int]] = []
    for _ in range(int((until - clock.now) / step) + 2):
        for d in notifier.take_due():
            assert d.due <= clock.now  # nothing goes out before its hold is over
            taken.append((clock.now, d.item["n"]))
        clock.now = min(until, clock.now + step)
    return taken


def chaotic(seed: int, clock: FakeClock, drop: Iterator[bool] | None = None) -> Notifier:
    flags = drop or itertools.repeat(False)
    notifier = Notifier(should_drop=lambda: next(flags), seed=seed, clock=clock)
    notifier.configure({"max_copies": 3, "hold_max_s": 2.0})
    return notifier


def test_by_default_every_item_goes_out_once_in_the_order_it_was_queued() -> None:
    clock = FakeClock()
    notifier = Notifier(should_drop=lambda: False, clock=clock)
    notifier.enqueue(deliveries(20))
    assert [d.item["n"] for d in notifier.take_due()] == list(range(20))
    assert notifier.take_due() == []


def test_each_item_goes_out_one_to_three_times_and_out_of_order() -> None:
    clock = FakeClock()
    notifier = chaotic(5, clock)
    notifier.enqueue(deliveries(200))
    sent = [n for _, n in drain(notifier, clock, clock.now + 2.0)]
    times = Counter(sent)
    assert set(times) == set(range(200))  # nothing lost without a drop rate
    assert set(times.values()) == {1, 2, 3}
    assert len(sent) == 200 + notifier.stats.copies
    assert sent != sorted(sent)  # the holds reorder them
    firsts = list(dict.fromkeys(sent))
    assert firsts != list(range(200))  # not merely duplicated in place: distinct items are reordered
    assert notifier.stats.queued == 200


def test_a_held_copy_waits_at_most_the_bound() -> None:
    clock = FakeClock()
    notifier = chaotic(9, clock)
    start = clock.now
    notifier.enqueue(deliveries(50))
    taken = drain(notifier, clock, start + 2.0)
    assert notifier.take_due() == []
    assert all(at - start <= 2.0 for at, _ in taken)
    assert any(at - start > 0.5 for at, _ in taken)  # and some copies are held back a while


def test_the_same_seed_sends_the_same_copies_in_the_same_order() -> None:
    runs = []
    for _ in range(2):
        clock = FakeClock()
        notifier = chaotic(42, clock)
        notifier.enqueue(deliveries(100))
        runs.append([n for _, n in drain(notifier, clock, clock.now + 2.0)])
    assert runs[0] == runs[1]
    clock = FakeClock()
    other = chaotic(43, clock)
    other.enqueue(deliveries(100))
    assert [n for _, n in drain(other, clock, clock.now + 2.0)] != runs[0]


def test_a_dropped_item_is_not_sent_in_any_copy() -> None:
    clock = FakeClock()
    notifier = chaotic(3, clock, drop=itertools.cycle([True, False]))
    notifier.configure({"drop_rate": 0.5})  # should_drop is asked only under a drop rate
    notifier.enqueue(deliveries(40))
    sent = {n for _, n in drain(notifier, clock, clock.now + 2.0)}
    assert sent == set(range(1, 40, 2))
    assert notifier.stats.dropped == 20
    assert [i["n"] for i in notifier.stats.dropped_items] == list(range(0, 40, 2))


def test_reset_makes_delivery_faithful_again() -> None:
    clock = FakeClock()
    notifier = chaotic(5, clock)
    notifier.configure({"drop_rate": 0.1})
    notifier.reset()
    assert notifier.settings() | {"seed": 0} == Notifier(should_drop=lambda: False).settings()
    notifier.enqueue(deliveries(10))
    assert [d.item["n"] for d in notifier.take_due()] == list(range(10))


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"max_copies": 0}, "max_copies must be within 1..10"),
        ({"max_copies": 11}, "max_copies must be within 1..10"),
        ({"hold_max_s": -1}, "hold_max_s must be within 0..60"),
        ({"hold_max_s": 61}, "hold_max_s must be within 0..60"),
        ({"copies": 2}, "unknown notification settings"),
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Notifier(should_drop=lambda: False).configure(settings)


# -- through the sending thread, to a loopback receiver -----------------------------------------------


class Receiver:
    """Records the items of every notification POST and answers 202."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.items.extend(body["value"])
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/notify"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def test_the_sender_delivers_every_copy_once_its_hold_is_over(receiver: Receiver) -> None:
    notifier = Notifier(should_drop=lambda: False, seed=8)
    notifier.configure({"max_copies": 3, "hold_max_s": 0.3})
    notifier.start()
    try:
        notifier.enqueue(deliveries(30, receiver.url))
        assert notifier.idle(timeout_s=30)
    finally:
        notifier.stop()
    times = Counter(item["n"] for item in receiver.items)
    assert set(times) == set(range(30))
    assert set(times.values()) <= {1, 2, 3}
    assert sum(times.values()) == 30 + notifier.stats.copies == notifier.stats.delivered
    assert notifier.stats.copies > 0
