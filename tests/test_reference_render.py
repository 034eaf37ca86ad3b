"""The reference renderer against analytic results (footprints, order, culling, projection)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import render.reference as reference
from render.camera import Camera
from render.gaussians import Gaussians
from render.reference import SH_C0, project, render


def one_camera(width=64, height=48, f=60.0, cx=None, cy=None, **kw) -> Camera:
    """Camera at the origin looking down -Z (OpenXR), so world (x, y, -z) is OpenCV (x, -y, z)."""
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return Camera(np.eye(4), width, height, f, f, cx, cy, **kw)


def gaussians(means, scales, opacities, colors, quats=None) -> Gaussians:
    means = np.asarray(means, dtype=np.float64).reshape(-1, 3)
    n = len(means)
    quats = np.tile([1.0, 0, 0, 0], (n, 1)) if quats is None else quats
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64).reshape(-1, 1)
                             if np.ndim(scales) <= 1 else scales, (n, 3))
    colors = np.asarray(colors, dtype=np.float64)
    colors = np.broadcast_to(colors, (n, 3)) if colors.ndim == 1 else colors
    return Gaussians(means, quats, scales, np.broadcast_to(opacities, (n,)), colors)


def test_isotropic_gaussian_footprint_and_peak():
    # Mean on the optical axis, projected onto the centre of pixel (32, 24).
    cam = one_camera(cx=32.5, cy=24.5)
    z, sigma_world, opacity = 2.0, 0.05, 0.8
    color = np.array([0.2, 0.6, 1.0])
    img = render(gaussians([0, 0, -z], sigma_world, opacity, color), cam)

    sigma2_px = (cam.fx * sigma_world / z) ** 2 + 0.3  # EWA + dilation
    peak = img[24, 32]
    np.testing.assert_allclose(peak, np.r_[color * opacity, opacity], rtol=1e-6)

    # Pixels drawn are exactly those whose centre lies inside the 1/255 contour.
    jj, ii = np.mgrid[0:cam.height, 0:cam.width]
    d2 = (ii + 0.5 - 32.5) ** 2 + (jj + 0.5 - 24.5) ** 2
    radius2 = 2 * sigma2_px * math.log(255 * opacity)
    drawn = img[..., 3] > 0
    assert not (np.abs(d2 - radius2) < 1e-3).any(), "test geometry sits on the contour"
    np.testing.assert_array_equal(drawn, d2 < radius2)
    expected_alpha = np.where(d2 < radius2, opacity * np.exp(-0.5 * d2 / sigma2_px), 0)
    np.testing.assert_allclose(img[..., 3], expected_alpha, atol=1e-6)


def test_nearer_gaussian_is_in_front_whatever_the_array_order():
    cam = one_camera(cx=32.5, cy=24.5)
    red, blue = [1.0, 0, 0], [0, 0, 1.0]
    near_red = ([0, 0, -2.0], red)
    far_blue = ([0, 0, -3.0], blue)
    for first, second in ((near_red, far_blue), (far_blue, near_red)):
        g = gaussians([first[0], second[0]], 0.05, 0.99, np.array([first[1], second[1]]))
        img = render(g, cam)
        # Red at 0.99 over blue at 0.99 * (1 - 0.99).
        np.testing.assert_allclose(img[24, 32], [0.99, 0, 0.99 * 0.01, 1 - 0.01 * 0.01],
                                   atol=1e-6)


def test_pixel_stops_before_transmittance_falls_below_1e4():
    cam = one_camera(cx=32.5, cy=24.5)
    colors = np.eye(3)
    g = gaussians([[0, 0, -2.0], [0, 0, -2.5], [0, 0, -3.0]], 0.05, [0.99, 0.98, 0.9], colors)
    px = render(g, cam)[24, 32]
    # T: 1 -> 0.01 -> 2e-4; the third would leave 2e-5 < 1e-4, so it is not added.
    np.testing.assert_allclose(px, [0.99, 0.98 * 0.01, 0.0, 1 - 2e-4], atol=1e-7)


def test_culling_behind_camera_and_at_near_plane():
    cam = one_camera(near=0.5)
    behind = gaussians([0, 0, 1.0], 0.05, 0.9, [1.0, 1, 1])
    assert render(behind, cam).max() == 0
    inside_near = gaussians([0, 0, -0.49], 0.01, 0.9, [1.0, 1, 1])
    assert render(inside_near, cam).max() == 0
    beyond_near = gaussians([0, 0, -0.51], 0.01, 0.9, [1.0, 1, 1])
    assert render(beyond_near, cam)[..., 3].max() > 0.5
    beyond_far = gaussians([0, 0, -200.0], 1.0, 0.9, [1.0, 1, 1])
    assert render(beyond_far, cam).max() == 0


def test_asymmetric_fov_puts_a_point_where_the_maths_says():
    left, right, up, down = -0.9, 0.5, 0.6, -0.8
    width, height = 70, 50
    cam = Camera.from_fov(np.eye(4), width, height, left, right, up, down)
    direction_x, direction_y = 0.3, -0.2  # tan of the angles to the point
    depth = 3.0
    world = [direction_x * depth, direction_y * depth, -depth]
    u = (direction_x - math.tan(left)) / (math.tan(right) - math.tan(left)) * width
    v = (math.tan(up) - direction_y) / (math.tan(up) - math.tan(down)) * height
    img = render(gaussians(world, 0.004, 0.9, [1.0, 1, 1]), cam)
    alpha = img[..., 3].astype(np.float64)
    jj, ii = np.mgrid[0:height, 0:width]
    centroid = (np.sum(alpha * (ii + 0.5)) / alpha.sum(), np.sum(alpha * (jj + 0.5)) / alpha.sum())
    # The footprint is clipped by nothing here, so its centroid is the projected mean.
    np.testing.assert_allclose(centroid, (u, v), atol=0.02)
    assert np.unravel_index(np.argmax(alpha), alpha.shape) == (int(v), int(u))


def test_sh_degree_0_equals_rgb_and_degree_1_follows_the_view():
    rng = np.random.default_rng(1)
    n = 40
    means = np.c_[rng.uniform(-0.5, 0.5, (n, 2)), rng.uniform(-3, -2, n)]
    rgb = rng.uniform(0, 1, (n, 3))
    cam = one_camera()
    base = dict(quats=rng.normal(size=(n, 4)))
    scales = rng.uniform(0.01, 0.1, (n, 3))
    with_rgb = gaussians(means, scales, 0.7, rgb, **base)
    with_sh = gaussians(means, scales, 0.7, ((rgb - 0.5) / SH_C0)[:, None, :], **base)
    np.testing.assert_allclose(render(with_sh, cam), render(with_rgb, cam), atol=1e-6)

    # Degree 1: the band-1 term -C1 * x * sh[3] (3DGS order y, z, x) for a view along +x.
    sh = np.zeros((1, 4, 3))
    sh[0, 3] = [1.0, 0, 0]
    g = gaussians([0, 0, -2.0], 0.05, 0.5, sh)
    right_cam = Camera.look_at([-2, 0, -2.0], [0, 0, -2.0], 33, 33)  # looks along +x
    left_cam = Camera.look_at([2, 0, -2.0], [0, 0, -2.0], 33, 33)  # looks along -x
    seen_from_left = render(g, right_cam)[16, 16, 0] / 0.5
    seen_from_right = render(g, left_cam)[16, 16, 0] / 0.5
    np.testing.assert_allclose(seen_from_left, max(0.0, 0.5 - reference.SH_C1), atol=1e-6)
    np.testing.assert_allclose(seen_from_right, 0.5 + reference.SH_C1, atol=1e-6)


@pytest.mark.parametrize("field", ["means", "quats", "scales", "opacities", "colors"])
def test_nan_gaussians_are_dropped(field):
    rng = np.random.default_rng(2)
    n = 30
    means = np.c_[rng.uniform(-0.5, 0.5, (n, 2)), rng.uniform(-3, -2, n)]
    g = gaussians(means, rng.uniform(0.01, 0.1, (n, 3)), 0.7, rng.uniform(0, 1, (n, 3)),
                  quats=rng.normal(size=(n, 4)))
    cam = one_camera()
    clean = render(g, cam)
    bad = g.subset(np.r_[np.arange(n), [3, 7]])  # two extra copies, then spoil them
    getattr(bad, field)[n:] = np.nan
    np.testing.assert_array_equal(render(bad, cam), clean)
    degenerate = g.subset(np.r_[np.arange(n), [5]])
    degenerate.scales[n] = 0.0
    np.testing.assert_array_equal(render(degenerate, cam), clean)


def test_zero_gaussians_and_background():
    cam = one_camera()
    assert render(Gaussians.empty(), cam).shape == (48, 64, 4)
    assert render(Gaussians.empty(), cam).max() == 0
    np.testing.assert_array_equal(render(Gaussians.empty(), cam, background=[0.1, 0.2, 0.3])[5, 5],
                                  np.float32([0.1, 0.2, 0.3, 1.0]))
    g = gaussians([0, 0, -2.0], 0.05, 0.6, [1.0, 0, 0])
    over = render(g, one_camera(cx=32.5, cy=24.5), background=[0, 1.0, 0])[24, 24 + 8]
    bare = render(g, one_camera(cx=32.5, cy=24.5))[24, 24 + 8]
    np.testing.assert_allclose(over, [bare[0], 1 - bare[3], 0, 1.0], atol=1e-6)
    assert render(g, Camera(np.eye(4), 0, 0, 10, 10, 0, 0)).shape == (0, 0, 4)


def brute_force(g: Gaussians, cam: Camera) -> np.ndarray:
    """3DGS's per-pixel loop, written out plainly (the projection comes from ``project``)."""
    p = project(g, cam)
    out = np.zeros((cam.height, cam.width, 4))
    for j in range(cam.height):
        for i in range(cam.width):
            t, rgb = 1.0, np.zeros(3)
            for k in range(len(p.depth)):
                dx, dy = i + 0.5 - p.mean2d[k, 0], j + 0.5 - p.mean2d[k, 1]
                a, b, c = p.conic[k]
                alpha = min(0.99, p.opacity[k] * math.exp(-0.5 * (a * dx * dx + 2 * b * dx * dy
                                                                  + c * dy * dy)))
                if alpha < 1 / 255:
                    continue
                if t * (1 - alpha) < 1e-4:
                    break
                rgb += p.rgb[k] * alpha * t
                t *= 1 - alpha
            out[j, i] = [*rgb, 1 - t]
    return out


