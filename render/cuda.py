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

``render_device`` returns the image as a CUDA tensor instead: the desktop viewer and the
OpenXR target hand it to ``render.cuda_interop`` (CUDA-GL interop), which copies it into a GL
texture device to device; ``render`` brings it to host memory. The Gaussians of the last call
stay on the device, so both eyes of a frame (or frames of a still pose) send them once.
"""

from __future__ import annotations

import numpy as np

from render.backends import BackendUnavailable
from render.camera import Camera
from render.gaussians import Gaussians


class CudaBackend:
    name = "cuda"

    def __init__(self, device: str = "cuda"):
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
        self._torch = torch
        self._rasterization = rasterization
        self.device = torch.device(device)
        self._device_key = None      # the Gaussians whose tensors are on the device
        self._device_tensors = None

    def render(self, gaussians: Gaussians, camera: Camera, background=None) -> np.ndarray:
        return self.render_device(gaussians, camera, background).cpu().numpy()

    def render_device(self, gaussians: Gaussians, camera: Camera, background=None):
        """(H, W, 4) float32 premultiplied RGBA as a contiguous torch tensor on the GPU, top
        row first (``render``'s image before it leaves the device)."""
        torch = self._torch
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
            return out + torch.from_numpy(bg).to(self.device) if bg is not None else out
        means, quats, scales, opacities, colors, sh_degree = tensors

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

        with torch.no_grad():
            rgb, alpha, _ = self._rasterization(
                means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=t(camera.cv_from_world)[None], Ks=t(camera.intrinsics)[None],
                width=w, height=h, near_plane=camera.near, far_plane=camera.far,
                sh_degree=sh_degree, eps2d=0.3, rasterize_mode="classic", packed=False,
            )
            out = torch.cat([rgb[0], alpha[0]], dim=-1).float()
            if bg is not None:
                out = out + (1.0 - out[..., 3:4]) * torch.from_numpy(bg).to(self.device)
        return out.contiguous()

    def _on_device(self, gaussians: Gaussians):
        """The finite Gaussians as device tensors, kept for the same ``gaussians`` object."""
        if self._device_key is gaussians:
            return self._device_tensors
        keep = gaussians.finite_mask()
        if not keep.any():
            tensors = None
        else:
            g = gaussians.subset(np.flatnonzero(keep)) if not keep.all() else gaussians

            def t(a):
                return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(
                    self.device)

            tensors = (t(g.means), t(g.quats), t(g.scales), t(np.minimum(g.opacities, 1.0)),
                       t(g.colors), g.sh_degree)
        self._device_key, self._device_tensors = gaussians, tensors
        return tensors

    def render_avatar(self, avatar, codes, camera, background=None) -> np.ndarray:
        """The avatar posed in numpy (GPU posing is the gl backend's), then rendered."""
        return self.render(avatar.pose(codes), camera, background)

    def release(self) -> None:
        self._device_key = self._device_tensors = None
        self._torch.cuda.empty_cache()
