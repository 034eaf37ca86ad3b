"""A call recording brought back to life: participants side by side, posed at any time, and
their voices mixed. Shared by ``main.py play`` (a window) and ``main.py export`` (a video).

Each participant keeps one place for the whole recording (``SPACING_M`` apart, facing the
viewer along +Z, in the order they joined) and is shown while their codes last: from their
first recorded frame until they left.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from net.recording import SAMPLE_RATE, Participant, Recording, RecordingError, read_recording

SPACING_M = 0.9


def is_recording(path: Path) -> bool:
    """Whether ``path`` looks like a recording file (MPEG-TS: sync bytes every 188 bytes)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(377)
    except OSError:
        return False
    return len(head) == 377 and head[0] == head[188] == head[376] == 0x47


def load_recording(path: Path) -> Recording:
    from app.cli import UserError

    if not path.exists():
        raise UserError(f"{path} does not exist")
    try:
        recording = read_recording(path)
    except RecordingError as exc:
        raise UserError(str(exc)) from None
    if not any(p.frames for p in recording.participants):
        raise UserError(f"{path} holds no codes frames (nobody was recorded)")
    return recording


def choose(recording: Recording, names: str | None) -> list[Participant]:
    """The participants with codes, or those named in ``names`` (comma-separated)."""
    from app.cli import UserError

    everyone = [p for p in recording.participants if p.frames]
    if not names:
        return everyone
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        found = [p for p in everyone if p.name == name or p.id == name]
        if not found:
            raise UserError(f"no participant named {name!r} in the recording "
                            f"({', '.join(p.name or p.id for p in everyone)})")
        chosen.extend(p for p in found if p not in chosen)
    return chosen


@dataclass
class Seat:
    participant: Participant
    avatar: object          # avatar.avatar.Avatar
    world_from_avatar: np.ndarray


class Replay:
    """``seats`` (one per chosen participant) and ``skin_poses(t)``: the ``(seat, SkinPose)``
    of everyone visible at ``t`` seconds."""

    def __init__(self, recording: Recording, participants: list[Participant]):
        from avatar.avatar import Avatar, load_avatar
        from avatar.lca import AvatarFileError, load_avatar_file
        from avatar.template import load_template

        self.recording = recording
        template = load_template()
        default = None
        self.seats: list[Seat] = []
        for index, p in enumerate(participants):
            avatar = None
            if p.avatar is not None:
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / "avatar.lca"
                    path.write_bytes(p.avatar)
                    try:
                        avatar = Avatar(load_avatar_file(path, template), template)
                    except (AvatarFileError, OSError):
                        avatar = None  # a damaged embedded avatar: the default stands in
            if avatar is None:
                default = default or load_avatar("default", template)
                avatar = default
            place = np.eye(4)
            place[0, 3] = (index - (len(participants) - 1) / 2) * SPACING_M
            self.seats.append(Seat(p, avatar, place))
        self.duration_s = recording.duration_s
        self.fps = recording.fps

    def skin_poses(self, t: float) -> list[tuple[Seat, object]]:
        out = []
        for seat in self.seats:
            p = seat.participant
            codes = p.codes_at(t)
            if codes is None or (p.left_s is not None and t > p.left_s + 1e-6):
                continue
            out.append((seat, seat.avatar.skin_pose(codes, seat.world_from_avatar)))
        return out

    def mixed_voices(self, samples: int) -> np.ndarray:
        """Every chosen participant's voice summed, ``samples`` long (float32, clipped)."""
        mix = np.zeros(samples, np.float32)
        for seat in self.seats:
            voice = self.recording.voice_of(seat.participant)[:samples]
            mix[:len(voice)] += voice
        return np.clip(mix, -1.0, 1.0)

    @property
    def width_m(self) -> float:
        return max(1, len(self.seats)) * SPACING_M


def scene_camera(kind: str, width: int, height: int, width_m: float, angle_rad: float = 0.0):
    """A camera framing everyone (``width_m`` wide, standing) from the front, the side or an
    orbit angle (radians about +Y, 0 = front)."""
    from render.camera import Camera

    target = np.array([0.0, 0.88, 0.0])
    if kind == "side":
        angle_rad = math.radians(60)
    vertical = math.radians(30)
    # Far enough that 2.1 m of height and the row's width (plus a margin) both fit.
    half_w = math.atan(math.tan(vertical / 2) * width / height)
    distance = max(1.05 / math.tan(vertical / 2), (width_m / 2 + 0.4) / math.tan(half_w)) + 0.3
    eye = target + np.array([distance * math.sin(angle_rad), 0.15, distance * math.cos(angle_rad)])
    return Camera.look_at(eye, target, width, height, vertical_fov_deg=math.degrees(vertical))


class SceneRenderer:
    """Offscreen images of a replay with a backend (``render.backends``)."""

    def __init__(self, backend, replay: Replay):
        self.backend, self.replay = backend, replay
        self._skinned: dict[tuple, tuple] = {}

    def render(self, t: float, camera, background) -> np.ndarray:
        from render.skinned import PosedAvatars

        visible = self.replay.skin_poses(t)
        if not visible:
            return np.zeros((camera.height, camera.width, 4), np.float32)
        key = tuple(id(seat) for seat, _ in visible)
        skinned = self._skinned.setdefault(key, tuple(s.avatar.skinned for s, _ in visible))
        poser = self.backend.poser
        scene = poser.combine(skinned, [poser.pose(s.avatar.skinned, pose) for s, pose in visible])
        if isinstance(scene, PosedAvatars):  # the GL renderer poses on its GPU
            self.backend.renderer.show(scene)
            return self.backend.renderer.render(None, camera, background)
        return self.backend.render(scene, camera, background)


def audio_samples(frames: int, fps: float) -> int:
    """The samples of ``frames`` video frames at ``fps``: the video's exact duration."""
    return int(round(frames * SAMPLE_RATE / fps))
