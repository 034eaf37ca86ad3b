"""Novel views of a created avatar: made from one of pose2sim's four synchronised views
(cam01 by default, a man walking, full body, 100 frames at 60 fps), then rendered into all
four calibrated cameras on the frames the creation held out, and scored there against the
real frames inside mediapipe's person mask.

Per held-out frame: the avatar posed by the codes tracked in the source view, placed in the
rig's world through the source camera's fitted camera and its calibration
(bench/world_placement.py says how, scale included), rendered by the torch splatter into
each calibrated camera (pinhole; the real frames are undistorted to match) at the
creation's fit size (180x320). The mask is that view's person segmentation (mediapipe's
selfie segmentation of the undistorted frame), cut to the parts that touch the rendered
avatar (cam01 and cam02 also show a second person in the background). Scores: masked PSNR
and SSIM per camera, median over the frames; beside them the person's own mean colour in
each frame (an oracle floor) and the default avatar placed and scored the same way. The
source camera is scored the same way (the placed avatar seen
through its calibration), and with the creation's own held-out figure (fitted cameras).

    .venv/bin/python bench/bench_create_views.py                   # cam01, 5-minute budget
    .venv/bin/python bench/bench_create_views.py --source 3 --budget 10
    .venv/bin/python bench/bench_create_views.py --lca me.lca       # score an avatar made before

Writes bench/results/create_views.json and create_views.png (per scored frame, a row: each
camera's frame | the avatar rendered there). Tracking and the avatar are kept in
.cache/bench/ (--fresh makes them again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.world_placement import (  # noqa: E402
    placed,
    render_camera,
    undistorted,
    world_from_avatar,
)

CACHE = ROOT / ".cache" / "bench" / "create_views"
RESULTS = ROOT / "bench" / "results"
HIPS = (23, 24)  # mediapipe pose: the anchor of the placement is their midpoint
MAX_FRAMES = 120  # every frame of the 100-frame clips


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress_printer():
    last = [0.0]
    start = time.perf_counter()

    def report(stage: str, fraction: float, left: float = 0.0) -> None:
        now = time.perf_counter()
        if now - last[0] > 15:
            last[0] = now
            log(f"  {now - start:5.0f} s  {stage:12s} {fraction:4.0%}  about {left:.0f} s left")
    return report


def tracked_source(path: Path, fresh: bool):
    """(clip, tracked clip) of the source view, the tracking cached by the clip's hash."""
    from app.avatar_create import TrackedClip, read_video, track_frames

    clip = read_video(path, MAX_FRAMES)
    cached = CACHE / f"{path.stem}-{clip.sha256[:12]}-tracked.npz"
    if cached.is_file() and not fresh:
        return clip, TrackedClip.load(cached)
    t = time.perf_counter()
    say = progress_printer()
    tracked = track_frames(clip, lambda stage, f: say(stage, f))
    log(f"  tracked {len(clip.frames)} frames in {time.perf_counter() - t:.0f} s")
    CACHE.mkdir(parents=True, exist_ok=True)
    tracked.save(cached)
    return clip, tracked


def create(clip, tracked, budget_min: float, seed: int, out: Path) -> dict:
    from app.avatar_create import CreateSettings, create_avatar

    settings = CreateSettings(budget_s=budget_min * 60.0, seed=seed, name=Path(out).stem)
    t = time.perf_counter()
    result = create_avatar(clip, out, settings, progress_printer(), tracked=tracked)
    log(f"  created in {time.perf_counter() - t:.0f} s: {result.quality.summary()}")
    return {"seconds": round(time.perf_counter() - t, 1), "stage_seconds": result.seconds,
            "line": result.quality.summary(), "size_bytes": result.size_bytes}


def source_fit(avatar, clip, tracked):
    """(source frame index -> (posed vertices, fitted camera, body points)) as the creation
    fitted them: the same usable frames and the same camera fit, on the final avatar."""
    from app.avatar_create import body_points, check_person, fit_body_pose, fit_cameras

    usable, points = check_person(tracked, clip.description)
    sub = tracked.subset(usable)
    h, w = sub.frames.shape[1:3]
    shoulders = sub.shoulders if points == "face+shoulders" else None
    bodies = sub.bodies if points == "body" else None
    vertices, cameras, rms = fit_cameras(avatar, sub.codes, sub.faces, shoulders, w, h, bodies)
    if bodies is not None:  # as create_avatar does
        sub.codes = fit_body_pose(avatar, sub.codes, bodies, cameras)
        vertices, cameras, rms = fit_cameras(avatar, sub.codes, sub.faces, None, w, h, bodies)
    index = np.asarray(clip.indices)[usable]
    return {int(i): (vertices[k], cameras[k], body_points(avatar, sub.codes[k], vertices[k]))
            for k, i in enumerate(index)}, float(rms), points


