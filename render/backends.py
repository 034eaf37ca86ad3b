"""Renderer backends behind one call: ``backend.render(gaussians, camera, background=None)``.

``get_backend(name)`` with name in ``BACKENDS``:

- ``"reference"``: numpy on the CPU (``render.reference``), always there, slow;
- ``"gl"``: OpenGL 4.3 shaders through moderngl (``render.gl``), headless through EGL when
  no window context is given; Mesa llvmpipe without a GPU;
- ``"cuda"``: gsplat + torch on an NVIDIA GPU (``render.cuda``), imported only when asked for;
- ``"auto"``: the fastest that works here: cuda, then gl, then reference.

A named backend that cannot run here raises ``BackendUnavailable`` saying why and what to
install. Every backend returns (H, W, 4) float32 premultiplied RGBA, as the reference does.

``backend.render_avatar(avatar, codes, camera, background=None)`` renders an
``avatar.avatar.Avatar`` posed by a codes frame: the gl backend keeps the avatar on the GPU
and poses it there (``render.gl_pose``: only bone transforms and face weights cross the bus
per frame); the others render ``avatar.pose(codes)``. The same pixels either way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

BACKENDS = ("auto", "cuda", "gl", "reference")


class RenderError(RuntimeError):
    """Rendering cannot go on (no usable context, lost device, bad setup)."""


class BackendUnavailable(RenderError):
    """The named backend cannot run on this machine."""


class Backend(Protocol):
    name: str

    def render(self, gaussians, camera, background=None) -> np.ndarray: ...

    def render_avatar(self, avatar, codes, camera, background=None) -> np.ndarray: ...

    def release(self) -> None: ...


def render_posed_on_cpu(backend, avatar, codes, camera, background=None) -> np.ndarray:
    """``render_avatar`` for backends without GPU posing: numpy ``avatar.pose(codes)``."""
    return backend.render(avatar.pose(codes), camera, background)


class ReferenceBackend:
    name = "reference"

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        from render.reference import render

        return render(gaussians, camera, background)

    render_avatar = render_posed_on_cpu

    def release(self) -> None:
        pass


class GLBackend:
    """The OpenGL renderer on its own headless context (or on ``ctx``)."""

    name = "gl"

    def __init__(self, ctx=None):
        from render.gl import GLSplatRenderer

        self.renderer = GLSplatRenderer(ctx)
        self._avatar = None  # the avatar kept on the GPU by render_avatar

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        self._avatar = None  # plain Gaussians replace it
        return self.renderer.render(gaussians, camera, background)

    def render_avatar(self, avatar, codes, camera, background=None) -> np.ndarray:
        from render.gl_pose import AvatarBinding, AvatarPose

        if self._avatar is not avatar:
            self.renderer.upload_avatars([AvatarBinding.from_avatar(avatar)])
            self._avatar = avatar
        self.renderer.pose_avatars([AvatarPose.from_codes(avatar, codes)])
        return self.renderer.render(None, camera, background)

    def release(self) -> None:
        self.renderer.release()


def get_backend(name: str = "auto", **options) -> Backend:
    """A ready backend by name (see ``BACKENDS``); ``options`` go to its constructor."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown renderer backend {name!r}; choose one of "
                                 f"{', '.join(BACKENDS)}")
    if name == "reference":
        return ReferenceBackend()
    if name == "gl":
        try:
            return GLBackend(**options)
        except BackendUnavailable:
            raise
        except RenderError as exc:
            raise BackendUnavailable(f"the gl backend cannot run here: {exc}") from exc
    if name == "cuda":
        from render.cuda import CudaBackend

        return CudaBackend(**options)
    reasons = []
    for candidate in ("cuda", "gl"):
        try:
            return get_backend(candidate, **options)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
    return ReferenceBackend()
