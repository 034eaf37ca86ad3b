"""The face closed loop (bench/face_loop.py) on five identities, not only the default
avatar: anny phenotypes (sex, age, weight, height, proportions) re-shaping the default
avatar's face, with other skin tones and hair, rendered on the GL backend and tracked by
mediapipe 0.10.21's face mesh. Jaw, smiles and eyeWide read at their strength on each."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.codes import BLENDSHAPE_INDEX
from avatar.template import load_template
from tracking.face import FaceSolver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from face_loop import IDENTITIES, identity_avatar, render_loop, score, solve_cases  # noqa: E402


@pytest.fixture(scope="module")
def loop():
    """Neutral, jaw open 0.7, smile 0.8, eyes wide 0.8 on the five identities, frontal and
    turned 25 degrees, even light: 40 tracked renders."""
    pytest.importorskip("moderngl")
    pytest.importorskip("anny")
    cases = render_loop(["neutral", "jawOpen", "smile", "eyeWide"], [(0, 0), (25, 0)],
                        lights=[0], identities=[i.name for i in IDENTITIES],
                        say=lambda s: None)
    weights = solve_cases(cases, FaceSolver(load_template()))
    return cases, weights


def test_the_identities_differ_in_shape_and_colour():
    pytest.importorskip("anny")
    default = identity_avatar(IDENTITIES[0]).skinned
    head = np.flatnonzero(default.vertices[:, 1] > 1.45)
    assert len(IDENTITIES) >= 5
    for identity in IDENTITIES[1:]:
        other = identity_avatar(identity).skinned
        moved_mm = 1000 * np.linalg.norm(other.vertices[head] - default.vertices[head], axis=1)
        recoloured = np.abs(other.colors - default.colors).max(axis=-1) > 0.05
        print(identity.name, "head moved p90 mm", np.percentile(moved_mm, 90).round(1),
              "recoloured", recoloured.mean().round(3))
        assert np.percentile(moved_mm, 90) > 2.0, identity.name
        assert recoloured.mean() > 0.05, identity.name


@pytest.mark.slow
def test_jaw_smiles_and_eye_wide_on_every_identity(loop):
    cases, weights = loop
    for name in sorted({c.identity for c in cases}):
        idx = [i for i, c in enumerate(cases) if c.identity == name]
        result = score([cases[i] for i in idx], weights[idx])
        print(name, {k: round(v["median"], 2) for k, v in result.items()
                     if not k.startswith("_")})
        assert result["_missed"] == 0, name
        # Measured 2026-12-06: jaw 0.03-0.12, smiles 0.05-0.30 per identity (the median of
        # a frontal and a turned head).
        assert result["jawOpen"]["median"] < 0.2, name
        for shape in ("mouthSmileLeft", "mouthSmileRight"):
            assert result[shape]["median"] < 0.4, (name, shape)
    result = score(cases, weights)
    print("all:", {k: round(v["median"], 2) for k, v in result.items() if not k.startswith("_")})
    # Measured 2026-12-06 over the five: jaw 0.05, smiles 0.12-0.2, eyeWide 0.3-0.4 (before
    # the lid gap read it: 0.8, never seen).
    assert result["jawOpen"]["median"] < 0.12
    for shape in ("mouthSmileLeft", "mouthSmileRight"):
        assert result[shape]["median"] < 0.3, shape
    # eyeWide 0.8 posed: 0.56 since a head turned 20 degrees or more reads both eyes from the
    # less widened one (tracking.face.EYE_WIDE_SYMMETRIC_YAW), which took a turned neutral
    # head's false eyeWide from 0.88 to 0.44 (BENCHMARKS, issue 15's fourth pass); still
    # read (the 0.8 never seen gave 0.8).
    for shape in ("eyeWideLeft", "eyeWideRight"):
        assert result[shape]["median"] < 0.65, shape


@pytest.mark.slow
def test_a_turned_neutral_head_stays_calm_on_every_identity(loop):
    cases, weights = loop
    turned = [i for i, c in enumerate(cases) if c.expression == "neutral" and c.yaw_deg]
    jaw_smile = [BLENDSHAPE_INDEX[n] for n in ("jawOpen", "mouthSmileLeft", "mouthSmileRight")]
    print("turned neutral: jaw/smiles max", weights[np.ix_(turned, jaw_smile)].max(),
          "; any shape max", weights[turned].max())
    assert weights[np.ix_(turned, jaw_smile)].max() < 0.3
    assert weights[turned].max() < 0.9


def test_face_clip_bench_refuses_a_missing_clip_in_one_line(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "bench" / "face_clip.py"),
                          str(tmp_path / "none.mp4")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"error: no such clip: {tmp_path / 'none.mp4'}"]
