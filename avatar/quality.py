"""How closely renders of an avatar match the frames it was made from, inside a person mask.

``masked_psnr`` and ``masked_ssim`` compare one render with one frame over the pixels of a
mask (the person, from ``tracking.segmentation``); ``HeldOutQuality.of(...)`` averages them
over frames the fit never saw and prints the line ``avatar create`` reports:

    held-out PSNR 27.3 dB, SSIM 0.93 over 24 frames (person mask)

Images are (H, W, 3), float in [0, 1] or uint8 (divided by 255); masks (H, W) bool.
PSNR: 10 log10(1 / MSE) with the MSE over the mask's pixels and the three channels
(display values, as the renderers output them). SSIM: Wang et al.'s (Gaussian window,
sigma 1.5, K1 0.01, K2 0.03, data range 1), the per-pixel SSIM map averaged over the
channels and then over the mask's pixels; the map comes from scikit-image (a dependency
of the ``create`` extra, imported when SSIM is asked for). Over several frames both are
the mean of the per-frame values (as published avatar benchmarks report them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class QualityError(ValueError):
    """Images or masks that cannot be compared (shapes, empty mask)."""


def as_float_image(image: np.ndarray, name: str) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1] from float or uint8 input."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise QualityError(f"{name} must be (H, W, 3), got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def _checked(rendered, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = as_float_image(rendered, "rendered"), as_float_image(target, "target")
    mask = np.asarray(mask, dtype=bool)
    if a.shape != b.shape or mask.shape != a.shape[:2]:
        raise QualityError(f"rendered {a.shape}, target {b.shape} and mask {mask.shape} "
                           "must share their height and width")
    if not mask.any():
        raise QualityError("the mask is empty: nothing to compare")
    return a, b, mask


def masked_psnr(rendered: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the mask's pixels (inf when they are identical)."""
    a, b, mask = _checked(rendered, target, mask)
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


# SSIM's Gaussian window (sigma 1.5, scikit-image's truncation at 3.5 sigma) reaches 5 pixels:
# the map inside the mask is the same on the mask's bounding box grown by this margin.
SSIM_MARGIN_PX = 6


def masked_ssim(rendered: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM over the mask's pixels (1.0 for identical images)."""
    from skimage.metrics import structural_similarity

    a, b, mask = _checked(rendered, target, mask)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = (slice(max(rows[0] - SSIM_MARGIN_PX, 0), rows[-1] + 1 + SSIM_MARGIN_PX),
            slice(max(cols[0] - SSIM_MARGIN_PX, 0), cols[-1] + 1 + SSIM_MARGIN_PX))
    a, b, mask = a[crop], b[crop], mask[crop]
    _, ssim_map = structural_similarity(a, b, channel_axis=2, data_range=1.0,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
    return float(ssim_map.mean(axis=2)[mask].mean())


@dataclass(frozen=True)
class HeldOutQuality:
    """Mean masked PSNR (dB) and SSIM over ``frames`` held-out frames; ``pooled_psnr_db``
    from the frames' mean squared error (lower: the worst frames weigh more)."""

    psnr_db: float
    ssim: float
    frames: int
    pooled_psnr_db: float


    @classmethod
    def of(cls, triples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> HeldOutQuality:
        """From (rendered, target, mask) per held-out frame."""
        psnrs, ssims = [], []
        for rendered, target, mask in triples:
            psnrs.append(masked_psnr(rendered, target, mask))
            ssims.append(masked_ssim(rendered, target, mask))
        if not psnrs:
            raise QualityError("no held-out frames to measure")
        mse = np.mean(10.0 ** (-np.asarray(psnrs) / 10.0))
        pooled = math.inf if mse == 0 else -10.0 * math.log10(mse)
        return cls(float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs), float(pooled))

    def summary(self) -> str:
        return (f"held-out PSNR {self.psnr_db:.1f} dB, SSIM {self.ssim:.2f} over {self.frames} "
                "frames (person mask)")

    def to_json_dict(self) -> dict:
        """For an avatar's provenance."""
        return {"held_out_psnr_db": round(self.psnr_db, 2), "held_out_ssim": round(self.ssim, 4),
                "held_out_frames": self.frames, "held_out_pooled_psnr_db":
                round(self.pooled_psnr_db, 2), "region": "person mask"}
