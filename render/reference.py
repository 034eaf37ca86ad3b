"""The reference renderer: standard 3D Gaussian splatting in numpy, obvious before fast.

Every other backend (OpenGL, CUDA) is checked against this one, numerically.

``render(gaussians, camera, background=None) -> (H, W, 4) float32`` premultiplied RGBA.

Conventions (shared by all backends):

- Pixel (col i, row j) has its centre at (i + 0.5, j + 0.5); the image origin is the top-left
  corner; a point at OpenCV camera coordinates (x, y, z) lands at (fx x/z + cx, fy y/z + cy).
- Colours are display (sRGB-encoded) values blended as they are, like 3DGS: no linearisation.
  RGB colours are used as given; spherical harmonics (degree 0..3, 3DGS constants) are
  evaluated along the direction camera centre -> mean, plus 0.5, clamped at 0.
- Output is premultiplied: rgb = sum_i c_i a_i T_i, alpha = 1 - T_final, where
  T_i = prod_{k<i} (1 - a_k) over Gaussians in increasing camera depth. A background
  (RGB, or premultiplied RGBA) is composited under: out += T_final * background.

Per Gaussian (the culling and projection every backend must reproduce):

1. Dropped if any attribute is non-finite or a scale is not positive
   (``Gaussians.finite_mask``), if its mean has camera depth z <= near or z >= far, or if
   its footprint lies wholly outside the image.
2. 3D covariance R S S^T R^T (R from the normalised quaternion, S = diag(scales)), rotated
   into the camera; EWA: the Jacobian of the pinhole projection at the mean with x/z and y/z
   clamped to the frustum's extents plus 30 % of its half-width (as 3DGS and gsplat do),
   2D covariance + 0.3 px^2 on the diagonal (dilation); the conic is its inverse.
3. Per pixel, alpha = min(0.99, o * exp(-0.5 d^T conic d)) with d = pixel centre - projected
   mean; pairs with alpha < 1/255 are skipped. The footprint is the axis-aligned box of the
   ellipse where o * exp(-0.5 q) = 1/255 (a Gaussian with o < 1/255 draws nothing).
4. Front to back in increasing depth (ties: array order); a pixel stops, without adding
   the Gaussian that would do it, when T would fall below 1e-4, as 3DGS does.

The compositing is vectorised: Gaussians are taken in depth-ordered chunks; each chunk's
(Gaussian, pixel) pairs are enumerated inside the footprint boxes, stably sorted by pixel,
and a segmented cumulative sum of log(1 - alpha) (float64) gives each pair's transmittance.
Per-pixel T and a ``done`` flag carry from chunk to chunk, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.camera import Camera
from render.gaussians import Gaussians

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
DILATION_PX2 = 0.3
FRUSTUM_MARGIN = 0.3  # clamp x/z, y/z to the frustum extents + 30 % of its half-width

# Real spherical-harmonic constants of 3DGS (degree 0..3).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

PAIRS_PER_CHUNK = 1 << 22  # (Gaussian, pixel) pairs held at once: about 0.5 GB of temporaries


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """Real SH basis values (N, (degree+1)^2) for unit directions (N, 3), 3DGS's ordering."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    out = [np.full_like(x, SH_C0)]
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
    return np.stack(out, axis=1)


def view_colors(colors: np.ndarray, means: np.ndarray, camera_position: np.ndarray) -> np.ndarray:
    """Per-view RGB (N, 3): RGB colours as they are, SH (N, K, 3) evaluated toward the camera."""
    if colors.ndim == 2:
        return colors.astype(np.float64)
    degree = {1: 0, 4: 1, 9: 2, 16: 3}[colors.shape[1]]
    dirs = means.astype(np.float64) - camera_position[None, :]
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    rgb = np.einsum("nk,nkc->nc", sh_basis(dirs, degree), colors.astype(np.float64))
    return np.maximum(rgb + 0.5, 0.0)


