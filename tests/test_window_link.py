"""The pipe between the call and its window (app/call_window.py): the window draws the pose of
the newest call tick, never a stale one. Real pipes (multiprocessing) and the real reader
thread; the window's end is driven by hand as its frame loop does."""

from __future__ import annotations

import multiprocessing
import time

from app.call_window import CallSnapshot, SnapshotServer, _WindowMailbox


def _ends():
    call_end, window_end = multiprocessing.Pipe()
    server = SnapshotServer(call_end)
    server.start()
    return server, _WindowMailbox(window_end)


def _snap(n: int) -> CallSnapshot:
    return CallSnapshot(uptime_s=float(n), made_at=float(n))


def _wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_the_window_keeps_only_the_newest_of_the_snapshots_waiting_in_the_pipe():
    call_end, window_end = multiprocessing.Pipe()
    mailbox = _WindowMailbox(window_end)
    call_end.send(("snapshot", _snap(1)))
    call_end.send(("avatar", "bob", "/tmp/bob.lca"))
    call_end.send(("snapshot", _snap(2)))
    call_end.send(("snapshot", _snap(3)))
    assert _wait_for(window_end.poll)
    time.sleep(0.05)  # all four in the pipe
    assert mailbox.receive() == [("bob", "/tmp/bob.lca")]
    assert mailbox.latest.uptime_s == 3.0 and mailbox.fresh
    assert mailbox.receive() == [] and not mailbox.fresh  # nothing new: drawn before


def test_a_want_is_answered_at_once_with_the_newest_tick_without_waiting_for_the_next():
    server, mailbox = _ends()
    try:
        server.show(_snap(1))          # the first one goes out (the window wants one)
        assert mailbox.receive(2.0) == [] and mailbox.latest.uptime_s == 1.0
        server.show(_snap(2))          # ticks while the window draws: kept, not sent
        server.show(_snap(3))
        mailbox.send(("want", 0.08))   # the next frame starts
        started = time.monotonic()
        mailbox.receive(2.0)
        assert mailbox.fresh and mailbox.latest.uptime_s == 3.0  # the newest, not 2
        assert time.monotonic() - started < 1.0  # answered by the reader, no tick needed
        assert _wait_for(lambda: server.display_s == 0.08) and server.wants == 1
        # Nothing newer yet: the window waits (at most its wait), then the next tick's
        # snapshot goes out as soon as the call makes it.
        mailbox.send(("want", 0.08))
        started = time.monotonic()
        mailbox.receive(0.2)
        assert not mailbox.fresh and mailbox.latest.uptime_s == 3.0
        assert 0.19 <= time.monotonic() - started < 1.0
        server.show(_snap(4))
        mailbox.receive(2.0)
        assert mailbox.fresh and mailbox.latest.uptime_s == 4.0
        server.show(_snap(5))          # not wanted: stays here, never queued in the pipe
        time.sleep(0.05)
        assert not mailbox.conn.poll()
    finally:
        mailbox.conn.close()
        server.stop()


def test_the_window_s_keys_voices_frames_and_closing_reach_the_call_without_its_tick():
    server, mailbox = _ends()
    try:
        mailbox.send(("set", "mic_muted", True))
        mailbox.send(("request", "record"))
        mailbox.send(("voices", [("bob", (0.3, 1.5))]))
        mailbox.send(("presented", 1.0, [("bob", 0.9, 7)], 1.1))
        mailbox.send(("closed",))
        assert _wait_for(lambda: server.closed)
        assert server.controls.mic_muted and server.controls.take("record")
        assert server.voice_places == {"bob": (0.3, 1.5)}
        assert list(server.presented) == [(1.0, [("bob", 0.9, 7)], 1.1)]
    finally:
        mailbox.conn.close()
        server.stop()


def test_the_reader_ends_when_the_window_s_end_of_the_pipe_goes_away():
    server, mailbox = _ends()
    mailbox.conn.close()
    assert _wait_for(lambda: server.closed)
    server.show(_snap(1))  # nothing to send to: no error
    server.stop()


def test_with_play_out_when_asked_each_want_gets_the_pose_of_that_moment_at_once():
    import numpy as np

    from app.call_window import RemoteView, posed_now
    from avatar.codes import Codes
    from net.inbound import InboundStream, RemoteParticipant

    remote = RemoteParticipant("r1", "bob", InboundStream())
    start = time.monotonic()
    for seq in range(-60, 600):  # 30 Hz frames, sent 20 ms before they arrive, up to 20 s on
        t = start + seq / 30
        remote.playout.push(Codes(t=t - 0.020, seq=seq + 60, face=np.full(52, (seq % 30) / 30,
                                                                          np.float32)), t)
    server, mailbox = _ends()
    server.pose_now = lambda snapshot, now: posed_now(snapshot, {"r1": remote}, now)
    try:
        tick = CallSnapshot([RemoteView("r1", "bob", Codes(t=-1.0), True, None, 0.0, 30.0,
                                        0.0, 0.0)], made_at=start - 1.0)
        server.show(tick)
        assert mailbox.receive(2.0) == [] and mailbox.fresh  # the first: wanted at the start
        for _ in range(3):  # no tick since: each frame still gets a pose of its own moment
            time.sleep(0.05)
            asked = time.monotonic()
            mailbox.send(("want", 0.05))
            mailbox.receive(2.0)
            got = mailbox.latest
            assert mailbox.fresh and asked <= got.made_at <= time.monotonic()
            codes = got.remotes[0].codes
            assert abs(codes.t - remote.playout.playout_time(got.made_at)) < 1e-9
            assert got.remotes[0].name == "bob" and got.remotes[0].receiving
        # A failing play-out sends the tick's poses and the reader lives on.
        server.pose_now = lambda snapshot, now: 1 / 0
        mailbox.send(("want", 0.05))
        mailbox.receive(2.0)
        assert mailbox.fresh and mailbox.latest.made_at == start - 1.0 and not server.closed
    finally:
        mailbox.conn.close()
        server.stop()


def test_after_one_late_answer_the_next_frame_still_waits_for_its_own():
    server, mailbox = _ends()
    try:
        server.show(_snap(1))
        mailbox.receive(2.0)
        mailbox.ask(0.05)             # frame 0 asks; the call is slow: its answer comes late
        mailbox.receive(0.0)
        assert not mailbox.fresh      # drawn with what it had
        server.show(_snap(2))         # the late answer to frame 0, after the window moved on
        assert _wait_for(mailbox.conn.poll)
        mailbox.ask(0.05)             # frame 1 asks
        started = time.monotonic()
        mailbox.receive(0.3)          # frame 0's answer is in the pipe: taken as the newest,
        assert mailbox.latest.uptime_s == 2.0 and not mailbox.fresh  # but not frame 1's
        assert time.monotonic() - started >= 0.29  # (it waited for its own)
        server.show(_snap(3))         # frame 1's answer
        mailbox.receive(2.0)
        assert mailbox.fresh and mailbox.latest.uptime_s == 3.0
    finally:
        mailbox.conn.close()
        server.stop()
