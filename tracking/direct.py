"""The pose and hand landmark models of mediapipe's wheel run directly through LiteRT, on
crops cut here, to follow a person from frame to frame (the split landmark backend).

Why: mediapipe 0.10.21's graphs run the same models about a fifth slower (its XNNPACK
build: the pose landmark model takes 17.3 ms in the pose graph's inference step against
13.9 ms through LiteRT 2.3, one core of the 2-core development VM, 2026-11-24), and
holistic re-crops every hand with a second model on every frame. Here each part is
cropped where its own previous landmarks put it, the way mediapipe's calculators do it
(each function names the calculator whose arithmetic it follows), so the points agree
with mediapipe's graphs to within float rounding; finding a person or a hand anew stays
with mediapipe's graphs (tracking/landmarks.py).

Coordinates are mediapipe's normalized ones: x, y in [0, 1] of the image width and
height, z in the scale of x. A ``Roi`` is a NormalizedRect: centre, width and height in
those units and a rotation in radians (clockwise on screen, as mediapipe's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSE_MODEL = "pose_landmark/pose_landmark_full.tflite"
HAND_MODEL_FILES = {"full": "hand_landmark/hand_landmark_full.tflite",
               "lite": "hand_landmark/hand_landmark_lite.tflite"}
PRESENCE_THRESHOLD = 0.5  # pose and hand flags, as the landmark graphs threshold them
POSE_POINTS, POSE_MODEL_POINTS = 33, 39  # the model's 34th and 35th are the crop's anchors


@dataclass
class Roi:
    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0


def model_path(relative: str) -> Path:
    """A model file in the mediapipe wheel (nothing is downloaded)."""
    import mediapipe

    path = Path(mediapipe.__file__).parent / "modules" / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall mediapipe 0.10.21")
    return path


class Model:
    """One .tflite model on one CPU thread (LiteRT releases the GIL while it runs):
    ``model(tensor)`` -> its output arrays in the model's own order."""

    def __init__(self, relative: str):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # a dependency in pyproject.toml
            raise ImportError("ai-edge-litert is missing: run pip install -e . "
                              "(or bash scripts/setup.sh)") from exc
        self._interpreter = Interpreter(model_path=str(model_path(relative)), num_threads=1)
        self._interpreter.allocate_tensors()
        detail = self._interpreter.get_input_details()[0]
        self._input = detail["index"]
        self.size = int(detail["shape"][1])
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        self._interpreter.set_tensor(self._input, tensor)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(index) for index in self._outputs]


