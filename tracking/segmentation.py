"""Person masks: which pixels of a frame show the person, from mediapipe's selfie segmentation.

mediapipe 0.10.21 ships the legacy ``selfie_segmentation`` solution in its wheel (nothing
is downloaded). ``PersonSegmenter.process(image)`` returns a ``PersonMask``: the model's
per-pixel probability (H, W) float32 in [0, 1] at the frame's size, and ``mask`` the
pixels over ``threshold`` (bool). Avatar fitting compares renders with frames inside this
mask and fits the avatar's silhouette to it.

``model_selection``: 0 is the general model (256x256 input), 1 the landscape model
(144x256, made for video calls). On jwpIntro.mp4 (640x480) they agree closely (the test
checks their overlap) and the landscape model takes half the time (7.4 against 14.4 ms a
frame on the 2-core VM), so it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

GENERAL_MODEL, LANDSCAPE_MODEL = 0, 1
THRESHOLD = 0.5


class SegmentationError(RuntimeError):
    """A frame the segmenter cannot take (wrong shape or type)."""


@dataclass(eq=False)
class PersonMask:
    """probability (H, W) float32 in [0, 1] that a pixel shows the person; mask (H, W)
    bool, probability > threshold."""

    probability: np.ndarray
    threshold: float = THRESHOLD

    @property
    def mask(self) -> np.ndarray:
        return self.probability > self.threshold

    @property
    def coverage(self) -> float:
        """Fraction of the frame's pixels in the mask."""
        return float(self.mask.mean()) if self.probability.size else 0.0


class PersonSegmenter:
    """mediapipe's selfie segmentation over RGB frames; use as a context manager or
    ``close()`` it. Frames are independent (no smoothing between them)."""

    def __init__(self, model_selection: int = LANDSCAPE_MODEL, threshold: float = THRESHOLD):
        if model_selection not in (GENERAL_MODEL, LANDSCAPE_MODEL):
            raise ValueError("model_selection is 0 (general) or 1 (landscape)")
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must lie in (0, 1)")
        import mediapipe as mp

        self.threshold = threshold
        self._solution = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=model_selection)

    def process(self, image: np.ndarray) -> PersonMask:
        """The person mask of one frame: ``image`` (H, W, 3) uint8 RGB."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SegmentationError(f"expected an (H, W, 3) uint8 RGB frame, got "
                                    f"{image.shape} {image.dtype}")
        result = self._solution.process(np.ascontiguousarray(image))
        probability = np.clip(np.asarray(result.segmentation_mask, dtype=np.float32), 0, 1)
        return PersonMask(probability, self.threshold)

    def close(self) -> None:
        self._solution.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
