"""Benchmark of a Janus room's faults and clocks (Debian's Janus in a network namespace:
needs root, ``janus`` and ``ip``; see tests/janus_server.py).

- ``crash``: two participants watch a third (a ``main.py call --janus`` process) that is
  SIGKILLed; seconds from the kill to each watcher's ``left`` event, over Janus's WebSocket
  transport (``--repeats`` times) and, with ``--http``, once over its HTTP transport
  (long-poll: the session lives until Janus's ``session_timeout``, 60 s here).
- ``clock``: three ``main.py call --janus`` processes for ``--seconds``; each one's estimate
  of the others' clock offsets and the round trip of the best sample, from its ``--stats``
  file (``net.clock`` through Janus). The processes share one monotonic clock: the true
  offset is 0.

Usage: python bench/bench_janus.py [--repeats 5] [--http] [--seconds 15]
       [--out bench/results/janus.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.files import write_text  # noqa: E402
from tests.janus_rooms import crash_in_room, start_participant  # noqa: E402
from tests.janus_server import JanusServer  # noqa: E402
from tests.processes import read_stats  # noqa: E402


def crash(janus: JanusServer, transport: str, room: int) -> dict:
    url = janus.ws_url if transport == "ws" else janus.url
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(crash_in_room(url, room, janus.client_address, Path(folder)))


def clocks(janus: JanusServer, seconds: float, room: int) -> dict:
    names = ("ann", "ben", "cat")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        procs = [start_participant(janus.ws_url, room, janus.client_address, name, folder,
                                   "--stats", str(folder / f"{name}.json")) for name in names]
        try:
            time.sleep(seconds)
            stats = {name: read_stats(folder / f"{name}.json") or {} for name in names}
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(timeout=30)
    return {f"{name}<-{remote['name']}": remote.get("clock")
            for name, data in stats.items() for remote in data.get("remotes", {}).values()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="crashes over WebSocket")
    parser.add_argument("--http", action="store_true",
                        help="also one crash over the HTTP transport (over a minute)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="how long the three clock participants run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/janus.json")
    args = parser.parse_args()
    reason = JanusServer.unavailable()
    if reason:
        print(f"error: Janus cannot run here: {reason}")
        return 1
    result = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    with JanusServer() as janus:
        runs = []
        for i in range(args.repeats):
            print(f"crash over WebSocket {i + 1}/{args.repeats}...", flush=True)
            runs.append(crash(janus, "ws", 8000 + i))
        result["crash_ws"] = runs
        if args.http:
            print("crash over HTTP (waits for Janus's 60 s session timeout)...", flush=True)
            result["crash_http"] = [crash(janus, "http", 8100)]
        print(f"clocks: three processes for {args.seconds:g} s...", flush=True)
        result["clock"] = clocks(janus, args.seconds, 8200)
    result["load_after"] = os.getloadavg()
    write_text(args.out, json.dumps(result, indent=1))
    for transport in ("ws", "http"):
        lefts = [t for run in result.get(f"crash_{transport}", []) for t in run["left_s"]]
        if lefts:
            print(f"SIGKILL -> left over {transport}: {min(lefts) * 1000:.0f}-"
                  f"{max(lefts) * 1000:.0f} ms ({len(lefts)} watchers)")
    for pair, clock in result["clock"].items():
        if clock and clock.get("offset_ms") is not None:
            print(f"clock {pair}: offset {clock['offset_ms']:+.2f} ms, round trip "
                  f"{clock['round_trip_ms']:.2f} ms ({clock['samples']} samples)")
        else:
            print(f"clock {pair}: no estimate")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
