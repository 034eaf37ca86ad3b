"""Person masks from mediapipe's selfie segmentation on a real clip (jwpIntro.mp4: a man
talking to the camera in front of bookshelves)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import media_path
from tracking.segmentation import GENERAL_MODEL, PersonSegmenter, SegmentationError


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    from tracking.sources import VideoSource

    source = VideoSource(media_path("jwpIntro.mp4"))
    frames = []
    try:
        while (frame := source.read()) is not None:
            if frame.index % 40 == 0:
                frames.append(frame.image)
    finally:
        source.close()
    return frames


@pytest.fixture(scope="module")
def faces(clip_frames) -> list[np.ndarray]:
    from tracking.landmarks import LandmarkDetector

    with LandmarkDetector(parts=("face", "pose"), static_image_mode=True) as detector:
        return [detector.detect(image).face for image in clip_frames]


def test_mask_covers_the_talking_man_and_not_the_bookshelves(clip_frames, faces):
    assert len(clip_frames) >= 4
    with PersonSegmenter() as segmenter:
        for image, face in zip(clip_frames, faces):
            person = segmenter.process(image)
            assert person.probability.shape == image.shape[:2]
            assert person.probability.dtype == np.float32
            mask = person.mask
            # Every face-mesh point (the face found independently) lies in the mask.
            assert face is not None
            cols = np.clip(face[:, 0].astype(int), 0, image.shape[1] - 1)
            rows = np.clip(face[:, 1].astype(int), 0, image.shape[0] - 1)
            assert mask[rows, cols].mean() >= 0.98
            # The shirt under the chin is in it; the shelves' top corners are not.
            chin = face[152]
            assert mask[min(int(chin[1]) + 60, image.shape[0] - 1), int(chin[0])]
            assert not mask[:60, :60].any() and not mask[:60, -60:].any()
            # A head-and-shoulders framing: about a third of the frame.
            assert 0.2 < person.coverage < 0.6


def test_landscape_and_general_models_agree_on_the_clip(clip_frames):
    with PersonSegmenter() as landscape, PersonSegmenter(GENERAL_MODEL) as general:
        for image in clip_frames[:3]:
            a, b = landscape.process(image).mask, general.process(image).mask
            assert (a & b).sum() / (a | b).sum() > 0.93


def test_a_frame_that_is_not_rgb_uint8_is_refused():
    with PersonSegmenter() as segmenter:
        with pytest.raises(SegmentationError, match="uint8 RGB"):
            segmenter.process(np.zeros((48, 64), np.uint8))
        with pytest.raises(SegmentationError, match="uint8 RGB"):
            segmenter.process(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(ValueError, match="model_selection"):
        PersonSegmenter(model_selection=2)
