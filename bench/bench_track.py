#!/usr/bin/env python3
"""Tracking benchmark: frames per second and capture-to-codes latency at 640x480.

Feeds jwpIntro.mp4 (640x480, a talking head) through the tracker as if it came from a
camera: each frame's capture time is stamped just before it is handed over, so latency is
landmarks + solvers + filters (camera exposure and USB transfer are not included). Also
times each landmark part alone, the solvers alone, and the One Euro filter's lag on a fast
ramp and its jitter reduction on a still signal. Writes JSON (default bench/results/track.json).

Usage: python bench/bench_track.py [--frames 150] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
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
from tracking.sources import VideoSource  # noqa: E402
from tracking.tracker import FILTER_SETTINGS, Tracker  # noqa: E402


def frames(n: int) -> list[np.ndarray]:
    path = ROOT / ".cache" / "media" / "jwpIntro.mp4"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bash scripts/setup.d/30-media.sh")
    out = [f.image for f, _ in zip(VideoSource(path), range(n))]
    while len(out) < n:
        out += out[: n - len(out)]
    return out


def time_detector(images, **kw) -> dict:
    with LandmarkDetector(**kw) as detector:
        times = []
        for image in images:
            t0 = time.perf_counter()
            detector.detect(image)
            times.append(time.perf_counter() - t0)
    times = np.array(times[10:]) * 1000
    return {"median_ms": round(float(np.median(times)), 2),
            "p90_ms": round(float(np.percentile(times, 90)), 2)}


def time_tracker(images, backend: str) -> dict:
    from tracking.sources import Frame

    latencies, landmark_ms, solve_ms = [], [], []
    with Tracker(backend=backend) as tracker:
        start = time.perf_counter()
        for i, image in enumerate(images):
            # Tracker.process(frame), split in its two stages to time each on every frame.
            frame = Frame(image, time.monotonic(), i)
            t0 = time.perf_counter()
            landmarks = tracker.detector.detect(frame.image)
            t1 = time.perf_counter()
            codes = tracker.solve(landmarks, frame.t)
            latencies.append(time.monotonic() - codes.t)
            landmark_ms.append((t1 - t0) * 1000)
            solve_ms.append((time.perf_counter() - t1) * 1000)
        wall = time.perf_counter() - start
    lat = np.array(latencies[10:]) * 1000
    return {"fps": round(len(images) / wall, 2), "latency_median_ms": round(float(np.median(lat)), 2),
            "latency_p90_ms": round(float(np.percentile(lat, 90)), 2),
            "landmarks_median_ms": round(float(np.median(landmark_ms[10:])), 2),
            "solvers_median_ms": round(float(np.median(solve_ms[10:])), 2),
            "solvers_p90_ms": round(float(np.percentile(solve_ms[10:], 90)), 2)}


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
                     "still_jitter_ratio": round(float(np.std(smoothed[30:]) / np.std(still[30:])), 3)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "track.json"))
    args = parser.parse_args()
    images = frames(args.frames)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "load_average_before": os.getloadavg(),
        "input": "jwpIntro.mp4 640x480",
        "parts_alone": {
            "face": time_detector(images, parts=("face",)),
            "pose": time_detector(images, parts=("pose",)),
            "hands": time_detector(images, parts=("hands",)),
        },
        "landmarks_threads": time_detector(images, backend="threads"),
        "landmarks_holistic": time_detector(images, backend="holistic"),
        "tracker_holistic": time_tracker(images, "holistic"),
        "tracker_threads": time_tracker(images, "threads"),
        "filters": filter_figures(),
        "load_average_after": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
