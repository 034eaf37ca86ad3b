"""``main.py demo`` with a display: the receiver's side of the call live in the call window
(a real process under Xvfb, the voice into ALSA's null device), no video written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.call_window import BACKGROUND
from tests.media import media_path
from tests.test_call_window import NULL_ALSA
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_demo_shows_the_call_in_the_window_when_there_is_a_display(
        tmp_path, display):  # noqa: F811
    (tmp_path / "asound.conf").write_text(NULL_ALSA)
    out, shot = tmp_path / "demo.mp4", tmp_path / "shot.png"
    env = dict(os.environ, DISPLAY=display, ALSA_CONFIG_PATH=str(tmp_path / "asound.conf"))
    done = subprocess.run(
        [sys.executable, "main.py", "demo", "--clip", str(media_path("jwpIntro.mp4")),
         "--out", str(out), "--max-seconds", "5", "--fps", "15", "--screenshot", str(shot),
         "--screenshot-at", "3"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shown in the window" in done.stderr, done.stderr[-3000:]
    assert not out.exists()  # the window instead of the video
    assert out.with_suffix(".codes.jsonl").stat().st_size > 0
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    height, width, _ = image.shape
    assert (width, height) == (960, 540)
    # The sender's avatar in the middle, the overlay's white text in the top-left corner.
    middle = image[height // 4:, width // 3:2 * width // 3]
    covered = (np.abs(middle - np.array(BACKGROUND) * 255).sum(axis=2) > 60).mean()
    assert covered > 0.2, done.stderr[-2000:]
    assert (image[:40, :250].min(axis=2) > 200).mean() > 0.02
