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

``solve_many`` computes this a chain level at a time for every finger of every hand at once
(1.0 ms for two hands against 4.2 ms a hand bone by bone, where numpy's per-call cost on
3-vectors was the time); ``solve_reference`` keeps the bone-by-bone version the tests hold
it to.
"""

from __future__ import annotations

import numpy as np

from avatar.codes import HAND_BONES
from common.rotation import matrix_to_quat, quat_apply, quat_from_axis_angle
from avatar.template import Template
from tracking.kinematics import (EPS, align, blend, bone_rotation, frame, local_quaternions,
                                 swing, unit)

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])
HAND_POINTS = 21

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
            self.rest_dirs["across." + side] = (heads[f"finger2-1.{side}"]
                                               - heads[f"finger5-1.{side}"])
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
        self._chains = self._chain_arrays()

    def _chain_arrays(self) -> dict:
        """What ``solve_many`` reads, by chain level: level 0 holds the thumb's first bone
        and the four metacarpals (chains 0-4), levels 1-2 the thumb's next bone and the
        fingers' joints, level 3 the fingers' last joints (chains 1-4). Rows of per-side
        arrays: 0 left, 1 right."""
        index = {bone: i for i, (bone, _, _) in enumerate(_SEGMENTS)}
        levels = []
        for level in range(4):
            thumb = [f"finger1-{level + 1}"] if level < 3 else []
            fingers = [f"metacarpal{k - 1}" if level == 0 else f"finger{k}-{level}"
                       for k in range(2, 6)]
            levels.append(thumb + fingers)
        out = {"bones": [[index[b] for b in bones] for bones in levels],
               "from": [[_SEGMENTS[index[b]][1] for b in bones] for bones in levels],
               "to": [[_SEGMENTS[index[b]][2] for b in bones] for bones in levels],
               "weights": [np.array([0.3 if b.startswith("finger1") else 1.0 for b in bones])
                           for bones in levels]}
        out["rest_dirs"] = [np.array([[unit(self.rest_dirs[f"{b}.{s}"]) for b in bones]
                                      for s in "LR"]) for bones in levels]
        out["rest_frames"] = [np.array([[frame(self.rest_dirs[f"{b}.{s}"],
                                               self.rest_dirs["across." + s]) for b in bones]
                                        for s in "LR"]) for bones in levels]
        out["flexion_axes"] = [np.array([[self.flexion_axes[f"finger{k}-{j}.{s}"]
                                          for k in range(2, 6)] for s in "LR"])
                               for j in (1, 2, 3)]
        out["rest_bend"] = np.array([[self.rest_bend[(s, k)] for k in range(2, 6)]
                                     for s in "LR"])  # (2, 4 fingers, 3 joints, 2)
        limits = [JOINT_LIMITS_DEG[j] for j in (1, 2, 3)]
        out["least"] = [np.radians([least, -sideways]) for least, _, sideways in limits]
        out["most"] = [np.radians([most, sideways]) for _, most, sideways in limits]
        out["wrist_rest_frame"] = np.array([frame(self.rest_dirs["hand." + s],
                                                  self.rest_dirs["across." + s]).T
                                            for s in "LR"])
        parents = {s: [self.parents[f"{bone}.{s}"][:-2] for bone, _, _ in _SEGMENTS]
                   for s in "LR"}
        if parents["L"] != parents["R"] or {p for p in parents["L"] if p not in index} != {
                "wrist"}:
            raise ValueError("the template's hands are not one skeleton mirrored")
        rows = [(i, index[p]) for i, p in enumerate(parents["L"]) if p != "wrist"]
        out["wrist_children"] = [i for i, p in enumerate(parents["L"]) if p == "wrist"]
        out["child_rows"] = [i for i, _ in rows]
        out["parent_rows"] = [p for _, p in rows]
        return out

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
        return self.solve_many(np.asarray(points_world)[None], [side])[0]

    def solve_many(self, points_world: np.ndarray, sides) -> np.ndarray:
        """(H, 19, 4) local quaternions of H hands at once: ``points_world`` (H, 21, 3) in
        world axes, ``sides`` (H,) 0 left, 1 right. The same rotations as
        ``solve_reference``, computed a chain level at a time over every finger of every
        hand: a bone-by-bone solve spent its 4 ms a hand on numpy's per-call cost on
        3-vectors, not on arithmetic."""
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, HAND_POINTS, 3)
        sides = np.asarray(sides, dtype=np.intp).reshape(-1)
        if len(sides) != len(points):
            raise ValueError(f"{len(points)} hands but {len(sides)} sides")
        count = len(points)
        if count == 0:
            return np.zeros((0, len(HAND_BONES[0]), 4), np.float32)
        c = self._chains
        along, across = points[:, 9] - points[:, 0], points[:, 5] - points[:, 17]
        wrist = _frames(along, across) @ c["wrist_rest_frame"][sides]
        across5 = np.repeat(_unit(across)[:, None], 5, axis=1)  # (H, 5, 3), one per chain
        world = np.empty((count, len(_SEGMENTS), 3, 3))
        parent = np.repeat(wrist[:, None], 5, axis=1)  # (H, 5, 3, 3)
        trial = None  # the four fingers' plain-swing chain (anatomy)
        for level in range(4):
            if level == 3:
                parent = parent[:, 1:]  # the thumb's chain has ended
            chains = slice(0, 5) if level < 3 else slice(1, 5)
            segment = points[:, c["to"][level]] - points[:, c["from"][level]]
            rest = c["rest_dirs"][level][sides]
            rest_frame = c["rest_frames"][level][sides]
            weight = c["weights"][level]
            primary = segment
            if self.anatomy and level > 0:
                # The four fingers (the last 4 chains) through joint angles: the joint is
                # read in the plain-swing chain, limited, and posed from its parent.
                j = level - 1
                trial = parent[:, -4:] if trial is None else trial
                fingers = segment[:, -4:]
                flex = c["flexion_axes"][j][sides]  # (H, 4, 3, 3)
                a, b, z = np.moveaxis(_mat_t_vec(flex, _mat_t_vec(trial, _unit(fingers))), -1, 0)
                angles = np.stack([np.arctan2(b, a), np.arcsin(np.clip(z, -1.0, 1.0))], -1)
                flexion, spread = np.moveaxis(np.clip(
                    angles + c["rest_bend"][sides, :, j], c["least"][j], c["most"][j]), -1, 0)
                local = np.stack([np.cos(spread) * np.cos(flexion),
                                  np.cos(spread) * np.sin(flexion), np.sin(spread)], -1)
                primary = segment.copy()
                primary[:, -4:] = _mat_vec(parent[:, -4:], _mat_vec(flex, local))
                if level < 3:  # the plain-swing chain goes on beside the posed one, in the
                    # same call (a secondary weight of 0 is a plain swing)
                    n = parent.shape[1]
                    both = _bone_rotations(
                        np.concatenate([parent, trial], 1), np.concatenate([rest, rest[:, -4:]], 1),
                        np.concatenate([primary, fingers], 1),
                        np.concatenate([rest_frame, rest_frame[:, -4:]], 1),
                        np.concatenate([across5[:, chains], across5[:, -4:]], 1),
                        np.concatenate([weight, np.zeros(4)]))
                    parent, trial = both[:, :n], both[:, n:]
                    world[:, c["bones"][level]] = parent
                    continue
            parent = _bone_rotations(parent, rest, primary, rest_frame, across5[:, chains],
                                     weight)
            world[:, c["bones"][level]] = parent
        parents = np.empty_like(world)
        parents[:, c["wrist_children"]] = wrist[:, None]
        parents[:, c["child_rows"]] = world[:, c["parent_rows"]]
        local = np.swapaxes(parents, -1, -2) @ world
        return matrix_to_quat(local).astype(np.float32)

    def solve_reference(self, points_world: np.ndarray, side: int) -> np.ndarray:
        """``solve``, one bone at a time (the obvious version the tests hold the fast one
        to)."""
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
            segment = quat_apply(quat_from_axis_angle(knuckle, -flexion), segment)
            out[base + j] = out[base + j - 1] + segment
            previous = segment
    return out


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


# Small-array versions of the kinematics helpers over leading axes (numpy's cross and norm
# cost more in argument handling than in arithmetic on 3-vectors).
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), EPS)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def _mat_vec(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """m @ v: (..., 3, 3), (..., 3) -> (..., 3)."""
    return (m @ v[..., None])[..., 0]


def _mat_t_vec(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """m.T @ v."""
    return (v[..., None, :] @ m)[..., 0, :]


def _frames(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """``kinematics.frame``: (..., 3) pairs -> (..., 3, 3)."""
    a = _unit(primary)
    b = _unit(secondary - np.sum(secondary * a, axis=-1, keepdims=True) * a)
    return np.stack([a, b, _cross(a, b)], axis=-1)


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> the cross-product matrices (..., 3, 3)."""
    out = np.zeros(v.shape + (3,))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    out[..., 1, 0], out[..., 2, 0], out[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return out


def _swings(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``kinematics.swing`` for unit directions: (..., 3) pairs -> (..., 3, 3)."""
    axis = _cross(a, b)
    s = np.sqrt(np.sum(axis * axis, axis=-1))
    c = np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
    kx = _skew(axis / np.maximum(s, 1e-300)[..., None])
    out = np.eye(3) + s[..., None, None] * kx + (1 - c)[..., None, None] * (kx @ kx)
    for i in zip(*np.nonzero(s < 1e-8)):  # (anti)parallel: rare, the scalar version
        out[i] = swing(a[i], b[i])
    return out


def _blends(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``kinematics.blend`` (quaternion slerp) done on the matrices: ``a`` turned toward
    ``b`` by ``weight`` of the rotation between them, (..., 3, 3) and weights (...)."""
    r = np.swapaxes(a, -1, -2) @ b
    v = 0.5 * np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                        r[..., 1, 0] - r[..., 0, 1]], -1)  # sin(angle) * axis
    cos = np.clip(0.5 * (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1.0), -1.0, 1.0)
    angle = np.arccos(cos)
    sin = np.sin(angle)
    small = sin < 1e-12
    safe = np.where(small, 1.0, sin)
    f1 = np.where(small, weight, np.sin(weight * angle) / safe)
    f2 = np.where(small, 0.5 * weight * weight, (1.0 - np.cos(weight * angle)) / (safe * safe))
    kv = _skew(v)
    out = a @ (np.eye(3) + f1[..., None, None] * kv + f2[..., None, None] * (kv @ kv))
    for i in zip(*np.nonzero(cos < -0.999)):  # near a half turn the axis is ill-read
        out[i] = blend(a[i], b[i], weight[i])
    return out


