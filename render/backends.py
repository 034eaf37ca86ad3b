"""Renderer backends behind one call: ``backend.render(gaussians, camera, background=None)``.

``get_backend(name)`` with name in ``BACKENDS``:

- ``"reference"``: numpy on the CPU (``render.reference``), always there, slow;
- ``"gl"``: OpenGL 4.3 shaders through moderngl (``render.gl``), headless through EGL when
  no window context is given; Mesa llvmpipe without a GPU;
- ``"cuda"``: gsplat + torch on an NVIDIA GPU (``render.cuda``), imported only when asked for;
- ``"auto"``: the fastest that works here: cuda, then gl, then reference.

A named backend that cannot run here raises ``BackendUnavailable`` saying why and what to
install. Every backend returns (H, W, 4) float32 premultiplied RGBA, as the reference does.
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

    def release(self) -> None: ...


class ReferenceBackend:
    name = "reference"

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        from render.reference import render

        return render(gaussians, camera, background)

    def release(self) -> None:
        pass


class GLBackend:
    """The OpenGL renderer on its own headless context (or on ``ctx``)."""

    name = "gl"

    def __init__(self, ctx=None):
        from render.gl import GLSplatRenderer

        self.renderer = GLSplatRenderer(ctx)

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        return self.renderer.render(gaussians, camera, background)

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
