"""CUDA-GL interop: the cuda backend's image reaches a GL texture without a host round trip.

gsplat renders into a torch tensor in GPU memory. To be seen (a desktop window, an OpenXR
swapchain image) it must end up in a GL texture. Through host memory that is a device ->
host copy (``.cpu()``), a host -> device copy (``texture.write``) and a stall per eye. With
interop the texture is registered with CUDA once (``cudaGraphicsGLRegisterImage``) and per
frame mapped (``cudaGraphicsMapResources``), its CUDA array fetched
(``cudaGraphicsSubResourceGetMappedArray``), the image copied device to device
(``cudaMemcpy2DToArrayAsync``) and unmapped; map and unmap run on torch's current stream, so
the copy follows gsplat's kernels and precedes GL's next use of the texture.

The CUDA runtime is reached through ctypes (``libcudart``: the copy torch loaded when there is
one), so no cupy is needed; nothing here imports torch either: tensors arrive from the
backend. Registration fails without a CUDA device or when the GL context does not run on the
NVIDIA GPU (Mesa llvmpipe, another vendor's GPU, a remote X display); ``TextureUpload`` then
logs one line saying why and goes through host memory from then on.

``BackendGLRenderer`` puts any image backend (cuda; reference too) behind the GL renderer's
drawing calls (``upload``, ``sort_for``, ``draw``), so the desktop viewer and the OpenXR target
show it like the GL splatter: render, write the image into a texture, one full-screen pass
into the framebuffer.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from render.errors import RenderError
from render.camera import Camera

GL_TEXTURE_2D = 0x0DE1
REGISTER_WRITE_DISCARD = 2        # cudaGraphicsRegisterFlagsWriteDiscard: CUDA only writes
MEMCPY_DEVICE_TO_DEVICE = 3       # cudaMemcpyDeviceToDevice
CUDART_NAMES = ("libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so")


class InteropUnavailable(RenderError):
    """CUDA cannot write into this GL texture here (no CUDA, or GL not on the NVIDIA GPU)."""


def loaded_cudart() -> str | None:
    """The path of a libcudart already mapped into this process (torch's), if any: the one
    to use, so interop runs in the same CUDA runtime as the renderer."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libcudart" in path and ".so" in path:
                    return path
    except OSError:
        pass
    return None


class CudaRuntime:
    """The CUDA runtime calls interop needs, through ctypes. ``library``: a loaded library
    object (tests give a stand-in), else torch's libcudart, else the system's."""

    def __init__(self, library=None):
        if library is None:
            candidates = [p for p in (loaded_cudart(),) if p] + list(CUDART_NAMES)
            errors = []
            for name in candidates:
                try:
                    library = ctypes.CDLL(name)
                    break
                except OSError as exc:
                    errors.append(str(exc))
            else:
                raise InteropUnavailable("no CUDA runtime library (libcudart) could be loaded: "
                                         + "; ".join(errors[:2]))
            vp, uint, size = ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t
            signatures = {
                "cudaGraphicsGLRegisterImage": [ctypes.POINTER(vp), uint, uint, uint],
                "cudaGraphicsUnregisterResource": [vp],
                "cudaGraphicsMapResources": [ctypes.c_int, ctypes.POINTER(vp), vp],
                "cudaGraphicsUnmapResources": [ctypes.c_int, ctypes.POINTER(vp), vp],
                "cudaGraphicsSubResourceGetMappedArray": [ctypes.POINTER(vp), vp, uint, uint],
                "cudaMemcpy2DToArrayAsync": [vp, size, size, vp, size, size, size,
                                             ctypes.c_int, vp],
            }
            try:
                for name, argtypes in signatures.items():
                    function = getattr(library, name)
                    function.argtypes, function.restype = argtypes, ctypes.c_int
                library.cudaGetErrorString.argtypes = [ctypes.c_int]
                library.cudaGetErrorString.restype = ctypes.c_char_p
            except AttributeError as exc:
                raise InteropUnavailable(f"the CUDA runtime lacks GL interop: {exc}") from None
        self.lib = library

    def check(self, code: int, what: str) -> None:
        if code != 0:
            text = self.lib.cudaGetErrorString(code)
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            raise InteropUnavailable(f"{what} failed: CUDA error {code} ({text})")


class GLTextureLink:
    """One GL 2D texture registered with CUDA (once); ``copy_from`` writes a device image
    into it, device to device. The GL context must be current on the calling thread."""

    def __init__(self, runtime: CudaRuntime, texture_glo: int, width: int, height: int,
                 texel_bytes: int):
        self.runtime = runtime
        self.width, self.height, self.texel_bytes = width, height, texel_bytes
        self.handle = ctypes.c_void_p()
        runtime.check(runtime.lib.cudaGraphicsGLRegisterImage(
            ctypes.pointer(self.handle), int(texture_glo), GL_TEXTURE_2D, REGISTER_WRITE_DISCARD),
            "registering the GL texture with CUDA (cudaGraphicsGLRegisterImage)")

    def copy_from(self, device_pointer: int, pitch_bytes: int, stream: int = 0) -> None:
        """Copy ``height`` rows of ``width`` texels starting at ``device_pointer`` (rows
        ``pitch_bytes`` apart) into the texture; row 0 goes to the texture's row 0."""
        lib, check = self.runtime.lib, self.runtime.check
        stream_handle = ctypes.c_void_p(int(stream) or None)
        resources = (ctypes.c_void_p * 1)(self.handle)
        check(lib.cudaGraphicsMapResources(1, resources, stream_handle),
              "cudaGraphicsMapResources")
        try:
            array = ctypes.c_void_p()
            check(lib.cudaGraphicsSubResourceGetMappedArray(ctypes.pointer(array), self.handle,
                                                             0, 0),
                  "cudaGraphicsSubResourceGetMappedArray")
            check(lib.cudaMemcpy2DToArrayAsync(
                array, 0, 0, ctypes.c_void_p(int(device_pointer)), pitch_bytes,
                self.width * self.texel_bytes, self.height, MEMCPY_DEVICE_TO_DEVICE,
                stream_handle), "cudaMemcpy2DToArrayAsync")
        finally:
            check(lib.cudaGraphicsUnmapResources(1, resources, stream_handle),
                  "cudaGraphicsUnmapResources")

    def release(self) -> None:
        if self.handle:
            self.runtime.lib.cudaGraphicsUnregisterResource(self.handle)
            self.handle = ctypes.c_void_p()


def is_cuda_tensor(image) -> bool:
    """A torch tensor in CUDA memory (without importing torch)."""
    return bool(getattr(image, "is_cuda", False)) and hasattr(image, "data_ptr")


class TextureUpload:
    """Writes rendered images into GL textures: device to device through CUDA-GL interop
    when the image is a CUDA tensor and the texture can be registered, else through host
    memory. The first interop failure is logged in one line (``log``) and the host path is
    used from then on (``mode`` says which path the last write took: "interop" or "host")."""

    def __init__(self, log: Callable[[str], None] | None = None,
                 runtime_factory: Callable[[], CudaRuntime] = CudaRuntime,
                 stream_of: Callable[[object], int] | None = None):
        """``runtime_factory`` and ``stream_of`` (a tensor's CUDA stream handle; default:
        torch's current stream on its device) are replaceable for tests."""
        self.log = log or (lambda message: None)
        self.runtime_factory = runtime_factory
        self.stream_of = stream_of or _current_stream
        self.mode: str | None = None
        self.fallback_reason: str | None = None
        self._runtime: CudaRuntime | None = None
        self._links: dict[int, GLTextureLink] = {}

    def write(self, texture, image) -> None:
        """``image``: (H, W, C) matching the moderngl ``texture`` (size, components, float32
        for "f4" or uint8 for "f1"): a torch tensor (CUDA or not) or a numpy array. Its row 0
        lands in the texture's row 0."""
        width, height = texture.size
        expected = (height, width, texture.components)
        dtype = {"f4": "float32", "f1": "uint8"}.get(texture.dtype)
        if dtype is None:
            raise RenderError(f"images go into f4 or f1 textures, not {texture.dtype!r}")
        if tuple(image.shape) != expected or str(image.dtype).split(".")[-1] != dtype:
            raise RenderError(f"an image of shape {tuple(image.shape)} and type {image.dtype} "
                              f"cannot fill a {width}x{height} {dtype} texture of "
                              f"{texture.components} components")
        if self.fallback_reason is None and is_cuda_tensor(image):
            try:
                self._copy_on_device(texture, image)
                self.mode = "interop"
                return
            except InteropUnavailable as exc:
                self.fallback_reason = str(exc)
                self.log(f"CUDA-GL interop unavailable ({exc}); frames go through host memory")
                self.release()
        host = image.cpu().numpy() if hasattr(image, "cpu") else np.asarray(image)
        texture.write(np.ascontiguousarray(host).tobytes())
        self.mode = "host"

    def _copy_on_device(self, texture, image) -> None:
        if self._runtime is None:
            self._runtime = self.runtime_factory()
        link = self._links.get(texture.glo)
        width, height = texture.size
        texel_bytes = texture.components * (4 if texture.dtype == "f4" else 1)
        if link is None or (link.width, link.height) != (width, height):
            if link is not None:
                link.release()
            link = GLTextureLink(self._runtime, texture.glo, width, height, texel_bytes)
            self._links[texture.glo] = link
        image = image.contiguous()
        stream = self.stream_of(image)
        link.copy_from(image.data_ptr(), image.stride(0) * image.element_size(), stream)

    def forget(self, texture) -> None:
        """Unregister ``texture`` (call before releasing it: GL may reuse its name)."""
        link = self._links.pop(texture.glo, None)
        if link is not None:
            try:
                link.release()
            except Exception:  # noqa: BLE001 - a lost context or device: nothing to free
                pass

    def release(self) -> None:
        """Unregister every texture (before the GL context or the textures go)."""
        for link in self._links.values():
            try:
                link.release()
            except Exception:  # noqa: BLE001 - a lost context or device: nothing to free
                pass
        self._links = {}


def _current_stream(tensor) -> int:
    """torch's current CUDA stream on the tensor's device (its raw handle), so the copy is
    ordered after the kernels that made the image."""
    import torch  # only reached with a CUDA tensor in hand

    return int(torch.cuda.current_stream(tensor.device).cuda_stream)


PRESENT_VERTEX = """
#version 330
out vec2 uv;
void main() {
    vec2 corner = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
    uv = vec2(0.5 * corner.x + 0.5, 0.5 - 0.5 * corner.y);  // images are top row first
    gl_Position = vec4(corner, 0.0, 1.0);
}
"""
PRESENT_FRAGMENT = """
#version 330
uniform sampler2D image;
in vec2 uv;
out vec4 frag;
void main() { frag = texture(image, uv); }
"""


class BackendGLRenderer:
    """An image backend (``render.cuda.CudaBackend``; any backend with ``render``) drawing
    into moderngl framebuffers with the GL renderer's calls, for windows and OpenXR
    swapchains: ``upload(gaussians)``, ``sort_for`` (nothing to do: the backend sorts per
    view), ``draw(camera, framebuffer, background)``. A backend with ``render_device`` hands
    over a CUDA tensor, written into the texture by interop (``TextureUpload``)."""

    def __init__(self, ctx, backend, log: Callable[[str], None] | None = None,
                 upload: TextureUpload | None = None):
        import moderngl

        self.ctx = ctx
        self.backend = backend
        self.texture_upload = upload or TextureUpload(log)
        self._gaussians = None
        self._texture = None
        self._program = ctx.program(vertex_shader=PRESENT_VERTEX, fragment_shader=PRESENT_FRAGMENT)
        self._vao = ctx.vertex_array(self._program, [])
        self._moderngl = moderngl

    def upload(self, gaussians) -> None:
        self._gaussians = gaussians

    def show(self, content) -> bool:
        """``GLSplatRenderer.show`` for an image backend: its poser already posed the avatars
        (``Gaussians`` or device Gaussians); ``PosedAvatars`` belong to the GL renderer."""
        from render.skinned import PosedAvatars

        if isinstance(content, PosedAvatars):
            raise RenderError(f"the {self.backend.name} backend draws posed Gaussians; "
                              "PosedAvatars are for the gl backend's renderer")
        self._gaussians = content
        return False

    def sort_for(self, position, forward) -> bool:
        return False

    def draw(self, camera: Camera, framebuffer=None, background=None) -> None:
        if camera.width == 0 or camera.height == 0:
            return
        from render.gaussians import Gaussians

        gaussians = self._gaussians if self._gaussians is not None else Gaussians.empty()
        render = getattr(self.backend, "render_device", None) or self.backend.render
        image = render(gaussians, camera, background)
        size = (camera.width, camera.height)
        if self._texture is None or self._texture.size != size:
            if self._texture is not None:
                self.texture_upload.forget(self._texture)
                self._texture.release()
            self._texture = self.ctx.texture(size, 4, dtype="f4")
            self._texture.filter = (self._moderngl.NEAREST, self._moderngl.NEAREST)
        self.texture_upload.write(self._texture, image)
        fbo = framebuffer if framebuffer is not None else self.ctx.screen
        fbo.use()
        self.ctx.viewport = (0, 0, *size)
        self.ctx.scissor = None
        self.ctx.disable(self._moderngl.BLEND)
        self._texture.use(0)
        self._vao.render(self._moderngl.TRIANGLE_STRIP, vertices=4)

    def release(self) -> None:
        self.texture_upload.release()
        for obj in (self._texture, self._vao, self._program):
            if obj is not None:
                obj.release()
        self._texture = None
        release = getattr(self.backend, "release", None)
        if release is not None:
            release()
