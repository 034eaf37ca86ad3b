"""Offscreen target: frames (H, W, 3) uint8 into an H.264 MP4 (pyav) or a PNG.

The file is written under a temporary name and renamed when complete, so a crash or an
interrupt never leaves a half-written file that looks finished.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from common.files import part_path, replacing

class VideoError(RuntimeError):
    """The output cannot be written (bad path, no encoder, disk full)."""


def to_uint8(rgba: np.ndarray, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Premultiplied float RGBA (H, W, 4) over a background colour -> (H, W, 3) uint8."""
    rgb = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * np.asarray(background, np.float32)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> None:
    from PIL import Image

    path = Path(path)
    try:
        with replacing(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
    except OSError as exc:
        raise VideoError(f"cannot write {path}: {exc.strerror or exc}") from None


class VideoWriter:
    """H.264 (yuv420p) MP4 writer, with an optional mono AAC track (``audio_rate`` Hz, given
    as float samples through ``write_audio``); use as a context manager. Width and height
    must be even."""

    AUDIO_FRAME = 1024  # AAC's frame size

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 30.0,
                 crf: int = 18, audio_rate: int | None = None):
        import av

        if width % 2 or height % 2:
            raise VideoError(f"H.264 needs an even frame size, got {width}x{height}")
        self.path = Path(path)
        self.tmp = part_path(self.path)
        try:
            self.container = av.open(str(self.tmp), mode="w", format="mp4")
        except (OSError, av.FFmpegError) as exc:
            raise VideoError(f"cannot write {self.path}: {exc}") from None
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0
        self.audio = None
        self.audio_samples = 0
        if audio_rate is not None:
            self.audio = self.container.add_stream("aac", rate=int(audio_rate))
            self.audio.layout = "mono"

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono samples (float, [-1, 1]) to the audio track."""
        import av

        if self.audio is None:
            raise VideoError("this writer was opened without an audio track")
        samples = np.clip(np.asarray(samples, dtype=np.float32).ravel(), -1.0, 1.0)
        for start in range(0, len(samples), self.AUDIO_FRAME):
            # A short last frame stays short (FFmpeg's AAC encoder takes one): the track then
            # lasts exactly as long as the samples given.
            chunk = samples[start:start + self.AUDIO_FRAME]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = self.audio.rate
            frame.pts = self.audio_samples
            self.audio_samples += len(chunk)
            for packet in self.audio.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        for stream in (self.stream, self.audio):
            if stream is not None:
                for packet in stream.encode():
                    self.container.mux(packet)
        self.container.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_audio(path: str | Path, rate: int = 48000) -> np.ndarray:
    """All of a file's first audio stream as mono float32 samples at ``rate`` Hz."""
    import av

    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise VideoError(f"cannot read audio from {path}: {exc}") from None
    with container:
        if not container.streams.audio:
            raise VideoError(f"{path} has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().ravel())
        except av.FFmpegError as exc:
            raise VideoError(f"{path}: audio breaks off ({exc})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
