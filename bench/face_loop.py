"""Face closed loop: the default avatar and other identities (``IDENTITIES``: anny
phenotypes with other skin tones and hair) posed with known blendshape weights, rendered on
the GL backend at several head poses and lightings, tracked by the project's landmark
detector (holistic, refined face mesh, as for photographs), and solved by ``FaceSolver``.

``render_loop()`` gives the cases with their face landmarks (the slow part: a render and a
mediapipe pass each); ``score()`` solves them and compares with the truth per shape.

    .venv/bin/python bench/face_loop.py                     # the default avatar
    .venv/bin/python bench/face_loop.py --identities all    # all five identities
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


@dataclass(frozen=True)
class Identity:
    """A person for the loop: anny's phenotype (``{}``: the default body; the template's
    rest shape plus what the phenotype changes, eyes kept in place), a gain on the skin's
    albedo and the hair's albedo (None: as it is)."""

    name: str
    phenotype: dict
    skin: tuple = (1.0, 1.0, 1.0)
    hair: tuple | None = None


IDENTITIES = [
    Identity("default", {}),
    Identity("woman_dark", {"gender": 0.0, "age": 0.45, "weight": 0.4},
             (0.42, 0.33, 0.28), (0.05, 0.04, 0.035)),
    Identity("older_heavy_man", {"gender": 1.0, "age": 0.9, "weight": 0.85, "muscle": 0.3},
             (0.95, 0.85, 0.8), (0.55, 0.55, 0.55)),
    Identity("thin_tall", {"gender": 0.7, "age": 0.35, "weight": 0.1, "height": 0.9,
                           "proportions": 0.9}, (0.72, 0.58, 0.45), (0.1, 0.07, 0.05)),
    Identity("young_blond", {"gender": 0.25, "age": 0.3, "muscle": 0.8, "proportions": 0.2},
             (1.05, 1.0, 0.97), (0.75, 0.6, 0.35)),
]
IDENTITY = {i.name: i for i in IDENTITIES}


@dataclass
class Case:
    expression: str
    yaw_deg: float
    pitch_deg: float
    light: int
    truth: np.ndarray  # (52,)
    face_px: np.ndarray | None  # (478, 3) or None when face mesh found no face
    identity: str = "default"


_ANNY: list = []


def _anny_rest(phenotype: dict) -> tuple[np.ndarray, np.ndarray]:
    """anny's rest vertices and bone heads (our axes) for a phenotype (needs torch + anny,
    the ``create`` extra)."""
    import torch

    from scripts.build_template import OURS_FROM_ANNY, build_anny_model

    if not _ANNY:
        _ANNY.append(build_anny_model())
    with torch.no_grad():
        out = _ANNY[0](phenotype_kwargs=phenotype or None)
    return (out["rest_vertices"][0].numpy() @ OURS_FROM_ANNY.T,
            out["rest_bone_heads"][0].numpy() @ OURS_FROM_ANNY.T)


def identity_avatar(identity: Identity):
    """The default avatar re-shaped by the identity's phenotype and re-coloured."""
    import dataclasses

    from avatar.avatar import load_avatar

    avatar = load_avatar("default")
    skinned, template = avatar.skinned, avatar.template
    vertices = skinned.vertices
    if identity.phenotype:
        rest, heads = _anny_rest({})
        rest_p, heads_p = _anny_rest(identity.phenotype)
        eyes = [template.bone_index("eye.L"), template.bone_index("eye.R")]
        shift = heads[eyes].mean(axis=0) - heads_p[eyes].mean(axis=0)
        vertices = (vertices + (rest_p - rest) + shift).astype(np.float32)
    colors = skinned.colors.copy()
    albedo = colors if colors.ndim == 2 else colors[:, 0]
    r, g, b = albedo[:, 0], albedo[:, 1], albedo[:, 2]
    skin = (r > 0.55) & (g > 0.55 * r) & (g < 0.85 * r) & (b > 0.45 * r) & (b < 0.8 * r)
    albedo[skin] *= np.asarray(identity.skin, np.float32)
    if identity.hair is not None:
        head = np.isin(skinned.binding_face, template.region_faces("head"))
        hair = head & (r < 0.45) & ~skin
        tone = albedo[hair].mean(axis=1, keepdims=True) / max(albedo[hair].mean(), 1e-6)
        albedo[hair] = np.clip(tone * np.asarray(identity.hair, np.float32), 0, 1)
    if colors.ndim != 2:
        colors[:, 0] = albedo
    avatar.skinned = dataclasses.replace(skinned, vertices=vertices, colors=colors)
    return avatar


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


