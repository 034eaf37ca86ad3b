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
    keep, means_k, means_cam, z = keep[in_depth], means_k[in_depth], means_cam[in_depth], z[in_depth]

    m = rot @ quats_to_matrices(quats[keep]) * scales[keep][:, None, :]
    cov_cam = m @ m.transpose(1, 2)

    w, h, fx, fy = camera.width, camera.height, camera.fx, camera.fy
    lim_x_pos = (w - camera.cx) / fx + FRUSTUM_MARGIN * 0.5 * w / fx
    lim_x_neg = camera.cx / fx + FRUSTUM_MARGIN * 0.5 * w / fx
    lim_y_pos = (h - camera.cy) / fy + FRUSTUM_MARGIN * 0.5 * h / fy
    lim_y_neg = camera.cy / fy + FRUSTUM_MARGIN * 0.5 * h / fy
    tx = (means_cam[:, 0] / z).clamp(-lim_x_neg, lim_x_pos) * z
    ty = (means_cam[:, 1] / z).clamp(-lim_y_neg, lim_y_pos) * z
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z),
                       zero, fy / z, -fy * ty / (z * z)], dim=1).reshape(-1, 2, 3)
    cov2d = jac @ cov_cam @ jac.transpose(1, 2)
    a = cov2d[:, 0, 0] + DILATION_PX2
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION_PX2
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
    """Per tile its Gaussians, front to back: ``index`` (n_tiles, K) int64 into the
    projected Gaussians, padded with M (a slot that draws nothing); ``count`` (n_tiles,)."""

    index: torch.Tensor
    count: torch.Tensor
    tiles_x: int
    tiles_y: int
    pairs: int
    truncated: int


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
    tile = (ty0[gauss] + offset // sx) * tiles_x + tx0[gauss] + offset % sx
    # Pairs were made in depth order: a stable sort by tile keeps each tile's front to back.
    order = torch.argsort(tile, stable=True)
    tile, gauss = tile[order], gauss[order]
    per_tile = torch.bincount(tile, minlength=n_tiles)
    if tile_capacity is None:
        tile_capacity = max(1, int(per_tile.max()) if pairs else 1)
    start = torch.cumsum(per_tile, 0) - per_tile
    rank = torch.arange(pairs) - start[tile]
    keep = rank < tile_capacity
    k = int(min(tile_capacity, int(per_tile.max()) if pairs else 0))
    index = torch.full((n_tiles, max(k, 1)), m, dtype=torch.int64)
    index[tile[keep], rank[keep]] = gauss[keep]
    count = per_tile.clamp(max=tile_capacity)
    return TileLists(index, count, tiles_x, tiles_y, pairs,
                     int((per_tile > tile_capacity).sum()))


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


def rasterize(proj: Projected, width: int, height: int, *, tile_size: int = TILE_SIZE,
              tile_capacity: int | None = None,
              chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor, RenderInfo]:
    """Composite projected Gaussians: premultiplied rgb (H, W, 3) and transmittance (H, W)."""
    dtype = proj.mean2d.dtype
    m = len(proj.index)
    with torch.no_grad():
        lists = bin_tiles(proj.box, width, height, tile_size, tile_capacity)
    n_tiles, p = lists.tiles_x * lists.tiles_y, tile_size * tile_size
    ts = tile_size
    tile_cx = (torch.arange(n_tiles) % lists.tiles_x * ts + ts / 2).to(dtype)
    tile_cy = (torch.arange(n_tiles) // lists.tiles_x * ts + ts / 2).to(dtype)

    # Per-Gaussian quantities padded with one slot that draws nothing (index m).
    pad = lambda t, v: torch.cat([t, torch.full((1,) + t.shape[1:], v, dtype=dtype)])
    mean2d = pad(proj.mean2d, 0.0)
    conic = pad(proj.conic, 0.0)
    log_opacity = pad(torch.log(proj.opacity), LOG_OPACITY_NONE)
    rgb = pad(proj.rgb, 0.0)
    phi = pixel_monomials(ts, dtype)

    # Pixels of the last row and column of tiles that fall off the image start done.
    with torch.no_grad():
        local = torch.arange(p)
        px = (torch.arange(n_tiles) % lists.tiles_x * ts)[:, None] + local % ts
        py = (torch.arange(n_tiles) // lists.tiles_x * ts)[:, None] + local // ts
        done = (px >= width) | (py >= height)
    log_t = torch.zeros((n_tiles, p), dtype=dtype)
    color = torch.zeros((n_tiles, p, 3), dtype=dtype)
    steps = 0
    for c0, c1 in chunk_bounds(lists.index.shape[1], chunk):
        active = torch.nonzero((lists.count > c0) & ~done.all(1)).squeeze(1)
        if len(active) == 0:
            break
        steps += len(active) * (c1 - c0)
        idx = lists.index[active, c0:c1]  # (A, C)
        mx = mean2d[idx, 0] - tile_cx[active, None]
        my = mean2d[idx, 1] - tile_cy[active, None]
        ca, cb, cc = conic[idx].unbind(-1)
        coeff = torch.stack([
            -0.5 * ca, -0.5 * cc, -cb, ca * mx + cb * my, cc * my + cb * mx,
            log_opacity[idx] - 0.5 * (ca * mx * mx + 2 * cb * mx * my + cc * my * my),
        ], dim=-1)  # (A, C, 6)
        alpha = torch.exp(coeff @ phi).clamp(max=ALPHA_MAX)  # (A, C, P)
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        log_keep = torch.log1p(-alpha)
        log_t_in = log_t[active]
        log_t_after = log_t_in[:, None, :] + torch.cumsum(log_keep, dim=1)
        with torch.no_grad():
            passes = (log_t_after >= math.log(T_MIN)) & ~done[active][:, None, :]
            done[active] |= ~passes[:, -1, :]
        weight = torch.where(passes, alpha * torch.exp(log_t_after - log_keep),
                             torch.zeros_like(alpha))
        contrib = weight.transpose(1, 2) @ rgb[idx]  # (A, P, 3)
        log_t_out = log_t_in + torch.where(passes, log_keep, torch.zeros_like(log_keep)).sum(1)
        log_t = log_t.index_copy(0, active, log_t_out)
        color = color.index_add(0, active, contrib)

    def untile(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(lists.tiles_y, lists.tiles_x, ts, ts, *t.shape[2:])
        t = t.transpose(1, 2).reshape(lists.tiles_y * ts, lists.tiles_x * ts, *t.shape[4:])
        return t[:height, :width]

    info = RenderInfo(drawn=m, pairs=lists.pairs, truncated_tiles=lists.truncated,
                      tile_slots=steps)
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

