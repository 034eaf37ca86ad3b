"""Appearance fitting: an avatar's Gaussians refined against video frames with the
differentiable torch splatter (``render.torch_splat``), on the CPU.

The pieces ``avatar create`` builds on (the shape and the correctives are fitted by their
own modules, avatar.shape and avatar.corrective_fit; Gaussians beyond the surface are grown
by avatar.grow):

- ``fit_frame_cameras``: one pinhole camera per frame that frames the posed avatar like the
  clip, from 3D points on the posed avatar and the 2D landmarks they should land on (one
  focal length for the clip, a principal point per frame: the person's shift in the frame).
- ``AppearanceModel``: trainable per-Gaussian colours (spherical harmonics), opacities,
  scales and small offsets (in each Gaussian's triangle frame, so they follow the pose)
  for a subset of an avatar's Gaussians; ``posed(vertices)`` gives the torch tensors the
  splatter takes for one posed mesh.
- ``visible_gaussians``: which Gaussians any of some views draw (the rest cannot be fitted).
- ``FitFrame`` + ``fit_appearance``: the optimisation loop (masked L1 on colour, the
  silhouette on alpha), with per-stage timings, and optionally ``PoseCorrections``: small
  per-frame turns and shifts of the body and turns of the head, fitted for the training
  frames only (held-out frames keep their landmark cameras, as a receiver would).

torch is imported by this module (the ``create`` extra), never by the core.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from avatar.avatar import Avatar
from avatar.grow import head_weights_of_vertices
from render.skinned import gaussians_on_mesh, triangle_frames
from render import torch_splat
from render.camera import Camera
from render.reference import SH_C0

SH_DEGREE = 1
MAX_OFFSET_M = 0.01  # offsets are clamped to this distance from the template surface
# Scales may grow or shrink by at most this factor: unbounded, a 10-minute fit of jwpIntro.mp4
# grew one Gaussian to 0.21 m, past what an .lca may hold (avatar.lca's render bound). The fit
# needs the room: bounded at 4x the same fit scored 18.1 dB held out, at 12x 23.0 dB
# (docs/BENCHMARKS.md, "avatar create with every stage").
MAX_SCALE_GROWTH = 12.0


def fit_frame_cameras(points_world: list[np.ndarray | None],
                      points_image: list[np.ndarray | None], base: Camera,
                      weights: np.ndarray | None = None) -> tuple[list[Camera], float]:
    """Cameras (one per frame) and the RMS landmark error (pixels) of the fit.

    ``points_world[f]`` (K, 3) points on the avatar posed for frame f, world metres;
    ``points_image[f]`` (K, 2) where the clip shows them, pixels; None for a frame without
    landmarks (it takes the nearest fitted frame's shift). ``weights`` (K,) per point.
    ``base``: the camera's pose and image size; the fit is a similarity of its image plane,
    a scale s shared by the clip and a shift t_f per frame (least squares on
    s p + t_f ~ l): fx, fy scale by s, the principal point becomes s c + t_f.
    """
    n = len(points_world)
    if n == 0 or len(points_image) != n:
        raise ValueError("need as many image point sets as world point sets, at least one")
    fitted = [f for f in range(n) if points_world[f] is not None and points_image[f] is not None]
    if not fitted:
        raise ValueError("no frame has landmarks to fit a camera to")
    cv = base.cv_from_world
    projected, observed = {}, {}
    for f in fitted:
        cam = points_world[f] @ cv[:3, :3].T + cv[:3, 3]
        if np.any(cam[:, 2] <= base.near):
            raise ValueError(f"frame {f}: points behind the base camera")
        projected[f] = np.stack([base.fx * cam[:, 0] / cam[:, 2] + base.cx,
                                 base.fy * cam[:, 1] / cam[:, 2] + base.cy], axis=1)
        observed[f] = np.asarray(points_image[f], dtype=np.float64)[:, :2]
    k = len(next(iter(projected.values())))
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    # For a given s, each t_f is the weighted mean of l - s p; s then solves the centred
    # problem in closed form.
    num = den = 0.0
    for f in fitted:
        p_c = projected[f] - w @ projected[f]
        l_c = observed[f] - w @ observed[f]
        num += float(np.sum(w[:, None] * p_c * l_c))
        den += float(np.sum(w[:, None] * p_c * p_c))
    scale = num / den
    shifts = {f: w @ (observed[f] - scale * projected[f]) for f in fitted}
    sq = [np.sum(w[:, None] * (scale * projected[f] + shifts[f] - observed[f]) ** 2)
          for f in fitted]
    rms = math.sqrt(float(np.mean(sq)))
    order = np.array(fitted)
    cameras = []
    for f in range(n):
        t = shifts[int(order[np.argmin(np.abs(order - f))])]
        cameras.append(Camera(base.camera_from_world, base.width, base.height,
                              base.fx * scale, base.fy * scale, base.cx * scale + t[0],
                              base.cy * scale + t[1], base.near, base.far))
    return cameras, rms


@dataclass
class PosedBase:
    """The avatar's own posing of the model's Gaussians for one mesh: means (N, 3), quats
    (N, 4), scales (N, 3), and each Gaussian's triangle frame (N, 3, 3) (columns x, y, z)."""

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    frames: np.ndarray


class AppearanceModel:
    """Trainable appearance of ``index`` (N,) Gaussians of ``avatar`` (torch float32).

    Parameters (``parameters()``): ``sh_dc`` (N, 1, 3) and ``sh_rest`` (N, 3, 3), the degree-1
    SH coefficients (apart: the higher band learns more slowly); ``opacity_logit``
    (N,); ``log_scale`` (N, 3) added to the log of the posed scales, clamped to a factor of
    ``MAX_SCALE_GROWTH`` either way; ``offset`` (N, 3) metres in the triangle frame, clamped
    to ``MAX_OFFSET_M``; ``rotation`` (N, 3) an axis-angle turn of each Gaussian in its own
    frame (its local quaternion times this turn, so it holds in every pose).
    """

    def __init__(self, avatar: Avatar, index: np.ndarray, colors: np.ndarray | None = None):
        self.avatar = avatar
        self.index = np.asarray(index, dtype=np.int64)
        n = len(self.index)
        rgb = avatar.data.colors[self.index] if colors is None else colors
        if rgb.shape != (n, 3):
            raise ValueError(f"colors must be ({n}, 3), got {rgb.shape}")
        sh = np.zeros((n, (SH_DEGREE + 1) ** 2, 3), np.float32)
        sh[:, 0] = (rgb - 0.5) / SH_C0
        o = np.clip(avatar.data.opacities[self.index], 0.02, 0.98)
        self.sh_dc = torch.tensor(sh[:, :1], requires_grad=True)
        self.sh_rest = torch.tensor(sh[:, 1:], requires_grad=True)
        self.opacity_logit = torch.tensor(np.log(o / (1 - o)), requires_grad=True)
        self.log_scale = torch.zeros((n, 3), requires_grad=True)
        self.offset = torch.zeros((n, 3), requires_grad=True)
        self.rotation = torch.zeros((n, 3), requires_grad=True)
        self._skinned = avatar.skinned.subset(self.index)  # posing only these: 3x faster

    def __len__(self) -> int:
        return len(self.index)

    def parameters(self) -> dict[str, torch.Tensor]:
        return {"sh_dc": self.sh_dc, "sh_rest": self.sh_rest, "opacity_logit": self.opacity_logit,
                "log_scale": self.log_scale, "offset": self.offset, "rotation": self.rotation}

    def base(self, vertices: np.ndarray) -> PosedBase:
        """The avatar's posing (``render.skinned.gaussians_on_mesh``) of the model's Gaussians on a
        posed mesh (V, 3), with their triangle frames."""
        g = gaussians_on_mesh(self._skinned, vertices)
        frames, _ = triangle_frames(vertices, self.avatar.template.faces)
        faces = self._skinned.binding_face
        return PosedBase(g.means, g.quats, g.scales, frames[faces].astype(np.float32))

    def posed(self, base: PosedBase) -> tuple[torch.Tensor, ...]:
        """(means, quats, scales, opacities, sh) for ``torch_splat.render``."""
        offset = self.offset.clamp(-MAX_OFFSET_M, MAX_OFFSET_M)
        means = torch.from_numpy(base.means) + torch.einsum(
            "nij,nj->ni", torch.from_numpy(base.frames), offset)
        scales = torch.from_numpy(base.scales) * torch.exp(self._log_scale())
        quats = quat_product(torch.from_numpy(base.quats), quat_of_rotvec(self.rotation))
        return (means, quats, scales, torch.sigmoid(self.opacity_logit),
                torch.cat([self.sh_dc, self.sh_rest], dim=1))

    def _log_scale(self) -> torch.Tensor:
        bound = math.log(MAX_SCALE_GROWTH)
        return self.log_scale.clamp(-bound, bound)

    def state(self) -> dict[str, np.ndarray]:
        """The fitted values as numpy arrays (for an .lca writer)."""
        with torch.no_grad():
            return {"index": self.index,
                    "sh": torch.cat([self.sh_dc, self.sh_rest], dim=1).numpy().copy(),
                    "opacities": torch.sigmoid(self.opacity_logit).numpy().copy(),
                    "scale_factors": torch.exp(self._log_scale()).numpy().copy(),
                    "offsets": self.offset.clamp(-MAX_OFFSET_M, MAX_OFFSET_M).numpy().copy(),
                    "turns": quat_of_rotvec(self.rotation).numpy().copy()}


def visible_gaussians(avatar: Avatar, views: list[tuple[np.ndarray, Camera]],
                      **render_options) -> np.ndarray:
    """Indices of the avatar's Gaussians that add to some pixel in any of ``views``
    ((posed vertices (V, 3), camera) pairs): those with a non-zero gradient of the summed
    alpha with respect to their opacity."""
    seen = np.zeros(len(avatar), bool)
    for vertices, camera in views:
        g = gaussians_on_mesh(avatar.skinned, vertices)
        opacities = torch.tensor(g.opacities, requires_grad=True)
        image = torch_splat.render(torch.from_numpy(g.means), torch.from_numpy(g.quats),
                                   torch.from_numpy(g.scales), opacities,
                                   torch.from_numpy(g.colors), camera, **render_options)
        image[..., 3].sum().backward()
        seen |= (opacities.grad != 0).numpy()
    return np.flatnonzero(seen)


def projected_colors(model: AppearanceModel, views: list[tuple[PosedBase, Camera, np.ndarray,
                                                                  np.ndarray]]) -> np.ndarray:
    """(N, 3) initial colours: the mean over ``views`` ((base, camera, image (H, W, 3) float,
    mask (H, W) bool)) of the image at each Gaussian's projected centre where that lands in
    the mask; the avatar's own colour where it never does. No visibility test yet (a hidden
    Gaussian takes the colour of what hides it)."""
    n = len(model)
    total, count = np.zeros((n, 3)), np.zeros(n)
    for base, camera, image, mask in views:
        cv = camera.cv_from_world
        cam = base.means @ cv[:3, :3].T + cv[:3, 3]
        z = np.maximum(cam[:, 2], 1e-6)
        col = np.floor(camera.fx * cam[:, 0] / z + camera.cx).astype(np.int64)
        row = np.floor(camera.fy * cam[:, 1] / z + camera.cy).astype(np.int64)
        inside = (cam[:, 2] > camera.near) & (col >= 0) & (col < camera.width) & (row >= 0) \
            & (row < camera.height)
        inside[inside] &= mask[row[inside], col[inside]]
        total[inside] += image[row[inside], col[inside]]
        count[inside] += 1
    own = model.avatar.data.colors[model.index].astype(np.float64)
    return np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], own).astype(
        np.float32)


