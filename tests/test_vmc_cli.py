"""The VMC options of the commands, with real processes and sockets on 127.0.0.1: ``track
--vmc`` sends a tracked photograph, ``view --vmc`` shows what a VMC sender sends (the same
picture as the pose itself), and a whole call relays a VMC sender to a VMC receiver
(``call --codes vmc:`` on one side, ``call --vmc-out`` on the other)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.poses import POSES
from avatar.codes import Codes
from avatar.humanoid import Humanoid
from common.rotation import quat_angle_rad
from avatar.template import load_template
from net.vmc import VmcReceiver, VmcSender
from tests import test_view_cmd
from tests.media import media_path
from tests.processes import ROOT, free_port, wait_for
from tests.test_view_cmd import OVERLAY_ROWS, psnr_uint8, run_view

display = test_view_cmd.display  # the Xvfb fixture


@pytest.fixture(scope="module")
def humanoid():
    return Humanoid(load_template())


class Sending:
    """Sends one codes frame over VMC every 20 ms on a thread until stopped."""

    def __init__(self, port: int, codes, humanoid):
        self.sender = VmcSender("127.0.0.1", port, humanoid)
        self.codes = codes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sender.send(self.codes.replace(t=time.monotonic()))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sender.close()


@pytest.mark.slow
def test_track_sends_a_tracked_photograph_over_vmc(humanoid, capsys):
    photo = media_path("messi5.jpg")
    receiver = VmcReceiver("127.0.0.1", 0, humanoid)
    try:
        port = receiver.address[1]
        assert main(["track", str(photo), "--vmc", f"127.0.0.1:{port}"]) == 0
        codes = wait_for(receiver.take, 5, "the tracked frame over VMC")
    finally:
        receiver.close()
    assert codes.is_valid("body") and codes.is_valid("root")
    assert not np.allclose(codes.body, Codes().body, atol=0.05)  # the photo's pose, not rest
    err = capsys.readouterr().err
    assert "VMC sent 1 frames" in err and "tracked 1 frames" in err


@pytest.mark.parametrize("extra, message", [
    ([], "--out codes.jsonl, --vmc HOST:PORT"),
    (["--vmc", "127.0.0.1:notaport"], "--vmc: '127.0.0.1:notaport': the port must be a number"),
    (["--vmc", "0"], "--vmc: '0': the port must be within 1..65535"),
])
def test_track_vmc_mistakes_are_one_line(capsys, extra, message):
    assert main(["track", "/no/such/input.mp4", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_view_says_when_the_vmc_port_is_taken_or_wrong(display):
    taken = VmcReceiver("127.0.0.1", 0, Humanoid(load_template()))
    try:
        port = taken.address[1]
        result = run_view(["--vmc", f"127.0.0.1:{port}", "--size", "96x72"], display, timeout=60)
        assert result.returncode == 1 and "--vmc: cannot listen on" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        taken.close()
    result = run_view(["--vmc", "99999"], display, timeout=60)
    assert result.returncode == 1 and "within 1..65535" in result.stderr
    result = run_view(["--vmc", "39539", "--xr"], display, timeout=60)
    assert result.returncode == 1 and "not supported yet" in result.stderr


def test_view_shows_what_a_vmc_sender_sends(display, tmp_path, humanoid):
    """The fist pose sent over VMC looks as the fist pose viewed directly."""
    port = free_port()
    shots = {}
    for name, source in (("direct", ["--pose", "fist"]),
                         ("vmc", ["--vmc", f"127.0.0.1:{port}"])):
        shot = tmp_path / f"{name}.png"
        with Sending(port, POSES["fist"].codes(), humanoid):
            result = run_view([*source, "--size", "160x120", "--backend", "gl",
                               "--screenshot-after", "40", "--screenshot", str(shot)], display)
        assert result.returncode == 0, result.stderr
        shots[name] = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert "malformed" in result.stderr and " 0 malformed" in result.stderr  # the summary
    rest = tmp_path / "rest.png"
    assert run_view(["--size", "160x120", "--backend", "gl", "--screenshot-after", "2",
                     "--screenshot", str(rest)], display).returncode == 0
    rest_image = np.asarray(Image.open(rest).convert("RGB"), dtype=np.float64)
    same = psnr_uint8(shots["vmc"][OVERLAY_ROWS:], shots["direct"][OVERLAY_ROWS:])
    differs = psnr_uint8(shots["vmc"][OVERLAY_ROWS:], rest_image[OVERLAY_ROWS:])
    print(f"VMC-driven view vs the pose: {same:.1f} dB; vs the rest pose: {differs:.1f} dB")
    assert same > 40 > differs


@pytest.mark.parametrize("extra, message", [
    (["--codes", "vmc:notaport"], "--codes: 'notaport': the port must be a number"),
    (["--vmc-out", "127.0.0.1:0"], "--vmc-out: '127.0.0.1:0': the port must be within"),
])
def test_call_vmc_mistakes_are_one_line(tmp_path, capsys, extra, message):
    args = ["call", "--room", "r", "--secret-file", str(tmp_path / "k"), "--audio", "none",
            "--server", "ws://127.0.0.1:9/ws", "--duration", "1", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


@pytest.mark.slow
def test_a_call_relays_a_vmc_sender_to_a_vmc_receiver(tmp_path, humanoid):
    """VMC sender -> call --codes vmc: -> WebRTC -> call --vmc-out -> VMC receiver."""
    server_port, vmc_in = free_port(), free_port()
    secret = tmp_path / "secret.key"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    receiver = VmcReceiver("127.0.0.1", 0, humanoid)
    procs, logs = [], []

    def start(*args: str, log: str) -> None:
        logs.append((tmp_path / log).open("w"))
        procs.append(subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                                      stdout=logs[-1], stderr=subprocess.STDOUT))

    common = ["--server", f"ws://127.0.0.1:{server_port}/ws", "--room", "vmc",
              "--secret-file", str(secret), "--audio", "none", "--loopback", "--duration", "40"]
    wave = POSES["wave"].codes(0.5)
    try:
        start("serve", "--port", str(server_port), "--secret-file", str(secret), log="serve.log")
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", server_port)) == 0, 20,
                  "server")
        start("call", *common, "--name", "performer", "--codes", f"vmc:127.0.0.1:{vmc_in}",
              log="performer.log")
        start("call", *common, "--name", "viewer", "--vmc-out",
              f"127.0.0.1:{receiver.address[1]}", log="viewer.log")
        with Sending(vmc_in, wave, humanoid):
            def arrived():
                codes = receiver.take()
                return codes if codes is not None and codes.face.max() > 0.5 else None
            codes = wait_for(arrived, 60, "the performer's codes at the far VMC receiver")
    finally:
        receiver.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        for log in logs:
            log.close()
    # The wire's quantisation (8-bit weights, 0.2 degree quaternions) is all that differs.
    assert np.abs(codes.face - wave.face).max() <= 0.5 / 255 + 1e-6
    ours = humanoid.local_rotations(wave)
    theirs = humanoid.local_rotations(codes)
    assert np.degrees(quat_angle_rad(ours, theirs)).max() < 2.0
    assert "relaying VMC on 127.0.0.1" in (tmp_path / "performer.log").read_text()
