"""Avatar: Gaussians bound to the template surface, posed by codes.

Each Gaussian rides on one template triangle (barycentric position, offset along the normal,
rotation and scales in the triangle's local frame), so it follows skinning and blendshapes,
the eyes' Gaussians follow the gaze through the eye bones. The avatar turns codes into the
posing contract of ``render.skinned`` (the skinned Gaussians once, a ``SkinPose`` per frame);
``Avatar.pose(codes)`` is the reference poser's ``Gaussians`` for one frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.codes import Codes
from avatar.lca import AvatarData, AvatarFileError, corrective_feature_count, load_avatar_file
from avatar.rig import Rig
from avatar.template import Template, load_template
from common.rotation import quat_to_matrix
from render.gaussians import Gaussians
from render.skinned import Correctives, SkinnedGaussians, SkinPose, pose_gaussians

DEFAULT_AVATAR_PATH = Path(__file__).resolve().parents[1] / "assets" / "avatars" / "default.lca"

# Lambert shading of albedo colours: a soft key light from above, front and the avatar's
# left, plus ambient, in the avatar's own space (so the light turns with the avatar's root).
LIGHT_DIRECTION = np.array([0.35, 0.75, 0.56]) / np.linalg.norm([0.35, 0.75, 0.56])
AMBIENT = 0.5
DIFFUSE = 0.6


class Avatar:
    """A posable avatar: an .lca file's Gaussians on a template.

    ``skinned`` is what render/ needs once (``render.skinned.SkinnedGaussians``: the template
    and every Gaussian's binding, with this avatar's shading); ``skin_pose(codes)`` what it
    needs per frame (forward kinematics on the CPU, about a millisecond)."""

    def __init__(self, data: AvatarData, template: Template):
        self.data = data
        # A person's own body (avatar.shape): the same mesh and rig with other rest vertices
        # and bone heads; ``template`` and ``rig`` are then the shaped ones.
        if data.shape is not None:
            template = data.shape.apply(template)
        self.template = template
        self.rig = Rig(template)
        lambert = data.shading == "lambert"
        correctives = None
        if data.has_correctives:
            index = {name: i for i, name in enumerate(self.rig.bone_names)}
            self.corrective_bones = np.array([index[n] for n in data.corrective_bones],
                                             dtype=np.int64)
            correctives = Correctives(data.corrective_index, data.corrective_basis,
                                      corrective_feature_count(len(data.corrective_bones)))
        self.skinned = SkinnedGaussians(
            vertices=template.vertices, faces=template.faces, blendshapes=template.blendshapes,
            skin_indices=template.skin_indices, skin_weights=template.skin_weights,
            binding_face=data.binding_face, binding_bary=data.binding_bary,
            binding_offset=data.binding_offset, local_quats=data.local_quats,
            local_scales=data.local_scales, opacities=data.opacities, colors=data.colors,
            lambert=lambert,
            light_direction=tuple(map(float, LIGHT_DIRECTION)) if lambert else (0.0, 1.0, 0.0),
            ambient=AMBIENT if lambert else 1.0, diffuse=DIFFUSE if lambert else 0.0,
            correctives=correctives)

    @property
    def name(self) -> str:
        return self.data.name

    def __len__(self) -> int:
        return len(self.data)

    def skin_pose(self, codes: Codes, world_from_avatar: np.ndarray | None = None) -> SkinPose:
        """The per-frame half of the posing contract for a codes frame (with the features of
        the avatar's correctives, when it has them)."""
        local = self.rig.local_rotations(codes)
        skeleton = self.rig.pose(local, codes.root_translation)
        features = None
        if self.skinned.correctives is not None:
            features = pose_features(local[self.corrective_bones], codes.face)
        return SkinPose(skeleton.transforms, codes.face, world_from_avatar, features)

    def pose(self, codes: Codes) -> Gaussians:
        """Avatar-space Gaussians for one codes frame, by the numpy reference poser (see
        bench/bench_pose.py)."""
        return pose_gaussians(self.skinned, self.skin_pose(codes))


def pose_features(bone_rotations: np.ndarray, blendshape_weights: np.ndarray) -> np.ndarray:
    """(9 P + 52,) float32 features of the correctives: each driving bone's local rotation
    matrix minus the identity, row-major (zero at rest, linear in small turns), then the
    blendshape weights. ``bone_rotations``: (P, 4) local quaternions (wxyz)."""
    turns = quat_to_matrix(np.asarray(bone_rotations, dtype=np.float64)) - np.eye(3)
    return np.concatenate([turns.reshape(-1), np.asarray(blendshape_weights).reshape(-1)]
                          ).astype(np.float32)


def load_avatar(source: str | Path = "default", template: Template | None = None) -> Avatar:
    """An avatar from a .lca path, the embedded default for "default", or a stock avatar
    for "stock:NAME" (avatar/stock.py)."""
    template = template or load_template()
    if str(source).startswith("stock:"):
        from avatar.stock import StockError, stock_avatar_data

        default = load_avatar_file(DEFAULT_AVATAR_PATH, template)
        try:
            data = stock_avatar_data(str(source)[len("stock:"):], default, template)
        except StockError as exc:
            raise AvatarFileError(str(exc)) from None
        return Avatar(data, template)
    path = DEFAULT_AVATAR_PATH if str(source) == "default" else Path(source)
    if str(source) != "default" and path.suffix != ".lca" and not path.exists():
        raise AvatarFileError(f"{path}: no such avatar file (use 'default' or a .lca path)")
    return Avatar(load_avatar_file(path, template), template)
