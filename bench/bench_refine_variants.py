#!/usr/bin/env python3
"""Refinement variants of ``avatar create`` on one clip, on one cached preparation: where the
held-out error is (by region) and what each change to the photometric fit buys.

    .venv/bin/python bench/bench_refine_variants.py --seconds 120 --variant base
    .venv/bin/python bench/bench_refine_variants.py --seconds 120 --variant pose,grow

The first run tracks the clip and runs the stages before the refinement as ``create_avatar``
does (cameras, shape, cameras again, keyframes, colours, completion; the clip's last quarter
held out) and caches them in out/refine-prep-<clip>.pkl; later runs start from that cache, so
variants compare on one preparation. Each run refines for ``--seconds`` (one torch thread),
builds the avatar as ``create_avatar`` writes it (correctives optional), scores the held-out
frames and splits their squared error by region:

- ``uncovered``: inside the person mask where the render's alpha is under 0.5;
- ``band``: within 3 px (fit size) of the mask's edge, covered;
- ``face``: inside the face mesh's hull, covered, not band;
- ``above``: above the face's top (hair), covered, not band;
- ``below``: below the chin (neck, shirt), covered, not band;
- ``other``: the rest (beside the face).

It also scores a few training frames with their landmark cameras (overfitting). Writes a JSON
line to bench/results/refine-variants.jsonl and a PNG of the error maps to out/.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def prepare(video: Path, cache: Path, held_fraction: float, rest: bool = False) -> dict:
    """The state before the refinement, as create_avatar builds it (cached)."""
    if cache.exists():
        with cache.open("rb") as handle:
            return pickle.load(handle)
    from app import avatar_create as ac
    from avatar.appearance import AppearanceModel, visible_colors, visible_gaussians
    from avatar.avatar import Avatar, load_avatar
    from avatar.template import load_template

    settings = ac.CreateSettings(budget_s=600, tail_fraction=held_fraction, spread_every=0,
                                 threads=1)
    template = load_template()
    default = load_avatar("default", template)
    plain = Path(str(cache).replace("-rest.pkl", ".pkl"))
    if rest and plain.exists():  # the same tracking and shape as the plain preparation
        with plain.open("rb") as handle:
            base = pickle.load(handle)
        tracked, training, held = base["tracked"], base["training"], base["held"]
        with_shoulders, shape, shape_info = (base["with_shoulders"], base["shape"],
                                             base["shape_info"])
        rms0 = base["camera_rms_default"]
        shoulders = tracked.shoulders if with_shoulders else None
        h, w = tracked.frames.shape[1:3]
    else:
        clip = ac.read_video(video, settings.max_frames)
        tracked = ac.track_frames(clip)
        usable, with_shoulders = ac.check_person(tracked, clip.description)
        tracked = tracked.subset(usable)
        n = len(usable)
        training, held = ac.hold_out(n, settings.tail_fraction, settings.spread_every,
                                     gap=True)
        h, w = tracked.frames.shape[1:3]
        shoulders = tracked.shoulders if with_shoulders else None
        _, cameras, rms0 = ac.fit_cameras(default, tracked.codes, tracked.faces, shoulders,
                                          w, h)
        bar = ac.Progress({}, None)
        shape, shape_info = ac._fit_shape(template, tracked, training, cameras, bar)
    avatar = Avatar(default.data, shape.apply(template))
    vertices, cameras, rms = ac.fit_cameras(avatar, tracked.codes, tracked.faces, shoulders,
                                            w, h)
    if rest:
        shape, rest_info = ac.face_rest_correction(shape, template, tracked, training, cameras)
        shape_info = {**shape_info, "rest_offset": rest_info}
        print(rest_info, file=sys.stderr)
        avatar = Avatar(default.data, shape.apply(template))
        vertices, cameras, rms = ac.fit_cameras(avatar, tracked.codes, tracked.faces,
                                                shoulders, w, h)
    factor = ac.fit_factor(w, h)
    keys = ac.choose_keyframes([tracked.codes[i] for i in training], tracked.faces[training],
                               w, settings.keyframes)
    key_views = []
    for k in keys:
        i = int(training[k])
        key_views.append((vertices[i], cameras[i].resized(w // factor, h // factor),
                          ac.downsample(tracked.frames[i] / 255.0, factor).astype(np.float32),
                          ac.downsample(tracked.probabilities[i].astype(np.float32), factor)
                          > 0.5))
    index = visible_gaussians(avatar, [(v, c) for v, c, _, _ in key_views])
    model = AppearanceModel(avatar, index)
    colours, weight = visible_colors(model, [(model.base(v), c, im, m)
                                             for v, c, im, m in key_views])
    full = np.asarray(avatar.data.colors, dtype=np.float32)
    full = full[:, 0] * 0.28209479177387814 + 0.5 if full.ndim == 3 else full.copy()
    seen = np.zeros(len(avatar), bool)
    seen[index] = weight > 0
    full[index[weight > 0]] = colours[weight > 0]
    full = ac._complete(avatar, full, seen, True)
    state = {"tracked": tracked, "training": training, "held": held, "shape": shape,
             "shape_info": shape_info, "cameras": cameras, "camera_rms": rms,
             "camera_rms_default": rms0, "factor": factor, "index": index, "colors": full,
             "keys": keys, "with_shoulders": with_shoulders}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("wb") as handle:
        pickle.dump(state, handle)
    return state


def regions(tracked, i: int, factor: int, alpha: np.ndarray, mask: np.ndarray) -> dict:
    from scipy.ndimage import binary_dilation, binary_erosion
    from skimage.draw import polygon
    from scipy.spatial import ConvexHull

    covered = mask & (alpha >= 0.5)
    edge = mask & ~binary_erosion(mask, iterations=3)
    edge |= ~mask & binary_dilation(mask, iterations=3)
    face_px = tracked.faces[i] / factor
    hull = face_px[ConvexHull(face_px).vertices]
    face = np.zeros_like(mask)
    rr, cc = polygon(hull[:, 1], hull[:, 0], mask.shape)
    face[rr, cc] = True
    rows = np.arange(mask.shape[0])[:, None] * np.ones((1, mask.shape[1]))
    top, chin = face_px[:, 1].min(), face_px[:, 1].max()
    out = {"uncovered": mask & (alpha < 0.5)}
    out["band"] = covered & edge
    rest = covered & ~out["band"]
    out["face"] = rest & face
    out["above"] = rest & ~face & (rows < top)
    out["below"] = rest & ~face & (rows > chin)
    out["other"] = rest & ~out["face"] & ~out["above"] & ~out["below"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / ".cache/media/jwpIntro.mp4")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--variant", default="base",
                        help="comma-separated: base, pose, grow, rest, correctives, ...")
    parser.add_argument("--held-out", type=float, default=0.25)
    parser.add_argument("--scored", type=int, default=12)
    parser.add_argument("--tag", default="")
    parser.add_argument("--max-new", type=int, default=40000)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from app import avatar_create as ac
    from avatar.appearance import AppearanceModel, FitFrame, FitSettings, fit_appearance
    from avatar.avatar import Avatar, load_avatar
    from avatar.template import load_template
    from avatar.quality import masked_psnr

    variant = set(args.variant.split(","))
    rest = "rest" in variant
    cache = ROOT / f"out/refine-prep-{args.video.stem}{'-rest' if rest else ''}.pkl"
    t0 = time.perf_counter()
    st = prepare(args.video, cache, args.held_out, rest)
    print(f"prepared in {time.perf_counter() - t0:.0f} s; camera rms {st['camera_rms']:.2f} px "
          f"(default shape {st['camera_rms_default']:.2f})", file=sys.stderr)
    tracked, training, held, factor = st["tracked"], st["training"], st["held"], st["factor"]
    template = load_template()
    default = load_avatar("default", template)
    shape = st["shape"]
    h, w = tracked.frames.shape[1:3]
    from avatar.avatar import Avatar as _A

    avatar = _A(default.data, shape.apply(template))
    cameras = st["cameras"]
    vertices = [ac.posed_vertices(avatar, c) for c in tracked.codes]

    def fit_frame(i: int, f: int = factor) -> FitFrame:
        return FitFrame(vertices[i], cameras[i].resized(w // f, h // f),
                        ac.downsample(tracked.frames[i] / 255.0, f).astype(np.float32),
                        ac.downsample(tracked.probabilities[i].astype(np.float32), f) > 0.5)

    train_frames = [fit_frame(int(i)) for i in training]
    coarse = [fit_frame(int(i), 2 * factor) for i in training]
    index, colors = st["index"], st["colors"]
    grown = 0
    if "grow" in variant:
        key_frames = [train_frames[k] for k in st["keys"]]
        avatar, index, colors, grown = ac.grow_avatar(avatar, index, colors, key_frames,
                                                      args.max_new)
        print(f"grew {grown} Gaussians", file=sys.stderr)
    model = AppearanceModel(avatar, index, colors=colors[index])
    rates = dict(ac.REFINE_RATES)
    if "slow" in variant:  # FitSettings' own rates, decaying like the command's
        rates = {"lr_final": ac.REFINE_RATES["lr_final"]}
    if "fastgeom" in variant:  # scales and offsets at the command's earlier rates
        rates = {**rates, "lr_log_scale": 0.03, "lr_offset": 5e-4}
    fit_settings = FitSettings(steps=args.steps, seed=0, time_limit_s=args.seconds or None,
                               min_steps=20, coarse_fraction=0.4,
                               pose_corrections="pose" in variant, **rates)
    load_before = load()
    t0 = time.perf_counter()
    log = fit_appearance(model, train_frames, fit_settings, coarse_frames=coarse)
    refine_s = time.perf_counter() - t0
    corrections = None
    if log.corrections is not None:
        c = log.corrections.state()
        corrections = {"body_turn_deg_rms": round(float(np.degrees(np.sqrt(
                           (c["body_turn"] ** 2).sum(1).mean()))), 3),
                       "head_turn_deg_rms": round(float(np.degrees(np.sqrt(
                           (c["head_turn"] ** 2).sum(1).mean()))), 3),
                       "body_shift_mm_rms": round(float(1000 * np.sqrt(
                           (c["body_shift"] ** 2).sum(1).mean())), 2)}
    data = ac.avatar_data_from_fit(avatar, model, colors, "me")
    data.shape = shape
    if "correctives" in variant:
        ac._fit_correctives(data, template, tracked, training, cameras)
    final = Avatar(data, template)

    scored = held[np.unique(np.linspace(0, len(held) - 1, min(args.scored, len(held)))
                            .round().astype(int))]
    train_check = training[np.unique(np.linspace(0, len(training) - 1, 6).round().astype(int))]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    train_psnrs, pictures = [], []
    from avatar.quality import HeldOutQuality

    triples = []
    for which, frames in (("held", scored), ("train", train_check)):
        for i in frames:
            cam = cameras[i].resized(w // factor, h // factor)
            rgba = ac.render_avatar(final, ac.posed_vertices(final, tracked.codes[i]), cam)
            target = ac.downsample(tracked.frames[i] / 255.0, factor)
            mask = ac.downsample(tracked.probabilities[i].astype(np.float32), factor) > 0.5
            rgb = np.clip(rgba[..., :3], 0, 1)
            p = masked_psnr(rgb, target, mask)
            if which == "train":
                train_psnrs.append(p)
                continue
            triples.append((rgb, target, mask))
            err = ((rgb - target) ** 2).mean(-1)
            for name, region in regions(tracked, i, factor, rgba[..., 3], mask).items():
                sums[name] = sums.get(name, 0.0) + float(err[region].sum())
                counts[name] = counts.get(name, 0) + int(region.sum())
            if len(pictures) < 3 and i in scored[::max(1, len(scored) // 3)]:
                from bench.bench_fit_appearance import head_centre, orbit

                v = ac.posed_vertices(final, tracked.codes[i])
                side = ac.render_avatar(final, v, orbit(cam, head_centre(v), 35.0))
                pictures.append(np.concatenate([
                    target, rgb, np.repeat(np.clip(np.sqrt(err) * 3 * mask, 0, 1)[..., None], 3,
                                           axis=2),
                    np.clip(side[..., :3] + (1 - side[..., 3:]) * 0.35, 0, 1)], axis=1))
    quality = HeldOutQuality.of(triples)
    total = sum(sums.values())
    split = {k: {"share_of_error": round(sums[k] / total, 3),
                 "share_of_mask": round(counts[k] / sum(counts.values()), 3),
                 "psnr_db": round(10 * np.log10(counts[k] / max(sums[k], 1e-12)), 2)
                 if counts[k] else None} for k in sums}
    record = {"variant": args.variant, "tag": args.tag, "refine_s": round(refine_s, 1),
              "steps": len(log.losses), "grown": grown, "corrections": corrections,
              "held_psnr_db": round(quality.psnr_db, 2),
              "held_ssim": round(quality.ssim, 4), "held_pooled_db": round(
                  quality.pooled_psnr_db, 2),
              "train_psnr_db": round(float(np.mean(train_psnrs)), 2), "regions": split,
              "load_before": load_before, "load_after": load(), "date": str(date.today()),
              "per_step_s": {k: round(v / max(len(log.losses), 1), 3)
                             for k, v in log.seconds.items()}}
    print(json.dumps(record, indent=1))
    out = ROOT / "bench/results/refine-variants.jsonl"
    with out.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    from PIL import Image

    png = ROOT / f"out/refine-{args.variant.replace(',', '-')}{args.tag}.png"
    Image.fromarray((np.concatenate(pictures, axis=0) * 255).round().astype(np.uint8)).save(png)
    print(f"wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
