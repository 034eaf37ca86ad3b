"""Face closed loop: the default avatar posed with known blendshape weights, rendered on
the GL backend at several head poses and lightings, tracked by the project's landmark
detector (holistic, refined face mesh, as for photographs), and solved by ``FaceSolver``.

``render_loop()`` gives the cases with their face landmarks (the slow part: a render and a
mediapipe pass each); ``score()`` solves them and compares with the truth per shape.

    .venv/bin/python bench/face_loop.py            # prints per-shape errors
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, HEAD_BONES, Codes  # noqa: E402
from common.rotation import quat_from_euler_xyz  # noqa: E402

SIZE = 512
# Expressions of the loop (the issue's list): name -> {blendshape: weight}.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "jawOpen": {"jawOpen": 0.7},
    "smile": {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8},
    "smileLeft": {"mouthSmileLeft": 0.9},
    "blink": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    "browInnerUp": {"browInnerUp": 0.8},
    "browOuterUp": {"browOuterUpLeft": 0.8, "browOuterUpRight": 0.8},
    "browDown": {"browDownLeft": 0.8, "browDownRight": 0.8},
    "cheekPuff": {"cheekPuff": 0.8},
    "pucker": {"mouthPucker": 0.8},
    "eyeWide": {"eyeWideLeft": 0.8, "eyeWideRight": 0.8},
}
# (yaw, pitch) of the head in degrees; yaw up to 30.
HEAD_POSES = [(0, 0), (15, 0), (-15, 0), (30, 0), (-30, 0), (0, 12), (0, -12), (20, 10)]
# Lighting: (gain, left-right gradient) applied to the render (the Gaussians' colours are
# baked, so light is changed on the image).
LIGHTS = [(1.0, 0.0), (0.6, 0.5)]
# The shapes the issue scores.
SCORED = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight",
          "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight",
          "cheekPuff", "mouthPucker", "eyeWideLeft", "eyeWideRight")


@dataclass
class Case:
    expression: str
    yaw_deg: float
    pitch_deg: float
    light: int
    truth: np.ndarray  # (52,)
    face_px: np.ndarray | None  # (478, 3) or None when face mesh found no face


def head_camera(template):
    from render.camera import Camera

    eyes = template.bone_heads[[template.bone_index("eye.L"), template.bone_index("eye.R")]]
    centre = eyes.mean(axis=0) - np.array([0.0, 0.03, 0.0])
    return Camera.look_at(centre + np.array([0.0, 0.0, 0.7]), centre, SIZE, SIZE,
                          vertical_fov_deg=32.0)


def codes_for(expression: str, yaw_deg: float, pitch_deg: float) -> Codes:
    face = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
    for name, w in EXPRESSIONS[expression].items():
        face[BLENDSHAPE_INDEX[name]] = w
    head = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (len(HEAD_BONES), 1))
    head[HEAD_BONES.index("head")] = quat_from_euler_xyz(np.radians(pitch_deg) * -1.0,
                                                         np.radians(yaw_deg), 0.0)
    return Codes(face=face, head=head)


def lit(image: np.ndarray, light: int) -> np.ndarray:
    gain, gradient = LIGHTS[light]
    ramp = 1.0 - gradient * np.linspace(0.0, 1.0, image.shape[1])[None, :, None]
    return np.clip(image.astype(np.float32) * gain * ramp, 0, 255).astype(np.uint8)


def render_loop(expressions=None, poses=None, lights=None, say=print) -> list[Case]:
    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.video import to_uint8
    from tracking.landmarks import LandmarkDetector

    expressions = list(expressions or EXPRESSIONS)
    poses = poses or HEAD_POSES
    lights = range(len(LIGHTS)) if lights is None else lights
    avatar = load_avatar("default")
    camera = head_camera(avatar.template)
    backend = get_backend("gl")
    cases = []
    t0 = time.perf_counter()
    try:
        with LandmarkDetector(static_image_mode=True) as detector:
            for yaw, pitch in poses:
                for expression in expressions:
                    codes = codes_for(expression, yaw, pitch)
                    rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
                    base = to_uint8(rgba, (0.45, 0.45, 0.45))
                    for light in lights:
                        lm = detector.detect(lit(base, light))
                        cases.append(Case(expression, yaw, pitch, light, codes.face.copy(),
                                          lm.face))
                say(f"  head yaw {yaw} pitch {pitch}: {len(cases)} cases, "
                    f"{time.perf_counter() - t0:.0f} s")
    finally:
        backend.release()
    return cases


def solve_cases(cases: list[Case], solver) -> np.ndarray:
    """(n, 52) weights, each case solved as a photograph against the frontal neutral face
    under the same light (``FaceSolver.calibrate``: what a video's calibration takes from
    a person facing the camera). NaN rows where face mesh found no face."""
    neutrals = {c.light: c.face_px for c in cases
                if c.expression == "neutral" and c.yaw_deg == 0 and c.pitch_deg == 0}
    out = np.full((len(cases), len(BLENDSHAPE_NAMES)), np.nan)
    for i, case in enumerate(cases):
        if case.face_px is not None:
            solver.calibrate(neutrals[case.light])
            out[i] = solver.solve(case.face_px).weights
    return out


def score(cases: list[Case], weights: np.ndarray) -> dict:
    """Per scored shape: absolute error over the cases that pose it (median, worst), and
    the largest weight it takes on calm cases (neutral face, the shape not posed) with the
    head turned 20-30 degrees."""
    truth = np.array([c.truth for c in cases])
    found = ~np.isnan(weights[:, 0])
    turned = np.array([abs(c.yaw_deg) >= 20 for c in cases])
    result = {}
    for name in SCORED:
        k = BLENDSHAPE_INDEX[name]
        posed = found & (truth[:, k] > 0)
        if not posed.any():
            continue
        err = np.abs(weights[posed, k] - truth[posed, k])
        calm = found & turned & (truth[:, k] == 0)
        result[name] = {"median": float(np.median(err)), "worst": float(err.max()),
                        "read": float(np.median(weights[posed, k] / truth[posed, k])),
                        "calm_turned_max": float(weights[calm, k].max()),
                        "calm_turned_p90": float(np.percentile(weights[calm, k], 90))}
    neutral_turned = found & turned & np.array([c.expression == "neutral" for c in cases])
    result["_neutral_turned_max"] = float(np.nanmax(weights[neutral_turned]))
    result["_missed"] = int((~found).sum())
    return result


def report(result: dict) -> str:
    lines = [f"{'shape':18s} {'median':>6s} {'worst':>6s} {'read':>5s} {'calm20-30 max':>13s} "
             f"{'p90':>5s}"]
    for name in (n for n in SCORED if n in result):
        r = result[name]
        lines.append(f"{name:18s} {r['median']:6.3f} {r['worst']:6.3f} {r['read']:5.2f} "
                     f"{r['calm_turned_max']:13.3f} {r['calm_turned_p90']:5.3f}")
    lines.append(f"neutral face turned 20-30 deg: largest weight "
                 f"{result['_neutral_turned_max']:.3f}; no face found in {result['_missed']}")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import pickle

    from avatar.template import load_template
    from tracking.face import FaceSolver

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="pickle of the tracked cases (made if missing)")
    args = parser.parse_args()
    if args.cache and Path(args.cache).exists():
        cases = pickle.loads(Path(args.cache).read_bytes())
    else:
        cases = render_loop(say=lambda s: print(s, file=sys.stderr))
        if args.cache:
            Path(args.cache).write_bytes(pickle.dumps(cases))
    solver = FaceSolver(load_template())
    t0 = time.perf_counter()
    weights = solve_cases(cases, solver)
    print(f"{len(cases)} cases solved in {time.perf_counter() - t0:.1f} s")
    print(report(score(cases, weights)))


if __name__ == "__main__":
    main()
