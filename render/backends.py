"""Renderer backends behind one call: ``backend.render(gaussians, camera, background=None)``.

``get_backend(name)`` with name in ``BACKENDS``:

- ``"reference"``: numpy on the CPU (``render.reference``), always there, slow;
- ``"gl"``: OpenGL 4.3 shaders through moderngl (``render.gl``), headless through EGL when
  no window context is given; Mesa llvmpipe without a GPU;
- ``"cuda"``: gsplat + torch on an NVIDIA GPU (``render.cuda``), imported only when asked for;
- ``"auto"``: the fastest that works here: cuda, then gl, then reference.

A named backend that cannot run here raises ``BackendUnavailable`` saying why and what to
install. Every backend returns (H, W, 4) float32 premultiplied RGBA, as the reference does.

Avatars (``render.skinned``'s contract): each backend decides where they are posed, and only
it: ``backend.poser`` (the gl backend poses in compute shaders of the renderer that draws,
``render.gl_pose``; cuda with torch on its device, ``render.cuda_pose``; reference with the
numpy reference poser). ``backend.render_skinned(skinned, pose, camera, background=None)``
poses one avatar that way and renders it: the same pixels whichever backend.
``poser_for(name, backend)`` is the poser for a backend named by the app, for targets (a
window, a headset) whose GL renderer is made later, in their own context.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from render.errors import BackendUnavailable, RenderError
from render.skinned import NumpyPoser, PosedAvatars, Poser

BACKENDS = ("auto", "cuda", "gl", "reference")


class Backend(Protocol):
    name: str
    poser: Poser

    def render(self, gaussians, camera, background=None) -> np.ndarray: ...

    def render_skinned(self, skinned, pose, camera, background=None) -> np.ndarray: ...

    def release(self) -> None: ...


class ReferenceBackend:
    name = "reference"

    def __init__(self):
        self.poser = NumpyPoser()

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        from render.reference import render

        return render(gaussians, camera, background)

    def render_skinned(self, skinned, pose, camera, background=None) -> np.ndarray:
        return self.render(self.poser.pose(skinned, pose), camera, background)

    def release(self) -> None:
        pass


class GLBackend:
    """The OpenGL renderer on its own headless context (or on ``ctx``)."""

    name = "gl"

    def __init__(self, ctx=None):
        from render.gl import GLSplatRenderer
        from render.gl_pose import GLPoser

        self.renderer = GLSplatRenderer(ctx)
        self.poser = GLPoser()
        self._skinned = ()  # the avatar kept on the GPU by render_skinned, as a 1-tuple

    def render(self, gaussians, camera, background=None) -> np.ndarray:
        return self.renderer.render(gaussians, camera, background)

    def render_skinned(self, skinned, pose, camera, background=None) -> np.ndarray:
        if self._skinned[:1] != (skinned,):
            self._skinned = (skinned,)  # a new tuple: the renderer uploads the avatar once
        self.renderer.show(PosedAvatars(self._skinned, (self.poser.pose(skinned, pose),)))
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
    for candidate in ("cuda", "gl"):
        try:
            return get_backend(candidate, **options)
        except BackendUnavailable:
            continue
    return ReferenceBackend()


def poser_for(name: str, backend: Backend | None = None) -> Poser:
    """Where avatars are posed for the backend ``name``: the gl backend's poser (the window's
    or headset's GL renderer poses them) or ``backend.poser`` (an image backend: cuda on its
    device, reference in numpy)."""
    if name == "gl":
        from render.gl_pose import GLPoser

        return GLPoser()
    if backend is None:
        raise RenderError(f"the {name} backend's poser needs the backend itself")
    return backend.poser
