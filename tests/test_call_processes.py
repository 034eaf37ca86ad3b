"""A real call between separate processes on loopback: ``main.py serve`` plus two (then three)
``main.py call`` processes. Checks: connected in under a second; 60 Hz codes for over 10 s
with no loss; each side's test tone detected at the far end; a participant killed mid-call
and restarted rejoins, and the other side recovers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.codes import Codes, write_jsonl
from common.rotation import quat_from_axis_angle
from net.audio import dominant_frequency_hz
from net.recording import read_recording
from tests.processes import free_port, read_stats, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _voice_frequency(samples: np.ndarray) -> float:
    assert len(samples) > 48000, f"only {len(samples)} samples recorded"
    return dominant_frequency_hz(samples[-96000:], 48000)


@pytest.mark.slow
def test_two_processes_call_then_one_restarts(tmp_path):
    frames = [Codes(seq=i, head=np.tile(quat_from_axis_angle([0, 1, 0], 0.01 * i), (4, 1))
                    .astype(np.float32), face=np.full(52, (i % 60) / 60, np.float32))
              for i in range(120)]
    codes_file = tmp_path / "codes.jsonl"
    write_jsonl(codes_file, frames)
    port = free_port()
    secret = tmp_path / "secret.key"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                                stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def participant(name: str, tone: int, duration: float) -> tuple[subprocess.Popen, Path]:
        stats = tmp_path / f"{name}.json"
        proc = start("call", "--server", f"ws://127.0.0.1:{port}/ws", "--room", "test",
                     "--secret-file", str(secret), "--name", name, "--codes", str(codes_file),
                     "--audio", f"tone:{tone}", "--record", str(tmp_path / f"{name}.rec"),
                     "--stats", str(stats), "--duration", str(duration), "--loopback",
                     log=f"{name}.log")
        return proc, stats

    try:
        start("serve", "--port", str(port), "--secret-file", str(secret), log="serve.log")
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "server")
        alice, alice_stats = participant("alice", 440, 28)
        wait_for(lambda: (read_stats(alice_stats) or {}).get("joined_s") is not None, 30,
                  "alice to join")
        bob, bob_stats = participant("bob", 1000, 60)
        # Let bob run until he has 11 s of codes, then kill him without warning.
        wait_for(lambda: any(r["codes"]["unique"] >= 660 for r in
                              (read_stats(bob_stats) or {}).get("remotes", {}).values()),
                  40, "bob to receive 11 s of codes")
        bob.send_signal(signal.SIGKILL)
        bob.wait()
        before = read_stats(bob_stats)
        (remote,) = before["remotes"].values()
        assert remote["name"] == "alice"
        assert remote["connect_s"] < 1.0, remote
        assert remote["codes"]["lost"] == 0 and remote["malformed"] == 0, remote["codes"]
        connected = [e for e in before["events"] if e["event"] == "connected"]
        assert connected and connected[0]["t"] - before["joined_s"] < 1.0, before["events"]

        # bob comes back as a new process
        bob2, bob2_stats = participant("bob", 1000, 6)
        assert bob2.wait(timeout=60) == 0
        after = read_stats(bob2_stats)
        (remote2,) = after["remotes"].values() if after["remotes"] else [after["departed"][-1]]
        assert remote2["connect_s"] < 1.0
        assert remote2["codes"]["unique"] > 4 * 60 and remote2["codes"]["lost"] == 0
        assert alice.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    final = read_stats(alice_stats)
    gone = {d["name"]: d for d in final["departed"]}
    # alice saw bob's crash as a departure, and bob's second run too (he left after 6 s)
    assert len(final["departed"]) == 2, final["departed"]
    first, second = final["departed"]
    assert first["why"] == "left the room" and second["why"] == "left the room"
    assert first["codes"]["unique"] >= 600 and first["codes"]["lost"] == 0, first
    assert second["codes"]["unique"] >= 4 * 60 and second["codes"]["lost"] == 0, second
    assert "bob" in gone
    # Voice: each side's tone at the far end (alice hears 1000 Hz, bob heard 440 Hz).
    bob_rec = read_recording(tmp_path / "bob.rec")  # bob's second run rewrote it
    alice_rec = read_recording(tmp_path / "alice.rec")
    bob_heard = [p for p in bob_rec.participants if p.name == "alice"]
    alice_heard = [p for p in alice_rec.participants if p.name == "bob"]
    assert len(bob_heard) == 1 and len(alice_heard) == 2
    assert abs(_voice_frequency(bob_rec.voice_of(bob_heard[0])) - 440) < 5
    for who in alice_heard:
        assert abs(_voice_frequency(alice_rec.voice_of(who)) - 1000) < 5
    # the played-out codes were recorded and are valid frames
    assert len(alice_heard[0].frames) > 300 and isinstance(alice_heard[0].frames[-1], Codes)
