"""Solvers and filters in closed loop on the template's own skeleton (no mediapipe).

Known rotations pose the template (avatar.rig); the posed joints become landmarks exactly
where mediapipe defines them; the solvers must give the rotations back. This checks the
math and the conventions (axes, sides, parents); tests/test_track_media.py checks the same
solvers on real photographs and renders.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar.codes import BODY_BONES, HAND_BONES, Codes
from avatar.rig import Rig
from common.rotation import quat_angle_rad, quat_from_axis_angle, quat_multiply
from avatar.template import load_template
from tracking import landmarks as L
from tracking.body import BodySolver
from tracking.filters import OneEuro, QuaternionOneEuro
from tracking.hands import HandSolver
from tracking.kinematics import angle_deg


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def rig(template):
    return Rig(template)


def _heads(rig, codes):
    skeleton = rig.pose_codes(codes)
    return dict(zip(rig.bone_names, skeleton.heads))


def _hand_points(h: dict, s: str) -> np.ndarray:
    """21 hand landmarks (world axes) at the posed template's joints; fingertips one
    last-segment length beyond the last joint."""
    pts = np.zeros((21, 3))
    pts[0] = h[f"wrist.{s}"]
    chain = [f"finger1-1.{s}", f"finger1-2.{s}", f"finger1-3.{s}"]
    pts[1:4] = [h[b] for b in chain]
    pts[4] = 2 * h[chain[2]] - h[chain[1]]
    for k, base in zip(range(2, 6), (5, 9, 13, 17)):
        joints = [h[f"finger{k}-{j}.{s}"] for j in (1, 2, 3)]
        pts[base:base + 3] = joints
        pts[base + 3] = 2 * joints[2] - joints[1]
    return pts


def _finger_codes(rng) -> Codes:
    """Curls and spreads of every finger bone of both hands (local rotations)."""
    hands = np.zeros((2, 19, 4))
    hands[..., 0] = 1
    for side in range(2):
        for i, name in enumerate(HAND_BONES[side]):
            if name.startswith("metacarpal"):
                continue
            axis = rng.normal(size=3)
            hands[side, i] = quat_from_axis_angle(axis, rng.uniform(0.1, 0.8))
    return Codes(hands=hands.astype(np.float32))


def test_hand_solver_recovers_finger_rotations(template, rig):
    rng = np.random.default_rng(4)
    solver = HandSolver(template, anatomy=False)  # exact: no joint limits, no rest bend
    errors = []
    for _ in range(5):
        codes = _finger_codes(rng)
        h = _heads(rig, codes)
        for side, s in enumerate("LR"):
            solved = solver.solve(_hand_points(h, s), side)
            # Compare where each bone points (the landmarks fix direction; a tip bone's
            # twist is not observable) in world axes.
            skel = rig.pose_codes(codes.replace(hands=np.stack([solved, solved])
                                                if side == 0
                                                else np.stack([codes.hands[0], solved])))
            posed = dict(zip(rig.bone_names, skel.heads))
            for bone in HAND_BONES[side]:
                if bone.endswith("-3." + s) or bone.startswith("metacarpal"):
                    continue
                child = bone[:-3] + str(int(bone[-3]) + 1) + bone[-2:]
                errors.append(angle_deg(h[child] - h[bone], posed[child] - posed[bone]))
    assert np.median(errors) < 2.0, np.median(errors)
    assert np.percentile(errors, 90) < 6.0


def test_hand_solver_keeps_sides(template, rig):
    """A left hand's landmarks solved as the left hand keep the palm where it was."""
    solver = HandSolver(template, anatomy=False)  # exact: no joint limits, no rest bend
    h = _heads(rig, Codes())
    for side, s in enumerate("LR"):
        solved = solver.solve(_hand_points(h, s), side)
        angles = np.degrees(quat_angle_rad(solved, np.array([1.0, 0, 0, 0])))
        assert np.median(angles) < 3.0, (s, angles)


