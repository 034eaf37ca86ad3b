"""CUDA backend: gsplat's rasteriser on an NVIDIA GPU, behind the reference's signature.

``CudaBackend().render(gaussians, camera, background=None) -> (H, W, 4) float32``
premultiplied RGBA, like ``render.reference.render``. torch and gsplat are imported here
only, when the backend is made (``pip install -e .[cuda]``); without them or without a CUDA
device the constructor raises ``BackendUnavailable`` saying which.

How our conventions map onto gsplat's ``rasterization``: viewmats = ``camera.cv_from_world``
(gsplat uses OpenCV camera axes), Ks = ``camera.intrinsics``, quaternions (w, x, y, z) and
linear scales and opacities as they are, colours as RGB or SH of degree 0..3 (gsplat adds
0.5 and clamps at 0, as we do), eps2d = 0.3 px^2 dilation, near/far planes from the camera,
classic (non-antialiased) mode. gsplat's tile rasteriser sizes footprints by its own radius
rule (3 sigma, opacity-aware in recent releases) where ours is the 1/255 contour, so very
faint tails can differ; ``tests/test_cuda_render.py`` measures the agreement on a GPU.

Its ``poser`` poses avatars on the device (``render.cuda_pose.DevicePoser``: the avatar's
arrays go up once, then per frame only its ``SkinPose``), so an avatar never passes through
numpy; an avatar that poser refuses is posed in numpy and sent up (one line says why).
``render`` and ``render_device`` take ``Gaussians`` or the poser's ``DeviceGaussians``.

``render_device`` returns the image as a CUDA tensor instead: the desktop viewer and the
OpenXR target hand it to ``render.cuda_interop`` (CUDA-GL interop), which copies it into a GL
texture device to device; ``render`` brings it to host memory. The Gaussians of the last call
stay on the device, so both eyes of a frame (or frames of a still pose) send them once.
"""

from __future__ import annotations

import sys

import numpy as np

from render.errors import BackendUnavailable
from render.camera import Camera
from render.gaussians import Gaussians


