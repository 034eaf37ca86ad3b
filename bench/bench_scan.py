#!/usr/bin/env python3
"""Benchmark splat scans: file sizes per format, and `avatar import` time for 217k and 1M.

The 217k scan is the default avatar exported at rest as a PLY; the 1M scan splits each of its
Gaussians into about five smaller ones jittered over its footprint (the same person, denser,
as a phone scan might be). Writes bench/results/scan.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import main as cli
from avatar.avatar import load_avatar
from avatar.codes import Codes
from avatar.splatfile import write_splat_file
from render.gaussians import Gaussians


def denser(g: Gaussians, count: int, seed: int = 0) -> Gaussians:
    """About ``count`` Gaussians covering the same surface: copies jittered by their own
    scales, each shrunk so that the sum looks alike."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(g), count)
    jitter = rng.normal(size=(count, 3)) * g.scales[pick] * 0.7
    return Gaussians(g.means[pick] + jitter, g.quats[pick], g.scales[pick] * 0.55,
                     g.opacities[pick], g.colors[pick])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scan.json")
    parser.add_argument("--large", type=int, default=1_000_000, help="the large scan's size")
    args = parser.parse_args()
    rest = load_avatar("default").pose(Codes())
    results: dict = {"machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
                     "sizes_bytes": {}, "import_s": {}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for suffix in (".ply", ".splat", ".spz"):
            started = time.perf_counter()
            size = write_splat_file(folder / f"rest{suffix}", rest)
            results["sizes_bytes"][suffix] = size
            print(f"{suffix:7s} {size / 1e6:7.2f} MB  {size / len(rest):6.1f} B/Gaussian  "
                  f"written in {time.perf_counter() - started:.2f} s")
        write_splat_file(folder / "large.ply", denser(rest, args.large))
        for name in ("rest", "large"):
            scan = folder / f"{name}.ply"
            started = time.perf_counter()
            assert cli(["avatar", "import", str(scan), "--out", str(folder / f"{name}.lca")]) == 0
            elapsed = time.perf_counter() - started
            count = len(rest) if name == "rest" else args.large
            results["import_s"][str(count)] = round(elapsed, 1)
            results["sizes_bytes"][f"lca from {count}"] = (folder / f"{name}.lca").stat().st_size
            print(f"import of {count:,} Gaussians: {elapsed:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