def _pose_landmarks(h: dict, width=640, height=480, px_per_m=200.0) -> L.Landmarks:
    """Pose landmarks of the posed template seen by an orthographic camera at +Z."""
    world = np.zeros((33, 3))
    names = {L.LEFT_SHOULDER: "upperarm01.L", L.RIGHT_SHOULDER: "upperarm01.R",
             L.LEFT_ELBOW: "lowerarm01.L", L.RIGHT_ELBOW: "lowerarm01.R",
             L.LEFT_WRIST: "wrist.L", L.RIGHT_WRIST: "wrist.R",
             L.LEFT_HIP: "upperleg01.L", L.RIGHT_HIP: "upperleg01.R",
             L.LEFT_KNEE: "lowerleg01.L", L.RIGHT_KNEE: "lowerleg01.R",
             L.LEFT_ANKLE: "foot.L", L.RIGHT_ANKLE: "foot.R",
             L.LEFT_FOOT_INDEX: "toe3-1.L", L.RIGHT_FOOT_INDEX: "toe3-1.R",
             L.LEFT_INDEX: "finger2-1.L", L.RIGHT_INDEX: "finger2-1.R",
             L.LEFT_PINKY: "finger5-1.L", L.RIGHT_PINKY: "finger5-1.R",
             L.LEFT_THUMB: "finger1-2.L", L.RIGHT_THUMB: "finger1-2.R"}
    for i, bone in names.items():
        world[i] = h[bone]
    for side, heel, foot in (("L", L.LEFT_HEEL, "foot.L"), ("R", L.RIGHT_HEEL, "foot.R")):
        world[heel] = h[foot] - 0.5 * (h[f"toe3-1.{side}"] - h[foot])
    world[L.NOSE] = h["head"] + [0, 0.03, 0.12]
    world[L.LEFT_EAR] = h["head"] + [0.07, 0.04, 0]
    world[L.RIGHT_EAR] = h["head"] + [-0.07, 0.04, 0]
    hips = 0.5 * (world[L.LEFT_HIP] + world[L.RIGHT_HIP])
    camera = (world - hips) * np.array([1.0, -1.0, -1.0])  # mediapipe axes about the hips
    image = np.stack([width / 2 + px_per_m * world[:, 0], height / 2 - px_per_m * world[:, 1],
                      -px_per_m * world[:, 2]], axis=1)
    return L.Landmarks(width, height, pose=image.astype(np.float32),
                       pose_visibility=np.ones(33, np.float32),
                       pose_world=camera.astype(np.float32))


def _body_codes(rng) -> Codes:
    body = np.zeros((31, 4))
    body[:, 0] = 1
    index = {n: i for i, n in enumerate(BODY_BONES)}
    x, y, z = np.eye(3)
    for s, sign in (("L", 1), ("R", -1)):
        # Arms: raise sideways and forward, bend the elbow; legs: lift the thigh, bend the knee.
        raise_arm = quat_from_axis_angle(z, sign * rng.uniform(0.2, 1.2))
        forward = quat_from_axis_angle(x, -rng.uniform(0.0, 0.8))
        body[index[f"upperarm01.{s}"]] = quat_multiply(forward, raise_arm)
        body[index[f"lowerarm01.{s}"]] = quat_from_axis_angle(-x, rng.uniform(0.2, 1.4))
        body[index[f"upperleg01.{s}"]] = quat_from_axis_angle(-x, rng.uniform(0.0, 0.9))
        body[index[f"lowerleg01.{s}"]] = quat_from_axis_angle(x, rng.uniform(0.1, 1.4))
    body[index["spine03"]] = quat_from_axis_angle(y, rng.uniform(-0.3, 0.3))
    return Codes(body=body.astype(np.float32))


LIMBS = [("upperarm01", "lowerarm01"), ("lowerarm01", "wrist"), ("upperleg01", "lowerleg01"),
         ("lowerleg01", "foot")]


