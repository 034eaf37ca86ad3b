"""`main.py call --track`: a participant tracked live from a real clip (paced like a camera)
calls another process through `main.py serve`; the receiver records what it played out (one
recording file, net/recording.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from net.recording import read_recording
from tests.media import media_path
from tests.processes import ROOT, free_port, wait_for


@pytest.mark.slow
def test_live_tracked_codes_cross_the_call(tmp_path):
    clip = media_path("jwpIntro.mp4")
    port = free_port()
    secret = tmp_path / "secret.key"
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_minloglevel="2")
    common = ["--server", f"ws://127.0.0.1:{port}/ws", "--room", "live", "--secret-file",
              str(secret), "--loopback", "--audio", "none"]
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "main.py", "serve", "--port", str(port),
                                       "--secret-file", str(secret)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: _port_open(port), 20, "the signalling server")
        receiver_log = open(tmp_path / "receiver.log", "w")
        procs.append(subprocess.Popen([sys.executable, "main.py", "call", *common, "--name", "bob",
                                       "--record", str(tmp_path / "call.ts"), "--duration", "25"],
                                      cwd=ROOT, env=env, stdout=receiver_log,
                                      stderr=subprocess.STDOUT))
        sender = subprocess.run([sys.executable, "main.py", "call", *common, "--name", "alice",
                                 "--track", str(clip), "--duration", "12"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert sender.returncode == 0, sender.stdout[-2000:] + sender.stderr[-2000:]
        assert "tracking" in sender.stdout
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    recording = read_recording(tmp_path / "call.ts")
    recorded = [p for p in recording.participants if p.name == "alice"]
    assert recorded, (tmp_path / "receiver.log").read_text()[-2000:]
    frames = recorded[0].frames
    assert len(frames) > 100
    face_valid = np.mean([c.is_valid("face") for c in frames])
    jaw = np.array([c.blendshape("jawOpen") for c in frames if c.is_valid("face")])
    assert face_valid > 0.5, "the man in the clip faces the camera: his face should be tracked"
    assert jaw.max() - jaw.min() > 0.05, "he talks: the jaw should move"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
