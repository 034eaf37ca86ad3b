"""The split landmark backend (mediapipe's pose graph, with holistic's own face and hand
crops taken from the previous frame's pose in a second thread) on real media: hands found
when in view and named by the body's sides, the hand graph skipped when the pose sees no
hand, landmarks as holistic gives them. Speed itself is measured in bench/bench_track.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.media import media_path
from tracking.landmarks import LEFT_WRIST, RIGHT_WRIST, LandmarkDetector
from tracking.sources import VideoSource, load_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def messi():
    return load_image(media_path("messi5.jpg"))


def _as_video(detector, image, frames=3):
    """The same picture as a few video frames: the crops of the last come from the pose
    of the one before."""
    for _ in range(frames):
        landmarks = detector.detect(image)
    return landmarks


def _hand_size(points):
    return float(np.linalg.norm(points[9, :2] - points[0, :2]))


def _median_px(a, b):
    return float(np.median(np.linalg.norm(a[:, :2] - b[:, :2], axis=1)))


def test_split_finds_both_hands_by_the_bodys_sides(messi):
    """messi5.jpg at full-body framing (where the separate face mesh and palm detector find
    nothing): face, pose and both hands, each hand at its own side's wrist."""
    with LandmarkDetector(backend="split") as detector:
        landmarks = _as_video(detector, messi)
        assert {"pose", "face", "hands"} <= set(detector.timings_ms)
        mirrored = _as_video(detector, messi[:, ::-1].copy())
    for lm in (landmarks, mirrored):
        assert lm.face is not None and lm.pose is not None
        assert lm.hands[0] is not None and lm.hands[1] is not None
        for side, wrist in ((0, LEFT_WRIST), (1, RIGHT_WRIST)):
            gap = np.linalg.norm(lm.hands[side][0, :2] - lm.pose[wrist, :2])
            assert gap < _hand_size(lm.hands[side]), (side, gap)
    # He faces the camera: his left hand is on the image's right. Mirrored, the picture
    # shows someone whose left hand is the one that was his right: still on the right.
    assert landmarks.hands[0][0, 0] > landmarks.hands[1][0, 0]
    assert mirrored.hands[0][0, 0] > mirrored.hands[1][0, 0]
    width = messi.shape[1]
    for side in range(2):
        moved = abs((width - mirrored.hands[1 - side][0, 0]) - landmarks.hands[side][0, 0])
        assert moved < _hand_size(landmarks.hands[side])


def test_split_gives_holistics_landmarks(messi):
    """The split graphs are holistic's own stages: on the same picture the face and hands
    agree with the holistic graph's to within a few pixels (measured 2026-11-24: under
    1.3 px)."""
    with LandmarkDetector(backend="split") as detector:
        split = _as_video(detector, messi)
    with LandmarkDetector(backend="holistic") as detector:
        holistic = _as_video(detector, messi)
    assert _median_px(split.face, holistic.face) < 2.0
    for side in range(2):
        assert _median_px(split.hands[side], holistic.hands[side]) < 3.0, side
    assert _median_px(split.pose, holistic.pose) < 3.0


def test_split_skips_the_hand_graph_without_hands_in_view():
    """jwpIntro.mp4: head and shoulders, hands below the frame. The hand graph never runs,
    the face is found on every frame."""
    source = VideoSource(media_path("jwpIntro.mp4"))
    ran, faces, hands = [], 0, 0
    with LandmarkDetector() as detector:
        assert detector.backend == "split"
        for frame, _ in zip(source, range(30)):
            lm = detector.detect(frame.image)
            ran.append("hands" in detector.timings_ms)
            faces += lm.face is not None
            hands += (lm.hands[0] is not None) + (lm.hands[1] is not None)
    assert faces == 30 and hands == 0 and not any(ran)


def test_no_person_after_a_person_gives_nothing(messi):
    """The crops of a frame come from the previous frame's pose: when the person is gone,
    what those crops found is dropped with the lost pose (as holistic gives nothing)."""
    skimage_data = pytest.importorskip("skimage.data")
    coffee = skimage_data.coffee()
    with LandmarkDetector(backend="split") as detector:
        _as_video(detector, messi)
        gone = detector.detect(coffee)
        after = detector.detect(coffee)
    for lm in (gone, after):
        assert lm.pose is None and lm.face is None and lm.hands == [None, None]


