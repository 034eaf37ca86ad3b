"""Avatar: Gaussians bound to the template surface, posed by codes.

Each Gaussian rides on one template triangle (barycentric position, offset along the normal,
rotation and scales in the triangle's local frame), so it follows skinning and blendshapes,
the eyes' Gaussians follow the gaze through the eye bones. ``Avatar.pose(codes)`` returns
world-space ``Gaussians`` for the renderer.

A triangle's local frame: x along its first edge (v1 - v0), z along its normal, y = z x x.
When a triangle stretches, its Gaussians grow by the square root of its area ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.codes import Codes
from avatar.lca import AvatarData, AvatarFileError, load_avatar_file
from avatar.rig import Rig
from avatar.rotation import matrix_to_quat, quat_multiply
from avatar.template import Template, load_template
from render.gaussians import Gaussians

DEFAULT_AVATAR_PATH = Path(__file__).resolve().parents[1] / "assets" / "avatars" / "default.lca"

# Lambert shading of albedo colours: a soft key light from above, front and the avatar's
# left, plus ambient, in the avatar's own space (so the light turns with the avatar's root).
LIGHT_DIRECTION = np.array([0.35, 0.75, 0.56]) / np.linalg.norm([0.35, 0.75, 0.56])
AMBIENT = 0.5
DIFFUSE = 0.6


def triangle_frames(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-triangle local frames (F, 3, 3) (columns x, y, z) and doubled areas (F,)."""
    v0, v1, v2 = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    normal = np.cross(e1, e2)
    area2 = np.linalg.norm(normal, axis=1)
    z = normal / np.maximum(area2, 1e-12)[:, None]
    x = e1 / np.maximum(np.linalg.norm(e1, axis=1), 1e-12)[:, None]
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=2), area2


class Avatar:
    """A posable avatar: an .lca file's Gaussians on a template."""

    def __init__(self, data: AvatarData, template: Template):
        self.data = data
        self.template = template
        self.rig = Rig(template)
        faces = template.faces
        self._faces = faces
        self._binding_faces = faces[data.binding_face]  # (N, 3) vertex indices
        _, self._rest_area2 = triangle_frames(template.vertices, faces)

    @property
    def name(self) -> str:
        return self.data.name

    def __len__(self) -> int:
        return len(self.data)

    def pose(self, codes: Codes) -> Gaussians:
        """World-space Gaussians for one codes frame (vectorised; see bench/bench_pose.py)."""
        vertices = self.rig.posed_vertices(codes)
        return self.gaussians_on(vertices)

    def gaussians_on(self, vertices: np.ndarray) -> Gaussians:
        """The Gaussians riding on a posed template mesh (V, 3)."""
        d = self.data
        frames, area2 = triangle_frames(vertices, self._faces)
        stretch = np.sqrt(area2 / np.maximum(self._rest_area2, 1e-12)).astype(np.float32)
        face_quats = matrix_to_quat(frames).astype(np.float32)

        corners = vertices[self._binding_faces]  # (N, 3, 3)
        normals = frames[d.binding_face, :, 2].astype(np.float32)
        means = np.einsum("nk,nkj->nj", d.binding_bary, corners) + d.binding_offset[:, None] * normals
        quats = quat_multiply(face_quats[d.binding_face], d.local_quats).astype(np.float32)
        scales = d.local_scales * stretch[d.binding_face][:, None]
        colors = d.colors
        if d.shading == "lambert":
            lit = AMBIENT + DIFFUSE * np.clip(normals @ LIGHT_DIRECTION.astype(np.float32), 0, 1)
            colors = np.clip(colors * lit[:, None], 0, 1)
        return Gaussians(means, quats, scales, d.opacities, colors)


def load_avatar(source: str | Path = "default", template: Template | None = None) -> Avatar:
    """An avatar from a .lca path, or the embedded default for "default"."""
    template = template or load_template()
    path = DEFAULT_AVATAR_PATH if str(source) == "default" else Path(source)
    if str(source) != "default" and path.suffix != ".lca" and not path.exists():
        raise AvatarFileError(f"{path}: no such avatar file (use 'default' or a .lca path)")
    return Avatar(load_avatar_file(path, template), template)
