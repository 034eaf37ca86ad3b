"""Peak memory of a call with two remote participants whose own avatars have arrived, without
the network's timing in the way: the call's side validates both avatar files as the
avatar exchange does (``net.avatar_exchange.default_validate``) and runs the real call window
(``app.call_window.WindowLink``, its own process, 960x540, GL under Xvfb) with both remotes
seated, their avatars handed over as ``main.py call`` does, for ``--frames`` frames.
(bench/bench_latency.py --extra-senders 1 measures the same over a real call, where on a
loaded machine the avatars can take a minute to arrive.)

    .venv/bin/python bench/bench_call_memory.py [--frames 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    from bench.bench_call_window import start_xvfb

    xvfb = start_xvfb()
    try:
        return measure(args)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)


def measure(args) -> int:
    from app.call_window import CallSnapshot, RemoteView, WindowLink, WindowOptions
    from app.poses import POSES
    from avatar.avatar import DEFAULT_AVATAR_PATH
    from net.avatar_exchange import default_validate

    import net.call  # noqa: F401 - the call's own imports (aiortc, av, the codecs)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    avatars = [default_validate(DEFAULT_AVATAR_PATH) for _ in range(2)]  # kept, as the call does
    link = WindowLink(WindowOptions("memory", 960, 540, 60.0))
    error = link.wait_ready(180)
    if error:
        sys.exit(f"error: {error}")
    for remote_id in ("r1", "r2"):
        link.avatar(remote_id, DEFAULT_AVATAR_PATH)
    talk = POSES["talk"]
    drawn = 0
    started = time.monotonic()
    while drawn < args.frames and time.monotonic() - started < 600:
        now = time.monotonic()
        codes = talk.codes_at(now - started).replace(seq=int((now - started) * 60))
        views = [RemoteView(rid, rid, codes, True, 50.0, 30.0, 60.0, 0.0, 0.0)
                 for rid in ("r1", "r2")]
        link.poll()
        link.show(CallSnapshot(views, own_codes=codes, made_at=now))
        drawn = link.frames_asked
        time.sleep(1 / 60)
    link.stop()
    call_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    window_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"two remotes with their own avatars ({len(avatars)} x {len(avatars[0]):,} Gaussians), "
          f"{drawn} window frames: peak RSS the call's side {call_mb:.0f} MB (before the "
          f"avatars {before:.0f} MB), the window process {window_mb:.0f} MB, together "
          f"{call_mb + window_mb:.0f} MB; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
