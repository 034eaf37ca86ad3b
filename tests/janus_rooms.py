"""Janus rooms with real processes, for tests and ``bench/bench_janus.py``: a participant
(a ``main.py call --janus`` process) SIGKILLed while two others watch, in this process, for
it to leave, and go on exchanging codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from avatar.codes import Codes, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def start_participant(url: str, room: int, address: str, name: str, folder: Path,
                      *extra: str) -> subprocess.Popen:
    """``main.py call --janus URL`` sending a looped codes file at 30 Hz, no window, no
    voice; its log in ``folder/NAME.log``."""
    codes = folder / "codes.jsonl"
    if not codes.exists():
        write_jsonl(codes, [Codes(seq=i) for i in range(30)])
    return subprocess.Popen(
        [sys.executable, "main.py", "call", "--janus", url, "--room", str(room),
         "--ice-address", address, "--codes", str(codes), "--fps", "30", "--audio", "none",
         "--name", name, "--duration", "300", "--no-window", "--avatar-cache",
         str(folder / f"cache-{name}"), *extra],
        cwd=ROOT, stdout=open(folder / f"{name}.log", "w"), stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))


class Watcher:
    """A ``JanusCall`` in this process that sends codes at 30 Hz, plays out what arrives and
    notes when each event came (``events``: (monotonic time, kind, remote id, detail))."""

    def __init__(self, url: str, room: int, address: str, name: str, folder: Path):
        from net.config import CallConfig
        from net.janus import JanusCall

        self.events: list[tuple[float, str, str, str]] = []
        self.call = JanusCall(
            CallConfig(url=url, room=str(room), name=name, host_addresses=[address],
                       avatar_cache_dir=folder / f"cache-{name}"),
            on_event=lambda kind, rid, detail: self.events.append(
                (time.monotonic(), kind, rid, detail)))
        self.seq = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.call.join()
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            self.seq += 1
            self.call.send_codes(Codes(t=time.monotonic(), seq=self.seq))
            self.call.poses()
            await asyncio.sleep(1 / 30)

    def remote_named(self, name: str) -> str | None:
        return next((rid for rid, r in self.call.remotes.items() if r.name == name), None)

    def received(self, name: str) -> int:
        rid = self.remote_named(name)
        return 0 if rid is None else self.call.remotes[rid].stats.unique

    def first(self, kind: str, remote_id: str) -> float | None:
        return next((t for t, k, rid, _ in self.events if k == kind and rid == remote_id), None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.call.leave()


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def crash_in_room(url: str, room: int, address: str, folder: Path,
                        wait_left_s: float = 90.0) -> dict:
    """Two watchers and a ``main.py call`` process meet through Janus at ``url``; once both
    receive its codes it is SIGKILLed. Returns, per watcher, seconds from the kill to its
    ``silent`` and ``left`` events, and how many codes the watchers got from each other in
    the 2 s after the later ``left``."""
    watchers = [Watcher(url, room, address, name, folder) for name in ("ann", "ben")]
    victim = None
    try:
        for watcher in watchers:
            await watcher.start()
        victim = start_participant(url, room, address, "cat", folder)
        await wait_until(lambda: all(w.received("cat") > 10 for w in watchers), 60,
                         "the victim's codes at both watchers")
        cat = [w.remote_named("cat") for w in watchers]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()
        await wait_until(lambda: all(w.first("left", c) for w, c in zip(watchers, cat)),
                         wait_left_s, "the victim to leave")
        before = [watchers[0].received("ben"), watchers[1].received("ann")]
        await asyncio.sleep(2.0)
        after = [watchers[0].received("ben"), watchers[1].received("ann")]
        return {
            "left_s": [w.first("left", c) - killed_at for w, c in zip(watchers, cat)],
            "silent_s": [(w.first("silent", c) or float("nan")) - killed_at
                         for w, c in zip(watchers, cat)],
            "left_detail": [next(d for _, k, rid, d in w.events if k == "left" and rid == c)
                            for w, c in zip(watchers, cat)],
            "codes_after": [a - b for a, b in zip(after, before)],
            "remotes_after": [sorted(r.name for r in w.call.remotes.values())
                              for w in watchers]}
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
            victim.wait()
        for watcher in watchers:
            await watcher.stop()