def _bone_rotations(parent, rest_primary, primary, rest_frame, secondary,
                    secondary_weight) -> np.ndarray:
    """``kinematics.bone_rotation`` over leading axes: rotations (..., 3, 3), directions
    (..., 3) (``rest_primary`` and ``secondary`` unit), ``rest_frame`` =
    ``frame(rest_primary, rest_secondary)`` (..., 3, 3), ``secondary_weight`` broadcasting
    against the leading axes (0: a plain swing)."""
    direction = _unit(primary)
    swung = _swings(_mat_vec(parent, rest_primary), direction) @ parent
    along = np.abs(np.sum(direction * secondary, axis=-1))
    t = np.clip((along - 0.98) / (0.85 - 0.98), 0.0, 1.0)
    weight = np.broadcast_to(secondary_weight * (t * t * (3.0 - 2.0 * t)), along.shape)
    aligned = _frames(direction, secondary) @ np.swapaxes(rest_frame, -1, -2)
    out = np.where((weight >= 1.0)[..., None, None], aligned, swung)
    partial = (weight > 0.0) & (weight < 1.0)
    if partial.any():
        out[partial] = _blends(swung[partial], aligned[partial], weight[partial])
    return out


def hand_scale_ok(points_world: np.ndarray) -> bool:
    """Reject degenerate detections (collapsed or absurdly large hands)."""
    size = float(np.linalg.norm(points_world[9] - points_world[0]))
    return bool(np.all(np.isfinite(points_world))) and 1e-3 < size < 1.0 and unit(
        points_world[5] - points_world[17]).any()
