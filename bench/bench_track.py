#!/usr/bin/env python3
"""Tracking benchmark: frames per second and capture-to-codes latency at 640x480.

Two clips: jwpIntro.mp4 (a talking head, no hands in view) and a rendered clip of the
default avatar waving both arms and opening and closing both hands (made once with the GL
backend into .cache/bench-track/hands-N.mp4; no real footage with both hands moving is
fetched by the set-up). Per clip and landmark backend:

- each stage's own time (split backend: pose, face crop, hands crop), for the split
  backend as it runs (pose and hands followed through LiteRT, tracking/direct.py) and on
  mediapipe's pose graph with holistic's crops on every frame ("split_graphs");
- landmarks per frame, the whole detector;
- the tracker played live: frames arrive at 30 fps (camera-like: stamped with their arrival
  time), the tracker always takes the newest frame that has arrived and skips older ones.
  Capture -> codes is arrival -> codes out (landmarks + solvers + filters + any wait for a
  frame already there; camera exposure and USB transfer are not included); "landmarks" is
  the detector's time (with the split backend the hand solver runs inside it, beside the
  pose graph), "solvers" what follows (body, face fit, filters); sustained fps
  is frames processed over the clip's wall time; dropped frames are the ones skipped; CPU
  per frame is the process's CPU time (all threads) over the frames processed;
- how often hands and face are found, and the split backend's hands against holistic's
  and against the same backend with the lite hand landmark model;
- the hand solver alone on the clip's hands: both hands in one ``solve_many`` call against
  the bone-by-bone ``solve_reference``.

Also the One Euro filter's lag on a fast ramp and its jitter reduction on a still signal.
Writes JSON (default bench/results/track.json).

Usage: python bench/bench_track.py [--frames 150] [--rounds 3] [--clips both|talking|hands]
       [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracking.filters import OneEuro  # noqa: E402
from tracking.landmarks import LandmarkDetector  # noqa: E402
from tracking.sources import Frame, VideoSource  # noqa: E402
from tracking.tracker import FILTER_SETTINGS, Tracker  # noqa: E402

FPS = 30.0
WARMUP = 10  # frames left out of the figures (graph start-up, first detections)
CLIP_DIR = ROOT / ".cache" / "bench-track"  # hands-N.mp4: the rendered clip of N frames


def read_clip(path: Path, n: int) -> list[np.ndarray]:
    out = [f.image for f, _ in zip(VideoSource(path), range(n))]
    while len(out) < n:
        out += out[: n - len(out)]
    return out


def hands_codes(t: float):
    """The avatar at time ``t`` s: upper arms raised out sideways, forearms up, both swinging
    (1.2 Hz, out of phase), forearms turned palms-forward, fingers curling from open to
    two-thirds of a fist and back (0.8 Hz)."""
    from app.poses import curl_axis
    from avatar.codes import BODY_BONES, HAND_BONES, Codes
    from common.rotation import quat_from_axis_angle, quat_multiply

    body, hands = Codes().body.copy(), Codes().hands.copy()
    bone = {n: i for i, n in enumerate(BODY_BONES)}

    def turn(array, i, axis, angle):
        axis = np.asarray(axis, np.float64)
        array[i] = quat_multiply(quat_from_axis_angle(axis / np.linalg.norm(axis), angle), array[i])

    for s, sign, phase in (("L", 1.0, 0.0), ("R", -1.0, 1.3)):
        swing = 2 * math.pi * 1.2 * t + phase
        turn(body, bone[f"upperarm01.{s}"], (0, 0, 1), sign * (0.9 + 0.25 * math.sin(swing)))
        turn(body, bone[f"lowerarm01.{s}"], (0, 0, 1), sign * (1.2 + 0.35 * math.sin(swing + 0.8)))
        turn(body, bone[f"lowerarm01.{s}"], (0, 1, 0), sign * 0.6)
    for side in range(2):
        curl = 0.45 * (1 - math.cos(2 * math.pi * 0.8 * t + side))
        names, s = HAND_BONES[side], "LR"[side]
        for finger in range(2, 6):
            for joint, angle in ((1, 1.45), (2, 1.6), (3, 1.1)):
                turn(hands[side], names.index(f"finger{finger}-{joint}.{s}"), curl_axis(side),
                     curl * angle)
    return Codes(body=body, hands=hands)


def make_hands_clip(path: Path, n: int) -> None:
    """Render ``n`` frames of ``hands_codes`` at 30 fps, 640x480, upper body, into ``path``."""
    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.camera import Camera
    from render.video import VideoWriter, to_uint8

    avatar = load_avatar("default")
    camera = Camera.look_at([0.0, 1.55, 1.6], [0.0, 1.5, 0.0], 640, 480, vertical_fov_deg=45.0)
    backend = get_backend("auto")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with VideoWriter(path, 640, 480, FPS) as video:
            for i in range(n):
                pose = avatar.skin_pose(hands_codes(i / FPS))
                rgba = backend.render_skinned(avatar.skinned, pose, camera)
                video.write(to_uint8(rgba, (0.45, 0.45, 0.45)))
    finally:
        backend.release()


def stats(values_ms) -> dict:
    values = np.asarray(values_ms, np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"median_ms": None, "p90_ms": None}
    return {"median_ms": round(float(np.median(values)), 2),
            "p90_ms": round(float(np.percentile(values, 90)), 2)}


def time_detector(images, **kw) -> tuple[dict, list]:
    """Landmarks frame after frame (no pacing): per frame, the detector's wall time and, for
    the split backend, each graph's own time (ms, NaN when not run); and the landmarks."""
    with LandmarkDetector(**kw) as detector:
        times, found = {"landmarks": [], "pose": [], "face": [], "hands": []}, []
        for image in images:
            t0 = time.perf_counter()
            lm = detector.detect(image)
            times["landmarks"].append((time.perf_counter() - t0) * 1000)
            for name in ("pose", "face", "hands"):
                times[name].append(detector.timings_ms.get(name, np.nan))
            found.append(lm)
    return {name: values[WARMUP:] for name, values in times.items()}, found[WARMUP:]


