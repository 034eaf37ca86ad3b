"""The rig: forward kinematics and linear blend skinning, vectorised in numpy.

Convention (the one ``Codes`` uses): at rest every bone's frame is aligned with the world
axes, so a bone's local rotation ``q_c`` is expressed in world-aligned rest axes, relative
to its parent. Posing composes down the chain:

    G_c = G_p q_c                                (world rotation of bone c)
    head_c = head_p + G_p (h_c - h_p)            (h: rest heads)
    A_c = [G_c | head_c - G_c h_c]               (skinning transform: rest -> posed)

The root's world rotation is ``codes.root_rotation`` about its rest head, and its head moves
by ``codes.root_translation``. The eyes turn by the gaze: yaw about +Y, then pitch about -X
(so positive pitch looks up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.codes import BODY_BONES, EYE_BONES, HAND_BONES, HEAD_BONES, ROOT_BONE, Codes
from common.rotation import quat_from_axis_angle, quat_multiply, quat_to_matrix
from avatar.template import Template
from render.skinned import shaped_vertices, skin_points


@dataclass(frozen=True, eq=False)
class Skeleton:
    """The posed skeleton: world rotations (J, 3, 3), heads (J, 3) and the skinning
    transforms (J, 3, 4) taking rest positions to posed ones."""

    rotations: np.ndarray
    heads: np.ndarray
    transforms: np.ndarray


class Rig:
    """Forward kinematics and skinning for one template (bone order and rest heads)."""

    def __init__(self, template: Template):
        self.template = template
        self.bone_names = template.bone_names
        self.parents = np.asarray(template.bone_parents, dtype=np.int64)
        self.rest_heads = np.asarray(template.bone_heads, dtype=np.float64)
        if self.parents[0] >= 0 or np.any(self.parents[1:] < 0):
            raise ValueError("the rig needs a single root at index 0")
        # Depth levels: every bone's parent lies in an earlier level, so one level is one
        # batched product.
        depth = np.zeros(len(self.parents), dtype=np.int64)
        for bone in range(1, len(self.parents)):
            if self.parents[bone] >= bone:
                raise ValueError("bones must come after their parents")
            depth[bone] = depth[self.parents[bone]] + 1
        self.levels = [np.flatnonzero(depth == d) for d in range(1, depth.max() + 1)]
        self.rest_offsets = self.rest_heads - self.rest_heads[self.parents.clip(0)]
        index = {name: i for i, name in enumerate(self.bone_names)}
        self.body_index = np.array([index[n] for n in BODY_BONES])
        self.head_index = np.array([index[n] for n in HEAD_BONES])
        self.hand_index = np.array([[index[n] for n in side] for side in HAND_BONES])
        self.eye_index = np.array([index[n] for n in EYE_BONES])
        self.root_index = index[ROOT_BONE]

    def local_rotations(self, codes: Codes) -> np.ndarray:
        """(J, 4) local quaternions of every bone from a codes frame (identity elsewhere)."""
        q = np.zeros((len(self.bone_names), 4))
        q[:, 0] = 1.0
        q[self.body_index] = codes.body
        q[self.head_index] = codes.head
        q[self.hand_index[0]] = codes.hands[0]
        q[self.hand_index[1]] = codes.hands[1]
        q[self.root_index] = codes.root_rotation
        yaw, pitch = codes.gaze[:, 0], codes.gaze[:, 1]
        q[self.eye_index] = quat_multiply(quat_from_axis_angle([0.0, 1.0, 0.0], yaw),
                                          quat_from_axis_angle([-1.0, 0.0, 0.0], pitch))
        return q

    def pose(self, local_rotations: np.ndarray, root_translation=(0.0, 0.0, 0.0)) -> Skeleton:
        """Forward kinematics from (J, 4) local quaternions (index 0: the root's world rotation)."""
        local = quat_to_matrix(np.asarray(local_rotations, dtype=np.float64))
        rotations = np.empty_like(local)
        heads = np.empty_like(self.rest_heads)
        rotations[0] = local[0]
        heads[0] = self.rest_heads[0] + np.asarray(root_translation, dtype=np.float64)
        for level in self.levels:
            parent = self.parents[level]
            rotations[level] = rotations[parent] @ local[level]
            heads[level] = heads[parent] + np.einsum("nij,nj->ni", rotations[parent],
                                                     self.rest_offsets[level])
        transforms = np.concatenate(
            [rotations, (heads - np.einsum("nij,nj->ni", rotations, self.rest_heads))[..., None]],
            axis=2,
        )
        return Skeleton(rotations, heads, transforms)

    def pose_codes(self, codes: Codes) -> Skeleton:
        return self.pose(self.local_rotations(codes), codes.root_translation)

    def shaped_vertices(self, blendshape_weights: np.ndarray) -> np.ndarray:
        """Rest vertices (V, 3) with the 52 face blendshapes applied (float32)."""
        return shaped_vertices(self.template.vertices, self.template.blendshapes,
                               blendshape_weights)

    def skin(self, vertices: np.ndarray, skeleton: Skeleton) -> np.ndarray:
        """Linear blend skinning of rest-space points (V, 3) with the template's weights."""
        return skin_points(vertices, self.template.skin_indices, self.template.skin_weights,
                           skeleton.transforms)

    def posed_vertices(self, codes: Codes) -> np.ndarray:
        """The template mesh posed by a codes frame: blendshapes, then skinning (V, 3)."""
        return self.skin(self.shaped_vertices(codes.face), self.pose_codes(codes))