DEPTH_TOLERANCE_M = 0.015  # a Gaussian this far behind the surface a pixel shows is hidden
MIN_COSINE = 0.2  # surfaces seen more obliquely than about 78 degrees give no colour


def visible_colors(model: AppearanceModel, views: list[tuple[PosedBase, Camera, np.ndarray,
                                                               np.ndarray]],
                   **render_options) -> tuple[np.ndarray, np.ndarray]:
    """Projective texturing with visibility: ((N, 3) colours, (N,) summed weights; weight 0
    where no view saw the Gaussian). Per view ((base, camera, image (H, W, 3) float, mask
    (H, W) bool)): a depth map from the splatter (the Gaussians' camera depth composited
    like a colour, over their alpha) is the z-buffer; a Gaussian whose centre lies more than
    ``DEPTH_TOLERANCE_M`` behind the depth at its pixel is hidden. A visible one takes the
    image's colour at its centre (bilinear), where the eroded person mask covers it,
    weighted by the squared cosine between its surface normal and the direction to the
    camera (0 under ``MIN_COSINE``); the colours are the weighted mean over the views."""
    from scipy.ndimage import binary_erosion

    n = len(model)
    total, weight = np.zeros((n, 3)), np.zeros(n)
    for base, camera, image, mask in views:
        cv = camera.cv_from_world
        cam = base.means @ cv[:3, :3].T + cv[:3, 3]
        z = cam[:, 2].astype(np.float32)
        with torch.no_grad():
            _, quats, scales, opacities, _ = model.posed(base)
            depth_rgba = torch_splat.render(
                torch.from_numpy(base.means), quats, scales, opacities,
                torch.from_numpy(np.repeat(z[:, None], 3, axis=1)), camera,
                **render_options).numpy()
        alpha = depth_rgba[..., 3]
        depth = np.where(alpha > 0.5, depth_rgba[..., 0] / np.maximum(alpha, 1e-6), np.inf)
        safe_z = np.maximum(z, 1e-6)
        x = camera.fx * cam[:, 0] / safe_z + camera.cx - 0.5  # pixel centres at +0.5
        y = camera.fy * cam[:, 1] / safe_z + camera.cy - 0.5
        h, w = mask.shape
        inside = (z > camera.near) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        col = np.clip(np.round(x).astype(np.int64), 0, w - 1)
        row = np.clip(np.round(y).astype(np.int64), 0, h - 1)
        core = binary_erosion(mask, iterations=1)
        inside &= core[row, col] & (z <= depth[row, col] + DEPTH_TOLERANCE_M)
        to_camera = camera.position[None, :] - base.means
        to_camera /= np.maximum(np.linalg.norm(to_camera, axis=1, keepdims=True), 1e-9)
        cosine = np.einsum("ni,ni->n", base.frames[:, :, 2], to_camera)
        w_view = np.where(inside & (cosine > MIN_COSINE), cosine ** 2, 0.0)
        k = np.flatnonzero(w_view > 0)
        x0 = np.clip(np.floor(x[k]).astype(np.int64), 0, w - 2)
        y0 = np.clip(np.floor(y[k]).astype(np.int64), 0, h - 2)
        fx, fy = (x[k] - x0)[:, None], (y[k] - y0)[:, None]
        sample = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
                  + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)
        total[k] += w_view[k, None] * sample
        weight[k] += w_view[k]
    own = model.avatar.data.colors[model.index].astype(np.float64)
    if own.ndim == 3:
        own = own[:, 0] * SH_C0 + 0.5
    colours = np.where(weight[:, None] > 0, total / np.maximum(weight, 1e-12)[:, None], own)
    return np.clip(colours, 0, 1).astype(np.float32), weight