def detector_figures(rounds: list[dict], found: list) -> dict:
    """Figures over every frame of every round."""
    pooled = {name: [v for r in rounds for v in r[name]] for name in rounds[0]}
    out = {"landmarks": stats(pooled["landmarks"]),
           "landmarks_median_per_round_ms": [round(float(np.median(r["landmarks"])), 2)
                                             for r in rounds]}
    if not np.all(np.isnan(pooled["pose"])):
        out["graphs"] = {name: stats(pooled[name]) for name in ("pose", "face", "hands")}
        out["hands_graph_ran_fraction"] = round(float(np.mean(~np.isnan(pooled["hands"]))), 3)
    out["found"] = found_fractions(found)
    return out


def found_fractions(landmarks) -> dict:
    n = max(len(landmarks), 1)
    return {"face": round(sum(lm.face is not None for lm in landmarks) / n, 3),
            "left_hand": round(sum(lm.hands[0] is not None for lm in landmarks) / n, 3),
            "right_hand": round(sum(lm.hands[1] is not None for lm in landmarks) / n, 3)}


def pose_agreement(a, b) -> dict:
    """Median and p90 over frames of the median distance (px) between two backends' pose
    points, and of the median world-point distance (mm)."""
    image, world = [], []
    for la, lb in zip(a, b):
        if la.pose is not None and lb.pose is not None:
            image.append(float(np.median(np.linalg.norm(la.pose[:, :2] - lb.pose[:, :2], axis=1))))
            world.append(1000 * float(np.median(np.linalg.norm(la.pose_world - lb.pose_world,
                                                               axis=1))))
    return {"frames_compared": len(image),
            **{k.replace("_ms", "_px"): v for k, v in stats(image).items()},
            **{k.replace("_ms", "_world_mm"): v for k, v in stats(world).items()}}


def hands_agreement(a, b) -> dict:
    """Median and p90 distance (px) between the same hand's 21 points from two backends, on
    frames where both found it."""
    distances = []
    for la, lb in zip(a, b):
        for side in range(2):
            if la.hands[side] is not None and lb.hands[side] is not None:
                distances.append(float(np.median(np.linalg.norm(
                    la.hands[side][:, :2] - lb.hands[side][:, :2], axis=1))))
    return {"frames_hands_compared": len(distances), **{
        k.replace("_ms", "_px"): v for k, v in stats(distances).items()}}


