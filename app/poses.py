"""Built-in poses and short animations, as codes: `rest`, `wave`, `smile`, `talk`, `fist`, `walk`.

``POSES[name]`` is a ``Pose`` with a duration (0 for a still pose) and ``codes(t)`` giving
the frame at ``t`` seconds. Rotations are written in the rig's convention (avatar/rig.py):
local to the parent, in world-aligned rest axes (+X the avatar's left, +Y up, +Z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from avatar.codes import BLENDSHAPE_INDEX, BODY_BONES, HAND_BONES, HEAD_BONES, Codes
from common.rotation import quat_from_axis_angle, quat_multiply

# Hand geometry of the template at rest (left hand; the right mirrors it), measured by
# tests/test_poses.py against the template: the middle finger's direction and the palm's
# normal. Fingers curl about finger x palm.
FINGER_DIRECTION_L = np.array([0.170, -0.754, 0.634])
PALM_NORMAL_L = np.array([-0.896, -0.387, -0.219])
THUMB_DIRECTION_L = np.array([-0.503, -0.329, 0.799])


def mirror(v: np.ndarray) -> np.ndarray:
    return v * np.array([-1.0, 1.0, 1.0])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def curl_axis(side: int) -> np.ndarray:
    finger, palm = FINGER_DIRECTION_L, PALM_NORMAL_L
    if side == 1:
        finger, palm = mirror(finger), mirror(palm)
    return _unit(np.cross(finger, palm))


def _rot(axis, angle_rad) -> np.ndarray:
    return quat_from_axis_angle(_unit(axis), angle_rad)


@dataclass(frozen=True)
class Pose:
    name: str
    duration_s: float  # 0: a still pose
    codes_at: Callable[[float], Codes]
    description: str

    def codes(self, t: float = 0.0) -> Codes:
        return self.codes_at(t)

    def frames(self, fps: float) -> list[Codes]:
        """The pose sampled at ``fps`` (one frame for a still pose), seq from 0."""
        count = max(1, int(round(self.duration_s * fps)))
        return [self.codes_at(i / fps).replace(t=i / fps, seq=i) for i in range(count)]


class _Builder:
    """Accumulates bone rotations and blendshape weights for one frame."""

    def __init__(self):
        self.codes = Codes()
        self.body = self.codes.body.copy()
        self.head = self.codes.head.copy()
        self.hands = self.codes.hands.copy()
        self.face = self.codes.face.copy()

    def rotate(self, bone: str, axis, angle_rad: float) -> "_Builder":
        q = _rot(axis, angle_rad)
        for array, names in ((self.body, BODY_BONES), (self.head, HEAD_BONES),
                             (self.hands[0], HAND_BONES[0]), (self.hands[1], HAND_BONES[1])):
            if bone in names:
                i = names.index(bone)
                array[i] = quat_multiply(q, array[i])
                return self
        raise KeyError(bone)

    def weight(self, name: str, value: float) -> "_Builder":
        self.face[BLENDSHAPE_INDEX[name]] = float(np.clip(value, 0.0, 1.0))
        return self

    def fist(self, side: int, amount: float = 1.0) -> "_Builder":
        s = "LR"[side]
        axis = curl_axis(side)
        for finger in range(2, 6):
            # A closed fist: knuckles about 90 degrees, middle joints past 100, the last 70.
            for joint, angle in ((1, 1.55), (2, 1.85), (3, 1.2)):
                self.rotate(f"finger{finger}-{joint}.{s}", axis, amount * angle)
        thumb = THUMB_DIRECTION_L if side == 0 else mirror(THUMB_DIRECTION_L)
        palm = PALM_NORMAL_L if side == 0 else mirror(PALM_NORMAL_L)
        # The thumb folds across the front of the curled fingers (it flexes toward the palm
        # and swings in across it), not up beside them.
        finger = FINGER_DIRECTION_L if side == 0 else mirror(FINGER_DIRECTION_L)
        across = np.cross(thumb, palm)
        self.rotate(f"finger1-1.{s}", across, amount * 0.7)
        self.rotate(f"finger1-1.{s}", finger, amount * (0.5 if side == 0 else -0.5))
        self.rotate(f"finger1-2.{s}", across, amount * 0.8)
        self.rotate(f"finger1-3.{s}", across, amount * 0.6)
        return self

    def build(self, **extra) -> Codes:
        return self.codes.replace(body=self.body, head=self.head, hands=self.hands,
                                  face=self.face, **extra)


Z = (0.0, 0.0, 1.0)
X = (1.0, 0.0, 0.0)
Y = (0.0, 1.0, 0.0)


def _rest(t: float) -> Codes:
    return Codes()


def _arms_relaxed(b: _Builder) -> _Builder:
    """From the template's A-pose to arms hanging naturally at the sides."""
    return b.rotate("upperarm01.L", Z, -0.55).rotate("upperarm01.R", Z, 0.55)


