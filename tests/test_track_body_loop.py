"""The body solver in closed loop in depth: the default avatar rendered on the GL backend
in issue 15's poses (forearm toward the camera, elbows forward, arms crossed in front,
squat, knee raised, torso turned 30 degrees; bench/body_loop.py), tracked by the whole
tracker as photographs, each limb bone's solved direction against the truth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.template import load_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from body_loop import CASES, run, score, summary  # noqa: E402


@pytest.fixture(scope="module")
def errors():
    pytest.importorskip("moderngl")
    return score(load_template(), run(say=lambda s: None))


def test_the_loop_poses_every_depth_case_of_the_issue():
    names = {c.name for c in CASES}
    assert {"forearm_to_camera", "elbows_forward", "arms_crossed", "squat", "knee_raised",
            "torso_turned_30"} <= names


@pytest.mark.slow
def test_limbs_in_depth_come_out_in_their_direction(errors):
    s = summary(errors)
    print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in s.items()})
    # Measured 2026-12-07 (mediapipe 0.10.21): median 5.0, p90 18.5, worst 26.4 degrees.
    # Before the hidden elbow's correction: 5.8, 19.9, 36.8; before the length shrink and
    # the world landmarks' elevation: 12.8, 23.3, 41.6.
    assert s["median"] < 8.0
    assert s["p90"] < 20.0
    assert s["worst"] < 35.0


@pytest.mark.slow
def test_an_arm_whose_forearm_points_at_the_camera_keeps_its_upper_arm_in_the_plane(errors):
    """The elbow hidden behind the forearm (tracking.body.ELBOW_HIDDEN): the arm raised
    sideways read 37 degrees out of the image plane before."""
    arm = errors["forearm_to_camera"]
    print({k: round(v, 1) for k, v in arm.items()})
    assert max(arm["upperarm01.L"], arm["upperarm01.R"]) < 20.0
    assert max(arm["lowerarm01.L"], arm["lowerarm01.R"]) < 15.0


@pytest.mark.slow
def test_in_plane_limbs_are_not_tipped_out_of_the_image_plane(errors):
    """The frontal control pose: arms and legs in the image plane (before: 17 degrees median,
    a forearm tipped 28 degrees toward the camera by the world landmarks' long bones)."""
    frontal = list(errors["frontal"].values())
    print("frontal", [round(v, 1) for v in frontal])
    assert np.median(frontal) < 8.0
    assert max(frontal) < 20.0
