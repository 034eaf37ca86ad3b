"""The VMC protocol (OSC over UDP): codes out to VTuber and motion tools, and in from them.

VSeeFace, Warudo, VNyan, XR Animator, Virtual Motion Capture and the Blender, Unity and
Unreal plugins speak it (protocol.vmc.info). A performer sends, per frame, to a marionette
(port 39539 by default):

=========================  ====================================================================
address                    arguments (OSC types)
=========================  ====================================================================
``/VMC/Ext/Root/Pos``      s "root", f p.x p.y p.z, f q.x q.y q.z q.w  (v2.1 appends 6 floats)
``/VMC/Ext/Bone/Pos``      s HumanBodyBones name, f p.x p.y p.z, f q.x q.y q.z q.w (local)
``/VMC/Ext/Blend/Val``     s blendshape name, f value
``/VMC/Ext/Blend/Apply``   (none): the values sent since the last Apply take effect together
``/VMC/Ext/OK``            i loaded (1: a model is loaded and bones are being sent)
``/VMC/Ext/T``             f the sender's relative time, seconds
=========================  ====================================================================

We send one frame as three OSC bundles (one datagram each, as the protocol's reference
sender does): the root and the 54 humanoid bones (``avatar.humanoid``: Unity's
HumanBodyBones less Jaw, in a T-pose rest as VRM's normalised bones are), the 52 ARKit
weights under their PerfectSync names (ARKit's with a capital first letter, e.g.
``JawOpen``) and Apply, then OK and T.

Axes. Unity is left-handed: +X right, +Y up, +Z forward, and a VRM avatar faces +Z, so its
left hand is at -X. Ours (OpenXR) is right-handed with the avatar facing +Z and its left
hand at +X. The two differ by mirroring X, ``M = diag(-1, 1, 1)``: a position becomes
``(-x, y, z)`` and a rotation ``R`` becomes ``M R M``, which for a quaternion (w, x, y, z)
is (w, x, -y, -z) (the axis, a pseudovector, picks up det M = -1), sent in Unity's
(x, y, z, w) order. Mirroring Z instead would turn the avatar to face -Z.

Receiving keeps state as a marionette does: bones take effect as they arrive, blendshape
values on Apply. A codes frame is made from the state whenever it changed (its ``t`` the
arrival time, monotonic seconds); bones and shapes never received stay at our rest, and a
part is valid once any of its bones or shapes arrived. Bones are mapped back through
``Humanoid.to_codes``; the hips' position is scaled by our leg length over the sender's
(judged from its knee and ankle offsets) so that a smaller or larger sender stands on our
floor. Names we do not know are counted (the first ``UNKNOWN_NAMES_KEPT`` by name).
Malformed datagrams (bad OSC, wrong argument types, non-finite numbers) are counted and
dropped whole; a poll handles at most ``max_datagrams`` and then discards up to
``max_discarded`` more, so a flood costs bounded time per poll and never builds a backlog.
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from avatar.codes import BLENDSHAPE_NAMES, PART_INDEX, PARTS, Codes
from avatar.humanoid import HUMAN_BONE_INDEX, HUMAN_BONE_NAMES, HUMAN_BONES, Humanoid
from common.rotation import quat_multiply, quat_to_matrix

DEFAULT_PORT = 39539
ROOT_POS = "/VMC/Ext/Root/Pos"
BONE_POS = "/VMC/Ext/Bone/Pos"
BLEND_VAL = "/VMC/Ext/Blend/Val"
BLEND_APPLY = "/VMC/Ext/Blend/Apply"
AVAILABLE = "/VMC/Ext/OK"
TIME = "/VMC/Ext/T"
# PerfectSync (VRM blendshape clips named after ARKit's, capitalised), in ARKit's order.
PERFECT_SYNC_NAMES: tuple[str, ...] = tuple(n[0].upper() + n[1:] for n in BLENDSHAPE_NAMES)
# Receivers match names without regard to case, as lenient VMC applications do.
_BLEND_INDEX = {name.lower(): i for i, name in enumerate(BLENDSHAPE_NAMES)}

MAX_BUNDLE_DEPTH = 4
UNKNOWN_NAMES_KEPT = 64
UNKNOWN_NAME_CHARS = 64  # a name is kept (and shown) up to this length
_VMC_TYPES = set(b"sfidh")  # the argument types VMC messages use
_MAX_POSITION_M = 1000.0
_BUNDLE_HEADER = b"#bundle\x00"

_MIRROR_QUAT = np.array([1.0, 1.0, -1.0, -1.0])


class VmcError(ValueError):
    """A malformed VMC datagram or message (the receiver counts and drops these)."""


def parse_endpoint(text: str, default_host: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` -> (host, port); ValueError with a readable reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = default_host
    host = host.removeprefix("[").removesuffix("]")  # [::1]:39539
    if not host:
        raise ValueError(f"{text!r}: give HOST:PORT or PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be within 1..65535")
    return host, port


# -- axes ----------------------------------------------------------------------------------
def to_unity_position(p: np.ndarray) -> np.ndarray:
    """Our (x, y, z) -> Unity's (-x, y, z) (mirror X); works on (..., 3)."""
    return np.asarray(p, dtype=np.float64) * np.array([-1.0, 1.0, 1.0])