def render_loop(expressions=None, poses=None, lights=None, say=print,
                identities=("default",), images: dict | None = None) -> list[Case]:
    """Tracked cases for every identity, head pose, expression and light; ``images``, when
    given, collects each render as {(identity, expression, yaw, pitch, light): image}."""
    from render.backends import get_backend
    from render.video import to_uint8
    from tracking.landmarks import LandmarkDetector

    expressions = list(expressions or EXPRESSIONS)
    poses = poses or HEAD_POSES
    lights = range(len(LIGHTS)) if lights is None else lights
    cases = []
    t0 = time.perf_counter()
    with LandmarkDetector(static_image_mode=True) as detector:
        for name in identities:
            avatar = identity_avatar(IDENTITY[name])
            camera = head_camera(avatar.template)
            backend = get_backend("gl")
            try:
                for yaw, pitch in poses:
                    for expression in expressions:
                        codes = codes_for(expression, yaw, pitch)
                        rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes),
                                                      camera)
                        base = to_uint8(rgba, (0.45, 0.45, 0.45))
                        for light in lights:
                            image = lit(base, light)
                            if images is not None:
                                images[(name, expression, yaw, pitch, light)] = image
                            lm = detector.detect(image)
                            cases.append(Case(expression, yaw, pitch, light, codes.face.copy(),
                                              lm.face, name))
                    say(f"  {name} head yaw {yaw} pitch {pitch}: {len(cases)} cases, "
                        f"{time.perf_counter() - t0:.0f} s")
            finally:
                backend.release()
    return cases


def solve_cases(cases: list[Case], solver) -> np.ndarray:
    """(n, 52) weights, each case solved as a photograph against the frontal neutral face
    under the same light (``FaceSolver.calibrate``: what a video's calibration takes from
    a person facing the camera). NaN rows where face mesh found no face."""
    neutrals = {(c.identity, c.light): c.face_px for c in cases
                if c.expression == "neutral" and c.yaw_deg == 0 and c.pitch_deg == 0}
    out = np.full((len(cases), len(BLENDSHAPE_NAMES)), np.nan)
    for i, case in enumerate(cases):
        if case.face_px is not None:
            solver.calibrate(neutrals[(case.identity, case.light)])
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
    parser.add_argument("--identities", default="default",
                        help="comma-separated names from " + ", ".join(IDENTITY)
                        + ", or 'all' (default: default)")
    args = parser.parse_args()
    names = list(IDENTITY) if args.identities == "all" else args.identities.split(",")
    unknown = [n for n in names if n not in IDENTITY]
    if unknown:
        parser.error(f"unknown identity {unknown[0]!r}; choose from {', '.join(IDENTITY)}")
    if args.cache and Path(args.cache).exists():
        cases = pickle.loads(Path(args.cache).read_bytes())
    else:
        cases = render_loop(say=lambda s: print(s, file=sys.stderr), identities=names)
        if args.cache:
            Path(args.cache).write_bytes(pickle.dumps(cases))
    solver = FaceSolver(load_template())
    t0 = time.perf_counter()
    weights = solve_cases(cases, solver)
    print(f"{len(cases)} cases solved in {time.perf_counter() - t0:.1f} s")
    print(report(score(cases, weights)))


if __name__ == "__main__":
    main()