def test_body_solver_recovers_limb_directions(template, rig):
    """Bones toward or away from the camera included: the lift must get depth right. The
    landmarks here are exact, so their lengths are taken as they are (mediapipe's run some
    10 % long, which the solver's default shrink is for: tests/test_track_media.py)."""
    rng = np.random.default_rng(7)
    solver = BodySolver(template, length_shrink=1.0)
    errors = []
    for _ in range(8):
        codes = _body_codes(rng)
        h = _heads(rig, codes)
        pose = solver.solve(_pose_landmarks(h))
        assert pose is not None
        solved = codes.replace(body=pose.body, root_rotation=pose.root_rotation)
        p = _heads(rig, solved)
        for s in "LR":
            for a, b in LIMBS:
                errors.append(angle_deg(h[f"{b}.{s}"] - h[f"{a}.{s}"],
                                        p[f"{b}.{s}"] - p[f"{a}.{s}"]))
    assert np.median(errors) < 3.0, np.median(errors)
    assert np.percentile(errors, 90) < 10.0, np.percentile(errors, 90)


def test_body_solver_flips_a_forward_bent_knee(template, rig):
    """World landmarks with the shin's depth sign wrong still give a backward-bent knee."""
    solver = BodySolver(template)
    body = Codes().body.copy()
    index = {n: i for i, n in enumerate(BODY_BONES)}
    body[index["upperleg01.L"]] = quat_from_axis_angle([-1, 0, 0], 0.2)  # thigh a bit forward
    body[index["lowerleg01.L"]] = quat_from_axis_angle([1, 0, 0], 1.1)   # foot kicked back
    codes = Codes(body=body)
    h = _heads(rig, codes)
    lm = _pose_landmarks(h)
    # Corrupt the ankle's world depth so the shin seems to go forward from the knee.
    knee, ankle = lm.pose_world[L.LEFT_KNEE], lm.pose_world[L.LEFT_ANKLE]
    lm.pose_world[L.LEFT_ANKLE, 2] = knee[2] - abs(ankle[2] - knee[2])
    pose = solver.solve(lm)
    p = _heads(rig, codes.replace(body=pose.body, root_rotation=pose.root_rotation))
    shin = p["foot.L"] - p["lowerleg01.L"]
    thigh = p["lowerleg01.L"] - p["upperleg01.L"]
    assert np.dot(np.cross(thigh, shin), [1, 0, 0]) > 0  # bent backward
    assert angle_deg(shin, h["foot.L"] - h["lowerleg01.L"]) < 10


@pytest.mark.parametrize("side", ["L", "R"])
def test_body_solver_flips_an_elbow_bent_behind_the_back(template, rig, side):
    """World landmarks that put the forearm behind a hanging upper arm (the shoulder cannot
    turn that far) are flipped to the front; a plausible forward bend is left alone."""
    solver = BodySolver(template)
    body = Codes().body.copy()
    index = {n: i for i, n in enumerate(BODY_BONES)}
    sign = 1 if side == "L" else -1
    body[index[f"upperarm01.{side}"]] = quat_from_axis_angle([0, 0, 1], sign * 0.4)  # arm down
    body[index[f"lowerarm01.{side}"]] = quat_from_axis_angle([-1, 0, 0], 0.6)  # forearm forward
    codes = Codes(body=body)
    h = _heads(rig, codes)
    wrist = L.LEFT_WRIST if side == "L" else L.RIGHT_WRIST
    elbow = L.LEFT_ELBOW if side == "L" else L.RIGHT_ELBOW
    hand = [wrist] + ([L.LEFT_INDEX, L.LEFT_PINKY, L.LEFT_THUMB] if side == "L"
                      else [L.RIGHT_INDEX, L.RIGHT_PINKY, L.RIGHT_THUMB])

    def solved_forearm(lm):
        pose = solver.solve(lm)
        p = _heads(rig, codes.replace(body=pose.body, root_rotation=pose.root_rotation))
        return p[f"wrist.{side}"] - p[f"lowerarm01.{side}"]

    truth = h[f"wrist.{side}"] - h[f"lowerarm01.{side}"]
    assert truth[2] > 0.1  # the forearm reaches forward, toward the camera
    assert angle_deg(solved_forearm(_pose_landmarks(h)), truth) < 5
    lm = _pose_landmarks(h)
    # mediapipe axes: z away from the camera. Mirror the hand's depth about the elbow's.
    for i in hand:
        lm.pose_world[i, 2] = 2 * lm.pose_world[elbow, 2] - lm.pose_world[i, 2]
    forearm = solved_forearm(lm)
    assert forearm[2] > 0.1, forearm  # back in front of the body
    assert angle_deg(forearm, truth) < 5