def view_frames(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames ``wanted`` (source indices) of a view, normalised as the creation's."""
    from app.avatar_create import read_video

    clip = read_video(path, MAX_FRAMES)
    return {i: f for i, f in zip(clip.indices, clip.frames) if i in wanted}


def score_view(avatar, fits, calibrated_source, calibrated, frames, factor, segmenter):
    """Per frame: (psnr, ssim, mean-colour psnr, target, render, mask, alpha, the share of
    the mask the avatar covers, psnr over the covered part only)."""
    from app.avatar_create import downsample, render_avatar, touching
    from avatar.quality import masked_psnr, masked_ssim

    out = {}
    for i, image in frames.items():
        vertices, fitted, body = fits[i]
        placement = world_from_avatar(fitted, calibrated_source, _anchor(body))
        h, w = image.shape[:2]
        camera = render_camera(calibrated, w // factor, h // factor)
        rgba = render_avatar(avatar, placed(vertices, placement).astype(np.float32), camera)
        flat = undistorted(image, calibrated)
        person = segmenter.process(flat).probability
        target = downsample(flat / 255.0, factor)
        mask = downsample(person.astype(np.float32), factor) > 0.5
        mask = touching(mask, rgba[..., 3] > 0.5)
        render, alpha = np.clip(rgba[..., :3], 0, 1), np.clip(rgba[..., 3], 0, 1)
        if not mask.any():
            out[i] = (float("nan"),) * 3 + (target, render, mask, alpha) + (float("nan"),) * 2
            continue
        mean = np.broadcast_to(target[mask].mean(axis=0), target.shape)
        covered = mask & (alpha > 0.5)
        out[i] = (masked_psnr(render, target, mask), masked_ssim(render, target, mask),
                  masked_psnr(mean, target, mask), target, render, mask, alpha,
                  float(covered.sum() / mask.sum()),
                  masked_psnr(render, target, covered) if covered.any() else float("nan"))
    return out


def _anchor(body: np.ndarray) -> np.ndarray:
    """The hips' midpoint among ``body_points`` (the nose first, then avatar.shape's bones)."""
    from app.avatar_create import body_landmarks

    order = body_landmarks()
    return body[[order.index(j) for j in HIPS]].mean(axis=0)


def strip(rows: list[list[tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    """Rows of (frame, render) pairs side by side, written as a PNG."""
    from PIL import Image

    lines = [np.concatenate([np.concatenate([f, r], axis=1) for f, r in row], axis=1)
             for row in rows]
    image = (np.clip(np.concatenate(lines, axis=0), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(image).save(path)


def main() -> None:
    from app.avatar_create import fit_factor
    from avatar.avatar import Avatar, load_avatar
    from avatar.lca import load_avatar_file
    from avatar.template import load_template
    from tests.media import pose2sim_cameras, pose2sim_views
    from tracking.segmentation import PersonSegmenter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=int, default=1, choices=(1, 2, 3, 4),
                        help="the view the avatar is made from (cam0N)")
    parser.add_argument("--budget", type=float, default=5.0, help="creation budget, minutes")
    parser.add_argument("--frames", type=int, default=8, help="held-out frames scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lca", help="score this avatar (made from the source view) instead "
                                      "of creating one")
    parser.add_argument("--fresh", action="store_true", help="track and create again")
    args = parser.parse_args()

    views, cameras = pose2sim_views(), pose2sim_cameras()
    source = args.source - 1
    template = load_template()
    log(f"{views[source].name}: tracking")
    clip, tracked = tracked_source(views[source], args.fresh)
    report: dict = {"source": views[source].name, "budget_min": args.budget, "seed": args.seed,
                    "date": date.today().isoformat()}
    lca = Path(args.lca) if args.lca else CACHE / (
        f"{views[source].stem}-{clip.sha256[:12]}-{args.budget:g}min-seed{args.seed}.lca")
    if args.lca is None and (args.fresh or not lca.is_file()):
        log(f"creating ({args.budget:g} minutes)")
        lca.parent.mkdir(parents=True, exist_ok=True)
        report["create"] = create(clip, tracked, args.budget, args.seed, lca)
    data = load_avatar_file(lca, template)
    avatar = Avatar(data, template)
    report["creation_held_out"] = {k: data.provenance.get(k) for k in (
        "held_out_psnr_db", "held_out_ssim", "held_out_frames", "camera_fit_points",
        "camera_fit_rms_px", "stage_seconds")}
    fits, rms, points = source_fit(avatar, clip, tracked)
    default = load_avatar("default", template)  # the baseline: placed and scored the same way
    default_fits = source_fit(default, clip, tracked)[0]
    held = [i for i in data.provenance["frames_held_out"] if i in fits]
    scored = [held[k] for k in np.unique(np.linspace(0, len(held) - 1, min(args.frames,
                                                                           len(held))).round()
                                         .astype(int))]
    report.update(camera_fit_rms_px=round(rms, 2), camera_fit_points=points,
                  scored_frames=scored)
    h, w = clip.frames[0].shape[:2]
    factor = fit_factor(w, h)
    per_camera, panels = {}, {i: [] for i in scored[:: max(1, len(scored) // 3)][:3]}
    with PersonSegmenter() as segmenter:
        for c, (path, calibrated) in enumerate(zip(views, cameras)):
            t = time.perf_counter()
            frames = view_frames(path, scored)
            result = score_view(avatar, fits, cameras[source], calibrated, frames, factor,
                                segmenter)
            baseline = score_view(default, default_fits, cameras[source], calibrated, frames,
                                  factor, segmenter)
            values = np.array([r[:3] for r in result.values()], dtype=np.float64)
            base = np.array([r[0] for r in baseline.values()], dtype=np.float64)
            per_camera[path.stem] = {
                "role": "source" if c == source else "novel",
                "psnr_db": round(float(np.nanmedian(values[:, 0])), 2),
                "ssim": round(float(np.nanmedian(values[:, 1])), 3),
                "mean_colour_psnr_db": round(float(np.nanmedian(values[:, 2])), 2),
                "default_avatar_psnr_db": round(float(np.nanmedian(base)), 2),
                "mask_covered": round(float(np.nanmedian([r[7] for r in result.values()])), 3),
                "psnr_where_covered_db": round(float(np.nanmedian([r[8] for r in
                                                                   result.values()])), 2),
                "psnr_per_frame": [round(float(v), 2) for v in values[:, 0]],
                "frames_without_mask": int(np.isnan(values[:, 0]).sum())}
            for i in panels:  # the render over the frame, dimmed, to show where it lands
                target, render, alpha = result[i][3], result[i][4], result[i][6]
                panels[i].append((target, render + 0.35 * (1 - alpha[..., None]) * target))
            log(f"  {path.stem} ({per_camera[path.stem]['role']}): PSNR "
                f"{per_camera[path.stem]['psnr_db']} dB, SSIM {per_camera[path.stem]['ssim']}"
                f" ({time.perf_counter() - t:.0f} s)")
    report["cameras"] = per_camera
    novel = [v["psnr_db"] for v in per_camera.values() if v["role"] == "novel"]
    report["novel_median_psnr_db"] = round(float(np.median(novel)), 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "create_views.json").write_text(json.dumps(report, indent=1) + "\n")
    strip(list(panels.values()), RESULTS / "create_views.png")
    print(json.dumps({k: report[k] for k in ("source", "novel_median_psnr_db",
                                             "creation_held_out")}, indent=1))
    for name, v in per_camera.items():
        print(f"{name} {v['role']:6s} PSNR {v['psnr_db']:5.2f} dB  SSIM {v['ssim']:.3f}  "
              f"(default avatar {v['default_avatar_psnr_db']:5.2f} dB, the person's mean "
              f"colour {v['mean_colour_psnr_db']:5.2f} dB); the avatar covers "
              f"{v['mask_covered']:.0%} of the mask, {v['psnr_where_covered_db']:5.2f} dB there")


if __name__ == "__main__":
    main()
