"""The shape fit recovers a synthetic subject's body: the default avatar re-shaped with known
anny parameters (taller, heavier, older, more masculine), waving and walking while turning,
its masks rendered with the GL backend, its landmarks and face points projected through
known cameras; the fit gets noisy codes and slightly wrong cameras (tests/synthetic_subject.py).
The vertex error of the fitted shape is bounded, and far below that of keeping the default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar.avatar import Avatar, load_avatar
from avatar.shape import ShapeError, ShapeFitSettings, fit_shape
from avatar.template import load_template
from tests.synthetic_subject import observe, subject_frames

pytest.importorskip("anny")
KNOWN = {"gender": 0.8, "age": 0.75, "weight": 0.8, "height": 0.7, "muscle": 0.6}


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def subject(template):
    from avatar.shape import anny_shape

    plain = load_avatar("default", template)
    return Avatar(dataclasses.replace(plain.data, shape=anny_shape(KNOWN, template=template)),
                  template)


@pytest.fixture(scope="module")
def backend():
    from render.backends import BackendUnavailable, get_backend

    try:
        backend = get_backend("gl")
    except BackendUnavailable as exc:
        pytest.skip(f"gl backend unavailable here: {exc}")
    yield backend
    backend.release()


def _errors_mm(fit, subject, template):
    truth = subject.template.vertices
    fitted = np.linalg.norm(fit.shape.apply(template).vertices - truth, axis=1) * 1e3
    default = np.linalg.norm(template.vertices - truth, axis=1) * 1e3
    return fitted, default


@pytest.mark.slow
@pytest.mark.parametrize("portrait, steps, mean_mm, max_mm, rms_px", [
    # measured 17.4 / 34.1 mm, 0.69 px (the default shape: 264 / 387 mm)
    (False, 100, 25.0, 60.0, 2.0),
    # head and shoulders only, the camera a metre from the face (a pixel is about 1.5 mm
    # there): measured 17.5 / 35.1 mm, 3.67 px
    (True, 60, 30.0, 70.0, 5.0),
])
def test_the_fit_recovers_a_known_body_shape(subject, template, backend, portrait, steps,
                                             mean_mm, max_mm, rms_px):
    observations = observe(subject, subject_frames(6, portrait), backend)
    seen = []
    fit = fit_shape(observations, template, budget_s=120.0, progress=seen.append,
                    settings=ShapeFitSettings(max_steps=steps))
    fitted, default = _errors_mm(fit, subject, template)
    view = "head-and-shoulders" if portrait else "full-body"
    print(f"{view} fit, {steps} steps in {fit.seconds:.1f} s: vertex error mean "
          f"{fitted.mean():.1f} mm, max {fitted.max():.1f} mm (the default shape: "
          f"{default.mean():.1f} / {default.max():.1f} mm); landmark RMS "
          f"{fit.landmark_rms_px:.2f} px; phenotype "
          f"{ {k: round(v, 2) for k, v in fit.shape.phenotype.items()} }")
    assert fitted.mean() < mean_mm and fitted.max() < max_mm
    assert fitted.mean() < 0.15 * default.mean()
    assert fit.landmark_rms_px < rms_px
    assert fit.shape.phenotype["height"] > 0.55  # taller than the template, as the subject
    assert seen and seen[-1] == 1.0 and all(a <= b for a, b in zip(seen, seen[1:]))
    assert len(fit.codes) == len(fit.cameras) == len(observations)


@pytest.mark.slow
def test_the_fit_corrects_the_noisy_spine_and_neck(subject, template, backend):
    frames = subject_frames(3)
    observations = observe(subject, frames, backend, pose_noise_rad=0.12)
    fit = fit_shape(observations, template, settings=ShapeFitSettings(max_steps=40,
                                                                       start=KNOWN))

    def worst_mm(codes_list):
        return max(float(np.abs(subject.rig.pose_codes(c).heads
                                - subject.rig.pose_codes(truth).heads).max())
                   for c, (truth, _) in zip(codes_list, frames)) * 1e3

    before = worst_mm([o.codes for o in observations])
    after = worst_mm(fit.codes)
    print(f"worst joint error of the noisy codes {before:.0f} mm, after the fit {after:.0f} mm")
    assert after < 0.6 * before


def test_nothing_to_fit_to_is_a_clear_error(template):
    with pytest.raises(ShapeError, match="no keyframes"):
        fit_shape([], template)
    from avatar.codes import Codes
    from avatar.shape import ShapeObservation
    from render.camera import Camera

    blind = ShapeObservation(Codes(), Camera.look_at([0, 1, 3], [0, 1, 0], 64, 64), None, None,
                             np.zeros((64, 64), bool))
    with pytest.raises(ShapeError, match="no keyframe has pose landmarks"):
        fit_shape([blind], template)
