"""The call window and the call's sound: real ``main.py serve`` and ``main.py call``
processes on loopback, the window under a real X server (Xvfb) with Mesa's OpenGL, the
voices through PortAudio into ALSA's null device; the fades, the mixer's schedule and the
opacity of a faded avatar checked directly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.call_window import (BACKGROUND, FADE_S, SELF_BACKGROUND, SELF_VIEW_FRACTION,
                             CallSnapshot, RateMeter, RemoteView, fade_opacity, fade_step,
                             seat_x)
from app.speakers import RESYNC_S, SAMPLE_RATE, VoiceMixer
from avatar.codes import Codes, write_jsonl
from common.rotation import quat_from_axis_angle
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture
from tests.processes import free_port, read_stats, wait_for

ROOT = Path(__file__).resolve().parents[1]
# ALSA's null device as the default card: PortAudio opens it and plays into nothing.
NULL_ALSA = ("</usr/share/alsa/alsa.conf>\npcm.!default { type null }\n"
             "ctl.!default { type hw card 0 }\n")


# -- the pure parts ------------------------------------------------------------------------------
def test_an_avatar_fades_in_over_the_fade_time_and_out_again():
    opacity, steps = 0.0, 0
    while opacity < 1.0:
        opacity = fade_step(opacity, True, 1 / 60)
        steps += 1
    assert steps == pytest.approx(FADE_S * 60, abs=1)
    opacity = fade_step(opacity, False, FADE_S / 2)
    assert opacity == pytest.approx(0.5)
    assert fade_step(opacity, False, FADE_S) == 0.0


def test_the_fade_curve_runs_from_nothing_to_whole_and_only_grows():
    fades = np.linspace(0, 1, 101)
    opacities = [fade_opacity(f) for f in fades]
    assert opacities[0] == 0.0 and opacities[-1] == 1.0
    assert np.all(np.diff(opacities) > 0)


def test_seats_are_centred_and_spaced():
    assert seat_x(0, 1) == 0.0
    xs = [seat_x(i, 3) for i in range(3)]
    assert xs[0] == -xs[2] and xs[1] == 0.0 and xs[2] - xs[1] == pytest.approx(0.9)


def test_the_codes_rate_is_measured_from_a_growing_count():
    meter = RateMeter()
    for i in range(40):
        meter.update(i * 15, i * 0.25)  # 60 a second
    assert meter.rate == pytest.approx(60.0)


def test_a_voice_plays_exactly_its_delay_after_it_arrived():
    mixer = VoiceMixer()
    tone = np.sin(np.arange(1, 961) * 0.1).astype(np.float32) * 0.5  # no zero sample
    start = mixer.push("a", tone, arrival_s=10.0, delay_s=0.080)
    assert start == pytest.approx(10.080)
    # The block that plays from 10.07 s: 10 ms of silence, then the frame's first samples.
    out = mixer.mix(10.070, 960)
    first = np.flatnonzero(out)[0]
    assert first == pytest.approx(0.010 * SAMPLE_RATE, abs=1)
    np.testing.assert_allclose(out[first:], tone[:960 - first], atol=1e-6)
    # The next frame, 20 ms later with a little jitter, follows without a gap or overlap.
    assert mixer.push("a", tone, arrival_s=10.025, delay_s=0.080) == pytest.approx(10.100)


def test_a_voice_waits_for_its_avatar_less_what_its_path_already_took():
    from app.speakers import AUDIO_PATH_EXTRA_S, voice_delay_s

    # The avatar shows 50 ms after its codes arrive and is drawn in 150: the voice, arriving
    # AUDIO_PATH_EXTRA_S behind the codes, waits the rest.
    assert voice_delay_s(0.050, 0.150) == pytest.approx(0.200 - AUDIO_PATH_EXTRA_S)
    assert voice_delay_s(0.030, 0.0) == 0.0  # already later than its avatar: at once


def test_two_voices_are_mixed_and_a_late_stream_starts_again_from_now():
    mixer = VoiceMixer()
    ones = np.full(480, 0.25, np.float32)
    mixer.push("a", ones, 0.0, 0.05)
    mixer.push("b", ones, 0.0, 0.05)
    np.testing.assert_allclose(mixer.mix(0.05, 480), 0.5)
    # After a gap longer than RESYNC_S the schedule restarts at arrival + delay.
    late = 1.0 + RESYNC_S
    assert mixer.push("a", ones, late, 0.05) == pytest.approx(late + 0.05)
    mixer.keep_only({"b"})
    assert not mixer.mix(late + 0.05, 480).any()


def test_a_faded_avatar_draws_with_its_opacity_on_the_gl_renderer_as_in_numpy():
    from avatar.avatar import load_avatar
    from render.backends import poser_for
    from render.gl import GLSplatRenderer
    from render.reference import render
    from render.skinned import PosedAvatars, pose_gaussians

    from app.view_cmd import OrbitCamera

    avatar = load_avatar("default")
    skinned = avatar.skinned.subset(np.arange(0, len(avatar.skinned), 20))
    camera = OrbitCamera().camera(96, 96)
    renderer = GLSplatRenderer()
    poser = poser_for("gl")
    images = {}
    for opacity in (1.0, 0.02, 0.0):
        pose = avatar.skin_pose(Codes())
        pose.opacity = opacity
        renderer.show(PosedAvatars((skinned,), (poser.pose(skinned, pose),)))
        images[opacity] = renderer.render(None, camera)[..., 3]
        numpy_alpha = render(pose_gaussians(skinned, pose), camera)[..., 3]
        assert np.abs(images[opacity] - numpy_alpha).mean() < 0.01, opacity
    # Overlapping Gaussians still add up to nearly opaque here and there: compare coverage.
    assert 0.05 < images[0.02].mean() / images[1.0].mean() < 0.8
    assert images[0.0].max() == 0.0


# -- real processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_call_window_shows_the_remote_the_self_view_and_the_overlay_and_plays_the_voice(
        tmp_path, display):  # noqa: F811
    frames = [Codes(seq=i, head=np.tile(quat_from_axis_angle([0, 1, 0], 0.3 * np.sin(i / 20)),
                                        (4, 1)).astype(np.float32),
                    face=np.full(52, (i % 60) / 60, np.float32)) for i in range(120)]
    codes_file = tmp_path / "codes.jsonl"
    write_jsonl(codes_file, frames)
    (tmp_path / "asound.conf").write_text(NULL_ALSA)
    port = free_port()
    secret = tmp_path / "secret.key"
    base = dict(os.environ, PYTHONUNBUFFERED="1")
    base.pop("DISPLAY", None)
    base.pop("WAYLAND_DISPLAY", None)
    procs = []

    def start(*args, log, env=base):
        proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                                stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def call(name, tone, duration, *extra, env=base):
        return start("call", "--server", f"ws://127.0.0.1:{port}/ws", "--room", "w",
                     "--secret-file", str(secret), "--name", name, "--codes", str(codes_file),
                     "--audio", f"tone:{tone}", "--duration", str(duration), "--loopback",
                     "--fps", "30", *extra, log=f"{name}.log", env=env)

    shot = tmp_path / "window.png"
    try:
        start("serve", "--port", str(port), "--secret-file", str(secret), log="serve.log")
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "server")
        # alice: no display and no sound card: one line each, and the call goes on headless.
        alice_stats = tmp_path / "alice.json"
        alice = call("alice", 440, 40, "--stats", str(alice_stats))
        wait_for(lambda: (read_stats(alice_stats) or {}).get("joined_s") is not None, 30,
                  "alice to join")
        # bob: a window on the X server, the voices into ALSA's null device.
        bob_stats = tmp_path / "bob.json"
        bob = call("bob", 1000, 30, "--stats", str(bob_stats), "--screenshot", str(shot),
                   "--screenshot-at", "10", "--spatial-voice",
                   env=dict(base, DISPLAY=display, ALSA_CONFIG_PATH=str(tmp_path / "asound.conf")))
        assert bob.wait(timeout=120) == 0, (tmp_path / "bob.log").read_text()
        alice.terminate()
        assert alice.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    alice_log = (tmp_path / "alice.log").read_text()
    bob_log = (tmp_path / "bob.log").read_text()
    assert sum("running headless" in line for line in alice_log.splitlines()) == 1, alice_log
    assert sum("without sound" in line for line in alice_log.splitlines()) == 1, alice_log
    assert "screenshot saved" in bob_log, bob_log
    # The voice reached the speakers: PortAudio asked for blocks and alice's tone was in them.
    speakers = read_stats(bob_stats)["speakers"]
    assert speakers["blocks"] > 100 and speakers["voiced_blocks"] > 50, speakers
    assert speakers["channels"] == 2, speakers  # --spatial-voice: stereo, panned

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    height, width, _ = image.shape
    assert (width, height) == (960, 540)
    background = np.array(BACKGROUND) * 255
    # The remote avatar in the middle of the window: many pixels far from the background.
    # (31 % of it when wholly faded in; its dark trousers are close to the background)
    middle = image[height // 4:, width // 3:2 * width // 3]
    assert (np.abs(middle - background).sum(axis=2) > 60).mean() > 0.2
    # The self-view in the bottom-right corner: its own background and an avatar on it.
    w = int(width * SELF_VIEW_FRACTION)
    corner = image[height - 8 - min(w * 4 // 3, height // 2):height - 8, width - 8 - w:width - 8]
    self_bg = np.array(SELF_BACKGROUND) * 255
    near_bg = (np.abs(corner - self_bg).sum(axis=2) < 12).mean()
    assert 0.1 < near_bg < 0.9, near_bg
    # The overlay's text in the top-left corner: white letters on a dark box.
    text = image[:40, :250]
    assert (text.min(axis=2) > 200).mean() > 0.02
    assert (text.max(axis=2) < 40).mean() > 0.3


def test_devices_lists_the_null_sound_device_and_says_when_there_is_none(tmp_path):
    (tmp_path / "asound.conf").write_text(NULL_ALSA)
    run = [sys.executable, "main.py", "devices"]
    with_null = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, ALSA_CONFIG_PATH=str(tmp_path / "asound.conf")))
    assert with_null.returncode == 0
    lines = with_null.stdout.splitlines()
    speakers = lines[lines.index("speakers:") + 1:]
    assert any("default" in line and "ALSA" in line for line in speakers), with_null.stdout
    assert lines[0] == "cameras:"


# -- the window in this process (keys, help, fades) -----------------------------------------------
class _Mailbox:
    """The window's side of the pipe with no call behind it: what it sends is kept."""

    stopped = False

    def __init__(self):
        self.latest = CallSnapshot()
        self.sent = []

    def send(self, message) -> None:
        self.sent.append(message)

    def receive(self) -> list:
        return []


