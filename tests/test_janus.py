"""Integration: Debian's Janus (VideoRoom) in a network namespace as the SFU for a larger
room. Four real aiortc participants publish codes and a tone each through it; every one
receives every other's codes (no loss once connected) and hears every other's tone."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from avatar.codes import Codes
from net.audio import ToneTrack, dominant_frequency_hz, frame_to_mono
from tests.janus_server import JanusServer, serve_janus

pytestmark = pytest.mark.integration

PARTICIPANTS = 4


@pytest.fixture(scope="module")
def janus():
    yield from serve_janus()


async def _room(janus: JanusServer):
    from net.config import CallConfig
    from net.janus import JanusCall

    heard: dict[tuple[int, str], list] = {}
    tones = [300 + 150 * i for i in range(PARTICIPANTS)]
    calls = []
    for i in range(PARTICIPANTS):
        call = JanusCall(CallConfig(url=janus.url, room="5150", name=f"p{i}",
                                    host_addresses=[janus.client_address]),
                         audio_track=ToneTrack(tones[i]),
                         on_audio=lambda feed, frame, i=i: heard.setdefault((i, feed), [])
                         .append(frame_to_mono(frame)))
        await call.join()
        calls.append(call)
    # wait until every subscription carries codes
    deadline = time.monotonic() + 20
    while True:
        for seq in range(6):
            for call in calls:
                call.send_codes(Codes(t=time.monotonic(), seq=seq))
        if all(len(c.remotes) == PARTICIPANTS - 1
               and all(r.stats.unique for r in c.remotes.values())
               for c in calls):
            break
        assert time.monotonic() < deadline, [c.stats() for c in calls]
        await asyncio.sleep(0.1)
    before = {(i, f): r.stats.unique for i, c in enumerate(calls) for f, r in c.remotes.items()}
    for seq in range(1000, 1000 + 180):  # 3 s at 60 Hz
        now = time.monotonic()
        for call in calls:
            call.send_codes(Codes(t=now, seq=seq))
        await asyncio.sleep(1 / 60)
    await asyncio.sleep(0.5)
    ids = {c.id: i for i, c in enumerate(calls)}
    result = {"codes": {(i, f): (r.stats.unique - before[(i, f)], r.stats.summary())
                        for i, c in enumerate(calls) for f, r in c.remotes.items()},
              "tones": {(i, ids[f]): dominant_frequency_hz(np.concatenate(v)[-48000:], 48000)
                        for (i, f), v in heard.items()},
              "expected_tones": tones}
    for call in calls:
        await call.leave()
    return result


def test_four_participants_through_janus(janus):
    result = asyncio.run(asyncio.wait_for(_room(janus), 120))
    assert len(result["codes"]) == PARTICIPANTS * (PARTICIPANTS - 1)
    for key, (new_frames, summary) in result["codes"].items():
        assert new_frames == 180, (key, summary)  # all 3 s of 60 Hz codes, none lost
    assert len(result["tones"]) == PARTICIPANTS * (PARTICIPANTS - 1)
    for (listener, speaker), frequency in result["tones"].items():
        assert abs(frequency - result["expected_tones"][speaker]) < 5, (listener, speaker)


def test_call_command_through_janus(janus, tmp_path):
    """`main.py call --janus`: two processes meet through the SFU; each records the other's
    codes and voice."""
    import subprocess
    import sys
    from pathlib import Path

    from avatar.codes import write_jsonl
    from net.recording import read_recording

    codes = tmp_path / "codes.jsonl"
    write_jsonl(codes, [Codes(seq=i, face=np.full(52, (i % 30) / 30, np.float32))
                        for i in range(60)])
    root = Path(__file__).resolve().parents[1]
    common = ["main.py", "call", "--janus", janus.url, "--room", "5151", "--ice-address",
              janus.client_address, "--codes", str(codes), "--duration", "8", "--fps", "30"]
    procs = [subprocess.Popen([sys.executable, *common, "--name", name, "--audio", f"tone:{tone}",
                               "--record", str(tmp_path / f"{name}.ts")], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, tone in (("ann", 400), ("ben", 700))]
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    for name, other in (("ann", "ben"), ("ben", "ann")):
        recording = read_recording(tmp_path / f"{name}.ts")
        remote = [p for p in recording.participants if p.name == other]
        assert remote, outputs
        frames = remote[0].frames
        assert len(frames) > 60, (name, len(frames))
        assert len({round(c.blendshape("jawOpen"), 2) for c in frames}) > 5  # the codes vary
        assert np.abs(recording.voice_of(remote[0])).max() > 0.01  # the other's tone


def test_a_room_through_janus_with_three_participants_each_gets_the_others_own_avatars(
        janus, tmp_path):
    """`main.py call --janus` x3, each with its own avatar (the small default recoloured):
    every participant fetches the other two's avatars through Janus's data channels, and
    what it holds is byte for byte theirs, in their colours."""
    import dataclasses
    import hashlib
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from avatar.codes import write_jsonl
    from avatar.lca import load_avatar_file, save_avatar_file
    from tests.avatars import small_default
    from tests.processes import read_stats, wait_for

    names = ("ann", "ben", "cat")
    colours = {"ann": (0.9, 0.1, 0.1), "ben": (0.1, 0.8, 0.1), "cat": (0.1, 0.2, 0.9)}
    base = small_default({"test": "janus room"})
    sha = {}
    for name in names:
        data = dataclasses.replace(base, name=name, colors=np.tile(
            np.array(colours[name], np.float32), (len(base.colors), 1)))
        save_avatar_file(tmp_path / f"{name}.lca", data)
        sha[name] = hashlib.sha256((tmp_path / f"{name}.lca").read_bytes()).hexdigest()
    codes = tmp_path / "codes.jsonl"
    write_jsonl(codes, [Codes(seq=i) for i in range(30)])
    root = Path(__file__).resolve().parents[1]
    procs = []
    try:
        for name in names:
            procs.append(subprocess.Popen(
                [sys.executable, "main.py", "call", "--janus", janus.url, "--room", "5152",
                 "--ice-address", janus.client_address, "--codes", str(codes), "--fps", "30",
                 "--audio", "none", "--name", name, "--avatar", str(tmp_path / f"{name}.lca"),
                 "--avatar-cache", str(tmp_path / f"cache-{name}"),
                 "--stats", str(tmp_path / f"{name}.json"), "--duration", "120", "--no-window"],
                cwd=root, stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT))

        def avatars_of(name):
            stats = read_stats(tmp_path / f"{name}.json") or {}
            return {r["name"]: r["avatar_sha256"] for r in stats.get("remotes", {}).values()}

        def served(name):
            return (read_stats(tmp_path / f"{name}.json") or {}).get("avatar_served", 0)

        def everyone_has_everyone():
            # The stats files are written once a second: a sender's count of what it served
            # can lag its receivers' by that second, so wait for both.
            return all(len([v for v in avatars_of(n).values() if v]) == 2 and served(n) >= 2
                       for n in names)

        try:
            wait_for(everyone_has_everyone, 90, "every avatar to arrive", poll_s=0.5)
        except AssertionError:
            logs = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in names}
            raise AssertionError(json.dumps({n: avatars_of(n) for n in names})
                                 + str(logs)) from None
        for name in names:
            held = avatars_of(name)
            assert held == {other: sha[other] for other in names if other != name}, (name, held)
            for other in names:
                if other == name:
                    continue
                cached = load_avatar_file(tmp_path / f"cache-{name}" / f"{sha[other]}.lca")
                assert np.allclose(cached.colors.mean(axis=0), colours[other], atol=0.02)
            stats = read_stats(tmp_path / f"{name}.json")
            assert stats["avatar_served"] >= 2 and stats["avatar_streams"] >= 1, stats
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for name in names:
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
