"""The renderer's errors, in a module of their own so every backend and target can raise them
without importing the backend registry (which imports the backends)."""


class RenderError(RuntimeError):
    """Rendering cannot go on (no usable context, lost device, bad setup)."""


class BackendUnavailable(RenderError):
    """The named backend cannot run on this machine."""


class GLContextLost(RenderError):
    """The OpenGL context is gone (released, reset or lost): rebind to a new one."""


class XrUnavailableError(RuntimeError):
    """No usable OpenXR runtime, headset or graphics binding: a one-line, user-facing reason."""
