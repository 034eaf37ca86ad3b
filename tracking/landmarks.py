"""Landmarks: mediapipe 0.10.21's face mesh (478 with iris), pose (33, with world
landmarks) and hands (21 each) on one RGB frame.

Two backends, both built from mediapipe's holistic pipeline (face and hands are cropped
from the pose, so they are found at full-body framing and hands are named by the body's
sides):

- ``"split"`` (video): the holistic graph taken apart into its pose graph and its
  face-from-pose and hands-from-pose subgraphs. The crops of frame n come from the pose
  of frame n-1 and run in a second thread while the pose graph runs on frame n (mediapipe
  releases the GIL), so a frame costs about max(pose, crops) instead of their sum. The
  hands subgraph runs only while the pose sees a hand in the frame; then the face crop
  moves behind the pose and the second thread also solves the hands (``on_hands``).
  While the person stays in view, the pose and each hand are followed from their own
  previous landmarks by the same models run through LiteRT (tracking/direct.py) and the
  face by its landmark graph alone; the pose graph and holistic's hand and face stages
  then run only to find a part anew (``follow_landmarks``).
  Video only: the crops track from frame to frame.
- ``"holistic"`` (photographs, and the reference): mediapipe's one holistic graph, the
  parts in sequence.

See docs/tracking.md and bench/bench_track.py for the measurements behind this.

Coordinates: image landmarks are in pixels, (x right, y down, z toward the scene, z in the
same pixel scale as x as mediapipe defines it). World landmarks are mediapipe's metric
coordinates (x right, y down, z away from the camera) about the hips (pose); hand "world"
points are a metric-free stand-in from the image points (the holistic pipeline has none).
Hands are stored by the person's own side: index 0 is the left hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tracking.direct import HandModel, PoseModel, Roi, hand_roi

FACE_POINTS = 478
POSE_POINTS = 33
HAND_POINTS = 21

# Pose landmark indices (anatomical sides: LEFT is the person's left).
NOSE, LEFT_EAR, RIGHT_EAR = 0, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW = 11, 12, 13, 14
LEFT_WRIST, RIGHT_WRIST, LEFT_PINKY, RIGHT_PINKY = 15, 16, 17, 18
LEFT_INDEX, RIGHT_INDEX, LEFT_THUMB, RIGHT_THUMB = 19, 20, 21, 22
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE = 23, 24, 25, 26
LEFT_ANKLE, RIGHT_ANKLE, LEFT_HEEL, RIGHT_HEEL = 27, 28, 29, 30
LEFT_FOOT_INDEX, RIGHT_FOOT_INDEX = 31, 32


@dataclass(eq=False)
class Landmarks:
    """Everything mediapipe found on one frame; a missing part is None.

    face (478, 3) px; pose (33, 3) px with pose_visibility (33,) in [0, 1] and
    pose_world (33, 3) m; hands[side] (21, 3) px and hands_world[side] (21, 3) m with
    hand_scores[side], side 0 = the person's left hand, 1 = right.
    """

    width: int
    height: int
    face: np.ndarray | None = None
    pose: np.ndarray | None = None
    pose_visibility: np.ndarray | None = None
    pose_world: np.ndarray | None = None
    hands: list = field(default_factory=lambda: [None, None])
    hands_world: list = field(default_factory=lambda: [None, None])
    hand_scores: list = field(default_factory=lambda: [0.0, 0.0])


def _xyz(landmark_list) -> np.ndarray:
    """A landmark list's (x, y, z) as they are (normalized image or world coordinates)."""
    return np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], dtype=np.float32)


def _points(landmark_list, width: int, height: int) -> np.ndarray:
    """A normalized landmark list in pixels (z in the scale of x)."""
    return _xyz(landmark_list) * np.array([width, height, width], np.float32)


