"""The pose and hand landmark models run directly through LiteRT (tracking/direct.py)
against mediapipe's own graphs on real media: the crops are mediapipe's, the points are
mediapipe's to within float rounding, and the split backend following a person agrees with
the pose graph and holistic's crops it replaces."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.media import media_path
from tracking import direct
from tracking.landmarks import LandmarkDetector, _graph, _hand_follows, _Pose, _xyz
from tracking.sources import VideoSource, load_image

# mediapipe's own hand crop from previous landmarks and the hand model on it (holistic's
# HandLandmarksToRoi and HandLandmarkCpu subgraphs): the reference for HandModel.
_HAND_REFERENCE = """
input_stream: "IMAGE:image"
input_stream: "PREVIOUS:previous"
output_stream: "ROI:roi"
output_stream: "LANDMARKS:hand_landmarks"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image"
       output_stream: "SIZE:image_size" }
node { calculator: "HandLandmarksToRoi" input_stream: "LANDMARKS:previous"
       input_stream: "IMAGE_SIZE:image_size" output_stream: "ROI:roi" }
node { calculator: "HandLandmarkCpu" input_stream: "IMAGE:image" input_stream: "ROI:roi"
       output_stream: "LANDMARKS:hand_landmarks" }
"""


def _proto(points):
    from mediapipe.framework.formats import landmark_pb2

    return landmark_pb2.NormalizedLandmarkList(landmark=[
        landmark_pb2.NormalizedLandmark(x=x, y=y, z=z) for x, y, z in points.tolist()])


def _roi(rect) -> direct.Roi:
    return direct.Roi(rect.x_center, rect.y_center, rect.width, rect.height, rect.rotation)


def _px(a, b, width, height):
    return np.linalg.norm((a[:, :2] - b[:, :2]) * (width, height), axis=1)


@pytest.fixture(scope="module")
def clip():
    source = VideoSource(media_path("jwpIntro.mp4"))
    return [frame.image for frame, _ in zip(source, range(20))]


def test_hand_crop_and_points_are_mediapipes():
    """messi5.jpg's two hands (holistic's points as the previous frame's): the crop is
    holistic's to 1e-5 and the LiteRT hand model's points on it are HandLandmarkCpu's to
    within 0.05 px."""
    image = load_image(media_path("messi5.jpg"))
    height, width = image.shape[:2]
    with LandmarkDetector(static_image_mode=True) as photos:
        found = photos.detect(image)
    reference = _graph(_HAND_REFERENCE)
    model = direct.HandModel()
    try:
        for side in range(2):
            previous = found.hands[side] / np.float32([width, height, width])
            theirs = reference.process({"image": image, "previous": _proto(previous)})
            ours_roi = direct.hand_roi(previous, width, height)
            want = _roi(theirs.roi)
            got = np.array([ours_roi.x, ours_roi.y, ours_roi.width, ours_roi.height,
                            ours_roi.rotation])
            assert np.allclose(got, [want.x, want.y, want.width, want.height, want.rotation],
                               atol=1e-5), (side, got, want)
            ours = model.run(image, ours_roi)
            assert ours is not None
            gap = _px(ours, _xyz(theirs.hand_landmarks), width, height)
            assert gap.max() < 0.05, (side, gap.max())
    finally:
        reference.close()


def test_pose_points_and_smoothing_are_the_pose_graphs(clip):
    """jwpIntro.mp4, 20 frames: given the crop mediapipe's pose graph used, the LiteRT pose
    model with PoseLandmarkFiltering's smoothing in numpy gives the graph's points (under
    0.1 px) and world points (under 1 mm), and the next crop it picks stays the graph's (the
    anchors' filter starts from the graph's crop: centre within 0.002, size within 2 %)."""
    from tracking.landmarks import _pose_graph

    graph = _pose_graph(0.5)
    model = direct.PoseModel()
    height, width = clip[0].shape[:2]
    roi = None
    try:
        for image in clip:
            theirs = graph.process(image)
            assert theirs.pose_landmarks is not None
            points = _xyz(theirs.pose_landmarks)
            if roi is None:  # the first frame: the graph's detector finds him
                visibility = np.array([p.visibility for p in theirs.pose_landmarks.landmark])
                model.seed(points, visibility, _xyz(theirs.pose_world_landmarks),
                           _roi(theirs.pose_rect_from_landmarks), width, height)
            else:
                ours = model.run(image, roi)
                assert ours is not None
                assert np.median(_px(ours.points, points, width, height)) < 0.1
                world_gap = np.linalg.norm(ours.world - _xyz(theirs.pose_world_landmarks), axis=1)
                assert world_gap.max() < 1e-3
                want = _roi(theirs.pose_rect_from_landmarks)
                assert abs(ours.next_roi.x - want.x) < 2e-3 and abs(ours.next_roi.y - want.y) < 2e-3
                assert abs(ours.next_roi.width / want.width - 1) < 0.02
            roi = _roi(theirs.pose_rect_from_landmarks)
    finally:
        graph.close()


def test_following_agrees_with_the_graphs_it_replaces(clip):
    """The split backend following the talker (the default) against the same backend on
    mediapipe's pose graph with holistic's crops on every frame: the same face points (the
    face graph follows its own points in both), the pose within a few pixels (the crops
    differ by the anchors' filter history: 0.5 px median and 1.3 max over these 20 frames,
    2.7 and 5.9 over 150 when measured)."""
    with LandmarkDetector() as following, LandmarkDetector(follow_landmarks=False) as graphs:
        pairs = [(following.detect(image), graphs.detect(image)) for image in clip]
    pose_gaps, face_gaps = [], []
    for ours, theirs in pairs:
        assert ours.pose is not None and ours.face is not None
        pose_gaps.append(float(np.median(np.linalg.norm(ours.pose[:, :2] - theirs.pose[:, :2],
                                                        axis=1))))
        face_gaps.append(float(np.median(np.linalg.norm(ours.face[:, :2] - theirs.face[:, :2],
                                                        axis=1))))
        assert np.abs(ours.pose_world - theirs.pose_world).max() < 0.05
    print("pose px: median", np.median(pose_gaps), "max", max(pose_gaps),
          "face px max", max(face_gaps))
    assert np.median(pose_gaps) < 4.0 and max(pose_gaps) < 10.0
    assert max(face_gaps) < 1.0


def test_a_hand_is_followed_only_near_its_own_wrist():
    """The pose's wrist must lie within a palm length of the followed hand's wrist: a hand
    that slid onto the other hand, or jumped, is found again from the pose."""
    hand = np.zeros((21, 3), np.float32)
    hand[0, :2] = (0.50, 0.50)  # wrist
    hand[9, :2] = (0.50, 0.40)  # middle knuckle: a palm of 48 px on a 640x480 frame
    pose = _Pose(np.full((33, 3), 0.5, np.float32), np.ones(33, np.float32),
                 np.zeros((33, 3), np.float32))
    assert _hand_follows(hand, pose, 0, 640, 480)
    pose.points[15, :2] = (0.50, 0.58)  # 38 px away
    assert _hand_follows(hand, pose, 0, 640, 480)
    pose.points[15, :2] = (0.50, 0.62)  # 58 px away: more than a palm
    assert not _hand_follows(hand, pose, 0, 640, 480)
    assert _hand_follows(hand, pose, 1, 640, 480)  # the right wrist (16) is still on it
    assert not _hand_follows(None, pose, 1, 640, 480)


def test_pose_model_gives_up_on_a_picture_without_a_person():
    """skimage's coffee cup, cropped where a person stood: presence below the threshold,
    so the split backend goes back to mediapipe's detector."""
    skimage_data = pytest.importorskip("skimage.data")
    model = direct.PoseModel()
    assert model.run(skimage_data.coffee(), direct.Roi(0.5, 0.5, 1.0, 1.5, 0.0)) is None


