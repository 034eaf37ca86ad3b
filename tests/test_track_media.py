"""The whole tracker (mediapipe 0.10.21 + solvers) on real photographs, a real video and
renders of the default avatar with known codes (closed loop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.codes import BODY_BONES, PARTS, Codes, read_jsonl
from avatar.rig import Rig
from avatar.rotation import quat_from_axis_angle
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
        return angle_deg(h[f"lowerleg01.{s}"] - h[f"upperleg01.{s}"], h[f"foot.{s}"] - h[f"lowerleg01.{s}"])

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
    x, z = np.eye(3)[0], np.eye(3)[2]
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
            errors[f"{a}.{s}"] = angle_deg(h[f"{b}.{s}"] - h[f"{a}.{s}"], p[f"{b}.{s}"] - p[f"{a}.{s}"])
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
    # The neutral reference was taken on a reference-renderer image; this render may come
    # from the GL backend: measured largest spurious weight 0.31 (2026-11-24).
    assert neutral.face.max() < 0.35
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
