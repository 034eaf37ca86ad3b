"""The voices of a call on the speakers: mixed, each delayed like its avatar.

Every remote voice frame (48 kHz, 20 ms, from ``net.call``'s ``on_audio``) is scheduled to
play at ``arrival + voice_delay_s(...)``: the time that remote's codes wait between arriving
and being shown (``net.playout.PlayoutBuffer.delay_s``, plus the window's frame time) less
how much later the voice arrives than its codes (``AUDIO_PATH_EXTRA_S``, measured). The
device's own output latency is taken into account: the mixer is asked for the samples that
will reach the DAC at a given ``time.monotonic()``.

With ``VoiceMixer(channels=2)`` (``--xr``, ``--spatial-voice``) each voice comes from where
its avatar stands: panned (``pan_gains``' balance law: a centred voice plays as in mono) and
attenuated with distance, from (pan, distance) pairs the window or the headset stage sends
(``voice_place`` of the avatar's head for the listener's view).

The device is a PortAudio output stream (PyPI ``sounddevice``, Debian ``libportaudio2``): a
kept library with a callback on its own thread, its DAC time per buffer, and device listing
for ``main.py devices``. Where no output opens, ``open_speakers`` returns None and a reason
(the call goes on silent).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 48000
# The voice arrives this much later than the codes of the same instant (no tracking latency):
# 20 ms of Opus packing, the codec's delay and aiortc's audio jitter buffer, which holds 4
# packets (80 ms) before it plays. Measured by bench/bench_lipsync.py on loopback,
# 2026-12-06: 110 and 113 ms (see docs/BENCHMARKS.md).
AUDIO_PATH_EXTRA_S = 0.110
# A stream's schedule is kept while its frames keep within this of where they should start
# (network jitter); beyond it (a gap, a new delay) the stream starts again from now.
RESYNC_S = 0.060
# Voices from their avatars (``VoiceMixer(channels=2)`` and ``place``): a voice this far
# away plays at its own level, farther ones at REFERENCE_DISTANCE_M / distance (never below
# MIN_DISTANCE_GAIN, never above 1: coming closer does not clip); it comes from the avatar's
# head, HEAD_HEIGHT_M above its feet.
REFERENCE_DISTANCE_M = 1.5
MIN_DISTANCE_GAIN = 0.2
HEAD_HEIGHT_M = 1.6


def voice_place(listener_from_world: np.ndarray, point) -> tuple[float, float]:
    """(pan, distance) of a voice at ``point`` (world metres) for a listener whose
    ``listener_from_world`` (4, 4) is in OpenGL / OpenXR axes (+X right, -Z ahead, as
    ``render.camera.Camera.camera_from_world`` and an XR head's inverse): pan is the sine of
    its azimuth, -1 wholly left .. 1 wholly right (a voice behind pans as its mirror ahead)."""
    p = np.asarray(listener_from_world, np.float64) @ np.append(np.asarray(point, np.float64), 1)
    x, ahead = float(p[0]), float(-p[2])
    across = float(np.hypot(x, ahead))
    pan = 0.0 if across < 1e-6 else float(np.clip(x / across, -1.0, 1.0))
    return pan, float(np.linalg.norm(p[:3]))


def pan_gains(pan: float, distance_m: float) -> tuple[float, float]:
    """(left, right) gains of a voice: the balance law (the near side at full level, the far
    one down to 0 as the voice moves to the side: a centred voice plays as it would in mono)
    times the distance's gain."""
    level = float(np.clip(REFERENCE_DISTANCE_M / max(distance_m, 1e-3), MIN_DISTANCE_GAIN, 1.0))
    pan = float(np.clip(pan, -1.0, 1.0))
    return level * min(1.0, 1.0 - pan), level * min(1.0, 1.0 + pan)


@dataclass
class _Chunk:
    start_s: float        # monotonic time its first sample plays
    samples: np.ndarray   # (n,) float32 mono


def voice_delay_s(playout_delay_s: float, display_s: float) -> float:
    """How long a voice frame waits after it arrives so it plays with its avatar: the codes
    wait ``playout_delay_s`` in their buffer and ``display_s`` more to be drawn, but the voice
    arrives AUDIO_PATH_EXTRA_S behind them; never negative (a voice already later than its
    avatar plays at once)."""
    return max(0.0, playout_delay_s + display_s - AUDIO_PATH_EXTRA_S)


class VoiceMixer:
    """Per remote a queue of scheduled chunks; ``mix(start_s, n)`` sums what plays in
    ``[start_s, start_s + n / SAMPLE_RATE)``. Thread-safe: ``push`` and ``place`` on the
    call's thread, ``mix`` on the audio device's.

    ``channels`` 1: the voices mixed as they are. 2: stereo, each voice panned and attenuated
    from where its avatar stands (``place``: ``voice_place``'s (pan, distance) per remote;
    a voice not placed plays centred at full level, as in mono)."""

    def __init__(self, channels: int = 1):
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.channels = channels
        self._streams: dict[str, deque[_Chunk]] = {}
        self._next_s: dict[str, float] = {}
        self.levels: dict[str, float] = {}  # RMS of each remote's newest frame (0..1)
        self.gain: dict[str, float] = {}     # per remote volume (1: as sent)
        self.places: dict[str, tuple[float, float]] = {}  # remote -> (pan, distance)
        self._lock = threading.Lock()

    def place(self, places: dict) -> None:
        """Where each remote's voice comes from now: {remote_id: (pan, distance_m)}."""
        with self._lock:
            self.places = {key: (float(pan), float(distance))
                           for key, (pan, distance) in places.items()}

    def push(self, remote_id: str, samples: np.ndarray, arrival_s: float,
             delay_s: float) -> float:
        """Schedule ``samples`` (float32 mono at 48 kHz) arrived at ``arrival_s``
        (monotonic) to play after ``delay_s``; returns the time its first sample plays."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        target = arrival_s + max(0.0, delay_s)
        with self._lock:
            self.levels[remote_id] = float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0
            start = self._next_s.get(remote_id)
            if start is None or abs(start - target) > RESYNC_S:
                start = target
            self._streams.setdefault(remote_id, deque()).append(_Chunk(start, samples))
            self._next_s[remote_id] = start + len(samples) / SAMPLE_RATE
        return start

    def keep_only(self, remote_ids) -> None:
        """Forget the voices of everyone not in ``remote_ids`` (they left)."""
        with self._lock:
            for remote_id in set(self._streams) - set(remote_ids):
                del self._streams[remote_id]
                self._next_s.pop(remote_id, None)
                self.levels.pop(remote_id, None)

    def mix(self, start_s: float, count: int) -> np.ndarray:
        """The ``count`` samples that play from ``start_s`` (monotonic), clipped to [-1, 1]:
        (count,) in mono, (count, 2) left and right in stereo."""
        stereo = self.channels == 2
        out = np.zeros((count, 2) if stereo else count, np.float32)
        end_s = start_s + count / SAMPLE_RATE
        with self._lock:
            for remote_id, chunks in self._streams.items():
                gain = self.gain.get(remote_id, 1.0)
                if stereo:
                    place = self.places.get(remote_id)
                    gain = gain * (np.array(pan_gains(*place), np.float32) if place is not None
                                   else np.ones(2, np.float32))
                while chunks and chunks[0].start_s + len(chunks[0].samples) / SAMPLE_RATE \
                        <= start_s:
                    chunks.popleft()  # played (or too late to play)
                for chunk in chunks:
                    if chunk.start_s >= end_s:
                        break
                    offset = int(round((chunk.start_s - start_s) * SAMPLE_RATE))
                    src = chunk.samples[max(0, -offset):]
                    dst = max(0, offset)
                    n = min(len(src), count - dst)
                    if n > 0:
                        out[dst:dst + n] += (src[:n, None] * gain) if stereo else gain * src[:n]
        return np.clip(out, -1.0, 1.0)


class Speakers:
    """A PortAudio output stream playing ``mixer`` at the DAC's time."""

    def __init__(self, mixer: VoiceMixer, device: str | int | None = None):
        import time

        import sounddevice

        self.mixer = mixer
        self.underflows = 0
        self.blocks = 0
        self.voiced_blocks = 0  # blocks with a voice in them (peak above 1/1000)
        self.latency_s = 0.0

        def callback(outdata, frames, when, status) -> None:
            if status.output_underflow:
                self.underflows += 1
            # The DAC plays this buffer (outputBufferDacTime - currentTime) from now.
            ahead = max(0.0, when.outputBufferDacTime - when.currentTime) \
                if when.outputBufferDacTime else self.latency_s
            mixed = mixer.mix(time.monotonic() + ahead, frames)
            if mixed.ndim == 2 and outdata.shape[1] == 1:
                mixed = mixed.mean(axis=1)  # a mono device after all
            outdata[:] = mixed.reshape(len(mixed), -1)
            self.blocks += 1
            if len(mixed) and float(np.abs(mixed).max()) > 1e-3:
                self.voiced_blocks += 1

        try:
            self.stream = sounddevice.OutputStream(
                samplerate=SAMPLE_RATE, channels=mixer.channels, dtype="float32",
                device=device, blocksize=480, latency="low", callback=callback)
        except sounddevice.PortAudioError:
            if mixer.channels == 1:
                raise
            self.stream = sounddevice.OutputStream(  # no stereo on this output: mono
                samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device,
                blocksize=480, latency="low", callback=callback)
        self.channels = self.stream.channels
        self.latency_s = float(self.stream.latency)
        self.device_name = sounddevice.query_devices(self.stream.device)["name"]
        self.stream.start()

    def summary(self) -> dict:
        return {"device": self.device_name, "latency_ms": self.latency_s * 1000,
                "channels": self.channels,
                "blocks": self.blocks, "voiced_blocks": self.voiced_blocks,
                "underflows": self.underflows}

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def open_speakers(mixer: VoiceMixer, device: str | None) -> tuple[Speakers | None, str]:
    """(Speakers, description) or (None, why no sound will play)."""
    try:
        import sounddevice  # raises OSError without libportaudio2
    except OSError as exc:
        return None, f"no sound output: {exc} (Debian: apt install libportaudio2)"
    if device is None and not any(info["max_output_channels"] > 0
                                  for info in sounddevice.query_devices()):
        return None, "no sound output device found"
    try:
        chosen: str | int | None = int(device) if device and device.isdigit() else device
        speakers = Speakers(mixer, chosen)
    except Exception as exc:  # noqa: BLE001 - PortAudio reports missing devices many ways
        return None, f"no sound output{f' on {device!r}' if device else ''}: {exc}"
    return speakers, f"{speakers.device_name} ({speakers.latency_s * 1000:.0f} ms latency)"


def sound_devices() -> tuple[list[str], list[str], str | None]:
    """(microphones, speakers, why none are listed) as 'index: name (host API)' lines."""
    try:
        import sounddevice
    except OSError as exc:
        return [], [], f"{exc} (Debian: apt install libportaudio2)"
    apis = sounddevice.query_hostapis()
    mics, outs = [], []
    for index, info in enumerate(sounddevice.query_devices()):
        line = f"{index}: {info['name']} ({apis[info['hostapi']]['name']})"
        if info["max_input_channels"] > 0:
            mics.append(line)
        if info["max_output_channels"] > 0:
            outs.append(line)
    return mics, outs, None
