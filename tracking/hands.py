"""Hand solver: 21 hand landmarks -> the 19 finger-bone rotations of one hand.

Landmarks (mediapipe): 0 wrist; thumb 1 CMC, 2 MCP, 3 IP, 4 tip; index 5-8, middle 9-12,
ring 13-16, pinky 17-20 (knuckle, two joints, tip). Template bones (``HAND_BONES``): thumb
finger1-1..3 on 1->2->3->4; metacarpalK on 0 -> knuckle; fingerK-1..3 on the three finger
segments. The wrist's world rotation comes from the palm (0 -> 9 along, 5 - 17 across);
every finger bone swings from its parent onto its observed segment and takes its twist
from the palm's across direction, so a curl bends about the knuckles' axis and a spread
turns in the palm's plane. Thumb opposition is the thumb chain's swing across the palm.
"""

from __future__ import annotations

import numpy as np

from avatar.codes import HAND_BONES
from avatar.template import Template
from tracking.kinematics import align, bone_rotation, local_quaternions, unit

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])

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
    """``solve(points_world, side) -> (19, 4) local quaternions`` (side 0 left, 1 right)."""

    def __init__(self, template: Template):
        names = template.bone_names
        self.parents = {n: (names[p] if p >= 0 else None) for n, p in
                        zip(names, template.bone_parents)}
        heads = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
        children = {}
        for name, parent in self.parents.items():
            if parent is not None:
                children.setdefault(parent, []).append(name)
        self.rest_dirs = {}
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

    def wrist_rotation(self, points_world: np.ndarray, side: int) -> np.ndarray:
        """World rotation (3, 3) of the wrist bone from the palm."""
        s = "LR"[side]
        along, across = palm_directions(points_world)
        return align(self.rest_dirs["hand." + s], self.rest_dirs["across." + s], along, across)

    def solve(self, points_world: np.ndarray, side: int) -> np.ndarray:
        """(19, 4) local quaternions (HAND_BONES[side] order), relative to the wrist bone."""
        s = "LR"[side]
        points_world = np.asarray(points_world, dtype=np.float64)
        wrist = self.wrist_rotation(points_world, side)
        world = {f"wrist.{s}": wrist}
        across = palm_directions(points_world)[1]
        rest_across = self.rest_dirs["across." + s]
        for bone, a, b in _SEGMENTS:
            name = f"{bone}.{s}"
            parent = world[self.parents[name]]
            segment = points_world[b] - points_world[a]
            # Thumbs twist on their own: their nail faces away from the palm plane, so the
            # across-palm direction only weakly sets their roll.
            weight = 0.3 if bone.startswith("finger1") else 1.0
            world[name] = bone_rotation(parent, self.rest_dirs[name], segment,
                                        rest_across, across, weight)
        return local_quaternions(HAND_BONES[side], self.parents, world)


def hand_scale_ok(points_world: np.ndarray) -> bool:
    """Reject degenerate detections (collapsed or absurdly large hands)."""
    size = float(np.linalg.norm(points_world[9] - points_world[0]))
    return bool(np.all(np.isfinite(points_world))) and 1e-3 < size < 1.0 and unit(
        points_world[5] - points_world[17]).any()
