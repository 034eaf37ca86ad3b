"""The differentiable torch splatter against the reference renderer (forward) and against
finite differences (gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from render import reference, torch_splat
from render.camera import Camera
from render.gaussians import Gaussians


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def as_tensors(g: Gaussians, dtype=torch.float32, requires_grad=False) -> list:
    return [torch.tensor(getattr(g, f), dtype=dtype, requires_grad=requires_grad)
            for f in ("means", "quats", "scales", "opacities", "colors")]


def random_scene(seed: int, n: int, sh_k: int | None) -> Gaussians:
    """Gaussians around the origin, some behind or beside the camera, mixed sizes."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, 3)) * [0.6, 0.5, 0.8]
    quats = rng.normal(size=(n, 4))
    scales = np.exp(rng.normal(-3.3, 0.7, size=(n, 3)))
    opacities = rng.uniform(0.0, 1.0, size=n)
    colors = (rng.uniform(0, 1, size=(n, 3)) if sh_k is None
              else rng.normal(0, 0.3, size=(n, sh_k, 3)))
    return Gaussians(means, quats, scales, opacities, colors)


@pytest.mark.parametrize("seed, sh_k, size", [(0, None, (96, 80)), (1, 1, (64, 64)),
                                              (2, 4, (70, 50)), (3, 9, (33, 47)),
                                              (4, 16, (80, 60))])
def test_forward_matches_reference_on_random_scenes(seed, sh_k, size):
    g = random_scene(seed, 1500, sh_k)
    w, h = size
    # Close enough that some Gaussians sit behind the near plane or off to the side.
    camera = Camera.look_at([0.4, 0.3, 2.2], [0.0, 0.0, 0.0], w, h, near=0.3)
    background = (0.2, 0.3, 0.4) if seed % 2 else None
    expected = reference.render(g, camera, background)
    image, info = torch_splat.render_with_info(*as_tensors(g), camera, background)
    assert image.shape == (h, w, 4) and image.dtype == torch.float32
    assert info.truncated_tiles == 0 and 0 < info.drawn < len(g)
    assert psnr(image.numpy(), expected) >= 60.0


def test_forward_matches_reference_at_float64_to_rounding():
    g = random_scene(5, 600, 4)
    camera = Camera.look_at([0.0, 0.2, 2.5], [0.0, 0.0, 0.0], 48, 40)
    image = torch_splat.render(*as_tensors(g, torch.float64), camera, tile_size=16, chunk=7)
    np.testing.assert_allclose(image.numpy(), reference.render(g, camera), atol=1e-6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def posed_avatar() -> Gaussians:
    from app.poses import POSES
    from avatar.avatar import load_avatar

    return load_avatar("default").pose(POSES["wave"].codes(0.5))


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["body", "portrait"])
def test_forward_matches_reference_on_a_posed_default_avatar(posed_avatar, framing):
    if framing == "body":
        camera = Camera.look_at([0.0, 1.0, 3.3], [0.0, 0.88, 0.0], 96, 128, vertical_fov_deg=35)
    else:  # head and shoulders, as a webcam sees a caller
        camera = Camera.look_at([0.0, 1.5, 1.0], [0.0, 1.45, 0.0], 128, 96, vertical_fov_deg=40)
    expected = reference.render(posed_avatar, camera)
    image, info = torch_splat.render_with_info(*as_tensors(posed_avatar), camera)
    assert info.truncated_tiles == 0 and info.drawn > 100_000
    assert psnr(image.numpy(), expected) >= 60.0


def tiny_scene(dtype=torch.float64):
    """Four Gaussians in front of a 12x10 camera, one hidden behind a nearly opaque pair
    (so the early stop happens), SH degree 1, none near a threshold."""
    means = [[0.0, 0.0, -2.0], [0.08, -0.05, -2.2], [-0.1, 0.06, -2.4], [0.02, 0.0, -2.6]]
    quats = [[0.9, 0.1, -0.2, 0.3], [0.7, 0.5, 0.1, 0.0], [1.0, 0.0, 0.0, 0.2],
             [0.8, -0.3, 0.2, 0.1]]
    scales = [[0.09, 0.05, 0.04], [0.06, 0.1, 0.05], [0.12, 0.07, 0.09], [0.1, 0.1, 0.1]]
    opacities = [0.95, 0.9, 0.6, 0.8]
    rng = np.random.default_rng(7)
    colors = rng.normal(0, 0.2, size=(4, 4, 3))
    camera = Camera(np.eye(4), 12, 10, 40.0, 40.0, 6.1, 4.9)
    values = [torch.tensor(v, dtype=dtype, requires_grad=True)
              for v in (means, quats, scales, opacities, colors)]
    return values, camera


def test_gradients_match_finite_differences_for_every_input():
    values, camera = tiny_scene()
    weights = torch.linspace(0.5, 1.5, 12 * 10 * 4, dtype=torch.float64).reshape(10, 12, 4)

    def loss_image(*inputs):
        return torch_splat.render(*inputs, camera, background=(0.1, 0.2, 0.3), tile_size=4)

    image = loss_image(*values)
    assert float(image[..., 3].detach().min()) > 0.05  # every pixel sees the scene
    torch.autograd.gradcheck(loss_image, values, eps=1e-6, atol=1e-6, rtol=1e-4)
    loss = (loss_image(*values) * weights).sum()
    grads = torch.autograd.grad(loss, values)
    assert all(bool(g.abs().sum() > 0) for g in grads)


