"""Avatars posed with torch (render/cuda_pose.py) against ``Avatar.pose`` (numpy), attribute by
attribute, on torch's CPU device here and on CUDA where there is one.

Tolerances: the poser runs numpy's maths in the same precisions (vertices and skinning in
float32, triangle frames and quaternion products in float64), so it agrees to float32
rounding: means 1e-5 m; rotations (elementwise, up to the quaternion's sign), scales
(relative) and colours 1e-5 for 99.9 % of the Gaussians and 1e-4 at worst. The worst are on
millimetre face triangles when blendshapes are active: torch and numpy sum the float32
blendshape deltas in different orders (different BLAS), a last-bit vertex difference that a
millimetre edge turns into ~1e-5 of rotation. Measured on this CPU (2026-11-24): rest and fist
exact but colours 1.2e-7; smile worst quats 3.3e-5, scales 4.1e-5, colours 6.3e-6; random
codes worst quats 2.1e-5, scales 5.8e-5, colours 1.3e-5; 99.9th percentiles <= 2.4e-6.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from avatar.codes import Codes
from render.errors import RenderError

torch = pytest.importorskip("torch")
from render.cuda_pose import DeviceGaussians, DevicePoser, TorchAvatarPoser, place  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def avatar():
    from avatar.avatar import load_avatar

    return load_avatar("default")


@pytest.fixture(scope="module")
def baked(avatar):
    from avatar.avatar import Avatar

    assert avatar.data.shading == "lambert"
    return Avatar(dataclasses.replace(avatar.data, shading="baked"), avatar.template)


def device_or_skip(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here (torch sees none): the CPU-device run covers the maths")
    return name


def random_codes(seed: int) -> Codes:
    rng = np.random.default_rng(seed)

    def quats(shape):
        q = rng.normal(size=shape + (4,))
        q[..., 0] = np.abs(q[..., 0]) + 2.0  # moderate turns, as a tracker sends
        return q / np.linalg.norm(q, axis=-1, keepdims=True)

    base = Codes()
    return Codes(face=rng.uniform(0, 1, 52), gaze=rng.uniform(-0.5, 0.5, (2, 2)),
                 head=quats(base.head.shape[:-1]), body=quats(base.body.shape[:-1]),
                 hands=quats(base.hands.shape[:-1]), root_rotation=quats(()),
                 root_translation=rng.uniform(-0.3, 0.3, 3))


def named_codes() -> dict[str, Codes]:
    from app.poses import POSES

    return {"rest": Codes(), "wave": POSES["wave"].codes(0.6), "smile": POSES["smile"].codes(0.5),
            "fist": POSES["fist"].codes(0.5), "random": random_codes(7)}


def errors(got, expected) -> dict[str, float]:
    quat_err = np.minimum(np.abs(got.quats - expected.quats),
                          np.abs(got.quats + expected.quats)).max(1)
    scale_err = (np.abs(got.scales - expected.scales) / expected.scales).max(1)
    color_err = np.abs(got.colors - expected.colors).reshape(len(got), -1).max(1)
    out = {"means": np.abs(got.means - expected.means).max(),
               "opacities": np.abs(got.opacities - expected.opacities).max()}
    for name, err in (("quats", quat_err), ("scales", scale_err), ("colors", color_err)):
        out[name], out[name + "_p999"] = err.max(), np.quantile(err, 0.999)
    return out


def assert_matches(got, expected, label: str) -> None:
    assert len(got) == len(expected)
    e = errors(got, expected)
    print(f"{label}: " + ", ".join(f"{k} {v:.1e}" for k, v in e.items()))
    assert e["means"] < 1e-5 and e["opacities"] == 0
    for name in ("quats", "scales", "colors"):
        assert e[name] < 1e-4 and e[name + "_p999"] < 1e-5, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(named_codes()))
def test_torch_pose_matches_numpy_pose(avatar, device, name):
    poser = TorchAvatarPoser(device_or_skip(device))
    codes = named_codes()[name]
    posed = poser.pose(avatar.skinned, avatar.skin_pose(codes))
    assert isinstance(posed, DeviceGaussians) and posed.means.device.type == device
    assert_matches(posed.to_gaussians(), avatar.pose(codes), f"{device} {name} (lambert)")


@pytest.mark.parametrize("device", DEVICES)
def test_baked_and_lambert_avatars_shade_each_their_own_way(avatar, baked, device):
    poser = TorchAvatarPoser(device_or_skip(device))
    codes = named_codes()["wave"]
    for who in (baked, avatar, baked):  # one poser, both shadings, no state leaking across
        assert_matches(poser.pose(who.skinned, who.skin_pose(codes)).to_gaussians(),
                       who.pose(codes), f"{device} wave ({who.data.shading})")
    baked_colors = poser.pose(baked.skinned, baked.skin_pose(codes)).to_gaussians().colors
    np.testing.assert_array_equal(baked_colors, baked.data.colors)
    # The shadings differ on this avatar, so the comparisons above can tell them apart.
    assert np.abs(baked_colors
                  - poser.pose(avatar.skinned, avatar.skin_pose(codes)).to_gaussians().colors
                  ).max() > 0.1


def test_placement_matches_the_numpy_placement(avatar):
    from render.skinned import place_gaussians
    from common.rotation import quat_from_axis_angle, quat_to_matrix

    place_matrix = np.eye(4)
    place_matrix[:3, :3] = quat_to_matrix(quat_from_axis_angle([0, 1, 0], 2.5))
    place_matrix[:3, 3] = [0.4, 0.0, -1.5]
    codes = named_codes()["random"]
    got = TorchAvatarPoser().pose(avatar.skinned, avatar.skin_pose(codes, place_matrix))
    got = got.to_gaussians()
    assert_matches(got, place_gaussians(avatar.pose(codes), place_matrix), "placed")
    with pytest.raises(RenderError, match="finite 4x4"):
        place(TorchAvatarPoser().pose(avatar.skinned, avatar.skin_pose(codes)),
              np.full((4, 4), np.nan))


def test_static_arrays_go_up_once_per_avatar(avatar, baked):
    poser = TorchAvatarPoser()
    first = poser.upload(avatar.skinned)
    poser.pose(avatar.skinned, avatar.skin_pose(named_codes()["smile"]))
    assert poser.upload(avatar.skinned) is first  # kept, keyed on the avatar's arrays
    assert poser.upload(baked.skinned)["template"] is first["template"]  # one template, one copy
    poser.forget(avatar.skinned)
    assert poser.upload(avatar.skinned) is not first


def test_codes_with_nan_never_reach_the_poser():
    from avatar.codes import CodesError

    face = np.zeros(52)
    face[3] = np.nan
    with pytest.raises(CodesError):
        Codes(face=face)


def refused_skinned(avatar):
    """The avatar's arrays with one more skin influence per vertex, of bone -1 and weight 0:
    numpy poses it as the avatar itself (the weight is zero), the device poser refuses it."""
    skinned = avatar.skinned
    return dataclasses.replace(
        skinned, skin_indices=np.pad(skinned.skin_indices, ((0, 0), (0, 1)), constant_values=-1),
        skin_weights=np.pad(skinned.skin_weights, ((0, 0), (0, 1))))


def test_an_avatar_the_poser_cannot_take_falls_back_to_numpy_with_a_reason(avatar):
    odd = refused_skinned(avatar)
    codes = named_codes()["wave"]
    with pytest.raises(RenderError, match="negative skin index"):
        TorchAvatarPoser().pose(odd, avatar.skin_pose(codes))
    lines = []
    poser = DevicePoser(TorchAvatarPoser(), log=lines.append)
    for _ in range(2):
        got = poser.pose(odd, avatar.skin_pose(codes))
    assert isinstance(got, DeviceGaussians)
    assert_matches(got.to_gaussians(), avatar.pose(codes), "numpy fallback")
    assert len(lines) == 1 and "in numpy" in lines[0]  # said once
    assert "negative skin index" in poser.refused[odd]
    # A real avatar through the same poser is still posed on the device.
    assert_matches(poser.pose(avatar.skinned, avatar.skin_pose(codes)).to_gaussians(),
                   avatar.pose(codes), "device")
    assert avatar.skinned not in poser.refused


def test_bad_template_data_is_a_clear_error(avatar):
    broken = dataclasses.replace(avatar.skinned,
                                 binding_face=avatar.skinned.binding_face + 10**7)
    with pytest.raises(RenderError, match="triangle the template lacks"):
        TorchAvatarPoser().pose(broken, avatar.skin_pose(Codes()))


def test_device_gaussians_concatenate_keeps_order(avatar, baked):
    poser = TorchAvatarPoser()
    codes = named_codes()["fist"]
    both = DeviceGaussians.concatenate([poser.pose(avatar.skinned, avatar.skin_pose(codes)),
                                        poser.pose(baked.skinned, baked.skin_pose(codes))])
    assert len(both) == 2 * len(avatar) and both.sh_degree is None
    g = both.to_gaussians()
    np.testing.assert_array_equal(g.colors[len(avatar):], baked.data.colors)


class GsplatStandIn:
    """A MOCK of gsplat's ``rasterization`` (gsplat needs CUDA, absent here): records what the
    backend hands it and returns a blank image of the right shape. It checks the backend's
    wiring (device-posed tensors reach the rasteriser, non-finite ones dropped), not pixels;
    tests/test_cuda_render.py checks pixels on a GPU."""

    def __init__(self):
        self.calls = []

    def __call__(self, means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                 **options):
        self.calls.append(dict(means=means, quats=quats, scales=scales, opacities=opacities,
                               colors=colors, **options))
        return (torch.zeros((1, height, width, 3)), torch.zeros((1, height, width, 1)), {})


def cpu_cuda_backend(lines):
    from render.cuda import CudaBackend

    backend = CudaBackend.__new__(CudaBackend)  # the constructor insists on CUDA and gsplat
    backend._start(torch, GsplatStandIn(), torch.device("cpu"), lines.append)
    return backend


def test_cuda_backend_render_skinned_hands_device_posed_gaussians_to_gsplat(avatar):
    from render.camera import Camera

    lines = []
    backend = cpu_cuda_backend(lines)
    camera = Camera.look_at([0, 1.2, 2.5], [0, 1.0, 0], 48, 32)
    codes = named_codes()["smile"]
    image = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
    assert image.shape == (32, 48, 4)
    (call,) = backend._rasterization.calls
    expected = avatar.pose(codes)
    assert np.abs(call["means"].numpy() - expected.means).max() < 1e-5
    np.testing.assert_allclose(call["colors"].numpy(), expected.colors, atol=1e-4)
    assert call["sh_degree"] is None and lines == []
    # A device cloud with a non-finite Gaussian: dropped before gsplat, like host Gaussians.
    posed = backend.poser.pose(avatar.skinned, avatar.skin_pose(codes))
    posed.means[5] = float("nan")
    backend.render(posed, camera)
    assert len(backend._rasterization.calls[-1]["means"]) == len(avatar) - 1
    # An avatar the device poser refuses: numpy posing, one line saying why.
    odd = refused_skinned(avatar)
    backend.render_skinned(odd, avatar.skin_pose(codes), camera)
    backend.render_skinned(odd, avatar.skin_pose(codes), camera)
    assert len(lines) == 1 and "in numpy" in lines[0]
    backend.release()


def test_torch_cpu_posing_time_for_the_record(avatar):
    """Not a target (the device poser is for a GPU): prints torch-CPU vs numpy posing time."""
    poser = TorchAvatarPoser()
    codes = named_codes()["random"]
    poser.pose(avatar.skinned, avatar.skin_pose(codes))

    def median_ms(fn, runs=5):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))

    torch_ms = median_ms(lambda: poser.pose(avatar.skinned, avatar.skin_pose(codes)))
    numpy_ms = median_ms(lambda: avatar.pose(codes))
    print(f"{len(avatar)} Gaussians: torch CPU {torch_ms:.1f} ms, numpy {numpy_ms:.1f} ms "
          f"(median of 5, {torch.get_num_threads()} torch threads)")
    assert torch_ms > 0 and numpy_ms > 0
