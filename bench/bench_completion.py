#!/usr/bin/env python3
"""Colour completion on a real clip, to look at: the default avatar's Gaussians that a
head-and-shoulders clip shows take the projected colours of a few of its frames
(avatar.appearance), the rest are completed (avatar.completion); renders the avatar at rest
from the front and from behind, before and after completion, beside a frame of the clip.
Prints the share of Gaussians seen, the time, and the mean colours of the completed back of
the shirt and of the head. Writes a PNG (out/ is not committed: it shows the clip's frame).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_fit_appearance import TrackedClip, downsample, fit_cameras, track_clip  # noqa: E402


def render_views(avatar, colors: np.ndarray, size=(256, 384)) -> np.ndarray:
    """(H, 2W, 3) the avatar at rest with ``colors`` (albedo) from the front and behind."""
    from avatar.codes import Codes
    from render.camera import Camera
    from render.gaussians import Gaussians
    from render.reference import render

    posed = avatar.pose(Codes())
    lit = posed.colors / np.maximum(avatar.data.colors, 1e-6) * colors
    g = Gaussians(posed.means, posed.quats, posed.scales, posed.opacities,
                  np.clip(lit, 0, 1).astype(np.float32))
    try:
        from render import gl

        renderer = gl.GLSplatRenderer()
        draw = renderer.render
    except Exception:  # no headless GL: the reference renderer, smaller
        renderer, draw, size = None, render, (96, 144)
    views = []
    try:
        for eye in ([0.0, 1.0, 3.2], [0.0, 1.0, -3.2]):
            rgba = draw(g, Camera.look_at(eye, [0.0, 0.9, 0.0], *size, vertical_fov_deg=40))
            views.append(np.clip(rgba[..., :3] + (1 - rgba[..., 3:]) * 0.5, 0, 1))
    finally:
        if renderer is not None:
            renderer.release()
    return np.concatenate(views, axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / ".cache/media/jwpIntro.mp4")
    parser.add_argument("--views", type=int, default=8, help="frames to project colours from")
    parser.add_argument("--track-cache", type=Path,
                        help="reuse the tracking saved in this .npz (written if absent)")
    parser.add_argument("--png", type=Path, default=ROOT / "out/completion.png")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from avatar.appearance import AppearanceModel, projected_colors, visible_gaussians
    from avatar.avatar import load_avatar
    from avatar.completion import complete_colors

    torch.set_num_threads(1)
    clip = (TrackedClip.load(args.track_cache) if args.track_cache and args.track_cache.exists()
            else track_clip(args.video, {}))
    if args.track_cache and not args.track_cache.exists():
        clip.save(args.track_cache)
    avatar = load_avatar("default")
    vertices, cameras, _ = fit_cameras(avatar, clip)
    h, w = clip.frames.shape[1:3]
    fit = round(0.75 * len(vertices))
    picks = np.linspace(0, fit - 1, args.views).round().astype(int)
    small = [cameras[i].resized(w // 2, h // 2) for i in picks]
    index = visible_gaussians(avatar, [(vertices[i], cam) for i, cam in zip(picks, small)])
    model = AppearanceModel(avatar, index)
    projected = projected_colors(model, [
        (model.base(vertices[i]), cam, downsample(clip.frames[i] / 255.0, 2),
         downsample(clip.probabilities[i], 2) > 0.5) for i, cam in zip(picks, small)])
    colors = avatar.data.colors.astype(np.float32).copy()
    colors[index] = projected
    # Seen: a colour actually taken from a frame (projected_colors keeps the avatar's own
    # where a Gaussian's centre never lands in the person mask; visible is not enough).
    # projected_colors has no visibility test yet (the back of the head takes the face's
    # colours): stand in for one with the rest triangles' normals (the talker faces the
    # camera), so that what is measured here is the completion.
    from render.skinned import triangle_frames

    frames, _ = triangle_frames(avatar.template.vertices, avatar.template.faces)
    facing = frames[avatar.data.binding_face, 2, 2] > 0.2
    seen = np.zeros(len(colors), bool)
    seen[index] = np.any(projected != avatar.data.colors[index], axis=1)
    seen &= facing
    colors[~seen] = avatar.data.colors[~seen]  # what completion starts from
    t = time.perf_counter()
    completed = complete_colors(avatar.template, avatar.data.binding_face, colors, seen)
    seconds = time.perf_counter() - t
    centroid = avatar.template.vertices[avatar.template.faces].mean(axis=1)
    at = centroid[avatar.data.binding_face]
    back = ~seen & (at[:, 2] < -0.03)
    torso = back & (at[:, 1] > 1.1) & (at[:, 1] < 1.4) & (np.abs(at[:, 0]) < 0.12)
    head = back & (at[:, 1] > 1.5)
    front = seen & (at[:, 1] > 1.2) & (at[:, 1] < 1.35) & (at[:, 2] > 0.05)
    print(f"{seen.mean():.0%} of {len(seen)} Gaussians seen in {args.views} frames; completion "
          f"{seconds:.2f} s; back of the torso {np.round(completed[torso].mean(0), 2)}, back of "
          f"the head {np.round(completed[head].mean(0), 2)}, seen shirt front "
          f"{np.round(colors[front].mean(0), 2)}")
    rows = [render_views(avatar, colors), render_views(avatar, completed)]
    frame = np.asarray(Image.fromarray(clip.frames[picks[-1]]).resize(
        (rows[0].shape[0] * w // h, rows[0].shape[0]))) / 255.0
    picture = np.concatenate([np.concatenate([frame, rows[0]], axis=1),
                              np.concatenate([frame, rows[1]], axis=1)], axis=0)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((picture * 255).round().astype(np.uint8)).save(args.png)
    print(f"wrote {args.png} (rows: projected only, completed; columns: a source frame, front, "
          f"back)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
