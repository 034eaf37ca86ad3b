"""The desktop viewer in a real X server (Xvfb) with real OpenGL (Mesa), screenshots checked
against the reference renderer."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OVERLAY_ROWS = 20  # the frame-time line at the top of the window


def _die_with_parent() -> None:
    """Xvfb gets SIGTERM if this test process dies without tearing down (Linux prctl)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@pytest.fixture(scope="module")
def display():
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (Debian xvfb; `scripts/setup.sh test` installs it)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


def run_view(args, display=None, timeout=180):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    if display:
        env["DISPLAY"] = display
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "view", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def expected_view(width, height, backend="reference"):
    """What the viewer's first frame should show: the rest pose from the initial orbit camera,
    rendered by the reference renderer over the viewer's background."""
    from app.view_cmd import BACKGROUND, OrbitCamera
    from avatar.avatar import load_avatar
    from avatar.codes import Codes
    from render.reference import render

    camera = OrbitCamera().camera(width, height)
    image = render(load_avatar("default").pose(Codes()), camera, background=BACKGROUND)
    return np.clip(image[..., :3], 0, 1) * 255


def psnr_uint8(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("backend", ["gl", "reference"])
def test_screenshot_through_the_viewer_shows_the_avatar(display, tmp_path, backend):
    from app.view_cmd import BACKGROUND

    shot = tmp_path / "shot.png"
    result = run_view(["--size", "160x120", "--backend", backend, "--screenshot-after", "2",
                       "--screenshot", str(shot)], display)
    assert result.returncode == 0, result.stderr
    assert "screenshot saved" in result.stderr
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert image.shape == (120, 160, 3)
    expected = expected_view(160, 120)
    body = image[OVERLAY_ROWS:]
    background = np.array(BACKGROUND) * 255
    covered = np.abs(body - background).max(axis=2) > 12
    print(f"{backend}: avatar covers {covered.mean():.1%} of the window, PSNR against the "
          f"reference {psnr_uint8(body, expected[OVERLAY_ROWS:]):.1f} dB")
    assert 0.05 < covered.mean() < 0.6
    assert psnr_uint8(body, expected[OVERLAY_ROWS:]) >= 35
    # The overlay is drawn: light text on the top rows.
    assert image[:OVERLAY_ROWS].max() > 200


def test_without_a_display_it_says_so_and_points_to_render():
    result = run_view(["--size", "160x120"], display=None, timeout=60)
    assert result.returncode == 1
    assert "no display" in result.stderr and "main.py render" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_pose_and_bad_codes_file_are_clear_errors(display, tmp_path):
    result = run_view(["--pose", "moonwalk"], display, timeout=60)
    assert result.returncode == 1 and "unknown pose 'moonwalk'" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "seq": 0, "face": [NaN]}\nnot json\n')
    result = run_view(["--codes", str(bad)], display, timeout=60)
    assert result.returncode == 1 and "cannot read codes" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_view(["--size", "big"], display, timeout=60)
    assert result.returncode == 1 and "--size" in result.stderr


def test_auto_backend_is_gl_without_cuda_and_says_why(display, tmp_path):
    """The default (auto) picks cuda only where a CudaBackend can be made; here (no NVIDIA
    GPU / gsplat) it is gl, and the start-up line says so and why."""
    shot = tmp_path / "auto.png"
    result = run_view(["--size", "96x72", "--pose", "rest", "--screenshot-after", "1",
                       "--screenshot", str(shot)], display)
    assert result.returncode == 0, result.stderr
    startup = next(line for line in result.stderr.splitlines() if line.startswith("view: Default"))
    assert "backend gl (auto: no cuda backend here: the cuda backend needs" in startup, startup
    assert shot.exists()


def test_explicit_cuda_backend_without_cuda_is_one_clear_line(display):
    result = run_view(["--size", "96x72", "--backend", "cuda"], display, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the cuda backend needs"), result.stderr


@pytest.fixture
def viewer(display, monkeypatch, tmp_path):
    """A viewer in this process, for driving its input handlers."""
    import glfw

    from app import view_cmd

    monkeypatch.setenv("DISPLAY", display)
    args = argparse.Namespace(avatar="default", codes=None, pose="wave", vmc=None, camera="front",
                              backend="gl",
                              size="128x96", screenshot=tmp_path / "key.png",
                              screenshot_after=None, xr=False)
    avatar, playback, _ = view_cmd.load_source(args)
    assert glfw.init()
    v = view_cmd.Viewer(args, avatar, playback, 128, 96)
    v.screenshot_requested = False
    yield v
    glfw.destroy_window(v.window)
    glfw.terminate()


def test_keys_and_mouse_drive_the_view(viewer):
    import glfw

    window = viewer.window
    viewer.draw_frame()
    first = viewer.save_screenshot()
    before = np.asarray(Image.open(first), dtype=np.float64)
    eye_before = viewer.orbit.eye()
    # Left drag orbits, the wheel zooms, R resets.
    viewer._on_button(window, glfw.MOUSE_BUTTON_LEFT, glfw.PRESS, 0)
    viewer._drag = (glfw.MOUSE_BUTTON_LEFT, 0.0, 0.0)
    viewer._on_cursor(window, 150.0, 0.0)
    viewer._on_button(window, glfw.MOUSE_BUTTON_LEFT, glfw.RELEASE, 0)
    assert np.linalg.norm(viewer.orbit.eye() - eye_before) > 0.5
    viewer._on_scroll(window, 0, 3)
    assert viewer.orbit.distance_m < 3.0
    viewer.draw_frame()
    after = np.asarray(Image.open(viewer.save_screenshot()),
                       dtype=np.float64)
    assert np.abs(after - before)[OVERLAY_ROWS:].mean() > 3, "the view should change"
    viewer._on_key(window, glfw.KEY_R, 0, glfw.PRESS, 0)
    np.testing.assert_allclose(viewer.orbit.eye(), eye_before)
    # Space pauses and plays the animated pose; S asks for a screenshot.
    playing = viewer.playing
    viewer._on_key(window, glfw.KEY_SPACE, 0, glfw.PRESS, 0)
    assert viewer.playing != playing
    viewer._on_key(window, glfw.KEY_S, 0, glfw.PRESS, 0)
    assert viewer.screenshot_requested


def test_minimised_window_draws_nothing_and_recovers(viewer, monkeypatch):
    import glfw

    # Xvfb has no window manager to minimise with: the framebuffer size glfw reports is
    # replaced by 0x0 (a simulated minimise), the drawing itself is real.
    real_size = glfw.get_framebuffer_size
    monkeypatch.setattr(glfw, "get_framebuffer_size", lambda window: (0, 0))
    viewer.draw_frame()
    monkeypatch.setattr(glfw, "get_framebuffer_size", real_size)
    viewer.draw_frame()
    image = np.asarray(Image.open(viewer.save_screenshot()))
    assert image.shape[:2] == (96, 128)
    assert image[OVERLAY_ROWS:].std() > 5
