#!/usr/bin/env python3
"""Benchmark fit_shape on the synthetic subject of tests/test_shape_fit.py (the default avatar
re-shaped with known anny parameters, waving and walking while turning, GL-rendered masks,
landmarks and face points projected through known cameras, noisy codes and cameras): fit
time and the fitted body's vertex error against keeping the default shape, full-body and
head-and-shoulders views. Writes bench/results/shape-fit.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.avatar import Avatar, load_avatar  # noqa: E402
from avatar.shape import ShapeFitSettings, anny_shape, fit_shape  # noqa: E402
from avatar.template import load_template  # noqa: E402
from render.backends import get_backend  # noqa: E402
from tests.synthetic_subject import observe, subject_frames  # noqa: E402
from tests.test_shape_fit import KNOWN  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6, help="keyframes")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300],
                        help="optimisation steps to measure")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/shape-fit.json")
    args = parser.parse_args()
    template = load_template()
    plain = load_avatar("default", template)
    subject = Avatar(dataclasses.replace(plain.data, shape=anny_shape(KNOWN, template=template)),
                     template)
    truth = subject.template.vertices
    default_mm = np.linalg.norm(template.vertices - truth, axis=1) * 1e3
    backend = get_backend("gl")
    results = {"machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
               "known": KNOWN, "frames": args.frames,
               "default_error_mm": {"mean": round(float(default_mm.mean()), 1),
                                    "max": round(float(default_mm.max()), 1)}, "runs": []}
    for portrait in (False, True):
        observations = observe(subject, subject_frames(args.frames, portrait), backend)
        for steps in args.steps:
            fit = fit_shape(observations, template, budget_s=600,
                            settings=ShapeFitSettings(max_steps=steps))
            error = np.linalg.norm(fit.shape.apply(template).vertices - truth, axis=1) * 1e3
            run = {"view": "head-and-shoulders" if portrait else "full-body", "steps": steps,
                   "seconds": round(fit.seconds, 1),
                   "error_mm": {"mean": round(float(error.mean()), 1),
                                "max": round(float(error.max()), 1)},
                   "landmark_rms_px": round(fit.landmark_rms_px, 2),
                   "phenotype": {k: round(v, 3) for k, v in fit.shape.phenotype.items()}}
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    backend.release()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