def time_live(images, options: dict) -> dict:
    """The tracker fed as a live 30 fps camera (see the module docstring), its detector made
    with ``options``: per processed frame, capture -> codes, landmarks and solvers (ms); and
    the frames processed, dropped and the wall time."""
    latencies, landmark_ms, solve_ms = [], [], []
    processed = 0
    with Tracker(detector=LandmarkDetector(**options)) as tracker:
        tracker.detector.detect(images[0])  # graph start-up is not part of a live call
        start, cpu_start = time.monotonic(), time.process_time()
        while True:
            now = time.monotonic()
            newest = int((now - start) * FPS)
            if newest >= len(images):
                break
            if newest < processed:  # caught up: wait for the next frame to arrive
                time.sleep(start + processed / FPS - now)
                continue
            codes = tracker.process(Frame(images[newest], start + newest / FPS, newest)).codes
            latencies.append((time.monotonic() - codes.t) * 1000)
            landmark_ms.append(tracker.timings_ms["landmarks"])
            solve_ms.append(tracker.timings_ms["solvers"])
            processed = newest + 1
        wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
    return {"capture_to_codes": latencies[WARMUP:], "landmarks": landmark_ms[WARMUP:],
            "solvers": solve_ms[WARMUP:], "processed": len(latencies),
            "dropped": len(images) - len(latencies), "wall_s": wall, "cpu_s": cpu}


def live_figures(rounds: list[dict]) -> dict:
    processed = sum(r["processed"] for r in rounds)
    out = {"frames": processed + sum(r["dropped"] for r in rounds), "processed": processed,
           "dropped": sum(r["dropped"] for r in rounds),
           "fps_sustained": round(processed / sum(r["wall_s"] for r in rounds), 2),
           "fps_per_round": [round(r["processed"] / r["wall_s"], 2) for r in rounds],
           # CPU time of all the process's threads per processed frame: what the tracker
           # asks of the machine whatever else runs on it.
           "cpu_ms_per_frame": round(1000 * sum(r["cpu_s"] for r in rounds) / processed, 2)}
    for name in ("capture_to_codes", "landmarks", "solvers"):
        out[name] = stats([v for r in rounds for v in r[name]])
    out["capture_to_codes_median_per_round_ms"] = [
        round(float(np.median(r["capture_to_codes"])), 2) for r in rounds]
    return out


def solver_figures(landmarks, repeats: int = 3) -> dict:
    """The hand solver alone on the frames' hands (both hands in one ``solve_many`` call, as
    the tracker does) against the bone-by-bone ``solve_reference``, ms per frame."""
    from avatar.template import load_template
    from tracking.hands import HandSolver, hand_scale_ok, to_world

    solver = HandSolver(load_template())
    frames = []
    for lm in landmarks:
        worlds = [(to_world(lm.hands_world[s]), s) for s in (0, 1) if lm.hands_world[s] is not None]
        worlds = [(w, s) for w, s in worlds if hand_scale_ok(w)]
        if worlds:
            frames.append((np.stack([w for w, _ in worlds]), [s for _, s in worlds]))
    batched, reference = [], []
    for _ in range(repeats):
        for points, sides in frames:
            t0 = time.perf_counter()
            solver.solve_many(points, sides)
            t1 = time.perf_counter()
            for p, s in zip(points, sides):
                solver.solve_reference(p, s)
            batched.append((t1 - t0) * 1000)
            reference.append((time.perf_counter() - t1) * 1000)
    return {"frames": len(frames), "hands_per_frame": round(float(np.mean(
        [len(s) for _, s in frames])), 2) if frames else 0, "solve_many": stats(batched),
        "bone_by_bone": stats(reference)}


