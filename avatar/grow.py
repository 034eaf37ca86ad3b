"""Gaussians grown beyond the template's surface where the person extends past it.

The template is a body in a T-shirt with short hair; a person's hair, loose clothing and
arms held away from the body reach past it, and the person mask says where: pixels inside
the mask that the posed avatar leaves uncovered. On jwpIntro.mp4 those are 3 % of the mask
and three quarters of the held-out error (docs/BENCHMARKS.md, "Refinement: where the error
is"), and no colour fit can reach them: no Gaussian is there.

``grow_gaussians`` spawns children of the avatar's edge Gaussians, bound to the parent's
triangle (same barycentric point) and pushed along its normal by a few centimetres, so they
move with the body like every other Gaussian and need nothing new in the ``.lca`` or the
posers. A candidate child is kept where, in most of the views that show it, its centre lands
on an uncovered pixel of the person mask; its colour is the mean of the frames there. The
photometric fit then refines it like the rest (and the silhouette term removes what spills).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from render.camera import Camera
from render.skinned import gaussians_on_mesh, triangle_frames

# Distances along the parent's normal, metres: a gap of up to about 8 cm filled in steps a
# child's grown footprint covers.
GROW_OFFSETS_M = (0.008, 0.016, 0.025, 0.035, 0.045, 0.06, 0.075)
MIN_SHARE = 0.5    # of the views that show a child, the share that must put it on the gap
MIN_SCALE_M = 0.004  # a child is at least this wide (parents on fine detail are tiny)
CHILD_OPACITY = 0.7
# On the head and neck (parents following the neck's first bone by more than half) children
# go at most this far: the uncovered pixels there are mostly the landmark cameras' error, not
# hair, and children grown 3-7 cm out from the cheeks and neck floated as a shell of face and
# beard fragments in views the clip never shows (turned 35 degrees). jwpIntro, 60 steps:
# 25.9 dB held out without this limit, 26.5 dB with it on the head.
MAX_HEAD_OFFSET_M = 0.016
HEAD_ROOT_BONE = "head"
NECK_ROOT_BONE = "neck01"


@dataclass
class GrowView:
    """One training view at the fit size: the posed mesh (V, 3), the camera, the frame
    (H, W, 3) float in [0, 1], the person mask (H, W) bool and the avatar's alpha (H, W)."""

    vertices: np.ndarray
    camera: Camera
    image: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray


@dataclass
class Grown:
    """The grown avatar's data (parents' arrays plus ``count`` children at the end), the
    children's colours (count, 3) and their parents (count,) indices."""

    data: object
    colors: np.ndarray
    parents: np.ndarray
    count: int


def grow_gaussians(avatar, parents: np.ndarray, views: list[GrowView], max_new: int,
                   seed: int = 0, offsets=GROW_OFFSETS_M) -> Grown:
    """Children of ``parents`` (indices into ``avatar``'s Gaussians) where ``views`` show
    the person mask uncovered; at most ``max_new`` (an even thinning when more pass)."""
    parents = np.asarray(parents, dtype=np.int64)
    sub = avatar.skinned.subset(parents)
    faces = avatar.template.faces
    d = np.asarray(offsets, dtype=np.float32)
    k = len(d)
    hits = np.zeros((len(parents), k), np.int32)
    shown = np.zeros((len(parents), k), np.int32)
    colour = np.zeros((len(parents), k, 3), np.float64)
    for view in views:
        g = gaussians_on_mesh(sub, view.vertices)
        frames, _ = triangle_frames(view.vertices, faces)
        normals = frames[sub.binding_face, :, 2]
        points = g.means[:, None, :] + d[None, :, None] * normals[:, None, :]  # (P, K, 3)
        cam = view.camera
        cv = cam.cv_from_world
        p = points.reshape(-1, 3) @ cv[:3, :3].T + cv[:3, 3]
        z = np.maximum(p[:, 2], 1e-6)
        x = np.floor(cam.fx * p[:, 0] / z + cam.cx).astype(np.int64)
        y = np.floor(cam.fy * p[:, 1] / z + cam.cy).astype(np.int64)
        h, w = view.mask.shape
        inside = (p[:, 2] > cam.near) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        xi, yi = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
        gap = inside & view.mask[yi, xi] & (view.alpha[yi, xi] < 0.5)
        shown += inside.reshape(-1, k)
        hits += gap.reshape(-1, k)
        colour += np.where(gap[:, None], view.image[yi, xi], 0.0).reshape(-1, k, 3)
    keep = (hits >= 1) & (hits >= MIN_SHARE * np.maximum(shown, 1))
    vertex_head = head_weights_of_vertices(avatar, NECK_ROOT_BONE)
    on_head = vertex_head[faces[sub.binding_face]].mean(axis=1) > 0.5
    keep[on_head[:, None] & (d[None, :] > MAX_HEAD_OFFSET_M)] = False
    which, step = np.nonzero(keep)
    if len(which) > max_new:
        pick = np.random.default_rng(seed).choice(len(which), max_new, replace=False)
        pick.sort()
        which, step = which[pick], step[pick]
    colors = (colour[which, step] / hits[which, step, None]).astype(np.float32)
    data = avatar.data
    src = parents[which]

    def grown(array, child):
        return np.concatenate([np.asarray(array), child.astype(np.asarray(array).dtype)])

    scales = np.maximum(np.asarray(data.local_scales, np.float32)[src], MIN_SCALE_M)
    sh = np.asarray(data.colors, np.float32)
    child_sh = np.zeros((len(src),) + sh.shape[1:], np.float32)
    if sh.ndim == 3:
        child_sh[:, 0] = (colors - 0.5) / 0.28209479177387814
    else:
        child_sh[:] = colors
    new = replace(
        data,
        binding_face=grown(data.binding_face, np.asarray(data.binding_face)[src]),
        binding_bary=grown(data.binding_bary, np.asarray(data.binding_bary)[src]),
        binding_offset=grown(data.binding_offset,
                             np.asarray(data.binding_offset, np.float32)[src] + d[step]),
        local_quats=grown(data.local_quats, np.asarray(data.local_quats)[src]),
        local_scales=grown(data.local_scales, scales),
        opacities=grown(data.opacities, np.full(len(src), CHILD_OPACITY, np.float32)),
        colors=grown(data.colors, child_sh))
    return Grown(new, colors, src, len(src))


def head_weights_of_vertices(avatar, root: str = HEAD_ROOT_BONE) -> np.ndarray:
    """(V,) how much each template vertex follows the head: its skinning weights on the
    bone ``root`` and that bone's descendants (jaw, eyes, ...), summed."""
    t = avatar.template
    names = list(t.bone_names)
    parents = np.asarray(t.bone_parents)
    head = np.zeros(len(names), bool)
    head[names.index(root)] = True
    for _ in range(len(names)):  # descendants, whatever the bones' order
        grown = head | ((parents >= 0) & head[np.clip(parents, 0, None)])
        if (grown == head).all():
            break
        head = grown
    return (np.asarray(t.skin_weights) * head[np.asarray(t.skin_indices)]).sum(axis=1)
