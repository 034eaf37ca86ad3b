"""Avatars posed with torch on the cuda backend's device: the twin of ``render.gl_pose`` for
gsplat, so only the pose crosses the bus per frame.

Per avatar, once (``TorchAvatarPoser`` keeps them per ``SkinnedGaussians`` object, weakly):
the template (rest vertices, blendshapes, skin indices and weights, triangles, rest doubled
areas) and the Gaussians' bindings (triangle, barycentric point, offset along the normal,
local rotation and scales, opacities, albedo / colours, shading). Avatars on one template
share its tensors.

Per frame: the ``SkinPose`` (bone transforms from the CPU forward kinematics, J x 12 floats,
and the face weights) goes to the device, which runs the maths of the reference poser
``render.skinned.pose_gaussians``:

1. rest vertices + active blendshapes (float32), then linear blend skinning (float32);
2. per-triangle frames (x along the first edge, z along the normal, y = z x x) and doubled
   areas in float64, as numpy does, so the rotations match it to float32 rounding instead of
   the 5e-4 a float32 frame gives on millimetre triangles;
3. means at the barycentric point + offset along the normal, rotation = frame quaternion
   (Shepperd, w >= 0) * local quaternion, scales grown by sqrt(area ratio), colours baked or
   Lambert-lit (albedo * (ambient + diffuse max(0, n . light)), clamped) in avatar space;
4. the avatar's rigid placement ``world_from_avatar`` (means and rotations), as
   ``render.skinned.place_gaussians`` does.

The result is ``DeviceGaussians``: the renderer's arrays as tensors on the device, which
``render.cuda.CudaBackend`` rasterises as they are. ``to_gaussians()`` brings them to host
memory (tests; the reference renderer). torch is imported when a poser is made.

An avatar the poser cannot take (Lambert shading of spherical harmonics, skin indices beyond
the bones, bad transforms) raises ``RenderError`` saying why; ``DevicePoser``, the cuda
backend's poser, then poses that avatar with numpy and says so once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from common.rotation import matrix_to_quat
from render.errors import RenderError
from render.gaussians import SH_COUNTS, Gaussians
from render.skinned import SkinnedGaussians, SkinPose, pose_gaussians


@dataclass(eq=False)
class DeviceGaussians:
    """Gaussians as torch tensors on one device (float32): ``means`` (N, 3), ``quats`` (N, 4)
    wxyz, ``scales`` (N, 3), ``opacities`` (N,), ``colors`` (N, 3) or (N, K, 3) SH."""

    means: object
    quats: object
    scales: object
    opacities: object
    colors: object

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int | None:
        return None if self.colors.dim() == 2 else SH_COUNTS[int(self.colors.shape[1])]

    def to_gaussians(self) -> Gaussians:
        """The same Gaussians in host memory."""
        return Gaussians(*(t.detach().cpu().numpy() for t in
                           (self.means, self.quats, self.scales, self.opacities, self.colors)))

    @staticmethod
    def concatenate(parts: list[DeviceGaussians]) -> DeviceGaussians:
        """One cloud from several (one colour form: RGB or one SH degree)."""
        import torch

        if len({p.colors.shape[1:] for p in parts}) > 1:
            raise RenderError("cannot draw avatars of different colour forms together")
        return DeviceGaussians(*(torch.cat([getattr(p, name) for p in parts]) for name in
                                 ("means", "quats", "scales", "opacities", "colors")))


def place(gaussians: DeviceGaussians, world_from_avatar) -> DeviceGaussians:
    """The Gaussians moved rigidly by ``world_from_avatar`` (4, 4): means and rotations."""
    import torch

    matrix = np.asarray(world_from_avatar, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise RenderError("world_from_avatar must be a finite 4x4 matrix")
    dev = gaussians.means.device
    with torch.no_grad():
        rotation = torch.from_numpy(matrix[:3, :3].astype(np.float32)).to(dev)
        offset = torch.from_numpy(matrix[:3, 3].astype(np.float32)).to(dev)
        turn = torch.from_numpy(matrix_to_quat(matrix[:3, :3])).to(dev)
        quats = _quat_multiply(turn.expand(len(gaussians), 4), gaussians.quats.double())
        return DeviceGaussians(gaussians.means @ rotation.T + offset, quats.float(),
                               gaussians.scales, gaussians.opacities, gaussians.colors)


class DevicePoser:
    """The cuda backend's poser (``render.skinned.Poser``): ``pose(skinned, pose) ->
    DeviceGaussians`` by a ``TorchAvatarPoser``, or, for an avatar it refuses, the numpy
    reference sent to the device (``log`` says why, once per avatar). ``refused`` maps
    avatars to the reason."""

    where = "device"

    def __init__(self, poser: TorchAvatarPoser, log=None):
        self.poser = poser
        self.log = log or (lambda line: None)
        self.refused = weakref.WeakKeyDictionary()

    def pose(self, skinned: SkinnedGaussians, pose: SkinPose) -> DeviceGaussians:
        if skinned not in self.refused:
            try:
                return self.poser.pose(skinned, pose)
            except RenderError as exc:
                self.refused[skinned] = str(exc)
                self.log(f"posing an avatar of {len(skinned)} Gaussians in numpy: the device "
                         f"poser cannot take it ({exc})")
        torch = self.poser._torch
        g = pose_gaussians(skinned, pose)
        dev = self.poser.device
        return DeviceGaussians(*(torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in
                                 (g.means, g.quats, g.scales, g.opacities, g.colors)))

    def combine(self, skinned: tuple, parts: list) -> DeviceGaussians | Gaussians:
        if not parts:
            return Gaussians.empty()
        return parts[0] if len(parts) == 1 else DeviceGaussians.concatenate(parts)


class TorchAvatarPoser:
    """``pose(skinned, pose) -> DeviceGaussians`` on ``device``."""

    def __init__(self, device="cpu"):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self._avatars = weakref.WeakKeyDictionary()  # SkinnedGaussians -> its static tensors
        self._templates: dict[tuple, tuple[tuple, dict]] = {}  # ids -> (arrays, tensors)

    def pose(self, skinned: SkinnedGaussians, pose: SkinPose) -> DeviceGaussians:
        """The avatar's Gaussians for one pose, placed by ``pose.world_from_avatar`` (4, 4)
        rigid (None: identity). Raises ``RenderError`` for an avatar it cannot take."""
        torch = self._torch
        static = self.upload(skinned)
        template = static["template"]
        transforms = np.asarray(pose.transforms, dtype=np.float32)
        if transforms.ndim != 3 or transforms.shape[1:] != (3, 4) \
                or len(transforms) < template["bones"]:
            raise RenderError(f"bone transforms of shape {transforms.shape}; the template "
                              f"skins with {template['bones']} bones")
        if not np.all(np.isfinite(transforms)):
            raise RenderError("bone transforms must be finite")
        weights = np.asarray(pose.blendshape_weights, dtype=np.float32).reshape(-1)
        active = np.flatnonzero(weights)
        dev = self.device
        correctives = static["correctives"]
        if correctives is not None:
            features = np.asarray(pose.features if pose.features is not None else [],
                                  dtype=np.float32).reshape(-1)
            if features.shape != (correctives[2],) or not np.all(np.isfinite(features)):
                raise RenderError(f"an avatar with correctives needs {correctives[2]} finite "
                                  "pose features")
        with torch.no_grad():
            vertices = template["vertices"]
            if correctives is not None:
                index, basis, _ = correctives
                values = torch.from_numpy(features).to(dev)[index]  # (V, M)
                vertices = vertices + torch.einsum("vm,vmk->vk", values, basis)
            if active.size:
                if active.max() >= len(template["blendshapes"]):
                    raise RenderError(f"face weight {int(active.max())} has no blendshape "
                                      f"(the template has {len(template['blendshapes'])})")
                w = torch.from_numpy(weights[active]).to(dev)
                vertices = vertices + torch.tensordot(
                    w, template["blendshapes"][torch.from_numpy(active).to(dev)], dims=1)
            bones = torch.from_numpy(transforms).to(dev)
            blended = torch.einsum("vk,vkij->vij", template["skin_weights"],
                                   bones[template["skin_indices"]])
            posed = torch.einsum("vij,vj->vi", blended[:, :, :3], vertices) + blended[:, :, 3]

            frames, area2 = _triangle_frames(torch, posed, template["faces"])
            face = static["binding_face"]
            stretch = torch.sqrt(area2 / template["rest_area2"].clamp_min(1e-12)).float()
            bound = frames[face]  # each Gaussian's triangle frame, gathered once
            face_quats = _matrix_to_quat(torch, bound).float()
            normals = bound[:, :, 2].float()
            corners = posed[static["binding_corners"]]  # (N, 3, 3)
            means = torch.einsum("nk,nkj->nj", static["bary"], corners) \
                + static["offset"][:, None] * normals
            quats = _quat_multiply(face_quats.double(), static["local_quats"].double()).float()
            scales = static["local_scales"] * stretch[face][:, None]
            colors = static["colors"]
            if static["lambert"] is not None:
                light, ambient, diffuse = static["lambert"]
                lit = ambient + diffuse * torch.clamp(normals @ light, 0, 1)
                colors = torch.clamp(colors * lit[:, None], 0, 1)
        opacities = static["opacities"]
        if pose.opacity != 1.0:
            opacities = opacities * float(pose.opacity)
        posed = DeviceGaussians(means, quats, scales, opacities, colors)
        return posed if pose.world_from_avatar is None else place(posed, pose.world_from_avatar)

    def upload(self, binding: SkinnedGaussians) -> dict:
        """The avatar's static tensors, made on first use and kept while ``binding`` lives."""
        kept = self._avatars.get(binding)
        if kept is not None:
            return kept
        if binding.lambert and binding.colors.ndim != 2:
            raise RenderError("Lambert shading needs albedo colours (N, 3), not spherical "
                              "harmonics")
        torch, dev = self._torch, self.device

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)

        template = self._template(binding)
        faces = np.asarray(binding.faces)
        face = np.asarray(binding.binding_face, dtype=np.int64)
        if face.size and (face.min() < 0 or face.max() >= len(faces)):
            raise RenderError("a Gaussian is bound to a triangle the template lacks")
        static = {
            "template": template, "binding_face": t(face, torch.long),
            "binding_corners": t(faces[face], torch.long), "bary": t(binding.binding_bary),
            "offset": t(binding.binding_offset), "local_quats": t(binding.local_quats),
            "local_scales": t(binding.local_scales), "opacities": t(binding.opacities),
            "colors": t(binding.colors),
            "lambert": (t(np.asarray(binding.light_direction, dtype=np.float32)),
                     float(binding.ambient), float(binding.diffuse)) if binding.lambert else None,
            "correctives": None if binding.correctives is None else (
                t(binding.correctives.index, torch.long), t(binding.correctives.basis),
                binding.correctives.feature_count)}
        self._avatars[binding] = static
        return static

    def _template(self, binding) -> dict:
        arrays = binding.template_arrays
        key = tuple(map(id, arrays))
        kept = self._templates.get(key)
        if kept is not None and all(a is b for a, b in zip(kept[0], arrays)):
            return kept[1]
        torch, dev = self._torch, self.device
        vertices = np.asarray(binding.vertices, dtype=np.float32)
        faces = np.asarray(binding.faces, dtype=np.int64)
        skin_indices = np.asarray(binding.skin_indices, dtype=np.int64)
        if skin_indices.size and skin_indices.min() < 0:
            raise RenderError("negative skin index in the template")
        tensors = {
            "vertices": torch.as_tensor(vertices, device=dev),
            "blendshapes": torch.as_tensor(np.asarray(binding.blendshapes, np.float32), device=dev),
            "skin_indices": torch.as_tensor(skin_indices, device=dev),
            "skin_weights": torch.as_tensor(np.asarray(binding.skin_weights, np.float32),
                                         device=dev),
            "faces": torch.as_tensor(faces, device=dev),
            "rest_area2": torch.as_tensor(binding.rest_area2, device=dev),
            "bones": int(skin_indices.max()) + 1 if skin_indices.size else 0}
        self._templates[key] = (arrays, tensors)
        return tensors

    def forget(self, skinned: SkinnedGaussians) -> None:
        """Drop an avatar's tensors now (they also go when ``skinned`` is freed)."""
        self._avatars.pop(skinned, None)

    def release(self) -> None:
        self._avatars = weakref.WeakKeyDictionary()
        self._templates.clear()


