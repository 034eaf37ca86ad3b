#!/usr/bin/env python3
"""The differentiable torch splatter: forward + backward time of one optimisation step.

The posed default avatar (pose "talk") seen whole from the front, at 30k / 100k / 217k
Gaussians (thinned at random, the kept ones' scales grown by sqrt(217200 / n) so the body
stays covered) x 256x256 / 512x512. A step is ``render`` (projection, binning, compositing)
then ``backward`` of an L1 loss against a fixed target, with gradients for means, quats,
scales, opacities and SH degree-1 colours. Medians (and minima) over --repeats steps, one
row per torch thread count (the threads are interleaved, so each pair saw the same load),
with the load average around each case and the work done (tile slots evaluated).

    python bench/bench_torch_splat.py [--repeats 5] [--threads 1 2] [--out ...json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from render.camera import Camera
from render.gaussians import Gaussians

COUNTS = (30_000, 100_000, 217_200)
SIZES = (256, 512)


def scene(n: int, seed: int = 0) -> Gaussians:
    from app.poses import POSES
    from avatar.avatar import load_avatar

    g = load_avatar("default").pose(POSES["talk"].codes(0.5))
    if n < len(g):
        keep = np.sort(np.random.default_rng(seed).choice(len(g), n, replace=False))
        g = g.subset(keep)
        g.scales *= np.sqrt(217_200 / n)
    sh = np.zeros((len(g), 4, 3), np.float32)
    sh[:, 0] = (g.colors - 0.5) / 0.28209479177387814
    return Gaussians(g.means, g.quats, g.scales, g.opacities, sh)


def step_ms(tensors, camera, target) -> tuple[float, float, int]:
    import torch

    from render import torch_splat

    for t in tensors:
        t.grad = None
    t0 = time.perf_counter()
    image, info = torch_splat.render_with_info(*tensors, camera)
    t1 = time.perf_counter()
    (image - target).abs().mean().backward()
    t2 = time.perf_counter()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in tensors)
    return 1000 * (t1 - t0), 1000 * (t2 - t1), info.tile_slots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/torch-splat.json")
    args = parser.parse_args()

    import torch

    from render import torch_splat

    rows = []
    for n in args.counts:
        g = scene(n)
        for size in args.sizes:
            camera = Camera.look_at([0.0, 1.0, 3.3], [0.0, 0.88, 0.0], size, size,
                                    vertical_fov_deg=35)
            tensors = [torch.tensor(getattr(g, f), requires_grad=True)
                       for f in ("means", "quats", "scales", "opacities", "colors")]
            with torch.no_grad():
                target = torch_splat.render(*tensors, camera).flip(1)  # something to fit
            times = {t: [] for t in args.threads}
            load_before = os.getloadavg()[0]
            for _ in range(args.repeats + 1):  # the first round warms up
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    times[threads].append(step_ms(tensors, camera, target))
            load_after = os.getloadavg()[0]
            for threads, samples in times.items():
                samples = samples[1:]
                total = [f + b for f, b, _ in samples]
                row = {
                    "gaussians": len(g), "size": f"{size}x{size}", "threads": threads,
                    "forward_ms": round(statistics.median(f for f, _, _ in samples), 1),
                    "backward_ms": round(statistics.median(b for _, b, _ in samples), 1),
                    "step_ms_median": round(statistics.median(total), 1),
                    "step_ms_min": round(min(total), 1),
                    "tile_slots": samples[0][2],
                    "load_before": round(load_before, 2), "load_after": round(load_after, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "benchmark": "torch_splat forward+backward step",
        "scene": "default avatar, pose talk, whole body from the front (SH degree 1)",
        "tile_size": torch_splat.TILE_SIZE, "chunk": torch_splat.CHUNK,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "date": str(datetime.date.today()),
        "repeats": args.repeats, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
