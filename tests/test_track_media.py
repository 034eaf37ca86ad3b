"""The whole tracker (mediapipe 0.10.21 + solvers) on real photographs, a real video and
renders of the default avatar with known codes (closed loop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.codes import BODY_BONES, Codes, read_jsonl
from avatar.rig import Rig
from common.rotation import quat_from_axis_angle
from tests.media import media_path
from tracking.kinematics import angle_deg
from tracking.sources import Frame, VideoSource, load_image
from tracking.tracker import Tracker, track

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_tracker():
    with Tracker(static=True) as tracker:
        yield tracker


def _track(tracker, image) -> Codes:
    return tracker.process(Frame(image, 0.0, 0)).codes


def _heads(template, codes):
    rig = Rig(template)
    return dict(zip(rig.bone_names, rig.pose_codes(codes).heads))


def test_astronaut_smiles_with_open_eyes(photo_tracker):
    skimage_data = pytest.importorskip("skimage.data")
    codes = _track(photo_tracker, skimage_data.astronaut())
    assert codes.is_valid("face") and codes.is_valid("gaze") and codes.is_valid("head")
    assert codes.blendshape("mouthSmileLeft") > 0.35
    assert codes.blendshape("mouthSmileRight") > 0.35
    assert codes.blendshape("eyeBlinkLeft") < 0.3 and codes.blendshape("eyeBlinkRight") < 0.3
    assert np.all(np.abs(np.degrees(codes.gaze)) < 20)  # she looks at the camera


def test_messi_body_and_both_hands(photo_tracker):
    codes = _track(photo_tracker, load_image(media_path("messi5.jpg")))
    for part in ("body", "root", "left_hand", "right_hand"):
        assert codes.is_valid(part), part
    h = _heads(photo_tracker.template, codes)

    def knee(s):
        return angle_deg(h[f"lowerleg01.{s}"] - h[f"upperleg01.{s}"],
                         h[f"foot.{s}"] - h[f"lowerleg01.{s}"])

    # His right leg (image left) is the deeply bent one he crouches on; the left reaches out.
    assert knee("R") > knee("L") + 30, (knee("R"), knee("L"))
    assert knee("R") > 70
    # His left hand is on the image's right: the avatar's left hand is at +X, and higher
    # than the right hand? No: the right arm is raised higher in the picture.
    assert h["wrist.L"][0] > 0.2 and h["wrist.R"][0] < -0.2
    assert h["wrist.R"][1] > h["wrist.L"][1]


def test_no_person_gives_all_parts_invalid(photo_tracker):
    skimage_data = pytest.importorskip("skimage.data")
    codes = _track(photo_tracker, skimage_data.coffee())
    assert not codes.valid.any()
    assert codes.equals(Codes(t=codes.t, seq=codes.seq, valid=codes.valid))  # rest values


def test_a_photograph_gives_the_same_landmarks_whatever_came_before(photo_tracker):
    """mediapipe's holistic graph remembers the previous image even in static mode; the
    detector makes it forget, so a photo's codes do not depend on the order of the photos."""
    skimage_data = pytest.importorskip("skimage.data")
    astronaut = skimage_data.astronaut()
    first = photo_tracker.process(Frame(astronaut, 0.0, 0)).landmarks
    photo_tracker.process(Frame(load_image(media_path("messi5.jpg")), 0.0, 1))
    photo_tracker.process(Frame(astronaut[:, ::-1].copy(), 0.0, 2))  # a nearby face
    again = photo_tracker.process(Frame(astronaut, 0.0, 3)).landmarks
    np.testing.assert_array_equal(first.face, again.face)
    np.testing.assert_array_equal(first.pose, again.pose)


