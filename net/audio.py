"""Voice for a call: where the outgoing audio comes from, and what to do with incoming audio.

Sources (``open_audio_source(spec)``):

- ``"mic"``: the default microphone through pyav (PulseAudio first, then ALSA). Where there is
  none (a server, a container), a warning says so and the call sends silence.
- ``"tone:FREQ"``: a sine tone (tests, and checking a set-up by ear).
- a file path: any audio file FFmpeg reads, looped.
- ``"none"``: no audio track at all.

aiortc encodes whatever track it is given as Opus (48 kHz). Incoming audio arrives as pyav
``AudioFrame``s; ``AudioRecorder`` writes them to a file, and ``dominant_frequency_hz`` finds a
test tone in received samples.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import os
import time
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("splatcall.audio")

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, Opus's usual frame
VOICE_BITRATE = 32000  # Opus at 32 kbit/s is transparent for speech


def use_voice_bitrate(bits_per_s: int = VOICE_BITRATE) -> None:
    """Make aiortc's Opus encoder run at ``bits_per_s``. aiortc fixes it at 96 kbit/s (a
    music setting) and offers no parameter, so its encoder's constructor is wrapped for this
    process; the codec context opens at the first frame, after the rate is set."""
    from aiortc.codecs import opus

    original = getattr(opus.OpusEncoder, "_splatcall_original_init", opus.OpusEncoder.__init__)

    def __init__(self, *a, **k):
        original(self, *a, **k)
        self.codec.bit_rate = int(bits_per_s)

    __init__._splatcall_original_init = original  # type: ignore[attr-defined]
    opus.OpusEncoder.__init__ = __init__
    opus.OpusEncoder._splatcall_original_init = original


class ToneTrack(MediaStreamTrack):
    """A sine tone of ``frequency_hz``, 48 kHz mono s16, paced in real time."""

    kind = "audio"

    def __init__(self, frequency_hz: float = 440.0, amplitude: float = 0.3):
        super().__init__()
        self.frequency_hz = float(frequency_hz)
        self.amplitude = float(amplitude)
        self._sample = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._sample / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        n = np.arange(self._sample, self._sample + FRAME_SAMPLES)
        wave = self.amplitude * np.sin(2 * np.pi * self.frequency_hz * n / SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray((wave * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sample += FRAME_SAMPLES
        return frame


class SilenceTrack(ToneTrack):
    """Silence, paced like a microphone: the stand-in when no microphone can be opened."""

    def __init__(self):
        super().__init__(frequency_hz=0.0, amplitude=0.0)


def _open_microphone(device: str = "default"):
    """The microphone ``device`` (PulseAudio, else ALSA) as an aiortc track, or None (with the
    reasons) if none opens."""
    from aiortc.contrib.media import MediaPlayer

    attempts = [(device, "pulse"), (device, "alsa")]
    reasons = []
    for device, fmt in attempts:
        try:
            player = MediaPlayer(device, format=fmt, options={"sample_rate": str(SAMPLE_RATE)})
        except Exception as exc:  # noqa: BLE001 - pyav raises many kinds here
            reasons.append(f"{fmt}: {exc}")
            continue
        if player.audio is not None:
            return player.audio, f"microphone ({fmt})"
    return None, "; ".join(reasons)


def open_audio_source(spec: str, mic_device: str = "default"
                      ) -> tuple[MediaStreamTrack | None, str]:
    """The outgoing audio track for ``spec`` and a one-line description of it (``mic``:
    the input ``mic_device``).

    Raises ``ValueError`` for a bad spec or an unreadable file (a user error); a missing
    microphone is not an error: it logs a warning and returns a ``SilenceTrack``."""
    spec = spec.strip()
    if spec == "none":
        return None, "no audio"
    if spec == "mic":
        track, detail = _open_microphone(mic_device)
        if track is None:
            log.warning("no microphone could be opened (%s): sending silence", detail)
            return SilenceTrack(), "silence (no microphone found)"
        return track, detail
    if spec.startswith("tone:"):
        try:
            frequency = float(spec[5:])
        except ValueError:
            raise ValueError(f"tone frequency {spec[5:]!r} is not a number") from None
        if not 20 <= frequency <= 20000:
            raise ValueError("tone frequency must be within 20..20000 Hz")
        return ToneTrack(frequency), f"{frequency:g} Hz tone"
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"audio source {spec!r} is not 'mic', 'none', 'tone:HZ' or a file")
    from aiortc.contrib.media import MediaPlayer

    try:
        player = MediaPlayer(os.fspath(path), loop=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read audio from {path}: {exc}") from None
    if player.audio is None:
        raise ValueError(f"{path} has no audio stream")
    return player.audio, f"audio file {path.name}"


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """An incoming audio frame as float32 mono samples in [-1, 1] (at ``frame.sample_rate``)."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        mono = data.astype(np.float32).mean(axis=0)
    else:
        channels = len(frame.layout.channels)
        mono = data.reshape(-1, channels).astype(np.float32).mean(axis=1)
    if frame.format.name.startswith("s16"):
        mono /= 32768.0
    return mono


def dominant_frequency_hz(samples: np.ndarray, sample_rate: int) -> float:
    """The strongest frequency in ``samples`` (Hann window, FFT peak with parabolic
    interpolation between bins)."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * sample_rate / len(samples))


class AudioRecorder:
    """Writes incoming audio frames of one participant to a WAV file, flushing as it goes so
    that a crash loses at most the last moments."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._container = av.open(os.fspath(self.path), mode="w", format="wav")
        self._stream = self._container.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        self._stream.layout = "mono"
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.samples = 0

    def write(self, frame: av.AudioFrame) -> None:
        for out in self._resampler.resample(frame):
            out.pts = None
            for packet in self._stream.encode(out):
                self._container.mux(packet)
            self.samples += out.samples

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
