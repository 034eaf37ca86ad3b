"""Call window benchmark: frames a second of ``main.py call``'s window (app.call_window) with
one remote default avatar, its codes new every frame (the ``wave`` pose), at 960x540 with the
GL backend, under a real X server (the DISPLAY given, else a private Xvfb).

No network: the window draws a ``CallSnapshot`` made here as the call's tick would make it
(the window is the object the call's window process runs). Per frame the window poses the
remote on the GPU, sorts, draws, redraws the self-view in its corner (5 times a second),
draws the overlay and finishes GL. Reports the median and 90th percentile frame time after
5 warm-up frames, and the process CPU time a frame (llvmpipe's threads included: the
measure the other jobs on a shared machine disturb least); ``--screenshot`` saves the last
frame to look at.

    .venv/bin/python bench/bench_call_window.py [--frames 60] [--size 960x540]
        [--screenshot FILE.png] [--full-detail]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        sys.exit("error: no DISPLAY and no Xvfb")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        os.environ["DISPLAY"] = ":" + f.readline().strip()
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--full-detail", action="store_true",
                        help="draw every Gaussian of the remote (no level of detail)")
    args = parser.parse_args()
    xvfb = start_xvfb()
    try:
        return measure(args)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)


class Mailbox:
    """The window's mailbox with no call behind it: the benchmark sets ``latest``."""

    stopped = False
    latest = None

    def send(self, message) -> None:
        pass

    def receive(self) -> list:
        return []


def measure(args) -> int:
    import glfw

    from app.call_window import CallSnapshot, RemoteView, WindowOptions, make_window
    from app.cli import parse_size
    from app.poses import POSES
    from avatar.avatar import load_avatar

    import app.call_window

    if args.full_detail:
        app.call_window.LOD_PIXELS_PER_M = ((1, 0.0),)
    width, height = parse_size(args.size)
    glfw.init()
    monitor = Mailbox()
    own = load_avatar("default")
    window = make_window(WindowOptions("bench", width, height, 1000.0), own, monitor)
    parts: dict[str, list] = {"self-view": [], "overlay": []}

    def timed(name, draw):
        def run(*a):
            start = time.perf_counter()
            draw(*a)
            window.ctx.finish()
            parts[name].append(time.perf_counter() - start)
        return run

    window.draw_self_view = timed("self-view", window.draw_self_view)
    window.draw_text = timed("overlay", window.draw_text)
    wave = POSES["wave"]
    times, cpu = [], []
    try:
        for frame in range(args.frames + 5):
            codes = wave.codes_at(frame / 30).replace(seq=frame)
            monitor.latest = CallSnapshot(
                [RemoteView("r1", "remote", codes, True, 60.0, 40.0, 60.0, 0.0, 0.1)],
                own_codes=codes, tracker_fps=30.0, mic_level=0.1)
            start, start_cpu = time.perf_counter(), time.process_time()
            window.draw_frame()
            glfw.swap_buffers(window.window)
            glfw.poll_events()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        if args.screenshot is not None:
            window.args.screenshot = args.screenshot
            window.save_screenshot()
    finally:
        glfw.terminate()
    ms = np.array(times[5:]) * 1000
    detail = " full detail" if args.full_detail else ""
    print(f"call window {width}x{height}{detail}, one remote default avatar "
          f"({len(own):,} Gaussians) "
          f"posed every frame + self-view + overlay, GL backend: median {np.median(ms):.1f} ms "
          f"({1000 / np.median(ms):.1f} fps), p90 {np.percentile(ms, 90):.1f} ms over "
          f"{len(ms)} frames")
    print(f"  process CPU a frame (llvmpipe's threads included): median "
          f"{np.median(cpu[5:]) * 1000:.1f} ms; load average {os.getloadavg()[0]:.1f}")
    split = {name: np.array(values[5:]) * 1000 for name, values in parts.items()}
    print("  of which: " + ", ".join(f"{name} median {np.median(v):.1f} ms" for name, v
                                     in split.items()) + "; the rest is the remote's pose, sort"
          " and draw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