def test_talking_head_video_is_steady_and_calibrates():
    """jwpIntro.mp4: a man talking to the camera, head and shoulders."""
    source = VideoSource(media_path("jwpIntro.mp4"))
    with Tracker(calibration_s=1.0) as tracker:
        results = [r for r, _ in zip(track(source, tracker), range(90))]
        assert tracker.face.calibrated
    codes = [r.codes for r in results]
    assert sum(c.is_valid("face") for c in codes) >= 85
    assert sum(c.is_valid("body") for c in codes) >= 85
    # Hands are out of the frame.
    assert not any(c.is_valid("left_hand") or c.is_valid("right_hand") for c in codes)
    # A still talker's head barely shakes frame to frame (filtered): under 1 degree median.
    head = np.array([c.head for c in codes[30:]], dtype=np.float64)
    steps = [np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(a * b, -1)), 0, 1))).max()
             for a, b in zip(head[:-1], head[1:])]
    assert np.median(steps) < 1.0, np.median(steps)
    # He talks: the jaw moves.
    jaw = np.array([c.blendshape("jawOpen") for c in codes[30:]])
    assert jaw.max() - jaw.min() > 0.05


def test_track_command_writes_codes(tmp_path):
    out = tmp_path / "codes.jsonl"
    run = subprocess.run([sys.executable, "main.py", "track", str(media_path("messi5.jpg")),
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    frames = read_jsonl(out)
    assert len(frames) == 1 and frames[0].is_valid("body")
    missing = subprocess.run([sys.executable, "main.py", "track", "camera:7", "--out",
                              str(tmp_path / "c.jsonl")], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 1
    assert "camera /dev/video7 not found" in missing.stderr and "Traceback" not in missing.stderr


# -- closed loop: render the default avatar with known codes, track the render -------------

def _render(codes: Codes, eye, target, size, fov):
    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.camera import Camera
    from render.video import to_uint8

    avatar = load_avatar("default")
    camera = Camera.look_at(eye, target, size[0], size[1], vertical_fov_deg=fov)
    backend = get_backend("auto")
    try:
        rgba = backend.render(avatar.pose(codes), camera)
    finally:
        backend.release()
    return to_uint8(rgba, (0.45, 0.45, 0.45))


def _body_pose() -> Codes:
    body = Codes().body.copy()
    index = {n: i for i, n in enumerate(BODY_BONES)}
    z = np.eye(3)[2]
    body[index["upperarm01.L"]] = quat_from_axis_angle(z, 0.9)    # left arm up sideways
    body[index["upperarm01.R"]] = quat_from_axis_angle(-z, 0.5)
    body[index["lowerarm01.R"]] = quat_from_axis_angle(-z, 1.0)   # right elbow bent, in view
    body[index["upperleg01.R"]] = quat_from_axis_angle(-z, 0.35)  # right leg out sideways
    body[index["lowerleg01.L"]] = quat_from_axis_angle(z, 0.5)    # left shin out sideways
    return Codes(body=body)


@pytest.mark.slow
def test_closed_loop_body(photo_tracker):
    truth = _body_pose()
    image = _render(truth, [0.0, 0.95, 2.8], [0.0, 0.9, 0.0], (640, 480), 40.0)
    codes = _track(photo_tracker, image)
    assert codes.is_valid("body")
    h, p = _heads(photo_tracker.template, truth), _heads(photo_tracker.template, codes)
    errors = {}
    for s in "LR":
        for a, b in (("upperarm01", "lowerarm01"), ("lowerarm01", "wrist"),
                     ("upperleg01", "lowerleg01"), ("lowerleg01", "foot")):
            errors[f"{a}.{s}"] = angle_deg(h[f"{b}.{s}"] - h[f"{a}.{s}"],
                                           p[f"{b}.{s}"] - p[f"{a}.{s}"])
    print("closed-loop limb direction errors (deg):", {k: round(v, 1) for k, v in errors.items()})
    assert np.median(list(errors.values())) < 12.0, errors
    assert max(errors.values()) < 30.0, errors


FACE_VIEW = ([0.0, 1.48, 0.6], [0.0, 1.48, 0.0], (512, 512), 28.0)


@pytest.mark.slow
def test_closed_loop_face_jaw(photo_tracker):
    from avatar.codes import BLENDSHAPE_INDEX as B

    neutral = _track(photo_tracker, _render(Codes(), *FACE_VIEW))
    face = Codes().face.copy()
    face[B["jawOpen"]] = 0.7
    expressive = _track(photo_tracker, _render(Codes(face=face), *FACE_VIEW))
    assert neutral.is_valid("face") and expressive.is_valid("face")
    print("neutral: largest weight", neutral.face.max(), "; jawOpen 0.7 ->",
          expressive.blendshape("jawOpen"))
    # The neutral reference was taken on a reference-renderer image before the lash lines;
    # this render may come from the GL backend: measured largest spurious weight 0.31
    # (2026-11-24), 0.13 since the solver's sparsity (the same day: every shape but jawOpen,
    # the smiles and the blinks must explain 1-2 mm before it moves).
    assert neutral.face.max() < 0.25
    # Measured 0.55 for 0.7 (2026-11-24, converged fit): the basis at the landmarks is
    # shared with mouthClose and mouthLowerDown, which take part of the opening.
    assert abs(expressive.blendshape("jawOpen") - 0.7) < 0.2
    assert neutral.blendshape("jawOpen") < 0.15


@pytest.mark.slow
def test_closed_loop_face_blink(photo_tracker):
    """Both eyes shut, then each eye alone (a wink: the sides must not swap)."""
    from avatar.codes import BLENDSHAPE_INDEX as B

    def blinks(names):
        face = Codes().face.copy()
        for name in names:
            face[B[name]] = 1.0
        codes = _track(photo_tracker, _render(Codes(face=face), *FACE_VIEW))
        return codes.blendshape("eyeBlinkLeft"), codes.blendshape("eyeBlinkRight")

    both, left, right = (blinks(["eyeBlinkLeft", "eyeBlinkRight"]), blinks(["eyeBlinkLeft"]),
                         blinks(["eyeBlinkRight"]))
    print("blinks (L, R): both", both, "left wink", left, "right wink", right)
    # Measured 2026-11-24 (GL render): both (0.99, 0.85), left wink (1.00, 0.00), right
    # wink (0.00, 0.68); the open neutral reads under 0.15 (test above, via its max).
    assert min(both) > 0.6, both
    assert left[0] > 0.6 and left[1] < 0.3, left
    assert right[1] > 0.6 and right[0] < 0.3, right


# -- closed loop, hands: arms out, forearms up, palms to the camera; known finger poses -----

def _palms_forward_body(template) -> np.ndarray:
    """BODY_BONES local quaternions: upper arms out sideways, forearms up, palms toward +Z
    (the camera), built from world directions with the rig's conventions."""
    from app.poses import PALM_NORMAL_L, mirror
    from tracking.kinematics import align, local_quaternions, unit

    names = template.bone_names
    parents = {n: (names[p] if p >= 0 else None) for n, p in zip(names, template.bone_parents)}
    head = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
    world = {}
    for s, sign in (("L", 1.0), ("R", -1.0)):
        rest_upper = head[f"lowerarm01.{s}"] - head[f"upperarm01.{s}"]
        rest_fore = head[f"wrist.{s}"] - head[f"lowerarm01.{s}"]
        rest_hand = head[f"finger3-1.{s}"] - head[f"wrist.{s}"]
        palm = PALM_NORMAL_L if s == "L" else mirror(PALM_NORMAL_L)
        front = rest_fore - (rest_fore @ unit(rest_upper)) * unit(rest_upper)
        upper, fore = unit(np.array([sign, -0.25, 0.35])), unit(np.array([-sign * 0.1, 1.0, 0.15]))
        world[f"upperarm01.{s}"] = align(rest_upper, front, upper, fore - (fore @ upper) * upper)
        world[f"lowerarm01.{s}"] = align(rest_fore, palm, fore, np.array([0.0, 0.0, 1.0]))
        world[f"wrist.{s}"] = align(rest_hand, palm, fore, np.array([0.0, 0.0, 1.0]))
    full = {}
    for n in names:
        full[n] = world.get(n, np.eye(3) if parents[n] is None else full[parents[n]])
    return local_quaternions(BODY_BONES, parents, full)


# A fist's thumb lies across the middle bones of the index and middle fingers: its three
# bones' directions in the resting hand's frame (toward the middle knuckle, across toward
# the index, out of the palm).
THUMB_ACROSS = ((0.5, 0.4, 0.7), (0.7, -0.3, 0.6), (0.3, -1.0, 0.2))


def _thumb_across(template, q: np.ndarray, side: int) -> np.ndarray:
    """``q`` (19, 4) with the thumb's local rotations turned to THUMB_ACROSS."""
    from avatar.codes import HAND_BONES
    from tracking.kinematics import local_quaternions, swing, unit

    s = "LR"[side]
    rig = Rig(template)
    hands = Codes().hands.copy()
    hands[side] = q
    rotations = rig.pose_codes(Codes(hands=hands)).rotations.astype(np.float64)
    world = dict(zip(rig.bone_names, rotations))
    names = template.bone_names
    parents = {n: (names[p] if p >= 0 else None) for n, p in zip(names, template.bone_parents)}
    head = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
    along = unit(head[f"finger3-1.{s}"] - head[f"wrist.{s}"])
    palm = unit(np.cross(along, head[f"finger2-1.{s}"] - head[f"finger5-1.{s}"]))
    palm = palm if side == 0 else -palm  # out of the palm on either hand
    across = np.cross(palm, along) * (1.0 if side == 0 else -1.0)  # toward the index
    for j, (a, c, n) in zip((1, 2, 3), THUMB_ACROSS):
        name = f"finger1-{j}.{s}"
        tail = head[f"finger1-{j + 1}.{s}"] if j < 3 else 2 * head[name] - head[f"finger1-2.{s}"]
        rest = tail - head[name]
        parent = world[parents[name]]
        world[name] = swing(parent @ unit(rest), unit(a * along + c * across + n * palm)) @ parent
    out = q.copy()
    thumb = [i for i, n in enumerate(HAND_BONES[side]) if n.startswith("finger1-")]
    out[thumb] = local_quaternions(HAND_BONES[side], parents, world)[thumb]
    return out


def _finger_pose(kind: str, side: int, template) -> np.ndarray:
    """(19, 4) HAND_BONES local quaternions: "rest", "spread", "fist" or "point" (a fist
    with the index straight).

    The fist curls the knuckles 86 degrees, the middle joints 57 and the last 46 (about
    app/poses.py's curl axis), so the fingertips come to rest on the palm, and lays the
    thumb across the fingers. app/poses.py's fist (curls 1.45, 1.6, 1.1 rad, the thumb bent
    toward the palm) puts this template's fingertip centres 1.4-4.5 cm behind its palm's
    surface (the palm stands about 2 cm in front of the knuckles) and its thumb down over
    the wrist: the fingers vanish into the palm and the render shows a claw."""
    from app.poses import PALM_NORMAL_L, curl_axis, mirror
    from avatar.codes import HAND_BONES
    from common.rotation import quat_multiply

    q = np.tile([1.0, 0.0, 0.0, 0.0], (19, 1))
    index = {n[:-2]: i for i, n in enumerate(HAND_BONES[side])}
    palm = PALM_NORMAL_L if side == 0 else mirror(PALM_NORMAL_L)

    def turn(bone, axis, angle):
        q[index[bone]] = quat_multiply(quat_from_axis_angle(axis / np.linalg.norm(axis), angle),
                                       q[index[bone]])

    if kind in ("fist", "point"):
        for finger in range(3 if kind == "point" else 2, 6):
            for joint, angle in ((1, 1.5), (2, 1.0), (3, 0.8)):
                turn(f"finger{finger}-{joint}", curl_axis(side), angle)
        return _thumb_across(template, q, side).astype(np.float32)
    if kind == "spread":
        sign = 1.0 if side == 0 else -1.0
        for finger, angle in ((2, -0.25), (3, -0.05), (4, 0.12), (5, 0.3)):
            turn(f"finger{finger}-1", palm, sign * angle)
        turn("finger1-1", palm, -sign * 0.35)
    return q.astype(np.float32)


def _finger_errors_deg(template, truth_hands, solved_hands) -> list[np.ndarray]:
    """Per hand, the angle between each finger bone's true and solved direction in the
    wrist's frame (metacarpals excluded: they do not move), 15 bones a hand."""
    from avatar.codes import HAND_BONES

    rig = Rig(template)
    names = rig.bone_names
    out = []
    directions = []
    for hands in (truth_hands, solved_hands):
        skeleton = rig.pose_codes(Codes(hands=hands))  # rest body: world = wrist frame
        rotations = dict(zip(names, skeleton.rotations))
        dirs = {}
        for bone in HAND_BONES[0] + HAND_BONES[1]:
            if bone.startswith("metacarpal"):
                continue
            i = names.index(bone)
            children = [k for k, p in enumerate(template.bone_parents) if p == i]
            end = children[0] if children else i
            start = i if children else template.bone_parents[i]
            dirs[bone] = rotations[bone] @ (template.bone_heads[end] - template.bone_heads[start])
        directions.append(dirs)
    for side in range(2):
        out.append(np.array([angle_deg(directions[0][b], directions[1][b])
                             for b in HAND_BONES[side] if b in directions[0]]))
    return out


HANDS_VIEW = ([0.0, 1.65, 1.3], [0.0, 1.65, 0.0], (640, 480), 45.0)


def _track_hands(photo_tracker, left: str, right: str, view=HANDS_VIEW):
    template = photo_tracker.template
    truth = np.stack([_finger_pose(left, 0, template), _finger_pose(right, 1, template)])
    codes = _track(photo_tracker, _render(
        Codes(body=_palms_forward_body(photo_tracker.template), hands=truth), *view))
    assert codes.is_valid("left_hand") and codes.is_valid("right_hand")
    return _finger_errors_deg(photo_tracker.template, truth, codes.hands)


@pytest.mark.slow
def test_closed_loop_open_hands(photo_tracker):
    """Spread fingers on one hand, a flat hand on the other, then the other way round.

    Both hands found, open hands read as open (a curl misread gives 40+ degrees). Spreads
    are only partly resolved: the spread hand reads 14-15 degrees off, the rest pose is 14
    from it."""
    for left, right in (("spread", "rest"), ("rest", "spread")):
        errors = _track_hands(photo_tracker, left, right)
        print(f"finger bones, median error (deg): left {left} {np.median(errors[0]):.1f}, "
              f"right {right} {np.median(errors[1]):.1f}")
        # Measured 2026-11-24 (GL render, holistic): medians 12-15 degrees (14-18 before the
        # solver's joint limits and rest bend).
        for e in errors:
            assert np.median(e) < 18.0, e
            assert np.percentile(e, 90) < 40.0, e


@pytest.mark.slow
def test_closed_loop_fist_and_point(photo_tracker):
    """A fist on one hand and a pointing hand on the other, then the other way round."""
    for left, right in (("fist", "point"), ("point", "fist")):
        errors = _track_hands(photo_tracker, left, right)
        # Measured 2026-11-24 (GL render, holistic): medians fists 24.4 and 21.4, points 21.0
        # and 19.0 degrees; 90th percentiles 25-41 (the thumbs and the fists' knuckles).
        _assert_finger_errors("front", (left, right), errors, median_below=28.0, p90_below=45.0)


@pytest.mark.slow
@pytest.mark.parametrize("eye", [[0.35, 1.85, 1.2], [-0.35, 1.85, 1.2], [0.0, 1.4, 1.2]],
                         ids=["above-right", "above-left", "below"])
def test_closed_loop_fist_and_point_other_views(photo_tracker, eye):
    """The same hands seen from above on either side and from below (the look and the
    solver were tuned on the front view only)."""
    view = (eye, [0.0, 1.6, 0.0], (640, 480), 45.0)
    for left, right in (("fist", "point"), ("point", "fist")):
        errors = _track_hands(photo_tracker, left, right, view)
        # Measured 2026-11-24 (GL render, holistic): medians 14-32 degrees (fists 16-32,
        # points 14-31), 90th percentiles 22-49.
        _assert_finger_errors(str(eye), (left, right), errors, median_below=40.0, p90_below=55.0)


def _assert_finger_errors(view: str, kinds, errors, median_below: float, p90_below: float):
    """Print each hand's median (90th percentile) finger-bone error and hold it to limits."""
    print(f"{view}: finger bones, median (90th percentile) error (deg): " + ", ".join(
        f"{side} {kind} {np.median(e):.1f} ({np.percentile(e, 90):.1f})"
        for side, kind, e in zip(("left", "right"), kinds, errors)))
    for e in errors:
        assert np.median(e) < median_below, e
        assert np.percentile(e, 90) < p90_below, e
