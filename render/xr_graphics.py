"""The OpenXR target's graphics binding: the OpenGL contexts a runtime can share (EGL with
``XR_MNDX_egl_enable``, headless; GLX through a glfw window when there is an X display) and
the swapchain colour formats (sRGB first; see ``render.xr`` on colour).

Each context class offers ``make_current()``, ``get_proc_address(name)``, ``binding(xr)``
(the runtime's graphics-binding structure) and ``moderngl_context()``."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

import numpy as np

from render.errors import XrUnavailableError

# OpenGL internal formats a runtime may offer for colour swapchains.
GL_SRGB8_ALPHA8 = 0x8C43
GL_SRGB8 = 0x8C41
GL_RGBA8 = 0x8058
GL_RGB10_A2 = 0x8059
GL_RGBA16F = 0x881A
GL_RGBA16 = 0x805B
GL_FRAMEBUFFER_SRGB = 0x8DB9
SRGB_FORMATS = (GL_SRGB8_ALPHA8, GL_SRGB8)
LINEAR_FORMATS = (GL_RGBA8, GL_RGB10_A2, GL_RGBA16F, GL_RGBA16)


def choose_color_format(offered: Sequence[int], prefer_srgb: bool = True) -> tuple[int, bool]:
    """(GL internal format, is_srgb): sRGB first (linear first when not ``prefer_srgb``),
    in the runtime's order of preference within each group."""
    offered = [int(f) for f in offered]
    groups = [(SRGB_FORMATS, True), (LINEAR_FORMATS, False)]
    for group, is_srgb in (groups if prefer_srgb else groups[::-1]):
        for fmt in offered:
            if fmt in group:
                return fmt, is_srgb
    raise XrUnavailableError("the OpenXR runtime offers no colour swapchain format this viewer "
                             f"can draw into (offered: {', '.join(hex(f) for f in offered)})")


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve (IEC 61966-2-1), on values in [0, 1]."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