@pytest.mark.slow
def test_split_tracks_moving_hands_on_rendered_video():
    """The benchmark's clip (the default avatar waving both arms, fingers curling), 15
    frames at 30 fps rendered on the GL backend: both hands on every frame, by side, and
    cropping from the previous frame's pose lands on the same points as cropping after
    this frame's pose."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_track import hands_codes

    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.camera import Camera
    from render.video import to_uint8

    avatar = load_avatar("default")
    camera = Camera.look_at([0.0, 1.55, 1.6], [0.0, 1.5, 0.0], 640, 480, vertical_fov_deg=45.0)
    backend = get_backend("auto")
    try:
        frames = [to_uint8(backend.render_skinned(avatar.skinned,
                                                  avatar.skin_pose(hands_codes(i / 30.0)), camera),
                           (0.45, 0.45, 0.45)) for i in range(15)]
    finally:
        backend.release()
    with LandmarkDetector(backend="split") as ahead, \
            LandmarkDetector(backend="split", crop_from_previous_pose=False) as after:
        pairs = [(ahead.detect(f), after.detect(f)) for f in frames]
    gaps = []
    for lm, reference in pairs:
        assert lm.hands[0] is not None and lm.hands[1] is not None
        # The avatar faces the camera: its left hand is on the image's right.
        assert lm.hands[0][0, 0] > lm.hands[1][0, 0]
        gaps += [_median_px(lm.hands[s], reference.hands[s]) for s in range(2)
                 if reference.hands[s] is not None]
    print("previous-pose crops vs this pose's crops, hand points (px): median",
          np.median(gaps), "max", np.max(gaps))
    assert np.median(gaps) < 3.0 and np.max(gaps) < 10.0


def test_bad_backend_choices_are_refused():
    with pytest.raises(ValueError, match="unknown landmark backend"):
        LandmarkDetector(backend="threads")
    with pytest.raises(ValueError, match="use holistic for photographs"):
        LandmarkDetector(backend="split", static_image_mode=True)
    detector = LandmarkDetector(parts=("pose",))
    detector.close()
    with pytest.raises(ValueError, match="closed"):
        detector.detect(np.zeros((48, 64, 3), np.uint8))
    with LandmarkDetector(static_image_mode=True) as photos:
        assert photos.backend == "holistic"
    with pytest.raises(ValueError, match="unknown hand model 'tiny'"):
        LandmarkDetector(hand_model="tiny")
    with pytest.raises(ValueError, match="full hand model only"):
        LandmarkDetector(backend="holistic", hand_model="lite")


def test_the_hands_graph_rebuilt_with_either_hand_model(messi):
    """The split backend's hands graph is holistic's hand stage rebuilt node for node with
    the model as a side packet: the full model gives holistic's own hand stage's points
    exactly, the lite model (the faster, not the default: fists read 50-77 degrees off in
    the closed loop) finds the same hands within a few pixels."""
    from tracking.landmarks import _graph

    stock = _graph("""
input_stream: "IMAGE:image"
input_stream: "POSE_LANDMARKS:pose_landmarks"
output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks"
output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks"
node {
  calculator: "HandLandmarksLeftAndRightCpu"
  input_stream: "IMAGE:image"
  input_stream: "POSE_LANDMARKS:pose_landmarks"
  output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks"
  output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks"
}
""")
    with LandmarkDetector(backend="split") as full, \
            LandmarkDetector(backend="split", hand_model="lite") as lite:
        assert full.hand_model == "full"
        for _ in range(3):
            pose = full._graphs["pose"].process(messi).pose_landmarks
            found = stock.process({"image": messi, "pose_landmarks": pose})
            ours = full._graphs["hands"].process({"image": messi, "pose_landmarks": pose})
        lm_lite = _as_video(lite, messi)
    stock.close()
    for name in ("left_hand_landmarks", "right_hand_landmarks"):
        a, b = getattr(found, name), getattr(ours, name)
        assert a is not None and b is not None
        assert [(p.x, p.y, p.z) for p in a.landmark] == [(p.x, p.y, p.z) for p in b.landmark]
    with LandmarkDetector(backend="split") as full:
        lm_full = _as_video(full, messi)
    for side in (0, 1):
        gap = _median_px(lm_lite.hands[side], lm_full.hands[side])
        print(f"hand {side}: lite vs full model, median {gap:.2f} px")
        assert gap < 0.25 * _hand_size(lm_full.hands[side]), gap


def test_track_command_refuses_split_for_an_image(tmp_path):
    run = subprocess.run([sys.executable, "main.py", "track", str(media_path("messi5.jpg")),
                          "--out", str(tmp_path / "c.jsonl"), "--landmarks", "split"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1
    assert "error: --landmarks split tracks between video frames" in run.stderr
    assert "Traceback" not in run.stderr


def test_hands_solved_beside_the_pose_give_the_same_codes(messi):
    """Tracker.process solves the hands in the detector's crop thread while the pose graph
    runs; the codes are those of solving the same landmarks afterwards."""
    from tracking.sources import Frame
    from tracking.tracker import Tracker

    with Tracker(smoothing=False) as tracker:
        for i in range(3):
            result = tracker.process(Frame(messi, i / 30.0, i))
        assert set(tracker.timings_ms) == {"landmarks", "solvers"}
        again = tracker.solve(result.landmarks, result.codes.t)
    assert result.codes.is_valid("left_hand") and result.codes.is_valid("right_hand")
    np.testing.assert_array_equal(result.codes.hands, again.hands)
    np.testing.assert_array_equal(result.codes.body, again.body)


def test_face_solved_beside_the_graphs_gives_the_same_codes():
    """Tracker.process fits the face as soon as the detector has it (on a talking head in
    the crop thread, beside the pose graph); the face codes are those of fitting the same
    landmarks afterwards, frame by frame (the fit and its calibration keep state)."""
    from tracking.sources import Frame
    from tracking.tracker import Tracker

    frames = [f for f, _ in zip(VideoSource(media_path("jwpIntro.mp4")), range(8))]
    with Tracker(smoothing=False) as early, Tracker(smoothing=False) as late:
        for i, frame in enumerate(frames):
            result = early.process(Frame(frame.image, i / 30.0, i))
            again = late.solve(result.landmarks, result.codes.t)
            assert result.codes.is_valid("face") == again.is_valid("face")
            np.testing.assert_array_equal(result.codes.face, again.face)
            np.testing.assert_array_equal(result.codes.gaze, again.gaze)
    assert result.codes.is_valid("face")