def quats_to_matrices(quats: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices from (N, 4) quaternions (w, x, y, z), normalised first."""
    q = quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)


@dataclass
class Projected:
    """Gaussians projected into one camera, in increasing depth; only the drawable ones.

    index (M,) into the input Gaussians; depth (M,) camera z, metres; mean2d (M, 2) pixels;
    conic (M, 3) the inverse 2D covariance (a, b, c) for a x^2 + 2 b x y + c y^2; opacity (M,);
    rgb (M, 3); box (M, 4) int pixel ranges x0, x1, y0, y1 (inclusive-exclusive).
    """

    index: np.ndarray
    depth: np.ndarray
    mean2d: np.ndarray
    conic: np.ndarray
    opacity: np.ndarray
    rgb: np.ndarray
    box: np.ndarray


def project(gaussians: Gaussians, camera: Camera) -> Projected:
    """Cull, project (EWA) and depth-sort ``gaussians`` for ``camera`` (float64 maths)."""
    keep = np.flatnonzero(gaussians.finite_mask() & (gaussians.opacities >= ALPHA_MIN))
    cv_from_world = camera.cv_from_world
    rot, trans = cv_from_world[:3, :3], cv_from_world[:3, 3]
    means_cam = gaussians.means[keep].astype(np.float64) @ rot.T + trans
    z = means_cam[:, 2]
    in_depth = (z > camera.near) & (z < camera.far)
    keep, means_cam, z = keep[in_depth], means_cam[in_depth], z[in_depth]

    # 3D covariance in camera axes: (W R S)(W R S)^T.
    m = rot[None] @ quats_to_matrices(gaussians.quats[keep]) * gaussians.scales[keep, None, :]
    cov_cam = m @ m.transpose(0, 2, 1)

    # EWA: Jacobian of the projection at the (clamped) mean.
    w, h = camera.width, camera.height
    lim_x_pos = (w - camera.cx) / camera.fx + FRUSTUM_MARGIN * 0.5 * w / camera.fx
    lim_x_neg = camera.cx / camera.fx + FRUSTUM_MARGIN * 0.5 * w / camera.fx
    lim_y_pos = (h - camera.cy) / camera.fy + FRUSTUM_MARGIN * 0.5 * h / camera.fy
    lim_y_neg = camera.cy / camera.fy + FRUSTUM_MARGIN * 0.5 * h / camera.fy
    tx = np.clip(means_cam[:, 0] / z, -lim_x_neg, lim_x_pos) * z
    ty = np.clip(means_cam[:, 1] / z, -lim_y_neg, lim_y_pos) * z
    jac = np.zeros((len(keep), 2, 3))
    jac[:, 0, 0] = camera.fx / z
    jac[:, 0, 2] = -camera.fx * tx / (z * z)
    jac[:, 1, 1] = camera.fy / z
    jac[:, 1, 2] = -camera.fy * ty / (z * z)
    cov2d = jac @ cov_cam @ jac.transpose(0, 2, 1)
    a = cov2d[:, 0, 0] + DILATION_PX2
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION_PX2
    det = a * c - b * b
    ok = det > 0
    det = np.where(ok, det, 1.0)
    conic = np.stack([c / det, -b / det, a / det], axis=1)

    mean2d = np.stack([camera.fx * means_cam[:, 0] / z + camera.cx,
                       camera.fy * means_cam[:, 1] / z + camera.cy], axis=1)
    opacity = np.minimum(gaussians.opacities[keep].astype(np.float64), 1.0)
    # The ellipse d^T conic d = q, with o exp(-q/2) = 1/255, spans +-sqrt(q cov_xx) in x.
    level = 2.0 * np.log(np.maximum(opacity, ALPHA_MIN) / ALPHA_MIN)
    rx, ry = np.sqrt(level * a), np.sqrt(level * c)
    # Pixel centres i + 0.5 inside [mx - rx, mx + rx].
    with np.errstate(invalid="ignore"):
        x0 = np.ceil(mean2d[:, 0] - rx - 0.5)
        x1 = np.floor(mean2d[:, 0] + rx - 0.5) + 1
        y0 = np.ceil(mean2d[:, 1] - ry - 0.5)
        y1 = np.floor(mean2d[:, 1] + ry - 0.5) + 1
    ok &= np.isfinite(x0) & np.isfinite(x1) & np.isfinite(y0) & np.isfinite(y1)
    box = np.stack([np.clip(x0, 0, w), np.clip(x1, 0, w), np.clip(y0, 0, h), np.clip(y1, 0, h)],
                   axis=1)
    box = np.where(ok[:, None], box, 0).astype(np.int64)
    ok &= (box[:, 1] > box[:, 0]) & (box[:, 3] > box[:, 2])

    order = np.flatnonzero(ok)
    order = order[np.argsort(z[order], kind="stable")]
    camera_position = camera.position
    return Projected(
        index=keep[order], depth=z[order], mean2d=mean2d[order], conic=conic[order],
        opacity=opacity[order],
        rgb=view_colors(gaussians.colors[keep[order]], gaussians.means[keep[order]],
                        camera_position),
        box=box[order],
    )


def _background_rgba(background) -> np.ndarray:
    if background is None:
        return np.zeros(4)
    bg = np.asarray(background, dtype=np.float64).reshape(-1)
    if bg.shape == (3,):
        bg = np.append(bg, 1.0)
    if bg.shape != (4,) or not np.all(np.isfinite(bg)):
        raise ValueError("background must be a finite RGB or premultiplied RGBA colour")
    return bg


def render(gaussians: Gaussians, camera: Camera, background=None) -> np.ndarray:
    """Render ``gaussians`` seen by ``camera``: (H, W, 4) float32 premultiplied RGBA.

    ``background``: None (transparent), an RGB colour (opaque) or a premultiplied RGBA colour,
    composited under the splats.
    """
    bg = _background_rgba(background)
    h, w = camera.height, camera.width
    n_pixels = h * w
    color = np.zeros((n_pixels, 3))
    transmittance = np.ones(n_pixels)
    done = np.zeros(n_pixels, dtype=bool)
    if n_pixels and len(gaussians):
        proj = project(gaussians, camera)
        box = proj.box
        box_w, box_h = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
        pair_counts = box_w * box_h
        ends = np.cumsum(pair_counts)
        start = 0
        while start < len(pair_counts):
            # Take Gaussians until the pair budget is used (always at least one).
            base = ends[start - 1] if start else 0
            stop = int(np.searchsorted(ends, base + PAIRS_PER_CHUNK, side="right"))
            stop = max(stop, start + 1)
            _composite_chunk(proj, slice(start, stop), w, color, transmittance, done)
            start = stop
            if done.all():
                break
    out = np.empty((n_pixels, 4))
    out[:, :3] = color + transmittance[:, None] * bg[None, :3]
    out[:, 3] = (1.0 - transmittance) + transmittance * bg[3]
    return out.reshape(h, w, 4).astype(np.float32)


def _composite_chunk(proj: Projected, chunk: slice, width: int, color: np.ndarray,
                     transmittance: np.ndarray, done: np.ndarray) -> None:
    """Blend the depth-ordered Gaussians ``chunk`` into the per-pixel accumulators."""
    box = proj.box[chunk]
    box_w, box_h = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    counts = box_w * box_h
    total = int(counts.sum())
    if total == 0:
        return
    g = np.repeat(np.arange(len(counts)), counts)  # chunk-local Gaussian per pair
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    px = box[g, 0] + offset % box_w[g]
    py = box[g, 2] + offset // box_w[g]
    pixel = py * width + px

    dx = px + 0.5 - proj.mean2d[chunk][g, 0]
    dy = py + 0.5 - proj.mean2d[chunk][g, 1]
    conic = proj.conic[chunk][g]
    power = -0.5 * (conic[:, 0] * dx * dx + 2 * conic[:, 1] * dx * dy + conic[:, 2] * dy * dy)
    alpha = np.minimum(ALPHA_MAX, proj.opacity[chunk][g] * np.exp(np.minimum(power, 0.0)))
    use = (alpha >= ALPHA_MIN) & ~done[pixel]
    g, pixel, alpha = g[use], pixel[use], alpha[use]
    if len(pixel) == 0:
        return

    # Group pairs by pixel, keeping depth order inside a pixel (pairs were made in depth order).
    order = np.argsort(pixel, kind="stable")
    g, pixel, alpha = g[order], pixel[order], alpha[order]
    log_keep = np.log1p(-alpha)
    csum = np.cumsum(log_keep)
    seg_start = np.flatnonzero(np.r_[True, pixel[1:] != pixel[:-1]])
    seg_len = np.diff(np.r_[seg_start, len(pixel)])
    before_seg = np.repeat(csum[seg_start] - log_keep[seg_start], seg_len)
    log_t_before = np.log(transmittance[pixel]) + (csum - log_keep - before_seg)
    t_before = np.exp(log_t_before)
    t_after = np.exp(log_t_before + log_keep)
    # T only falls within a pixel, so the pairs that pass form a prefix of its segment.
    passes = t_after >= T_MIN
    stopped = pixel[~passes]
    done[stopped] = True

    weight = np.where(passes, alpha * t_before, 0.0)
    rgb = proj.rgb[chunk][g]
    for ch in range(3):
        color[:, ch] += np.bincount(pixel, weight * rgb[:, ch], minlength=len(color))
    log_t_sum = np.bincount(pixel, np.where(passes, log_keep, 0.0), minlength=len(color))
    transmittance *= np.exp(log_t_sum)
