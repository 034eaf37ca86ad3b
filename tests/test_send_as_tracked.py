"""`main.py call` sends each tracked frame's codes as soon as the tracker has them (mediapipe
on a real clip, on its own thread), not at the next call tick (app/call_cmd.py)."""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np


class _Sent:
    """Where ``CallApp`` sends its codes: when each frame went out (the network is tested
    elsewhere; here only when the codes leave the call app)."""

    def __init__(self):
        self.sent: list[tuple[int, float]] = []

    def send_codes(self, codes) -> int:
        self.sent.append((codes.seq, time.monotonic()))
        return 1


def test_tracked_codes_are_sent_when_ready_with_no_tick_and_not_sent_again_by_the_tick():
    from app.call_cmd import CallApp, _LiveTracker
    from tests.media import media_path

    app = CallApp(argparse.Namespace(quiet=True, stats=None), None)
    app.call = _Sent()
    live = app.live = _LiveTracker(str(media_path("jwpIntro.mp4")), False, app._camera_event)
    ready: dict[int, float] = {}

    async def run() -> None:
        app.send_as_tracked(asyncio.get_running_loop())
        notify = live.on_codes

        def noted() -> None:  # when each frame's codes were ready, on the tracker's thread
            ready[live._latest.seq] = time.monotonic()
            notify()

        live.on_codes = noted
        live.start()
        deadline = time.monotonic() + 120  # mediapipe starts slowly on a loaded machine
        while len(app.call.sent) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # no tick runs: only the loop

    try:
        asyncio.run(run())
    finally:
        live.stop()
    sent = app.call.sent
    assert len(sent) >= 10, f"only {len(sent)} frames sent"
    seqs = [seq for seq, _ in sent]
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)  # each once, in order
    waits = [at - ready[seq] for seq, at in sent]
    assert np.median(waits) < 0.1, waits  # sent on the loop's next turn, not a tick later
    assert app.sent_early is not None and app.sent_early.seq == seqs[-1]
    assert live._taken_seq == seqs[-1]  # taken: the tick's take() gives only newer codes
