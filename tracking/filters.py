"""Temporal filtering: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A low-pass filter whose cutoff rises with the signal's speed: a still person's avatar does
not shake (low cutoff at rest), a fast wave is not smeared (high cutoff when moving).
``OneEuro`` filters arrays of scalars element-wise; ``QuaternionOneEuro`` filters arrays of
unit quaternions (..., 4), with one cutoff per quaternion from its angular speed, keeping
each on the previous one's hemisphere and renormalising.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz, dt: float):
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """``filter(x, t) -> smoothed x`` for arrays of any fixed shape; t in seconds.

    ``min_cutoff_hz``: cutoff at rest (lower: steadier, laggier); ``beta``: how fast the
    cutoff rises with speed (units of x per second); ``d_cutoff_hz``: for the speed itself.
    """

    def __init__(self, min_cutoff_hz: float = 1.0, beta: float = 0.5, d_cutoff_hz: float = 1.0):
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None
        self._t = None

    def _speed(self, dx: np.ndarray) -> np.ndarray:
        return np.abs(dx)

    def filter(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            if self._x is not None and t <= self._t and self._x.shape == x.shape:
                return self._x.copy()  # a repeated timestamp: nothing new to smooth
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff_hz, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff_hz + self.beta * self._speed(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


class QuaternionOneEuro(OneEuro):
    """One Euro over unit quaternions (..., 4): one cutoff per quaternion (its speed is the
    norm of the component derivative, about half the angular speed in rad/s)."""

    def _speed(self, dx: np.ndarray) -> np.ndarray:
        return np.linalg.norm(dx, axis=-1, keepdims=True)

    def filter(self, q, t: float) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if self._x is not None and self._x.shape == q.shape:
            flip = np.sum(q * self._x, axis=-1, keepdims=True) < 0
            q = np.where(flip, -q, q)
        out = super().filter(q, t)
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        self._x = out.copy()
        return out
