"""A call recording: one MPEG-TS file holding every participant's codes, voice and avatar.

Why MPEG-TS (through pyav): it is a streaming container, written front to back with no
index at the end, so a file cut anywhere (a SIGKILL, a full disk) still demuxes up to the
cut; it carries Opus audio and opaque data streams (KLV), and every player and FFmpeg
tool can open it. Measured sizes (bench/bench_recording.py, docs/BENCHMARKS.md): well under
the 2 MB a minute per participant with voice that the call's issue allows.

Layout:

- stream 0: a data stream (``klv``) of *records*, one record per data packet (below);
- streams 1..``AUDIO_SLOTS``: Opus, mono, 48 kHz, ``VOICE_BITRATE``, 120 ms frames (one TS
  packet carries a whole frame; 20 ms frames cost three times the bytes in TS headers),
  one per participant *slot*. TS streams cannot be added once the file is started, so the
  slots are declared up front; an unused slot costs nothing but its PMT entry. Slot 0 is
  the recording participant itself, slots 1.. the others in the order they joined.

A record is one kind byte and its body:

====  ========  ==================================================================
kind  name      body
====  ========  ==================================================================
1     header    JSON: format, version, fps, wall-clock start (Unix seconds, UTC ISO)
2     event     JSON: ``{"t", "event": "join"|"leave"|"avatar", "slot", "id", "name"}``
3     codes     zlib of a batch of ``<B slot><H length><d t>`` + wire packet, repeated
4     avatar    ``<B slot><32s sha256><I index><I count>`` + a chunk of the .lca file
====  ========  ==================================================================

Codes are what crossed the wire: ``net.wire`` packets (at most 384 bytes a frame, the
played-out frame re-encoded), gathered for ``BATCH_S`` and compressed (zlib takes about a
third off: the header, rest parts and slow-moving quaternions repeat). ``t`` is seconds
since the recording started (the recorder's monotonic clock); the data packets' and audio
packets' timestamps are on that clock too, so voices and avatars stay together.

Custom avatars are embedded (deduplicated by sha256): the file is then self-contained, to
be moved, shared or played years later; the cost is once per avatar (a custom .lca is
about 9 MB, a few minutes of recording), not per minute. Participants using the shipped
default avatar store no bytes.

Crash safety: the file is opened unbuffered, FFmpeg flushes every packet
(``flush_packets``) and interleaves over at most ``INTERLEAVE_S``, codes batches go out
every ``BATCH_S`` and Opus frames every 120 ms: a SIGKILL loses well under a second.
"""

from __future__ import annotations

import fractions
import hashlib
import json
import logging
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar.codes import Codes
from common import safejson
from net import wire

log = logging.getLogger("splatcall.recording")

FORMAT = "splatcall-recording"
VERSION = 1
AUDIO_SLOTS = 8
SAMPLE_RATE = 48000
VOICE_BITRATE = 24000     # Opus speech at 24 kbit/s
OPUS_FRAME_MS = 120
BATCH_S = 0.25
INTERLEAVE_S = 0.3
AVATAR_CHUNK = 60000      # bytes of .lca per data packet
DATA_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

HEADER, EVENT, CODES, AVATAR = 1, 2, 3, 4
_TS_WRAP_S = 2**33 / 90000  # MPEG-TS timestamps are 33 bits of a 90 kHz clock
_FRAME = struct.Struct("<BHd")
_AVATAR = struct.Struct("<B32sII")


class RecordingError(RuntimeError):
    """A recording that cannot be written or read (one line, naming the file)."""


