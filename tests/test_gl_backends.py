"""Choosing a renderer backend by name (render/backends.py), with real backends."""

from __future__ import annotations

import numpy as np
import pytest

from render.backends import BackendUnavailable, get_backend
from render.camera import Camera
from render.gaussians import Gaussians


def scene():
    rng = np.random.default_rng(0)
    n = 200
    g = Gaussians(rng.normal(0, 0.2, (n, 3)) + [0, 1, 0], rng.normal(size=(n, 4)),
                  np.full((n, 3), 0.03), np.full(n, 0.8), rng.uniform(0, 1, (n, 3)))
    return g, Camera.look_at([0, 1, 2], [0, 1, 0], 48, 32)


def test_reference_and_gl_backends_render_the_same_image():
    g, cam = scene()
    ref = get_backend("reference").render(g, cam, background=[0, 0, 0])
    try:
        backend = get_backend("gl")
    except BackendUnavailable as exc:
        pytest.skip(f"gl backend unavailable here: {exc}")
    try:
        out = backend.render(g, cam, background=[0, 0, 0])
    finally:
        backend.release()
    assert ref[..., 3].min() == 1.0
    np.testing.assert_allclose(out, ref, atol=2e-3)


def test_auto_picks_a_working_backend():
    g, cam = scene()
    backend = get_backend("auto")
    try:
        assert backend.name in ("cuda", "gl", "reference")
        assert backend.render(g, cam)[..., 3].max() > 0.5
    finally:
        backend.release()


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="choose one of"):
        get_backend("vulkan")


def test_cuda_backend_says_why_it_is_unavailable():
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        pytest.skip("a CUDA device is present: tests/test_cuda_render.py covers it")
    with pytest.raises(BackendUnavailable, match="cuda backend needs"):
        get_backend("cuda")


def test_render_avatar_poses_on_the_gpu_with_gl_and_matches_the_reference():
    from avatar.avatar import load_avatar
    from avatar.codes import BODY_BONES, Codes
    from common.rotation import quat_from_axis_angle

    avatar = load_avatar("default")
    body = Codes().body.copy()
    body[BODY_BONES.index("upperarm01.L")] = quat_from_axis_angle([0, 0, 1], -1.0)
    codes = [Codes(), Codes(body=body)]
    cam = Camera.look_at([0.3, 1.1, 2.8], [0, 0.9, 0], 48, 64)
    try:
        backend = get_backend("gl")
    except BackendUnavailable as exc:
        pytest.skip(f"gl backend unavailable here: {exc}")
    reference = get_backend("reference")
    try:
        for c in codes:  # the second frame re-poses the avatar already on the GPU
            ours = backend.render_skinned(avatar.skinned, avatar.skin_pose(c), cam,
                                          background=[0, 0, 0])
            assert backend.renderer._avatars is not None, "posed on the GPU"
            ref = reference.render_skinned(avatar.skinned, avatar.skin_pose(c), cam,
                                           background=[0, 0, 0])
            mse = float(np.mean((ours.astype(np.float64) - ref) ** 2))
            assert mse < 1e-6, f"PSNR {10 * np.log10(1 / max(mse, 1e-30)):.1f} dB"
        g, small = scene()  # plain Gaussians in between, then the avatar again
        backend.render(g, small)
        again = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes[1]), cam,
                                       background=[0, 0, 0])
        np.testing.assert_allclose(again, ours, atol=1e-6)
    finally:
        backend.release()