def _in_fresh_process(check, x_display: str) -> None:
    """Run ``check(x_display)`` in a new interpreter: a glfw (GLX) window in a process that
    already made a standalone (EGL) context, as other tests here do, ends it with an X error
    (Xlib exits the process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(check, x_display).result(timeout=300)


def _open_window(x_display: str):
    import glfw

    from app.call_window import WindowOptions, make_window
    from avatar.avatar import load_avatar

    os.environ["DISPLAY"] = x_display
    assert glfw.init()
    mailbox = _Mailbox()
    window = make_window(WindowOptions("test", 320, 180, 60.0), load_avatar("default"), mailbox)
    return window, mailbox


def _pixels(window) -> np.ndarray:
    import glfw

    width, height = glfw.get_framebuffer_size(window.window)
    raw = window.ctx.screen.read(viewport=(0, 0, width, height), components=3)
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3)[::-1].astype(int)


def _check_keys_and_help(x_display: str) -> None:
    import glfw

    window, mailbox = _open_window(x_display)
    mailbox.latest = CallSnapshot(mic_muted=False, camera_off=True)
    for key in (glfw.KEY_M, glfw.KEY_C, glfw.KEY_O, glfw.KEY_N):
        window._on_key(window.window, key, 0, glfw.PRESS, 0)
    assert mailbox.sent == [("set", "mic_muted", True), ("set", "camera_off", False),
                            ("request", "record"), ("request", "recalibrate")]
    window.draw_frame()
    without = _pixels(window)
    window._on_key(window.window, glfw.KEY_F1, 0, glfw.PRESS, 0)
    window.draw_frame()
    with_help = _pixels(window)
    centre = (slice(60, 120), slice(100, 220))
    # The help's dark box over the background, white letters on it.
    assert (np.abs(with_help[centre] - without[centre]).sum(axis=2) > 40).mean() > 0.5
    assert (with_help[centre].min(axis=2) > 200).mean() > 0.005
    window._on_key(window.window, glfw.KEY_ESCAPE, 0, glfw.PRESS, 0)
    assert glfw.window_should_close(window.window)
    glfw.terminate()


def test_the_window_keys_ask_the_call_and_f1_shows_the_help(display):  # noqa: F811
    _in_fresh_process(_check_keys_and_help, display)


def _check_fades(x_display: str) -> None:
    import glfw

    window, mailbox = _open_window(x_display)
    background = np.array(BACKGROUND) * 255

    def covered(receiving: bool) -> float:
        view = RemoteView("r", "remote", Codes(), receiving, 50.0, 30.0, 60.0, 0.0, 0.0)
        mailbox.latest = CallSnapshot([view])
        window.draw_frame()
        middle = _pixels(window)[60:170, 120:200]
        return float((np.abs(middle - background).sum(axis=2) > 60).mean())

    window._last_draw = time.perf_counter()
    first = covered(True)
    time.sleep(FADE_S + 0.1)
    solid = covered(True)
    assert first < 0.5 * solid and solid > 0.3, (first, solid)
    time.sleep(FADE_S / 2)
    half = covered(False)  # its codes stopped: fading out
    assert half < solid
    time.sleep(FADE_S)
    assert covered(False) < 0.02
    mailbox.latest = CallSnapshot()  # and it left
    window.draw_frame()
    assert not window.seats
    glfw.terminate()


def test_a_remote_fades_in_when_its_codes_start_and_out_when_they_stop(display):  # noqa: F811
    _in_fresh_process(_check_fades, display)


def test_bad_window_options_are_one_line_errors(tmp_path, capsys):
    from app.cli import main

    base = ["call", "--room", "r", "--secret-file", str(tmp_path / "k"), "--audio", "none",
            "--server", "ws://127.0.0.1:9/ws", "--duration", "1", "--no-window"]
    for extra, message in ((["--window-size", "5x5"], "--size"),
                           (["--screenshot-at", "-1"], "--screenshot-at")):
        assert main(base + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err


def test_a_missing_speaker_is_one_reason_and_the_null_device_plays_what_is_mixed(tmp_path):
    (tmp_path / "asound.conf").write_text(NULL_ALSA)
    script = """
