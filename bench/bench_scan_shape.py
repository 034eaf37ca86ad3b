#!/usr/bin/env python3
"""Benchmark the scan import's body-shape fit (issue 14): people of other builds exported at
rest as PLY scans, imported with and without the shape fit (`--no-shape`), and the imported
avatars driven like the originals. PSNR at 256x256 with the GL backend, the render command's
front camera (scaled with the imported avatar: a scan's units are unknown, so the import
scales the person to the template's height). Writes bench/results/scan-shape.json."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import main as cli  # noqa: E402
from app.poses import POSES  # noqa: E402
from app.render_cmd import preset_camera  # noqa: E402
from avatar.avatar import Avatar, load_avatar  # noqa: E402
from avatar.codes import Codes  # noqa: E402
from avatar.lca import load_avatar_file  # noqa: E402
from avatar.splatfile import write_splat_file  # noqa: E402
from avatar.template import load_template  # noqa: E402
from render.backends import get_backend  # noqa: E402
from render.camera import Camera  # noqa: E402


def scaled(camera: Camera, factor: float) -> Camera:
    """The same view of a scene scaled by ``factor`` about the origin."""
    m = camera.camera_from_world.copy()
    m[:3, 3] *= factor
    return Camera(m, camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)


def psnr(backend, a, b, camera_a, camera_b) -> float:
    x = backend.render(a, camera_a)[..., :3].astype(np.float64)
    y = backend.render(b, camera_b)[..., :3].astype(np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _extent(avatar) -> float:
    low, high = np.percentile(avatar.pose(Codes()).means[:, 1], [1, 99])
    return float(high - low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs="+", default=["stock:amara", "stock:chen"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scan-shape.json")
    args = parser.parse_args()
    template = load_template()
    backend = get_backend("gl")
    camera = preset_camera("front", 256, 256)
    results = {"machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
               "subjects": {}}
    with tempfile.TemporaryDirectory() as folder:
        for subject in args.subjects:
            original = load_avatar(subject, template)
            scan = Path(folder) / "scan.ply"
            write_splat_file(scan, original.pose(Codes()))
            height = float(np.ptp(original.template.vertices[:, 1]))
            row = {"height_m": height}
            for flag in ([], ["--no-shape"]):
                out = Path(folder) / "imported.lca"
                started = time.monotonic()
                assert cli(["avatar", "import", str(scan), "--out", str(out), *flag]) == 0
                seconds = time.monotonic() - started
                data = load_avatar_file(out, template)
                imported = Avatar(data, template)
                # The import's scale, read off the two at rest (the Gaussians' 1st to 99th
                # percentile of height: the fit's own scale moves it off the template's).
                factor = _extent(imported) / _extent(original)
                scores = {pose: round(psnr(backend, original.pose(POSES[pose].codes(0.4)),
                                           imported.pose(POSES[pose].codes(0.4)),
                                           camera, scaled(camera, factor)), 2)
                          for pose in ("rest", "wave", "walk")}
                key = "no_shape" if flag else "shape"
                row[key] = {"psnr_db": scores, "import_s": round(seconds, 1),
                            "shape": data.provenance["shape"]}
                print(f"{subject} {key}: {scores} in {seconds:.0f} s; "
                      f"{data.provenance['shape']}", flush=True)
            results["subjects"][subject] = row
    backend.release()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