# -- OpenGL contexts the runtime can share -----------------------------------------------------
class EglContext:
    """A headless OpenGL 4.5 core context through EGL (surfaceless Mesa platform when offered),
    with what XR_MNDX_egl_enable needs: display, config, context and eglGetProcAddress."""

    EGL_DEFAULT_DISPLAY = 0
    EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
    EGL_OPENGL_API = 0x30A2
    EGL_NONE = 0x3038

    def __init__(self) -> None:
        try:
            egl = ctypes.CDLL("libEGL.so.1")
        except OSError as exc:
            raise XrUnavailableError(f"EGL is missing (install libegl1): {exc}") from None
        self.egl = egl
        vp = ctypes.c_void_p
        egl.eglGetProcAddress.restype = vp
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        egl.eglGetDisplay.restype = vp
        egl.eglGetDisplay.argtypes = [vp]
        int_p = ctypes.POINTER(ctypes.c_int)
        egl.eglInitialize.argtypes = [vp, int_p, int_p]
        egl.eglChooseConfig.argtypes = [vp, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(vp),
                                        ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        egl.eglCreateContext.restype = vp
        egl.eglCreateContext.argtypes = [vp, vp, vp, ctypes.POINTER(ctypes.c_int)]
        egl.eglMakeCurrent.argtypes = [vp, vp, vp, vp]
        egl.eglDestroyContext.argtypes = [vp, vp]
        egl.eglTerminate.argtypes = [vp]
        egl.eglQueryString.restype = ctypes.c_char_p
        egl.eglQueryString.argtypes = [vp, ctypes.c_int]

        self.display = None
        client_exts = egl.eglQueryString(None, 0x3055) or b""  # EGL_EXTENSIONS of no display
        if b"EGL_MESA_platform_surfaceless" in client_exts:
            get_platform_display = ctypes.CFUNCTYPE(vp, ctypes.c_uint, vp, vp)(
                egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT"))
            self.display = get_platform_display(self.EGL_PLATFORM_SURFACELESS_MESA, None, None)
        if not self.display:
            self.display = egl.eglGetDisplay(None)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if not self.display or not egl.eglInitialize(self.display, major, minor):
            raise XrUnavailableError("no EGL display (install libegl1 and libgl1-mesa-dri)")
        if not egl.eglBindAPI(self.EGL_OPENGL_API):
            raise XrUnavailableError("EGL has no desktop OpenGL (install libgl1-mesa-dri)")
        # RGBA8, renderable with desktop OpenGL, pbuffer surfaces (the default, window
        # surfaces, does not exist on the surfaceless platform).
        attribs = (ctypes.c_int * 13)(0x3024, 8, 0x3023, 8, 0x3022, 8, 0x3021, 8,
                                      0x3040, 0x0008, 0x3033, 0x0001, self.EGL_NONE)
        config, count = vp(), ctypes.c_int()
        if not egl.eglChooseConfig(self.display, attribs, ctypes.byref(config), 1, count) \
                or count.value < 1:
            raise XrUnavailableError("EGL offers no RGBA8 OpenGL configuration")
        self.config = config.value
        context_attribs = (ctypes.c_int * 7)(0x3098, 4, 0x30FB, 5,  # MAJOR 4, MINOR 5
                                             0x30FD, 0x1, self.EGL_NONE)  # core profile
        self.context = egl.eglCreateContext(self.display, self.config, None, context_attribs)
        if not self.context:
            raise XrUnavailableError("EGL cannot create an OpenGL 4.5 core context")
        self.make_current()

    def make_current(self) -> None:
        if not self.egl.eglMakeCurrent(self.display, None, None, self.context):
            raise RuntimeError("eglMakeCurrent failed")

    def get_proc_address(self, name: str) -> int:
        return self.egl.eglGetProcAddress(name.encode()) or 0

    def binding(self, xr):
        binding = xr.GraphicsBindingEGLMNDX()
        binding.get_proc_address = ctypes.cast(self.egl.eglGetProcAddress,
                                               xr.PFN_xrEglGetProcAddressMNDX)
        fields = dict(type(binding)._fields_)  # PyOpenGL's opaque EGL pointer types
        for name in ("display", "config", "context"):
            setattr(binding, name, ctypes.cast(ctypes.c_void_p(getattr(self, name)), fields[name]))
        return binding

    def moderngl_context(self):
        """A moderngl context on this (current) EGL context: moderngl's own loaders look for
        GLX or make their own EGL context, so hand it one built on eglGetProcAddress."""
        import moderngl

        egl, owner = self.egl, self

        class _Loader:  # moderngl's context protocol: functions, enter/exit, release
            def load_opengl_function(self, name: str) -> int:
                return egl.eglGetProcAddress(name.encode()) or 0

            def __enter__(self):
                owner.make_current()

            def __exit__(self, *exc) -> None:
                pass

            def release(self) -> None:
                pass

        moderngl.init_context(loader=_Loader())
        return moderngl.get_context()

    def release(self) -> None:
        if self.context:
            self.egl.eglMakeCurrent(self.display, None, None, None)
            self.egl.eglDestroyContext(self.display, self.context)
            self.context = None
        if self.display:
            self.egl.eglTerminate(self.display)
            self.display = None


class GlxContext:
    """An OpenGL context in a small glfw window (GLX, X11): XR_KHR_opengl_enable's Xlib
    binding. The window doubles as a desktop mirror hook; it is hidden unless asked for."""

    def __init__(self, visible: bool = False) -> None:
        try:
            import glfw
        except ImportError as exc:
            raise XrUnavailableError(f"glfw is not installed: {exc}") from None
        if not os.environ.get("DISPLAY"):
            raise XrUnavailableError("the GLX binding needs an X display (DISPLAY is not set);"
                                     " use --xr-graphics egl for headless use")
        if not glfw.init():
            raise XrUnavailableError("glfw cannot open the X display")
        self.glfw = glfw
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 4)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 5)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.DOUBLEBUFFER, False)
        glfw.window_hint(glfw.VISIBLE, bool(visible))
        self.window = glfw.create_window(320, 240, "splatcall (OpenXR)", None, None)
        if not self.window:
            glfw.terminate()
            raise XrUnavailableError("glfw cannot create an OpenGL 4.5 window (GLX)")
        self.make_current()

    def make_current(self) -> None:
        self.glfw.make_context_current(self.window)

    def get_proc_address(self, name: str) -> int:
        return self.glfw.get_proc_address(name) or 0

    def binding(self, xr):
        from OpenGL import GLX  # pyopenxr's own dependency, GLX types for the binding

        return xr.GraphicsBindingOpenGLXlibKHR(
            x_display=ctypes.cast(self.glfw.get_x11_display(), ctypes.POINTER(GLX.Display)),
            glx_drawable=self.glfw.get_glx_window(self.window),
            glx_context=ctypes.cast(self.glfw.get_glx_context(self.window), GLX.GLXContext))

    def moderngl_context(self):
        import moderngl

        return moderngl.create_context(require=430)

    def release(self) -> None:
        if self.window:
            self.glfw.destroy_window(self.window)
            self.window = None
            self.glfw.terminate()
