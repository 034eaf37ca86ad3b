"""``call --record FILE``: what the call feeds into its recording (``net.recording``).

``CallRecording`` follows the call once per tick: participants who joined or left, their
names, each one's played-out codes (and ours as sent), and, through callbacks, every voice
(ours through ``VoiceTee``, the others' as they arrive) and every avatar file as it is
validated. A recording that fails mid-call (a full disk) says so once in the log and the
call goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiortc.mediastreams import MediaStreamTrack

from net.recording import RecordingError, RecordingWriter

log = logging.getLogger("splatcall.recording")

SELF = "self"


def open_recording(path: str, fps: float, name: str) -> CallRecording:
    """The recording of this call at ``path`` (exactly that file), or a ``UserError``."""
    from app.cli import UserError

    target = Path(path)
    if target.is_dir():
        raise UserError(f"--record {path} is a folder; give the file to write")
    try:
        return CallRecording(RecordingWriter(target, fps, name), name)
    except RecordingError as exc:
        raise UserError(str(exc)) from None


class CallRecording:
    def __init__(self, writer: RecordingWriter, own_name: str):
        self.writer = writer
        self.writer.join(SELF, own_name)
        self._present: set[str] = set()

    @property
    def error(self) -> str | None:
        return self.writer.error

    def own_avatar(self, path: str | None) -> None:
        if path:
            self.writer.avatar(SELF, Path(path).read_bytes())

    def tick(self, remotes: dict, poses: dict, own_codes) -> None:
        """Once per display frame: ``remotes`` {id: object with .name}, ``poses`` {id: Codes}
        played out now, ``own_codes`` what we sent this tick (None: nothing)."""
        present = set(remotes)
        for remote_id in self._present - present:
            self.writer.leave(remote_id)
        for remote_id in present - self._present:
            self.writer.join(remote_id, remotes[remote_id].name)
        for remote_id in present & self._present:
            self.writer.rename(remote_id, remotes[remote_id].name)
        self._present = present
        if own_codes is not None:
            self.writer.codes(SELF, own_codes)
        for remote_id, codes in poses.items():
            self.writer.codes(remote_id, codes)

    def audio(self, remote_id: str, frame) -> None:
        self.writer.audio(remote_id, frame)

    def avatar_file(self, remote_id: str, path: Path) -> None:
        """A remote's avatar, validated and cached at ``path``."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot embed %s's avatar in the recording: %s", remote_id, exc)
            return
        self.writer.avatar(remote_id, data)

    def own_voice(self, frame) -> None:
        """A frame of our outgoing voice (for a track wrapped elsewhere)."""
        self.writer.audio(SELF, frame)

    def voice_tee(self, track: MediaStreamTrack | None) -> MediaStreamTrack | None:
        """Our outgoing voice, recorded on its way out."""
        return None if track is None else VoiceTee(track, self.own_voice)

    def close(self) -> None:
        self.writer.close()


class VoiceTee(MediaStreamTrack):
    """An audio track passing ``source``'s frames on unchanged, showing each to ``seen``."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, seen):
        super().__init__()
        self.source = source
        self.seen = seen

    async def recv(self):
        frame = await self.source.recv()
        self.seen(frame)
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()
