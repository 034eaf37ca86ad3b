"""Splat scan -> drivable avatar: find the person, fit the template, bind every Gaussian.

A scan is a static cloud of world-space Gaussians (``render.gaussians.Gaussians``, read by
``avatar.splatfile``) in any units, orientation and position, possibly with a floor and
other things around the person. The steps, each a function here:

1. ``find_floor``: the largest plane (RANSAC on the centres) that spans much of the scan with
   nearly everything on one side of it: its normal is "up".
2. ``person_points``: without the floor, the largest connected lump of centres (a voxel grid's
   connected components): the person, apart from background clutter.
3. ``up_candidates`` / ``facing_candidates``: up is the floor's normal, or else the person's
   longest principal axis (either sign); facing is across the torso's widest horizontal axis
   (either sign). The caller chooses among them (``app.scan_cmd`` renders each candidate
   and asks the tracker's pose and face landmarks which one shows an upright person from
   the front).
4. ``initial_placement``: the similarity taking the scan to the template's space (OpenXR: +Y
   up, facing +Z, metres, feet on y = 0): the person's height becomes the template's height.
5. ``fit_template``: the template's body and head bones, root rotation, position and scale
   fitted to the centres by gradient descent on a two-sided nearest-point distance (torch,
   the ``create`` extra; the nearest points from scipy's k-d tree), then finished by
   Levenberg-Marquardt ICP (point-to-plane, the pairs' reach narrowing) that also fits a
   thickness: the only shape fitted besides the scale. The person is scaled to the
   template (``ScanFit.scale`` records by how much); their thickness and the rest of their
   shape stay in the Gaussians' normal offsets.
6. ``bind_gaussians``: each Gaussian near the fitted surface rides on its nearest triangle
   of the posed template exactly as ``avatar.avatar`` stores it (barycentric position,
   offset along the normal, rotation and scales in the triangle's frame, scales divided by
   the triangle's stretch); riding on the rest mesh then carries it back to the canonical
   pose. What lies far from the body (floor, background) is dropped.
7. ``thin``: keeps the ``max_gaussians`` most visible (opacity x projected area).

Colours are kept as the scan has them (spherical harmonics turned into the template's axes
by the placement's rotation) and marked ``baked``: a scan's light is in its colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar.rig import Rig
from avatar.template import Template
from common.rotation import matrix_to_quat, quat_conjugate, quat_multiply
from render.gaussians import Gaussians
from render.skinned import skin_points, triangle_frames

# Template regions a scan sees (the inside of the eyes and mouth it does not).
SURFACE_REGIONS = ("body", "head", "hand.R", "hand.L", "eye_front.L", "eye_front.R",
                   "foot.L", "foot.R")
KEEP_DISTANCE_M = 0.06      # a Gaussian further than this from the fitted body is not the person
FLOOR_KEEP_DISTANCE_M = 0.01  # ... and on the floor plane, further than this
BARY_MARGIN = 0.009          # .lca allows barycentric coordinates down to -0.01


class ScanFitError(ValueError):
    """The scan cannot be made into an avatar (no person found, a poor fit): one line."""


@dataclass(frozen=True)
class Plane:
    normal: np.ndarray   # (3,) unit, pointing to the side the scan stands on
    offset: float        # normal . x = offset on the plane
    tolerance: float     # inlier distance used (scan units)


@dataclass(frozen=True)
class Similarity:
    """x_body = scale * rotation @ x_scan + translation."""

    scale: float
    rotation: np.ndarray     # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (self.scale * points @ self.rotation.T + self.translation).astype(np.float32)


@dataclass(frozen=True)
class ScanFit:
    """The template posed onto the scan (in template space) and how well it fits.

    The fit also corrects the placement: a placed point x is at (x - shift) / scale in the
    template's space (``refine``)."""

    local_rotations: np.ndarray  # (J, 4) every bone's local quaternion (root: its world one)
    vertices: np.ndarray          # (V, 3) the posed template
    shift: np.ndarray             # (3,)
    scale: float
    rms_m: float                  # RMS distance of scan centres to the fitted surface (< 10 cm)
    coverage: float               # fraction of the template's surface with scan points near it
    thickness_m: float = 0.0      # how much thicker than the template (kept in the offsets)

    def refine(self, placement: Similarity) -> Similarity:
        return Similarity(placement.scale / self.scale, placement.rotation,
                          (placement.translation - self.shift) / self.scale)


