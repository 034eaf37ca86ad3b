#!/usr/bin/env python3
"""Benchmark Avatar.pose: codes -> world-space Gaussians, split into its stages.

Writes bench/results/pose.json and prints a table. Median over --repeats runs of each of the
built-in animations' frames (so blendshapes and bones really vary).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.poses import POSES  # noqa: E402
from avatar.avatar import load_avatar  # noqa: E402
from render.skinned import gaussians_on_mesh, posed_mesh  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60, help="frames timed (default: 60)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/pose.json")
    args = parser.parse_args()
    avatar = load_avatar("default")
    frames = [c for name in ("talk", "wave", "walk") for c in POSES[name].frames(10)]
    stages = {"skeleton_and_skinning": [], "gaussians_on_mesh": [], "total": []}
    for i in range(args.repeats + 3):
        codes = frames[i % len(frames)]
        t0 = time.perf_counter()
        vertices = posed_mesh(avatar.skinned, avatar.skin_pose(codes))
        t1 = time.perf_counter()
        gaussians_on_mesh(avatar.skinned, vertices)
        t2 = time.perf_counter()
        if i >= 3:  # warm-up
            stages["skeleton_and_skinning"].append((t1 - t0) * 1e3)
            stages["gaussians_on_mesh"].append((t2 - t1) * 1e3)
            stages["total"].append((t2 - t0) * 1e3)
    result = {
        "benchmark": "avatar.pose",
        "gaussians": len(avatar),
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "date": time.strftime("%Y-%m-%d"),
        "median_ms": {k: float(np.median(v)) for k, v in stages.items()},
        "p90_ms": {k: float(np.percentile(v, 90)) for k, v in stages.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"Avatar.pose with {len(avatar)} Gaussians ({args.repeats} frames):")
    for k in stages:
        print(f"  {k:24s} median {result['median_ms'][k]:7.1f} ms   "
              f"p90 {result['p90_ms'][k]:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
