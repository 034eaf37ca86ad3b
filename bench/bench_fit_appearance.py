#!/usr/bin/env python3
"""A first measurement toward issue 12: the default avatar's appearance fitted to a clip.

Tracks the clip with the project's tracker, cuts the person out (selfie segmentation),
poses the default avatar per frame, fits one camera focal length and a per-frame shift
to the face-mesh points and shoulders, then optimises per-Gaussian colours (SH degree 1),
opacities, scales and small offsets with the torch splatter against the first 75 % of
the frames inside the person mask. Reports the held-out masked PSNR / SSIM on the last
25 % (never fitted), with the default avatar and the projected colours (before any
optimisation) as baselines, and where the time went. Writes a JSON file and a PNG
(source frame | fitted render | the same turned 35 degrees | default avatar) for three
held-out frames.

Not fitted yet (issue 12's later steps): the body and face shape, per-frame pose
corrections, rotations, Gaussians beyond the template surface, correctives.
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

from avatar.quality import HeldOutQuality, masked_psnr
from render.skinned import gaussians_on_mesh

# The clip's tracking and the camera fit are the product's (app/avatar_create.py).
from app.avatar_create import TrackedClip, downsample, read_video, track_frames  # noqa: E402


def track_clip(path: Path, seconds: dict) -> TrackedClip:
    """Every frame of the clip tracked and segmented."""
    return track_frames(read_video(path, 100_000), seconds=seconds)


def fit_cameras(avatar, clip: TrackedClip):
    from app.avatar_create import fit_cameras as fit

    height, width = clip.frames.shape[1:3]
    return fit(avatar, clip.codes, clip.faces, clip.shoulders, width, height)


def head_centre(vertices: np.ndarray) -> np.ndarray:
    """A point inside the head: the mean of the top 12 cm of the mesh."""
    top = vertices[:, 1].max()
    return vertices[vertices[:, 1] > top - 0.12].mean(axis=0)


def orbit(camera, centre: np.ndarray, degrees: float):
    """``camera`` turned by ``degrees`` about the vertical axis through ``centre``."""
    from render.camera import Camera

    a = np.radians(degrees)
    turn = np.eye(4)
    turn[[0, 0, 2, 2], [0, 2, 0, 2]] = [np.cos(a), -np.sin(a), np.sin(a), np.cos(a)]
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = centre, -centre
    camera_from_world = camera.camera_from_world @ shift @ turn.T @ back
    return Camera(camera_from_world, camera.width, camera.height, camera.fx, camera.fy,
                  camera.cx, camera.cy, camera.near, camera.far)


def render_rgba(means, quats, scales, opacities, colors, camera) -> np.ndarray:
    import torch

    from render import torch_splat

    with torch.no_grad():
        return torch_splat.render(*(torch.as_tensor(a) for a in (means, quats, scales,
                                                                  opacities, colors)),
                                  camera).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / ".cache/media/jwpIntro.mp4")
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps")
    parser.add_argument("--factor", type=int, default=2,
                        help="fit at the clip's size divided by this (2: 320x240)")
    parser.add_argument("--full-size-every", type=int, default=3,
                        help="also score every Nth held-out frame at the clip's own size")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared 2-core machine, 2 threads ran "
                        "3-5x slower than 1 whenever another process was busy)")
    parser.add_argument("--track-cache", type=Path,
                        help="reuse the tracking and masks saved in this .npz (written if absent)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / f"bench/results/fit-appearance-{date.today()}.json")
    parser.add_argument("--png", type=Path, default=ROOT / "out/fit-appearance.png",
                        help="source | fitted | fitted seen 35 degrees aside | default avatar, "
                        "three held-out frames "
                        "(out/ is not committed: it shows the clip's frames)")
    args = parser.parse_args()

    import torch

    from avatar.appearance import (
        AppearanceModel,
        FitFrame,
        FitSettings,
        fit_appearance,
        projected_colors,
        render_model,
        visible_gaussians,
    )
    from avatar.avatar import load_avatar

    torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}

    def stage(name, t0):
        seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"  {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)

    print(f"fitting the default avatar's appearance to {args.video}", file=sys.stderr)
    if args.track_cache and args.track_cache.exists():
        clip = TrackedClip.load(args.track_cache)
        print(f"  tracking and masks from {args.track_cache}", file=sys.stderr)
    else:
        clip = track_clip(args.video, seconds)
        if args.track_cache:
            clip.save(args.track_cache)
    frames, probabilities = clip.frames, clip.probabilities
    t = time.perf_counter()
    avatar = load_avatar("default")
    h, w = frames[0].shape[:2]
    vertices, cameras, rms = fit_cameras(avatar, clip)
    stage("pose_and_camera_fit", t)

    n = len(frames)
    n_train = round(0.75 * n)
    train, held = range(n_train), range(n_train, n)
    f = args.factor
    small = [c.resized(w // f, h // f) for c in cameras]

    def fit_frame(i):
        return FitFrame(vertices[i], small[i], downsample(frames[i] / 255.0, f).astype(np.float32),
                        downsample(probabilities[i], f) > 0.5)

    t = time.perf_counter()
    train_frames = [fit_frame(i) for i in train]
    sample = train_frames[:: max(1, len(train_frames) // 8)]
    index = visible_gaussians(avatar, [(fr.vertices, fr.camera) for fr in sample])
    model = AppearanceModel(avatar, index)
    init = projected_colors(model, [(model.base(fr.vertices), fr.camera, fr.image, fr.mask)
                                    for fr in sample])
    model = AppearanceModel(avatar, index, colors=init)
    stage("select_and_initialise", t)
    print(f"  {len(index)} of {len(avatar)} Gaussians seen; camera fit RMS {rms:.1f} px",
          file=sys.stderr)

    diagnostics: dict[str, dict] = {}

    def score(which: str, size_factor: int, frames_at, name: str) -> HeldOutQuality:
        """Held-out quality, and (in ``diagnostics``) what limits it: the silhouette's
        overlap with the mask and the PSNR where both cover the pixel."""
        triples, iou, inner = [], [], []
        for i in frames_at:
            cam = cameras[i].resized(w // size_factor, h // size_factor)
            target = downsample(frames[i] / 255.0, size_factor)
            mask = downsample(probabilities[i], size_factor) > 0.5
            if which == "default":
                g = gaussians_on_mesh(avatar.skinned, vertices[i])
                rgba = render_rgba(g.means, g.quats, g.scales, g.opacities, g.colors, cam)
            else:
                with torch.no_grad():
                    rgba = render_model(model, model.base(vertices[i]), cam).numpy()
            rendered = np.clip(rgba[..., :3], 0, 1)
            covered = rgba[..., 3] > 0.5
            iou.append((covered & mask).sum() / (covered | mask).sum())
            if (covered & mask).any():
                inner.append(masked_psnr(rendered, target, covered & mask))
            triples.append((rendered, target, mask))
        diagnostics[name] = {"silhouette_iou": round(float(np.mean(iou)), 3),
                             "psnr_where_both_cover_db": round(float(np.mean(inner)), 2)}
        return HeldOutQuality.of(triples)

    t = time.perf_counter()
    before = {"default_avatar": score("default", f, held, "default_avatar"),
              "projected_colours": score("model", f, held, "projected_colours")}
    stage("score_baselines", t)

    t = time.perf_counter()
    last = [time.perf_counter()]

    def progress(step, loss):
        if step % 25 == 0 or step == args.steps - 1:
            now = time.perf_counter()
            print(f"  step {step}/{args.steps} loss {loss:.4f} ({now - last[0]:.1f} s)",
                  file=sys.stderr, flush=True)
            last[0] = now

    log = fit_appearance(model, train_frames, FitSettings(steps=args.steps), progress)
    stage("optimise", t)
    t = time.perf_counter()
    fitted = score("model", f, held, "fitted")
    full_frames = list(held)[:: args.full_size_every]
    fitted_full = score("model", 1, full_frames, "fitted_full_size")
    stage("score_fitted", t)

    for name, q in [*before.items(), ("fitted", fitted), ("fitted_full_size", fitted_full)]:
        print(f"{name}: {q.summary()} (pooled {q.pooled_psnr_db:.1f} dB); {diagnostics[name]}")
    per_step = {k: round(1000 * v / max(args.steps, 1), 1) for k, v in log.seconds.items()}
    print(f"per step (ms): {per_step}")

    # Look at it: held-out frames, source | fitted | default avatar, at the clip's size.
    from PIL import Image

    rows = []
    for i in (held[0], held[len(held) // 2], held[-1]):
        g = gaussians_on_mesh(avatar.skinned, vertices[i])
        default = np.clip(render_rgba(g.means, g.quats, g.scales, g.opacities, g.colors,
                                      cameras[i])[..., :3], 0, 1)
        with torch.no_grad():
            rgba = render_model(model, model.base(vertices[i]), cameras[i]).numpy()
        grey = np.array([0.35, 0.35, 0.38])
        fitted_img = np.clip(rgba[..., :3] + (1 - rgba[..., 3:]) * grey, 0, 1)
        # A view the clip never shows: the camera turned 35 degrees about the head.
        with torch.no_grad():
            turned = render_model(model, model.base(vertices[i]),
                                  orbit(cameras[i], head_centre(vertices[i]), 35.0)).numpy()
        turned_img = np.clip(turned[..., :3] + (1 - turned[..., 3:]) * grey, 0, 1)
        rows.append(np.concatenate([frames[i] / 255.0, fitted_img, turned_img, default], axis=1))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    picture = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(picture).resize((picture.shape[1] // 2, picture.shape[0] // 2),
                                    Image.BOX).save(args.png)

    result = {
        "benchmark": "fit_appearance",
        "video": args.video.name, "frames": n, "train_frames": len(train),
        "held_out_frames": len(held), "fit_size": [w // f, h // f],
        "gaussians_fitted": len(index), "gaussians_total": len(avatar),
        "steps": args.steps, "threads": args.threads, "camera_fit_rms_px": round(rms, 2),
        "held_out": {name: q.to_json_dict() for name, q in
                     [*before.items(), ("fitted", fitted)]},
        "held_out_full_size": {"fitted": fitted_full.to_json_dict(),
                               "size": [w, h], "every": args.full_size_every},
        "diagnostics": diagnostics,
        "summary_line": fitted.summary(),
        "seconds": seconds, "per_step_ms": per_step,
        "final_loss": round(float(np.mean(log.losses[-20:])), 4) if log.losses else None,
        "machine": f"{platform.machine()}, {platform.node() or 'vm'}, 2-core VM, no GPU",
        "date": str(date.today()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} and {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
