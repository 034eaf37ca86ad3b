"""Face solver: 478 face-mesh landmarks -> 52 ARKit blendshape weights, gaze and head rotation.

No mediapipe release ships its blendshape model, so the weights come from the template's
own blendshape basis. Per frame:

1. Head pose: a similarity transform (Umeyama) maps the observed landmarks' stable points
   (forehead, nose bridge, temples; ``facemesh.STABLE``) onto the neutral reference; its
   rotation is the head's rotation. An affine fit on the same points then takes out the
   face's proportions (identity, not expression).
2. Expression: the aligned landmarks minus the person's neutral are the displacements to
   explain. The basis is the template's 52 blendshape deltas at the landmarks' surface
   points (``facemesh.Correspondence``). Weights solve a bounded, lightly damped least
   squares (0 <= w <= 1) by accelerated projected gradient over the 52x52 normal matrix.
   Depth rows count less (mediapipe's z is its weakest axis); eye-look shapes stay 0 (the
   eyes turn through ``gaze``), tongueOut too (never visible to face mesh).
3. Blinks: each eye's lid gap over its width, against the calibrated open gap, sets
   eyeBlink (replacing the fit's value); squints keep the fit's value.
4. Gaze: the iris centre's offset from the eye-corner midpoint, over the eye's width,
   converted to an angle on a 12 mm eyeball, relative to the calibrated straight look.

Neutral calibration: until calibrated, the person's neutral is the template's (mediapipe's
landmarks on the template's neutral head), which is what a single photograph gets. A video
calibrates itself over its first ``calibration_s`` seconds: the person's neutral becomes
the mean aligned face of the calmest half of those frames (lowest fitted expression), and
eye openness and straight gaze likewise; ``recalibrate()`` starts it again on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, GAZE_LIMIT_RAD
from avatar.template import Template
from tracking.facemesh import (LEFT_EYE, RIGHT_EYE, STABLE, Correspondence,
                               load_correspondence, similarity)

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])
DEPTH_WEIGHT = 0.35
MAX_ITERATIONS = 2000
# Stop when no weight moves by more than this in one step. On jwpIntro.mp4, 1e-4 instead
# of 1e-5 halves the fit's time (10.3 -> 5.0 ms a frame) and moves weights by at most 0.02
# (99th percentile 0.005, about the wire's 8-bit step).
FIT_STEP_TOLERANCE = 1e-4
DAMPING = 2e-3  # ridge on the weights, relative to the basis' mean energy
EYEBALL_RADIUS_RATIO = 0.42  # eyeball radius / eye-corner width (12 mm / 28.5 mm)
# Lid-gap closure (1 - gap / open gap) read as no blink and as a full blink. Face mesh never
# quite brings the lids together: on jwpIntro.mp4 the talker's full blinks close the gap by
# 0.69-0.83 (its open eyes wander by under 0.15); the default avatar's by 0.62-0.78.
BLINK_CLOSURE = (0.15, 0.70)
NOT_FITTED = tuple(n for n in BLENDSHAPE_NAMES if n.startswith("eyeLook")) + ("tongueOut",)


@dataclass(eq=False)
class FaceResult:
    """weights (52,) in [0, 1]; gaze (2, 2) yaw/pitch rad (rows left, right eye);
    head_rotation (3, 3) world rotation of the head relative to rest; fit_rms_mm."""

    weights: np.ndarray
    gaze: np.ndarray
    head_rotation: np.ndarray
    fit_rms_mm: float


class FaceSolver:
    """``solve(face_points_px, t) -> FaceResult`` for one template and one person."""

    def __init__(self, template: Template, correspondence: Correspondence | None = None,
                 calibration_s: float = 2.0):
        self.correspondence = correspondence or load_correspondence()
        self.neutral_reference = self.correspondence.neutral.astype(np.float64)
        basis = self.correspondence.blendshape_basis(template).astype(np.float64)  # (52,478,3)
        self.fitted = np.array([n not in NOT_FITTED for n in BLENDSHAPE_NAMES])
        # Iris points ride on the eyeballs (gaze), not on the expression.
        self.expression_points = np.arange(468)
        rows = np.ones(3)
        rows[2] = DEPTH_WEIGHT
        self.row_weights = np.tile(rows, len(self.expression_points))
        a = basis[self.fitted][:, self.expression_points].reshape(int(self.fitted.sum()), -1).T
        self.basis = a * self.row_weights[:, None]  # (1404, n_fitted)
        normal = self.basis.T @ self.basis
        normal += DAMPING * np.trace(normal) / len(normal) * np.eye(len(normal))
        self.normal = normal
        self.step = 1.0 / float(np.linalg.eigvalsh(normal)[-1])
        self.calibration_s = calibration_s
        eye_width = np.linalg.norm(self.neutral_reference[LEFT_EYE["outer"]]
                                   - self.neutral_reference[LEFT_EYE["inner"]])
        self._template_open = [self._eye_opening(self.neutral_reference, e) for e in (LEFT_EYE, RIGHT_EYE)]
        self._eye_width_m = float(eye_width)
        self._warm = np.zeros(int(self.fitted.sum()))
        self.recalibrate(start=False)

    # -- calibration ----------------------------------------------------------------------
    def recalibrate(self, start: bool = True) -> None:
        """Forget the person's neutral; with ``start`` the next frames calibrate it again."""
        self.neutral = self.neutral_reference.copy()
        self.open_gap = list(self._template_open)
        self.gaze_zero = np.zeros((2, 2))
        self._calibrating = start
        self._calibration_start: float | None = None
        self._samples: list = []

    @property
    def calibrated(self) -> bool:
        return not self._calibrating and self._calibration_start is not None

    def _collect(self, t: float, aligned: np.ndarray, energy: float, gaps, gaze_raw) -> None:
        if self._calibration_start is None:
            self._calibration_start = t
        self._samples.append((energy, aligned, gaps, gaze_raw))
        if t - self._calibration_start < self.calibration_s or len(self._samples) < 5:
            return
        self._samples.sort(key=lambda s: s[0])
        calm = self._samples[: max(3, len(self._samples) // 2)]
        self.neutral = np.mean([s[1] for s in calm], axis=0)
        self.open_gap = list(np.mean([s[2] for s in calm], axis=0))
        self.gaze_zero = np.mean([s[3] for s in calm], axis=0)
        self._calibrating = False
        self._samples = []

    # -- solving ---------------------------------------------------------------------------
    def align(self, points_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks in the neutral reference's frame (metres) and the head rotation (3, 3)."""
        observed = np.asarray(points_px, dtype=np.float64) * CAMERA_TO_WORLD
        s, r, t = similarity(observed[STABLE], self.neutral[STABLE])
        rigid = s * observed @ r.T + t
        # A further affine fit on the stable points absorbs the face's proportions (width,
        # height, depth), which differ from person to person and are not expression.
        stable = np.c_[rigid[STABLE], np.ones(len(STABLE))]
        affine, *_ = np.linalg.lstsq(stable, self.neutral[STABLE], rcond=None)
        return np.c_[rigid, np.ones(len(rigid))] @ affine, r.T

    def fit(self, displacement: np.ndarray) -> np.ndarray:
        """Bounded least-squares weights (52,) for (478, 3) displacements (metres)."""
        b = displacement[self.expression_points].reshape(-1) * self.row_weights
        rhs = self.basis.T @ b
        w = self._warm.copy()
        y, w_prev, momentum = w.copy(), w.copy(), 1.0
        # Converged to FIT_STEP_TOLERANCE (the damped problem is strictly convex, so the
        # answer does not depend on the warm start, which only saves iterations on video).
        for _ in range(MAX_ITERATIONS):
            w = np.clip(y - self.step * (self.normal @ y - rhs), 0.0, 1.0)
            if np.max(np.abs(w - w_prev)) < FIT_STEP_TOLERANCE:
                break
            next_momentum = 0.5 * (1 + np.sqrt(1 + 4 * momentum ** 2))
            y = w + ((momentum - 1) / next_momentum) * (w - w_prev)
            w_prev, momentum = w, next_momentum
        self._warm = w
        out = np.zeros(len(BLENDSHAPE_NAMES))
        out[self.fitted] = w
        return out

    @staticmethod
    def _eye_opening(points: np.ndarray, eye: dict) -> float:
        width = np.linalg.norm(points[eye["outer"]] - points[eye["inner"]])
        return float(np.linalg.norm(points[eye["upper"]] - points[eye["lower"]]) / max(width, 1e-9))

    @staticmethod
    def _gaze_raw(points: np.ndarray, eye: dict) -> np.ndarray:
        """Iris offset from the eye's corner midpoint over the eye's width: (right, up)."""
        outer, inner = points[eye["outer"]], points[eye["inner"]]
        centre = 0.5 * (outer + inner)
        across = outer - inner if eye is LEFT_EYE else inner - outer  # toward the avatar's +X
        width = max(float(np.linalg.norm(across)), 1e-9)
        x_axis = across / width
        up = np.array([0.0, 1.0, 0.0]) - x_axis[1] * x_axis
        up /= max(np.linalg.norm(up), 1e-9)
        offset = points[eye["iris"]] - centre
        return np.array([offset @ x_axis / width, offset @ up / width])

    def solve(self, points_px: np.ndarray, t: float = 0.0) -> FaceResult:
        aligned, head_rotation = self.align(points_px)
        displacement = aligned - self.neutral
        weights = self.fit(displacement)
        gaps = [self._eye_opening(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)]
        gaze_raw = np.stack([self._gaze_raw(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)])
        if self._calibrating:
            self._collect(t, aligned, float(np.sum(weights)), gaps, gaze_raw)

        for i, name in enumerate(("eyeBlinkLeft", "eyeBlinkRight")):
            closed = 1.0 - gaps[i] / max(self.open_gap[i], 1e-6)
            # The gap alone sets the blink: the fit's blink column also soaks up how the lid
            # contour of an open eye differs from the neutral's (0.2-0.3 on open eyes).
            blink = (closed - BLINK_CLOSURE[0]) / (BLINK_CLOSURE[1] - BLINK_CLOSURE[0])
            weights[BLENDSHAPE_INDEX[name]] = float(np.clip(blink, 0.0, 1.0))

        # Eyes looking sideways: yaw toward +X is the avatar's left; pitch up positive.
        offset = gaze_raw - self.gaze_zero
        angles = np.arcsin(np.clip(offset / EYEBALL_RADIUS_RATIO, -1.0, 1.0))
        gaze = np.clip(angles, -GAZE_LIMIT_RAD, GAZE_LIMIT_RAD)
        # A closing lid hides the iris: hold the gaze level rather than follow the lid.
        for i, name in enumerate(("eyeBlinkLeft", "eyeBlinkRight")):
            if weights[BLENDSHAPE_INDEX[name]] > 0.6:
                gaze[i, 1] = 0.0

        basis_residual = self.basis @ weights[self.fitted] - (
            displacement[self.expression_points].reshape(-1) * self.row_weights)
        rms_mm = 1000 * float(np.sqrt(np.mean(basis_residual ** 2)))
        return FaceResult(np.clip(weights, 0.0, 1.0).astype(np.float32), gaze.astype(np.float32),
                          head_rotation, rms_mm)
