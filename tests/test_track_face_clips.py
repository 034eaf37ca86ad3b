"""The face solver on a real clip with real brow raises: testMovie.mp4 (PyPI psychopy's test
clip, 352x288, 237 frames). Checked by eye (docs/BENCHMARKS.md, issue 15's third pass): he
starts with a calm face (frames 0-30), smiles around frame 35, blinks at frames 44-47, and
raises his brows from frame 140 to about 190 (forehead lines, eyes widened). Learned
corrections that read the brows on renders took this raise from 1.0 to 0.3-0.6 while the
plain fit keeps it: this test holds what a real face shows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.codes import BLENDSHAPE_INDEX
from tests.media import media_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from face_clip import track_clip  # noqa: E402


@pytest.fixture(scope="module")
def weights():
    """The whole tracker over the clip (video mode, the clip's own frame times)."""
    _, codes, faces = track_clip(media_path("testMovie.mp4"))
    assert all(f is not None for f in faces)
    return np.array([c.face for c in codes])


@pytest.mark.slow
def test_a_real_brow_raise_reads_as_raised_brows(weights):
    brows = weights[:, BLENDSHAPE_INDEX["browInnerUp"]]
    raised, calm = brows[142:190], brows[:30]
    print(f"browInnerUp raised: median {np.median(raised):.2f}, "
          f"p90 {np.percentile(raised, 90):.2f}; calm start: max {calm.max():.2f}")
    # Measured 2026-12-07 (mediapipe 0.10.21): raised median 1.0, p90 1.0; calm start max 0.
    assert np.median(raised) > 0.6
    assert np.percentile(raised, 90) > 0.9
    assert calm.max() < 0.3


@pytest.mark.slow
def test_his_smile_and_blinks_are_seen_and_his_calm_start_is_calm(weights):
    index = BLENDSHAPE_INDEX
    smile = weights[30:40, [index["mouthSmileLeft"], index["mouthSmileRight"]]]
    blink = weights[43:48, [index["eyeBlinkLeft"], index["eyeBlinkRight"]]]
    print(f"smile max {smile.max(axis=0)}, blink max {blink.max(axis=0)}, "
          f"calm start largest weight {weights[:30].max():.2f}")
    # Measured 2026-12-07: smile 0.57 / 0.70, blinks 1.0 / 1.0, calm start's largest 0.34.
    assert smile.max(axis=0).min() > 0.4
    assert blink.max(axis=0).min() > 0.9
    assert weights[:30].max() < 0.5
