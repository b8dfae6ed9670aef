import asyncio
import random
import time

from ringwork.wakeup import decode, encode, parse_endpoint
from ringwork.worker.failures import describe_exception, retry_delay
from ringwork.worker.wakeups import Kick


def test_retry_delay_grows_exponentially_with_bounded_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 8):
        delay = retry_delay(attempt, 1.0, 600.0, rng)
        nominal = 2 ** (attempt - 1)
        assert 0.5 * nominal <= delay < 1.5 * nominal
    assert retry_delay(30, 1.0, 60.0, rng) < 90.0


def test_describe_exception_keeps_type_message_and_traceback() -> None:
    try:
        raise ValueError("bad input 42")
    except ValueError as exc:
        text = describe_exception(exc)
    assert text.startswith("ValueError: bad input 42")
    assert "test_describe_exception" in text


def test_describe_exception_is_bounded() -> None:
    text = describe_exception(RuntimeError("x" * 10_000))
    assert len(text) <= 4000


def test_wake_datagram_roundtrip_and_foreign_input() -> None:
    assert decode("c1", encode("c1", {3, 1})) == {1, 3}
    assert decode("c2", encode("c1", {3})) is None
    assert decode("c1", encode("c1", range(2000))) == set()  # too long -> "all"
    for junk in (b"", b"\xff\xfe", b"RWK1", b"RWK1 c1 x,y", b"HTTP/1.1 200 OK"):
        assert decode("c1", junk) is None


def test_parse_endpoint() -> None:
    assert parse_endpoint("udp://127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_endpoint("tcp://127.0.0.1:5000") is None
    assert parse_endpoint("") is None


def test_kick_wakes_its_waiter_times_out_and_stays_set_until_cleared() -> None:
    async def run() -> None:
        kick = Kick()
        started = time.monotonic()
        assert await kick.wait(0.02) is False
        assert time.monotonic() - started >= 0.015
        asyncio.get_running_loop().call_later(0.01, kick.set)
        assert await kick.wait(5) is True and kick.is_set()
        assert await kick.wait(5) is True  # still set: no wait
        kick.clear()
        assert await kick.wait(0) is False

    asyncio.run(run())


def test_nudges_reach_known_workers_before_the_registry_is_read_again(monkeypatch) -> None:
    import types

    from ringwork import wakeup

    monkeypatch.setattr(wakeup, "REGISTRY_TTL", 0.0)  # every nudge finds the view stale
    a, b = wakeup.WakeReceiver("c"), wakeup.WakeReceiver("c")
    listed = [[a], [a, b]]
    pending_at_read: list[set[int] | None] = []

    class Registry:
        cluster = "c"

        def list_nodes(self) -> list[types.SimpleNamespace]:
            pending_at_read.append(a.drain())
            return [types.SimpleNamespace(wake_endpoint=r.endpoint) for r in listed.pop(0)]

    sender = wakeup.WakeSender(Registry())  # type: ignore[arg-type]
    try:
        sender.nudge([1])  # nobody known yet: the first read finds a, who is nudged after it
        assert pending_at_read == [None]
        assert a.drain() == {1}
        sender.nudge([2])  # a is nudged before the read; b, new, right after it
        assert pending_at_read == [None, {2}]
        assert b.drain() == {2} and a.drain() is None
    finally:
        sender.close()
        a.close()
        b.close()
