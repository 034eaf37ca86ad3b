#!/usr/bin/env python3
"""Render the default and stock avatars side by side (docs/stock-avatars.png): each at rest
from the front and a three-quarter view, with the GL backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.avatar import load_avatar  # noqa: E402
from avatar.codes import Codes  # noqa: E402
from avatar.stock import stock_names  # noqa: E402
from avatar.template import load_template  # noqa: E402
from render.backends import get_backend  # noqa: E402
from render.camera import Camera  # noqa: E402
from render.video import to_uint8  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "stock-avatars.png",
                        help="output PNG")
    parser.add_argument("--size", type=int, default=300, help="height of each view, pixels")
    args = parser.parse_args()
    import PIL.Image

    template = load_template()
    names = ["default"] + [f"stock:{n}" for n in stock_names()]
    backend = get_backend("gl")
    h, w = args.size, int(0.6 * args.size)
    rows = []
    try:
        for yaw in (0.0, 0.6):
            tiles = []
            for name in names:
                avatar = load_avatar(name, template)
                eye = np.array([3.6 * np.sin(yaw), 1.15, 3.6 * np.cos(yaw)])
                camera = Camera.look_at(eye, [0, 1.06, 0], w, h, vertical_fov_deg=37)
                image = backend.render_skinned(avatar.skinned, avatar.skin_pose(Codes()), camera)
                tiles.append(to_uint8(image, (1.0, 1.0, 1.0)))
            rows.append(np.concatenate(tiles, axis=1))
    finally:
        backend.release()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, optimize=True)
    print(f"wrote {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