def _wave(t: float) -> Codes:
    b = _Builder()
    b.rotate("upperarm01.L", Z, -0.55)
    b.rotate("upperarm01.R", Z, -1.9)  # right arm up and out
    b.rotate("lowerarm01.R", X, -0.25).rotate("lowerarm01.R", Z,
                                              -0.35 + 0.35 * math.sin(2 * math.pi * 1.6 * t))
    b.rotate("wrist.R", Z, 0.15 * math.sin(2 * math.pi * 1.6 * t + 0.6))
    b.weight("mouthSmileLeft", 0.6).weight("mouthSmileRight", 0.6)
    b.rotate("head", Y, -0.12)
    return b.build()


def _smile(t: float) -> Codes:
    b = _arms_relaxed(_Builder())
    for name, w in (("mouthSmileLeft", 0.95), ("mouthSmileRight", 0.95), ("cheekSquintLeft", 0.5),
                    ("cheekSquintRight", 0.5), ("eyeSquintLeft", 0.25), ("eyeSquintRight", 0.25),
                    ("mouthUpperUpLeft", 0.2), ("mouthUpperUpRight", 0.2)):
        b.weight(name, w)
    return b.build()


def _talk(t: float) -> Codes:
    b = _arms_relaxed(_Builder())
    # Syllables at about 4 Hz with a slower phrase envelope, a few blinks, small nods.
    syllable = (max(0.0, math.sin(2 * math.pi * 4.1 * t))
                * (0.6 + 0.4 * math.sin(2 * math.pi * 0.7 * t)))
    b.weight("jawOpen", 0.55 * syllable)
    b.weight("mouthFunnel", 0.3 * max(0.0, math.sin(2 * math.pi * 1.3 * t)))
    b.weight("mouthSmileLeft", 0.25).weight("mouthSmileRight", 0.25)
    blink = 1.0 if (t % 1.9) < 0.12 else 0.0
    b.weight("eyeBlinkLeft", blink).weight("eyeBlinkRight", blink)
    b.weight("browInnerUp", 0.3 * max(0.0, math.sin(2 * math.pi * 0.5 * t)))
    b.rotate("head", X, 0.06 * math.sin(2 * math.pi * 0.9 * t))
    b.rotate("head", Y, 0.1 * math.sin(2 * math.pi * 0.35 * t))
    gaze = 0.12 * math.sin(2 * math.pi * 0.3 * t)
    return b.build(gaze=[[gaze, 0.0], [gaze, 0.0]])


def _fist(t: float) -> Codes:
    b = _Builder()
    b.rotate("upperarm01.L", Z, -0.35).rotate("upperarm01.R", Z, 0.35)
    b.rotate("lowerarm01.L", X, -1.2).rotate("lowerarm01.R", X, -1.2)  # forearms forward
    return b.fist(0).fist(1).build()


def _walk(t: float) -> Codes:
    b = _arms_relaxed(_Builder())
    phase = 2 * math.pi * 0.9 * t  # a stride cycle of 1.1 s
    swing = 0.45 * math.sin(phase)
    b.rotate("upperleg01.L", X, -swing).rotate("upperleg01.R", X, swing)
    b.rotate("lowerleg01.L", X, 0.5 * max(0.0, math.sin(phase + 1.2)) + 0.1)
    b.rotate("lowerleg01.R", X, 0.5 * max(0.0, math.sin(phase + 1.2 + math.pi)) + 0.1)
    b.rotate("upperarm01.L", X, 0.35 * math.sin(phase)).rotate("upperarm01.R", X,
                                                              -0.35 * math.sin(phase))
    b.rotate("lowerarm01.L", X, -0.3).rotate("lowerarm01.R", X, -0.3)
    b.rotate("spine03", Y, 0.08 * math.sin(phase))
    bob = 0.015 * (1 - math.cos(2 * phase)) - 0.02
    return b.build(root_translation=[0.0, bob, 0.0])


POSES: dict[str, Pose] = {
    p.name: p
    for p in (
        Pose("rest", 0.0, _rest, "the template's rest pose"),
        Pose("wave", 2.5, _wave, "right arm raised, waving, smiling"),
        Pose("smile", 0.0, _smile, "a broad smile, arms relaxed"),
        Pose("talk", 3.0, _talk, "talking: jaw, lips, blinks, small head motion"),
        Pose("fist", 0.0, _fist, "forearms forward, both hands in fists"),
        Pose("walk", 2.2, _walk, "walking in place"),
    )
}