def test_vectorised_compositing_matches_the_per_pixel_loop(monkeypatch):
    rng = np.random.default_rng(3)
    n = 60
    means = np.c_[rng.uniform(-0.4, 0.4, (n, 2)), rng.uniform(-2.5, -1.5, n)]
    g = gaussians(means, rng.uniform(0.02, 0.15, (n, 3)), rng.uniform(0.3, 1.0, n),
                  rng.uniform(0, 1, (n, 3)), quats=rng.normal(size=(n, 4)))
    cam = one_camera(width=24, height=20, f=25.0)
    monkeypatch.setattr(reference, "PAIRS_PER_CHUNK", 97)  # many chunks, carried state
    np.testing.assert_allclose(render(g, cam), brute_force(g, cam), atol=2e-6)


def test_anisotropic_covariance_orientation():
    # A Gaussian long along world x, rotated 90 degrees about the view axis, is long along y.
    cam = one_camera(width=41, height=41, f=100.0, cx=20.5, cy=20.5)
    scales = np.array([[0.2, 0.02, 0.02]])
    quarter_turn_z = np.array([[math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]])
    flat = render(gaussians([0, 0, -4.0], scales, 0.9, [1.0, 1, 1]), cam)[..., 3]
    turned = render(gaussians([0, 0, -4.0], scales, 0.9, [1.0, 1, 1],
                              quats=quarter_turn_z), cam)[..., 3]
    np.testing.assert_allclose(turned, flat.T, atol=1e-6)
    assert (flat[20] > 0).sum() > 3 * (flat[:, 20] > 0).sum()
