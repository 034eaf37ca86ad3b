"""Codes: the compact driving signal of an avatar, one frame at a time.

A ``Codes`` frame holds everything the receiver needs to pose an avatar:

- ``t`` (sender monotonic seconds, float64) and ``seq`` (uint32 frame counter),
- ``face``: the 52 ARKit blendshape weights in [0, 1], in ``BLENDSHAPE_NAMES`` order,
- ``gaze``: (2, 2) yaw and pitch in radians per eye, rows (left, right); yaw turns the eye
  toward the avatar's left (+X), pitch up (+Y),
- ``head`` (4 bones), ``body`` (31 bones), ``hands`` (2 x 19 bones, rows left, right):
  unit quaternions (w, x, y, z), each the bone's rotation relative to its parent, in axes
  that are the world axes when the avatar stands at rest (see ``avatar.rig``),
- ``root_translation`` (metres) and ``root_rotation`` (quaternion): where the avatar's root
  stands in its own space (facing +Z, +Y up),
- ``valid``: one flag per part in ``PARTS``. An invalid part holds rest values and the
  receiver keeps its last good pose or relaxes to rest.

Construction validates everything and raises ``CodesError`` with a readable message: NaN,
infinities, weights out of range and non-unit quaternions never reach the avatar.

Two serialised forms: a JSON object (one frame per line in a ``.jsonl`` file, named
fields) for people and tools, and a lossless binary form (float32 values) that the wire
format of ``net/`` quantises further. JSON -> Codes -> binary -> Codes -> JSON is exact.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from common.files import replacing
# ARKit's 52 blendshapes in Apple's documented (and Live Link Face's) order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawRight", "jawLeft", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)
BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def _sided(names: Iterable[str], side: str) -> list[str]:
    return [f"{n}.{side}" for n in names]


_LEG = ["pelvis", "upperleg01", "upperleg02", "lowerleg01", "lowerleg02", "foot"]
_ARM = ["clavicle", "shoulder01", "upperarm01", "upperarm02", "lowerarm01", "lowerarm02", "wrist"]
_SPINE = ["spine05", "spine04", "spine03", "spine02", "spine01"]

# Template bones driven by each part, in the order their quaternions are stored.
BODY_BONES: tuple[str, ...] = tuple(
    _sided(_LEG, "L") + _sided(_LEG, "R") + _SPINE + _sided(_ARM, "L") + _sided(_ARM, "R")
)
HEAD_BONES: tuple[str, ...] = ("neck01", "neck02", "neck03", "head")
_HAND = (
    ["finger1-1", "finger1-2", "finger1-3"]
    + [f"{b}" for k in range(1, 5) for b in (f"metacarpal{k}", f"finger{k + 1}-1",
                                              f"finger{k + 1}-2", f"finger{k + 1}-3")]
)
HAND_BONES: tuple[tuple[str, ...], tuple[str, ...]] = (
    tuple(_sided(_HAND, "L")),
    tuple(_sided(_HAND, "R")),
)
EYE_BONES: tuple[str, str] = ("eye.L", "eye.R")
ROOT_BONE = "root"

PARTS: tuple[str, ...] = ("face", "gaze", "head", "body", "left_hand", "right_hand", "root")
PART_INDEX = {name: i for i, name in enumerate(PARTS)}

GAZE_LIMIT_RAD = 0.9  # about 52 degrees: beyond what a human eye turns
ROOT_LIMIT_M = 100.0  # a root further than this from the origin is garbage, not a pose
_UNIT_TOLERANCE = 1e-3

_SHAPES = {
    "face": (len(BLENDSHAPE_NAMES),),
    "gaze": (2, 2),
    "head": (len(HEAD_BONES), 4),
    "body": (len(BODY_BONES), 4),
    "hands": (2, len(HAND_BONES[0]), 4),
    "root_translation": (3,),
    "root_rotation": (4,),
}


class CodesError(ValueError):
    """A codes frame (or its serialised form) that is malformed or out of range."""


def _identity(shape: tuple[int, ...]) -> np.ndarray:
    q = np.zeros(shape, dtype=np.float32)
    q[..., 0] = 1.0
    return q


@dataclass(eq=False)
class Codes:
    t: float = 0.0
    seq: int = 0
    face: np.ndarray = field(default_factory=lambda: np.zeros(_SHAPES["face"], np.float32))
    gaze: np.ndarray = field(default_factory=lambda: np.zeros(_SHAPES["gaze"], np.float32))
    head: np.ndarray = field(default_factory=lambda: _identity(_SHAPES["head"]))
    body: np.ndarray = field(default_factory=lambda: _identity(_SHAPES["body"]))
    hands: np.ndarray = field(default_factory=lambda: _identity(_SHAPES["hands"]))
    root_translation: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    root_rotation: np.ndarray = field(default_factory=lambda: _identity((4,)))
    valid: np.ndarray = field(default_factory=lambda: np.ones(len(PARTS), dtype=bool))

    def __post_init__(self) -> None:
        try:
            self.t = float(self.t)
        except (TypeError, ValueError):
            raise CodesError(f"t must be a number, got {self.t!r}") from None
        if not math.isfinite(self.t):
            raise CodesError(f"t must be finite, got {self.t}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, (int, np.integer)):
            raise CodesError(f"seq must be an integer, got {self.seq!r}")
        self.seq = int(self.seq)
        if not 0 <= self.seq < 2**32:
            raise CodesError(f"seq must be in [0, 2**32), got {self.seq}")
        for name, shape in _SHAPES.items():
            setattr(self, name, _as_array(name, getattr(self, name), shape))
        valid = np.asarray(self.valid)
        if valid.shape != (len(PARTS),):
            raise CodesError(f"valid must have {len(PARTS)} flags ({', '.join(PARTS)})")
        self.valid = valid.astype(bool)

        if np.any(self.face < 0.0) or np.any(self.face > 1.0):
            worst = int(np.argmax(np.abs(self.face - np.clip(self.face, 0, 1))))
            raise CodesError(
                f"blendshape {BLENDSHAPE_NAMES[worst]} = {self.face[worst]:g} is outside [0, 1]"
            )
        if np.any(np.abs(self.gaze) > GAZE_LIMIT_RAD):
            raise CodesError(f"gaze angles must be within +-{GAZE_LIMIT_RAD} rad")
        if np.any(np.abs(self.root_translation) > ROOT_LIMIT_M):
            raise CodesError(f"root translation beyond {ROOT_LIMIT_M} m")
        for name in ("head", "body", "hands", "root_rotation"):
            norms = np.linalg.norm(getattr(self, name).astype(np.float64), axis=-1)
            if np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
                raise CodesError(f"{name} holds a quaternion of length "
                                 f"{norms.flat[np.argmax(np.abs(norms - 1))]:.4f}, "
                                 "not a unit quaternion")

    # -- convenience -----------------------------------------------------------------
    def is_valid(self, part: str) -> bool:
        return bool(self.valid[PART_INDEX[part]])

    def blendshape(self, name: str) -> float:
        return float(self.face[BLENDSHAPE_INDEX[name]])

    def bone_rotations(self) -> dict[str, np.ndarray]:
        """Every driven bone's local quaternion by template bone name (root excluded)."""
        out = dict(zip(BODY_BONES, self.body))
        out.update(zip(HEAD_BONES, self.head))
        for side in range(2):
            out.update(zip(HAND_BONES[side], self.hands[side]))
        return out

    def replace(self, **changes) -> "Codes":
        values = {name: getattr(self, name) for name in ("t", "seq", "valid", *_SHAPES)}
        values.update(changes)
        return Codes(**{k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in values.items()})

    def equals(self, other: "Codes") -> bool:
        """Exact equality of every field."""
        return (
            self.t == other.t
            and self.seq == other.seq
            and np.array_equal(self.valid, other.valid)
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in _SHAPES)
        )

    # -- JSON form ---------------------------------------------------------------------
    def to_json_dict(self) -> dict:
        def quats(names, arr):
            return {n: [float(v) for v in q] for n, q in zip(names, arr)}

        return {
            "t": self.t,
            "seq": self.seq,
            "valid": {p: bool(v) for p, v in zip(PARTS, self.valid)},
            "face": {n: float(w) for n, w in zip(BLENDSHAPE_NAMES, self.face)},
            "gaze": {"left": [float(v) for v in self.gaze[0]],
                     "right": [float(v) for v in self.gaze[1]]},
            "head": quats(HEAD_BONES, self.head),
            "body": quats(BODY_BONES, self.body),
            "hands": {"left": quats(HAND_BONES[0], self.hands[0]),
                      "right": quats(HAND_BONES[1], self.hands[1])},
            "root": {"translation": [float(v) for v in self.root_translation],
                     "rotation": [float(v) for v in self.root_rotation]},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"))

    @classmethod
    def from_json_dict(cls, d: dict) -> "Codes":
        """Parse the JSON form. Missing parts take rest values; unknown names are errors."""
        if not isinstance(d, dict):
            raise CodesError("a codes frame must be a JSON object")
        known = {"t", "seq", "valid", "face", "gaze", "head", "body", "hands", "root"}
        unknown = set(d) - known
        if unknown:
            raise CodesError(f"unknown field(s): {', '.join(sorted(unknown))}")
        rest = cls()
        try:
            kwargs: dict = {"t": d.get("t", 0.0), "seq": d.get("seq", 0)}
            valid = rest.valid.copy()
            for part, flag in _mapping(d.get("valid", {}), "valid").items():
                if part not in PART_INDEX:
                    raise CodesError(f"unknown part {part!r} in valid")
                if not isinstance(flag, bool):
                    raise CodesError(f"valid.{part} must be true or false")
                valid[PART_INDEX[part]] = flag
            kwargs["valid"] = valid
            kwargs["face"] = _named(d.get("face", {}), BLENDSHAPE_NAMES, rest.face, "face")
            gaze = _mapping(d.get("gaze", {}), "gaze")
            kwargs["gaze"] = _named(gaze, ("left", "right"), rest.gaze, "gaze")
            kwargs["head"] = _named(d.get("head", {}), HEAD_BONES, rest.head, "head")
            kwargs["body"] = _named(d.get("body", {}), BODY_BONES, rest.body, "body")
            hands = _mapping(d.get("hands", {}), "hands")
            unknown_sides = set(hands) - {"left", "right"}
            if unknown_sides:
                raise CodesError(f"unknown hand(s): {', '.join(sorted(unknown_sides))}")
            kwargs["hands"] = np.stack([
                _named(hands.get(side, {}), HAND_BONES[i], rest.hands[i], f"hands.{side}")
                for i, side in enumerate(("left", "right"))
            ])
            root = _mapping(d.get("root", {}), "root")
            if set(root) - {"translation", "rotation"}:
                raise CodesError("root takes only translation and rotation")
            kwargs["root_translation"] = root.get("translation", rest.root_translation)
            kwargs["root_rotation"] = root.get("rotation", rest.root_rotation)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CodesError):
                raise
            raise CodesError(f"malformed codes frame: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Codes":
        from common.safejson import loads

        try:
            d = loads(text, MAX_LINE_BYTES)
        except ValueError as exc:  # JSONLimitError: malformed, too big, too deep, huge numbers
            raise CodesError(str(exc)) from None
        return cls.from_json_dict(d)

    # -- lossless binary form ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        mask = int(np.dot(self.valid.astype(np.int64), 1 << np.arange(len(PARTS))))
        header = _BIN_HEADER.pack(_BIN_MAGIC, _BIN_VERSION, mask, self.seq, self.t)
        body = b"".join(getattr(self, n).astype("<f4").tobytes() for n in _SHAPES)
        return header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> "Codes":
        if len(data) != BINARY_SIZE:
            raise CodesError(f"binary codes must be {BINARY_SIZE} bytes, got {len(data)}")
        magic, version, mask, seq, t = _BIN_HEADER.unpack_from(data)
        if magic != _BIN_MAGIC:
            raise CodesError("not a binary codes frame (bad magic)")
        if version != _BIN_VERSION:
            raise CodesError(f"binary codes version {version} is not supported")
        offset = _BIN_HEADER.size
        arrays = {}
        for name, shape in _SHAPES.items():
            count = int(np.prod(shape))
            arrays[name] = (np.frombuffer(data, "<f4", count, offset).reshape(shape)
                            .astype(np.float32))
            offset += 4 * count
        valid = np.array([(mask >> i) & 1 for i in range(len(PARTS))], dtype=bool)
        return cls(t=t, seq=seq, valid=valid, **arrays)


_BIN_MAGIC = b"LCAC"
_BIN_VERSION = 1
_BIN_HEADER = struct.Struct("<4sBBId")
BINARY_SIZE = _BIN_HEADER.size + 4 * sum(int(np.prod(s)) for s in _SHAPES.values())


def _mapping(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise CodesError(f"{name} must be a JSON object")
    return value


def _named(value, names, default: np.ndarray, what: str) -> np.ndarray:
    mapping = _mapping(value, what)
    index = {n: i for i, n in enumerate(names)}
    out = np.array(default, dtype=np.float32, copy=True)
    for key, v in mapping.items():
        if key not in index:
            raise CodesError(f"unknown name {key!r} in {what}")
        if isinstance(v, bool) or not isinstance(v, (int, float, list)):
            raise CodesError(f"{what}.{key} must be a number or a list of numbers")
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != out.shape[1:]:
            raise CodesError(f"{what}.{key} has shape {list(arr.shape)}, "
                             f"expected {list(out.shape[1:])}")
        out[index[key]] = arr
    return out


def _as_array(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise CodesError(f"{name} must be numeric") from None
    if arr.shape != shape:
        raise CodesError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise CodesError(f"{name} contains NaN or infinity")
    return arr


# One codes frame in JSON is about 6 KB (write_jsonl); a line 100x that is not a frame.
MAX_LINE_BYTES = 1 << 20


def read_jsonl(path: str | Path) -> list[Codes]:
    """All frames of a codes JSONL file. Errors name the file and line."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[Codes]:
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CodesError(f"cannot read codes file {path}: {exc.strerror}") from None
    with handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):  # a 1 GB line is never read whole
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise CodesError(f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CodesError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield Codes.from_json(line)
            except CodesError as exc:
                raise CodesError(f"{path}:{number}: {exc}") from None


def write_jsonl(path: str | Path, frames: Iterable[Codes]) -> int:
    """Write frames one per line; returns the count. Writes to a temporary file first so
    that a crash never leaves a half-written file under the final name."""
    count = 0
    with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for frame in frames:
            handle.write(frame.to_json() + "\n")
            count += 1
    return count
