"""Call window benchmark: frames a second of ``main.py call``'s window (app.call_window) with
one remote default avatar, its codes new every frame (the ``wave`` pose), at 960x540 with the
GL backend, under a real X server (the DISPLAY given, else a private Xvfb).

No network: the window draws a ``CallSnapshot`` made here as the call's tick would make it
(the window is the object the call's window process runs). Per frame the window poses the
remote on the GPU, sorts, draws, redraws the self-view in its corner (5 times a second),
draws the overlay and finishes GL. Reports the median and 90th percentile frame time after
5 warm-up frames, and the process CPU time a frame (llvmpipe's threads included: the
measure the other jobs on a shared machine disturb least); ``--screenshot`` saves the last
frame to look at. The window lowers its detail while its frames are slow
(``app.call_window.DetailGovernor``): the frames drawn at each level are reported, with the
PSNR each level costs (``--quality``); ``--fixed-detail`` keeps the first level throughout.

    .venv/bin/python bench/bench_call_window.py [--frames 60] [--size 960x540]
        [--screenshot FILE.png] [--full-detail] [--fixed-detail] [--detail-level N]
        [--profile] [--quality]
        [--tracked-face] [--order-reuse N]
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
                        help="draw every Gaussian of the remote at the window's full size "
                             "(no level of detail)")
    parser.add_argument("--fixed-detail", action="store_true",
                        help="keep the first level of detail however slow the frames (the "
                             "window's behaviour before DetailGovernor)")
    parser.add_argument("--detail-level", type=int, default=None, metavar="N",
                        help="hold the window at this level of detail (0 to 3: "
                             "app.call_window.DETAIL_LEVELS)")
    parser.add_argument("--quality", action="store_true",
                        help="instead: for each level of detail (stride x splatted pixels), "
                             "the frame time and the PSNR of the remote against full detail")
    parser.add_argument("--profile", action="store_true",
                        help="also split the frame: posing, sort (with the means' readback), "
                             "the rasteriser's stages, self-view, overlay, swap (GL finished "
                             "after each, so the total is a little above the plain run's)")
    parser.add_argument("--tracked-face", action="store_true",
                        help="every face blendshape active, as tracking gives them (the wave "
                             "pose has 2): weights 0.05-0.35 changing each frame")
    parser.add_argument("--order-reuse", type=int, default=None, metavar="N",
                        help="the renderer's pose_order_reuse (default: the window's)")
    parser.add_argument("--exact-stop", action="store_true",
                        help="the rasteriser stops pixels by 3DGS's rule (transmittance 1e-4, "
                             "as the window did before render.gl_tiles.DISPLAY_STOP)")
    parser.add_argument("--levels", action="store_true",
                        help="instead: each of the window's levels of detail (DETAIL_LEVELS): "
                             "PSNR against full detail, frame time, CPU, Gaussians drawn; with "
                             "--screenshot a strip of the face at each")
    parser.add_argument("--stop-quality", action="store_true",
                        help="instead: the remote drawn with the window's display stop against "
                             "3DGS's stop at the level held (PSNR, largest 8-bit difference)")
    args = parser.parse_args()
    global TRACKED_FACE
    TRACKED_FACE = args.tracked_face
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


def remote_snapshot(codes):
    from app.call_window import CallSnapshot, RemoteView

    return CallSnapshot([RemoteView("r1", "remote", codes, True, 60.0, 40.0, 60.0, 0.0, 0.1)],
                        own_codes=codes, tracker_fps=30.0, mic_level=0.1)


TRACKED_FACE = False


def run_frames(window, monitor, frames: int, parts: dict | None = None):
    """Draw ``frames`` (+5 warm-up) frames of the ``wave`` pose, new codes each; returns the
    wall and process CPU seconds of each frame after the warm-up."""
    import glfw

    from app.poses import POSES

    wave = POSES["wave"]
    times, cpu = [], []
    for frame in range(frames + 5):
        if frame == 5 and parts is not None:
            for values in parts.values():
                values.clear()
            window.renderer.stage_ms = {} if window.renderer.stage_ms is not None else None
        codes = wave.codes_at(frame / 30).replace(seq=frame)
        if TRACKED_FACE:
            codes = codes.replace(face=0.2 + 0.15 * np.sin(np.arange(52) + frame / 3))
        monitor.latest = remote_snapshot(codes)
        start, start_cpu = time.perf_counter(), time.process_time()
        window.draw_frame()
        swap_start = (time.perf_counter(), time.process_time())
        glfw.swap_buffers(window.window)
        glfw.poll_events()
        if parts is not None:
            parts.setdefault("swap", []).append((time.perf_counter() - swap_start[0],
                                                 time.process_time() - swap_start[1]))
        window.prepare_next(monitor.latest)  # (as the window's loop does after the swap)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return np.array(times[5:]), np.array(cpu[5:])


def instrument(window, parts: dict) -> None:
    """Time the frame's parts, GL finished before and after each (wall, CPU seconds)."""
    def timed(name, owner, attr):
        call = getattr(owner, attr)

        def run(*a, **k):
            window.ctx.finish()
            start = (time.perf_counter(), time.process_time())
            out = call(*a, **k)
            window.ctx.finish()
            parts.setdefault(name, []).append((time.perf_counter() - start[0],
                                               time.process_time() - start[1]))
            return out
        setattr(owner, attr, run)

    r = window.renderer
    from avatar.avatar import Avatar

    timed("pose (codes to bones, CPU)", Avatar, "skin_pose")
    timed("pose (GPU skinning)", r, "show")
    timed("sort (means read back + CPU radix)", r, "_sort_on_cpu")
    timed("splat (project, bin, raster, composite)", r, "draw")
    timed("stretch to the window", window._scaled, "stretch")
    timed("self-view", window, "draw_self_view")
    timed("after the swap: self-view, overlay text", window, "prepare_next")
    timed("labels", window, "draw_labels")
    timed("overlay", window, "draw_text")
    r.stage_ms = {}


