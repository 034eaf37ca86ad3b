"""Body closed loop in depth: the default avatar posed with limbs toward and away from the
camera (issue 15's list: forearm toward the camera, elbows forward, arms crossed in front,
squat, knee raised, torso turned 30 degrees; plus a frontal pose as a control), rendered on
the GL backend, tracked by the whole tracker as a photograph (``Tracker(static=True)``),
and each limb bone's solved direction compared with the truth in world axes.

    .venv/bin/python bench/body_loop.py              # per pose and per limb errors
    .venv/bin/python bench/body_loop.py --sheet out.png   # and the renders side by side

Poses are written as world directions of the limb bones in the body's own frame (+X the
avatar's left, +Y up, +Z toward the camera), turned with the root.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.codes import BODY_BONES, Codes  # noqa: E402
from common.rotation import matrix_to_quat  # noqa: E402

SIZE = (640, 480)
EYE, TARGET, FOV = [0.0, 0.95, 2.8], [0.0, 0.85, 0.0], 40.0
# The limb bones scored: (bone, the bone whose head ends it).
LIMBS = [(f"{a}.{s}", f"{b}.{s}") for s in "LR" for a, b in
         (("upperarm01", "lowerarm01"), ("lowerarm01", "wrist"),
          ("upperleg01", "lowerleg01"), ("lowerleg01", "foot"))]
DOWN_L, DOWN_R = (0.35, -1.0, 0.0), (-0.35, -1.0, 0.0)  # the legs' rest, about


@dataclass(frozen=True)
class BodyCase:
    name: str
    aims: dict  # bone -> direction in the body's frame
    yaw_deg: float = 0.0
    drop_m: float = 0.0


CASES = [
    BodyCase("frontal", {"upperarm01.L": (1, 0.6, 0), "lowerarm01.L": (1, 1.2, 0),
                         "upperarm01.R": (-1, -0.5, 0), "lowerarm01.R": (-0.3, 1, 0),
                         "upperleg01.R": (-0.4, -1, 0)}),
    BodyCase("forearm_to_camera", {"upperarm01.L": (0.15, -1, 0), "lowerarm01.L": (0.05, 0, 1),
                                   "upperarm01.R": (-1, 0, 0), "lowerarm01.R": (0, 0, 1)}),
    BodyCase("elbows_forward", {"upperarm01.L": (0.2, 0, 1), "lowerarm01.L": (0, 1, 0.1),
                                "upperarm01.R": (-0.2, -0.3, 1), "lowerarm01.R": (-0.2, 1, 0)}),
    BodyCase("arms_to_camera", {"upperarm01.L": (0.2, -0.2, 1), "lowerarm01.L": (0.1, -0.1, 1),
                                "upperarm01.R": (-0.2, 0.1, 1), "lowerarm01.R": (-0.1, 0.2, 1)}),
    BodyCase("arms_crossed", {"upperarm01.L": (0.3, -0.8, 0.5), "lowerarm01.L": (-1, 0.1, 0.25),
                              "upperarm01.R": (-0.3, -0.7, 0.5), "lowerarm01.R": (1, 0.3, 0.25)}),
    BodyCase("squat", {"upperleg01.L": (0.25, -0.25, 1), "lowerleg01.L": (0.05, -1, -0.35),
                       "upperleg01.R": (-0.25, -0.25, 1), "lowerleg01.R": (-0.05, -1, -0.35),
                       "upperarm01.L": (0.15, 0, 1), "lowerarm01.L": (0.05, 0, 1),
                       "upperarm01.R": (-0.15, 0, 1), "lowerarm01.R": (-0.05, 0, 1)},
             drop_m=0.3),
    BodyCase("knee_raised", {"upperleg01.L": (0.1, -0.1, 1), "lowerleg01.L": (0.05, -1, 0.1),
                             "upperarm01.L": (0.8, -0.6, 0.3), "upperarm01.R": (-0.8, -0.6, 0.3)}),
    BodyCase("torso_turned_30", {"upperarm01.L": (0.2, -1, 0.2), "lowerarm01.L": (0, -0.1, 1),
                                 "upperarm01.R": (-0.2, -1, 0.1), "lowerarm01.R": (0, 0.2, 1)},
             yaw_deg=30.0),
]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def case_codes(template, case: BodyCase) -> Codes:
    """Codes that point each aimed bone along its direction (turned with the root), every
    other bone turning with its parent."""
    from tracking.kinematics import local_quaternions, swing

    names = template.bone_names
    parents = {n: (names[p] if p >= 0 else None) for n, p in zip(names, template.bone_parents)}
    heads = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
    child = dict(LIMBS)
    yaw = np.radians(case.yaw_deg)
    root = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    world = {}
    for name in names:
        parent = parents[name]
        g = root if parent is None else world[parent]
        if name in case.aims:
            rest = heads[child[name]] - heads[name]
            g = swing(g @ _unit(rest), root @ _unit(case.aims[name])) @ g
        world[name] = g
    body = local_quaternions(BODY_BONES, parents, world)
    return Codes(body=body, root_rotation=matrix_to_quat(root).astype(np.float32),
                 root_translation=np.array([0.0, -case.drop_m, 0.0], np.float32))


def limb_directions(rig, codes: Codes) -> dict:
    heads = dict(zip(rig.bone_names, rig.pose_codes(codes).heads))
    return {a: heads[b] - heads[a] for a, b in LIMBS}


def run(cases=None, say=print):
    """[(case, image, truth codes, tracked codes)] for each case."""
    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.camera import Camera
    from render.video import to_uint8
    from tracking.sources import Frame
    from tracking.tracker import Tracker

    avatar = load_avatar("default")
    camera = Camera.look_at(EYE, TARGET, SIZE[0], SIZE[1], vertical_fov_deg=FOV)
    backend = get_backend("gl")
    out = []
    t0 = time.perf_counter()
    try:
        with Tracker(static=True) as tracker:
            for case in cases or CASES:
                truth = case_codes(avatar.template, case)
                rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(truth), camera)
                image = to_uint8(rgba, (0.45, 0.45, 0.45))
                codes = tracker.process(Frame(image, 0.0, 0)).codes
                out.append((case, image, truth, codes))
                say(f"  {case.name}: {time.perf_counter() - t0:.0f} s")
    finally:
        backend.release()
    return out


def score(template, results) -> dict:
    """{case name: {limb: degrees}} between the true and the solved limb directions; a
    case whose body was not found scores 180 on every limb."""
    from avatar.rig import Rig
    from tracking.kinematics import angle_deg

    rig = Rig(template)
    errors = {}
    for case, _, truth, codes in results:
        want = limb_directions(rig, truth)
        if not codes.is_valid("body"):
            errors[case.name] = {limb: 180.0 for limb, _ in LIMBS}
            continue
        got = limb_directions(rig, codes)
        errors[case.name] = {limb: angle_deg(want[limb], got[limb]) for limb, _ in LIMBS}
    return errors


def summary(errors: dict) -> dict:
    """Over all cases and limbs: median, 90th percentile, worst and the worst's place."""
    flat = [(v, f"{c}/{limb}") for c, limbs in errors.items() for limb, v in limbs.items()]
    values = np.array([v for v, _ in flat])
    worst = max(flat)
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "worst": float(worst[0]), "worst_at": worst[1]}


