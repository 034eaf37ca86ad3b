#!/usr/bin/env python3
"""Correctives fitted from a real clip's face landmarks: do they help on frames never fitted?

Tracks the clip (the project's tracker), fits per-frame cameras to the default avatar's
face-mesh points and shoulders (as bench/bench_fit_appearance.py does), fits correctives
(avatar.corrective_fit) on the first 75 % of the frames and reports the RMS landmark residual
(px and mm) on the last 25 % without and with them, and where the time went. Writes a JSON
file.

Caveats: the cameras (a focal length shared by the clip, a shift per frame) are fitted on all
frames, held-out ones included, to the avatar without correctives; the default avatar's face
shape is not the person's (the static mismatch, which correctives do not model, stays).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_fit_appearance import TrackedClip, fit_cameras, track_clip  # noqa: E402


def residuals(model, codes, cameras, faces, correctives=None,
              rest_offset=None) -> tuple[np.ndarray, np.ndarray]:
    """(T, L, 2) landmark residuals (px) and (T, L) mm per px, with optional ``Correctives``
    and a static rest-space offset (V, 3)."""
    from render.skinned import corrective_offsets

    px, scale = [], []
    for c, camera, face in zip(codes, cameras, faces):
        offsets = (None if correctives is None
                   else corrective_offsets(correctives, model.features(c)))
        if rest_offset is not None:
            offsets = offsets + rest_offset
        r = model.residual(c, camera, face, offsets)
        px.append(r.pixels)
        scale.append(1000 * r.metres_per_px)
    return np.array(px), np.array(scale)


def rms(px: np.ndarray, scale: np.ndarray) -> tuple[float, float]:
    length = np.linalg.norm(px, axis=-1)
    return (float(np.sqrt(np.mean(length ** 2))), float(np.sqrt(np.mean((length * scale) ** 2))))


def write_picture(path: Path, avatar, fit, clip, cameras, held) -> None:
    """Three held-out frames, cropped to the face: the source, the default avatar, with the
    fitted correctives, and with the rest offset taken into the template too (as a shape
    would hold it)."""
    import dataclasses

    from PIL import Image

    from avatar.avatar import Avatar
    from render.reference import render

    data = dataclasses.replace(avatar.data, corrective_bones=fit.bones,
                               corrective_index=fit.index, corrective_basis=fit.basis)
    shaped = dataclasses.replace(avatar.template,
                                 vertices=avatar.template.vertices + fit.rest_offset)
    avatars = (avatar, Avatar(data, avatar.template), Avatar(data, shaped))
    try:
        from render import gl

        renderer = gl.GLSplatRenderer()
        draw = renderer.render
    except Exception:  # no headless GL here: the reference renderer
        renderer, draw = None, render
    rows = []
    try:
        for i in (held[0], held[len(held) // 2], held[-1]):
            face = clip.faces[i]
            centre = face.mean(axis=0)
            half = 0.8 * float(np.max(face.max(axis=0) - face.min(axis=0)))
            x0, y0 = (np.maximum(centre - half, 0)).astype(int)
            x1, y1 = x0 + int(2 * half), y0 + int(2 * half)
            views = [clip.frames[i][y0:y1, x0:x1] / 255.0]
            for who in avatars:
                rgba = draw(who.pose(clip.codes[i]), cameras[i])[y0:y1, x0:x1]
                views.append(np.clip(rgba[..., :3] + (1 - rgba[..., 3:]) * 0.35, 0, 1))
            size = min(v.shape[0] for v in views), min(v.shape[1] for v in views)
            rows.append(np.concatenate([v[:size[0], :size[1]] for v in views], axis=1))
    finally:
        if renderer is not None:
            renderer.release()
    width = min(r.shape[1] for r in rows)
    picture = (np.concatenate([r[:, :width] for r in rows], axis=0) * 255).round()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture.astype(np.uint8)).save(path)
    print(f"wrote {path}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / ".cache/media/jwpIntro.mp4")
    parser.add_argument("--width", type=int, default=24, help="features per vertex (M)")
    parser.add_argument("--mode", default="zero_mean", choices=("zero_mean", "intercept", "free"),
                        help="how the static mismatch is kept out of the basis "
                        "(avatar.corrective_fit.ridge_solver)")
    parser.add_argument("--track-cache", type=Path,
                        help="reuse the tracking saved in this .npz (written if absent)")
    parser.add_argument("--png", type=Path, default=ROOT / "out/corrective-fit.png",
                        help="held-out faces: source | default avatar | with the correctives | "
                        "and the rest offset (out/ is not committed: it shows the clip)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / f"bench/results/corrective-fit-{date.today()}.json")
    args = parser.parse_args()

    from avatar.avatar import load_avatar
    from avatar.corrective_fit import LandmarkModel, fit_correctives_from_landmarks
    from avatar.lca import corrective_feature_count
    from render.skinned import Correctives

    seconds: dict[str, float] = {}
    print(f"fitting correctives to {args.video}", file=sys.stderr)
    if args.track_cache and args.track_cache.exists():
        clip = TrackedClip.load(args.track_cache)
    else:
        clip = track_clip(args.video, seconds)
        if args.track_cache:
            clip.save(args.track_cache)
    t = time.perf_counter()
    avatar = load_avatar("default")
    _, cameras, camera_rms = fit_cameras(avatar, clip)
    seconds["camera_fit"] = round(time.perf_counter() - t, 2)
    n = len(clip.codes)
    n_train = round(0.75 * n)
    faces = [None if np.isnan(f).any() else f for f in clip.faces]
    t = time.perf_counter()
    fit = fit_correctives_from_landmarks(avatar, clip.codes[:n_train], cameras[:n_train],
                                         faces[:n_train], width=args.width,
                                         mode=args.mode)
    seconds["fit_correctives"] = round(time.perf_counter() - t, 2)
    print(f"  fit: {fit.report}", file=sys.stderr)

    model = LandmarkModel(avatar)
    correctives = Correctives(fit.index, fit.basis, corrective_feature_count(len(fit.bones)))
    t = time.perf_counter()

    def frames(rows):
        rows = [i for i in rows if faces[i] is not None]
        return [clip.codes[i] for i in rows], [cameras[i] for i in rows], [faces[i] for i in rows]

    train, held = frames(range(n_train)), frames(range(n_train, n))
    scores = {}
    for name, c, static in (("before", None, None), ("after", correctives, None),
                            ("after_with_rest_offset", correctives, fit.rest_offset)):
        train_px, _ = residuals(model, *train, correctives=c, rest_offset=static)
        held_px, scale = residuals(model, *held, correctives=c, rest_offset=static)
        scores[name] = rms(held_px, scale)
        # The residual less each point's mean over the fitted frames (in the image): what
        # is left besides the static mismatch of the face's shape, which correctives do
        # not model (a shape fit's business).
        scores[f"{name}_less_static"] = rms(held_px - train_px.mean(axis=0), scale)
    seconds["score"] = round(time.perf_counter() - t, 2)
    before, after = scores["before"], scores["after"]
    print(f"held-out landmark RMS over {len(held[0])} frames: {before[0]:.2f} px "
          f"({before[1]:.2f} mm) without correctives, {after[0]:.2f} px ({after[1]:.2f} mm) "
          f"with them; less each point's mean fitted residual: "
          f"{scores['before_less_static'][0]:.2f} -> {scores['after_less_static'][0]:.2f} px; "
          f"with the rest offset too: {scores['after_with_rest_offset'][0]:.2f} px "
          f"({scores['after_with_rest_offset_less_static'][0]:.2f} less static)")
    write_picture(args.png, avatar, fit, clip, cameras, range(n_train, n))
    result = {
        "benchmark": "corrective_fit", "video": args.video.name, "frames": n,
        "fit_frames": n_train, "held_out_frames": n - n_train, "width": args.width,
        "mode": args.mode,
        "camera_fit_rms_px": round(camera_rms, 2),
        "held_out_frames_with_face": len(held[0]),
        "held_out_landmark_rms": {f"{name}_{unit}": round(value[k], 3)
                                  for name, value in scores.items()
                                  for k, unit in enumerate(("px", "mm"))},
        "fit_report": fit.report, "seconds": seconds,
        "machine": f"{platform.machine()}, 2-core VM, no GPU", "date": str(date.today()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
