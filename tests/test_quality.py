"""Masked PSNR and SSIM: known answers, scikit-image's SSIM, and the issue's measurements of
trivial predictors on the real clip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatar.quality import HeldOutQuality, QualityError, masked_psnr, masked_ssim
from tests.media import media_path


def picture(seed=0, shape=(60, 80)) -> np.ndarray:
    """A smooth random picture in [0, 1] (blurred noise, so SSIM has structure to see)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 1, size=(shape[0] // 4 + 1, shape[1] // 4 + 1, 3))
    big = np.kron(noise, np.ones((4, 4, 1)))[:shape[0], :shape[1]]
    return 0.1 + 0.8 * big


def test_psnr_counts_only_the_masked_pixels():
    target = picture()
    mask = np.zeros(target.shape[:2], bool)
    mask[10:50, 20:60] = True
    rendered = target.copy()
    rendered[mask] += 0.05  # an error of 0.05 everywhere inside: 26.02 dB
    rendered[~mask] = 1.0 - rendered[~mask]  # anything outside does not count
    assert masked_psnr(rendered, target, mask) == pytest.approx(20 * math.log10(1 / 0.05))
    assert masked_psnr(target, target, mask) == math.inf


def test_uint8_and_float_images_give_the_same_figures():
    target = picture(1)
    rendered = np.clip(target + 0.03, 0, 1)
    mask = np.ones(target.shape[:2], bool)

    def as8(im):
        return np.round(im * 255).astype(np.uint8)

    assert masked_psnr(as8(rendered), as8(target), mask) == pytest.approx(
        masked_psnr(as8(rendered) / 255.0, as8(target) / 255.0, mask))


def test_ssim_is_scikit_images_map_averaged_over_the_mask():
    from skimage.metrics import structural_similarity

    target = picture(2)
    rendered = np.clip(target + np.random.default_rng(3).normal(0, 0.05, target.shape), 0, 1)
    mask = np.zeros(target.shape[:2], bool)
    mask[15:45, 25:65] = True
    _, full = structural_similarity(rendered, target, channel_axis=2, data_range=1.0,
                                    gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    expected = full.mean(axis=2)[mask].mean()
    assert masked_ssim(rendered, target, mask) == pytest.approx(expected, abs=1e-12)
    assert masked_ssim(target, target, mask) == pytest.approx(1.0)
    assert 0.2 < expected < 0.95


def test_summary_line_has_the_reported_form():
    q = HeldOutQuality(psnr_db=27.34, ssim=0.9312, frames=24, pooled_psnr_db=26.1)
    assert q.summary() == "held-out PSNR 27.3 dB, SSIM 0.93 over 24 frames (person mask)"
    assert q.to_json_dict()["held_out_frames"] == 24


def test_bad_shapes_empty_masks_and_no_frames_are_refused():
    target = picture()
    with pytest.raises(QualityError, match="share their height and width"):
        masked_psnr(target[:, :-1], target, np.ones(target.shape[:2], bool))
    with pytest.raises(QualityError, match="empty"):
        masked_ssim(target, target, np.zeros(target.shape[:2], bool))
    with pytest.raises(QualityError, match=r"\(H, W, 3\)"):
        masked_psnr(target[..., 0], target[..., 0], np.ones(target.shape[:2], bool))
    with pytest.raises(QualityError, match="no held-out frames"):
        HeldOutQuality.of([])


@pytest.mark.slow
def test_trivial_predictors_on_the_clip_score_as_the_issue_measured():
    """Issue 12 measured, on jwpIntro.mp4's last quarter inside mediapipe's person mask: the
    person's mean colour 14.2 dB, the first frame 20.9 dB, the frame 10 earlier 26.9 dB."""
    from tracking.segmentation import PersonSegmenter
    from tracking.sources import VideoSource

    source = VideoSource(media_path("jwpIntro.mp4"))
    frames = []
    try:
        while (frame := source.read()) is not None:
            frames.append(frame.image)
    finally:
        source.close()
    held = range(round(0.75 * len(frames)), len(frames), 3)
    with PersonSegmenter() as segmenter:
        masks = {i: segmenter.process(frames[i]).mask for i in held}

    def score(predict) -> HeldOutQuality:
        return HeldOutQuality.of((predict(i), frames[i], masks[i]) for i in held)

    mean_colour = score(lambda i: np.broadcast_to(frames[i][masks[i]].mean(0) / 255,
                                                  frames[i].shape))
    first = score(lambda i: frames[0])
    ten_before = score(lambda i: frames[i - 10])
    assert mean_colour.psnr_db == pytest.approx(14.2, abs=0.5)
    assert first.psnr_db == pytest.approx(20.9, abs=1.0)
    assert ten_before.pooled_psnr_db < 26.9 < ten_before.psnr_db + 0.5
    assert mean_colour.ssim < first.ssim < ten_before.ssim < 1.0
