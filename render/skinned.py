"""The posing contract: Gaussians skinned to a template mesh, and the numpy reference poser.

What crosses from avatar/ to render/ to pose an avatar (render/ knows nothing of codes):

- ``SkinnedGaussians``, once per avatar: the template (rest vertices, triangles, face
  blendshapes, skin indices and weights) and every Gaussian's binding to it (triangle,
  barycentric point, offset along the normal, rotation and scales in the triangle's frame,
  opacity, colour), with the avatar's shading.
- ``SkinPose``, once per frame: the bones' skinning transforms (rest -> posed, from forward
  kinematics on the CPU), the blendshape weights, the avatar's rigid placement, and, for an
  avatar with ``Correctives``, the features that drive them.

``pose_gaussians(skinned, pose)`` is the reference: plain numpy, the maths every fast poser
reproduces (``render.gl_pose``: compute shaders; ``render.cuda_pose``: torch on a device; each
tested against this one, as the splatters are against ``render.reference``)::

    rest + sum_b w_b blendshape_b                     (float32)
       + correctives: sum_m basis[v, m] * features[index[v, m]]   (when the avatar has them)
    linear blend skinning with the pose's transforms  (float32)
    per-triangle frames of the posed mesh             (float64: x along the first edge,
                                                       z along the normal, y = z x x)
    mean  = barycentric point + offset * normal
    quat  = frame quaternion * local quaternion
    scale = local scale * sqrt(posed area / rest area)
    colour: baked as stored, or Lambert-lit albedo, clamp(albedo * (ambient + diffuse *
            max(0, normal . light)), 0, 1) in the avatar's own space
    then the rigid placement ``world_from_avatar`` (means and rotations)

A poser says where posing runs (``where``: "numpy", "gl" or "device") and has two methods:
``pose(skinned, pose)`` -> one avatar's part, ``combine(skinneds, parts)`` -> what the target
draws (``Gaussians``, the cuda poser's device Gaussians, or ``PosedAvatars`` that the GL
renderer poses itself). Each backend names its poser (``render.backends.poser_for``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from common.rotation import matrix_to_quat, quat_multiply
from render.gaussians import Gaussians


@dataclass(eq=False)
class Correctives:
    """Linear corrections of an avatar's rest mesh, driven per frame by a feature vector
    (LCA's pose- and expression-dependent corrections, in the form a receiver without a GPU
    can afford: correct the mesh, and every Gaussian bound to it inherits the correction).

    ``index`` (V, M) int32: the M features that move each vertex (the rotations of the joints
    near it, the blendshape weights that matter there; padded with any index and a zero
    basis); ``basis`` (V, M, 3) float32 metres per unit feature; ``feature_count``: the
    length D of ``SkinPose.features``. What a feature means is the avatar's business
    (``avatar.avatar.pose_features``); render/ only applies

        rest[v] += sum_m basis[v, m] * features[index[v, m]]   before skinning."""

    index: np.ndarray
    basis: np.ndarray
    feature_count: int

    def __post_init__(self) -> None:
        self.index = np.ascontiguousarray(self.index, dtype=np.int32)
        self.basis = np.ascontiguousarray(self.basis, dtype=np.float32)
        v, m = self.index.shape
        if self.basis.shape != (v, m, 3):
            raise ValueError(f"corrective basis of shape {self.basis.shape}, expected "
                             f"({v}, {m}, 3)")
        if self.index.size and not 0 <= self.index.min() <= self.index.max() < self.feature_count:
            raise ValueError(f"corrective feature index outside 0..{self.feature_count - 1}")

    @property
    def width(self) -> int:
        """M: features per vertex."""
        return int(self.index.shape[1])


def corrective_offsets(correctives: Correctives, features: np.ndarray) -> np.ndarray:
    """(V, 3) float32 rest-space offsets for a (D,) feature vector."""
    features = np.asarray(features, dtype=np.float32).reshape(-1)
    if features.shape != (correctives.feature_count,):
        raise ValueError(f"{features.shape[0]} corrective features, expected "
                         f"{correctives.feature_count}")
    return np.einsum("vm,vmk->vk", features[correctives.index], correctives.basis)


@dataclass(eq=False)
class SkinnedGaussians:
    """One avatar's static arrays (float32 unless said).

    Template: ``vertices`` (V, 3) rest positions, metres; ``faces`` (F, 3) int;
    ``blendshapes`` (B, V, 3) deltas; ``skin_indices`` and ``skin_weights`` (V, K).
    Gaussians (N): ``binding_face`` (N,) int triangle; ``binding_bary`` (N, 3);
    ``binding_offset`` (N,) metres along the normal; ``local_quats`` (N, 4) wxyz in the
    triangle's frame; ``local_scales`` (N, 3) metres; ``opacities`` (N,); ``colors`` (N, 3)
    albedo / RGB or (N, K, 3) spherical harmonics.
    Shading: ``lambert`` (albedo lit by ``light_direction`` (3,) unit, in the avatar's
    space, with ``ambient`` and ``diffuse``) or baked colours as they are.
    ``correctives``: the avatar's own ``Correctives`` of the template (None: none).
    Avatars on one template share its arrays (the same objects): posers store them once."""

    vertices: np.ndarray
    faces: np.ndarray
    blendshapes: np.ndarray
    skin_indices: np.ndarray
    skin_weights: np.ndarray
    binding_face: np.ndarray
    binding_bary: np.ndarray
    binding_offset: np.ndarray
    local_quats: np.ndarray
    local_scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    lambert: bool = False
    light_direction: tuple = (0.0, 1.0, 0.0)
    ambient: float = 1.0
    diffuse: float = 0.0
    correctives: Correctives | None = None

    def __len__(self) -> int:
        return len(self.binding_face)

    @property
    def sh_count(self) -> int:
        """Spherical-harmonic coefficients per channel (0: plain RGB)."""
        return 0 if self.colors.ndim == 2 else int(self.colors.shape[1])

    @property
    def template_arrays(self) -> tuple:
        """The template's arrays, the same objects for avatars sharing a template: posers key
        their one copy of a template on these (by identity)."""
        return (self.vertices, self.faces, self.blendshapes, self.skin_indices,
                self.skin_weights)

    @functools.cached_property
    def rest_area2(self) -> np.ndarray:
        """(F,) float64 doubled areas of the rest triangles."""
        return triangle_frames(self.vertices, self.faces)[1]

    def subset(self, keep) -> SkinnedGaussians:
        """The same template with only the Gaussians ``keep`` (indices or a mask)."""
        return replace(self, binding_face=self.binding_face[keep],
                       binding_bary=self.binding_bary[keep],
                       binding_offset=self.binding_offset[keep],
                       local_quats=self.local_quats[keep], local_scales=self.local_scales[keep],
                       opacities=self.opacities[keep], colors=self.colors[keep])


@dataclass(eq=False)
class SkinPose:
    """One frame of one avatar: ``transforms`` (J, 3, 4) skinning transforms (rest -> posed,
    metres), ``blendshape_weights`` (B,), ``world_from_avatar`` (4, 4) rigid placement
    (None: identity), ``features`` (D,) driving the avatar's correctives (None: the
    avatar has none) and ``opacity`` scaling every Gaussian's opacity (1: as made; a call
    fades participants in and out with it)."""

    transforms: np.ndarray
    blendshape_weights: np.ndarray
    world_from_avatar: np.ndarray | None = None
    features: np.ndarray | None = None
    opacity: float = 1.0


@dataclass(eq=False)
class PosedAvatars:
    """Avatars a GL renderer poses itself (``render.gl_pose``): ``skinned`` (a
    ``SkinnedGaussians`` each) and ``poses`` (a ``SkinPose`` each, same order). A renderer
    uploads ``skinned`` when that tuple is a new object (someone joined or left) and poses
    when ``poses`` is a new object: keep the same objects while nothing changed."""

    skinned: tuple
    poses: tuple


class Poser(Protocol):
    where: str  # "numpy", "gl" or "device"

    def pose(self, skinned: SkinnedGaussians, pose: SkinPose): ...

    def combine(self, skinned: tuple, parts: list): ...


# -- the reference, in numpy -------------------------------------------------------------------
def triangle_frames(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-triangle local frames (F, 3, 3) (columns x, y, z) and doubled areas (F,), float64."""
    v0, v1, v2 = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    normal = np.cross(e1, e2)
    area2 = np.linalg.norm(normal, axis=1)
    z = normal / np.maximum(area2, 1e-12)[:, None]
    x = e1 / np.maximum(np.linalg.norm(e1, axis=1), 1e-12)[:, None]
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=2), area2


