#!/usr/bin/env python3
"""Render the README's pictures of an avatar's face (docs/images/portrait.png, face.png).

- portrait.png: `render --camera portrait` frames (rest, smile, talk with a blink), each
  512x512 cut to its middle and shown at 320x320.
- face.png: close views of the face, at rest and with jawOpen + smile looking to its left.
- With ``--before OLD.lca``: face_before_after.png, the same four head-and-shoulders views
  (front, three-quarter, smile, talk) of OLD above those of the avatar.

    .venv/bin/python scripts/render_face_images.py [--avatar FILE] [--before OLD.lca]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.poses import POSES  # noqa: E402
from app.render_cmd import PORTRAIT_DISTANCE_M, portrait_camera, portrait_framing  # noqa: E402
from avatar.avatar import load_avatar  # noqa: E402
from avatar.codes import BLENDSHAPE_INDEX, Codes  # noqa: E402
from render.backends import get_backend  # noqa: E402
from render.camera import Camera  # noqa: E402
from render.video import to_uint8  # noqa: E402

SIZE = 512
TALK_BLINK_S = 0.05  # a talk frame with the eyes shut


def shot(backend, avatar, codes: Codes, camera) -> Image.Image:
    rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
    return Image.fromarray(to_uint8(rgba, (1.0, 1.0, 1.0)))


def turned_portrait(avatar, codes: Codes, yaw_deg: float) -> Camera:
    """The portrait camera swung ``yaw_deg`` about the avatar (toward its left)."""
    if yaw_deg == 0:
        return portrait_camera(avatar, codes, SIZE, SIZE)
    target, forward = portrait_framing(avatar, codes)
    a = math.radians(yaw_deg)
    turned = np.array([forward[0] * math.cos(a) + forward[2] * math.sin(a), 0.0,
                       -forward[0] * math.sin(a) + forward[2] * math.cos(a)])
    camera = portrait_camera(avatar, codes, SIZE, SIZE)
    return Camera.look_at(target + turned * PORTRAIT_DISTANCE_M + np.array([0.0, 0.03, 0.0]),
                          target, SIZE, SIZE,
                          vertical_fov_deg=math.degrees(2 * math.atan(SIZE / 2 / camera.fy)))


def face_camera(avatar) -> Camera:
    names = list(avatar.rig.bone_names)
    eyes = avatar.template.bone_heads[[names.index("eye.L"), names.index("eye.R")]].mean(0)
    target = eyes - np.array([0.0, 0.05, 0.0])
    return Camera.look_at(target + np.array([0.0, 0.02, 0.6]), target, 400, 400,
                          vertical_fov_deg=math.degrees(2 * math.atan(0.13 / 0.6)))


def expression(**weights) -> Codes:
    codes = Codes()
    face = codes.face.copy()
    for name, weight in weights.items():
        face[BLENDSHAPE_INDEX[name]] = weight
    return codes.replace(face=face)


def middle(image: Image.Image, size: int = 320) -> Image.Image:
    """The middle of a portrait frame (the head and the top of the shoulders), resized."""
    w, h = image.size
    return image.crop((w // 8, 0, w - w // 8, h * 3 // 4)).resize((size, size), Image.LANCZOS)


def save_small(image: Image.Image, path: Path) -> None:
    """A PNG of 256 colours (half the bytes; no banding seen on these renders)."""
    image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                  dither=Image.Dither.NONE).save(path, optimize=True)


def row(tiles: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        out.paste(tile, (x, 0))
        x += tile.width
    return out


def head_views(backend, avatar) -> list[Image.Image]:
    """Front, three-quarter, smile and talk, cut to the head and shoulders (240 wide)."""
    rest, smile = POSES["rest"].codes(0.0), POSES["smile"].codes(0.0)
    talk = POSES["talk"].codes(0.3)
    views = [(rest, 0.0), (rest, 35.0), (smile, 0.0), (talk, 0.0)]
    return [shot(backend, avatar, c, turned_portrait(avatar, c, yaw)).crop((96, 40, 416, 360))
            .resize((240, 240), Image.LANCZOS) for c, yaw in views]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="default", help="'default' or a .lca file")
    parser.add_argument("--before", type=Path, help="an earlier .lca to compare against")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "images",
                        help="folder for the PNGs (default: docs/images)")
    args = parser.parse_args()
    backend = get_backend("auto")
    try:
        avatar = load_avatar(args.avatar)
        frames = [POSES["rest"].codes(0.0), POSES["smile"].codes(0.0),
                  POSES["talk"].codes(TALK_BLINK_S)]
        camera = portrait_camera(avatar, frames[0], SIZE, SIZE)
        save_small(row([middle(shot(backend, avatar, c, camera)) for c in frames]),
                   args.out_dir / "portrait.png")
        looking = expression(jawOpen=0.4, mouthSmileLeft=0.6, mouthSmileRight=0.6)
        looking = looking.replace(gaze=np.array([[0.3, 0.0], [0.3, 0.0]], np.float32))
        save_small(row([shot(backend, avatar, c, face_camera(avatar))
                        for c in (Codes(), looking)]), args.out_dir / "face.png")
        if args.before is not None:
            before = row(head_views(backend, load_avatar(args.before)))
            after = row(head_views(backend, avatar))
            sheet = Image.new("RGB", (after.width, 2 * after.height + 40), "white")
            sheet.paste(before, (0, 20))
            sheet.paste(after, (0, after.height + 40))
            draw = ImageDraw.Draw(sheet)
            draw.text((6, 4), "before", fill=(0, 0, 0))
            draw.text((6, after.height + 24), "after", fill=(0, 0, 0))
            save_small(sheet, args.out_dir / "face_before_after.png")
    finally:
        backend.release()
    print(f"wrote the face pictures in {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
