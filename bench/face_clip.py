"""The face solver on a real clip: each blendshape's distribution over the clip, and a strip
of frames with their top weights to check by eye.

The whole tracker runs over the clip (video mode: calibration over its first 2 s, filters
on), every frame stamped with the clip's own time (1 / fps apart, whatever the machine's
speed). The strip shows, for a few frames (spread evenly, or at the peaks of the shapes
named by --peaks), the default avatar's head posed with that frame's face, gaze and head
codes (GL backend) and the frame's three largest weights; with --with-frames the clip's
face crop beside it (to look at; the clips are other people's pictures, under their own
licences: see tests/media.py before committing such a strip).

    .venv/bin/python bench/face_clip.py .cache/media/jwpIntro.mp4 --strip strip.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.codes import BLENDSHAPE_NAMES, Codes  # noqa: E402

TILE = 256
# The shapes issue 15 scores, reported first.
SCORED = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight",
          "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight",
          "cheekPuff", "mouthPucker", "eyeWideLeft", "eyeWideRight")


def track_clip(path: Path, limit: int | None = None):
    """(frames (T, H, W, 3) uint8, codes [T], face landmarks [T] or None per frame)."""
    from tracking.sources import Frame, VideoSource
    from tracking.tracker import Tracker

    source = VideoSource(path)
    fps = source.nominal_fps or 30.0
    images, codes, faces = [], [], []
    try:
        with Tracker() as tracker:
            while limit is None or len(codes) < limit:
                frame = source.read()
                if frame is None:
                    break
                i = len(codes)
                result = tracker.process(Frame(frame.image, i / fps, i))
                images.append(frame.image)
                codes.append(result.codes)
                faces.append(result.landmarks.face)
    finally:
        source.close()
    return np.array(images), codes, faces


def distributions(codes: list[Codes]) -> dict:
    """Per blendshape over the frames with a face: median, 90th percentile and maximum."""
    weights = np.array([c.face for c in codes if c.is_valid("face")])
    out = {}
    for k, name in enumerate(BLENDSHAPE_NAMES):
        w = weights[:, k]
        out[name] = {"median": round(float(np.median(w)), 3),
                     "p90": round(float(np.percentile(w, 90)), 3),
                     "max": round(float(w.max()), 3)}
    return out


def pick_frames(codes: list[Codes], count: int, peaks: list[str]) -> list[int]:
    from avatar.codes import BLENDSHAPE_INDEX

    valid = [i for i, c in enumerate(codes) if c.is_valid("face")]
    picked = [int(valid[round(j)]) for j in np.linspace(0, len(valid) - 1, count)]
    for name in peaks:
        k = BLENDSHAPE_INDEX[name]
        best = max(valid, key=lambda i: codes[i].face[k])
        if best not in picked:
            picked.append(best)
    return sorted(picked)


def face_box(points: np.ndarray, shape) -> tuple[int, int, int, int]:
    x0, y0 = points[:, :2].min(axis=0)
    x1, y1 = points[:, :2].max(axis=0)
    side = 1.5 * max(x1 - x0, y1 - y0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    left = int(np.clip(cx - side / 2, 0, shape[1] - 1))
    top = int(np.clip(cy - side / 2, 0, shape[0] - 1))
    return left, top, int(min(left + side, shape[1])), int(min(top + side, shape[0]))


def strip(images, codes, faces, picked: list[int], with_frames: bool):
    from PIL import Image, ImageDraw

    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.video import to_uint8

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from face_loop import head_camera

    avatar = load_avatar("default")
    camera = head_camera(avatar.template)
    backend = get_backend("gl")
    rows = 2 if with_frames else 1
    sheet = Image.new("RGB", (TILE * len(picked), TILE * rows + 64), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        for col, i in enumerate(picked):
            c = codes[i]
            posed = Codes(face=c.face, gaze=c.gaze, head=c.head)
            rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(posed), camera)
            tile = Image.fromarray(to_uint8(rgba, (0.45, 0.45, 0.45))).resize((TILE, TILE))
            sheet.paste(tile, (col * TILE, 0))
            if with_frames and faces[i] is not None:
                left, top, right, bottom = face_box(faces[i], images[i].shape)
                crop = Image.fromarray(images[i][top:bottom, left:right]).resize((TILE, TILE))
                sheet.paste(crop, (col * TILE, TILE))
            top3 = np.argsort(-c.face)[:3]
            text = f"frame {i}\n" + "\n".join(f"{BLENDSHAPE_NAMES[k]} {c.face[k]:.2f}"
                                              for k in top3)
            draw.multiline_text((col * TILE + 4, TILE * rows + 2), text, fill=(0, 0, 0))
    finally:
        backend.release()
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", help="a video file")
    parser.add_argument("--frames", type=int, default=None, help="track only the first N")
    parser.add_argument("--strip", help="write the strip of frames to this PNG")
    parser.add_argument("--count", type=int, default=6, help="frames spread over the clip")
    parser.add_argument("--peaks", default="jawOpen,eyeBlinkLeft",
                        help="comma-separated shapes whose peak frame joins the strip")
    parser.add_argument("--with-frames", action="store_true",
                        help="put the clip's face crop under each avatar tile")
    parser.add_argument("--json", help="write the distributions to this JSON file")
    args = parser.parse_args()
    path = Path(args.clip)
    if not path.is_file():
        sys.exit(f"error: no such clip: {path}")
    peaks = [p for p in args.peaks.split(",") if p]
    unknown = [p for p in peaks if p not in BLENDSHAPE_NAMES]
    if unknown:
        sys.exit(f"error: unknown blendshape {unknown[0]!r}")
    images, codes, faces = track_clip(path, args.frames)
    found = sum(c.is_valid("face") for c in codes)
    print(f"{path.name}: {len(codes)} frames, face in {found}", file=sys.stderr)
    if not found:
        sys.exit("error: no face found in the clip")
    dist = distributions(codes)
    print(f"{'shape':20s} {'median':>6s} {'p90':>6s} {'max':>6s}")
    others = sorted((n for n in BLENDSHAPE_NAMES if n not in SCORED),
                    key=lambda n: -dist[n]["p90"])[:8]
    for name in list(SCORED) + others:
        d = dist[name]
        print(f"{name:20s} {d['median']:6.2f} {d['p90']:6.2f} {d['max']:6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"clip": path.name, "frames": len(codes),
                                               "face_frames": found, "shapes": dist}, indent=1))
    if args.strip:
        picked = pick_frames(codes, args.count, peaks)
        strip(images, codes, faces, picked, args.with_frames).save(args.strip)
        print(f"strip of frames {picked} -> {args.strip}", file=sys.stderr)


if __name__ == "__main__":
    main()