import time
import numpy as np
from app.speakers import VoiceMixer, open_speakers
mixer = VoiceMixer()
speakers, why = open_speakers(mixer, "no-such-speaker")
assert speakers is None and "no-such-speaker" in why, why
speakers, note = open_speakers(mixer, None)
assert speakers is not None, note
tone = (0.5 * np.sin(np.arange(48000) * 0.05)).astype(np.float32)
mixer.push("a", tone, time.monotonic(), 0.1)
time.sleep(1.5)
speakers.close()
summary = speakers.summary()
# ALSA's null device takes blocks as fast as they come (it keeps no time), so only this
# holds: the tone (0.1-1.1 s from now) was in some blocks, and blocks after it were silent.
assert 0 < summary["voiced_blocks"] < summary["blocks"], summary
print("ok", summary)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, ALSA_CONFIG_PATH=str(tmp_path / "asound.conf")))
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr


def _window_process(parent_pid: int) -> int | None:
    """The pid of the call's window process (a spawned child running spawn_main)."""
    children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"spawn_main" in part for part in cmdline) and not any(
                b"resource_tracker" in part for part in cmdline):
            return int(pid)
    return None


@pytest.mark.slow
def test_when_the_window_goes_away_the_call_leaves_cleanly(tmp_path, display):  # noqa: F811
    port = free_port()
    secret = tmp_path / "secret.key"
    env = dict(os.environ, PYTHONUNBUFFERED="1", DISPLAY=display)
    server = subprocess.Popen([sys.executable, "main.py", "serve", "--port", str(port),
                               "--secret-file", str(secret)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = tmp_path / "bob.json"
    bob = None
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "server")
        bob = subprocess.Popen(
            [sys.executable, "main.py", "call", "--server", f"ws://127.0.0.1:{port}/ws",
             "--room", "w", "--secret-file", str(secret), "--name", "bob", "--audio", "none",
             "--duration", "120", "--loopback", "--stats", str(stats)],
            cwd=ROOT, env=env, stdout=open(tmp_path / "bob.log", "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: (read_stats(stats) or {}).get("joined_s") is not None, 60, "bob to join")
        window = wait_for(lambda: _window_process(bob.pid), 30, "the window process")
        os.kill(window, 9)
        assert bob.wait(timeout=30) == 0
    finally:
        for proc in (server, bob):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "bob.log").read_text()
    assert "the window was closed: leaving" in log and "left the call" in log, log
    assert read_stats(stats)["uptime_s"] < 60


def test_the_record_key_starts_a_recording_here_and_stops_it(tmp_path, monkeypatch):
    import argparse

    from app.call_window import CallControls, CallMonitor, toggle_recording
    from net.call import Call, CallConfig
    from net.recording import read_recording

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(fps=30.0, name="bob", avatar=None)
    call = Call(CallConfig(url="ws://127.0.0.1:9/ws", room="r", token="t", name="bob",
                           avatar_cache_dir=tmp_path / "cache"))
    monitor = CallMonitor(CallControls())
    recording = toggle_recording(None, args, call, None, monitor)
    assert recording is not None and monitor.recording.startswith("call-")
    for i in range(30):
        recording.tick({}, {}, Codes(t=i / 30, seq=i))
    assert toggle_recording(recording, args, call, None, monitor) is None
    assert monitor.recording is None and "recording stopped" in monitor.note
    (written,) = tmp_path.glob("call-*.ts")
    (me,) = read_recording(written).participants
    assert me.name == "bob" and len(me.frames) == 30