# The holistic pipeline's own face and hand stages, fed with the pose graph's landmarks.
# FaceLandmarksFromPoseCpu takes pose points 0-10 (the face); HandLandmarksLeftAndRightCpu
# the whole pose and crops each hand from its wrist, index and pinky points.
_FACE_FROM_POSE = """
input_stream: "IMAGE:image"
input_stream: "FACE_LANDMARKS_FROM_POSE:face_from_pose"
input_side_packet: "REFINE_LANDMARKS:refine"
output_stream: "FACE_LANDMARKS:face_landmarks"
node {
  calculator: "FaceLandmarksFromPoseCpu"
  input_stream: "IMAGE:image"
  input_stream: "FACE_LANDMARKS_FROM_POSE:face_from_pose"
  input_side_packet: "REFINE_LANDMARKS:refine"
  output_stream: "FACE_LANDMARKS:face_landmarks"
}
"""
def _hand_from_pose(side: str, wrist: int) -> str:
    """Holistic's HandLandmarksFromPoseCpu for one side (mediapipe 0.10.21), node for node,
    with the hand landmark model's complexity as a side packet (the subgraph has none and
    always runs the full model): the wrist, pinky and index pose points gate the crop on
    the wrist's visibility and place the re-crop model's search; the crop follows the hand's
    own previous landmarks while they stay in it (HandTracking)."""
    name = f"{side}_hand"
    return f"""
node {{
  calculator: "SplitNormalizedLandmarkListCalculator"
  input_stream: "pose_landmarks"
  output_stream: "{name}_from_pose"
  options {{ [mediapipe.SplitVectorCalculatorOptions.ext] {{
    ranges {{ begin: {wrist} end: {wrist + 1} }}
    ranges {{ begin: {wrist + 2} end: {wrist + 3} }}
    ranges {{ begin: {wrist + 4} end: {wrist + 5} }}
    combine_outputs: true }} }}
}}
node {{
  calculator: "HandVisibilityFromHandLandmarksFromPose"
  input_stream: "HAND_LANDMARKS_FROM_POSE:{name}_from_pose"
  output_stream: "VISIBILITY:{name}_visible"
}}
node {{
  calculator: "GateCalculator"
  input_stream: "{name}_from_pose"
  input_stream: "ALLOW:{name}_visible"
  output_stream: "{name}_visible_from_pose"
}}
node {{
  calculator: "HandLandmarksFromPoseToRecropRoi"
  input_stream: "HAND_LANDMARKS_FROM_POSE:{name}_visible_from_pose"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:{name}_roi_from_pose"
}}
node {{
  calculator: "HandRecropByRoiCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:{name}_roi_from_pose"
  output_stream: "HAND_ROI_FROM_RECROP:{name}_roi_from_recrop"
}}
node {{
  calculator: "HandTracking"
  input_stream: "LANDMARKS:{name}_landmarks"
  input_stream: "HAND_ROI_FROM_RECROP:{name}_roi_from_recrop"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "HAND_TRACKING_ROI:{name}_tracking_roi"
}}
node {{
  calculator: "HandLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:{name}_tracking_roi"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
  output_stream: "LANDMARKS:{name}_landmarks"
}}
"""


# HandLandmarksLeftAndRightCpu, rebuilt from its parts so the hand model can be chosen.
_HANDS_FROM_POSE = """
input_stream: "IMAGE:image"
input_stream: "POSE_LANDMARKS:pose_landmarks"
input_side_packet: "MODEL_COMPLEXITY:model_complexity"
output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks"
output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks"
node {
  calculator: "ImagePropertiesCalculator"
  input_stream: "IMAGE:image"
  output_stream: "SIZE:image_size"
}
""" + _hand_from_pose("left", 15) + _hand_from_pose("right", 16)
# Following the face from its own previous landmarks (split, ``follow_landmarks``):
# holistic's ROI-from-landmarks subgraph fed with the previous frame's points, then the
# landmark model; holistic's tracking ROI without the face detector it runs on every frame
# to check it (the pose checks it here, ``_face_follows``).
_FACE_FOLLOWING = """
input_stream: "IMAGE:image"
input_stream: "PREVIOUS:face_previous"
input_side_packet: "REFINE_LANDMARKS:refine"
output_stream: "FACE_LANDMARKS:face_landmarks"
node {
  calculator: "ImagePropertiesCalculator"
  input_stream: "IMAGE:image"
  output_stream: "SIZE:image_size"
}
node {
  calculator: "FaceLandmarksToRoi"
  input_stream: "LANDMARKS:face_previous"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:face_roi"
}
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:face_roi"
  input_side_packet: "WITH_ATTENTION:refine"
  output_stream: "LANDMARKS:face_landmarks"
}
"""
# A followed hand is given up (and re-acquired from the pose) when its previous wrist is
# further than this many palm lengths (wrist to middle knuckle) from the pose's wrist.
HAND_FOLLOW_GAP = 1.0

