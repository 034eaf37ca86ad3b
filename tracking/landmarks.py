"""Landmarks: mediapipe 0.10.21's face mesh (478 with iris), pose (33, with world
landmarks) and hands (21 each, with handedness) on one RGB frame.

``LandmarkDetector(backend="threads")`` runs the three legacy ``solutions`` graphs side by
side in three threads (mediapipe releases the GIL while its graphs run), which on this
machine is faster than ``backend="holistic"`` (one graph, parts in sequence; its hands come
from pose-guided crops, better when hands are small in the frame). See docs/tracking.md and
bench/bench_track.py for the measurement behind the default.

Coordinates: image landmarks are in pixels, (x right, y down, z toward the scene, z in the
same pixel scale as x as mediapipe defines it). World landmarks are mediapipe's metric
coordinates (x right, y down, z away from the camera) about the hips (pose) or the hand's
centre (hands). Hands are stored by the person's own side: index 0 is the left hand.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

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


def _points(landmark_list, width: int, height: int) -> np.ndarray:
    arr = np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], dtype=np.float32)
    arr[:, 0] *= width
    arr[:, 1] *= height
    arr[:, 2] *= width
    return arr


def _world(landmark_list) -> np.ndarray:
    return np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], dtype=np.float32)


class LandmarkDetector:
    """Face, pose and hands on RGB frames: ``detect(image) -> Landmarks``.

    ``parts``: any of "face", "pose", "hands". ``static_image_mode`` runs every detector
    on every frame (photos; slower); video mode tracks between frames. ``hand_model``:
    0 (lite) or 1 (full). Not thread-safe: one detector per stream.
    """

    def __init__(self, parts=("face", "pose", "hands"), backend: str = "threads",
                 static_image_mode: bool = False, hand_model: int = 1,
                 min_confidence: float = 0.5):
        import mediapipe as mp

        if backend not in ("threads", "holistic"):
            raise ValueError(f"unknown landmark backend {backend!r} (threads or holistic)")
        self.parts = tuple(parts)
        unknown = set(self.parts) - {"face", "pose", "hands"}
        if unknown:
            raise ValueError(f"unknown landmark part(s): {', '.join(sorted(unknown))}")
        self.backend = backend
        self.static_image_mode = static_image_mode
        solutions = mp.solutions
        self._graphs: dict = {}
        self._pool = None
        self._blank: np.ndarray | None = None
        if backend == "holistic":
            self._graphs["holistic"] = solutions.holistic.Holistic(
                static_image_mode=static_image_mode, model_complexity=1,
                refine_face_landmarks=True, min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence)
            return
        if "face" in self.parts:
            self._graphs["face"] = solutions.face_mesh.FaceMesh(
                static_image_mode=static_image_mode, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        if "pose" in self.parts:
            self._graphs["pose"] = solutions.pose.Pose(
                static_image_mode=static_image_mode, model_complexity=1,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        if "hands" in self.parts:
            self._graphs["hands"] = solutions.hands.Hands(
                static_image_mode=static_image_mode, max_num_hands=2, model_complexity=hand_model,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        if len(self._graphs) > 1:
            self._pool = ThreadPoolExecutor(max_workers=len(self._graphs),
                                            thread_name_prefix="landmarks")

    def detect(self, image: np.ndarray) -> Landmarks:
        """Landmarks of one (H, W, 3) uint8 RGB image."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        out = Landmarks(width, height)
        if self.backend == "holistic":
            graph = self._graphs["holistic"]
            if self.static_image_mode:
                self._forget(graph, image.shape)
            self._holistic(graph.process(image), out)
            return out
        if self._pool is None:
            results = {name: graph.process(image) for name, graph in self._graphs.items()}
        else:
            futures = {name: self._pool.submit(graph.process, image)
                       for name, graph in self._graphs.items()}
            results = {name: f.result() for name, f in futures.items()}
        if "face" in results and results["face"].multi_face_landmarks:
            out.face = _points(results["face"].multi_face_landmarks[0], width, height)
        if "pose" in results:
            self._pose(results["pose"], out)
        if "hands" in results:
            self._hands(results["hands"], out)
        return out

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

    @staticmethod
    def _pose(result, out: Landmarks) -> None:
        if result.pose_landmarks is None:
            return
        out.pose = _points(result.pose_landmarks, out.width, out.height)
        out.pose_visibility = np.array([p.visibility for p in result.pose_landmarks.landmark],
                                       dtype=np.float32)
        if result.pose_world_landmarks is not None:
            out.pose_world = _world(result.pose_world_landmarks)

    def _hands(self, result, out: Landmarks) -> None:
        if not result.multi_hand_landmarks:
            return
        for image_points, world_points, handedness in zip(
                result.multi_hand_landmarks, result.multi_hand_world_landmarks,
                result.multi_handedness):
            label = handedness.classification[0]
            # mediapipe labels hands as if the image were mirrored (a selfie): in a camera's
            # own view its "Left" is the person's right hand.
            side = 1 if label.label == "Left" else 0
            points = _points(image_points, out.width, out.height)
            side = _side_from_pose(points, out, side)
            if out.hands[side] is not None and out.hand_scores[side] >= label.score:
                continue
            out.hands[side] = points
            out.hands_world[side] = _world(world_points)
            out.hand_scores[side] = float(label.score)

    def _holistic(self, result, out: Landmarks) -> None:
        if "face" in self.parts and result.face_landmarks is not None:
            out.face = _points(result.face_landmarks, out.width, out.height)
        if "pose" in self.parts:
            self._pose(result, out)
        if "hands" in self.parts:
            # Holistic names hands by the person's anatomy (it crops them from the pose).
            for side, name in ((0, "left_hand_landmarks"), (1, "right_hand_landmarks")):
                points = getattr(result, name)
                if points is not None:
                    out.hands[side] = _points(points, out.width, out.height)
                    out.hands_world[side] = _hand_world_from_image(out.hands[side])
                    out.hand_scores[side] = 1.0

    def close(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs = {}
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _side_from_pose(points: np.ndarray, out: Landmarks, side: int) -> int:
    """Trust the pose's wrists over the handedness label when the pose saw both wrists well
    (the label flips on a hand seen edge-on; the pose's sides come from the whole body)."""
    if out.pose is None or out.pose_visibility is None:
        return side
    if min(out.pose_visibility[LEFT_WRIST], out.pose_visibility[RIGHT_WRIST]) < 0.5:
        return side
    wrist = points[0, :2]
    d_left = np.linalg.norm(out.pose[LEFT_WRIST, :2] - wrist)
    d_right = np.linalg.norm(out.pose[RIGHT_WRIST, :2] - wrist)
    hand_size = np.linalg.norm(points[9, :2] - points[0, :2]) + 1e-6
    # Only overrule the label when one wrist is clearly the nearer one.
    if abs(d_left - d_right) > hand_size:
        return 0 if d_left < d_right else 1
    return side


def _hand_world_from_image(points: np.ndarray) -> np.ndarray:
    """Holistic gives no hand world landmarks: a metric-free stand-in from the image points
    (x right, y down, z away), scaled so that wrist -> middle knuckle is 0.09 m."""
    centred = points - points.mean(axis=0)
    scale = 0.09 / max(float(np.linalg.norm(points[9] - points[0])), 1e-6)
    return (centred * scale).astype(np.float32)
