#!/usr/bin/env python3
"""How long an avatar takes to cross a call: a sender offers its ``.lca`` (``--avatar``: the
demo's created avatar when the set-up has made it, else the shipped default), a receiver
joins the room over loopback (real signalling server, real aiortc peers, the control data
channel) and fetches, verifies (SHA-256), caches and validates it with the real loader.

Timed from the receiver's join to its avatar being ready; each run uses a fresh receiver
cache, so every run fetches the whole file.

    .venv/bin/python bench/bench_avatar_exchange.py [--avatar FILE.lca] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = b"exchange-bench-secret-0123456789"


def default_avatar_path() -> Path:
    from app import demo_avatar
    from avatar.avatar import DEFAULT_AVATAR_PATH

    return demo_avatar.find(ROOT / ".cache" / "media" / "jwpIntro.mp4") or DEFAULT_AVATAR_PATH


async def exchange_once(avatar_path: Path, cache: Path) -> float:
    from net.call import Call, CallConfig
    from net.signalling import SignallingServer
    from net.tokens import make_token

    server = SignallingServer(SECRET)
    port = await server.start()

    def config(name: str, **extra) -> CallConfig:
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room="bench",
                          token=make_token(SECRET, "bench"), name=name,
                          host_addresses=["127.0.0.1"], **extra)

    sender = Call(config("sender", avatar_path=avatar_path, avatar_cache_dir=cache / "s"))
    await sender.join()
    receiver = Call(config("receiver", avatar_cache_dir=cache / "r"))
    started = time.perf_counter()
    await receiver.join()
    try:
        deadline = started + 300
        while True:
            remote = receiver.avatars.remotes.get(sender.id)
            if remote is not None and remote.status in ("ready", "refused"):
                break
            if time.perf_counter() > deadline:
                raise RuntimeError("the avatar did not arrive in 300 s")
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        if remote.status != "ready":
            raise RuntimeError(f"the receiver refused the avatar: {remote.reason}")
    finally:
        await receiver.leave()
        await sender.leave()
        await server.stop()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=None,
                        help="the .lca to send (default: the demo's created avatar if the "
                             "set-up made it, else the shipped default avatar)")
    parser.add_argument("--runs", type=int, default=3, help="exchanges to time (default 3)")
    args = parser.parse_args()
    path = args.avatar or default_avatar_path()
    if not path.is_file():
        print(f"error: {path}: no such avatar file", file=sys.stderr)
        return 1
    size = path.stat().st_size
    times = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(asyncio.run(exchange_once(path, Path(tmp))))
        print(f"  run {run + 1}: {times[-1]:.2f} s", flush=True)
    median = float(np.median(times))
    print(f"avatar exchange on loopback: {path.name} ({size / 1e6:.1f} MB) join -> ready "
          f"median {median:.2f} s ({size / 1e6 / median:.1f} MB/s) over {args.runs} runs; "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
