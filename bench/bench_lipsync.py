"""Lip sync: how far a voice plays from its avatar, through two real calls on loopback.

One process: a signalling server and two ``net.call.Call`` participants on 127.0.0.1. The
sender's voice is silence with a click every half second; its codes go at 60 Hz stamped with
their capture time ``t = now - tracking latency`` (the tracker's latency simulated:
``--tracking-ms``). A live microphone hands over a 20 ms frame once its last sample is
captured, so a click at a frame's first sample was captured 20 ms before the frame left.

The receiver does what ``main.py call`` does: each voice frame goes to ``app.speakers``'s
mixer at arrival + ``voice_delay_s(that remote's playout delay, 0)``; the mixer says when
each sample reaches the speakers. It also reports how much later than the codes of the same
instant the voice arrives (``AUDIO_PATH_EXTRA_S`` comes from this). The avatar shows the
pose captured at ``T`` at ``T + base + delay`` (``net.playout``: ``playout_time``). For
every click the offset is (when the click plays) - (when the avatar shows the instant it
was captured): positive = the voice is late. The window's drawing comes on top of the
avatar's time (``main.py call`` adds the window's frame time to the voice's delay; not
simulated here).

    .venv/bin/python bench/bench_lipsync.py [--seconds 12] [--tracking-ms 0 33]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = b"lipsync-bench-secret-0123456789ab"
CLICK_EVERY = 25  # frames: a click each half second


def click_track(captures: list):
    import av
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    from net.audio import FRAME_SAMPLES, SAMPLE_RATE

    class ClickTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.frames = 0
            self.start = None

        async def recv(self):
            if self.readyState != "live":
                raise MediaStreamError
            if self.start is None:
                self.start = time.monotonic()
            # Frame k is handed over when its last sample is captured.
            due = self.start + (self.frames + 1) * FRAME_SAMPLES / SAMPLE_RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            samples = np.zeros(FRAME_SAMPLES, np.int16)
            if self.frames % CLICK_EVERY == 0 and self.frames:
                samples[:48] = 26000  # 1 ms at the frame's first sample
                captures.append(time.monotonic() - FRAME_SAMPLES / SAMPLE_RATE)
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self.frames * FRAME_SAMPLES
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            self.frames += 1
            return frame

    return ClickTrack()


async def measure(seconds: float, tracking_s: float, cache: Path) -> dict:
    from app.speakers import SAMPLE_RATE, VoiceMixer, voice_delay_s
    from avatar.codes import Codes
    from net.audio import frame_to_mono
    from net.call import Call, CallConfig
    from net.signalling import SignallingServer
    from net.tokens import make_token

    server = SignallingServer(SECRET)
    port = await server.start()

    def config(name):
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room="r",
                          token=make_token(SECRET, "r"), name=name,
                          host_addresses=["127.0.0.1"], avatar_cache_dir=cache / name)

    captures: list[float] = []
    mixer = VoiceMixer()
    played: list[float] = []   # when each detected click reaches the speakers
    shown: list[float] = []    # base + delay when it arrived: the avatar shows T at T + this
    heard: list[tuple] = []    # (when the click arrived, codes' base then)
    receiver = None

    def on_audio(remote_id, frame):
        remote = receiver.remotes.get(remote_id)
        if remote is None or remote.playout.base_s is None:
            return
        samples = frame_to_mono(frame)
        now = time.monotonic()
        start = mixer.push(remote_id, samples, now, voice_delay_s(remote.playout.delay_s, 0.0))
        loud = np.flatnonzero(np.abs(samples) > 0.2)
        if len(loud):
            played.append(start + loud[0] / SAMPLE_RATE)
            heard.append((now + loud[0] / SAMPLE_RATE, remote.playout.base_s))
            # The pose captured at T shows at T + base + delay (as of now).
            shown.append(remote.playout.base_s + remote.playout.delay_s)

    receiver = Call(config("receiver"), on_audio=on_audio)
    sender = Call(config("sender"), audio_track=click_track(captures))
    await receiver.join()
    await sender.join()
    seq = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        sender.send_codes(Codes(t=now - tracking_s, seq=seq))
        receiver.poses(now)
        seq += 1
        await asyncio.sleep(1 / 60)
    await sender.leave()
    await receiver.leave()
    await server.stop()
    # Pair each played click with the capture it came from (the nearest earlier capture).
    offsets, extra = [], []
    for play, show_after, (arrived, base) in zip(played, shown, heard):
        earlier = [c for c in captures if c < arrived]
        if earlier:
            capture = earlier[-1]
            offsets.append(play - (capture + show_after))
            # The voice path's latency beyond the codes' (base = their fastest transit).
            extra.append(arrived - capture - base)
    offsets = np.array(offsets[2:]) * 1000  # the first clicks meet a playout still settling
    extra = np.array(extra[2:]) * 1000
    return {"clicks": len(offsets), "median_ms": float(np.median(offsets)),
            "p10_ms": float(np.percentile(offsets, 10)),
            "p90_ms": float(np.percentile(offsets, 90)),
            "voice_extra_ms": float(np.median(extra))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--tracking-ms", type=float, nargs="+", default=[0.0, 33.0])
    args = parser.parse_args()
    for tracking_ms in args.tracking_ms:
        with tempfile.TemporaryDirectory() as cache:
            result = asyncio.run(measure(args.seconds, tracking_ms / 1000, Path(cache)))
        print(f"tracking {tracking_ms:.0f} ms: voice - avatar median {result['median_ms']:+.1f} "
              f"ms (p10 {result['p10_ms']:+.1f}, p90 {result['p90_ms']:+.1f}) over "
              f"{result['clicks']} clicks; the voice arrives {result['voice_extra_ms']:.1f} ms "
              "after the codes of the same instant", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
