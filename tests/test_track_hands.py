"""The hand solver's anatomy (tracking/hands.py) on landmarks built from the template's own
skeleton: joint limits, the rest bend mediapipe does not see, left and right, bad input.

tests/test_track_solvers.py checks the plain swing math (``anatomy=False``) on random
rotations; tests/test_track_media.py checks the whole tracker on renders of the avatar.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar.codes import HAND_BONES, Codes
from avatar.rig import Rig
from avatar.template import load_template
from tracking.hands import JOINT_LIMITS_DEG, HandSolver, finger_angles, hand_scale_ok
from tracking.kinematics import angle_deg, unit

BASES = (5, 9, 13, 17)  # index .. pinky knuckles in mediapipe's 21 points


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def solver(template):
    return HandSolver(template)


def _heads(template, hands=None) -> dict:
    rig = Rig(template)
    codes = Codes() if hands is None else Codes(hands=hands)
    return dict(zip(rig.bone_names, rig.pose_codes(codes).heads.astype(np.float64)))


def _points(h: dict, s: str) -> np.ndarray:
    """21 landmarks at the (posed) template's joints, tips one last-segment length on."""
    pts = np.zeros((21, 3))
    pts[0] = h[f"wrist.{s}"]
    thumb = [h[f"finger1-{j}.{s}"] for j in (1, 2, 3)]
    pts[1:4] = thumb
    pts[4] = 2 * thumb[2] - thumb[1]
    for k, base in zip(range(2, 6), BASES):
        joints = [h[f"finger{k}-{j}.{s}"] for j in (1, 2, 3)]
        pts[base:base + 3] = joints
        pts[base + 3] = 2 * joints[2] - joints[1]
    return pts


def _palm(points: np.ndarray, side: int) -> np.ndarray:
    """Unit normal out of the palm of 21 landmarks."""
    along, across = points[9] - points[0], points[5] - points[17]
    return unit(np.cross(along, across)) * (1.0 if side == 0 else -1.0)


def _turn(v, axis, angle):
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return (np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)) @ v


def _straight(points: np.ndarray, side: int) -> np.ndarray:
    """The four fingers unbent in their flexion planes until each segment continues the one
    before (the first: the wrist -> knuckle line), sideways turns and lengths kept: how
    mediapipe reads the template's relaxed rest hand."""
    palm = _palm(points, side)
    out = points.copy()
    for base in BASES:
        previous = points[base] - points[0]
        for j in range(1, 4):
            segment = points[base + j] - points[base + j - 1]
            knuckle = unit(np.cross(previous, palm))
            bend = np.arctan2(segment @ np.cross(knuckle, unit(previous)), segment @ unit(previous))
            segment = _turn(segment, knuckle, -bend)
            out[base + j] = out[base + j - 1] + segment
            previous = segment
    return out


def _finger_directions(template, hands, s: str) -> dict:
    """World direction of each finger bone of side ``s`` (posed by ``hands``)."""
    h = _heads(template, hands)
    p = _points(h, s)
    out = {}
    for k, base in zip(range(2, 6), BASES):
        for j in (1, 2, 3):
            out[f"finger{k}-{j}"] = p[base + j] - p[base + j - 1]
    return out


def _solve_both(solver, points_by_side) -> np.ndarray:
    hands = Codes().hands.copy()
    for side, pts in enumerate(points_by_side):
        hands[side] = solver.solve(pts, side)
    return hands


def test_a_straight_hand_reads_as_the_template_rest(template, solver):
    rest = _heads(template)
    hands = _solve_both(solver, [_straight(_points(rest, s), i) for i, s in enumerate("LR")])
    for s in "LR":
        truth = _finger_directions(template, None, s)
        solved = _finger_directions(template, hands, s)
        errors = [angle_deg(truth[b], solved[b]) for b in truth]
        assert max(errors) < 2.0, (s, np.round(errors, 1))


def _bend_index(points: np.ndarray, joint: int, angle_rad: float, side: int) -> np.ndarray:
    """Turn the index finger beyond ``joint`` (1 knuckle, 2 middle) toward the palm
    (positive) or the back of the hand (negative)."""
    axis = unit(np.cross(points[5 + joint] - points[4 + joint], _palm(points, side)))
    out = points.copy()
    pivot = points[4 + joint]
    out[5 + joint:9] = [_turn(p - pivot, axis, angle_rad) + pivot for p in points[5 + joint:9]]
    return out