def test_body_solver_needs_shoulders(template):
    lm = L.Landmarks(640, 480)
    assert BodySolver(template).solve(lm) is None
    rig = Rig(template)
    lm = _pose_landmarks(_heads(rig, Codes()))
    lm.pose_visibility[:] = 0.1
    assert BodySolver(template).solve(lm) is None


def test_one_euro_still_and_fast():
    """Jitter on a still signal shrinks; a fast ramp lags by little."""
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    still = 0.5 + 0.01 * rng.normal(size=300)
    f = OneEuro(2.0, 4.0)
    out = np.array([f.filter(v, ti) for v, ti in zip(still, t)])
    assert np.std(out[30:]) < 0.5 * np.std(still[30:])
    ramp = np.clip((t - 2.0) * 3.0, 0, 3)  # 3 units per second
    f = OneEuro(2.0, 4.0)
    out = np.array([f.filter(v, ti) for v, ti in zip(ramp, t)])
    moving = (t > 2.3) & (t < 2.9)
    lag_s = np.median((ramp[moving] - out[moving]) / 3.0)
    assert lag_s < 0.03, lag_s


def test_quaternion_one_euro_stays_unit_and_handles_sign_flips():
    f = QuaternionOneEuro(1.0, 1.0)
    q = quat_from_axis_angle([0, 1, 0], 0.3)
    for i in range(20):
        out = f.filter(q if i % 2 else -q, i / 30.0)
        assert abs(np.linalg.norm(out) - 1) < 1e-9
        assert np.degrees(quat_angle_rad(out, q)) < 1e-6


def test_an_unseen_arm_hangs_relaxed(template, rig):
    """Arms below a webcam's frame (visibility < 0.5) hang at the sides like app/poses.py's
    relaxed arms, not in the template's A-pose; a seen arm is still solved."""
    from app.poses import POSES

    solver = BodySolver(template)
    truth = POSES["talk"].codes(0.0)             # relaxed arms, at rest otherwise
    lm = _pose_landmarks(_heads(rig, Codes()))    # the landmarks of the A-pose...
    for i in (L.LEFT_ELBOW, L.LEFT_WRIST, L.RIGHT_ELBOW, L.RIGHT_WRIST):
        lm.pose_visibility[i] = 0.1               # ...with neither arm seen
    pose = solver.solve(lm)
    p = _heads(rig, Codes(body=pose.body, root_rotation=pose.root_rotation))
    h = _heads(rig, truth.replace(face=Codes().face))
    for s in "LR":
        upper = p[f"lowerarm01.{s}"] - p[f"upperarm01.{s}"]
        assert angle_deg(upper, h[f"lowerarm01.{s}"] - h[f"upperarm01.{s}"]) < 3.0
        assert angle_deg(upper, [0.0, -1.0, 0.0]) < 20.0       # down along the body
    lm.pose_visibility[L.LEFT_ELBOW] = lm.pose_visibility[L.LEFT_WRIST] = 1.0
    pose = solver.solve(lm)
    p = _heads(rig, Codes(body=pose.body, root_rotation=pose.root_rotation))
    rest = _heads(rig, Codes())
    assert angle_deg(p["lowerarm01.L"] - p["upperarm01.L"],
                     rest["lowerarm01.L"] - rest["upperarm01.L"]) < 3.0  # seen: the A-pose