def test_missing_litert_and_models_give_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="ai-edge-litert is missing"):
        direct.Model(direct.POSE_MODEL)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="reinstall mediapipe"):
        direct.Model("pose_landmark/pose_landmark_huge.tflite")


def _refine_one_by_one(points, heatmap, kernel=7, min_confidence=0.5):
    """RefineLandmarksFromHeatmapCalculator written point by point, as its loop reads."""
    rows, cols, _ = heatmap.shape
    out = points.copy()
    half = (kernel - 1) // 2
    for i in range(points.shape[0]):
        col, row = int(points[i, 0] * cols), int(points[i, 1] * rows)
        if not (0 <= col < cols and 0 <= row < rows):
            continue
        total = weighted_col = weighted_row = best = 0.0
        for r in range(max(0, row - half), min(rows, row + half + 1)):
            for c in range(max(0, col - half), min(cols, col + half + 1)):
                confidence = 1.0 / (1.0 + np.exp(-float(heatmap[r, c, i])))
                total += confidence
                best = max(best, confidence)
                weighted_col += c * confidence
                weighted_row += r * confidence
        if best >= min_confidence and total > 0:
            out[i, 0], out[i, 1] = weighted_col / cols / total, weighted_row / rows / total
    return out


def test_heatmap_refinement_matches_the_calculators_loop():
    """The vectorised refinement against the calculator's loop, with points near and past
    the heatmap's edges (kernels cut there) and channels too weak to refine."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        heatmap = rng.normal(0.0, 3.0, (64, 64, 39)).astype(np.float32)
        points = rng.uniform(-0.2, 1.2, (39, 3))
        assert np.allclose(direct.refine_from_heatmap(points, heatmap),
                           _refine_one_by_one(points, heatmap), atol=1e-12)