# -- 1-3: where the person is ------------------------------------------------------------

def _extent(points: np.ndarray) -> float:
    lo, hi = np.percentile(points, [0.5, 99.5], axis=0)
    return float(np.linalg.norm(hi - lo))


def spread_sample(points: np.ndarray, cells: int = 150) -> np.ndarray:
    """One centre per occupied cell of a grid ``cells`` wide over the scan: an even spread
    over space, so a sparse floor is not drowned by a dense person."""
    lo = np.percentile(points, 0.5, axis=0)
    voxel = max(_extent(points) / cells, 1e-12)
    keys = np.floor((points - lo) / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(first)]


def find_floor(points: np.ndarray, seed: int = 0, iterations: int = 300) -> Plane | None:
    """The floor: a plane through a fifth of the scan's occupied space, spanning at least a
    third of its extent, with 97% of the rest on one side. None if there is none."""
    rng = np.random.default_rng(seed)
    sample = spread_sample(points)
    if len(sample) < 10:
        return None
    extent = _extent(sample)
    tol = 0.004 * extent
    best, best_count = None, max(50, int(0.2 * len(sample)))
    for _ in range(iterations):
        a, b, c = sample[rng.choice(len(sample), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n = n / np.linalg.norm(n)
        count = int(np.count_nonzero(np.abs((sample - a) @ n) < tol))
        if count > best_count:
            best, best_count = (n, float(n @ a)), count
    if best is None:
        return None
    n, d = best
    dist = sample @ n - d
    inliers = sample[np.abs(dist) < tol]
    # Refit on the inliers (least squares), then check the span and the one-sidedness.
    centre = inliers.mean(axis=0)
    n = np.linalg.svd(inliers - centre, full_matrices=False)[2][2]
    d = float(n @ centre)
    dist = sample @ n - d
    inliers = sample[np.abs(dist) < tol]
    span = np.linalg.svd(inliers - inliers.mean(0), compute_uv=False)[0] / math.sqrt(len(inliers))
    above, below = np.count_nonzero(dist > tol), np.count_nonzero(dist < -tol)
    if 4 * span < extent / 3 or min(above, below) > 0.03 * (above + below):
        return None
    if below > above:
        n, d = -n, -d
    return Plane(n.astype(np.float64), d, tol)


def person_points(points: np.ndarray, floor: Plane | None) -> np.ndarray:
    """(N,) mask of the person: the largest connected lump of centres off the floor."""
    from scipy import ndimage

    mask = np.ones(len(points), dtype=bool)
    if floor is not None:
        mask &= points @ floor.normal - floor.offset > 2 * floor.tolerance
    if mask.sum() < 100:
        return mask & False
    kept = points[mask]
    lo, hi = np.percentile(kept, [0.1, 99.9], axis=0)
    voxel = max(float(np.max(hi - lo)) / 80, 1e-9)
    cells = np.floor((kept - lo) / voxel).astype(np.int64) + 1
    inside = np.all((cells >= 1) & (cells <= 82), axis=1)
    grid = np.zeros((84, 84, 84), dtype=bool)
    grid[tuple(cells[inside].T)] = True
    labels, count = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    if count == 0:
        return mask & False
    point_labels = np.zeros(len(kept), dtype=np.int64)
    point_labels[inside] = labels[tuple(cells[inside].T)]
    sizes = np.bincount(point_labels, minlength=count + 1)
    sizes[0] = 0
    mask[np.flatnonzero(mask)] = point_labels == int(np.argmax(sizes))
    return mask


def up_candidates(points: np.ndarray, floor: Plane | None) -> list[np.ndarray]:
    """Possible up directions, likeliest first: the floor's normal, or the person's longest
    principal axis either way (then the others)."""
    if floor is not None:
        return [floor.normal]
    axes = np.linalg.svd(points - points.mean(0), full_matrices=False)[2]
    return [s * axes[i] for i in range(3) for s in (1.0, -1.0)]


def facing_candidates(points: np.ndarray, up: np.ndarray) -> list[np.ndarray]:
    """Possible facing directions (unit, horizontal), likeliest first: across the widest
    horizontal axis of the torso (shoulders and hips are wider than deep), either way, then
    along it."""
    up = np.asarray(up, dtype=np.float64)
    height = points @ up
    lo, hi = np.percentile(height, [0.5, 99.5])
    torso = points[(height > lo + 0.45 * (hi - lo)) & (height < lo + 0.75 * (hi - lo))]
    if len(torso) < 10:
        torso = points
    flat = torso - np.outer(torso @ up, up)
    axes = np.linalg.svd(flat - flat.mean(0), full_matrices=False)[2]
    wide = axes[0] - up * (axes[0] @ up)
    wide /= np.linalg.norm(wide)
    across = np.cross(up, wide)
    return [across, -across, wide, -wide]


def initial_placement(points: np.ndarray, up: np.ndarray, facing: np.ndarray,
                      floor: Plane | None, template_height: float) -> Similarity:
    """The similarity putting the person upright on y = 0, facing +Z, template-sized, centred
    over the origin."""
    up = up / np.linalg.norm(up)
    facing = facing - up * (facing @ up)
    facing /= np.linalg.norm(facing)
    right = np.cross(up, facing)  # the person's left in our axes is +X
    rotation = np.stack([right, up, facing])  # rows: body axes in scan coordinates
    height = points @ up
    base = floor.offset if floor is not None else float(np.percentile(height, 0.05))
    top = float(np.percentile(height, 99.95))
    if top - base <= 0:
        raise ScanFitError("the scan has no height")
    scale = template_height / (top - base)
    body = scale * points @ rotation.T
    centre = np.median(body, axis=0)
    translation = np.array([-centre[0], -scale * base, -centre[2]])
    return Similarity(scale, rotation, translation)


# -- 5: the template fit -------------------------------------------------------------------

def _axis_angle_matrices(torch, aa):
    """(B, 3, 3) rotation matrices of (B, 3) axis-angle vectors (Rodrigues, safe at 0)."""
    theta = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-12)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=aa.dtype).expand_as(cross)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * cross + (1 - c) * cross @ cross


