"""A differentiable Gaussian splatter in plain PyTorch (CPU), for fitting avatars to video.

``render(means, quats, scales, opacities, colors, camera) -> (H, W, 4)`` premultiplied RGBA,
with autograd through every input tensor. The conventions are ``render/reference.py``'s
(read its docstring): EWA projection with the frustum-clamped Jacobian and 0.3 px^2
dilation, alpha = min(0.99, o exp(-q/2)) with pairs under 1/255 skipped, front-to-back
compositing that stops a pixel before T would fall below 1e-4, near/far culling, RGB or
spherical-harmonic colours (3DGS's constants, + 0.5, clamped at 0). ``tests/test_torch_splat.py``
checks the forward pass against the reference renderer and the gradients against finite
differences.

How it runs on a CPU (a 2-core VM; figures in docs/BENCHMARKS.md):

- Small tiles. The image is cut into ``tile_size`` x ``tile_size`` tiles (4 x 4 by
  default); each (tile, Gaussian) pair whose footprint box touches the tile is listed, in
  depth order per tile. All of a tile's Gaussians are evaluated at all of its pixels as
  dense tensors: with 4 x 4 tiles that is about as many (Gaussian, pixel) evaluations as
  the footprint boxes hold (a posed avatar at 256x256: 8.5 M against 7.4 M), where
  16 x 16 tiles would evaluate 8 times more.
- Exact by default. ``tile_capacity`` can keep only each tile's front-most Gaussians
  (``RenderInfo.truncated_tiles`` counts the tiles cut), but a posed avatar has hundreds of
  Gaussians ahead of the visible surface in places (hair layers, lids, the hand in front),
  and cutting at 256 costs 70-80 dB of PSNR (12-25 dB left): measured, so not the default.
- The Gaussian's exponent at a pixel is a quadratic in the pixel's offset from its tile's
  centre, so a tile's (Gaussian, pixel) exponents are one matrix product of the Gaussians'
  six coefficients (tile-relative, which keeps float32 exact enough) with the tile's six
  monomials (x^2, y^2, xy, x, y, 1); the log-opacity rides in the constant.
- Depth chunks with early stop. Tiles are composited a chunk of Gaussians at a time in
  depth order (transmittance in log space, a cumulative sum per chunk; chunks grow from
  ``chunk`` to ``MAX_CHUNK``); a tile leaves the loop once every pixel in it is done or
  its list ends, so an opaque surface costs a chunk or two.

torch is imported by this module only: the rest of the project runs on numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from render.camera import Camera
from render.reference import (
    ALPHA_MAX,
    ALPHA_MIN,
    DILATION_PX2,
    FRUSTUM_MARGIN,
    SH_C0,
    SH_C1,
    SH_C2,
    SH_C3,
    T_MIN,
)

TILE_SIZE = 4
CHUNK = 16  # Gaussians per tile in the first steps of the depth loop
MAX_CHUNK = 256  # ... growing to this for the tiles still unfinished
# threshold() keeps values strictly above this: the largest float32 below 1/255, so alpha
# >= 1/255 is kept as the reference renderer does.
ALPHA_SKIP_BELOW = float(np.nextafter(np.float32(ALPHA_MIN), np.float32(0)))
LOG_OPACITY_NONE = -30.0  # a padding slot's log-opacity: exp(-30) is far below 1/255
SH_DEGREES = {1: 0, 4: 1, 9: 2, 16: 3}


@dataclass
class Projected:
    """Drawable Gaussians in one camera, in increasing depth (M of them).

    index (M,) int64 into the inputs; depth (M,) camera z, metres; mean2d (M, 2) pixels;
    conic (M, 3) inverse 2D covariance (a, b, c) of a x^2 + 2 b x y + c y^2, 1/px^2;
    opacity (M,) in [0, 1]; rgb (M, 3) per-view colour; box (M, 4) int64 pixel ranges
    x0, x1, y0, y1 (inclusive-exclusive) of the 1/255 footprint, detached. mean2d, conic,
    opacity and rgb carry autograd back to the inputs.
    """

    index: torch.Tensor
    depth: torch.Tensor
    mean2d: torch.Tensor
    conic: torch.Tensor
    opacity: torch.Tensor
    rgb: torch.Tensor
    box: torch.Tensor


@dataclass
class RenderInfo:
    """What one render did: drawable Gaussians, (tile, Gaussian) pairs listed, tiles whose
    list was cut at ``tile_capacity`` (those may differ from the reference renderer), and
    the (tile, Gaussian) slots the depth loop evaluated (each at every pixel of its tile)."""

    drawn: int
    pairs: int
    truncated_tiles: int
    tile_slots: int


def check_inputs(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                 opacities: torch.Tensor, colors: torch.Tensor) -> int:
    """N after checking shapes and dtypes: means (N, 3), quats (N, 4) (w, x, y, z), scales
    (N, 3) linear, opacities (N,), colors (N, 3) RGB or (N, K, 3) SH, K in 1, 4, 9, 16; all
    of one floating dtype. Raises ValueError naming the first bad one."""
    n = means.shape[0] if means.ndim == 2 else -1
    shapes = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
              "opacities": (opacities, (n,))}
    for name, (tensor, shape) in shapes.items():
        if tuple(tensor.shape) != shape or n < 0:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
    if not (tuple(colors.shape) == (n, 3) or (colors.ndim == 3 and colors.shape[0] == n
                                              and colors.shape[2] == 3
                                              and colors.shape[1] in SH_DEGREES)):
        raise ValueError(f"colors has shape {tuple(colors.shape)}, expected ({n}, 3) or "
                         f"({n}, K, 3) with K in 1, 4, 9, 16")
    dtype = means.dtype
    if not dtype.is_floating_point:
        raise ValueError(f"means must be floating point, not {dtype}")
    for name, tensor in (("quats", quats), ("scales", scales), ("opacities", opacities),
                         ("colors", colors)):
        if tensor.dtype != dtype:
            raise ValueError(f"{name} is {tensor.dtype}, means {dtype}: use one dtype")
    return n


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis (N, (degree+1)^2) of unit directions (N, 3), 3DGS's ordering."""
    x, y, z = dirs.unbind(1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=1)


