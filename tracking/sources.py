"""Frame sources: a webcam, a video file, one image or a folder of images.

Every source yields ``Frame`` objects (RGB uint8 pixels plus the capture time on this
process's monotonic clock) from ``read()``, which returns ``None`` at the end of a finite
source and raises ``SourceLost`` when a live source breaks (a camera unplugged, a stream
cut). A lost source may come back: ``reopen()`` tries once and says whether it worked.

``open_source(spec)`` turns a command-line INPUT into a source: ``camera`` / ``camera:N`` /
``camera:/dev/videoN``, a video file, an image file or a folder of images.

Cameras are read through pyav's V4L2 demuxer (FFmpeg), which decodes MJPEG and raw YUV in
C and hands back RGB; no camera gives a ``SourceError`` that lists the devices found.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class SourceError(RuntimeError):
    """A source that cannot be opened (no such camera, unreadable file)."""


class SourceLost(RuntimeError):
    """A live source stopped delivering frames mid-run (camera unplugged, stream broken)."""


@dataclass(eq=False)
class Frame:
    """One picture: ``image`` (H, W, 3) uint8 RGB, ``t`` capture time (time.monotonic()
    seconds), ``index`` (0, 1, ... per source), ``name`` (file name or device path) and
    ``media_time_s`` (position in a video file, None for cameras and images)."""

    image: np.ndarray
    t: float
    index: int
    name: str = ""
    media_time_s: float | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


class FrameSource:
    """Base class: ``read()`` -> Frame | None (end), ``reopen()``, ``close()``.

    ``live`` sources (cameras) are paced by the device; a tracker keeps emitting codes
    while one is lost and calls ``reopen()`` now and then. ``nominal_fps`` is the rate the
    source promises (None when unknown).
    """

    live: bool = False
    nominal_fps: float | None = None
    description: str = ""

    def read(self) -> Frame | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame


# -- images ----------------------------------------------------------------------------------


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB. Raises SourceError for unreadable files."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SourceError(f"{path}: not a readable image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)


class ImageSource(FrameSource):
    """One image file, or every image of a folder in name order (not recursive).

    Unreadable files in a folder are skipped with a warning through ``skipped``; one
    unreadable single image is an error.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self.files:
                raise SourceError(f"{self.path}: folder holds no images "
                                  f"({', '.join(IMAGE_SUFFIXES)})")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise SourceError(f"{self.path}: no such file or folder")
        self.skipped: list[tuple[Path, str]] = []
        self.description = f"{len(self.files)} image(s) from {self.path}"
        self._next = 0
        self._index = 0

    def read(self) -> Frame | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                image = load_image(path)
            except SourceError as exc:
                if len(self.files) == 1:
                    raise
                self.skipped.append((path, str(exc)))
                continue
            frame = Frame(image, time.monotonic(), self._index, path.name)
            self._index += 1
            return frame
        return None


# -- video files and cameras (pyav) ----------------------------------------------------------


class _AvSource(FrameSource):
    """Shared decoding loop over pyav containers."""

    _container = None
    _frames = None

    def _open(self) -> None:
        raise NotImplementedError

    def _decoded(self):
        import av

        try:
            for frame in self._container.decode(video=0):
                yield frame
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceLost(f"{self.description}: {exc}") from None

    def _next_av_frame(self):
        try:
            return next(self._frames)
        except StopIteration:
            return None

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a dead device may fail again; nothing to keep
                pass
        self._container = None
        self._frames = None


class VideoSource(_AvSource):
    """A video file, decoded frame by frame (as fast as it is read).

    ``t`` is the frame's presentation time in the file on the monotonic clock (the first
    frame's decode time plus its media time; the frame count over the frame rate where the
    file gives none), so the tracker's filters and its calibration see the clip's own timing
    however fast the file is read (on a loaded machine the decode time did not);
    ``media_time_s`` is the presentation time itself. A file that breaks mid-stream
    (truncated, corrupt) raises SourceLost after the last good frame, then ``read()`` returns
    None.

    ``live=True`` makes the file behave like a camera (a stand-in for tests and demos):
    frames are paced at the file's frame rate, its end or breakage is a lost device
    (SourceLost), and ``reopen()`` starts it again if the file is there.
    """

    def __init__(self, path: str | Path, live: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file")
        self.description = str(self.path)
        self.live = live
        self._index = 0
        self._broken = False
        self._next_due: float | None = None
        self._clock_origin: float | None = None  # monotonic time of media time 0
        self._open()

    def _open(self) -> None:
        import av

        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: not a readable video ({exc})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path}: has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate else None
        self._frames = self._decoded()

    def read(self) -> Frame | None:
        if self._frames is None or self._broken:
            if self.live:
                raise SourceLost(f"{self.description} is not open")
            return None
        try:
            av_frame = self._next_av_frame()
        except SourceLost:
            self._broken = True
            if self.live:
                self.close()
            raise
        if av_frame is None:
            if self.live:
                self.close()
                raise SourceLost(f"{self.description} ended")
            return None
        if self.live:
            now = time.monotonic()
            period = 1.0 / (self.nominal_fps or 30.0)
            due = now if self._next_due is None else self._next_due
            if due > now:
                time.sleep(due - now)
            self._next_due = max(due, now - period) + period
        image = av_frame.to_ndarray(format="rgb24")
        media_t = None if av_frame.time is None else float(av_frame.time)
        if self.live:
            t = time.monotonic()
        else:
            at = media_t if media_t is not None else self._index / (self.nominal_fps or 30.0)
            if self._clock_origin is None:
                self._clock_origin = time.monotonic() - at
            t = self._clock_origin + at
        frame = Frame(image, t, self._index, self.path.name, media_t)
        self._index += 1
        return frame

    def reopen(self) -> bool:
        self.close()
        self._broken = False
        self._next_due = None
        self._clock_origin = None
        if not self.path.is_file():
            return False
        try:
            self._open()
        except SourceError:
            return False
        return True


