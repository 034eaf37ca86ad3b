#!/usr/bin/env python3
"""Benchmark Avatar.pose: codes -> world-space Gaussians, split into its stages.

Writes bench/results/pose.json and prints a table. Median over --repeats runs of each of the
built-in animations' frames (so blendshapes and bones really vary).

``--torch-device cuda`` (or ``cpu``) also times the torch poser (``render.cuda_pose``, the cuda
backend's device posing) on that device over the same frames: per frame the CPU forward
kinematics, bone transforms and face weights to the device, the posing maths there, then
``torch.cuda.synchronize()``; the first call (the avatar's arrays uploaded) is reported apart.
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
    parser.add_argument("--torch-device", default=None, metavar="DEVICE",
                        help="also time the torch poser on DEVICE (cuda, cuda:1, cpu)")
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
    if args.torch_device:
        result["torch"] = time_torch_poser(avatar, frames, args.repeats, args.torch_device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"Avatar.pose with {len(avatar)} Gaussians ({args.repeats} frames):")
    for k in stages:
        print(f"  {k:24s} median {result['median_ms'][k]:7.1f} ms   "
              f"p90 {result['p90_ms'][k]:7.1f} ms")
    torch_result = result.get("torch")
    if torch_result and "median_ms" in torch_result:
        print(f"  torch poser on {torch_result['device_name']}: median "
              f"{torch_result['median_ms']:.2f} ms, p90 {torch_result['p90_ms']:.2f} ms "
              f"(first call {torch_result['first_call_ms']:.1f} ms)")
    elif torch_result:
        print(f"  torch poser: {torch_result['unavailable']}")
    return 0


def time_torch_poser(avatar, frames, repeats: int, device: str) -> dict:
    """Wall time of ``TorchAvatarPoser(device).pose`` per frame, synchronised; or the reason it
    cannot run here (``unavailable``)."""
    try:
        import torch
    except ImportError as exc:
        return {"device": device, "unavailable": f"torch is not installed: {exc}"}
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return {"device": device, "unavailable": "torch sees no CUDA device"}
    except RuntimeError as exc:
        return {"device": device, "unavailable": str(exc)}
    from render.cuda_pose import TorchAvatarPoser

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    poser = TorchAvatarPoser(dev)
    t0 = time.perf_counter()
    poser.pose(avatar.skinned, avatar.skin_pose(frames[0]))
    sync()
    first_ms = (time.perf_counter() - t0) * 1e3
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        poser.pose(avatar.skinned, avatar.skin_pose(frames[i % len(frames)]))
        sync()
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return {"device": str(dev), "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "first_call_ms": first_ms,
            "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


if __name__ == "__main__":
    sys.exit(main())
