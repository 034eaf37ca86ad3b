"""Gaussians: the renderer's input, a plain bundle of world-space arrays.

Shapes and units (N Gaussians, all float32):

- ``means`` (N, 3): centres in world space, metres (OpenXR axes: right-handed, +Y up).
- ``quats`` (N, 4): unit rotations (w, x, y, z) of each Gaussian's principal axes.
- ``scales`` (N, 3): standard deviations along those axes, metres (linear, not log).
- ``opacities`` (N,): peak opacity in [0, 1].
- ``colors``: (N, 3) RGB in [0, 1], or (N, K, 3) spherical-harmonic coefficients with
  K in {1, 4, 9, 16} (degree 0..3), evaluated per view as 3DGS does:
  ``rgb = max(0, sum_k Y_k(dir) * sh_k + 0.5)`` with ``dir`` from the camera to the mean.

Colours are display (sRGB-encoded) values and are blended as they are, like 3DGS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SH_COUNTS = {1: 0, 4: 1, 9: 2, 16: 3}  # coefficients per channel -> degree


class GaussiansError(ValueError):
    """Arrays that do not form a valid set of Gaussians."""


@dataclass(eq=False)
class Gaussians:
    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray

    def __post_init__(self) -> None:
        for name in ("means", "quats", "scales", "opacities", "colors"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32))
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape or n < 0:
                raise GaussiansError(f"{name} has shape {getattr(self, name).shape}, "
                                     f"expected {shape}")
        c = self.colors
        if not (c.shape == (n, 3) or (c.ndim == 3 and c.shape[0] == n and c.shape[2] == 3
                                      and c.shape[1] in SH_COUNTS)):
            raise GaussiansError(f"colors has shape {c.shape}, expected ({n}, 3) or ({n}, K, 3)"
                                 " with K in 1, 4, 9, 16")

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int | None:
        """Spherical-harmonic degree, or None for plain RGB colours."""
        return SH_COUNTS[self.colors.shape[1]] if self.colors.ndim == 3 else None

    def finite_mask(self) -> np.ndarray:
        """(N,) True where every attribute is finite and scales are positive: the Gaussians a
        renderer may draw. Renderers drop the rest rather than fail."""
        ok = np.all(np.isfinite(self.means), axis=1)
        ok &= np.all(np.isfinite(self.quats), axis=1) & (np.linalg.norm(self.quats, axis=1) > 1e-8)
        ok &= np.all(np.isfinite(self.scales), axis=1) & np.all(self.scales > 0, axis=1)
        ok &= np.isfinite(self.opacities) & (self.opacities > 0)
        ok &= np.all(np.isfinite(self.colors.reshape(len(self),
                                                     int(np.prod(self.colors.shape[1:])))),
                     axis=1)
        return ok

    def subset(self, index) -> "Gaussians":
        return Gaussians(self.means[index], self.quats[index], self.scales[index],
                         self.opacities[index], self.colors[index])

    @staticmethod
    def concatenate(parts: "list[Gaussians]") -> "Gaussians":
        """Several avatars' Gaussians as one set (colours must share a form)."""
        if not parts:
            return Gaussians.empty()
        return Gaussians(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ("means", "quats", "scales", "opacities", "colors")))

    @staticmethod
    def empty() -> "Gaussians":
        return Gaussians(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros(0),
                         np.zeros((0, 3)))