def test_gradients_match_central_differences_through_the_early_stop():
    # Three nearly opaque Gaussians on one axis: T falls 1 -> 0.01 -> 2e-4 and the third
    # would take it under 1e-4, so it is skipped; the gradient must skip it as well.
    means = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, -2.5], [0.0, 0.0, -3.0]],
                         dtype=torch.float64, requires_grad=True)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64)
    scales = torch.full((3, 3), 0.05, dtype=torch.float64)
    opacities = torch.tensor([0.99, 0.98, 0.9], dtype=torch.float64, requires_grad=True)
    colors = torch.eye(3, dtype=torch.float64, requires_grad=True)
    camera = Camera(np.eye(4), 8, 8, 60.0, 60.0, 3.5, 3.5)  # pixel (3, 3) on the axis

    def centre(o, c):
        return torch_splat.render(means, quats, scales, o, c, camera)[3, 3]

    px = centre(opacities, colors)
    np.testing.assert_allclose(px.detach().numpy(), [0.99, 0.98 * 0.01, 0, 1 - 2e-4],
                               atol=1e-7)
    g_op, g_col = torch.autograd.grad(px[2], (opacities, colors), retain_graph=True)
    assert float(g_op[2]) == 0.0 and float(g_col[2].abs().sum()) == 0.0
    # d(green)/d(o_1) by central differences (both states stay on the same side of 1e-4).
    eps = 1e-5
    plus, minus = opacities.detach().clone(), opacities.detach().clone()
    plus[1] += eps
    minus[1] -= eps
    numeric = (centre(plus, colors)[1] - centre(minus, colors)[1]) / (2 * eps)
    g_op, = torch.autograd.grad(px[1], opacities)
    assert float(g_op[1]) == pytest.approx(float(numeric.detach()), rel=1e-6)


def test_a_full_tile_keeps_its_front_most_gaussians_and_says_so():
    # Five Gaussians stacked on the axis; with room for two per tile only the two nearest
    # are drawn.
    n = 5
    means = np.zeros((n, 3))
    means[:, 2] = -np.arange(2.0, 2.0 + 0.5 * n, 0.5)[::-1]  # farthest first in the array
    colors = np.eye(3)[np.arange(n) % 3]
    g = Gaussians(means, np.tile([1.0, 0, 0, 0], (n, 1)), np.full((n, 3), 0.05),
                  np.full(n, 0.5), colors)
    camera = Camera(np.eye(4), 16, 16, 60.0, 60.0, 8.0, 8.0)
    image, info = torch_splat.render_with_info(*as_tensors(g), camera, tile_capacity=2)
    assert info.truncated_tiles >= 1
    expected = reference.render(g.subset(np.array([n - 1, n - 2])), camera)
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)


def test_nothing_drawable_gives_the_background_and_zero_gradients():
    g = random_scene(8, 20, None)
    means, quats, scales, opacities, colors = as_tensors(g, requires_grad=True)
    behind = Camera.look_at([0.0, 0.0, -30.0], [0.0, 0.0, -60.0], 16, 12)
    image = torch_splat.render(means, quats, scales, opacities, colors, behind, (1.0, 0.5, 0.0))
    np.testing.assert_array_equal(image.detach().numpy(),
                                  np.broadcast_to([1.0, 0.5, 0.0, 1.0], (12, 16, 4)))
    image.sum().backward()
    assert float(means.grad.abs().sum()) == 0.0


def test_inputs_of_the_wrong_shape_or_dtype_are_named():
    values = as_tensors(random_scene(9, 10, None))
    camera = Camera.look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], 16, 16)
    bad = list(values)
    bad[2] = bad[2][:, :2]
    with pytest.raises(ValueError, match="scales has shape"):
        torch_splat.render(*bad, camera)
    bad = list(values)
    bad[3] = bad[3].double()
    with pytest.raises(ValueError, match="opacities is torch.float64"):
        torch_splat.render(*bad, camera)
    bad = list(values)
    bad[4] = torch.zeros(10, 2, 3)
    with pytest.raises(ValueError, match="colors has shape"):
        torch_splat.render(*bad, camera)
    with pytest.raises(ValueError, match="background"):
        torch_splat.render(*values, camera, background=(1.0, 0.0))


@pytest.mark.slow
def test_hand_written_backward_matches_autograd_on_a_posed_avatar(posed_avatar):
    camera = Camera.look_at([0.0, 1.5, 1.0], [0.0, 1.45, 0.0], 64, 48, vertical_fov_deg=40)
    rng = np.random.default_rng(3)
    weights = torch.tensor(rng.uniform(-1, 1, size=(48, 64, 3)), dtype=torch.float64)
    grads = []
    for hand in (True, False):
        values = as_tensors(posed_avatar, torch.float64, requires_grad=True)
        proj = torch_splat.project(*values, camera)
        rgb, transmittance, _ = torch_splat.rasterize(proj, 64, 48, hand_backward=hand)
        loss = (rgb * weights).sum() + (transmittance * weights[..., 0]).sum()
        grads.append([g.numpy() for g in torch.autograd.grad(loss, values)])
    for hand, auto in zip(*grads):
        scale = np.abs(auto).max()
        assert scale > 0
        np.testing.assert_allclose(hand, auto, atol=1e-9 * scale, rtol=1e-7)