def filter_figures() -> dict:
    out = {}
    t = np.arange(600) / 30.0
    rng = np.random.default_rng(0)
    for name in ("face", "body"):
        cutoff, beta = FILTER_SETTINGS[name]
        f = OneEuro(cutoff, beta)
        ramp = np.clip((t - 5.0) * 4.0, 0, 4)  # a fast move: 4 units (rad) per second
        smoothed = np.array([f.filter(v, ti) for v, ti in zip(ramp, t)])
        moving = (t > 5.3) & (t < 5.9)
        lag_ms = 1000 * float(np.median((ramp[moving] - smoothed[moving]) / 4.0))
        f = OneEuro(cutoff, beta)
        still = 0.01 * rng.normal(size=600)
        smoothed = np.array([f.filter(v, ti) for v, ti in zip(still, t)])
        out[name] = {"min_cutoff_hz": cutoff, "beta": beta, "lag_on_fast_move_ms": round(lag_ms, 1),
                     "still_jitter_ratio":
                         round(float(np.std(smoothed[30:]) / np.std(still[30:])), 3)}
    return out


# name -> LandmarkDetector options, timed frame after frame.
DETECTORS = {
    # The default: pose and hands followed through LiteRT, the face by its own graph.
    "split": {"backend": "split"},
    # mediapipe's pose graph and holistic's crops on every frame (the default before
    # 2026-11-24 15:40: tracking/direct.py).
    "split_graphs": {"backend": "split", "follow_landmarks": False},
    "split_crops_after_pose": {"backend": "split", "crop_from_previous_pose": False},
    "holistic": {"backend": "holistic"},
    # The wheel's lite hand landmark model in the hands crop (not the default: closed-loop
    # finger errors, docs/tracking.md).
    "split_lite_hands": {"backend": "split", "hand_model": "lite"},
}


# name -> LandmarkDetector options, played live.
LIVE = {name: DETECTORS[name] for name in ("split", "split_graphs", "holistic")}


def bench_clip(images, rounds: int) -> dict:
    """Each configuration over the whole clip in turn, ``rounds`` times (interleaved, so
    that other work on the machine falls on all of them alike)."""
    detector_runs = {name: [] for name in DETECTORS}
    live_runs = {name: [] for name in LIVE}
    found = {}
    for _ in range(rounds):
        for name, options in DETECTORS.items():
            times, found[name] = time_detector(images, **options)
            detector_runs[name].append(times)
        for name, runs in live_runs.items():
            runs.append(time_live(images, LIVE[name]))
    out = {f"landmarks_{name}": detector_figures(runs, found[name])
           for name, runs in detector_runs.items()}
    out["hands_split_vs_holistic"] = hands_agreement(found["split"], found["holistic"])
    out["hands_split_vs_split_graphs"] = hands_agreement(found["split"], found["split_graphs"])
    out["pose_split_vs_split_graphs"] = pose_agreement(found["split"], found["split_graphs"])
    out["hands_lite_vs_full_model"] = hands_agreement(found["split_lite_hands"], found["split"])
    out["hand_solver"] = solver_figures(found["split"])
    out.update({f"live_{name}": live_figures(runs) for name, runs in live_runs.items()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--clips", choices=("both", "talking", "hands"), default="both",
                        help="which clips to run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each configuration runs over each clip (interleaved)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "track.json"))
    args = parser.parse_args()
    talking = ROOT / ".cache" / "media" / "jwpIntro.mp4"
    if not talking.is_file():
        raise SystemExit(f"{talking} is missing: run bash scripts/setup.d/30-media.sh")
    hands_clip = CLIP_DIR / f"hands-{args.frames}.mp4"
    if args.clips != "talking" and not hands_clip.is_file():
        print(f"rendering {hands_clip}", file=sys.stderr)
        make_hands_clip(hands_clip, args.frames)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                   f"{platform.processor() or platform.platform()}",
        "load_average_before": os.getloadavg(),
        "frames": args.frames,
        "rounds": args.rounds,
        "clips": {},
    }
    clips = {"talking": ("jwpIntro.mp4 640x480 (no hands)", talking),
             "hands": ("avatar hands clip 640x480 (both hands moving)", hands_clip)}
    for name, path in (clips.values() if args.clips == "both" else [clips[args.clips]]):
        result["clips"][name] = bench_clip(read_clip(path, args.frames), args.rounds)
        result["clips"][name]["load_average_after"] = os.getloadavg()
    result["filters"] = filter_figures()
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
