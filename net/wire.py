"""The wire format: one ``Codes`` frame as one compact, versioned binary packet.

A packet must fit one SCTP chunk (aiortc splits data-channel messages above 1161 bytes, and
a split message is lost whenever any of its pieces is), so the codes are quantised:

====================  =======  ==========================================================
field                 bytes    encoding
====================  =======  ==========================================================
magic                 2        ``b"SW"``
version               1        ``WIRE_VERSION``
part mask             1        bit i set = ``PARTS[i]`` present (bit 7 must be clear)
seq                   4        uint32, little-endian
t                     8        float64 capture time, sender monotonic seconds
face (if present)     52       uint8 per ARKit weight, ``round(w * 255)``
gaze (if present)     8        4 x int16, +-32767 = +-``GAZE_LIMIT_RAD``
head (if present)     16       4 quaternions, smallest-three (below)
body (if present)     124      31 quaternions
left_hand, right_hand 76 each  19 quaternions each
root (if present)     16       3 x float32 translation (metres) + 1 quaternion
====================  =======  ==========================================================

A quaternion takes 32 bits, "smallest three": 2 bits name the largest-magnitude component
(dropped, its sign made positive since q and -q are the same rotation), and the other three,
each within +-1/sqrt(2), take 10 bits each: a step of 0.0014, a worst-case angular
error of about 0.2 degree (measured over random rotations in tests/test_wire.py).

Every part present: 16 + 52 + 8 + 16 + 124 + 2 * 76 + 16 = 384 bytes (``MAX_PACKET_BYTES``).

Decoding validates everything (length implied by the mask, magic, version, reserved bits,
finite time, finite and in-range root, quaternions that decode to unit length) and raises
``WireError``; ``PacketDecoder`` wraps that for a receiver, counting and dropping bad
packets so that nothing raises past it and no NaN reaches a pose.

Delta coding against a keyframe was considered and left out: a full frame is already under
the 400-byte target, and a lost keyframe would cost several frames on a lossy link.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from avatar.codes import GAZE_LIMIT_RAD, PARTS, ROOT_LIMIT_M, Codes, CodesError

MAGIC = b"SW"
WIRE_VERSION = 1
_HEADER = struct.Struct("<2sBBId")
HEADER_BYTES = _HEADER.size

_QUAT_BITS = 10
_QUAT_LEVELS = (1 << _QUAT_BITS) - 1
_QUAT_RANGE = 1.0 / math.sqrt(2.0)
# Quantisation can push the three kept components' squared sum a little above 1; an encoder
# never goes further than this, so anything beyond is a corrupt packet.
_QUAT_SLACK = 0.01

# Bytes per part, in PARTS order.
_N_HEAD, _N_BODY, _N_HAND = 4, 31, 19
PART_BYTES = {
    "face": 52,
    "gaze": 8,
    "head": 4 * _N_HEAD,
    "body": 4 * _N_BODY,
    "left_hand": 4 * _N_HAND,
    "right_hand": 4 * _N_HAND,
    "root": 12 + 4,
}
MAX_PACKET_BYTES = HEADER_BYTES + sum(PART_BYTES.values())
_ALL_PARTS_MASK = (1 << len(PARTS)) - 1


class WireError(ValueError):
    """A packet that is not a valid codes packet of this version."""


# -- quaternions ----------------------------------------------------------------------------
def pack_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) (w, x, y, z) -> (N,) uint32 smallest-three words."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    sign = np.where(q[rows, largest] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    keep = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    three = np.take_along_axis(q, keep, axis=1)
    levels = np.rint((np.clip(three, -_QUAT_RANGE, _QUAT_RANGE) + _QUAT_RANGE)
                     * (_QUAT_LEVELS / (2 * _QUAT_RANGE))).astype(np.uint32)
    return ((largest.astype(np.uint32) << 30) | (levels[:, 0] << 20)
            | (levels[:, 1] << 10) | levels[:, 2])


def unpack_quats(words: np.ndarray) -> np.ndarray:
    """(N,) uint32 smallest-three words -> unit quaternions (N, 4) float32.

    Raises ``WireError`` if a word cannot come from a unit quaternion."""
    words = np.asarray(words, dtype=np.uint32)
    largest = (words >> 30).astype(np.intp)
    levels = np.stack([(words >> 20) & 0x3FF, (words >> 10) & 0x3FF, words & 0x3FF], axis=1)
    three = levels.astype(np.float64) * (2 * _QUAT_RANGE / _QUAT_LEVELS) - _QUAT_RANGE
    rest = 1.0 - np.sum(three * three, axis=1)
    if np.any(rest < -_QUAT_SLACK):
        raise WireError("a quaternion in the packet is not a unit rotation")
    dropped = np.sqrt(np.maximum(rest, 0.0))
    q = np.empty((len(words), 4))
    rows = np.arange(len(words))
    keep = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    q[rows, largest] = dropped
    np.put_along_axis(q, keep, three, axis=1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


# -- packets --------------------------------------------------------------------------------
def encode(codes: Codes) -> bytes:
    """One ``Codes`` frame -> packet bytes (at most ``MAX_PACKET_BYTES``). Invalid parts are
    left out of the packet (their mask bit is clear)."""
    valid = codes.valid
    mask = int(np.dot(valid.astype(np.int64), 1 << np.arange(len(PARTS))))
    # All quaternions of the packet are packed in one vectorised call.
    quats = [q for bit, q in ((2, codes.head), (3, codes.body), (4, codes.hands[0]),
                              (5, codes.hands[1]), (6, codes.root_rotation.reshape(1, 4)))
             if valid[bit]]
    words = pack_quats(np.concatenate(quats)).astype("<u4") if quats else np.zeros(0, "<u4")
    chunks: list[bytes] = [_HEADER.pack(MAGIC, WIRE_VERSION, mask, codes.seq, codes.t)]
    if valid[0]:
        chunks.append(np.rint(codes.face * 255.0).astype(np.uint8).tobytes())
    if valid[1]:
        scaled = np.clip(codes.gaze.reshape(-1) / GAZE_LIMIT_RAD, -1.0, 1.0)
        chunks.append(np.rint(scaled * 32767).astype("<i2").tobytes())
    root_words = 1 if valid[6] else 0
    chunks.append(words[:len(words) - root_words].tobytes())
    if valid[6]:
        chunks.append(codes.root_translation.astype("<f4").tobytes())
        chunks.append(words[-1:].tobytes())
    return b"".join(chunks)


def packet_size(mask: int) -> int:
    """The exact length of a packet whose part mask is ``mask``."""
    return HEADER_BYTES + sum(PART_BYTES[p] for i, p in enumerate(PARTS) if mask >> i & 1)


_QUAT_PARTS = (("head", 2, _N_HEAD), ("body", 3, _N_BODY), ("left_hand", 4, _N_HAND),
               ("right_hand", 5, _N_HAND))


def decode(data: bytes) -> Codes:
    """Packet bytes -> ``Codes``. Raises ``WireError`` on anything malformed; parts absent
    from the packet hold rest values and are marked invalid."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"a codes packet is binary, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise WireError(f"packet of {len(data)} bytes is shorter than the header")
    magic, version, mask, seq, t = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("not a codes packet (bad magic)")
    if version != WIRE_VERSION:
        raise WireError(f"codes packet version {version}, this build speaks {WIRE_VERSION}")
    if mask & ~_ALL_PARTS_MASK:
        raise WireError(f"reserved bits set in the part mask {mask:#04x}")
    if len(data) != packet_size(mask):
        raise WireError(f"packet of {len(data)} bytes, its mask implies {packet_size(mask)}")
    if not math.isfinite(t):
        raise WireError("capture time is not finite")

    valid = np.array([bool(mask >> bit & 1) for bit in range(len(PARTS))])
    fields: dict[str, np.ndarray] = {}
    offset = HEADER_BYTES
    if valid[0]:
        fields["face"] = (np.frombuffer(data, np.uint8, 52, offset).astype(np.float32)
                          / np.float32(255.0))
        offset += 52
    if valid[1]:
        raw = np.frombuffer(data, "<i2", 4, offset).astype(np.float32)
        fields["gaze"] = (np.clip(raw / 32767.0, -1.0, 1.0) * GAZE_LIMIT_RAD).astype(
            np.float32).reshape(2, 2)
        offset += 8
    n_body_quats = sum(n for _, bit, n in _QUAT_PARTS if valid[bit])
    words = [np.frombuffer(data, "<u4", n_body_quats, offset)]
    offset += 4 * n_body_quats
    if valid[6]:
        translation = np.frombuffer(data, "<f4", 3, offset).astype(np.float32)
        if not np.all(np.isfinite(translation)) or np.any(np.abs(translation) > ROOT_LIMIT_M):
            raise WireError("root translation is not finite or out of range")
        fields["root_translation"] = translation
        words.append(np.frombuffer(data, "<u4", 1, offset + 12))
    quats = unpack_quats(np.concatenate(words))  # all of them in one vectorised call
    at = 0
    hands = None
    for part, bit, n in _QUAT_PARTS:
        if not valid[bit]:
            continue
        if part in ("head", "body"):
            fields[part] = quats[at:at + n]
        else:
            if hands is None:
                hands = np.zeros((2, _N_HAND, 4), np.float32)
                hands[..., 0] = 1.0
            hands[0 if part == "left_hand" else 1] = quats[at:at + n]
        at += n
    if hands is not None:
        fields["hands"] = hands
    if valid[6]:
        fields["root_rotation"] = quats[at]
    # The contract's own validation runs on construction: a packet that slipped past the
    # checks above still never yields a frame the avatar would refuse.
    try:
        return Codes(t=t, seq=seq, valid=valid, **fields)
    except CodesError as exc:
        raise WireError(f"packet decodes to an invalid frame: {exc}") from None