@dataclass
class FitFrame:
    """One training view: the posed mesh (V, 3), the camera (at the training size), the
    frame (H, W, 3) float32 in [0, 1] and its person mask (H, W) bool at that size."""

    vertices: np.ndarray
    camera: Camera
    image: np.ndarray
    mask: np.ndarray


@dataclass
class FitSettings:
    """Optimisation settings: Adam learning rates per parameter, loss weights, steps."""

    steps: int = 300
    lr_sh_dc: float = 0.02
    lr_sh_rest: float = 0.001  # 3DGS: the higher bands at 1/20 of the DC's rate
    lr_opacity: float = 0.05
    lr_log_scale: float = 0.01
    lr_offset: float = 2e-4
    lr_rotation: float = 1e-3  # radians a step, each Gaussian's turn in its own frame
    silhouette_weight: float = 0.5  # mean |alpha - mask| over the image
    seed: int = 0
    time_limit_s: float | None = None  # stop after this long (at least ``min_steps`` steps)
    min_steps: int = 1
    coarse_fraction: float = 0.0  # this share of the steps (or time) on the coarse frames
    lr_final: float = 1.0  # every rate decays exponentially to this factor by the end
    pose_corrections: bool = False  # per-frame pose corrections (``PoseCorrections``)
    lr_turn: float = 0.004  # radians a step (each frame is picked only every F steps)
    lr_shift: float = 0.002  # metres a step
    correction_weight: float = 2.0  # L2 penalty per rad^2 and 10 cm^2 of a frame's correction