def _triangle_frames(torch, vertices, faces):
    """(F, 3, 3) frames (columns x, y, z) and (F,) doubled areas, in float64 (as numpy's
    ``render.skinned.triangle_frames``)."""
    v = vertices.double()
    v0, v1, v2 = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    normal = torch.linalg.cross(e1, e2)
    area2 = torch.linalg.norm(normal, dim=1)
    z = normal / area2.clamp_min(1e-12)[:, None]
    x = e1 / torch.linalg.norm(e1, dim=1).clamp_min(1e-12)[:, None]
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z], dim=2), area2


def _matrix_to_quat(torch, m):
    """wxyz (..., 4), w >= 0, of rotation matrices (M, 3, 3): Shepperd's method with the
    candidate choice of ``common.rotation.matrix_to_quat`` (first largest of trace and the
    diagonal), so both pick the same formula."""
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    pick = torch.argmax(torch.stack([trace, m00, m11, m22], dim=1), dim=1)
    d21, d02, d10 = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]
    s01, s02, s12 = m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1]
    s = torch.stack([1.0 + trace, 1.0 + m00 - m11 - m22, 1.0 + m11 - m00 - m22,
                     1.0 + m22 - m00 - m11], dim=1).clamp_min(0.0).sqrt() * 2
    s = s.gather(1, pick[:, None])[:, 0].clamp_min(1e-300)  # the picked one is >= 1
    quarter = 0.25 * s
    cases = torch.stack([
        torch.stack([quarter, d21 / s, d02 / s, d10 / s], 1),
        torch.stack([d21 / s, quarter, s01 / s, s02 / s], 1),
        torch.stack([d02 / s, s01 / s, quarter, s12 / s], 1),
        torch.stack([d10 / s, s02 / s, s12 / s, quarter], 1)], dim=1)
    q = cases.gather(1, pick[:, None, None].expand(-1, 1, 4))[:, 0]
    q = torch.where(q[:, :1] < 0, -q, q)
    norm = torch.linalg.norm(q, dim=1, keepdim=True)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=q.dtype, device=q.device)
    return torch.where(norm > 1e-12, q / norm.clamp_min(1e-12), identity)


def _quat_multiply(a, b):
    """Hamilton product a * b, wxyz (N, 4) tensors."""
    import torch

    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)