def report(errors: dict) -> str:
    short = [limb.replace("upperarm01", "uarm").replace("lowerarm01", "farm")
             .replace("upperleg01", "thigh").replace("lowerleg01", "shin") for limb, _ in LIMBS]
    lines = [f"{'case':18s} " + " ".join(f"{s:>7s}" for s in short) + "  median"]
    for name, limbs in errors.items():
        v = list(limbs.values())
        lines.append(f"{name:18s} " + " ".join(f"{x:7.1f}" for x in v)
                     + f"  {np.median(v):6.1f}")
    s = summary(errors)
    lines.append(f"all: median {s['median']:.1f}, p90 {s['p90']:.1f}, worst {s['worst']:.1f} "
                 f"({s['worst_at']})")
    return "\n".join(lines)


def main() -> None:
    import argparse

    from avatar.template import load_template

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sheet", help="write the renders side by side to this PNG")
    args = parser.parse_args()
    results = run(say=lambda s: print(s, file=sys.stderr))
    print(report(score(load_template(), results)))
    if args.sheet:
        from PIL import Image

        tiles = [Image.fromarray(img).resize((320, 240)) for _, img, _, _ in results]
        sheet = Image.new("RGB", (320 * 4, 240 * ((len(tiles) + 3) // 4)))
        for i, tile in enumerate(tiles):
            sheet.paste(tile, (320 * (i % 4), 240 * (i // 4)))
        sheet.save(args.sheet)


if __name__ == "__main__":
    main()
