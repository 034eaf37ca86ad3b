"""Test avatars made from the shipped default: ``small_default(provenance)`` is it cut down to
3000 Gaussians (valid and cheap to send), ``with_correctives(data, template)`` gives it
correctives of a known, random form (for the posers' agreement, the file format and the
avatar exchange)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar.codes import BODY_BONES

SMALL_COUNT = 3000


def small_default(provenance: dict):
    """The shipped default avatar's ``AvatarData`` cut down to SMALL_COUNT Gaussians, evenly
    spread over it (skips the test when the asset is missing)."""
    from avatar.avatar import DEFAULT_AVATAR_PATH
    from avatar.lca import AvatarData, load_avatar_file

    if not DEFAULT_AVATAR_PATH.is_file():
        pytest.skip(f"{DEFAULT_AVATAR_PATH} is missing (scripts/build_default_avatar.py)")
    full = load_avatar_file(DEFAULT_AVATAR_PATH)
    keep = np.arange(0, len(full), max(1, len(full) // SMALL_COUNT))[:SMALL_COUNT]
    return AvatarData(
        name="small", **{k: getattr(full, k)[keep] for k in (
            "binding_face", "binding_bary", "binding_offset", "local_quats", "local_scales",
            "opacities", "colors")},
        template=full.template, bone_names=full.bone_names, shading=full.shading,
        licence=full.licence, attribution=full.attribution, provenance=provenance)


def with_correctives(data, template, seed: int = 0, size_m: float = 0.004):
    """``data`` (an ``AvatarData``) with correctives driven by the body bones' rotations and
    the blendshape weights: each vertex moved by the 9 rotation features of its strongest skin
    bone (when that is a body bone) and 3 random blendshape weights, ``size_m`` metres per
    unit feature (normal random). Width 12."""
    rng = np.random.default_rng(seed)
    names = list(template.bone_names)
    body = [names.index(b) for b in BODY_BONES]
    position = {bone: i for i, bone in enumerate(body)}
    strongest = template.skin_indices[np.arange(len(template.vertices)),
                                      np.argmax(template.skin_weights, axis=1)]
    count = 9 * len(body) + 52
    index = np.zeros((len(template.vertices), 12), np.int32)
    for v, bone in enumerate(strongest):
        if bone in position:
            index[v, :9] = 9 * position[bone] + np.arange(9)
    index[:, 9:] = 9 * len(body) + rng.integers(0, 52, (len(index), 3))
    basis = (rng.standard_normal((*index.shape, 3)) * size_m).astype(np.float32)
    basis[index[:, :9].sum(axis=1) == 0, :9] = 0.0  # vertices of no body bone: no pose part
    assert index.max() < count
    return dataclasses.replace(data, corrective_bones=list(BODY_BONES),
                               corrective_index=index, corrective_basis=basis)