def view_colors(colors: torch.Tensor, means: torch.Tensor,
                camera_position: torch.Tensor) -> torch.Tensor:
    """Per-view RGB (N, 3): RGB as given, SH (N, K, 3) evaluated along camera -> mean."""
    if colors.ndim == 2:
        return colors
    dirs = means - camera_position
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rgb = torch.einsum("nk,nkc->nc", sh_basis(dirs, SH_DEGREES[colors.shape[1]]), colors)
    return (rgb + 0.5).clamp_min(0.0)


def quats_to_matrices(quats: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations from (N, 4) quaternions (w, x, y, z), normalised first."""
    q = quats / quats.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(-1, 3, 3)


def drawable_mask(means, quats, scales, opacities, colors) -> torch.Tensor:
    """(N,) bool: finite attributes, positive scales, opacity >= 1/255 (reference's rule)."""
    with torch.no_grad():
        ok = torch.isfinite(means).all(1) & torch.isfinite(quats).all(1)
        ok &= quats.norm(dim=1) > 1e-8
        ok &= torch.isfinite(scales).all(1) & (scales > 0).all(1)
        ok &= torch.isfinite(opacities) & (opacities >= ALPHA_MIN)
        ok &= torch.isfinite(colors.reshape(len(colors), -1)).all(1)
    return ok


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
            opacities: torch.Tensor, colors: torch.Tensor, camera: Camera) -> Projected:
    """Cull, project (EWA) and depth-sort for ``camera``; shapes as in ``check_inputs``."""
    check_inputs(means, quats, scales, opacities, colors)
    dtype = means.dtype
    keep = torch.nonzero(drawable_mask(means, quats, scales, opacities, colors)).squeeze(1)
    cv_from_world = torch.as_tensor(camera.cv_from_world, dtype=dtype)
    rot, trans = cv_from_world[:3, :3], cv_from_world[:3, 3]
    means_k = means[keep]
    means_cam = means_k @ rot.T + trans
    z = means_cam[:, 2]
    with torch.no_grad():
        in_depth = torch.nonzero((z > camera.near) & (z < camera.far)).squeeze(1)
    keep, means_k = keep[in_depth], means_k[in_depth]
    means_cam, z = means_cam[in_depth], z[in_depth]

    w, h, fx, fy = camera.width, camera.height, camera.fx, camera.fy
    lim_x_pos = (w - camera.cx) / fx + FRUSTUM_MARGIN * 0.5 * w / fx
    lim_x_neg = camera.cx / fx + FRUSTUM_MARGIN * 0.5 * w / fx
    lim_y_pos = (h - camera.cy) / fy + FRUSTUM_MARGIN * 0.5 * h / fy
    lim_y_neg = camera.cy / fy + FRUSTUM_MARGIN * 0.5 * h / fy
    tx = (means_cam[:, 0] / z).clamp(-lim_x_neg, lim_x_pos) * z
    ty = (means_cam[:, 1] / z).clamp(-lim_y_neg, lim_y_pos) * z
    # EWA: cov2d = (J W R S)(J W R S)^T with J the projection's Jacobian (2, 3) and W the
    # camera's rotation. Written out per row (no batched 3x3 products: 5x faster on a CPU).
    jw0 = (fx / z)[:, None] * rot[0] - (fx * tx / (z * z))[:, None] * rot[2]  # (N, 3)
    jw1 = (fy / z)[:, None] * rot[1] - (fy * ty / (z * z))[:, None] * rot[2]
    r = quats_to_matrices(quats[keep])
    s = scales[keep]
    t0 = (jw0[:, :, None] * r).sum(1) * s  # rows of J W R S, (N, 3)
    t1 = (jw1[:, :, None] * r).sum(1) * s
    cov2d_xx, cov2d_xy, cov2d_yy = (t0 * t0).sum(1), (t0 * t1).sum(1), (t1 * t1).sum(1)
    a = cov2d_xx + DILATION_PX2
    b = cov2d_xy
    c = cov2d_yy + DILATION_PX2
    det = a * c - b * b
    ok = det > 0
    det = torch.where(ok, det, torch.ones_like(det))
    conic = torch.stack([c / det, -b / det, a / det], dim=1)
    mean2d = torch.stack([fx * means_cam[:, 0] / z + camera.cx,
                          fy * means_cam[:, 1] / z + camera.cy], dim=1)
    opacity = opacities[keep].clamp(max=1.0)

    with torch.no_grad():  # the footprint box: binning only, no gradient
        level = 2.0 * torch.log(opacity.clamp_min(ALPHA_MIN) / ALPHA_MIN)
        rx, ry = torch.sqrt(level * a), torch.sqrt(level * c)
        x0 = torch.ceil(mean2d[:, 0] - rx - 0.5)
        x1 = torch.floor(mean2d[:, 0] + rx - 0.5) + 1
        y0 = torch.ceil(mean2d[:, 1] - ry - 0.5)
        y1 = torch.floor(mean2d[:, 1] + ry - 0.5) + 1
        box = torch.stack([x0.clamp(0, w), x1.clamp(0, w), y0.clamp(0, h), y1.clamp(0, h)], 1)
        ok = ok & torch.isfinite(box).all(1)  # not in place: torch.where above keeps ok
        box = torch.where(ok[:, None], box, torch.zeros_like(box)).to(torch.int64)
        ok = ok & (box[:, 1] > box[:, 0]) & (box[:, 3] > box[:, 2])
        order = torch.nonzero(ok).squeeze(1)
        order = order[torch.argsort(z[order], stable=True)]

    camera_position = torch.as_tensor(camera.position, dtype=dtype)
    kept = keep[order]
    return Projected(index=kept, depth=z[order].detach(), mean2d=mean2d[order],
                     conic=conic[order], opacity=opacity[order],
                     rgb=view_colors(colors[kept], means[kept], camera_position),
                     box=box[order])


@dataclass
class TileLists:
    """Per tile its Gaussians, front to back, as one flat list: ``gaussians`` (pairs,) int64
    indices into the projected Gaussians, grouped by tile; tile t's are
    ``gaussians[start[t]:start[t] + count[t]]`` (``count`` already cut at a capacity)."""

    gaussians: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    tiles_x: int
    tiles_y: int
    pairs: int
    truncated: int

    @property
    def longest(self) -> int:
        return int(self.count.max()) if len(self.count) else 0

    def slots(self, tiles: torch.Tensor, first: int, stop: int, none: int) -> torch.Tensor:
        """(len(tiles), stop - first) Gaussians at depth ranks first..stop-1 of ``tiles``,
        ``none`` where a tile's list is shorter."""
        rank = torch.arange(first, stop)
        inside = rank[None, :] < self.count[tiles, None]
        at = (self.start[tiles, None] + rank[None, :]).clamp_(max=max(self.pairs - 1, 0))
        picked = self.gaussians[at] if self.pairs else torch.zeros_like(at)
        return picked.masked_fill_(~inside, none)


def bin_tiles(box: torch.Tensor, width: int, height: int, tile_size: int,
              tile_capacity: int | None = None) -> TileLists:
    """Which projected Gaussians (boxes (M, 4), in depth order) touch each tile; with a
    ``tile_capacity``, only each tile's front-most ones."""
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    n_tiles, m = tiles_x * tiles_y, len(box)
    tx0, tx1 = box[:, 0] // tile_size, (box[:, 1] - 1) // tile_size + 1
    ty0, ty1 = box[:, 2] // tile_size, (box[:, 3] - 1) // tile_size + 1
    span_x = tx1 - tx0
    counts = span_x * (ty1 - ty0)
    pairs = int(counts.sum())
    gauss = torch.repeat_interleave(torch.arange(m), counts)
    offset = torch.arange(pairs) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    sx = span_x[gauss]
    tile = ((ty0[gauss] + offset // sx) * tiles_x + tx0[gauss] + offset % sx).to(torch.int32)
    # Pairs were made in depth order: a stable sort by tile keeps each tile's front to back
    # (int32 keys sort faster than int64).
    order = torch.argsort(tile, stable=True)
    per_tile = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(per_tile, 0) - per_tile
    capacity = per_tile if tile_capacity is None else per_tile.clamp(max=tile_capacity)
    return TileLists(gauss[order], start, capacity, tiles_x, tiles_y, pairs,
                     int((per_tile > capacity).sum()))


def pixel_monomials(tile_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(6, P) x^2, y^2, xy, x, y, 1 of each pixel centre of a tile, relative to its centre
    (P = tile_size^2, row-major)."""
    offsets = torch.arange(tile_size, dtype=dtype) + 0.5 - tile_size / 2
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([x * x, y * y, x * y, x, y, torch.ones_like(x)])


def chunk_bounds(length: int, first: int) -> list[tuple[int, int]]:
    """Depth ranges of the compositing loop: ``first`` Gaussians twice, then doubling up to
    ``MAX_CHUNK`` (most tiles finish in the first chunks; the few deep ones take fewer,
    larger steps)."""
    bounds, start, size = [], 0, first
    while start < length:
        bounds.append((start, min(start + size, length)))
        start += size
        if len(bounds) >= 2:
            size = min(2 * size, max(MAX_CHUNK, first))
    return bounds


@dataclass
class TilePlan:
    """What the compositing loop needs besides the Gaussians: the tile lists, each tile's
    centre (n_tiles, 2) pixels, the pixels that start done (off the image), the monomials
    of a tile's pixel offsets (6, P) and the depth chunks; ``slots`` counts the (tile,
    Gaussian) slots the loop evaluates."""

    lists: TileLists
    centre: torch.Tensor
    done: torch.Tensor
    phi: torch.Tensor
    chunks: list[tuple[int, int]]
    slots: int = 0


def plan_tiles(box: torch.Tensor, width: int, height: int, tile_size: int,
               tile_capacity: int | None, chunk: int, dtype: torch.dtype) -> TilePlan:
    with torch.no_grad():
        lists = bin_tiles(box, width, height, tile_size, tile_capacity)
        n_tiles, p = lists.tiles_x * lists.tiles_y, tile_size * tile_size
        corner_x = torch.arange(n_tiles) % lists.tiles_x * tile_size
        corner_y = torch.arange(n_tiles) // lists.tiles_x * tile_size
        centre = torch.stack([corner_x, corner_y], 1).to(dtype) + tile_size / 2
        local = torch.arange(p)
        done = ((corner_x[:, None] + local % tile_size >= width)
                | (corner_y[:, None] + local // tile_size >= height))
    return TilePlan(lists, centre, done, pixel_monomials(tile_size, dtype),
                    chunk_bounds(lists.longest, chunk))


# Columns of the per-Gaussian table the compositing reads: projected mean (x, y) pixels,
# conic (a, b, c), log-opacity, colour (r, g, b).
TABLE_COLUMNS = 9


def gaussian_table(proj: Projected) -> torch.Tensor:
    """(M + 1, 9) per-Gaussian rows for compositing; the last row draws nothing."""
    dtype = proj.mean2d.dtype
    table = torch.cat([proj.mean2d, proj.conic, torch.log(proj.opacity)[:, None], proj.rgb], 1)
    none = torch.zeros((1, TABLE_COLUMNS), dtype=dtype)
    none[0, 5] = LOG_OPACITY_NONE
    return torch.cat([table, none])


def exponent_coefficients(feats: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(A, C, 6) coefficients of log(o) - q/2 in the monomials of a pixel's offset from its
    tile's centre, for table rows ``feats`` (A, C, 9) on tiles centred at ``centre`` (A, 2)."""
    mx = feats[..., 0] - centre[:, None, 0]
    my = feats[..., 1] - centre[:, None, 1]
    ca, cb, cc = feats[..., 2], feats[..., 3], feats[..., 4]
    lin_x, lin_y = ca * mx + cb * my, cc * my + cb * mx
    return torch.stack([-0.5 * ca, -0.5 * cc, -cb, lin_x, lin_y,
                        feats[..., 5] - 0.5 * (lin_x * mx + lin_y * my)], dim=-1)


def composite_chunk(coeff: torch.Tensor, phi: torch.Tensor, log_t_in: torch.Tensor,
                    done_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One depth chunk of A tiles x C Gaussians x P pixels: alpha, log(1 - alpha),
    transmittance before each Gaussian, the pairs that pass the early stop, their weights.
    Plain tensor maths (differentiable as written; the fast path recomputes it)."""
    a, c = coeff.shape[:2]
    alpha = torch.exp((coeff.reshape(a * c, 6) @ phi).reshape(a, c, -1)).clamp(max=ALPHA_MAX)
    alpha = torch.nn.functional.threshold(alpha, ALPHA_SKIP_BELOW, 0.0)  # < 1/255: skipped
    log_keep = torch.log1p(-alpha)
    # A pixel already done starts at log T = -inf: it passes nothing and weighs nothing.
    start = log_t_in.masked_fill(done_in, -math.inf)
    log_t_after = torch.cumsum(log_keep, dim=1) + start[:, None, :]
    passes = log_t_after.detach() >= math.log(T_MIN)
    t_before = torch.exp(log_t_after - log_keep)
    weight = torch.where(passes, alpha * t_before, 0.0)
    return alpha, log_keep, t_before, passes, weight


class CompositeFunction(torch.autograd.Function):
    """All depth chunks of all tiles, with a hand-written backward pass.

    Forward: per chunk, ``composite_chunk`` and the colour and log-transmittance sums.
    Backward, per chunk in reverse (each pixel's suffix sums of later Gaussians come from
    the totals, 3DGS's back-to-front rule in closed form): with q_i = (dL/dC . c_i) w_i and
    G the gradient reaching log T after the chunk,
    dL/dalpha_i = pass_i (T_i dL/dC . c_i - (sum_{j>i} q_j + G) / (1 - alpha_i)),
    dL/dlog T_in = G + sum_i q_i, dL/dc_i = sum_pixels w_i dL/dC. The chunk's intermediates
    are recomputed rather than kept (memory stays one chunk's worth), all but the gathered
    table rows (A, C, 9 floats a chunk)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, plan: TilePlan):
        n_tiles, p = plan.done.shape
        done = plan.done.clone()
        log_t = torch.zeros((n_tiles, p), dtype=table.dtype)
        color = torch.zeros((n_tiles, p, 3), dtype=table.dtype)
        records = []
        for c0, c1 in plan.chunks:
            active = torch.nonzero((plan.lists.count > c0) & ~done.all(1)).squeeze(1)
            if len(active) == 0:
                break
            idx = plan.lists.slots(active, c0, c1, len(table) - 1)
            feats = table[idx]
            coeff = exponent_coefficients(feats, plan.centre[active])
            done_in, log_t_in = done[active], log_t[active]
            _, log_keep, _, passes, weight = composite_chunk(coeff, plan.phi, log_t_in, done_in)
            plan.slots += idx.numel()
            color[active] += weight.transpose(1, 2) @ feats[..., 6:9]
            log_t[active] = log_t_in + log_keep.masked_fill_(~passes, 0.0).sum(1)
            done[active] = done_in | ~passes[:, -1, :]
            records.append((active, idx, feats, done_in, log_t_in))
        ctx.plan, ctx.records = plan, records
        ctx.save_for_backward(table)
        return color, log_t

    @staticmethod
    def backward(ctx, grad_color: torch.Tensor, grad_log_t: torch.Tensor):
        (table,) = ctx.saved_tensors
        plan = ctx.plan
        grad_table = torch.zeros_like(table)
        grad_log_t = grad_log_t.clone()
        phi_t = plan.phi.T.contiguous()
        for active, idx, feats, done_in, log_t_in in reversed(ctx.records):
            centre = plan.centre[active]
            coeff = exponent_coefficients(feats, centre)
            alpha, _, t_before, passes, weight = composite_chunk(coeff, plan.phi, log_t_in,
                                                                 done_in)
            g_color = grad_color[active]  # (A, P, 3)
            g_out = grad_log_t[active]  # (A, P)
            rgb = feats[..., 6:9]
            g_weight = rgb @ g_color.transpose(1, 2)  # (A, C, P): dL/dC . c_i per pixel
            q = g_weight * weight
            q_sum = q.sum(1)
            later = (q_sum + g_out)[:, None, :] - torch.cumsum(q, dim=1)  # sum_{j>i} q_j + G
            g_alpha = (g_weight * t_before - later / (1.0 - alpha)).masked_fill_(~passes, 0.0)
            g_power = g_alpha.mul_(alpha).masked_fill_(alpha >= ALPHA_MAX, 0.0)
            a, c = idx.shape
            g_coeff = (g_power.reshape(a * c, -1) @ phi_t).reshape(a, c, 6)
            g_rgb = weight @ g_color  # (A, C, 3)
            grad_log_t[active] = g_out + q_sum
            g_feats = coefficient_backward(feats, centre, coeff, g_coeff)
            g_feats = torch.cat([g_feats, g_rgb], dim=-1)
            grad_table.index_add_(0, idx.reshape(-1), g_feats.reshape(-1, TABLE_COLUMNS))
        return grad_table, None


def coefficient_backward(feats: torch.Tensor, centre: torch.Tensor, coeff: torch.Tensor,
                         g_coeff: torch.Tensor) -> torch.Tensor:
    """(A, C, 6) gradient on the table's mean, conic and log-opacity columns from the
    gradient on ``exponent_coefficients``' output."""
    mx = feats[..., 0] - centre[:, None, 0]
    my = feats[..., 1] - centre[:, None, 1]
    ca, cb, cc = feats[..., 2], feats[..., 3], feats[..., 4]
    g0, g1, g2, g3, g4, g5 = g_coeff.unbind(-1)
    lin_x, lin_y = coeff[..., 3], coeff[..., 4]
    return torch.stack([
        g3 * ca + g4 * cb - g5 * lin_x,
        g3 * cb + g4 * cc - g5 * lin_y,
        -0.5 * g0 + g3 * mx - 0.5 * g5 * mx * mx,
        -g2 + g3 * my + g4 * mx - g5 * mx * my,
        -0.5 * g1 + g4 * my - 0.5 * g5 * my * my,
        g5,
    ], dim=-1)


def composite_autograd(table: torch.Tensor, plan: TilePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """``CompositeFunction`` written with autograd doing the backward pass: the obvious twin
    the tests check the hand-written gradients against (slower, more memory)."""
    n_tiles, p = plan.done.shape
    done = plan.done.clone()
    log_t = torch.zeros((n_tiles, p), dtype=table.dtype)
    color = torch.zeros((n_tiles, p, 3), dtype=table.dtype)
    for c0, c1 in plan.chunks:
        active = torch.nonzero((plan.lists.count > c0) & ~done.all(1)).squeeze(1)
        if len(active) == 0:
            break
        feats = table[plan.lists.slots(active, c0, c1, len(table) - 1)]
        plan.slots += feats.shape[0] * feats.shape[1]
        coeff = exponent_coefficients(feats, plan.centre[active])
        done_in, log_t_in = done[active], log_t[active]
        _, log_keep, _, passes, weight = composite_chunk(coeff, plan.phi, log_t_in, done_in)
        color = color.index_add(0, active, weight.transpose(1, 2) @ feats[..., 6:9])
        log_t = log_t.index_copy(0, active, log_t_in + log_keep.masked_fill(~passes, 0.0).sum(1))
        done[active] = done_in | ~passes[:, -1, :]
    return color, log_t


def rasterize(proj: Projected, width: int, height: int, *, tile_size: int = TILE_SIZE,
              tile_capacity: int | None = None, chunk: int = CHUNK,
              hand_backward: bool = True) -> tuple[torch.Tensor, torch.Tensor, RenderInfo]:
    """Composite projected Gaussians: premultiplied rgb (H, W, 3) and transmittance (H, W).
    ``hand_backward=False`` lets autograd differentiate the same maths (for checking)."""
    plan = plan_tiles(proj.box, width, height, tile_size, tile_capacity, chunk,
                      proj.mean2d.dtype)
    table = gaussian_table(proj)
    if hand_backward:
        color, log_t = CompositeFunction.apply(table, plan)
    else:
        color, log_t = composite_autograd(table, plan)
    lists, ts = plan.lists, tile_size

    def untile(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(lists.tiles_y, lists.tiles_x, ts, ts, *t.shape[2:])
        t = t.transpose(1, 2).reshape(lists.tiles_y * ts, lists.tiles_x * ts, *t.shape[4:])
        return t[:height, :width]

    info = RenderInfo(drawn=len(proj.index), pairs=lists.pairs,
                      truncated_tiles=lists.truncated, tile_slots=plan.slots)
    return untile(color), untile(torch.exp(log_t)), info


def background_rgba(background, dtype: torch.dtype) -> torch.Tensor:
    """(4,) premultiplied RGBA from None (transparent), RGB (opaque) or RGBA; a tensor may
    carry gradient."""
    if background is None:
        return torch.zeros(4, dtype=dtype)
    bg = torch.as_tensor(background, dtype=dtype).reshape(-1)
    if bg.shape == (3,):
        bg = torch.cat([bg, torch.ones(1, dtype=dtype)])
    if bg.shape != (4,) or not bool(torch.isfinite(bg).all()):
        raise ValueError("background must be a finite RGB or premultiplied RGBA colour")
    return bg


def render(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
           opacities: torch.Tensor, colors: torch.Tensor, camera: Camera, background=None, *,
           tile_size: int = TILE_SIZE, tile_capacity: int | None = None,
           chunk: int = CHUNK) -> torch.Tensor:
    """(H, W, 4) premultiplied RGBA of the Gaussians seen by ``camera``, differentiable.

    means (N, 3) world metres; quats (N, 4) (w, x, y, z), normalised here; scales (N, 3)
    linear standard deviations, metres; opacities (N,) in [0, 1]; colors (N, 3) RGB or
    (N, K, 3) SH coefficients; all one floating dtype (float32 to fit, float64 to check).
    ``background``: None, RGB or premultiplied RGBA, composited under the splats.
    ``tile_capacity``: keep only each tile's front-most Gaussians (None: all of them,
    exact; see the module docstring); ``tile_size``, ``chunk``: speed only.
    """
    image, _ = render_with_info(means, quats, scales, opacities, colors, camera, background,
                                tile_size=tile_size, tile_capacity=tile_capacity, chunk=chunk)
    return image


def render_with_info(means, quats, scales, opacities, colors, camera: Camera, background=None,
                     *, tile_size: int = TILE_SIZE, tile_capacity: int | None = None,
                     chunk: int = CHUNK) -> tuple[torch.Tensor, RenderInfo]:
    """``render`` plus a ``RenderInfo`` (pairs, truncated tiles, work done)."""
    if tile_size < 1 or chunk < 1 or (tile_capacity is not None and tile_capacity < 1):
        raise ValueError("tile_size, tile_capacity and chunk must be positive")
    dtype = means.dtype
    bg = background_rgba(background, dtype)
    proj = project(means, quats, scales, opacities, colors, camera)
    h, w = camera.height, camera.width
    if h == 0 or w == 0:
        return torch.zeros((h, w, 4), dtype=dtype), RenderInfo(len(proj.index), 0, 0, 0)
    rgb, transmittance, info = rasterize(proj, w, h, tile_size=tile_size,
                                         tile_capacity=tile_capacity, chunk=chunk)
    t = transmittance[..., None]
    out = torch.cat([rgb + t * bg[:3], (1.0 - t) + t * bg[3]], dim=-1)
    if info.tile_slots == 0:  # nothing drawn: still a graph (zero gradients) for a fit's loss
        out = out + 0.0 * (proj.mean2d.sum() + proj.conic.sum() + proj.opacity.sum()
                           + proj.rgb.sum())
    return out, info

