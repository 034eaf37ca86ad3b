#!/usr/bin/env python3
"""Benchmark the call recording (net/recording.py): size per minute per participant with
voice, and the writer's CPU time per minute of call.

Writes one minute (on a simulated clock, so it runs faster than real time) of a call of
``--participants`` people at ``--fps``: each sends the built-in ``talk`` animation with
tracker-like noise on every part (Gaussian, ``--noise-deg`` on each bone rotation, 0.02 on
each face weight, so consecutive frames differ as a real tracker's do and compress as
badly), and a voice (the speech of jwpIntro.mp4 from the test media, looped, in 20 ms
frames as aiortc delivers them). Writes bench/results/recording.json and prints a line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.poses import POSES  # noqa: E402
from common.rotation import quat_from_axis_angle, quat_multiply  # noqa: E402
from net.recording import RecordingWriter, read_recording  # noqa: E402
from render.video import read_audio  # noqa: E402


def noisy(codes, rng, noise_deg: float):
    def jitter(q):
        axes = rng.normal(size=(len(q), 3))
        angles = np.radians(noise_deg) * rng.normal(size=len(q))
        turn = np.stack([quat_from_axis_angle(a / np.linalg.norm(a), t)
                         for a, t in zip(axes, angles)])
        return np.stack([quat_multiply(t, x) for t, x in zip(turn, q)]).astype(np.float32)

    return codes.replace(body=jitter(codes.body), head=jitter(codes.head),
                         hands=np.stack([jitter(codes.hands[0]), jitter(codes.hands[1])]),
                         face=np.clip(codes.face + rng.normal(0, 0.02, 52), 0, 1)
                         .astype(np.float32))


def main() -> int:
    import av

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=2)
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--noise-deg", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recording.json")
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    base = POSES["talk"].frames(args.fps)
    frames = [noisy(f, rng, args.noise_deg) for f in base]
    speech = ROOT / ".cache" / "media" / "jwpIntro.mp4"
    voice = (read_audio(speech, 48000) if speech.exists()
             else 0.3 * np.sin(2 * np.pi * 220 * np.arange(48000 * 6) / 48000))
    voice16 = (np.clip(voice, -1, 1) * 32767).astype(np.int16)
    clock = [0.0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "call.rec"
        writer = RecordingWriter(path, args.fps, "p0", clock=lambda: clock[0])
        ids = [f"p{i}" for i in range(args.participants)]
        for who in ids:
            writer.join(who, who)
        started = time.process_time()
        frame_count = int(args.seconds * args.fps)
        sample = 0
        for i in range(frame_count):
            clock[0] = i / args.fps
            for k, who in enumerate(ids):
                writer.codes(who, frames[(i + 7 * k) % len(frames)])
            while sample + 960 <= clock[0] * 48000:
                at = sample % (len(voice16) - 960)
                chunk = voice16[at:at + 960]
                for who in ids:
                    frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16",
                                                       layout="mono")
                    frame.sample_rate = 48000
                    writer.audio(who, frame, t=(sample + 960) / 48000)
                sample += 960
        writer.close()
        cpu_s = time.process_time() - started
        size = os.path.getsize(path)
        back = read_recording(path)
        assert all(len(p.frames) == frame_count for p in back.participants)
    minutes = args.seconds / 60
    result = {
        "participants": args.participants, "fps": args.fps, "seconds": args.seconds,
        "noise_deg": args.noise_deg, "file_bytes": size,
        "mb_per_minute_per_participant": size / minutes / args.participants / 1e6,
        "codes_mb_per_minute_per_participant":
            writer.bytes_codes / minutes / args.participants / 1e6,
        "writer_cpu_s_per_minute": cpu_s / minutes,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.participants} participants at {args.fps:g} fps, noise {args.noise_deg} deg: "
          f"{result['mb_per_minute_per_participant']:.3f} MB/min per participant "
          f"(codes {result['codes_mb_per_minute_per_participant']:.3f}), writer CPU "
          f"{result['writer_cpu_s_per_minute']:.2f} s per minute of call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
