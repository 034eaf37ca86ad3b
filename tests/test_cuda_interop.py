"""CUDA-GL interop (render/cuda_interop.py) and the image backends' way into GL framebuffers.

What runs here (no NVIDIA GPU): the fallback through host memory (real GL on Mesa llvmpipe, the
real CUDA runtime library failing for real where one is installed), the selection logic, the
one-line errors and the lazy imports. The interop copy itself needs CUDA and a GL context on
the NVIDIA GPU: ``test_interop_copies_device_to_device_on_nvidia`` skips elsewhere, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from render.backends import ReferenceBackend
from render.errors import RenderError
from render.camera import Camera
from render.cuda_interop import BackendGLRenderer, CudaRuntime, InteropUnavailable, TextureUpload
from render.gaussians import Gaussians
from render.reference import render as reference_render

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = (0.08, 0.08, 0.1)


def cuda_device_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def ctx():
    pytest.importorskip("moderngl")
    from render.gl import create_headless_context

    try:
        context = create_headless_context()
    except RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    yield context
    context.release()


def cloud(n=400, seed=0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians(rng.normal(0, 0.2, (n, 3)) + [0, 1, 0], rng.normal(size=(n, 4)),
                     np.exp(rng.uniform(-4.5, -3, (n, 3))), rng.uniform(0.3, 1.0, n),
                     rng.uniform(0, 1, (n, 3)))


def camera(width=64, height=48) -> Camera:
    # Looking at the cloud from above and to the side: an image that is not symmetric, so a
    # flipped or transposed copy would show.
    return Camera.look_at([0.4, 1.5, 1.6], [0.05, 1.0, 0.0], width, height,
                          vertical_fov_deg=50)


def read_texture(texture, dtype=np.float32) -> np.ndarray:
    width, height = texture.size
    return np.frombuffer(texture.read(), dtype).reshape(height, width, texture.components)


class FakeCudaTensor:
    """MOCK, named as such: a tensor that claims to live in CUDA memory. No CUDA device exists
    here, so this stands in for gsplat's output to drive ``TextureUpload`` down its device
    path, where the real CUDA runtime (or its absence) then refuses for real. It wraps a host
    array; its pointer never reaches a copy (these tests skip where a CUDA device exists)."""

    is_cuda = True

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array)
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    def contiguous(self):
        return self

    def stride(self, dim: int) -> int:
        return self.array.strides[dim] // self.array.itemsize

    def element_size(self) -> int:
        return self.array.itemsize

    def cpu(self):
        return self

    def numpy(self) -> np.ndarray:
        return self.array


class FakeCudaRuntimeLibrary:
    """MOCK of libcudart's interop entry points (no CUDA device here): registration fails with
    ``register_error`` (0: succeeds), mapping with ``map_error``; calls are recorded."""

    def __init__(self, register_error=0, map_error=0):
        self.register_error, self.map_error = register_error, map_error
        self.calls: list[str] = []

    def cudaGetErrorString(self, code):
        return {219: b"invalid OpenGL or DirectX context",
                100: b"no CUDA-capable device is detected"}.get(code, b"unknown error")

    def cudaGraphicsGLRegisterImage(self, handle, glo, target, flags):
        self.calls.append(f"register {glo} {target:#x} {flags}")
        if not self.register_error:
            handle[0] = 0x1234
        return self.register_error

    def cudaGraphicsMapResources(self, count, resources, stream):
        self.calls.append("map")
        return self.map_error

    def cudaGraphicsUnmapResources(self, count, resources, stream):
        self.calls.append("unmap")
        return 0

    def cudaGraphicsUnregisterResource(self, handle):
        self.calls.append("unregister")
        return 0


@pytest.fixture
def no_cuda_device():
    if cuda_device_present():
        pytest.skip("a CUDA device is present: the interop runs for real there "
                    "(test_interop_copies_device_to_device_on_nvidia)")


def test_without_a_cuda_device_registration_fails_with_a_clear_reason(ctx, no_cuda_device):
    """Here either no libcudart loads, or one does (a CUDA toolkit without a GPU) and the
    registration itself fails: both are InteropUnavailable with the reason in words."""
    try:
        runtime = CudaRuntime()
    except InteropUnavailable as exc:
        assert "no CUDA runtime library" in str(exc)
        return
    from render.cuda_interop import GLTextureLink

    texture = ctx.texture((8, 8), 4, dtype="f4")
    with pytest.raises(InteropUnavailable, match=r"cudaGraphicsGLRegisterImage\) failed: "
                                                 r"CUDA error \d+ \(.+\)"):
        GLTextureLink(runtime, texture.glo, 8, 8, 16)
    texture.release()


def test_upload_falls_back_to_host_memory_with_one_line(ctx, no_cuda_device):
    """A CUDA image (mock) meets the real runtime here, which cannot register the texture:
    one log line, the image still lands in the texture (through host memory), and later
    frames go that way without asking CUDA again."""
    made, lines = [], []

    def runtime():
        made.append(1)
        return CudaRuntime()

    upload = TextureUpload(log=lines.append, runtime_factory=runtime)
    texture = ctx.texture((64, 48), 4, dtype="f4")
    image = reference_render(cloud(), camera(), BACKGROUND)
    upload.write(texture, FakeCudaTensor(image))
    assert upload.mode == "host" and upload.fallback_reason
    assert len(lines) == 1 and lines[0].startswith("CUDA-GL interop unavailable (")
    assert lines[0].endswith("frames go through host memory")
    np.testing.assert_array_equal(read_texture(texture), image)
    second = reference_render(cloud(seed=1), camera(), BACKGROUND)
    upload.write(texture, FakeCudaTensor(second))
    np.testing.assert_array_equal(read_texture(texture), second)
    assert len(lines) == 1 and len(made) <= 1             # not retried every frame
    texture.release()


def test_refused_registration_names_the_cuda_error_and_falls_back(ctx):
    fake = FakeCudaRuntimeLibrary(register_error=219)
    lines = []
    upload = TextureUpload(log=lines.append, runtime_factory=lambda: CudaRuntime(fake))
    texture = ctx.texture((16, 8), 4, dtype="f4")
    image = np.random.default_rng(0).uniform(0, 1, (8, 16, 4)).astype(np.float32)
    upload.write(texture, FakeCudaTensor(image))
    assert fake.calls == [f"register {texture.glo} 0xde1 2"]   # GL_TEXTURE_2D, write-discard
    assert lines == ["CUDA-GL interop unavailable (registering the GL texture with CUDA "
                     "(cudaGraphicsGLRegisterImage) failed: CUDA error 219 (invalid OpenGL or "
                     "DirectX context)); frames go through host memory"]
    np.testing.assert_array_equal(read_texture(texture), image)
    texture.release()


def test_a_failed_map_unregisters_and_falls_back(ctx):
    fake = FakeCudaRuntimeLibrary(map_error=999)
    lines = []
    upload = TextureUpload(log=lines.append, runtime_factory=lambda: CudaRuntime(fake),
                           stream_of=lambda tensor: 0)    # the mock tensor has no stream
    texture = ctx.texture((16, 8), 4, dtype="f4")
    image = np.full((8, 16, 4), 0.25, np.float32)
    upload.write(texture, FakeCudaTensor(image))
    assert fake.calls[0].startswith("register") and fake.calls[1:] == ["map", "unregister"]
    assert len(lines) == 1 and "cudaGraphicsMapResources failed: CUDA error 999" in lines[0]
    np.testing.assert_array_equal(read_texture(texture), image)
    texture.release()


def test_upload_rejects_images_that_do_not_fit_the_texture(ctx):
    upload = TextureUpload()
    texture = ctx.texture((16, 8), 4, dtype="f4")
    with pytest.raises(RenderError, match="cannot fill a 16x8 float32 texture"):
        upload.write(texture, np.zeros((16, 8, 4), np.float32))      # transposed
    with pytest.raises(RenderError, match="cannot fill"):
        upload.write(texture, np.zeros((8, 16, 4), np.float64))      # wrong type
    half = ctx.texture((16, 8), 4, dtype="f2")
    with pytest.raises(RenderError, match="f4 or f1 textures"):
        upload.write(half, np.zeros((8, 16, 4), np.float32))
    texture.release()
    half.release()


def test_backend_renderer_draws_the_backends_image_upright(ctx):
    """The reference backend through BackendGLRenderer (the path of `view --backend
    reference` and of cuda without interop): the framebuffer holds the backend's image,
    top row at the top, in float and in 8-bit targets."""
    renderer = BackendGLRenderer(ctx, ReferenceBackend())
    g, cam = cloud(), camera()
    expected = reference_render(g, cam, BACKGROUND)
    renderer.upload(g)
    assert renderer.sort_for(cam.position, [0, 0, -1]) is False   # the backend sorts itself
    for dtype, scale, tolerance in (("f4", 1.0, 1e-7), ("f1", 255.0, 0.51)):
        texture = ctx.texture((cam.width, cam.height), 4, dtype=dtype)
        fbo = ctx.framebuffer(color_attachments=[texture])
        renderer.draw(cam, fbo, background=BACKGROUND)
        got = read_texture(texture, np.float32 if dtype == "f4" else np.uint8)[::-1]
        np.testing.assert_allclose(got.astype(np.float64),
                                   np.clip(expected, 0, 1) * scale, atol=tolerance)
        fbo.release()
        texture.release()
    assert renderer.texture_upload.mode == "host"
    assert renderer.texture_upload.fallback_reason is None      # host images: no interop tried
    renderer.release()


def test_interop_code_imports_and_draws_without_torch():
    """torch, gsplat and cupy stay out of everything but the CUDA backend's own calls: the
    viewer, the XR stage and target and the interop module import without them, and the host
    path draws."""
    code = (
        "import sys\n"
        "for name in ('torch', 'gsplat', 'cupy'):\n"
        "    sys.modules[name] = None\n"
        "import render.cuda_interop, render.cuda, render.xr, app.xr_view, app.view_cmd\n"
        "from render.backends import BackendUnavailable, ReferenceBackend, get_backend\n"
        "try:\n"
        "    get_backend('cuda')\n"
        "except BackendUnavailable as exc:\n"
        "    print('cuda:', exc)\n"
        "from render.gl import create_headless_context\n"
        "from render.camera import Camera\n"
        "from render.gaussians import Gaussians\n"
        "ctx = create_headless_context()\n"
        "r = render.cuda_interop.BackendGLRenderer(ctx, ReferenceBackend())\n"
        "cam = Camera.look_at([0, 1, 2], [0, 1, 0], 8, 8)\n"
        "fbo = ctx.simple_framebuffer((8, 8))\n"
        "r.upload(Gaussians.empty())\n"
        "r.draw(cam, fbo, background=(0.5, 0.5, 0.5))\n"
        "print('pixel', fbo.read(components=3)[:3])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cuda: the cuda backend needs torch and gsplat" in run.stdout
    assert "pixel b'\\x80\\x80\\x80'" in run.stdout


def test_headset_viewer_with_cuda_backend_and_no_gpu_is_one_line(no_cuda_device):
    """`view --xr --backend cuda` where CUDA cannot run: one `error:` line before any OpenXR
    session is opened."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XR_")}
    run = subprocess.run([sys.executable, "-m", "app.xr_view", "--backend", "cuda", "--pose",
                          "rest", "--xr-frames", "1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the cuda backend needs"), run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.gpu
def test_interop_copies_device_to_device_on_nvidia():
    """On an NVIDIA machine: gsplat's image reaches the GL texture by interop (no fallback)
    and holds exactly what the host path would have put there."""
    from render.backends import BackendUnavailable

    try:
        from render.cuda import CudaBackend

        backend = CudaBackend()
    except BackendUnavailable as exc:
        pytest.skip(f"no CUDA backend here (needs an NVIDIA GPU, torch and gsplat): {exc}")
    from render.gl import create_headless_context

    try:
        context = create_headless_context()
    except RenderError as exc:
        pytest.skip(f"no headless OpenGL context: {exc}")
    vendor = context.info.get("GL_VENDOR", "") + " " + context.info.get("GL_RENDERER", "")
    if "NVIDIA" not in vendor.upper():
        context.release()
        pytest.skip(f"the EGL context runs on {vendor.strip()!r}, not the NVIDIA GPU: CUDA "
                    "cannot register its textures")
    lines = []
    renderer = BackendGLRenderer(context, backend, log=lines.append)
    g, cam = cloud(n=5000), camera(160, 120)
    renderer.upload(g)
    texture = context.texture((cam.width, cam.height), 4, dtype="f4")
    fbo = context.framebuffer(color_attachments=[texture])
    renderer.draw(cam, fbo, background=BACKGROUND)
    assert renderer.texture_upload.mode == "interop" and lines == [], lines
    expected = backend.render(g, cam, BACKGROUND)
    np.testing.assert_allclose(read_texture(renderer._texture), expected, atol=1e-6)
    np.testing.assert_allclose(read_texture(texture)[::-1], np.clip(expected, 0, 1), atol=1e-6)
    # Every frame again by interop, the second write into the same registered texture.
    renderer.draw(cam, fbo, background=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(read_texture(renderer._texture), backend.render(g, cam),
                               atol=1e-6)
    fbo.release()
    texture.release()
    renderer.release()
    context.release()
