"""The CPU depth sort the GL backend draws by (render/sort.py)."""

from __future__ import annotations

import numpy as np
import pytest

from render.sort import front_to_back, view_depths


def test_32_bit_order_equals_a_stable_float_sort():
    rng = np.random.default_rng(0)
    depths = rng.normal(3.0, 0.5, 50_000).astype(np.float32)
    depths[::7] = depths[3]  # ties keep array order
    np.testing.assert_array_equal(front_to_back(depths), np.argsort(depths, kind="stable"))


def test_16_bit_order_is_sorted_to_its_quantum():
    rng = np.random.default_rng(1)
    depths = rng.uniform(1.0, 7.0, 20_000)
    ordered = depths[front_to_back(depths, key_bits=16)]
    quantum = (depths.max() - depths.min()) / 65534
    assert np.all(np.diff(ordered) > -quantum)
    assert not np.all(np.diff(ordered) >= 0), "16-bit keys merge close depths (else test nothing)"


def test_non_finite_depths_go_last_and_degenerate_inputs():
    depths = np.array([2.0, np.nan, 1.0, np.inf, 3.0])
    assert front_to_back(depths)[:3].tolist() == [2, 0, 4]
    assert front_to_back(np.zeros(0)).shape == (0,)
    assert front_to_back(np.full(4, 5.0)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        front_to_back(depths, key_bits=8)


def test_view_depths_are_distances_along_the_view_axis():
    means = np.array([[0, 0, 0], [1, 2, -3], [0, 5, 1]], dtype=np.float32)
    np.testing.assert_allclose(view_depths(means, [0, 0, 2], [0, 0, -2]), [2, 5, 1])


# -- the GPU radix sort (render.sort.GLDepthSort, real compute shaders on EGL / llvmpipe) ------
@pytest.fixture(scope="module")
def gl_context():
    gl = pytest.importorskip("render.gl")
    try:
        ctx = gl.create_headless_context()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    ctx.__enter__()
    yield ctx
    ctx.release()


@pytest.mark.parametrize("n", [1, 2, 255, 257, 70_001, 1_100_000])  # 1.1M: 5 avatars
def test_gpu_radix_sort_equals_numpy_stable_argsort(gl_context, n):
    from render.sort import GLDepthSort

    rng = np.random.default_rng(n)
    keys = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    keys[::5] = keys[0]                      # ties keep index order
    keys[1::9] = rng.integers(0, 300, len(keys[1::9]))  # only low bytes differ
    sorter = GLDepthSort(gl_context)
    try:
        np.testing.assert_array_equal(sorter.sort_keys(keys), np.argsort(keys, kind="stable"))
        assert sorter.sort_keys(np.zeros(0, dtype=np.uint32)).shape == (0,)
    finally:
        sorter.release()


def test_renderer_gpu_sort_orders_like_the_cpu_sort_and_renders_the_same():
    gl = pytest.importorskip("render.gl")
    from render.camera import Camera
    from render.gaussians import Gaussians
    from render.reference import render as reference_render

    rng = np.random.default_rng(3)
    n = 5000
    g = Gaussians(rng.normal(0, 0.3, (n, 3)) + [0, 1, 0], rng.normal(size=(n, 4)),
                  np.exp(rng.uniform(-5, -3.5, (n, 3))), rng.uniform(0.2, 1, n),
                  rng.uniform(0, 1, (n, 3)))
    cam = Camera.look_at([0.3, 1.2, 2.0], [0, 1, 0], 80, 64)
    forward = cam.cv_from_world[2, :3]
    depths = view_depths(g.means.astype(np.float32), cam.position, forward).astype(np.float64)
    for pipeline in ("tiles", "raster"):
        renderers = {s: gl.GLSplatRenderer(pipeline=pipeline, sort=s) for s in ("cpu", "gpu")}
        try:
            images = {s: r.render(g, cam) for s, r in renderers.items()}
            gpu = renderers["gpu"]
            order = np.frombuffer(gpu._buffers["order"].read(size=4 * n), dtype=np.uint32)
            assert sorted(order.tolist()) == list(range(n))
            assert np.all(np.diff(depths[order]) >= -1e-6), "front to back"
            ranks = np.frombuffer(gpu._textures["rank"].read(), dtype=np.uint32)[:n]
            np.testing.assert_array_equal(ranks[order], np.arange(n))
            ref = reference_render(g, cam)
            for s, image in images.items():
                mse = float(np.mean((image.astype(np.float64) - ref) ** 2))
                print(f"{pipeline} sort={s}: PSNR {10 * np.log10(1 / mse):.1f} dB")
                assert 10 * np.log10(1 / mse) >= 60
            assert np.abs(images["gpu"] - images["cpu"]).max() < 1e-4
        finally:
            for r in renderers.values():
                r.release()


def test_unknown_sort_is_refused():
    gl = pytest.importorskip("render.gl")
    with pytest.raises(ValueError, match="sort must be one of"):
        gl.GLSplatRenderer(sort="quick")