@pytest.mark.parametrize("side", [0, 1])
def test_a_finger_cannot_bend_backward(template, solver, side):
    s = "LR"[side]
    straight = _straight(_points(_heads(template), s), side)
    reference = _finger_directions(template, _solve_both(solver, [straight] * 2), s)

    def middle_turn(points):
        solved = _finger_directions(template, _solve_both(solver, [points] * 2), s)
        return angle_deg(reference["finger2-2"], solved["finger2-2"]), solved

    forward, _ = middle_turn(_bend_index(straight, 2, np.radians(60), side))
    backward, solved = middle_turn(_bend_index(straight, 2, np.radians(-60), side))
    print(f"{s}: middle joint bent 60 forward -> {forward:.1f}, 60 back -> {backward:.1f} deg")
    assert abs(forward - 60) < 3, forward
    least = JOINT_LIMITS_DEG[2][0]
    assert backward < abs(least) + 3, backward  # held at the limit, not 60 back
    # The finger still points where the rest of the hand says: the knuckle is untouched.
    assert angle_deg(reference["finger2-1"], solved["finger2-1"]) < 2
    plain = HandSolver(template, anatomy=False)
    bent = _bend_index(straight, 2, np.radians(-60), side)
    free = _finger_directions(template, _solve_both(plain, [bent] * 2), s)
    assert angle_deg(free["finger2-1"], free["finger2-2"]) > 50  # without anatomy it bends


def test_curls_keep_their_side_and_size(template, solver):
    """Landmarks of a curled left hand solved as the left hand, and their mirror image as
    the right: both curl by the same amount toward their own palms."""
    rest = _heads(template)
    curled = _bend_index(_bend_index(_straight(_points(rest, "L"), 0), 1, np.radians(70), 0),
                         2, np.radians(50), 0)
    mirrored = curled * np.array([-1.0, 1.0, 1.0])
    hands = _solve_both(solver, [curled, mirrored])
    reference = _solve_both(solver, [_straight(_points(rest, s), i) for i, s in enumerate("LR")])
    for s in "LR":
        before = _finger_directions(template, reference, s)
        after = _finger_directions(template, hands, s)
        knuckle = angle_deg(before["finger2-1"], after["finger2-1"])
        middle = angle_deg(before["finger2-2"], after["finger2-2"])
        assert abs(knuckle - 70) < 3 and abs(middle - 120) < 4, (s, knuckle, middle)
        # Toward the palm: the curled index's tip comes nearer the wrist than the straight one.
        h_before, h_after = _heads(template, reference), _heads(template, hands)
        tip = f"finger2-3.{s}"
        assert (np.linalg.norm(h_after[tip] - h_after[f"wrist.{s}"])
                < np.linalg.norm(h_before[tip] - h_before[f"wrist.{s}"]) - 0.03)