def list_cameras() -> list[tuple[str, str]]:
    """(device path, device name) of every V4L2 video device, in index order."""
    found = []
    for path in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        name_file = Path("/sys/class/video4linux") / Path(path).name / "name"
        try:
            name = name_file.read_text().strip()
        except OSError:
            name = "unknown device"
        found.append((path, name))
    return found


def _describe_cameras() -> str:
    cameras = list_cameras()
    if not cameras:
        return "no video devices found (no /dev/video*)"
    return "devices found: " + ", ".join(f"{p} ({n})" for p, n in cameras)


class CameraSource(_AvSource):
    """A V4L2 webcam by index (``/dev/videoN``) or device path.

    ``size`` (width, height) and ``fps`` are requested from the driver (MJPEG first, the
    usual way a USB webcam reaches 30 fps at 640x480, then the driver's default format).
    ``t`` is the driver's capture timestamp mapped onto time.monotonic() when the driver
    gives one, else the time the frame arrived.
    """

    live = True

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = (640, 480),
                 fps: float | None = 30.0):
        self.device = f"/dev/video{device}" if isinstance(device, int) else str(device)
        self.size = size
        self.nominal_fps = fps
        self.description = f"camera {self.device}"
        self._index = 0
        if not os.path.exists(self.device):
            raise SourceError(f"camera {self.device} not found; {_describe_cameras()}")
        self._open()

    def _options(self, mjpeg: bool) -> dict:
        options = {"ts": "mono2abs"}  # kernel capture time -> wall clock, mapped below
        if self.size:
            options["video_size"] = f"{self.size[0]}x{self.size[1]}"
        if self.nominal_fps:
            options["framerate"] = f"{self.nominal_fps:g}"
        if mjpeg:
            options["input_format"] = "mjpeg"
        return options

    def _open(self) -> None:
        import av

        errors = []
        for mjpeg in (True, False):
            try:
                self._container = av.open(self.device, format="v4l2",
                                          options=self._options(mjpeg))
                break
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                errors.append(str(exc))
        else:
            raise SourceError(f"cannot open {self.description}: {errors[-1]}; "
                              f"{_describe_cameras()}")
        self._frames = self._decoded()

    def read(self) -> Frame | None:
        if self._frames is None:
            raise SourceLost(f"{self.description} is not open")
        try:
            av_frame = self._next_av_frame()
        except SourceLost:
            self.close()
            raise
        if av_frame is None:  # a camera never ends: the device went away
            self.close()
            raise SourceLost(f"{self.description} stopped delivering frames")
        arrived = time.monotonic()
        t = arrived
        if av_frame.time is not None:
            # mono2abs: the kernel's capture time as wall-clock seconds. Trust it only when
            # it is plausible (not in the future, not older than a second).
            captured = arrived - (time.time() - float(av_frame.time))
            if arrived - 1.0 < captured <= arrived:
                t = captured
        frame = Frame(av_frame.to_ndarray(format="rgb24"), t, self._index, self.device)
        self._index += 1
        return frame

    def reopen(self) -> bool:
        self.close()
        if not os.path.exists(self.device):
            return False
        try:
            self._open()
        except SourceError:
            return False
        return True


def open_source(spec: str, size: tuple[int, int] | None = (640, 480),
                fps: float | None = 30.0) -> FrameSource:
    """A source from a command-line INPUT: ``camera``, ``camera:N``, ``camera:/dev/videoN``,
    a video file, an image file or a folder of images. Raises SourceError."""
    if spec == "camera" or spec.startswith("camera:"):
        device = spec.partition(":")[2] or "0"
        return CameraSource(int(device) if device.isdigit() else device, size, fps)
    path = Path(spec)
    if path.is_dir():
        return ImageSource(path)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder (or use camera[:N])")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSource(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path)
    # Unknown suffix: let the content decide.
    try:
        return VideoSource(path)
    except SourceError:
        return ImageSource(path)