def _normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def _upright(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation (radians, mediapipe's sense) that turns start -> end (pixels) to point
    up: the calculators' target angle of 90 degrees."""
    return _normalize_radians(math.pi / 2 - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def transform_roi(roi: Roi, width: int, height: int, scale: float,
                  shift_y: float = 0.0) -> Roi:
    """RectTransformationCalculator with square_long: shift along the rectangle's own
    rotated y axis, square on the long side in pixels, then scale."""
    x = roi.x - height * roi.height * shift_y * math.sin(roi.rotation) / width
    y = roi.y + roi.height * shift_y * math.cos(roi.rotation)
    side = max(roi.width * width, roi.height * height)
    return Roi(x, y, side / width * scale, side / height * scale, roi.rotation)


# The hand points holistic's HandLandmarksToRoi measures a crop from in mediapipe 0.10.21
# (found by comparing with it): wrist, thumb base to last joint, and the knuckle and first
# joint of each finger; in this list the calculator's joints 0, 4, 6 and 8 are the wrist and
# the index, middle and ring knuckles.
_HAND_ROI_POINTS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]


def hand_roi(points: np.ndarray, width: int, height: int) -> Roi:
    """Where a hand's previous landmarks (21, 3) put its next crop: holistic's
    HandLandmarksToRoi (HandLandmarksToRectCalculator on the palm points, turned so that
    the wrist -> middle of the knuckles is up, then 2x larger, moved a tenth toward the
    fingers, square)."""
    palm = points[_HAND_ROI_POINTS, :2].astype(np.float64)
    size = np.array([width, height], np.float64)
    pixels = palm * size
    target = ((pixels[4] + pixels[8]) / 2 + pixels[6]) / 2
    rotation = _upright(pixels[0], target)
    centre = (palm.max(axis=0) + palm.min(axis=0)) / 2
    offset = (palm - centre) * size
    c, s = math.cos(-rotation), math.sin(-rotation)
    projected = offset @ np.array([[c, s], [-s, c]])
    low, high = projected.min(axis=0), projected.max(axis=0)
    middle = (low + high) / 2
    c, s = math.cos(rotation), math.sin(rotation)
    x = middle[0] * c - middle[1] * s + width * centre[0]
    y = middle[0] * s + middle[1] * c + height * centre[1]
    tight = Roi(x / width, y / height, (high[0] - low[0]) / width,
                (high[1] - low[1]) / height, rotation)
    return transform_roi(tight, width, height, 2.0, shift_y=-0.1)


def _alignment_rect(centre: np.ndarray, scale_point: np.ndarray, width: int,
                    height: int) -> Roi:
    """AlignmentPointsRectsCalculator (target angle 90 degrees): a square box of twice the
    centre-to-scale-point distance, turned so that the centre -> scale point is up."""
    c = centre[:2].astype(np.float64) * (width, height)
    p = scale_point[:2].astype(np.float64) * (width, height)
    box = 2.0 * float(np.hypot(*(p - c)))
    rotation = _upright(c, p)
    return Roi(c[0] / width, c[1] / height, box / width, box / height, rotation)


def pose_roi(anchors: np.ndarray, width: int, height: int) -> Roi:
    """The pose's next crop from its two anchor points (the model's points 33 and 34, hips
    centre and body scale): PoseLandmarksToRoi (alignment box, 1.25x, square)."""
    return transform_roi(_alignment_rect(anchors[0], anchors[1], width, height),
                         width, height, 1.25)


def crop(image: np.ndarray, roi: Roi, size: int) -> np.ndarray:
    """ImageToTensorCalculator on the CPU: the rotated rectangle warped onto a size x size
    tensor (bilinear, edge pixels repeated outside the image), RGB in [0, 1], (1, s, s, 3)."""
    import cv2

    height, width = image.shape[:2]
    box = ((roi.x * width, roi.y * height), (roi.width * width, roi.height * height),
           math.degrees(roi.rotation))
    source = cv2.boxPoints(box).astype(np.float32)
    target = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    return (warped.astype(np.float32) * np.float32(1.0 / 255.0))[None]


def project(points: np.ndarray, roi: Roi) -> np.ndarray:
    """LandmarkProjectionCalculator: points in the crop's [0, 1] square -> the image."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    out = np.empty_like(points)
    out[:, 0] = (c * x - s * y) * roi.width + roi.x
    out[:, 1] = (s * x + c * y) * roi.height + roi.y
    out[:, 2] = points[:, 2] * roi.width
    return out


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray, kernel: int = 7,
                        min_confidence: float = 0.5) -> np.ndarray:
    """RefineLandmarksFromHeatmapCalculator: each point (crop [0, 1] coordinates) moved to
    the sigmoid-weighted centre of its heatmap channel in the kernel around it (the kernel
    cut at the heatmap's edges), where that channel is confident; all points at once."""
    rows, cols, channels = heatmap.shape
    out = points.copy()
    col = np.trunc(points[:, 0] * cols).astype(np.int64)  # C++ truncation toward zero
    row = np.trunc(points[:, 1] * rows).astype(np.int64)
    inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    offsets = np.arange(kernel) - (kernel - 1) // 2
    window_cols = col[:, None] + offsets  # (n, k)
    window_rows = row[:, None] + offsets
    valid = ((window_rows >= 0) & (window_rows < rows))[:, :, None] & (
        (window_cols >= 0) & (window_cols < cols))[:, None, :]  # (n, k, k)
    channel = np.arange(points.shape[0])[:, None, None]
    values = heatmap[np.clip(window_rows, 0, rows - 1)[:, :, None],
                     np.clip(window_cols, 0, cols - 1)[:, None, :], channel]
    confidence = np.where(valid, 1.0 / (1.0 + np.exp(-values.astype(np.float64))), 0.0)
    total = confidence.sum(axis=(1, 2))
    refine = inside & (confidence.max(axis=(1, 2)) >= min_confidence) & (total > 0)
    safe = np.where(total > 0, total, 1.0)
    out_x = (confidence.sum(axis=1) * window_cols).sum(axis=1) / cols / safe
    out_y = (confidence.sum(axis=2) * window_rows).sum(axis=1) / rows / safe
    out[refine, 0] = out_x[refine]
    out[refine, 1] = out_y[refine]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class HandModel:
    """The hand landmark model on the crop ``hand_roi`` gives: ``run(image, roi)`` -> 21
    normalized image points (21, 3), or None where the model sees no hand."""

    def __init__(self, complexity: str = "full"):
        self.model = Model(HAND_MODEL_FILES[complexity])

    def run(self, image: np.ndarray, roi: Roi) -> np.ndarray | None:
        size = self.model.size
        landmarks, flag, _handedness, _world = self.model(crop(image, roi, size))
        if float(flag.reshape(-1)[0]) < PRESENCE_THRESHOLD:
            return None
        points = landmarks.reshape(21, 3).astype(np.float64) / size
        points[:, 2] /= 0.4  # TensorsToLandmarksCalculator's normalize_z for hands
        return project(points, roi).astype(np.float32)


@dataclass
class PoseResult:
    """One frame's pose, smoothed: normalized image points (33, 3) with visibility (33,),
    world points (33, 3) in metres about the hips, and the crop for the next frame."""

    points: np.ndarray
    visibility: np.ndarray
    world: np.ndarray
    next_roi: Roi


class _OneEuro:
    """mediapipe's OneEuroFilter over an array of values at a fixed frame rate (its Python
    solutions feed graphs 33.333 ms timestamps, so their filters run at 30 Hz whatever the
    camera does), with mediapipe's optional value scale on the derivative. Not
    tracking.filters.OneEuro: mediapipe differentiates the raw values, not the smoothed
    ones, and scales the derivative by the body's size; the pose must smooth as its graph."""

    def __init__(self, min_cutoff: float, beta: float, derivative_cutoff: float = 1.0,
                 frequency: float = 30.0):
        self.min_cutoff, self.beta, self.derivative_cutoff = min_cutoff, beta, derivative_cutoff
        self.frequency = frequency
        self.value = self.raw = self.derivative = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.frequency)

    def __call__(self, value: np.ndarray, value_scale: float = 1.0) -> np.ndarray:
        value = value.astype(np.float64)
        if self.value is None:
            self.value, self.raw, self.derivative = value, value, np.zeros_like(value)
            return value
        derivative = (value - self.raw) * value_scale * self.frequency
        a = self._alpha(self.derivative_cutoff)
        self.derivative = a * derivative + (1 - a) * self.derivative
        alpha = self._alpha(self.min_cutoff + self.beta * np.abs(self.derivative))
        self.value = alpha * value + (1 - alpha) * self.value
        self.raw = value
        return self.value


class PoseModel:
    """The pose landmark model followed from frame to frame: ``run(image, roi)`` ->
    ``PoseResult`` or None where the model loses the person. Smoothed as mediapipe's
    PoseLandmarkFiltering does it (pixel points: One Euro 0.05 Hz / 80 scaled by the body's
    size; world points: 0.1 Hz / 40; the anchors: 0.01 Hz / 10; visibility low-pass 0.1).
    ``seed(...)`` starts the filters from a frame mediapipe's pose graph gave. ``threshold``:
    the least presence score that keeps the person (the pose graph's tracking confidence)."""

    def __init__(self, threshold: float = PRESENCE_THRESHOLD):
        self.model = Model(POSE_MODEL)
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._points = _OneEuro(0.05, 80.0)
        self._world = _OneEuro(0.1, 40.0)
        self._anchors = _OneEuro(0.01, 10.0)
        self._visibility = None

    def seed(self, points: np.ndarray, visibility: np.ndarray, world: np.ndarray,
             roi: Roi, width: int, height: int) -> None:
        """Start the filters from a smoothed frame of mediapipe's pose graph and the crop it
        chose next. The graph does not give out its smoothed anchors; they are rebuilt from
        that crop (PoseLandmarksToRoi run backwards), since their filter is slow (0.01 Hz)
        and starting it afresh would crop differently from the graph for seconds."""
        self.reset()
        self._points(points * (width, height, width))
        self._world(world)
        self._visibility = visibility.astype(np.float64)
        centre = np.array([roi.x * width, roi.y * height])
        half_box = roi.width * width / 1.25 / 2
        angle = math.pi / 2 - roi.rotation  # the centre -> scale point direction, y up
        scale_point = centre + half_box * np.array([math.cos(angle), -math.sin(angle)])
        self._anchors(np.array([[*centre, 0.0], [*scale_point, 0.0]]))

    def run(self, image: np.ndarray, roi: Roi) -> PoseResult | None:
        height, width = image.shape[:2]
        size = self.model.size
        landmarks, flag, _segmentation, heatmap, world = self.model(crop(image, roi, size))
        if float(flag.reshape(-1)[0]) < self.threshold:
            self.reset()
            return None
        raw = landmarks.reshape(POSE_MODEL_POINTS, 5).astype(np.float64)
        points = refine_from_heatmap(raw[:, :3] / size, heatmap[0])
        points = project(points, roi)
        visibility = _sigmoid(raw[:POSE_POINTS, 3])
        c, s = math.cos(roi.rotation), math.sin(roi.rotation)
        world = world.reshape(POSE_MODEL_POINTS, 3)[:POSE_POINTS].astype(np.float64)
        world = np.column_stack([c * world[:, 0] - s * world[:, 1],
                                 s * world[:, 0] + c * world[:, 1], world[:, 2]])
        # The filters' scale: the body box of this frame's (unsmoothed) anchors, in pixels.
        body = _alignment_rect(points[POSE_POINTS], points[POSE_POINTS + 1], width, height)
        value_scale = 1.0 / max((body.width * width + body.height * height) / 2, 1e-6)
        pixels = points * (width, height, width)
        smoothed = self._points(pixels[:POSE_POINTS], value_scale) / (width, height, width)
        anchors = self._anchors(pixels[POSE_POINTS:POSE_POINTS + 2], value_scale) / (
            width, height, width)
        if self._visibility is None:
            self._visibility = visibility
        else:
            self._visibility = 0.1 * visibility + 0.9 * self._visibility
        return PoseResult(smoothed.astype(np.float32), self._visibility.astype(np.float32),
                          self._world(world).astype(np.float32),
                          pose_roi(anchors, width, height))