# The hand landmark models in the wheel, by HandLandmarkCpu's MODEL_COMPLEXITY.
HAND_MODELS = {"lite": 0, "full": 1}
DEFAULT_HAND_MODEL = "full"  # the split backend's
FACE_POSE_POINTS = 11  # pose landmarks 0-10: nose, eyes, ears, mouth
# A hand is worth cropping when the pose sees its wrist (visibility) with the hand's centre
# (wrist, index and pinky points) inside the frame or within this fraction of it.
HAND_VISIBILITY = 0.5
HAND_MARGIN = 0.05


def _graph(config_text: str, side_inputs: dict | None = None):
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.python.solution_base import SolutionBase

    config = text_format.Parse(config_text, calculator_pb2.CalculatorGraphConfig())
    return SolutionBase(graph_config=config, side_inputs=side_inputs)


class LandmarkDetector:
    """Face, pose and hands on RGB frames: ``detect(image) -> Landmarks``.

    ``parts``: any of "face", "pose", "hands" (the pose always runs: the others are cropped
    from it). ``backend``: "split" or "holistic" (module docstring); None picks "split" for
    video and "holistic" for photographs. ``static_image_mode``: every frame is an unrelated
    photograph (holistic only). ``crop_from_previous_pose`` (split): crop face and hands
    from the previous frame's pose, in parallel with this frame's pose (the default), or
    from this frame's pose after it (about 10 ms more per frame, for comparison).
    ``follow_landmarks`` (split): follow the pose and each hand from their own previous
    landmarks with the models run through LiteRT (tracking/direct.py), and the face with
    mediapipe's face graph, while the pose agrees with them; mediapipe's pose graph and
    holistic's hand re-crop and face detector run only to (re)acquire a part (the default);
    off: mediapipe's pose graph and holistic's crops on every frame, for comparison.
    ``hand_model`` (split): "full" or "lite", the hand landmark model in the hands crop
    (both ship in the wheel; holistic always runs the full one); None: the backend's own.
    ``timings_ms`` holds the last frame's time in each graph that ran (split: "pose",
    "face", "hands"). Not thread-safe: one detector per stream.
    """

    def __init__(self, parts=("face", "pose", "hands"), backend: str | None = None,
                 static_image_mode: bool = False, min_confidence: float = 0.5,
                 crop_from_previous_pose: bool = True, hand_model: str | None = None,
                 follow_landmarks: bool = True):
        import mediapipe as mp

        backend = backend or ("holistic" if static_image_mode else "split")
        if backend not in ("split", "holistic"):
            raise ValueError(f"unknown landmark backend {backend!r} (split or holistic)")
        if backend == "split" and static_image_mode:
            raise ValueError("the split landmark backend tracks between frames: use holistic "
                             "for photographs")
        if hand_model not in (None, *HAND_MODELS):
            raise ValueError(f"unknown hand model {hand_model!r} (full or lite)")
        if backend == "holistic" and hand_model not in (None, "full"):
            raise ValueError("the holistic landmark backend runs the full hand model only")
        self.hand_model = hand_model or ("full" if backend == "holistic" else DEFAULT_HAND_MODEL)
        self.parts = tuple(parts)
        unknown = set(self.parts) - {"face", "pose", "hands"}
        if unknown:
            raise ValueError(f"unknown landmark part(s): {', '.join(sorted(unknown))}")
        self.backend = backend
        self.static_image_mode = static_image_mode
        self.crop_from_previous_pose = crop_from_previous_pose
        self.follow_landmarks = follow_landmarks and backend == "split"
        self.timings_ms: dict[str, float] = {}
        self._graphs: dict = {}
        self._pool = None
        self._blank: np.ndarray | None = None
        self._previous_pose: _Pose | None = None  # the last frame's pose (split)
        # What ``follow_landmarks`` follows into the next frame (split): the pose's crop, the
        # face (mediapipe's landmark list and its box) and the hands (normalized points).
        self._shape = None  # the frames' shape (a change starts following afresh)
        self._pose_roi = None
        self._followed_face = None
        self._followed_hands = [None, None]
        if backend == "holistic":
            self._graphs["holistic"] = mp.solutions.holistic.Holistic(
                static_image_mode=static_image_mode, model_complexity=1,
                refine_face_landmarks=True, min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence)
            return
        self._graphs["pose"] = _pose_graph(min_confidence)
        if self.follow_landmarks:
            self._pose_model = PoseModel(threshold=min_confidence)
            if "hands" in self.parts:
                self._hand_model = HandModel(self.hand_model)
        if "face" in self.parts:
            self._graphs["face"] = _graph(_FACE_FROM_POSE, {"refine": True})
            if self.follow_landmarks:
                self._graphs["face_following"] = _graph(_FACE_FOLLOWING, {"refine": True})
        if "hands" in self.parts:
            self._graphs["hands"] = _graph(_HANDS_FROM_POSE,
                                           {"model_complexity": HAND_MODELS[self.hand_model]})
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landmark-crops")

    def detect(self, image: np.ndarray,
               on_hands: Callable[[Landmarks], None] | None = None,
               on_face: Callable[[Landmarks], None] | None = None) -> Landmarks:
        """Landmarks of one (H, W, 3) uint8 RGB image.

        ``on_hands(landmarks)``, if given, is called once the hands are in ``landmarks``
        (None where not found): with the split backend in the crop thread while the pose
        graph still runs, so work on the hands overlaps it; it must read only the hand
        fields. Hands found there are dropped afterwards if the pose lost the person.
        ``on_face(landmarks)`` likewise once the face is in (whichever thread cropped it:
        the crop thread on a talking head, beside the pose graph); it must read only the
        face field; a face dropped with a lost pose has been seen by it."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, "
                             f"got {image.shape} {image.dtype}")
        if not self._graphs:
            raise ValueError("the landmark detector is closed")
        height, width = image.shape[:2]
        out = Landmarks(width, height)
        if self.backend == "holistic":
            graph = self._graphs["holistic"]
            if self.static_image_mode:
                self._forget(graph, image.shape)
            self._holistic(graph.process(image), out)
            if on_hands is not None:
                on_hands(out)
            if on_face is not None:
                on_face(out)
            return out
        self._split(image, out, on_hands, on_face)
        return out

    def _split(self, image: np.ndarray, out: Landmarks, on_hands, on_face) -> None:
        """Pose on this thread; face and hands crops from the previous frame's pose on the
        crop thread meanwhile. When the hands graph is due, the face crop moves to this
        thread after the pose (from this frame's pose): the crop thread then has the hands
        graph and the caller's hand solving, about as long as pose + face."""
        if image.shape != self._shape:  # a new stream: nothing of the last one to follow
            self._shape = image.shape
            self._pose_roi, self._followed_face, self._followed_hands = None, None, [None, None]
            self._previous_pose = None
        previous = self._previous_pose if self.crop_from_previous_pose else None
        timings_ms: dict[str, float] = {}
        crops = None
        face_here = previous is None
        if previous is not None:
            face_here = _hands_due(previous, self._graphs)
            crops = self._pool.submit(self._crops, image, previous, out, on_hands,
                                      not face_here, on_face, timings_ms)
        t0 = time.perf_counter()
        pose = self._run_pose(image)
        timings_ms["pose"] = (time.perf_counter() - t0) * 1000
        if pose is not None:
            if crops is None:
                self._crops(image, pose, out, on_hands, True, on_face, timings_ms)
            elif face_here:
                self._face(image, pose, out, timings_ms, on_face)
        if crops is not None:
            crops.result()
        self.timings_ms = timings_ms
        # Crops start from this pose next frame; none when it was lost (then the next frame
        # runs its pose first and crops from it).
        self._previous_pose = pose
        if pose is None:
            # As holistic: no face or hands without the person's pose.
            out.face, out.hands, out.hands_world = None, [None, None], [None, None]
            out.hand_scores = [0.0, 0.0]
            self._followed_face, self._followed_hands = None, [None, None]
        elif "pose" in self.parts:
            out.pose = pose.points * np.array([out.width, out.height, out.width], np.float32)
            out.pose_visibility = pose.visibility
            out.pose_world = pose.world

    def _run_pose(self, image: np.ndarray) -> _Pose | None:
        """This frame's pose (split): followed from the last crop through LiteRT, or found
        by mediapipe's pose graph (the first frame, and whenever following loses it)."""
        if self.follow_landmarks and self._pose_roi is not None:
            result = self._pose_model.run(image, self._pose_roi)
            if result is not None:
                self._pose_roi = result.next_roi
                return _Pose(result.points, result.visibility, result.world)
        found = self._graphs["pose"].process(image)
        self._pose_roi = None
        if found.pose_landmarks is None:
            return None
        pose = _Pose(_xyz(found.pose_landmarks),
                     np.array([p.visibility for p in found.pose_landmarks.landmark], np.float32),
                     _xyz(found.pose_world_landmarks))
        if self.follow_landmarks and found.pose_rect_from_landmarks is not None:
            rect = found.pose_rect_from_landmarks
            self._pose_roi = Roi(rect.x_center, rect.y_center, rect.width, rect.height,
                                 rect.rotation)
            height, width = image.shape[:2]
            self._pose_model.seed(pose.points, pose.visibility, pose.world, self._pose_roi,
                                  width, height)
        return pose

    def _crops(self, image, pose: _Pose, out: Landmarks, on_hands, face: bool, on_face,
               timings_ms: dict) -> None:
        """Hands (then ``on_hands(out)``) and, if ``face``, the face (then ``on_face(out)``)
        into ``out``, cropped where ``pose`` puts them; each graph's time (ms) into
        ``timings_ms`` if it ran."""
        if _hands_due(pose, self._graphs):
            t0 = time.perf_counter()
            self._hands(image, pose, out)
            timings_ms["hands"] = (time.perf_counter() - t0) * 1000
        else:
            self._followed_hands = [None, None]
        if on_hands is not None:
            on_hands(out)
        if face:
            self._face(image, pose, out, timings_ms, on_face)

    def _hands(self, image, pose: _Pose, out: Landmarks) -> None:
        """Both hands into ``out`` (split): a hand the pose sees is followed from its own
        previous landmarks when the pose's wrist agrees with them, else (and when following
        loses it) cropped from the pose by holistic's hand stage."""
        width, height = out.width, out.height
        due = [side for side in (0, 1) if _hand_in_view(pose, side)]
        found = [None, None]
        for side in due:
            previous = self._followed_hands[side]
            if self.follow_landmarks and _hand_follows(previous, pose, side, width, height):
                found[side] = self._hand_model.run(image, hand_roi(previous, width, height))
        acquire = [side for side in due if found[side] is None]
        if acquire:
            result = self._graphs["hands"].process(
                {"image": image, "pose_landmarks": _pose_proto(pose, hands=acquire)})
            for side in acquire:
                points = getattr(result, f"{_SIDE_NAMES[side]}_hand_landmarks")
                found[side] = None if points is None else _xyz(points)
        self._followed_hands = found
        # Each hand is cropped at its own side's wrist: named by the person's anatomy.
        scale = np.array([width, height, width], np.float32)
        for side, points in enumerate(found):
            if points is not None:
                out.hands[side] = points * scale
                out.hands_world[side] = _hand_world_from_image(out.hands[side])
                out.hand_scores[side] = 1.0

    def _face(self, image, pose: _Pose, out: Landmarks, timings_ms: dict,
              on_face=None) -> None:
        """The face into ``out`` (split): followed from its previous landmarks while the
        pose's nose is among them, else (and when following loses it) cropped from the pose
        by holistic's face stage."""
        if "face" not in self._graphs:
            return
        t0 = time.perf_counter()
        face = None
        if self.follow_landmarks and _face_follows(self._followed_face, pose):
            face = self._graphs["face_following"].process(
                {"image": image, "face_previous": self._followed_face[0]}).face_landmarks
        if face is None:
            face = self._graphs["face"].process(
                {"image": image,
                 "face_from_pose": _pose_proto(pose, count=FACE_POSE_POINTS)}).face_landmarks
        self._followed_face = None
        if face is not None:
            out.face = _points(face, out.width, out.height)
            low, high = out.face[:, :2].min(axis=0), out.face[:, :2].max(axis=0)
            size = np.array([out.width, out.height], np.float32)
            self._followed_face = (face, low / size, high / size)
        timings_ms["face"] = (time.perf_counter() - t0) * 1000
        if on_face is not None:
            on_face(out)

    def _forget(self, graph, shape) -> None:
        """Clear what the holistic graph remembers of the previous image.

        mediapipe 0.10.21's holistic graph carries state from frame to frame even with
        static_image_mode=True: the same photograph twice gives face landmarks up to 9 px
        apart (measured on a 512 px face). An empty frame in between makes every photograph
        give exactly what a fresh graph gives, for about 13 ms.
        """
        if self._blank is None or self._blank.shape != shape:
            self._blank = np.zeros(shape, np.uint8)
        graph.process(self._blank)

    def _holistic(self, result, out: Landmarks) -> None:
        if "face" in self.parts and result.face_landmarks is not None:
            out.face = _points(result.face_landmarks, out.width, out.height)
        if "pose" in self.parts and result.pose_landmarks is not None:
            out.pose = _points(result.pose_landmarks, out.width, out.height)
            out.pose_visibility = np.array(
                [p.visibility for p in result.pose_landmarks.landmark], dtype=np.float32)
            if result.pose_world_landmarks is not None:
                out.pose_world = _xyz(result.pose_world_landmarks)
        if "hands" in self.parts:
            for side, name in enumerate(_SIDE_NAMES):
                points = getattr(result, f"{name}_hand_landmarks")
                if points is not None:
                    out.hands[side] = _points(points, out.width, out.height)
                    out.hands_world[side] = _hand_world_from_image(out.hands[side])
                    out.hand_scores[side] = 1.0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for graph in self._graphs.values():
            graph.close()
        self._graphs = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(eq=False)
class _Pose:
    """One frame's pose inside the split backend: normalized image points (33, 3),
    visibility (33,), world points (33, 3) m."""

    points: np.ndarray
    visibility: np.ndarray
    world: np.ndarray


def _pose_graph(min_confidence: float):
    """mediapipe's pose graph as its Python Pose solution sets it up (model complexity 1,
    smoothed, tracking between frames), also giving out the crop it would use next."""
    import mediapipe as mp
    from mediapipe.python.solution_base import SolutionBase

    return SolutionBase(
        binary_graph_path=mp.solutions.pose._BINARYPB_FILE_PATH,
        side_inputs={"model_complexity": 1, "smooth_landmarks": True,
                     "enable_segmentation": False, "smooth_segmentation": True,
                     "use_prev_landmarks": True},
        calculator_params={
            "posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": min_confidence,
            "poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__ThresholdingCalculator"
            ".threshold": min_confidence},
        outputs=["pose_landmarks", "pose_world_landmarks", "pose_rect_from_landmarks"])


def _pose_proto(pose: _Pose, count: int = POSE_POINTS, hands=(0, 1)):
    """The first ``count`` pose points as a normalized landmark list for holistic's crop
    stages; a hand not in ``hands`` gets wrist visibility 0, which closes its side of the
    hands stage."""
    from mediapipe.framework.formats import landmark_pb2

    visibility = pose.visibility[:count].astype(np.float64)
    for side, wrist in ((0, LEFT_WRIST), (1, RIGHT_WRIST)):
        if side not in hands and wrist < count:
            visibility[wrist] = 0.0
    return landmark_pb2.NormalizedLandmarkList(landmark=[
        landmark_pb2.NormalizedLandmark(x=x, y=y, z=z, visibility=v, presence=1.0)
        for (x, y, z), v in zip(pose.points[:count].tolist(), visibility.tolist())])


def _hands_due(pose: _Pose, graphs: dict) -> bool:
    """Whether the hands graph runs for this pose: it exists and the pose sees a hand."""
    return "hands" in graphs and any(_hand_in_view(pose, side) for side in (0, 1))


def _hand_in_view(pose: _Pose, side: int) -> bool:
    """Whether the pose sees hand ``side`` (0 = the person's left) in the frame: its wrist
    visible, the mean of wrist, index and pinky inside."""
    wrist, index, pinky = ((LEFT_WRIST, LEFT_INDEX, LEFT_PINKY) if side == 0
                           else (RIGHT_WRIST, RIGHT_INDEX, RIGHT_PINKY))
    if pose.visibility[wrist] < HAND_VISIBILITY:
        return False
    x, y = pose.points[[wrist, index, pinky], :2].mean(axis=0)
    return bool(-HAND_MARGIN <= x <= 1.0 + HAND_MARGIN and -HAND_MARGIN <= y <= 1.0 + HAND_MARGIN)


_SIDE_NAMES = ("left", "right")  # the graphs' stream names, by side (0 = the person's left)


def _hand_follows(previous, pose: _Pose, side: int, width: int, height: int) -> bool:
    """Whether hand ``side``'s previous landmarks (normalized (21, 3), or None) can be
    followed: the pose's wrist of that side lies within ``HAND_FOLLOW_GAP`` palm lengths
    of the hand's own wrist (a hand tracker that slid onto the other hand, or a hand that
    moved away, fails this and is re-acquired from the pose)."""
    if previous is None:
        return False
    scale = np.array([width, height], np.float32)
    wrist = previous[0, :2] * scale
    palm = np.linalg.norm(previous[9, :2] * scale - wrist)
    pose_wrist = pose.points[LEFT_WRIST if side == 0 else RIGHT_WRIST, :2] * scale
    return bool(np.linalg.norm(pose_wrist - wrist) <= HAND_FOLLOW_GAP * palm)


def _face_follows(previous, pose: _Pose) -> bool:
    """Whether the previous face (landmark list, box low and high corners normalized, or
    None) can be followed: the pose's nose lies within the face's box."""
    if previous is None:
        return False
    _, low, high = previous
    nose = pose.points[NOSE, :2]
    return bool(np.all(low <= nose) and np.all(nose <= high))


def _hand_world_from_image(points: np.ndarray) -> np.ndarray:
    """Holistic gives no hand world landmarks: a metric-free stand-in from the image points
    (x right, y down, z away), scaled so that wrist -> middle knuckle is 0.09 m."""
    centred = points - points.mean(axis=0)
    scale = 0.09 / max(float(np.linalg.norm(points[9] - points[0])), 1e-6)
    return (centred * scale).astype(np.float32)