def fit_template(points: np.ndarray, template: Template, iterations: int = 120,
                 progress=None, seed: int = 0, joints: dict | None = None,
                 refine_steps: int = 16, floor: bool = False) -> ScanFit:
    """Pose and scale the template onto scan centres already roughly placed in its space
    (``initial_placement``). ``joints`` (bone name -> (3,) position, e.g. triangulated
    landmarks) pull those bones' heads while the limbs find their way, then let go (they
    are good to a couple of centimetres; the surface is better).
    Returns the posed template and the fit's quality."""
    import torch

    threads = torch.get_num_threads()
    # One thread: the problem is small, and on a busy 2-core machine two threads were
    # measured 8x slower than one (14 s against 1.7 s for 30 steps).
    torch.set_num_threads(1)
    try:
        return _fit_template(torch, points, template, iterations, progress, seed, joints or {},
                             refine_steps, floor)
    finally:
        torch.set_num_threads(threads)


def _fit_template(torch, points, template, iterations, progress, seed, joints,
                  refine_steps, floor) -> ScanFit:
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    rig = Rig(template)
    surface_faces = template.faces[template.region_faces(*SURFACE_REGIONS)]
    surface = np.unique(surface_faces)
    # Every surface vertex against every scan centre (template -> scan), and a sample of the
    # scan against every surface vertex (scan -> template): sparser samples bias the fit by
    # their spacing (about 1 cm for 12k of 217k centres).
    verts = surface
    # The torso (every vertex not carried by a limb) places the body as a whole first: the
    # limbs' own poses would otherwise turn it (a walking stride turned the root by 22 deg).
    limbs = {rig.bone_names.index(f"{bone}.{side}") for bone in ("upperleg01", "upperarm01")
             for side in "LR"}
    in_limb = np.zeros(len(rig.parents), dtype=bool)
    for bone in range(1, len(rig.parents)):
        in_limb[bone] = bone in limbs or in_limb[rig.parents[bone]]
    dominant = template.skin_indices[verts, np.argmax(template.skin_weights[verts], axis=1)]
    torso = torch.tensor(~in_limb[dominant])
    scan = points[rng.choice(len(points), min(len(points), 12000), replace=False)]
    scan_tree = cKDTree(points)

    # The wrists stay as the forearms carry them: a hand hanging by the thigh otherwise turns
    # into it (the nearest points are the thigh's).
    wrists = {rig.bone_names.index(f"wrist.{side}") for side in "LR"}
    fitted = sorted(set(rig.body_index.tolist() + rig.head_index.tolist()) - wrists)
    slot = np.zeros(len(rig.parents), dtype=np.int64)  # 0: identity, i + 1: fitted bone i
    slot[fitted] = np.arange(1, len(fitted) + 1)
    slot_t = torch.tensor(slot)
    levels = [(torch.tensor(level), torch.tensor(rig.parents[level])) for level in rig.levels]
    rest_heads = torch.tensor(rig.rest_heads, dtype=torch.float32)
    offsets = torch.tensor(rig.rest_offsets, dtype=torch.float32)
    rest = torch.tensor(template.vertices[verts], dtype=torch.float32)
    # Skin weights as a dense (V, J) matrix: blending is then one matrix product (a gather
    # of (V, K) bone transforms is many times slower backwards).
    weights = np.zeros((len(verts), len(rig.parents)), dtype=np.float32)
    np.add.at(weights, (np.arange(len(verts))[:, None], template.skin_indices[verts]),
              template.skin_weights[verts])
    weights_t = torch.tensor(weights)
    scan_t = torch.tensor(scan, dtype=torch.float32)
    joint_index = torch.tensor([rig.bone_names.index(name) for name in joints], dtype=torch.int64)
    joint_target = torch.tensor(np.array(list(joints.values())).reshape(-1, 3),
                                dtype=torch.float32)
    points_t = torch.tensor(points, dtype=torch.float32)

    bone_aa = torch.zeros((len(fitted), 3), requires_grad=True)
    root_aa = torch.zeros(3, requires_grad=True)
    shift = torch.zeros(3, requires_grad=True)
    log_scale = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.Adam([
        {"params": [bone_aa], "lr": 0.03}, {"params": [root_aa], "lr": 0.01},
        {"params": [shift], "lr": 0.005}, {"params": [log_scale], "lr": 0.003}])

    def bones_by(bone_aa, root_aa):
        # Forward kinematics one depth level at a time (as avatar.rig does).
        local = torch.cat([torch.eye(3)[None], _axis_angle_matrices(torch, bone_aa)])[slot_t]
        root = _axis_angle_matrices(torch, root_aa[None])
        rot = torch.cat([root, local[1:]])
        head = rest_heads.clone()
        for index, parent in levels:
            rot = rot.index_copy(0, index, rot[parent] @ rot[index])
            head = head.index_copy(0, index, head[parent]
                                   + torch.einsum("nab,nb->na", rot[parent], offsets[index]))
        return rot, head, head - torch.einsum("jab,jb->ja", rot, rest_heads)

    def posed_by(bone_aa, root_aa, shift, log_scale):
        rot, head, trans = bones_by(bone_aa, root_aa)
        blend = (weights_t @ torch.cat([rot, trans[..., None]], dim=2).reshape(-1, 12))
        blend = blend.reshape(-1, 3, 4)
        skinned = torch.einsum("vab,vb->va", blend[:, :, :3], rest) + blend[:, :, 3]
        scale = torch.exp(log_scale)
        return scale * skinned + shift, scale * head + shift

    def transforms_by(bone_aa, root_aa, shift, log_scale):
        # (J, 3, 4) rest -> fitted bone transforms, scaled and shifted (skin weights sum to 1)
        rot, _, trans = bones_by(bone_aa, root_aa)
        scale = torch.exp(log_scale)
        return torch.cat([scale * rot, (scale * trans + shift)[..., None]], dim=2)

    def posed():
        return posed_by(bone_aa, root_aa, shift, log_scale)

    def huber(d2, delta=0.02):
        d = torch.sqrt(d2 + 1e-12)
        return torch.where(d < delta, 0.5 * d2 / delta, d - 0.5 * delta)

    # The body as a whole first, then the limbs too; the steps shrink over the last half
    # (cosine), and the scan -> template term (which hair and loose clothes bias outwards)
    # fades to a tenth, leaving the template -> scan term to settle the surface.
    half = iterations // 2

    def step_size(step: int) -> float:
        return 1.0 if step < half else 0.05 + 0.475 * (1 + math.cos(math.pi * (step - half)
                                                                    / (iterations - half)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, step_size)
    for step in range(iterations):
        whole = step < iterations // 4
        outward = 0.0 if whole else 1.0 if step < half else 0.1
        optimiser.zero_grad()
        v, heads = posed()
        v_np = v.detach().numpy()
        d_v, to_scan = scan_tree.query(v_np, distance_upper_bound=0.3)
        ok_v = torch.tensor(np.isfinite(d_v)) & (torso if whole else True)
        target = points_t[torch.tensor(np.where(np.isfinite(d_v), to_scan, 0))]
        d_s, to_vert = cKDTree(v_np).query(scan, distance_upper_bound=0.3)
        ok_s = torch.tensor(np.isfinite(d_s))
        nearest = v[torch.tensor(np.where(np.isfinite(d_s), to_vert, 0))]
        loss = (huber(((v - target) ** 2).sum(1))[ok_v].mean()
                + outward * huber(((scan_t - nearest) ** 2).sum(1))[ok_s].mean()
                + 1e-3 * (bone_aa ** 2).sum())
        if len(joint_index) and step < half:
            loss = loss + 5.0 * ((heads[joint_index] - joint_target) ** 2).sum(1).mean()
        loss.backward()
        if whole:
            bone_aa.grad = None
        optimiser.step()
        scheduler.step()
        if progress and step % 40 == 39:
            progress(step + 1, iterations)

    thickness = 0.0
    if refine_steps:
        thickness = _refine(torch, transforms_by, [bone_aa, root_aa, shift, log_scale], weights,
                template.vertices[verts], np.searchsorted(surface, surface_faces), points,
                refine_steps, rng, floor)
    with torch.no_grad():
        root = _axis_angle_matrices(torch, root_aa[None])[0].numpy()
        local = np.tile(np.array([1.0, 0, 0, 0]), (len(rig.parents), 1))
        turns = _axis_angle_matrices(torch, bone_aa).numpy().astype(np.float64)
        local[fitted] = matrix_to_quat(turns)
        local[0] = matrix_to_quat(root.astype(np.float64))
        scale = float(torch.exp(log_scale))
        shift_np = shift.detach().numpy().astype(np.float64)
    skeleton = rig.pose(local)
    vertices = skin_points(template.vertices, template.skin_indices, template.skin_weights,
                           skeleton.transforms)
    # Report in template metres: the scan is brought to the template (divide by the scale).
    scan_body = (scan - shift_np) / scale
    d_scan, _ = cKDTree(vertices[surface]).query(scan_body)
    d_surface, _ = cKDTree(scan_body).query(vertices[surface])
    trimmed = d_scan[d_scan < 0.1]
    return ScanFit(local, vertices.astype(np.float32), shift_np, scale,
                   float(np.sqrt(np.mean(trimmed ** 2))) if trimmed.size else math.inf,
                   float(np.mean(d_surface < 0.03)), thickness / scale)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _refine(torch, transforms_by, params, weights, rest, faces, points, steps, rng, floor,
            reach=(0.03, 0.005), sample=20000, prior=1e-5):
    """ICP to finish the fit: Levenberg-Marquardt steps on point-to-plane distances, both
    ways (each surface vertex to its nearest scan centre, a sample of the centres to their
    nearest vertex), along the posed template's vertex normals. Pairs further apart than a
    reach shrinking from ``reach[0]`` to ``reach[1]`` (geometrically) are left out: wide
    at first to pull the limbs in, narrow at the end so that wrong pairs (a thigh's centres
    for a hanging hand, the crotch, the armpits) stop biasing the surface. Measured on a
    walking stride: Adam alone 16.5 mm mean vertex error; 8 steps at 3 cm 3.5 mm; 25 steps
    shrinking to 1 cm 1.0 mm, to 5 mm 0.6 mm. The reach never narrows below three times the
    typical pair distance, so that a person shaped unlike the template keeps their pairs.

    A thickness (the surface moved along its normals, the same everywhere) is fitted with
    the pose: the simplest shape term, it keeps a person stouter or slimmer than the
    template from being taken as a bigger or smaller one (a 12 mm thicker walker was scaled
    by 0.87 without it; with it the fit finds 12.1 mm and a scale of 0.995).

    ``prior`` (per squared radian, against the mean squared distance) holds the bones'
    turns near rest where the scan says little: a standing scan whose soles went with the
    floor had its feet and shin twists turned 40 and 33 deg against each other without it
    (32.3 dB instead of 28.8 at rest); at 1e-4 it held a stride's legs back (27.7 dB).

    ``transforms_by(*params)`` gives the (J, 3, 4) bone transforms, ``weights`` (V, J) the
    skinning of the ``rest`` (V, 3) surface vertices (``faces`` index them). ``params`` are
    updated in place; returns the thickness (metres, in the fit's space). With ``floor``,
    vertices under y = 0 are pulled up to it."""
    from scipy.spatial import cKDTree
    from torch.func import jacfwd

    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]
    x = torch.cat([p.detach().reshape(-1) for p in params]).double()
    homogeneous = np.c_[rest, np.ones(len(rest))].astype(np.float64)
    weights = weights.astype(np.float64)

    def matrices_of(flat):
        parts = torch.split(flat, sizes)
        return transforms_by(*(part.reshape(shape) for part, shape in zip(parts, shapes)))

    def vertices_of(flat):
        with torch.no_grad():
            blend = (weights @ matrices_of(flat.float()).double().numpy().reshape(-1, 12))
        return np.einsum("vab,vb->va", blend.reshape(-1, 3, 4), homogeneous)

    def jacobian(flat):
        # (V, 3, P): bone transforms' Jacobian (forward mode: a hundred-odd parameters, a
        # hundred-odd bones), then blended by the skin weights: one matrix product.
        d = jacfwd(matrices_of)(flat.float()).double().numpy()      # (J, 3, 4, P)
        blend = (weights @ d.reshape(len(d), -1)).reshape(len(rest), 3, 4, -1)
        return np.einsum("vabp,vb->vap", blend, homogeneous)

    tree = cKDTree(points)
    scan = points[rng.choice(len(points), min(len(points), sample), replace=False)]
    damping = 1e-3
    thick = 0.0

    def surface(x, thick):
        base = vertices_of(x)
        normals = _vertex_normals(base, faces)
        return base + thick * normals, normals

    v, vn = surface(x, thick)

    def residuals(v, vn, reach):
        d_v, to_scan = tree.query(v, distance_upper_bound=widest)
        d_s, to_vert = cKDTree(v).query(scan, distance_upper_bound=widest)
        # No narrower than three times the typical distance: a person shaped unlike the
        # template keeps the pairs that carry their pose.
        typical = np.median(np.concatenate([d_v[np.isfinite(d_v)], d_s[np.isfinite(d_s)]]))
        reach = min(widest, max(reach, 3 * float(typical)))
        ok_v = np.flatnonzero(d_v < reach)
        ok_s = np.flatnonzero(d_s < reach)
        # residual = n . (v - q): vertex rows, then centre rows (each term weighted by count)
        rows = np.concatenate([ok_v, to_vert[ok_s]])
        targets = np.concatenate([points[to_scan[ok_v]], scan[ok_s]])
        rooted = np.concatenate([np.full(len(ok_v), 1 / max(len(ok_v), 1)),
                                  np.full(len(ok_s), 1 / max(len(ok_s), 1))])
        normals = vn[rows]
        if floor:
            # Vertices under the floor (y = 0) pair with the floor: the feet's soles, which
            # the floor took with it, are otherwise free to turn into it.
            under = np.flatnonzero(v[:, 1] < 0)
            rows = np.concatenate([rows, under])
            targets = np.concatenate([targets, v[under] * [1, 0, 1]])
            normals = np.concatenate([normals, np.tile([0.0, 1.0, 0.0], (len(under), 1))])
            rooted = np.concatenate([rooted, np.full(len(under), 1 / max(len(ok_v), 1))])
        return rows, normals, targets, np.sqrt(rooted)

    turns = sizes[0]  # the bones' axis-angle turns come first

    def cost(v, rows, normals, targets, root_w, x):
        return float(np.sum((root_w * ((v[rows] - targets) * normals).sum(1)) ** 2)
                     + prior * np.sum(x[:turns].numpy() ** 2))

    widest = reach[0]
    count = len(x)
    for i in range(steps):
        rows, normals, targets, root_w = residuals(
            v, vn, reach[0] * (reach[1] / reach[0]) ** (i / max(steps - 1, 1)))
        r = root_w * ((v[rows] - targets) * normals).sum(1)
        jac = jacobian(x)
        # The last column: the thickness (d r / d t = n . the vertex normal).
        j = np.c_[np.einsum("rd,rdp->rp", normals, jac[rows]), (normals * vn[rows]).sum(1)]
        j *= root_w[:, None]
        jtj, jtr = j.T @ j, j.T @ r
        jtj[:turns, :turns] += prior * np.eye(turns)
        jtr[:turns] += prior * x[:turns].numpy()
        base = cost(v, rows, normals, targets, root_w, x)
        while damping < 1e6:
            lhs = jtj + damping * (np.diag(np.diag(jtj)) + 1e-9 * np.eye(len(jtj)))
            step = np.linalg.solve(lhs, -jtr)
            trial, thick_trial = x + torch.from_numpy(step[:count]), thick + float(step[count])
            v_trial, vn_trial = surface(trial, thick_trial)
            if cost(v_trial, rows, normals, targets, root_w, trial) < base:
                x, thick, v, vn = trial, thick_trial, v_trial, vn_trial
                damping = max(damping / 3, 1e-6)
                break
            damping *= 4
    with torch.no_grad():
        for p, part in zip(params, torch.split(x.float(), sizes)):
            p.copy_(part.reshape(p.shape))
    return thick