def test_finger_angles_limits_and_rest_bend():
    observed = np.radians([[-50.0, 40.0], [130.0, -30.0], [-20.0, 5.0]])
    rest_bend = np.radians([[15.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    out = np.degrees(finger_angles(observed, rest_bend))
    (k_least, _, k_side), (_, m_most, m_side), (l_least, _, _) = (
        JOINT_LIMITS_DEG[j] for j in (1, 2, 3))
    assert out[0, 0] == pytest.approx(max(-50 + 15, k_least))
    assert out[0, 1] == pytest.approx(k_side)
    assert out[1, 0] == pytest.approx(m_most) and out[1, 1] == pytest.approx(-m_side)
    assert out[2, 0] == pytest.approx(l_least) and out[2, 1] == pytest.approx(5.0)
    inside = np.radians([[20.0, 5.0], [40.0, 0.0], [30.0, 0.0]])
    assert np.allclose(finger_angles(inside, np.zeros((3, 2))), inside)


def test_degenerate_hands_are_rejected(template):
    points = _points(_heads(template), "L")
    assert hand_scale_ok(points)
    bad = points.copy()
    bad[7] = np.nan
    assert not hand_scale_ok(bad)
    assert not hand_scale_ok(np.zeros((21, 3)))  # collapsed onto one point
    assert not hand_scale_ok(points * 100)  # a hand 10 m long


def test_hand_bones_cover_every_finger_bone():
    for side, s in enumerate("LR"):
        names = HAND_BONES[side]
        assert len(names) == 19 and all(n.endswith("." + s) for n in names)


def _same_rotations(a: np.ndarray, b: np.ndarray) -> float:
    """Largest quaternion difference, q and -q being the same rotation."""
    return float(np.max(np.minimum(np.abs(a - b).max(-1), np.abs(a + b).max(-1))))


def _test_hands(template) -> tuple[np.ndarray, np.ndarray]:
    """Hands for the fast-against-reference checks: the template's rest and straightened
    hands (segments exactly along their rest directions: the swings' parallel case), a
    curl, a finger bent backward, a finger folded straight back (antiparallel), each side,
    and 40 noisy copies (2 cm of noise: joint limits clip, thumbs blend)."""
    rest = _heads(template)
    hands, sides = [], []
    for side, s in enumerate("LR"):
        points = _points(rest, s)
        straight = _straight(points, side)
        folded = straight.copy()
        folded[7] = 2 * folded[6] - folded[5]  # index middle segment reversed: a half turn
        folded[8] = 2 * folded[7] - folded[6]
        hands += [points, straight, _bend_index(straight, 1, np.radians(70), side),
                  _bend_index(straight, 2, np.radians(-60), side), folded]
        sides += [side] * 5
    rng = np.random.default_rng(4)
    for i in range(40):
        hands.append(hands[i % 10] + rng.normal(0.0, 0.02, (21, 3)))
        sides.append(sides[i % 10])
    return np.array(hands), np.array(sides)


@pytest.mark.parametrize("anatomy", [True, False])
def test_the_batched_solver_matches_the_bone_by_bone_one(template, anatomy):
    solver = HandSolver(template, anatomy=anatomy)
    hands, sides = _test_hands(template)
    reference = np.array([solver.solve_reference(p, s) for p, s in zip(hands, sides)])
    assert _same_rotations(solver.solve_many(hands, sides), reference) < 1e-6
    one_by_one = np.array([solver.solve(p, s) for p, s in zip(hands, sides)])
    assert _same_rotations(one_by_one, reference) < 1e-6


def test_the_batched_solver_matches_on_mediapipe_hands(template, solver):
    """Real landmarks: messi5.jpg's two hands through holistic (a photograph)."""
    from skimage.io import imread

    from tests.media import media_path
    from tracking.hands import to_world
    from tracking.landmarks import LandmarkDetector

    with LandmarkDetector(static_image_mode=True) as detector:
        found = detector.detect(np.ascontiguousarray(imread(media_path("messi5.jpg"))[..., :3]))
    sides = [side for side in (0, 1) if found.hands_world[side] is not None]
    assert sides == [0, 1]
    hands = np.array([to_world(found.hands_world[side]) for side in sides])
    reference = np.array([solver.solve_reference(p, s) for p, s in zip(hands, sides)])
    assert _same_rotations(solver.solve_many(hands, sides), reference) < 1e-6


def test_solve_many_bad_input(template, solver):
    points = _points(_heads(template), "L")
    with pytest.raises(ValueError, match="2 hands but 1 sides"):
        solver.solve_many(np.stack([points, points]), [0])
    assert solver.solve_many(np.zeros((0, 21, 3)), []).shape == (0, 19, 4)


def test_batched_rotation_helpers_match_kinematics():
    """The batched swing and blend against tracking/kinematics.py's, including the cases
    they hand to the scalar code: parallel, opposite, and rotations a half turn apart."""
    from common.rotation import quat_from_axis_angle, quat_to_matrix
    from tracking import kinematics
    from tracking.hands import _blends, _swings

    rng = np.random.default_rng(7)
    a = unit(rng.normal(size=(20, 3)))
    b = unit(rng.normal(size=(20, 3)))
    b[0], b[1] = a[0], -a[1]  # parallel, opposite
    b[2] = -a[2] + 1e-10  # all but opposite
    fast = _swings(a, b)
    assert all(np.allclose(fast[i], kinematics.swing(a[i], b[i]), atol=1e-9) for i in range(20))
    assert np.allclose(fast[1] @ a[1], b[1], atol=1e-9)

    axes = rng.normal(size=(6, 3))
    start = quat_to_matrix(quat_from_axis_angle(rng.normal(size=(6, 3)), rng.uniform(0, 3, 6)))
    turns = np.array([0.0, 1e-13, 0.4, 2.0, np.pi - 1e-3, np.pi])
    end = start @ quat_to_matrix(quat_from_axis_angle(axes, turns))
    weights = np.array([0.3, 0.5, 0.3, 0.7, 0.3, 0.5])
    fast = _blends(start, end, weights)
    for i in range(6):
        slow = kinematics.blend(start[i], end[i], weights[i])
        assert np.allclose(fast[i], slow, atol=1e-9), (turns[i], fast[i], slow)