def remote_image(window, monitor, codes) -> np.ndarray:
    """The window's pixels with only the remote drawn (no self-view, labels, overlay)."""
    hidden = {name: getattr(window, name) for name in ("draw_self_view", "draw_labels",
                                                        "draw_text")}
    for name in hidden:
        setattr(window, name, lambda *a: None)
    try:
        monitor.latest = remote_snapshot(codes)
        window.draw_frame()  # seats the remote,
        for seat in window.seats.values():
            seat.opacity = 1.0  # wholly faded in
        window._last_draw = time.perf_counter()
        window.draw_frame()
        w, h = window.ctx.screen.size
        raw = window.ctx.screen.read(viewport=(0, 0, w, h), components=3)
    finally:
        for name, method in hidden.items():
            setattr(window, name, method)
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)[::-1].astype(np.float64) / 255


def psnr(a, b) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf")


def quality(window, monitor, args) -> None:
    """Each level of detail: frame time and PSNR against stride 1 at the full size."""
    import app.call_window as cw
    from app.poses import POSES

    codes = POSES["wave"].codes_at(0.5).replace(seq=10_000)
    width, height = window.ctx.screen.size
    full = width * height
    levels = [(1, full), (2, full), (4, full), (1, full // 2), (2, full // 2), (3, full // 2),
              (4, full // 2), (2, full // 4), (4, full // 4), (6, full // 4), (8, full // 4),
              (6, full // 2), (8, full // 2), (4, full // 6), (6, full // 6)]
    reference = None
    print("| stride | splatted at | PSNR frame | PSNR avatar pixels | wall ms median | "
          "CPU ms median |")
    print("| --- | --- | --- | --- | --- | --- |")
    for stride, budget in levels:
        cw.LOD_PIXELS_PER_M = ((stride, 0.0),)
        cw.RENDER_PIXELS = budget
        image = remote_image(window, monitor, codes)
        if reference is None:
            reference = image
            background = np.abs(reference - np.array(cw.BACKGROUND)).sum(-1) > 0.02
        ms, cpu = run_frames(window, monitor, args.frames)
        size = "x".join(map(str, cw.render_size(width, height)))
        print(f"| {stride} | {size} | {psnr(image, reference):.1f} dB | "
              f"{psnr(image[background], reference[background]):.1f} dB | "
              f"{np.median(ms) * 1000:.1f} | {np.median(cpu) * 1000:.1f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


def levels(window, monitor, args) -> None:
    """Each of the window's levels of detail as the governor chooses them: PSNR against
    stride 1 at the full size, frame time and CPU; a picture of the remote's face at each
    with ``--screenshot`` (a strip, left to right: head and chest as the window shows them)."""
    import app.call_window as cw
    from app.poses import POSES

    codes = POSES["wave"].codes_at(0.5).replace(seq=10_000)
    window.detail.fixed = True
    saved = cw.LOD_PIXELS_PER_M, cw.RENDER_PIXELS
    cw.LOD_PIXELS_PER_M, cw.RENDER_PIXELS = ((1, 0.0),), 0
    window.detail.level = 0
    reference = remote_image(window, monitor, codes)
    cw.LOD_PIXELS_PER_M, cw.RENDER_PIXELS = saved
    window._lod.clear()
    avatar = np.abs(reference - np.array(cw.BACKGROUND)).sum(-1) > 0.02
    rows, crops = [], []
    ys, xs = np.nonzero(avatar)
    top, middle = ys.min(), int(np.median(xs))
    for level in range(len(cw.DETAIL_LEVELS)):
        window.detail.level = level
        image = remote_image(window, monitor, codes)
        ms, cpu = run_frames(window, monitor, args.frames)
        head, body, _ = cw.DETAIL_LEVELS[level]
        base = cw.lod_stride(window.orbit.camera(*window.ctx.screen.size).fy
                             / window.orbit.distance_m)
        drawn = len(next(kept for key, kept in window._lod.items()
                         if key[1:] == (base + head, base + body))[1])
        rows.append((level, window.detail.describe(level), psnr(image, reference),
                     psnr(image[avatar], reference[avatar]), np.median(ms) * 1000,
                     np.median(cpu) * 1000, drawn))
        crops.append(image[top + 20:top + 300, middle - 100:middle + 100])
    print("| level | detail | PSNR frame | PSNR avatar pixels | wall ms | CPU ms | "
          "Gaussians drawn |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for level, what, frame, pixels, wall, cpu, drawn in rows:
        print(f"| {level} | {what} | {frame:.1f} dB | {pixels:.1f} dB | {wall:.1f} | "
              f"{cpu:.1f} | {drawn:,} |")
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.screenshot is not None:
        from PIL import Image

        strip = np.concatenate([reference[top + 20:top + 300, middle - 100:middle + 100]] + crops,
                               axis=1)
        Image.fromarray((strip * 255).round().astype(np.uint8)).save(args.screenshot)
        print(f"wrote {args.screenshot} (full detail, then levels 0-{len(cw.DETAIL_LEVELS) - 1})")


def stop_quality(window, monitor, args) -> None:
    """The window's display stop against 3DGS's, at the level of detail held, over poses of
    the ``wave``: PSNR of the whole frame and of the avatar's pixels, the largest difference
    in 8-bit steps, and the frame time of each."""
    from app.call_window import BACKGROUND
    from render.gl_tiles import DISPLAY_STOP
    from app.poses import POSES

    rows = []
    for t in (0.2, 0.9, 1.6, 2.3):
        codes = POSES["wave"].codes_at(t).replace(seq=int(t * 1000))
        window.renderer.use_display_stop(None)
        exact = remote_image(window, monitor, codes)
        exact_ms = run_frames(window, monitor, args.frames)
        window.renderer.use_display_stop(DISPLAY_STOP)
        shown = remote_image(window, monitor, codes)
        shown_ms = run_frames(window, monitor, args.frames)
        avatar = np.abs(exact - np.array(BACKGROUND)).sum(-1) > 0.02
        rows.append((t, psnr(shown, exact), psnr(shown[avatar], exact[avatar]),
                     int(round(np.abs(shown - exact).max() * 255)),
                     np.median(exact_ms[0]) * 1000, np.median(shown_ms[0]) * 1000,
                     np.median(exact_ms[1]) * 1000, np.median(shown_ms[1]) * 1000))
    print("| wave at | PSNR frame | PSNR avatar pixels | largest difference (8-bit steps) | "
          "wall ms 3DGS stop / display stop | CPU ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for t, frame, pixels, largest, we, ws, ce, cs in rows:
        print(f"| {t:.1f} s | {frame:.1f} dB | {pixels:.1f} dB | {largest} | "
              f"{we:.1f} / {ws:.1f} | {ce:.1f} / {cs:.1f} |")
    print(f"level of detail {window.detail.level}; load average {os.getloadavg()[0]:.1f}")


def measure(args) -> int:
    import glfw

    from app.call_window import WindowOptions, make_window
    from app.cli import parse_size
    from avatar.avatar import load_avatar

    import app.call_window

    if args.full_detail:
        app.call_window.LOD_PIXELS_PER_M = ((1, 0.0),)
        app.call_window.RENDER_PIXELS = 0
    width, height = parse_size(args.size)
    glfw.init()
    monitor = Mailbox()
    own = load_avatar("default")
    window = make_window(WindowOptions("bench", width, height, 1000.0), own, monitor)
    window.detail.fixed = args.full_detail or args.fixed_detail or args.quality
    if args.detail_level is not None:
        if not 0 <= args.detail_level < len(app.call_window.DETAIL_LEVELS):
            sys.exit(f"error: --detail-level must be 0 to "
                     f"{len(app.call_window.DETAIL_LEVELS) - 1}")
        window.detail.level, window.detail.fixed = args.detail_level, True
    if args.order_reuse is not None:
        window.renderer.pose_order_reuse = args.order_reuse
    if args.exact_stop:
        window.renderer.use_display_stop(None)
    parts: dict[str, list] = {}
    try:
        if args.stop_quality:
            stop_quality(window, monitor, args)
            return 0
        if args.levels:
            levels(window, monitor, args)
            return 0
        if args.quality:
            quality(window, monitor, args)
            return 0
        if args.profile:
            instrument(window, parts)
        times, cpu = run_frames(window, monitor, args.frames, parts if args.profile else None)
        if args.screenshot is not None:
            window.args.screenshot = args.screenshot
            window.save_screenshot()
    finally:
        glfw.terminate()
    ms = times * 1000
    detail = " full detail" if args.full_detail else ""
    size = "x".join(map(str, app.call_window.render_size(width, height)))
    level = window.detail.level  # (the last frame's)
    size = "x".join(map(str, app.call_window.render_size(width, height, int(
        app.call_window.RENDER_PIXELS * app.call_window.DETAIL_LEVELS[level][2]))))
    print(f"call window {width}x{height}{detail} (remote splatted at {size}), one remote "
          f"default avatar ({len(own):,} Gaussians) posed every frame + self-view + overlay, "
          f"GL backend: median {np.median(ms):.1f} ms ({1000 / np.median(ms):.1f} fps), "
          f"p90 {np.percentile(ms, 90):.1f} ms over {len(ms)} frames")
    print(f"  process CPU a frame (llvmpipe's threads included): median "
          f"{np.median(cpu) * 1000:.1f} ms; load average {os.getloadavg()[0]:.1f}")
    counts = window.detail.frames
    print("  frames at each level of detail, warm-up included (DetailGovernor, budget "
          f"{window.detail.budget_ms:.0f} ms{', fixed' if window.detail.fixed else ''}): "
          + ", ".join(f"level {i} ({window.detail.describe(i)}) {n}"
                      for i, n in enumerate(counts) if n))
    if args.profile:
        frames = len(ms)
        print("  per frame, mean wall / CPU ms (GL finished around each part):")
        rest = np.array([times.sum(), cpu.sum()]) * 1000
        for name, values in parts.items():
            v = np.array(values) * 1000
            print(f"    {name:42s} {v[:, 0].sum() / frames:6.1f} / {v[:, 1].sum() / frames:6.1f}")
            rest -= v.sum(axis=0)
        print(f"    {'the rest (Python, GL calls between parts)':42s} {rest[0] / frames:6.1f} / "
              f"{rest[1] / frames:6.1f}")
        stages = window.renderer.stage_ms or {}
        for name in ("projection", "binning", "raster", "composite"):
            if name in stages:
                print(f"      splat stage {name:28s} {stages[name] / frames:6.1f} / "
                      f"{stages[name + '_cpu'] / frames:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