@dataclass
class FitLog:
    """Per-step loss and where the time went (seconds, summed over steps)."""

    losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    corrections: PoseCorrections | None = None

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def fit_splatter() -> str:
    """The differentiable splatter of the fit: "gsplat" where torch sees a CUDA device and
    gsplat is installed (the ``cuda`` extra), else "torch" (render.torch_splat, the CPU).
    ``SPLATCALL_FIT_SPLATTER=torch`` keeps the CPU splatter on a GPU machine."""
    import os
    from importlib.util import find_spec

    if os.environ.get("SPLATCALL_FIT_SPLATTER", "") == "torch":
        return "torch"
    if find_spec("gsplat") is not None and torch.cuda.is_available():
        return "gsplat"
    return "torch"


def render_model(model: AppearanceModel, base: PosedBase, camera: Camera,
                 background=None) -> torch.Tensor:
    """(H, W, 4) premultiplied RGBA of the model posed on ``base``, differentiable. With
    gsplat on a GPU (``fit_splatter``) the Gaussians go to the device for the splat and the
    image comes back (the copies are differentiable: the parameters and the loss stay on the
    CPU, so the fit is the same code either way)."""
    return splat(*model.posed(base), camera, background)


def splat(means, quats, scales, opacities, sh, camera: Camera, background=None) -> torch.Tensor:
    """``torch_splat.render``, or gsplat on the GPU where ``fit_splatter`` says so."""
    if _SPLATTER[0] is None:
        _SPLATTER[0] = fit_splatter()
    if _SPLATTER[0] == "gsplat":
        from render.cuda import differentiable_render

        on_device = [t.to("cuda") for t in (means, quats, scales, opacities, sh)]
        return differentiable_render(*on_device, camera, background).cpu()
    return torch_splat.render(means, quats, scales, opacities, sh, camera, background)


