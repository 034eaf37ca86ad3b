"""The guided capture's window (``avatar create --camera`` with a display), under a real X
server (Xvfb) with Mesa's OpenGL: the camera's picture as a mirror with the prompt and the
step's bar over it, read back from the window; closing it cancels the capture."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import media_path
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture


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


@pytest.fixture
def camera_from_clip(monkeypatch):
    import tracking.sources

    video = media_path("jwpIntro.mp4")
    monkeypatch.setattr(tracking.sources, "open_source",
                        lambda spec: tracking.sources.VideoSource(video, live=True))


def test_the_window_shows_each_prompt_over_the_camera_and_the_capture_keeps_its_frames(
        display, monkeypatch, camera_from_clip):  # noqa: F811
    from app import create_cmd
    from app.capture_window import CaptureWindow, compose

    monkeypatch.setenv("DISPLAY", display)
    shown = []

    def open_window():
        window = CaptureWindow()
        window.grab = True
        show = window.show

        def recorded(image, prompt, step, steps, fraction):
            alive = show(image, prompt, step, steps, fraction)
            shown.append((prompt, step, window.grabbed,
                          compose(image, prompt, step, steps, fraction, window.size)))
            return alive

        window.show = recorded
        return window

    clip = create_cmd.capture_from_camera("0", seconds_scale=0.1, open_window=open_window)
    prompts = [p for p, _ in create_cmd.CAPTURE_PROMPTS]
    assert [p for p in prompts if any(s[0] == p for s in shown)] == prompts
    assert any(s[0].startswith("get ready") for s in shown)
    for _, _, grabbed, composed in shown[::10]:
        # What the window drew is the composed picture (up to GL's filtering of the texture).
        assert grabbed.shape == composed.shape
        assert np.abs(grabbed.astype(int) - composed).mean() < 2.0
    assert 15 <= len(clip.frames) <= 35 and clip.frames[0].shape == (480, 640, 3)


def test_closing_the_window_cancels_the_capture_with_one_error_line(
        display, monkeypatch, camera_from_clip):  # noqa: F811
    import glfw

    from app import create_cmd
    from app.capture_window import CaptureWindow
    from app.cli import UserError

    monkeypatch.setenv("DISPLAY", display)

    def open_window():
        window = CaptureWindow()
        show = window.show

        def closing(image, prompt, step, *rest):
            if step == 2:  # the person closes the window during the second step
                glfw.set_window_should_close(window.window, True)
            return show(image, prompt, step, *rest)

        window.show = closing
        return window

    with pytest.raises(UserError, match="cancelled"):
        create_cmd.capture_from_camera("0", seconds_scale=0.1, open_window=open_window)