# -- 6-7: binding and thinning -------------------------------------------------------------

def _barycentric(p, a, b, c):
    """Barycentric coordinates (..., 3) of points p in the planes of triangles (a, b, c)."""
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-20)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    return np.stack([1 - v - w, v, w], axis=-1)


def _clamp_barycentric(bary):
    """The nearest point inside the triangle, approximately: negative weights to zero,
    renormalised (exact on the vertices' side, close enough for choosing a triangle)."""
    b = np.maximum(bary, 0)
    return b / np.maximum(b.sum(-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Binding:
    keep: np.ndarray      # (N,) bool: the Gaussians that ride on the body
    face: np.ndarray      # (M,) int32
    bary: np.ndarray      # (M, 3)
    offset: np.ndarray    # (M,)
    local_quats: np.ndarray   # (M, 4)
    local_scales: np.ndarray  # (M, 3)
    distance: np.ndarray  # (N,) distance of each centre to the body surface, metres


def bind_gaussians(gaussians: Gaussians, vertices: np.ndarray, template: Template,
                   on_floor: np.ndarray | None = None, candidates: int = 12,
                   chunk: int = 65536) -> Binding:
    """Bind body-space Gaussians to the triangles of the posed template ``vertices``."""
    from scipy.spatial import cKDTree

    faces = template.faces
    surface = template.region_faces(*SURFACE_REGIONS)
    frames, area2 = triangle_frames(vertices, faces)
    _, rest_area2 = triangle_frames(template.vertices, faces)
    stretch = np.sqrt(area2 / np.maximum(rest_area2, 1e-12))
    corners = vertices[faces].astype(np.float64)  # (F, 3, 3)
    tree = cKDTree(corners[surface].mean(axis=1))
    n = len(gaussians)
    face = np.zeros(n, dtype=np.int64)
    bary = np.zeros((n, 3))
    offset = np.zeros(n)
    distance = np.zeros(n)
    for start in range(0, n, chunk):
        p = gaussians.means[start:start + chunk].astype(np.float64)
        _, idx = tree.query(p, k=candidates)
        cand = surface[idx]                                   # (C, k)
        a, b, c = (corners[cand, i] for i in range(3))        # (C, k, 3)
        normal = frames[cand, :, 2]                           # (C, k, 3)
        along = ((p[:, None] - a) * normal).sum(-1)           # signed normal distance
        w = _barycentric(p[:, None] - along[..., None] * normal, a, b, c)
        inside = np.all(w >= -BARY_MARGIN, axis=-1)
        wc = _clamp_barycentric(w)
        closest = np.einsum("ckj,ckjd->ckd", wc, np.stack([a, b, c], axis=2))
        gap = np.linalg.norm(p[:, None] - closest, axis=-1)   # distance to the triangle
        # Prefer a triangle whose normal prism holds the point (exact binding), nearest
        # along the normal; else the nearest triangle, its barycentric point clamped.
        score = np.where(inside, np.abs(along), np.inf)
        best = np.argmin(score, axis=1)
        outside = ~np.isfinite(score[np.arange(len(p)), best])
        best[outside] = np.argmin(gap[outside], axis=1)
        rows = np.arange(len(p))
        f = cand[rows, best]
        wb = np.where(outside[:, None], wc[rows, best], w[rows, best])
        wb = np.maximum(wb, -BARY_MARGIN)
        wb /= wb.sum(1, keepdims=True)
        on_plane = np.einsum("cj,cjd->cd", wb, corners[f])
        face[start:start + chunk] = f
        bary[start:start + chunk] = wb
        offset[start:start + chunk] = ((p - on_plane) * frames[f, :, 2]).sum(1)
        distance[start:start + chunk] = gap.min(axis=1)
    keep = distance < KEEP_DISTANCE_M
    if on_floor is not None:
        keep &= ~on_floor | (distance < FLOOR_KEEP_DISTANCE_M)
    face_quats = matrix_to_quat(frames)
    local_quats = quat_multiply(quat_conjugate(face_quats[face[keep]]), gaussians.quats[keep])
    local_scales = gaussians.scales[keep] / stretch[face[keep]][:, None]
    return Binding(keep, face[keep].astype(np.int32), bary[keep].astype(np.float32),
                   offset[keep].astype(np.float32), local_quats.astype(np.float32),
                   np.maximum(local_scales, 1e-7).astype(np.float32), distance)


def visibility(gaussians: Gaussians) -> np.ndarray:
    """(N,) how much a Gaussian shows: opacity x the area of its two largest axes."""
    s = np.sort(gaussians.scales, axis=1)
    return gaussians.opacities * s[:, 1] * s[:, 2]


def thin(gaussians: Gaussians, max_gaussians: int) -> np.ndarray:
    """Indices of the ``max_gaussians`` most visible Gaussians (all, if fewer), in order."""
    if len(gaussians) <= max_gaussians:
        return np.arange(len(gaussians))
    order = np.argpartition(-visibility(gaussians), max_gaussians - 1)[:max_gaussians]
    return np.sort(order)


def rotate_sh(colors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Spherical-harmonic colours (N, K, 3) re-expressed after turning the world by
    ``rotation`` (3, 3), band by band (fitted on sample directions); RGB is returned as is."""
    if colors.ndim == 2 or colors.shape[1] == 1:
        return colors
    from render.reference import sh_basis

    degree = round(math.sqrt(colors.shape[1])) - 1
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(256, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # f'(d) = f(R^T d): Y(R^T d) = Y(d) D  =>  c' = D c
    d = np.linalg.lstsq(sh_basis(dirs, degree), sh_basis(dirs @ rotation, degree), rcond=None)[0]
    return np.einsum("kj,njc->nkc", d, colors).astype(np.float32)


def lca_bytes_per_gaussian(colors: np.ndarray) -> int:
    """Bytes a Gaussian takes in a compact .lca: int32 triangle, float32 barycentric point
    and offset, float16 rotation, scales, opacity and colours."""
    values = 3 if colors.ndim == 2 else colors.shape[1] * 3
    return 4 + 12 + 4 + 2 * (4 + 3 + 1 + values)


@dataclass(frozen=True)
class Bound:
    """A scan bound to the template: the .lca arrays and what happened on the way."""

    face: np.ndarray
    bary: np.ndarray
    offset: np.ndarray
    local_quats: np.ndarray
    local_scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    dropped_background: int   # far from the body (floor, clutter)
    dropped_thinning: int     # over ``max_gaussians``


def bind_scan(scan: Gaussians, body_from_scan: Similarity, fit: ScanFit, template: Template,
              max_gaussians: int, floor: Plane | None = None) -> Bound:
    """Every scan Gaussian near the fitted template, bound to it and thinned to
    ``max_gaussians`` (the most visible kept)."""
    from scipy.spatial import cKDTree

    rotation_q = matrix_to_quat(body_from_scan.rotation)
    means = body_from_scan.apply(scan.means)
    # A quick cut before the exact binding: nothing beyond the keep distance of every vertex
    # (the longest template edge is well under it) can be the person.
    near = cKDTree(fit.vertices).query(means, distance_upper_bound=2 * KEEP_DISTANCE_M)[0]
    candidates = np.flatnonzero(np.isfinite(near))
    body = Gaussians(means[candidates], quat_multiply(rotation_q, scan.quats[candidates]),
                     scan.scales[candidates] * body_from_scan.scale,
                     scan.opacities[candidates],
                     rotate_sh(scan.colors[candidates], body_from_scan.rotation))
    on_floor = None
    if floor is not None:
        height = scan.means[candidates] @ floor.normal - floor.offset
        on_floor = height < 2 * floor.tolerance
    binding = bind_gaussians(body, fit.vertices, template, on_floor)
    kept = body.subset(binding.keep)
    order = thin(kept, max_gaussians)
    return Bound(binding.face[order], binding.bary[order], binding.offset[order],
                 binding.local_quats[order], binding.local_scales[order],
                 kept.opacities[order], kept.colors[order],
                 dropped_background=len(scan) - len(kept),
                 dropped_thinning=len(kept) - len(order))
