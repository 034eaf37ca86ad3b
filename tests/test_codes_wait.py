"""The call window's answer waits for codes due within its slack (app.call_window.wait_for_codes)
on a real playout buffer, on a virtual clock: a frame then starts on codes that have just come,
and the window never drops under 10 fps (FRAME_BUDGET_S) for it."""

from __future__ import annotations

from types import SimpleNamespace

from app.call_window import FRAME_BUDGET_S, MAX_CODES_WAIT_S, wait_for_codes
from avatar.codes import Codes
from net.playout import PlayoutBuffer

INTERVAL = 1 / 30


class Clock:
    """Virtual time; sleeping past ``arrive_at`` pushes the next codes frame then."""

    def __init__(self, buffer: PlayoutBuffer, now: float, arrive_at: float | None):
        self.buffer, self.now, self.arrive_at = buffer, now, arrive_at
        self.slept = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.now += seconds
        if self.arrive_at is not None and self.now >= self.arrive_at:
            self.buffer.push(Codes(t=self.arrive_at - 0.03, seq=99), self.arrive_at)
            self.arrive_at = None


def streaming(frames: int = 6) -> dict:
    buffer = PlayoutBuffer()
    for i in range(frames):  # sent at 30 Hz, 30 ms in transit
        buffer.push(Codes(t=i * INTERVAL, seq=i), i * INTERVAL + 0.03)
    return {"sender": SimpleNamespace(playout=buffer)}


def last_arrival(remotes) -> float:
    return remotes["sender"].playout.arrivals()[0]


def test_codes_due_within_the_slack_are_waited_for_until_they_come():
    remotes = streaming()
    last = last_arrival(remotes)
    due = last + INTERVAL
    clock = Clock(remotes["sender"].playout, due - 0.010, arrive_at=due + 0.0015)
    waited = wait_for_codes(remotes, 0.030, clock=clock, sleep=clock.sleep)
    assert 0.0110 <= waited <= 0.0135  # until the frame came, not to the slack's end
    assert last_arrival(remotes) > last


def test_codes_due_later_than_the_slack_are_not_waited_for():
    remotes = streaming()
    due = last_arrival(remotes) + INTERVAL
    clock = Clock(remotes["sender"].playout, due - MAX_CODES_WAIT_S - 0.005, arrive_at=due)
    assert wait_for_codes(remotes, 0.020, clock=clock, sleep=clock.sleep) == 0.0
    assert clock.slept == 0


def test_a_slow_window_is_never_made_slower():
    remotes = streaming()
    due = last_arrival(remotes) + INTERVAL
    clock = Clock(remotes["sender"].playout, due - 0.005, arrive_at=due)
    assert wait_for_codes(remotes, FRAME_BUDGET_S - 0.0005, clock=clock,
                          sleep=clock.sleep) == 0.0
    # Slack of 5 ms: codes due in 8 ms are not waited for either.
    clock = Clock(remotes["sender"].playout, due - 0.008, arrive_at=due)
    assert wait_for_codes(remotes, FRAME_BUDGET_S - 0.005, clock=clock, sleep=clock.sleep) == 0


def test_codes_that_do_not_come_are_waited_for_a_few_ms_past_due_at_most():
    remotes = streaming()
    due = last_arrival(remotes) + INTERVAL
    clock = Clock(remotes["sender"].playout, due - 0.006, arrive_at=None)
    waited = wait_for_codes(remotes, 0.020, clock=clock, sleep=clock.sleep)
    assert 0.009 <= waited <= 0.0115


def test_without_a_stream_yet_nothing_is_waited_for():
    remotes = {"sender": SimpleNamespace(playout=PlayoutBuffer())}
    clock = Clock(remotes["sender"].playout, 1.0, arrive_at=None)
    assert wait_for_codes(remotes, 0.010, clock=clock, sleep=clock.sleep) == 0.0
    assert wait_for_codes({}, 0.010, clock=clock, sleep=clock.sleep) == 0.0


def test_the_window_link_waits_for_due_codes_before_answering_an_ask():
    import multiprocessing
    import time

    from app.call_window import CallSnapshot, SnapshotServer, WindowLink

    ours, theirs = multiprocessing.Pipe()
    link = WindowLink.__new__(WindowLink)  # its reader side only: no window process
    link.server = SnapshotServer(ours)
    buffer = PlayoutBuffer()
    now = time.monotonic()
    for i in range(6):  # the newest came 25 ms ago at 30 Hz: the next is due in 8 ms
        buffer.push(Codes(t=i * INTERVAL, seq=i), now - 0.025 - (5 - i) * INTERVAL)
    remotes = {"sender": SimpleNamespace(playout=buffer)}
    link.play_out_when_asked(lambda: remotes)
    link.server.show(CallSnapshot())
    assert theirs.recv()[0] == "snapshot"  # the window waits for one from the start
    link.server._take(("want", 0.030, 7))
    assert theirs.poll(1.0) and theirs.recv()[2] == 7
    assert len(link.server.waited_s) == 1 and 0.005 <= link.server.waited_s[0] <= 0.016
    link.play_out_when_asked(lambda: remotes, wait_codes=False)
    link.server._take(("want", 0.030, 8))
    assert theirs.recv()[2] == 8 and len(link.server.waited_s) == 1


def test_late_codes_are_waited_for_until_they_come():
    """Codes already due when the window asks (the sender's tracker ran late) come any moment:
    the frame waits for them within its slack instead of drawing the ones an interval old."""
    remotes = streaming()
    last = last_arrival(remotes)
    due = last + INTERVAL
    clock = Clock(remotes["sender"].playout, due + 0.005, arrive_at=due + 0.012)
    waited = wait_for_codes(remotes, 0.030, clock=clock, sleep=clock.sleep)
    assert 0.0065 <= waited <= 0.0085
    assert last_arrival(remotes) > last


def test_codes_late_by_more_than_half_an_interval_are_not_waited_for():
    remotes = streaming()  # a sender that stalled: nothing is coming soon
    due = last_arrival(remotes) + INTERVAL
    clock = Clock(remotes["sender"].playout, due + 0.6 * INTERVAL, arrive_at=None)
    assert wait_for_codes(remotes, 0.030, clock=clock, sleep=clock.sleep) == 0.0
    assert clock.slept == 0