def to_unity_quaternion(q: np.ndarray) -> np.ndarray:
    """Our (w, x, y, z) -> Unity's (x, y, z, w) of the mirrored rotation M R M; (..., 4)."""
    mirrored = np.asarray(q, dtype=np.float64) * _MIRROR_QUAT
    return np.roll(mirrored, -1, axis=-1)


def from_unity_position(p) -> np.ndarray:
    return to_unity_position(p)  # mirroring is its own inverse


def from_unity_quaternion(q) -> np.ndarray:
    """Unity's (x, y, z, w) -> our (w, x, y, z); (..., 4)."""
    return np.roll(np.asarray(q, dtype=np.float64), 1, axis=-1) * _MIRROR_QUAT


# -- sending -------------------------------------------------------------------------------
def _message(address: str, *args) -> OscMessage:
    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value, "s" if isinstance(value, str) else
                        "i" if isinstance(value, int) else "f")
    return builder.build()


def _bundle(messages: list[OscMessage]) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for message in messages:
        builder.add_content(message)
    return builder.build().dgram


def _frame_messages(humanoid: Humanoid, codes: Codes, time_s: float) -> list[list[OscMessage]]:
    rotations = to_unity_quaternion(humanoid.local_rotations(codes))
    positions = humanoid.rest_offsets.copy()
    positions[0] = humanoid.hips_position(codes)
    positions = to_unity_position(positions)
    bones = [_message(ROOT_POS, "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)]
    for name, p, q in zip(HUMAN_BONE_NAMES, positions.tolist(), rotations.tolist()):
        bones.append(_message(BONE_POS, name, *p, *q))
    shapes = [_message(BLEND_VAL, name, w)
              for name, w in zip(PERFECT_SYNC_NAMES, codes.face.tolist())]
    shapes.append(_message(BLEND_APPLY))
    status = [_message(AVAILABLE, 1), _message(TIME, float(time_s))]
    return [bones, shapes, status]


def encode_reference(humanoid: Humanoid, codes: Codes, time_s: float) -> list[bytes]:
    """One VMC frame built message by message with python-osc: three bundles (root and
    bones; blendshapes and Apply; OK and T, ``time_s`` the sender's relative time).
    ``VmcEncoder`` makes the same bytes faster."""
    return [_bundle(messages) for messages in _frame_messages(humanoid, codes, time_s)]


class VmcEncoder:
    """Codes frames -> the datagrams of one VMC frame, byte for byte ``encode_reference``.

    A frame's three bundles keep their layout from frame to frame (the same addresses,
    names and argument types); only the numbers change. So they are built once by
    python-osc, the place of every number is noted, and each frame writes its numbers
    there as big-endian float32: a frame costs 0.41 ms, 0.36 of it the humanoid rotations,
    where python-osc's message-by-message build takes 2.1 ms more (fastest frames on the
    loaded 2-core VM; docs/BENCHMARKS.md).
    """

    def __init__(self, humanoid: Humanoid):
        self.humanoid = humanoid
        self._templates = []
        self._slots = []
        for messages in _frame_messages(humanoid, Codes(), 0.0):
            self._templates.append(np.frombuffer(_bundle(messages), dtype=np.uint8).copy())
            slots, offset = [], 16  # after "#bundle\0" and the time tag
            for message in messages:
                offset += 4  # the element's size
                floats = sum(1 for v in message.params if isinstance(v, float))
                end = offset + len(message.dgram)
                slots.extend(range(end - 4 * floats, end))
                offset = end
            self._slots.append(np.array(slots))

    def encode(self, codes: Codes, time_s: float) -> list[bytes]:
        rotations = to_unity_quaternion(self.humanoid.local_rotations(codes))
        positions = self.humanoid.rest_offsets.copy()
        positions[0] = self.humanoid.hips_position(codes)
        bones = np.concatenate([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                                np.hstack([to_unity_position(positions), rotations]).ravel()])
        numbers = (bones, codes.face, [time_s])
        out = []
        for template, slots, values in zip(self._templates, self._slots, numbers):
            data = template.copy()
            data[slots] = np.asarray(values, dtype=">f4").view(np.uint8)
            out.append(data.tobytes())
        return out


@dataclass
class SenderStats:
    frames: int = 0
    datagrams: int = 0
    bytes: int = 0
    send_errors: int = 0
    last_error: str = ""


class VmcSender:
    """Sends codes frames as VMC to ``host:port`` over UDP. A send that fails (no route,
    buffer full) is counted, never raised: the tracker or call goes on."""

    def __init__(self, host: str, port: int, humanoid: Humanoid):
        self.encoder = VmcEncoder(humanoid)
        # IPv4 first: "localhost" resolves to ::1 first, and VMC receivers listen on IPv4.
        info = sorted(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM),
                      key=lambda entry: entry[0] != socket.AF_INET)
        family, _, _, _, self.address = info[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._t0: float | None = None
        self.stats = SenderStats()

    def send(self, codes: Codes) -> None:
        if self._t0 is None:
            self._t0 = codes.t
        datagrams = self.encoder.encode(codes, codes.t - self._t0)
        self.stats.frames += 1
        for datagram in datagrams:
            try:
                self._sock.sendto(datagram, self.address)
            except OSError as exc:
                self.stats.send_errors += 1
                self.stats.last_error = exc.strerror or str(exc)
                continue
            self.stats.datagrams += 1
            self.stats.bytes += len(datagram)

    def close(self) -> None:
        self._sock.close()


# -- receiving -----------------------------------------------------------------------------
def osc_messages(datagram: bytes, depth: int = 0) -> list[OscMessage]:
    """Every OSC message in a datagram (a message or a bundle, nested up to
    ``MAX_BUNDLE_DEPTH``); raises VmcError on anything malformed.

    Bundles are unpacked here rather than by python-osc's ``OscBundle``, which logs a
    warning through the root logger for each element it cannot identify (a flood of junk
    would print a line each) and recurses without a limit; each message is still parsed by
    python-osc, after its type tag is checked to hold only VMC's types (python-osc logs
    unknown ones too).
    """
    if datagram.startswith(_BUNDLE_HEADER):
        if depth >= MAX_BUNDLE_DEPTH:
            raise VmcError("bundles nested too deep")
        if len(datagram) < 16:
            raise VmcError("bundle without a time tag")
        messages = []
        index = 16
        while index < len(datagram):
            if index + 4 > len(datagram):
                raise VmcError("truncated bundle element size")
            size = int.from_bytes(datagram[index:index + 4], "big", signed=True)
            index += 4
            if size <= 0 or size % 4 or index + size > len(datagram):
                raise VmcError(f"bad bundle element size {size}")
            messages += osc_messages(datagram[index:index + size], depth + 1)
            index += size
        return messages
    if not datagram.startswith(b"/"):
        raise VmcError("neither an OSC message nor a bundle")
    address_end = datagram.find(b"\x00")
    tags_at = (address_end + 4) & ~3
    if address_end > 0 and tags_at < len(datagram):
        tags_end = datagram.find(b"\x00", tags_at)
        tags = datagram[tags_at:tags_end] if tags_end > 0 else b""
        if not tags.startswith(b",") or not set(tags[1:]) <= _VMC_TYPES:
            raise VmcError(f"type tag {tags[:16]!r} is not VMC's")
    try:
        return [OscMessage(datagram)]
    except Exception as exc:  # noqa: BLE001 - hostile bytes can raise anything from a parser
        raise VmcError(f"bad OSC message: {exc}") from None


def _numbers(args: list) -> list[float]:
    """The arguments as finite floats, or VmcError."""
    for value in args:
        if value.__class__ not in (float, int) or not math.isfinite(value):
            raise VmcError("expected a finite number")
    return [float(v) for v in args]


@dataclass
class ReceiverStats:
    """What a VMC receiver has seen. ``malformed``: datagrams or messages dropped as bad;
    ``ignored``: well-formed messages of addresses we do not use (cameras, trackers...);
    ``dropped_flood``: datagrams discarded unread because a poll's budget was spent."""

    datagrams: int = 0
    messages: int = 0
    frames: int = 0
    malformed: int = 0
    ignored: int = 0
    unknown_bones: int = 0
    unknown_blendshapes: int = 0
    dropped_flood: int = 0
    unknown_names: dict = field(default_factory=dict)


class VmcDecoder:
    """VMC messages -> the state of a marionette -> codes frames (no sockets here).

    The state keeps what arrived as it arrived (Unity axes, a row of 7 numbers per bone:
    position, quaternion x y z w); ``codes()`` converts it all at once."""

    def __init__(self, humanoid: Humanoid):
        self.humanoid = humanoid
        self.bones = np.zeros((len(HUMAN_BONES), 7))
        self.bones[:, 6] = 1.0
        self.present = np.zeros(len(HUMAN_BONES), dtype=bool)
        self.root = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
        self.root_seen = False
        self.face = np.zeros(len(BLENDSHAPE_NAMES), dtype=np.float32)
        self.face_seen = False
        self._pending: dict[int, float] = {}
        self._version = 0  # counts state changes
        self._changed_at = 0.0
        self._frame: Codes | None = None
        self._frame_version = 0
        self.stats = ReceiverStats()
        self._legs = [HUMAN_BONE_INDEX[n] for n in ("LeftLowerLeg", "LeftFoot",
                                                     "RightLowerLeg", "RightFoot")]

    def feed(self, datagram: bytes, arrival_s: float) -> None:
        """Apply one datagram; a malformed one is counted and changes nothing."""
        self.stats.datagrams += 1
        try:
            messages = osc_messages(datagram)
            updates = [self._parse(m) for m in messages]
        except VmcError:
            self.stats.malformed += 1
            return
        self.stats.messages += len(messages)
        changed = False
        for update in updates:
            if update is not None:
                update()
                changed = True
        if changed:
            self._version += 1
            self._changed_at = arrival_s

    def _unknown(self, name: str) -> None:
        names = self.stats.unknown_names
        name = name[:UNKNOWN_NAME_CHARS]
        if name in names or len(names) < UNKNOWN_NAMES_KEPT:
            names[name] = names.get(name, 0) + 1

    def _parse(self, message: OscMessage):
        """Check one message; return the update it makes (a callable) or None. Raises
        VmcError when it is malformed."""
        address, args = message.address, message.params
        if address == BONE_POS or address == ROOT_POS:
            if len(args) not in ((8, 14) if address == ROOT_POS else (8,)) \
                    or not isinstance(args[0], str):
                raise VmcError(f"{address} takes a name and 7 numbers")
            values = _numbers(args[1:8])
            norm = math.sqrt(sum(v * v for v in values[3:]))
            if not 0.5 < norm < 1.5 or max(map(abs, values[:3])) > _MAX_POSITION_M:
                raise VmcError(f"{address}: not a rotation, or a position out of range")
            if address == ROOT_POS:
                return lambda: self._set_root(values)
            index = HUMAN_BONE_INDEX.get(args[0])
            if index is None:
                self.stats.unknown_bones += 1
                self._unknown(args[0])
                return None
            return lambda: self._set_bone(index, values)
        if address == BLEND_VAL:
            if len(args) != 2 or not isinstance(args[0], str):
                raise VmcError(f"{address} takes a name and a number")
            (value,) = _numbers(args[1:])
            index = _BLEND_INDEX.get(args[0].lower())
            if index is None:
                self.stats.unknown_blendshapes += 1
                self._unknown(args[0])
                return None
            return lambda: self._pending.__setitem__(index, min(max(value, 0.0), 1.0))
        if address == BLEND_APPLY:
            return self._apply_blendshapes
        self.stats.ignored += 1
        return None

    def _set_root(self, values: list[float]) -> None:
        self.root[:] = values
        self.root_seen = True

    def _set_bone(self, index: int, values: list[float]) -> None:
        self.bones[index] = values
        self.present[index] = True

    def _apply_blendshapes(self) -> None:
        for index, value in self._pending.items():
            self.face[index] = value
        self._pending.clear()
        self.face_seen = True

    def _scale(self) -> float:
        """Our leg length over the sender's (1 when its legs' offsets are unknown)."""
        if not self.present[self._legs].all():
            return 1.0
        theirs = np.linalg.norm(self.bones[self._legs, :3], axis=1).sum() / 2
        if theirs < 0.05:
            return 1.0
        return float(np.clip(self.humanoid.leg_length_m / theirs, 0.2, 5.0))

    def codes(self) -> Codes | None:
        """The state as a codes frame (the same object until something changes); None
        before anything arrived."""
        if self._version == 0:
            return None
        if self._frame is not None and self._frame_version == self._version:
            return self._frame
        rotations = from_unity_quaternion(self.bones[:, 3:])
        rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
        root_position = from_unity_position(self.root[:3])
        root_rotation = from_unity_quaternion(self.root[3:])
        root_rotation /= np.linalg.norm(root_rotation)
        hips = from_unity_position(self.bones[0, :3]) if self.present[0] \
            else self.humanoid.rest_offsets[0]
        hips_position = self._scale() * (root_position + quat_to_matrix(root_rotation) @ hips)
        rotations[0] = quat_multiply(root_rotation, rotations[0])
        present = self.present.copy()
        present[0] = present[0] or self.root_seen
        valid = np.zeros(len(PARTS), dtype=bool)
        valid[PART_INDEX["face"]] = self.face_seen
        for part, indices in _PART_BONES.items():
            valid[PART_INDEX[part]] = bool(self.present[indices].any())
        valid[PART_INDEX["root"]] = present[0]
        self._frame = self.humanoid.to_codes(
            rotations, present, hips_position, t=self._changed_at,
            seq=self.stats.frames % 2**32, face=self.face.copy(), valid=valid)
        self._frame_version = self._version
        self.stats.frames += 1
        return self._frame


def _part_bones() -> dict[str, np.ndarray]:
    """Humanoid bone indices whose arrival makes each codes part valid."""
    names = HUMAN_BONE_NAMES

    def fingers(side):
        return tuple(n for n in names if n.startswith(side)
                     and n.endswith(("Proximal", "Intermediate", "Distal")))

    left, right = fingers("Left"), fingers("Right")
    parts = {
        "gaze": ("LeftEye", "RightEye"),
        "head": ("Neck", "Head"),
        "left_hand": left,
        "right_hand": right,
        "body": tuple(n for n in names if n not in (*left, *right, "LeftEye", "RightEye",
                                                    "Neck", "Head", "Hips")),
    }
    return {part: np.array([HUMAN_BONE_INDEX[n] for n in bones])
            for part, bones in parts.items()}


_PART_BONES = _part_bones()


class VmcReceiver:
    """A UDP socket bound to ``host:port`` receiving VMC, polled without blocking.

    ``take()`` polls and returns the newest codes frame if it is new since the last take;
    ``latest()`` polls and returns the newest frame (or None before any arrived).
    """

    def __init__(self, host: str, port: int, humanoid: Humanoid, max_datagrams: int = 512,
                 max_discarded: int = 8192):
        self.decoder = VmcDecoder(humanoid)
        self.max_datagrams = max_datagrams
        self.max_discarded = max_discarded
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                   socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.address = self._sock.getsockname()[:2]
        self._taken_seq: int | None = None

    @property
    def stats(self) -> ReceiverStats:
        return self.decoder.stats

    def _recv(self) -> bytes | None:
        try:
            return self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # e.g. an ICMP error reported on the socket: nothing to read
            return b""

    def poll(self) -> int:
        """Handle waiting datagrams (at most ``max_datagrams``); returns how many."""
        handled = 0
        while handled < self.max_datagrams:
            data = self._recv()
            if data is None:
                return handled
            if data:
                self.decoder.feed(data, time.monotonic())
            handled += 1
        for _ in range(self.max_discarded):  # a flood: drop the rest unread
            if self._recv() is None:
                break
            self.stats.dropped_flood += 1
        return handled

    def latest(self) -> Codes | None:
        self.poll()
        return self.decoder.codes()

    def take(self) -> Codes | None:
        codes = self.latest()
        if codes is None or codes.seq == self._taken_seq:
            return None
        self._taken_seq = codes.seq
        return codes

    def close(self) -> None:
        self._sock.close()
