"""The guided capture's window (``avatar create --camera`` with a display), under a real X
server (Xvfb) with Mesa's OpenGL: the camera's picture as a mirror with the prompt and the
step's bar over it, read back from the window; closing it cancels the capture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture

ROOT = Path(__file__).resolve().parents[1]


def test_the_picture_is_the_camera_mirrored_under_a_banner_with_the_prompt_and_its_bar():
    from app.capture_window import BANNER_H, compose

    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :320] = (200, 40, 40)  # the camera's left half red, its right half blue
    image[:, 320:] = (40, 40, 200)
    early = compose(image, "smile", 4, 8, 0.1, (960, 600))
    late = compose(image, "smile", 4, 8, 0.9, (960, 600))
    assert early.shape == (600, 960, 3)
    below = early[BANNER_H + 20:-20]
    # A mirror: the camera's left (red) shows on the window's right.
    assert below[:, 600:700, 0].mean() > 150 and below[:, 600:700, 2].mean() < 80
    assert below[:, 260:360, 2].mean() > 150 and below[:, 260:360, 0].mean() < 80
    banner = early[:BANNER_H]
    assert (banner.min(axis=2) > 230).sum() > 200  # white letters of the prompt
    bar_row = BANNER_H - 10
    green = (late[bar_row, :, 1] > 150) & (late[bar_row, :, 0] < 120)
    assert green.sum() > 5 * ((early[bar_row, :, 1] > 150) & (early[bar_row, :, 0] < 120)).sum()
    with_other_prompt = compose(image, "raise your eyebrows", 4, 8, 0.1, (960, 600))
    assert np.abs(with_other_prompt[:BANNER_H].astype(int) - banner).sum() > 0


def run_capture(x_display: str, mode: str) -> dict:
    """tests/capture_window_child.py in its own process under ``x_display``."""
    env = dict(os.environ, DISPLAY=x_display, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tests.capture_window_child", mode], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_window_shows_each_prompt_over_the_camera_and_the_capture_keeps_its_frames(
        display):  # noqa: F811
    from app import create_cmd

    result = run_capture(display, "whole")
    assert "error" not in result, result["error"]
    shown = result["shown"]
    prompts = [p for p, _ in create_cmd.CAPTURE_PROMPTS]
    assert [p for p in prompts if any(s["prompt"] == p for s in shown)] == prompts
    assert any(s["prompt"].startswith("get ready") for s in shown)
    differences = [s["difference"] for s in shown if s["difference"] is not None]
    # What the window drew is the composed picture (up to GL's filtering of the texture).
    assert len(differences) >= 3 and max(differences) < 2.0
    assert 15 <= result["frames"] <= 35 and result["shape"][1:] == [400, 3]


def test_closing_the_window_cancels_the_capture_with_one_error_line(display):  # noqa: F811
    result = run_capture(display, "close")
    assert "cancelled" in result.get("error", "")
    assert max(s["step"] for s in result["shown"]) == 2