class CudaBackend:
    name = "cuda"

    def __init__(self, device: str = "cuda", log=None):
        from importlib.util import find_spec

        if find_spec("torch") is not None and find_spec("gsplat") is None:
            # Said without importing torch (about a second): --backend auto asks this first.
            raise BackendUnavailable("the cuda backend needs gsplat, which is not installed "
                                     "(pip install -e '.[cuda]')")
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable("the cuda backend needs torch and gsplat "
                                     "(pip install -e '.[cuda]')") from exc
        if not torch.cuda.is_available():
            raise BackendUnavailable("the cuda backend needs an NVIDIA GPU with CUDA; "
                                     "torch sees none")
        try:
            from gsplat import rasterization
        except ImportError as exc:
            raise BackendUnavailable(f"the cuda backend needs gsplat: {exc} "
                                     "(pip install -e '.[cuda]')") from exc
        self._start(torch, rasterization, torch.device(device), log)

    def _start(self, torch, rasterization, device, log) -> None:
        """The state of a backend whose torch, rasteriser and device are settled (split from
        the checks above so tests can hand a CPU device and a stand-in rasteriser)."""
        self._torch = torch
        self._rasterization = rasterization
        self.device = device
        self._device_key = None      # the Gaussians whose tensors are on the device
        self._device_tensors = None
        self.log = log or (lambda line: print(f"cuda: {line}", file=sys.stderr, flush=True))
        self._poser = None           # render.cuda_pose.DevicePoser, made on first use

    def render(self, gaussians, camera: Camera, background=None) -> np.ndarray:
        return self.render_device(gaussians, camera, background).cpu().numpy()

    def render_device(self, gaussians, camera: Camera, background=None):
        """(H, W, 4) float32 premultiplied RGBA as a contiguous torch tensor on the GPU, top
        row first (``render``'s image before it leaves the device)."""
        torch, t = self._torch, self._tensor
        h, w = camera.height, camera.width
        bg = None
        if background is not None:
            bg = np.asarray(background, dtype=np.float32).reshape(-1)
            bg = np.append(bg, 1.0) if bg.shape == (3,) else bg
        if h == 0 or w == 0:
            return torch.zeros((h, w, 4), dtype=torch.float32, device=self.device)
        tensors = self._on_device(gaussians)
        if tensors is None:  # nothing finite to draw: the background alone
            out = torch.zeros((h, w, 4), dtype=torch.float32, device=self.device)
            return out + t(bg) if bg is not None else out
        means, quats, scales, opacities, colors, sh_degree = tensors
        with torch.no_grad():
            rgb, alpha, _ = self._rasterization(
                means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=t(camera.cv_from_world)[None], Ks=t(camera.intrinsics)[None],
                width=w, height=h, near_plane=camera.near, far_plane=camera.far,
                sh_degree=sh_degree, eps2d=0.3, rasterize_mode="classic", packed=False,
            )
            out = torch.cat([rgb[0], alpha[0]], dim=-1).float()
            if bg is not None:
                out = out + (1.0 - out[..., 3:4]) * t(bg)
        return out.contiguous()

    def _on_device(self, gaussians):
        """The finite Gaussians as device tensors, kept for the same ``gaussians`` object
        (``Gaussians`` in host memory or ``render.cuda_pose.DeviceGaussians``)."""
        if self._device_key is gaussians:
            return self._device_tensors
        if isinstance(gaussians, Gaussians):
            keep = gaussians.finite_mask()
            if not keep.any():
                tensors = None
            else:
                g = gaussians.subset(np.flatnonzero(keep)) if not keep.all() else gaussians
                t = self._tensor
                tensors = (t(g.means), t(g.quats), t(g.scales), t(np.minimum(g.opacities, 1.0)),
                           t(g.colors), g.sh_degree)
        else:
            tensors = self._finite_on_device(gaussians)
        self._device_key, self._device_tensors = gaussians, tensors
        return tensors

    def _tensor(self, a):
        """A host array as a float32 tensor on the device."""
        return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def _finite_on_device(self, g):
        """Device-posed Gaussians, dropping any a degenerate triangle made non-finite (the
        rule of ``Gaussians.finite_mask``, on the device)."""
        torch = self._torch
        with torch.no_grad():
            means, quats, scales = (x.to(self.device) for x in (g.means, g.quats, g.scales))
            opacities, colors = g.opacities.to(self.device), g.colors.to(self.device)
            keep = (torch.isfinite(means).all(1) & torch.isfinite(quats).all(1)
                    & (torch.linalg.norm(quats, dim=1) > 1e-8) & torch.isfinite(scales).all(1)
                    & (scales > 0).all(1) & torch.isfinite(opacities) & (opacities > 0)
                    & torch.isfinite(colors.reshape(len(colors), -1)).all(1))
            if not bool(keep.any()):
                return None
            if not bool(keep.all()):
                means, quats, scales = means[keep], quats[keep], scales[keep]
                opacities, colors = opacities[keep], colors[keep]
            return (means.contiguous(), quats.contiguous(), scales.contiguous(),
                    opacities.clamp_max(1.0).contiguous(), colors.contiguous(), g.sh_degree)

    @property
    def poser(self):
        """``render.cuda_pose.DevicePoser`` on this backend's device (made on first use)."""
        if self._poser is None:
            from render.cuda_pose import DevicePoser, TorchAvatarPoser

            self._poser = DevicePoser(TorchAvatarPoser(self.device), self.log)
        return self._poser

    def render_skinned(self, skinned, pose, camera, background=None) -> np.ndarray:
        """The avatar posed on the device (``render.cuda_pose``), then rendered."""
        return self.render(self.poser.pose(skinned, pose), camera, background)

    def release(self) -> None:
        self._device_key = self._device_tensors = None
        if self._poser is not None:
            self._poser.poser.release()
        self._poser = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


def differentiable_render(means, quats, scales, opacities, colors, camera: Camera,
                          background=None):
    """``render.torch_splat.render``'s contract on a CUDA device, with gsplat's rasteriser
    and its gradients: (H, W, 4) premultiplied RGBA as a torch tensor on the inputs' device,
    differentiable in every input. The photometric fit of ``avatar create`` uses it where a
    GPU is present (``avatar.appearance.render_model``); the conventions are the backend's
    above. ``tests/test_cuda_render.py`` checks it against the torch splatter on a GPU."""
    import torch
    from gsplat import rasterization

    device = means.device
    h, w = camera.height, camera.width
    if h == 0 or w == 0:
        return torch.zeros((h, w, 4), dtype=means.dtype, device=device)

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    sh_degree = None if colors.ndim == 2 else int(round(colors.shape[1] ** 0.5)) - 1
    rgb, alpha, _ = rasterization(
        means=means, quats=quats / quats.norm(dim=-1, keepdim=True), scales=scales,
        opacities=opacities, colors=colors, viewmats=t(camera.cv_from_world)[None],
        Ks=t(camera.intrinsics)[None], width=w, height=h, near_plane=camera.near,
        far_plane=camera.far, sh_degree=sh_degree, eps2d=0.3, rasterize_mode="classic",
        packed=False)
    out = torch.cat([rgb[0], alpha[0]], dim=-1)
    if background is not None:
        bg = np.asarray(background, dtype=np.float32).reshape(-1)
        bg = t(np.append(bg, 1.0) if bg.shape == (3,) else bg)
        out = out + (1.0 - out[..., 3:4]) * bg
    return out
