"""The clock offset between participants (net.clock): the NTP arithmetic, the shortest round
trip winning over queued samples, bad and hostile messages dropped, and two real calls on
loopback (one machine: one monotonic clock) agreeing to within a millisecond."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from net.clock import FIRST_PINGS, MAX_ANSWERS_PER_S, ClockSync, ntp_sample


class _Clock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _pair(offset_s: float):
    """Two ClockSyncs whose clocks differ by ``offset_s`` (b minus a); messages are queued
    so the test decides when each arrives."""
    a_clock, b_clock = _Clock(100.0), _Clock(100.0 + offset_s)
    queues = {"a": [], "b": []}
    a = ClockSync(lambda rid, text: queues["b"].append(text), a_clock)
    b = ClockSync(lambda rid, text: queues["a"].append(text), b_clock)
    return a, b, a_clock, b_clock, queues


def _exchange(a, b, a_clock, b_clock, queues, there_s: float, back_s: float) -> None:
    """One ping from a, taking ``there_s`` to b and ``back_s`` to come back."""
    a.tick(["b"], a_clock.now)
    (ping,) = queues["b"]
    queues["b"].clear()
    a_clock.now += there_s
    b_clock.now += there_s
    assert b.handle("a", ping)
    (reply,) = queues["a"]
    queues["a"].clear()
    a_clock.now += back_s
    b_clock.now += back_s
    assert a.handle("b", reply)
    a_clock.now += 1.0  # the next ping is due
    b_clock.now += 1.0


def test_the_ntp_arithmetic_gives_offset_and_round_trip():
    sample = ntp_sample(10.0, 13.5, 13.6, 10.5)  # remote 3.3 s ahead, 0.1 s each way
    assert sample.offset_s == pytest.approx(3.3)
    assert sample.delay_s == pytest.approx(0.4)


def test_a_remote_clock_seconds_away_is_found_and_the_quickest_exchange_wins():
    a, b, a_clock, b_clock, queues = _pair(offset_s=-1234.5678)
    assert a.offset_s("b") is None
    _exchange(a, b, a_clock, b_clock, queues, 0.010, 0.010)   # symmetric: exact
    assert a.offset_s("b") == pytest.approx(-1234.5678, abs=1e-9)
    _exchange(a, b, a_clock, b_clock, queues, 0.300, 0.010)   # queued on the way: off by 145 ms
    assert a.offset_s("b") == pytest.approx(-1234.5678, abs=1e-9)  # ... and passed over
    assert a.to_local("b", 5000.0) == pytest.approx(5000.0 + 1234.5678)
    assert b.offset_s("a") is None  # only the side that pings learns
    assert a.summary("b")["samples"] == 2


def test_pings_come_quickly_at_first_then_once_a_second_and_stop_for_those_who_left():
    sent = []
    clock = _Clock(0.0)
    sync = ClockSync(lambda rid, text: sent.append(rid), clock)
    for step in range(40):  # 4 s in steps of 0.1 s
        clock.now = step * 0.1
        sync.tick(["x"], clock.now)
    assert FIRST_PINGS + 2 <= len(sent) <= FIRST_PINGS + 4
    sync.tick([], clock.now + 10)
    assert sync.summary("x")["samples"] == 0 and len(sent) <= FIRST_PINGS + 4


def test_bad_and_hostile_clock_messages_are_dropped_and_others_pass_through():
    a, b, a_clock, b_clock, queues = _pair(offset_s=2.0)
    assert not a.handle("b", '{"type": "hello"}')       # the avatar exchange's
    assert not a.handle("b", b"\x00binary")
    for junk in ('{"type": "clock"', '{"type": "clock", "t0": "x"}',
                 '{"type": "clock", "t0": NaN}', '{"type": "clock-reply", "t0": 1}',
                 '{"type": "clock-reply", "t0": 1, "t1": 2, "t2": 3}',  # no such ping
                 '{"type": "clocks"}', '{"type": "clock", "t0": 1, "pad": "' + "x" * 300 + '"}'):
        assert a.handle("b", junk)
    assert not queues["b"] and a.offset_s("b") is None
    assert a.summary("b")["refused"] == 7
    # A reply is used once: sent again, it is refused.
    a.tick(["b"], a_clock.now)
    b.handle("a", queues["b"].pop())
    reply = queues["a"].pop()
    assert a.handle("b", reply) and a.handle("b", reply)
    assert a.summary("b")["samples"] == 1
    # A flood of pings gets MAX_ANSWERS_PER_S answers a second.
    b_clock.now += 2.0
    for i in range(100):
        b.handle("a", json.dumps({"type": "clock", "t0": float(i)}))
    assert len(queues["a"]) == MAX_ANSWERS_PER_S


async def _two_calls(tmp_path):
    from net.call import Call
    from tests.calls import loopback_room

    server, config = await loopback_room(tmp_path)
    first, second = Call(config("first")), Call(config("second"))
    await first.join()
    await second.join()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            first.poses()   # the call's tick sends the pings
            second.poses()
            if all(call.remotes and all(call.clock.summary(rid)["samples"] >= FIRST_PINGS
                                        for rid in call.remotes) for call in (first, second)):
                break
            await asyncio.sleep(0.02)
        return [call.clock.summary(rid) for call in (first, second) for rid in call.remotes]
    finally:
        await second.leave()
        await first.leave()
        await server.stop()


def test_two_calls_on_one_machine_find_their_clocks_agree(tmp_path):
    summaries = asyncio.run(asyncio.wait_for(_two_calls(tmp_path), 40))
    assert len(summaries) == 2
    for summary in summaries:
        assert summary["samples"] >= FIRST_PINGS, summary
        assert abs(summary["offset_ms"]) < 1.0, summary   # one monotonic clock
        assert 0 <= summary["round_trip_ms"] < 100, summary
