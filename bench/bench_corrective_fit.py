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


def residuals(model, codes, cameras, faces, correctives=None) -> tuple[np.ndarray, np.ndarray]:
    """(T, L, 2) landmark residuals (px) and (T, L) mm per px, with optional ``Correctives``."""
    from render.skinned import corrective_offsets

    px, scale = [], []
    for c, camera, face in zip(codes, cameras, faces):
        offsets = (None if correctives is None
                   else corrective_offsets(correctives, model.features(c)))
        r = model.residual(c, camera, face, offsets)
        px.append(r.pixels)
        scale.append(1000 * r.metres_per_px)
    return np.array(px), np.array(scale)


def rms(px: np.ndarray, scale: np.ndarray) -> tuple[float, float]:
    length = np.linalg.norm(px, axis=-1)
    return (float(np.sqrt(np.mean(length ** 2))), float(np.sqrt(np.mean((length * scale) ** 2))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / ".cache/media/jwpIntro.mp4")
    parser.add_argument("--width", type=int, default=24, help="features per vertex (M)")
    parser.add_argument("--mode", default="zero_mean", choices=("zero_mean", "intercept", "free"),
                        help="how the static mismatch is kept out of the basis "
                        "(avatar.corrective_fit.ridge_solver)")
    parser.add_argument("--track-cache", type=Path,
                        help="reuse the tracking saved in this .npz (written if absent)")
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
    for name, c in (("before", None), ("after", correctives)):
        train_px, _ = residuals(model, *train, correctives=c)
        held_px, scale = residuals(model, *held, correctives=c)
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
          f"{scores['before_less_static'][0]:.2f} -> {scores['after_less_static'][0]:.2f} px")
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