_SPLATTER: list[str | None] = [None]  # fit_splatter's answer, asked once


def head_weights(avatar: Avatar, index: np.ndarray) -> np.ndarray:
    """(N,) float32: how much of each of the Gaussians ``index`` follows the head (its
    triangle's corners' skinning weights on the head bone and its descendants, averaged)."""
    per_vertex = head_weights_of_vertices(avatar)
    faces = np.asarray(avatar.data.binding_face)[np.asarray(index)]
    return per_vertex[avatar.template.faces[faces]].mean(axis=1).astype(np.float32)


def rotation_matrices(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices of axis-angle vectors (..., 3) (Rodrigues; smooth at 0)."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-12)
    k = rotvec / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(
        *rotvec.shape[:-1], 3, 3)
    sin, cos = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=rotvec.dtype).expand_as(cross)
    return eye + sin * cross + (1 - cos) * (cross @ cross)


def quat_of_rotvec(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions (w, x, y, z) of axis-angle vectors (..., 3)."""
    theta = torch.sqrt((rotvec * rotvec).sum(-1, keepdim=True) + 1e-12)
    return torch.cat([torch.cos(theta / 2), torch.sin(theta / 2) * rotvec / theta], -1)


def quat_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


class PoseCorrections:
    """Small per-frame corrections of the training frames' poses, fitted with the appearance:
    a rigid turn (about the frame's head pivot) and shift of the whole avatar (what a
    camera error looks like) and a turn of the head about the neck, each (F, 3). The
    corrections used are the fitted ones less their mean over the frames, so they only take
    up the frames' jitter: a bias common to every frame is left to the appearance, which is
    what the held-out frames (never corrected, as a receiver cannot) see."""

    def __init__(self, count: int, head_weight: np.ndarray):
        self.body_turn = torch.zeros((count, 3), requires_grad=True)
        self.body_shift = torch.zeros((count, 3), requires_grad=True)
        self.head_turn = torch.zeros((count, 3), requires_grad=True)
        self.head_weight = torch.from_numpy(np.asarray(head_weight, np.float32))

        # Adam's moments per frame: a frame's row moves only on the steps that show it (a
        # shared torch Adam would carry every frame's momentum through the others' steps).
        self._moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in
                         self.parameters()}
        self._steps = np.zeros(count, np.int64)

    def parameters(self) -> list[torch.Tensor]:
        return [self.body_turn, self.body_shift, self.head_turn]

    def step(self, frame: int, lr_turn: float, lr_shift: float,
             betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        """One Adam step of frame ``frame``'s corrections (their gradients cleared)."""
        self._steps[frame] += 1
        t = int(self._steps[frame])
        with torch.no_grad():
            for p, lr in ((self.body_turn, lr_turn), (self.head_turn, lr_turn),
                          (self.body_shift, lr_shift)):
                if p.grad is None:
                    continue
                m, v = self._moments[id(p)]
                g = p.grad[frame]
                m[frame] = betas[0] * m[frame] + (1 - betas[0]) * g
                v[frame] = betas[1] * v[frame] + (1 - betas[1]) * g * g
                m_hat = m[frame] / (1 - betas[0] ** t)
                v_hat = v[frame] / (1 - betas[1] ** t)
                p[frame] -= lr * m_hat / (v_hat.sqrt() + eps)
                p.grad = None

    def _centred(self, value: torch.Tensor, frame: int) -> torch.Tensor:
        return value[frame] - value.mean(dim=0)

    def apply(self, frame: int, means: torch.Tensor, quats: torch.Tensor,
              head_pivot: np.ndarray, neck_pivot: np.ndarray):
        """(means, quats) of frame ``frame`` corrected."""
        neck = torch.from_numpy(np.asarray(neck_pivot, np.float32))
        head = torch.from_numpy(np.asarray(head_pivot, np.float32))
        turn = self._centred(self.head_turn, frame)
        w = self.head_weight[:, None]
        turned = (means - neck) @ rotation_matrices(turn).T + neck
        means = means + w * (turned - means)
        q_head = quat_of_rotvec(turn).expand_as(quats)
        quats = torch.where(w > 0.5, quat_product(q_head, quats), quats)
        body = self._centred(self.body_turn, frame)
        means = (means - head) @ rotation_matrices(body).T + head \
            + self._centred(self.body_shift, frame)
        quats = quat_product(quat_of_rotvec(body).expand_as(quats), quats)
        return means, quats

    def state(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {name: (v - v.mean(dim=0)).numpy().copy() for name, v in
                    (("body_turn", self.body_turn), ("body_shift", self.body_shift),
                     ("head_turn", self.head_turn))}


def pivots(vertices: np.ndarray, vertex_head_weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """(head pivot, neck pivot) of a posed mesh: the mean of the vertices that follow the
    head wholly, and of those on the neck's seam (head weight between 0.2 and 0.8)."""
    head = vertices[vertex_head_weight > 0.95].mean(axis=0)
    seam = (vertex_head_weight > 0.2) & (vertex_head_weight < 0.8)
    neck = vertices[seam].mean(axis=0) if seam.any() else head
    return head, neck


def fit_appearance(model: AppearanceModel, frames: list[FitFrame], settings: FitSettings,
                   progress=None, coarse_frames: list[FitFrame] | None = None) -> FitLog:
    """Adam over the model's parameters, one random training frame a step. Loss: the mean
    absolute colour error inside the mask (render over black) plus ``silhouette_weight``
    times the mean |alpha - mask| over the whole image. ``progress(step, loss)`` is
    called after each step. ``coarse_frames`` (the same frames at a lower resolution):
    the first ``settings.coarse_fraction`` of the steps (of the time, with a time limit)
    use them, several times cheaper a step, then the full ones."""
    if not frames:
        raise ValueError("no training frames")
    p = model.parameters()
    optimizer = torch.optim.Adam([
        {"params": [p["sh_dc"]], "lr": settings.lr_sh_dc},
        {"params": [p["sh_rest"]], "lr": settings.lr_sh_rest},
        {"params": [p["opacity_logit"]], "lr": settings.lr_opacity},
        {"params": [p["log_scale"]], "lr": settings.lr_log_scale},
        {"params": [p["offset"]], "lr": settings.lr_offset},
        {"params": [p["rotation"]], "lr": settings.lr_rotation},
    ])
    log = FitLog()
    if settings.pose_corrections:
        vertex_weight = head_weights_of_vertices(model.avatar)
        log.corrections = PoseCorrections(len(frames), head_weights(model.avatar, model.index))
        frame_pivots = [pivots(fr.vertices, vertex_weight) for fr in frames]
    base_rates = [group["lr"] for group in optimizer.param_groups]
    rng = np.random.default_rng(settings.seed)
    for step in range(settings.steps):
        pick = int(rng.integers(len(frames)))
        done = (sum(log.seconds.values()) / settings.time_limit_s if settings.time_limit_s
                else step / settings.steps)
        coarse = coarse_frames is not None and done < settings.coarse_fraction
        if settings.lr_final != 1.0:
            for group, base_lr in zip(optimizer.param_groups, base_rates):
                group["lr"] = base_lr * settings.lr_final ** min(done, 1.0)
        frame = coarse_frames[pick] if coarse else frames[pick]
        t0 = time.perf_counter()
        base = model.base(frame.vertices)
        t1 = time.perf_counter()
        means, quats, scales, opacities, sh = model.posed(base)
        if log.corrections is not None:
            means, quats = log.corrections.apply(pick, means, quats, *frame_pivots[pick])
        rgba = splat(means, quats, scales, opacities, sh, frame.camera)
        t2 = time.perf_counter()
        target = torch.from_numpy(frame.image)
        mask = torch.from_numpy(frame.mask)
        colour_error = (rgba[..., :3] - target).abs().sum(-1)
        loss = colour_error[mask].mean() / 3.0 + settings.silhouette_weight * (
            rgba[..., 3] - mask.float()).abs().mean()
        if log.corrections is not None:
            c = log.corrections
            loss = loss + settings.correction_weight * (
                c.body_turn[pick].square().sum() + c.head_turn[pick].square().sum()
                + 100.0 * c.body_shift[pick].square().sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        if log.corrections is not None:
            decay = settings.lr_final ** min(done, 1.0) if settings.lr_final != 1.0 else 1.0
            log.corrections.step(pick, settings.lr_turn * decay, settings.lr_shift * decay)
        t4 = time.perf_counter()
        log.add_time("pose", t1 - t0)
        log.add_time("render_forward", t2 - t1)
        log.add_time("loss_and_backward", t3 - t2)
        log.add_time("optimizer", t4 - t3)
        log.losses.append(loss.item())
        if progress is not None:
            progress(step, log.losses[-1])
        if (settings.time_limit_s is not None and step + 1 >= settings.min_steps
                and sum(log.seconds.values()) >= settings.time_limit_s):
            break
    return log