def skin_points(points: np.ndarray, indices: np.ndarray, weights: np.ndarray,
                transforms: np.ndarray) -> np.ndarray:
    """Blend (J, 3, 4) transforms with per-point (N, K) weights and apply them to (N, 3)."""
    blended = np.einsum("nk,nkij->nij", weights, transforms[indices].astype(np.float32))
    return np.einsum("nij,nj->ni", blended[:, :, :3], points) + blended[:, :, 3]


def shaped_vertices(vertices: np.ndarray, blendshapes: np.ndarray,
                    blendshape_weights: np.ndarray) -> np.ndarray:
    """Rest vertices (V, 3) with (B, V, 3) blendshapes applied by (B,) weights (float32)."""
    weights = np.asarray(blendshape_weights, dtype=np.float32).reshape(-1)
    active = np.flatnonzero(weights)
    shaped = np.array(vertices, dtype=np.float32)
    if active.size:
        shaped += np.tensordot(weights[active], blendshapes[active], axes=1)
    return shaped


def posed_mesh(skinned: SkinnedGaussians, pose: SkinPose) -> np.ndarray:
    """The template mesh (V, 3) for a pose: blendshapes, then skinning (before placement)."""
    shaped = shaped_vertices(skinned.vertices, skinned.blendshapes, pose.blendshape_weights)
    if skinned.correctives is not None:
        if pose.features is None:
            raise ValueError("this avatar has correctives: its pose needs their features")
        shaped += corrective_offsets(skinned.correctives, pose.features)
    return skin_points(shaped, skinned.skin_indices, skinned.skin_weights,
                       np.asarray(pose.transforms))