# A minute at 60 frames a second: more loss than that in a row is a new stream, not a gap.
MAX_SEQ_JUMP = 3600
RESYNC_PACKETS = 8   # consecutive packets, each at most RESYNC_GAP after the one before
RESYNC_GAP = 64


@dataclass
class PacketDecoder:
    """Decodes packets for a receiver: a malformed packet is counted and dropped (``None``),
    never raised. Also counts duplicates and late (out-of-order) arrivals by ``seq``."""

    decoded: int = 0
    malformed: int = 0
    last_error: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    highest_seq: int | None = None
    _jump_seq: int | None = None   # the last packet refused for a jump, and how many in a
    _jump_run: int = 0             # row followed it closely (a real restart of the stream)

    def decode(self, data) -> Codes | None:
        try:
            codes = decode(data)
        except WireError as exc:
            self._count(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a hostile peer must never crash the receiver
            self._count(f"unexpected {type(exc).__name__}: {exc}")
            return None
        if not self._plausible(codes.seq):
            self._count(f"sequence jump from {self.highest_seq} to {codes.seq}")
            return None
        self.decoded += 1
        return codes

    def _plausible(self, seq: int) -> bool:
        """Whether ``seq`` is within ``MAX_SEQ_JUMP`` of the stream so far. A packet that
        happens to decode with a random seq is dropped instead of moving the receiver's
        sequence tracking by billions; ``RESYNC_PACKETS`` packets in a row that follow each
        other closely from somewhere else (the sender really jumped) are taken as the new
        stream."""
        if self.highest_seq is None or abs(seq - self.highest_seq) <= MAX_SEQ_JUMP:
            self.highest_seq = seq if self.highest_seq is None else max(self.highest_seq, seq)
            self._jump_seq, self._jump_run = None, 0
            return True
        if self._jump_seq is not None and 0 < seq - self._jump_seq <= RESYNC_GAP:
            self._jump_run += 1
        else:
            self._jump_run = 1
        self._jump_seq = seq
        if self._jump_run >= RESYNC_PACKETS:
            self.highest_seq, self._jump_seq, self._jump_run = seq, None, 0
            return True
        return False

    def _count(self, message: str) -> None:
        self.malformed += 1
        self.last_error = message
        kind = message.split(" ")[0:3]
        key = " ".join(kind)
        self.errors_by_kind[key] = self.errors_by_kind.get(key, 0) + 1
