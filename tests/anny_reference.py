"""Posing through anny itself, for checking our numpy rig against it (needs the `create` extra)."""

from __future__ import annotations

import numpy as np

from avatar.codes import BLENDSHAPE_NAMES, Codes
from common.rotation import quat_to_matrix


def anny_posed_vertices(model, rig, codes: Codes, offset: np.ndarray, phenotype=None,
                        local_changes=None) -> np.ndarray:
    """Vertices (V, 3) in our axes from anny's own forward pass for the same codes (and body
    shape: anny's phenotype and local-change parameters, when given).

    Our local rotations q_c (world-aligned rest axes) become anny 'local-bone-world' deltas
    D_c = U_c^T U_p R_p^T q_c R_c (anny axes; U: anny's reference orientations, R: its rest
    orientations); the root's delta is D_0 = U_0^T G_0 R_0 with translation U_0^T t.
    """
    import torch

    from scripts.build_template import OURS_FROM_ANNY as M

    shape = {"phenotype_kwargs": phenotype, "local_changes_kwargs": local_changes}
    with torch.no_grad():
        rest = model(**shape)
    R = rest["rest_bone_poses"][0, :, :3, :3].numpy()
    U = model.reference_bone_orientations.numpy()
    q = quat_to_matrix(rig.local_rotations(codes))
    q_anny = M.T @ q @ M  # the same rotations in anny's axes
    parents = np.asarray(model.bone_parents)
    deltas = np.tile(np.eye(4), (len(parents), 1, 1))
    for c in range(1, len(parents)):
        p = parents[c]
        deltas[c, :3, :3] = U[c].T @ U[p] @ R[p].T @ q_anny[c] @ R[c]
    deltas[0, :3, :3] = U[0].T @ q_anny[0] @ R[0]
    deltas[0, :3, 3] = U[0].T @ (M.T @ codes.root_translation.astype(np.float64))
    # The template makes some of anny's face shapes stronger (its metadata's
    # face_shape_gains, scripts/build_template.py): the same as anny's at gain x weight.
    gains = rig.template.metadata.get("face_shape_gains", {})
    face = {f"{n}": torch.tensor([float(w) * gains.get(n, 1.0)], dtype=torch.float64)
            for n, w in zip(BLENDSHAPE_NAMES, codes.face)}
    with torch.no_grad():
        out = model(pose_parameters=torch.from_numpy(deltas[None]), facial_actions=face, **shape)
    return out["vertices"][0].numpy() @ M.T + offset