# -- writing ---------------------------------------------------------------------------------
class RecordingWriter:
    """Writes one call to ``path``. Feed it from the call's loop: ``join``/``leave`` for
    participants, ``codes`` per displayed frame, ``audio`` per received frame, ``avatar`` when
    an avatar file arrives; ``close`` at the end. ``t`` arguments are seconds on the
    writer's clock (``now()``).

    Opening raises ``RecordingError`` (an unwritable path is refused up front). After that a
    write error (a full disk) never raises: it is logged once, ``error`` says why, and the
    call goes on without recording."""

    def __init__(self, path: str | Path, fps: float, recorder_name: str = "",
                 clock=time.monotonic):
        import av

        self.path = Path(path)
        self.clock = clock
        self.start = clock()
        self.error: str | None = None
        self._file = None
        try:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
            self._container = av.open(self._file, "w", format="mpegts", options={
                "flush_packets": "1", "max_interleave_delta": str(int(INTERLEAVE_S * 1e6)),
                "pat_period": "5", "sdt_period": "5"})
            self._data = self._container.add_data_stream(codec_name="klv")
            self._audio = []
            for _ in range(AUDIO_SLOTS):
                stream = self._container.add_stream("libopus", rate=SAMPLE_RATE)
                stream.layout = "mono"
                stream.bit_rate = VOICE_BITRATE
                stream.options = {"frame_duration": str(OPUS_FRAME_MS), "application": "voip"}
                self._audio.append(stream)
        except (OSError, av.FFmpegError) as exc:
            if self._file is not None:
                self._file.close()
            raise RecordingError(f"cannot record to {self.path}: {_why(exc)}") from None
        self._resampler = [None] * AUDIO_SLOTS
        self._next_sample = [None] * AUDIO_SLOTS
        self._batch: list[bytes] = []
        self._batch_started = 0.0
        self._avatars: set[str] = set()
        self.slots: dict[str, int] = {}      # participant id -> slot
        self.names: dict[int, str] = {}
        self.bytes_codes = 0
        self._data_pts = 0
        wall = time.time()
        self._record(HEADER, json.dumps({
            "format": FORMAT, "version": VERSION, "fps": float(fps),
            "wall_start": wall,
            "wall_start_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall)),
            "recorder": recorder_name, "audio_slots": AUDIO_SLOTS,
            "sample_rate": SAMPLE_RATE}).encode(), 0.0)

    def now(self) -> float:
        return self.clock() - self.start

    # -- participants
    def join(self, participant_id: str, name: str, t: float | None = None) -> int | None:
        """Give a participant a slot (0 for the first: the recorder itself) and record the
        join; None when every slot is taken (a warning says so)."""
        if participant_id in self.slots:
            return self.slots[participant_id]
        used = set(self.slots.values())
        free = [s for s in range(AUDIO_SLOTS) if s not in used]
        if not free:
            log.warning("recording: all %d slots are taken; %s is not recorded",
                        AUDIO_SLOTS, name or participant_id)
            return None
        slot = self.slots[participant_id] = free[0]
        self.names[slot] = name
        self._event("join", slot, participant_id, name, t)
        return slot

    def rename(self, participant_id: str, name: str) -> None:
        slot = self.slots.get(participant_id)
        if slot is not None and name and self.names.get(slot) != name:
            self.names[slot] = name
            self._event("name", slot, participant_id, name, None)

    def leave(self, participant_id: str, t: float | None = None) -> None:
        slot = self.slots.pop(participant_id, None)
        if slot is not None:
            self._flush_batch()
            self._event("leave", slot, participant_id, self.names.get(slot, ""), t)
            self._next_sample[slot] = None

    def _event(self, kind: str, slot: int, participant_id: str, name: str, t) -> None:
        t = self.now() if t is None else t
        self._record(EVENT, json.dumps({"t": t, "event": kind, "slot": slot,
                                        "id": participant_id, "name": name}).encode(), t)

    # -- content
    def codes(self, participant_id: str, codes: Codes, t: float | None = None) -> None:
        """One displayed frame of a participant (as a wire packet)."""
        slot = self.slots.get(participant_id)
        if slot is None or self.error:
            return
        t = self.now() if t is None else t
        packet = wire.encode(codes)
        if not self._batch:
            self._batch_started = t
        self._batch.append(_FRAME.pack(slot, len(packet), t) + packet)
        if t - self._batch_started >= BATCH_S:
            self._flush_batch()

    def audio(self, participant_id: str, frame, t: float | None = None) -> None:
        """One received ``av.AudioFrame`` of a participant, placed at its arrival time (gaps
        longer than 100 ms are filled with silence so the voice stays on the clock)."""
        import av

        slot = self.slots.get(participant_id)
        if slot is None or self.error:
            return
        t = self.now() if t is None else t
        if self._resampler[slot] is None:
            self._resampler[slot] = av.AudioResampler(format="s16", layout="mono",
                                                      rate=SAMPLE_RATE)
        try:
            for out in self._resampler[slot].resample(frame):
                self._place_audio(slot, out.to_ndarray().reshape(-1), t)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._fail(exc)

    def _place_audio(self, slot: int, samples: np.ndarray, t: float) -> None:
        at = int(round(t * SAMPLE_RATE)) - len(samples)
        expected = self._next_sample[slot]
        if expected is None:
            expected = self._next_sample[slot] = max(0, at)
            if expected > 0:  # the stream starts silent until this participant speaks
                self._next_sample[slot] = 0
                self._encode_audio(slot, np.zeros(expected, np.int16))
        elif at - expected > SAMPLE_RATE // 10:
            self._encode_audio(slot, np.zeros(at - expected, np.int16))
        self._encode_audio(slot, samples.astype(np.int16))

    def _encode_audio(self, slot: int, samples: np.ndarray) -> None:
        import av

        step = SAMPLE_RATE  # a second at most per frame
        for start in range(0, len(samples), step):
            chunk = samples[start:start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self._next_sample[slot]
            frame.time_base = AUDIO_TIME_BASE
            self._next_sample[slot] += len(chunk)
            for packet in self._audio[slot].encode(frame):
                self._container.mux(packet)

    def avatar(self, participant_id: str, data: bytes, t: float | None = None) -> None:
        """A participant's own avatar file (.lca bytes), embedded once per distinct file."""
        slot = self.slots.get(participant_id)
        if slot is None or self.error:
            return
        t = self.now() if t is None else t
        digest = hashlib.sha256(data).digest()
        self._event("avatar", slot, participant_id, digest.hex(), t)
        if digest.hex() in self._avatars:
            return
        self._avatars.add(digest.hex())
        count = max(1, -(-len(data) // AVATAR_CHUNK))
        for index in range(count):
            chunk = data[index * AVATAR_CHUNK:(index + 1) * AVATAR_CHUNK]
            self._record(AVATAR, _AVATAR.pack(slot, digest, index, count) + chunk, t)

    # -- plumbing
    def _flush_batch(self) -> None:
        if not self._batch:
            return
        raw = b"".join(self._batch)
        self._batch = []
        body = zlib.compress(raw, 6)
        self.bytes_codes += len(body)
        self._record(CODES, body, self._batch_started)

    def _record(self, kind: int, body: bytes, t: float) -> None:
        import av

        if self.error:
            return
        packet = av.Packet(bytes([kind]) + body)
        packet.stream = self._data
        packet.time_base = DATA_TIME_BASE
        # The muxer needs rising timestamps; a record's own time is in its body.
        self._data_pts = max(self._data_pts, int(round(max(0.0, t) * 90000)))
        packet.pts = packet.dts = self._data_pts
        try:
            self._container.mux(packet)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = f"recording to {self.path} stopped: {_why(exc)}"
            log.error("%s; the call goes on", self.error)

    def close(self) -> None:
        """Write what is pending and close the file (never raises)."""
        import av

        try:
            if not self.error:
                self._flush_batch()
                for participant_id in list(self.slots):
                    self.leave(participant_id)
                for stream in self._audio:
                    for packet in stream.encode(None):
                        self._container.mux(packet)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._fail(exc)
        try:
            self._container.close()
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._fail(exc)
        finally:
            self._file.close()


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- reading ---------------------------------------------------------------------------------
@dataclass
class Participant:
    """Everything recorded of one participant (one slot's stay in the call)."""

    slot: int
    id: str
    name: str
    joined_s: float
    left_s: float | None = None
    times: list = field(default_factory=list)     # seconds since the start, one per frame
    frames: list = field(default_factory=list)    # Codes, same order
    avatar: bytes | None = None                   # the embedded .lca (None: the default)
    avatar_sha256: str = ""

    def codes_at(self, t: float) -> Codes | None:
        """The frame shown at ``t`` (the last one at or before it), None before the first."""
        if not self.times or t < self.times[0]:
            return None
        index = int(np.searchsorted(self.times, t, side="right")) - 1
        return self.frames[index]


@dataclass
class Recording:
    header: dict
    participants: list[Participant]
    audio: dict[int, np.ndarray]     # slot -> float32 mono samples at SAMPLE_RATE from t = 0
    duration_s: float
    truncated: bool                  # the file ends mid-way (a crash, a full disk)

    @property
    def fps(self) -> float:
        return float(self.header.get("fps", 30.0))

    def voice_of(self, participant: Participant) -> np.ndarray:
        return self.audio.get(participant.slot, np.zeros(0, np.float32))


def read_recording(path: str | Path) -> Recording:
    """Read a recording, or as much of it as there is (a cut file reads up to the cut).
    Raises ``RecordingError`` when ``path`` is not a recording."""
    import av

    from net.audio import frame_to_mono

    path = Path(path)
    try:
        container = av.open(str(path), format="mpegts")
    except (OSError, av.FFmpegError) as exc:
        raise RecordingError(f"cannot read {path}: {_why(exc)}") from None
    header: dict | None = None
    by_slot: dict[int, Participant] = {}
    everyone: list[Participant] = []
    chunks: dict[str, dict[int, bytes]] = {}
    avatar_counts: dict[str, int] = {}
    avatar_of: dict[int, str] = {}
    audio_parts: dict[int, list[tuple[int, np.ndarray]]] = {}
    origin = None
    last_t = 0.0
    truncated = False
    with container:
        data = [s for s in container.streams if s.type == "data"]
        audio_streams = list(container.streams.audio)
        if not data or not audio_streams:
            raise RecordingError(f"{path} is not a splatcall recording (no records stream)")
        decoders = {s.index: s.codec_context for s in audio_streams}
        slot_of_stream = {s.index: i for i, s in enumerate(audio_streams)}
        try:
            for packet in container.demux():
                if packet.size == 0:
                    continue
                if packet.stream.type == "data":
                    body = bytes(packet)
                    kind, body = body[0], body[1:]
                    if header is None:
                        if kind != HEADER:
                            raise RecordingError(f"{path} is not a splatcall recording")
                        header = safejson.loads(body, 1 << 20)
                        if header.get("format") != FORMAT:
                            raise RecordingError(f"{path} is not a splatcall recording")
                        origin = float(packet.pts * packet.time_base)
                        continue
                    if kind == EVENT:
                        event = safejson.loads(body, 1 << 20)
                        slot = int(event["slot"])
                        if event["event"] == "join":
                            p = Participant(slot, event["id"], event["name"], event["t"])
                            by_slot[slot] = p
                            everyone.append(p)
                        elif slot in by_slot and event["event"] == "name":
                            by_slot[slot].name = event["name"]
                        elif slot in by_slot and event["event"] == "leave":
                            by_slot[slot].left_s = event["t"]
                        elif slot in by_slot and event["event"] == "avatar":
                            by_slot[slot].avatar_sha256 = event["name"]
                            avatar_of[id(by_slot[slot])] = event["name"]
                        last_t = max(last_t, event["t"])
                    elif kind == CODES:
                        raw = zlib.decompress(body)
                        at = 0
                        while at < len(raw):
                            slot, length, frame_t = _FRAME.unpack_from(raw, at)
                            at += _FRAME.size
                            codes = wire.decode(raw[at:at + length])
                            at += length
                            p = by_slot.get(slot)
                            if p is not None:
                                p.times.append(frame_t)
                                p.frames.append(codes)
                                last_t = max(last_t, frame_t)
                    elif kind == AVATAR:
                        slot, digest, index, count = _AVATAR.unpack_from(body)
                        chunks.setdefault(digest.hex(), {})[index] = body[_AVATAR.size:]
                        avatar_counts[digest.hex()] = count
                elif packet.stream.index in decoders and origin is not None:
                    slot = slot_of_stream[packet.stream.index]
                    for frame in decoders[packet.stream.index].decode(packet):
                        seconds = float(frame.pts * frame.time_base) - origin
                        if seconds > _TS_WRAP_S / 2:  # just before the origin: pts wrapped
                            seconds -= _TS_WRAP_S
                        start = int(round(seconds * SAMPLE_RATE))
                        audio_parts.setdefault(slot, []).append((start, frame_to_mono(frame)))
        except (av.FFmpegError, zlib.error, struct.error, wire.WireError, ValueError,
                KeyError) as exc:
            if header is None:
                raise RecordingError(f"{path} is not a splatcall recording: {exc}") from None
            truncated = True  # a cut record at the end: keep everything before it
    if header is None:
        raise RecordingError(f"{path} holds no recording (empty or not a splatcall recording)")
    for p in everyone:
        sha = avatar_of.get(id(p))
        got = chunks.get(sha or "", {})
        if sha and len(got) == avatar_counts.get(sha, -1):
            p.avatar = b"".join(got[i] for i in range(len(got)))
    audio = {}
    for slot, parts in audio_parts.items():
        end = max(start + len(s) for start, s in parts)
        track = np.zeros(max(0, end), np.float32)
        for start, samples in parts:
            if start < 0:
                samples, start = samples[-start:], 0
            track[start:start + len(samples)] = samples
        audio[slot] = track
        last_t = max(last_t, len(track) / SAMPLE_RATE)
    if not truncated:
        truncated = not any(p.left_s is not None for p in everyone) and bool(everyone)
    return Recording(header, everyone, audio, last_t, truncated)
