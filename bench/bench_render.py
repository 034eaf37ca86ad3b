"""Rendering benchmark: frame time split into pose, sort and draw, per backend.

Gaussians in {100k, 300k, 1M} (the default avatar, thinned or repeated side by side as
several avatars) x image {512x512, 1920x1080, stereo 2 x 2064x2208} x backend. Backends:

- ``gl-gpupose``: avatars posed on the GPU (``render.gl_pose``; per frame the CPU runs forward
  kinematics and the depth sort, the GPU blendshapes, skinning and the Gaussians), then the
  renderer's default pipeline (the compute tile rasteriser on llvmpipe);
- ``gl``: ``Avatar.pose`` in numpy, ``upload``, the same pipeline;
- ``gl-raster``: as ``gl`` with the raster pipeline (points / quads blended back to front,
  the default on a GPU), at 100k / 512x512 only, for comparison;
- ``cuda`` where an NVIDIA GPU is present (numpy posing, the image read back to host memory,
  as ``backend.render`` returns it); ``reference`` once, at 100k / 512x512;
- ``cuda-gpupose`` (when named): the avatars posed on the device by the torch poser
  (``CudaBackend.poser``, ``render.cuda_pose``) and the image left there
  (``render_device``), the path the viewer and the headset take; pose and draw each end with
  ``torch.cuda.synchronize()``.

Naming ``cuda`` or ``cuda-gpupose`` in ``--backends`` runs those (recorded under
``skipped_backends`` with the reason where they cannot run); ``--no-cuda`` drops the cuda row
that is otherwise added where an NVIDIA GPU is present.

Medians of wall-clock and process CPU time (CPU time counts llvmpipe's worker threads too,
so it says how much work a frame is even when other jobs share the CPU), and the load
average around each case.

    python bench/bench_render.py [--repeats 5] [--backends ...] [--sort cpu|gpu] [--stages]
                                 [--out bench/results/render-<host>.json]

- pose: numpy ``Avatar.pose(codes)`` for every avatar, or FK + the GPU posing passes,
- sort: ``GLSplatRenderer.sort_for`` (one per frame for both eyes): ``--sort cpu`` (default)
  32-bit radix in numpy, with GPU posing on means read back first; ``--sort gpu`` the radix
  sort in compute shaders (``render.sort.GLDepthSort``), nothing read back,
- draw: (upload +) projection + splatting (+ glFinish), all eyes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.files import write_text  # noqa: E402

COUNTS = {"100k": 100_000, "300k": 300_000, "1M": 1_000_000}
SIZES = {"512x512": [(512, 512)], "1920x1080": [(1920, 1080)],
         "stereo 2x2064x2208": [(2064, 2208), (2064, 2208)]}


def layout(avatar, count: int):
    """(n_avatars, keep, offsets_x): ``count`` Gaussians as whole avatars side by side plus a
    thinned one (``keep``: every k-th Gaussian's index), 0.9 m apart."""
    per = len(avatar)
    whole, rest = divmod(count, per)
    n_avatars = whole + (1 if rest else 0)
    keep = np.linspace(0, per - 1, rest).astype(np.int64) if rest else None
    return n_avatars, keep, [(k - (n_avatars - 1) / 2) * 0.9 for k in range(n_avatars)]


def scene(avatar, count: int):
    """(pose function, n_avatars): the avatars of ``layout`` posed in numpy on each call."""
    from avatar.codes import Codes
    from render.gaussians import Gaussians

    n_avatars, keep, offsets = layout(avatar, count)

    def pose(codes=None):
        codes = codes or Codes()
        parts = []
        for k in range(n_avatars):
            g = avatar.pose(codes)
            if keep is not None and k == n_avatars - 1:
                g = g.subset(keep)
            g.means[:, 0] += offsets[k]
            parts.append(g)
        return Gaussians.concatenate(parts)

    return pose, n_avatars


def gpu_scene(avatar, count: int):
    """(bindings, poses function, n_avatars): the same avatars for ``render.gl_pose``."""
    from avatar.codes import Codes
    n_avatars, keep, offsets = layout(avatar, count)
    bindings = [avatar.skinned.subset(keep) if k == n_avatars - 1 and keep is not None
                else avatar.skinned for k in range(n_avatars)]
    places = []
    for x in offsets:
        place = np.eye(4)
        place[0, 3] = x
        places.append(place)

    def poses(codes=None):
        return [avatar.skin_pose(codes or Codes(), place) for place in places]

    return bindings, poses, n_avatars


def cameras(size_name: str, n_avatars: int):
    """Cameras framing the row of avatars; two eyes 64 mm apart for stereo (OpenXR-like
    asymmetric frusta)."""
    from render.camera import Camera

    distance = 2.6 + 0.9 * max(n_avatars - 1, 0)
    sizes = SIZES[size_name]
    if len(sizes) == 1:
        w, h = sizes[0]
        return [Camera.look_at([0, 1.0, distance], [0, 0.9, 0], w, h, vertical_fov_deg=45)]
    head = np.linalg.inv(Camera.look_at([0, 1.0, distance], [0, 0.9, 0], 2, 2).camera_from_world)
    eyes = []
    for side, (left, right) in ((-1, (-0.9, 0.75)), (1, (-0.75, 0.9))):
        offset = np.eye(4)
        offset[0, 3] = side * 0.032
        w, h = sizes[0]
        eyes.append(Camera.from_fov(np.linalg.inv(head @ offset), w, h, left, right, 0.85,
                                    -0.95))
    return eyes


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def display_targets(ctx, cams):
    """An RGBA8 framebuffer per camera (as a display would have), and the one sort position
    and direction for all of them (the eyes' midpoint for stereo)."""

    targets = [ctx.framebuffer(color_attachments=[ctx.texture((c.width, c.height), 4)])
               for c in cams]
    position = np.mean([c.position for c in cams], axis=0)
    forward = np.mean([c.forward for c in cams], axis=0)
    return targets, position, forward


def finished_sort(renderer, position, forward) -> None:
    renderer.sort_for(position, forward)
    renderer.ctx.finish()  # a GPU sort runs asynchronously: its time is the sort's, not the draw's


def bench_gl(pose, cams, repeats: int, pipeline: str = "auto", sort: str = "cpu") -> dict:
    from render.gl import GLSplatRenderer

    renderer = GLSplatRenderer(pipeline=pipeline, sort=sort)
    ctx = renderer.ctx
    targets, position, forward = display_targets(ctx, cams)
    rows = []
    for i in range(repeats + 1):  # the first frame compiles shaders: not counted
        g, pose_ms, pose_cpu = timed(pose)

        def draw(g=g):
            renderer.upload(g)
            for cam, fbo in zip(cams, targets):
                renderer.draw(cam, fbo, background=(0, 0, 0))
            ctx.finish()

        renderer.upload(g)
        _, sort_ms, sort_cpu = timed(lambda: finished_sort(renderer, position, forward))
        _, draw_ms, draw_cpu = timed(draw)
        if i:
            rows.append(dict(pose_ms=pose_ms, sort_ms=sort_ms, draw_ms=draw_ms,
                             pose_cpu_ms=pose_cpu, sort_cpu_ms=sort_cpu, draw_cpu_ms=draw_cpu,
                             primitive=renderer.last_primitive))
    renderer.release()
    return summarise(rows, gaussians=len(g))


def bench_gl_gpupose(bindings, poses, cams, repeats: int, sort: str = "cpu",
                     stages: bool = False) -> dict:
    from render.gl import GLSplatRenderer

    renderer = GLSplatRenderer(sort=sort)
    ctx = renderer.ctx
    renderer.upload_avatars(bindings)  # once: static arrays
    targets, position, forward = display_targets(ctx, cams)
    rows = []
    for i in range(repeats + 1):  # the first frame compiles shaders: not counted

        def pose():
            renderer.pose_avatars(poses())
            ctx.finish()

        def draw():
            for cam, fbo in zip(cams, targets):
                renderer.draw(cam, fbo, background=(0, 0, 0))
            ctx.finish()

        _, pose_ms, pose_cpu = timed(pose)
        _, sort_ms, sort_cpu = timed(lambda: finished_sort(renderer, position, forward))
        renderer.stage_ms = {} if stages else None
        _, draw_ms, draw_cpu = timed(draw)
        if i:
            rows.append(dict(pose_ms=pose_ms, sort_ms=sort_ms, draw_ms=draw_ms,
                             pose_cpu_ms=pose_cpu, sort_cpu_ms=sort_cpu, draw_cpu_ms=draw_cpu,
                             primitive=renderer.last_primitive))
            if stages:  # the tile path's stages, each finished before the next starts
                rows[-1].update({f"{name}_ms": ms for name, ms in renderer.stage_ms.items()
                                 if not name.startswith("_")})
    count = renderer._count
    renderer.release()
    return summarise(rows, gaussians=count)


def bench_backend(name: str, pose, cams, repeats: int) -> dict:
    from render.backends import get_backend

    backend = get_backend(name)
    rows = []
    for _ in range(repeats):
        g, pose_ms, pose_cpu = timed(pose)
        _, draw_ms, draw_cpu = timed(lambda g=g: [backend.render(g, c) for c in cams])
        rows.append(dict(pose_ms=pose_ms, sort_ms=0.0, draw_ms=draw_ms, pose_cpu_ms=pose_cpu,
                         sort_cpu_ms=0.0, draw_cpu_ms=draw_cpu))
    backend.release()
    return summarise(rows, gaussians=len(g))


def bench_cuda_gpupose(avatar, count: int, cams, repeats: int) -> dict:
    """The avatars of ``layout`` posed on the device and drawn into device images."""
    import torch

    from avatar.codes import Codes
    from render.cuda import CudaBackend
    from render.cuda_pose import DeviceGaussians

    backend = CudaBackend()
    n_avatars, keep, offsets = layout(avatar, count)
    places = []
    for x in offsets:
        place = np.eye(4)
        place[0, 3] = x
        places.append(place)
    keep_t = None if keep is None else torch.from_numpy(keep).to(backend.device)

    def sync():
        if backend.device.type == "cuda":
            torch.cuda.synchronize(backend.device)

    codes = Codes()

    def pose():
        parts = [backend.poser.pose(avatar.skinned, avatar.skin_pose(codes, place))
                 for place in places]
        if keep_t is not None:
            last = parts[-1]
            parts[-1] = DeviceGaussians(*(t[keep_t] for t in (
                last.means, last.quats, last.scales, last.opacities, last.colors)))
        g = parts[0] if len(parts) == 1 else DeviceGaussians.concatenate(parts)
        sync()
        return g

    rows = []
    for i in range(repeats + 1):  # the first frame uploads the avatar's arrays: not counted
        g, pose_ms, pose_cpu = timed(pose)

        def draw(g=g):
            for cam in cams:
                backend.render_device(g, cam, background=(0, 0, 0))
            sync()

        _, draw_ms, draw_cpu = timed(draw)
        if i:
            rows.append(dict(pose_ms=pose_ms, sort_ms=0.0, draw_ms=draw_ms, pose_cpu_ms=pose_cpu,
                             sort_cpu_ms=0.0, draw_cpu_ms=draw_cpu))
    backend.release()
    return summarise(rows, gaussians=len(g))


def summarise(rows, gaussians: int) -> dict:
    out = {"gaussians": gaussians, "repeats": len(rows)}
    for key in rows[0] if rows else ():
        if key.endswith("_ms"):
            out[f"median_{key}"] = round(statistics.median(r[key] for r in rows), 2)
    out["median_frame_ms"] = round(statistics.median(
        r["pose_ms"] + r["sort_ms"] + r["draw_ms"] for r in rows), 2)
    out["median_render_ms"] = round(statistics.median(r["sort_ms"] + r["draw_ms"]
                                                      for r in rows), 2)
    if rows and "primitive" in rows[0]:
        out["primitive"] = rows[-1]["primitive"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed frames per case")
    parser.add_argument("--counts", nargs="+", default=list(COUNTS), choices=list(COUNTS))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--backends", nargs="+", default=["gl-gpupose", "gl", "gl-raster"],
                        choices=["gl-gpupose", "gl", "gl-raster", "cuda", "cuda-gpupose"],
                        help="variants to run (cuda runs too where available unless a cuda "
                        "variant is named or --no-cuda is given)")
    parser.add_argument("--no-cuda", action="store_true",
                        help="do not add the cuda row where an NVIDIA GPU is present")
    parser.add_argument("--sort", choices=["cpu", "gpu"], default="cpu",
                        help="GL depth sort: numpy radix on read-back means, or compute shaders")
    parser.add_argument("--stages", action="store_true", help="gl-gpupose: also time the tile "
                        "path's stages (GL finished after each: adds stalls)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference baseline")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: "
                        "bench/results/render-<host>-<date>.json)")
    args = parser.parse_args(argv)

    from avatar.avatar import load_avatar
    from render.backends import BackendUnavailable

    avatar = load_avatar("default")
    named_cuda = [b for b in args.backends if b.startswith("cuda")]
    backends = [b for b in args.backends if not b.startswith("cuda")]
    skipped = {}
    if named_cuda or not args.no_cuda:
        try:
            from render.cuda import CudaBackend

            CudaBackend().release()
            backends += named_cuda or ["cuda"]
        except BackendUnavailable as exc:
            for name in named_cuda or ["cuda"]:
                skipped[name] = str(exc)
    results = []
    for count_name in args.counts:
        pose, n_avatars = scene(avatar, COUNTS[count_name])
        bindings, poses, _ = gpu_scene(avatar, COUNTS[count_name])
        for size_name in args.sizes:
            cams = cameras(size_name, n_avatars)
            for backend in backends:
                if backend == "gl-raster" and (count_name, size_name) != ("100k", "512x512"):
                    continue
                print(f"{backend} {count_name} {size_name} ...", file=sys.stderr, flush=True)
                load_before = os.getloadavg()[0]
                if backend == "gl-gpupose":
                    r = bench_gl_gpupose(bindings, poses, cams, args.repeats, args.sort,
                                         args.stages)
                elif backend == "gl":
                    r = bench_gl(pose, cams, args.repeats, sort=args.sort)
                elif backend == "gl-raster":
                    r = bench_gl(pose, cams, args.repeats, pipeline="raster", sort=args.sort)
                elif backend == "cuda-gpupose":
                    r = bench_cuda_gpupose(avatar, COUNTS[count_name], cams, args.repeats)
                else:
                    r = bench_backend(backend, pose, cams, args.repeats)
                r.update(backend=backend, count=count_name, size=size_name,
                         sort=args.sort if backend.startswith("gl") else None,
                         load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)])
                results.append(r)
                print(f"  frame {r['median_frame_ms']} ms (pose {r['median_pose_ms']}, sort "
                      f"{r['median_sort_ms']}, draw {r['median_draw_ms']}; draw CPU "
                      f"{r['median_draw_cpu_ms']} ms)", file=sys.stderr, flush=True)
                if args.stages and backend == "gl-gpupose":
                    print("  stages ms (CPU): " + ", ".join(
                        f"{name} {r[f'median_{name}_ms']} ({r[f'median_{name}_cpu_ms']})"
                        for name in ("projection", "binning", "raster", "composite")
                        if f"median_{name}_ms" in r), file=sys.stderr, flush=True)
    if "100k" in args.counts and "512x512" in args.sizes and not args.no_reference:
        pose, n_avatars = scene(avatar, COUNTS["100k"])
        print("reference 100k 512x512 ...", file=sys.stderr, flush=True)
        r = bench_backend("reference", pose, cameras("512x512", n_avatars), 1)
        r.update(backend="reference", count="100k", size="512x512")
        results.append(r)
        print(f"  frame {r['median_frame_ms']} ms", file=sys.stderr)

    host = socket.gethostname()
    report = {
        "benchmark": "render",
        "command": "python " + " ".join(["bench/bench_render.py",
                                         *map(_repo_relative, argv or sys.argv[1:])]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": host, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": _cpu_name(), "gl_renderer": _gl_renderer(),
                    "load_average_at_end": os.getloadavg(),
                    "llvmpipe_threads": os.environ.get("LP_NUM_THREADS", "default (one per CPU)")},
        "skipped_backends": skipped,
        "results": results,
    }
    out = args.out or ROOT / "bench" / "results" / f"render-{host}-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _repo_relative(arg: str) -> str:
    """A path argument inside the repository as it would be typed from its root (the JSON is
    committed: no machine's absolute paths in it)."""
    path = Path(arg)
    if path.is_absolute() and path.resolve().is_relative_to(ROOT):
        return str(path.resolve().relative_to(ROOT))
    return arg


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _gl_renderer() -> str:
    try:
        from render.gl import create_headless_context

        ctx = create_headless_context()
        name = ctx.info["GL_RENDERER"]
        ctx.release()
        return name
    except Exception as exc:
        return f"unavailable: {exc}"


if __name__ == "__main__":
    sys.exit(main())
