"""Call recordings end to end with real processes: two ``main.py call`` processes on loopback,
the recording one killed with SIGKILL mid-call; what is left reads back (both participants'
codes, both voices), ``main.py play`` shows both participants under Xvfb, and ``main.py
export`` writes an MP4 that decodes with the expected frames and audio duration. Plus the
failure paths: an unwritable path refused up front, a full disk reported without raising."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avatar.codes import write_jsonl
from net.audio import dominant_frequency_hz
from net.recording import RecordingWriter, read_recording
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture
from tests.processes import free_port, read_stats, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory):
    """A call between alice (recording) and bob, alice killed with SIGKILL after bob's codes
    have arrived for 4 s: (recording path, alice's last stats before the kill)."""
    from app.poses import POSES

    tmp = tmp_path_factory.mktemp("call")
    write_jsonl(tmp / "talk.jsonl", POSES["talk"].frames(30.0))
    write_jsonl(tmp / "wave.jsonl", POSES["wave"].frames(30.0))
    port = free_port()
    secret = tmp / "secret.key"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    procs: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                                stdout=open(tmp / log, "w"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def participant(name: str, codes: str, tone: int, *extra: str) -> subprocess.Popen:
        return start("call", "--server", f"ws://127.0.0.1:{port}/ws", "--room", "rec",
                     "--secret-file", str(secret), "--name", name, "--codes", str(tmp / codes),
                     "--audio", f"tone:{tone}", "--fps", "30", "--duration", "60",
                     "--loopback", *extra, log=f"{name}.log")

    path = tmp / "call.rec"
    stats = tmp / "alice.json"
    try:
        start("serve", "--port", str(port), "--secret-file", str(secret), log="serve.log")
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "server")
        alice = participant("alice", "talk.jsonl", 440, "--record", str(path),
                            "--stats", str(stats))
        wait_for(lambda: (read_stats(stats) or {}).get("joined_s") is not None, 30, "alice")
        participant("bob", "wave.jsonl", 1000)
        wait_for(lambda: any(r["codes"]["unique"] >= 4 * 30 for r in
                              (read_stats(stats) or {}).get("remotes", {}).values()),
                  40, "4 s of bob's codes at alice")
        time.sleep(1.5)
        before = read_stats(stats)
        alice.send_signal(signal.SIGKILL)
        alice.wait()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return path, before


@pytest.mark.slow
def test_a_recording_killed_mid_call_keeps_both_participants_codes_and_voices(
        killed_recording):
    path, before = killed_recording
    recording = read_recording(path)
    assert recording.truncated
    assert recording.fps == 30.0 and recording.header["wall_start"] > 1.7e9
    alice, bob = recording.participants
    assert (alice.name, bob.name) == ("alice", "bob") and alice.slot == 0
    # At most about a second lost: the stats written before the kill are up to 1 s old.
    assert recording.duration_s >= before["uptime_s"] - 1.0, (recording.duration_s, before)
    assert len(bob.frames) >= 4 * 30 and len(alice.frames) >= len(bob.frames)
    assert np.all(np.diff(bob.times) > 0) and bob.times[-1] > before["uptime_s"] - 1.5
    # Each voice is there and is its own tone: ours (440 Hz) and bob's as heard (1000 Hz).
    for who, tone in ((alice, 440), (bob, 1000)):
        voice = recording.voice_of(who)
        assert len(voice) > 2 * 48000, (who.name, len(voice))
        assert abs(dominant_frequency_hz(voice[-48000:], 48000) - tone) < 5
    # Compact: about 2 MB a minute per participant with voice at most.
    minutes = recording.duration_s / 60
    assert path.stat().st_size / minutes / 2 < 2e6


@pytest.mark.slow
def test_play_shows_both_participants_of_the_killed_recording(killed_recording, display,  # noqa: F811
                                                               tmp_path):
    path, _ = killed_recording
    shot = tmp_path / "play.png"
    result = subprocess.run(
        [sys.executable, "main.py", "play", str(path), "--backend", "gl", "--size", "640x360",
         "--start", "6", "--screenshot", str(shot), "--screenshot-after", "3"],
        cwd=ROOT, env=dict(os.environ, DISPLAY=display), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert "alice, bob" in result.stderr
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    background = image[-1, -1]
    drawn = np.abs(image - background).sum(axis=2) > 30
    drawn[:20] = False  # the overlay line
    columns = drawn.any(axis=0)
    # Two figures: drawn columns form two runs with an empty gap between them.
    runs = np.flatnonzero(np.diff(columns.astype(int)) == 1)
    assert len(runs) == 2, np.flatnonzero(columns)
    assert drawn.sum() > 0.03 * drawn.size


@pytest.mark.slow
def test_export_of_the_killed_recording_decodes_with_exact_frames_and_audio(
        killed_recording, tmp_path):
    path, _ = killed_recording
    out = tmp_path / "call.mp4"
    result = subprocess.run(
        [sys.executable, "main.py", "export", str(path), "--out", str(out), "--size", "160x96",
         "--fps", "5", "--backend", "gl"], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr
    assert "frames, " in result.stderr and "s left" in result.stderr  # the progress bar
    expected = int(round(read_recording(path).duration_s * 5))
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        audio_s = float(stream.duration * stream.time_base)
        samples = np.concatenate([f.to_ndarray().reshape(-1)
                                  for f in container.decode(audio=0)])
    assert frames == expected
    # The track lasts exactly as long as the video; a decoder hands out whole AAC frames of
    # 1024 samples, so it may give up to 1023 samples more.
    assert audio_s == pytest.approx(expected / 5, abs=1e-9), audio_s
    assert 0 <= len(samples) - expected * 48000 // 5 < 1024
    # Both voices are in the mix.
    spectrum = np.abs(np.fft.rfft(samples[-48000:]))
    freqs = np.fft.rfftfreq(48000, 1 / 48000)
    for tone in (440, 1000):
        near = spectrum[(freqs > tone - 5) & (freqs < tone + 5)].max()
        assert near > 20 * np.median(spectrum), tone


def test_an_unwritable_record_path_is_refused_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "main.py", "call", "--room", "r", "--secret-file",
         str(tmp_path / "s.key"), "--audio", "none", "--record",
         str(tmp_path / "missing" / "call.rec")], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot record to"), lines


def test_a_full_disk_stops_the_recording_without_raising():
    from app.poses import POSES

    writer = RecordingWriter("/dev/full", 30.0, "me")
    writer.join("me", "me")
    for frame in POSES["talk"].frames(30.0):
        writer.codes("me", frame)
    writer.close()
    assert writer.error is not None and "/dev/full" in writer.error