def gaussians_on_mesh(skinned: SkinnedGaussians, vertices: np.ndarray) -> Gaussians:
    """The Gaussians riding on a posed template mesh (V, 3), in the avatar's space."""
    s = skinned
    frames, area2 = triangle_frames(vertices, s.faces)
    stretch = np.sqrt(area2 / np.maximum(s.rest_area2, 1e-12)).astype(np.float32)
    face_quats = matrix_to_quat(frames).astype(np.float32)
    corners = vertices[s.faces[s.binding_face]]  # (N, 3, 3)
    normals = frames[s.binding_face, :, 2].astype(np.float32)
    means = np.einsum("nk,nkj->nj", s.binding_bary, corners) + s.binding_offset[:, None] * normals
    quats = quat_multiply(face_quats[s.binding_face], s.local_quats).astype(np.float32)
    scales = s.local_scales * stretch[s.binding_face][:, None]
    colors = s.colors
    if s.lambert:
        light = np.asarray(s.light_direction, dtype=np.float32)
        lit = s.ambient + s.diffuse * np.clip(normals @ light, 0, 1)
        colors = np.clip(colors * lit[:, None], 0, 1)
    return Gaussians(means, quats, scales, s.opacities, colors)


def place_gaussians(gaussians: Gaussians, world_from_avatar: np.ndarray) -> Gaussians:
    """The Gaussians moved rigidly by ``world_from_avatar`` (4, 4): means and rotations."""
    rotation = np.asarray(world_from_avatar)[:3, :3]
    offset = np.asarray(world_from_avatar)[:3, 3].astype(np.float32)
    means = gaussians.means @ rotation.T.astype(np.float32) + offset
    turn = matrix_to_quat(rotation).astype(np.float32)
    quats = quat_multiply(np.broadcast_to(turn, gaussians.quats.shape), gaussians.quats)
    return Gaussians(means, quats, gaussians.scales, gaussians.opacities, gaussians.colors)


def pose_gaussians(skinned: SkinnedGaussians, pose: SkinPose) -> Gaussians:
    """World-space Gaussians of one avatar for one pose: the reference poser."""
    posed = gaussians_on_mesh(skinned, posed_mesh(skinned, pose))
    if pose.opacity != 1.0:
        posed = Gaussians(posed.means, posed.quats, posed.scales,
                          posed.opacities * np.float32(pose.opacity), posed.colors)
    if pose.world_from_avatar is None:
        return posed
    return place_gaussians(posed, pose.world_from_avatar)


class NumpyPoser:
    """Posing on the CPU with the reference: parts are ``Gaussians``, combined by
    concatenation."""

    where = "numpy"

    def pose(self, skinned: SkinnedGaussians, pose: SkinPose) -> Gaussians:
        return pose_gaussians(skinned, pose)

    def combine(self, skinned: tuple, parts: list) -> Gaussians:
        if not parts:
            return Gaussians.empty()
        return parts[0] if len(parts) == 1 else Gaussians.concatenate(parts)
