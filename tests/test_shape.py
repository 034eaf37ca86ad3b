"""Body shape (avatar.shape): anny's parameters as deltas against the template, an avatar
posed on its shaped template the same by anny itself, the numpy, GL and torch posers, and the
shape kept whole by the .lca file (bad shapes refused in one line)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from app.poses import POSES
from avatar.avatar import Avatar, load_avatar
from avatar.lca import AvatarFileError, load_avatar_file, save_avatar_file
from avatar.shape import BodyShape, ShapeError
from avatar.template import load_template
from render.camera import Camera
from render.reference import render as reference_render

pytest.importorskip("anny")

# Heavier, taller, older and more masculine than the template (every parameter 0.5).
KNOWN = {"gender": 0.8, "age": 0.75, "weight": 0.8, "height": 0.7, "muscle": 0.6}


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def known_shape(template):
    from avatar.shape import anny_shape

    return anny_shape(KNOWN, {"head-scale-horiz-incr": 0.3}, template)


@pytest.fixture(scope="module")
def plain():
    return load_avatar("default")


@pytest.fixture(scope="module")
def shaped(plain, known_shape, template):
    return Avatar(dataclasses.replace(plain.data, shape=known_shape), template)


def test_the_default_phenotype_is_the_shipped_template(template):
    from avatar.shape import anny_shape

    shape = anny_shape({}, template=template)
    assert max(np.abs(shape.vertex_delta).max(), np.abs(shape.bone_head_delta).max()) < 1e-5


def test_a_known_shape_is_taller_and_wider_and_stands_as_the_template(known_shape, template):
    shaped = known_shape.apply(template)
    height = float(np.ptp(shaped.vertices[:, 1]))
    base = float(np.ptp(template.vertices[:, 1]))
    # The torso's depth at 70 % of the height (the arms hang beside it, not in front).
    chest = shaped.vertices[np.abs(shaped.vertices[:, 1] - 0.7 * height) < 0.01]
    chest0 = template.vertices[np.abs(template.vertices[:, 1] - 0.7 * base) < 0.01]
    print(f"known shape: {height:.3f} m tall against {base:.3f} m, chest depth "
          f"{np.ptp(chest[:, 2]):.3f} m against {np.ptp(chest0[:, 2]):.3f} m")
    assert height > base + 0.05 and np.ptp(chest[:, 2]) > np.ptp(chest0[:, 2]) + 0.01
    assert abs(shaped.vertices[:, 1].min()) < 1e-6 and np.allclose(shaped.bone_heads[0, [0, 2]], 0)
    assert shaped.faces is template.faces and shaped.skin_weights is template.skin_weights
    with pytest.raises(ShapeError, match="already shaped"):
        known_shape.apply(shaped)


def test_a_shaped_avatar_poses_as_anny_poses_that_body(shaped, known_shape):
    """Our numpy rig on the shaped template against anny's own forward pass with the same
    phenotype, local changes and pose (tests/anny_reference.py)."""
    from avatar.shape import anny_model
    from tests.anny_reference import anny_posed_vertices

    model = anny_model(tuple(sorted(known_shape.local_changes)), facial_actions="all")
    codes = POSES["wave"].codes(0.3)
    offset = shaped.template.vertices[0] - _anny_rest(model, known_shape)[0]
    theirs = anny_posed_vertices(model, shaped.rig, codes, offset,
                                 phenotype=known_shape.phenotype,
                                 local_changes=known_shape.local_changes)
    ours = shaped.rig.posed_vertices(codes)
    error = float(np.abs(ours - theirs).max())
    print(f"shaped avatar against anny: largest difference {error * 1e3:.3f} mm")
    assert error < 1e-4


def _anny_rest(model, shape):
    import torch

    from avatar.shape import OURS_FROM_ANNY

    with torch.no_grad():
        out = model(phenotype_kwargs=shape.phenotype, local_changes_kwargs=shape.local_changes)
    return out["rest_vertices"][0].numpy() @ OURS_FROM_ANNY.T


def test_the_gl_poser_poses_a_shaped_avatar_as_numpy_does(plain, shaped):
    gl = pytest.importorskip("render.gl")
    try:
        renderer = gl.GLSplatRenderer()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    codes = POSES["wave"].codes(0.4)
    try:
        # A room with the default body and a shaped one: each on its own template.
        renderer.upload_avatars([plain.skinned, shaped.skinned])
        renderer.pose_avatars([plain.skin_pose(codes), shaped.skin_pose(codes)])
        means = renderer.means()
        n = len(plain)
        np.testing.assert_allclose(means[:n], plain.pose(codes).means, atol=2e-6)
        np.testing.assert_allclose(means[n:], shaped.pose(codes).means, atol=2e-6)
        renderer.upload_avatars([shaped.skinned])
        renderer.pose_avatars([shaped.skin_pose(codes)])
        camera = Camera.look_at([0.3, 1.3, 2.6], [0, 1.0, 0], 96, 128, vertical_fov_deg=50)
        ours = renderer.render(None, camera)
    finally:
        renderer.release()
    ref = reference_render(shaped.pose(codes), camera)
    mse = float(np.mean((ours.astype(np.float64) - ref) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    print(f"GPU-posed shaped avatar vs the reference: PSNR {psnr:.1f} dB")
    assert ref[..., 3].mean() > 0.05 and psnr >= 60
    moved = np.linalg.norm(shaped.pose(codes).means - plain.pose(codes).means, axis=1)
    assert np.median(moved) > 0.01  # the shape really moved the Gaussians


def test_the_torch_poser_poses_a_shaped_avatar_as_numpy_does(plain, shaped):
    pytest.importorskip("torch")
    from render.cuda_pose import TorchAvatarPoser

    codes = POSES["walk"].codes(0.5)
    poser = TorchAvatarPoser("cpu")
    for avatar in (plain, shaped):
        got = poser.pose(avatar.skinned, avatar.skin_pose(codes))
        np.testing.assert_allclose(got.to_gaussians().means, avatar.pose(codes).means, atol=1e-5)


def test_a_shaped_avatar_round_trips_through_the_lca_file(tmp_path, shaped, template, plain):
    path = tmp_path / "shaped.lca"
    save_avatar_file(path, shaped.data)
    back = load_avatar_file(path, template)
    assert back.shape.phenotype == shaped.data.shape.phenotype
    assert back.shape.local_changes == shaped.data.shape.local_changes
    np.testing.assert_array_equal(back.shape.vertex_delta, shaped.data.shape.vertex_delta)
    np.testing.assert_array_equal(back.shape.bone_head_delta, shaped.data.shape.bone_head_delta)
    codes = POSES["wave"].codes(0.2)
    np.testing.assert_allclose(Avatar(back, template).pose(codes).means,
                               shaped.pose(codes).means, atol=2e-3)  # compact float16 colours
    extra = (path.stat().st_size - _size(tmp_path, plain.data)) / 1e3
    print(f"the shape adds {extra:.0f} kB to the .lca")
    # An avatar without a shape stays valid and unshaped.
    assert load_avatar_file(tmp_path / "plain.lca", template).shape is None


def _size(tmp_path, data) -> int:
    save_avatar_file(tmp_path / "plain.lca", data)
    return (tmp_path / "plain.lca").stat().st_size


@pytest.mark.parametrize("case, message", [
    ("nan", "shape_vertex_delta must be finite"),
    ("far", "shape delta of 3 m is over"),
    ("rows", "shape deltas have shapes"),
    ("phenotype", "shape parameter 'weight' = 1.5 is not a number in"),
    ("name", "unknown phenotype parameters"),
    ("template", "made for another template"),
])
def test_bad_shapes_are_refused_in_one_line(tmp_path, shaped, template, case, message):
    s = shaped.data.shape
    vertex, head = s.vertex_delta.copy(), s.bone_head_delta.copy()
    phenotype, data = dict(s.phenotype), shaped.data
    if case == "nan":
        vertex[10, 1] = np.nan
    elif case == "far":
        head[3, 0] = 3.0
    elif case == "rows":
        vertex = vertex[:-5]
    elif case == "phenotype":
        phenotype["weight"] = 1.5
    elif case == "name":
        phenotype["wings"] = 1.0
    elif case == "template":
        data = dataclasses.replace(data, template={**data.template, "vertices": 100})
        vertex = vertex[:100]
    bad = dataclasses.replace(data, shape=BodyShape(phenotype, s.local_changes, vertex, head))
    path = tmp_path / f"{case}.lca"
    save_avatar_file(path, bad)
    with pytest.raises(AvatarFileError, match=message) as raised:
        load_avatar_file(path, template)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_scan_shaped_body_is_fitted_closer_than_the_template(known_shape, template):
    """fit_shape_to_points (the scan import's shape fit) on the known body's surface at rest,
    brought to the template's height as a scan of unknown units is."""
    from avatar.shape import fit_shape_to_points

    body = known_shape.apply(template).vertices
    points = body * (np.ptp(template.vertices[:, 1]) / np.ptp(body[:, 1]))
    rest = np.tile([1.0, 0.0, 0.0, 0.0], (len(template.bone_names), 1))
    shape, before, after = fit_shape_to_points(points, template, rest, steps=40)
    error = np.linalg.norm(shape.apply(template).vertices - points, axis=1) * 1e3
    default = np.linalg.norm(template.vertices - points, axis=1) * 1e3
    print(f"scan shape fit: distance {before * 1e3:.1f} -> {after * 1e3:.1f} mm; vertex error "
          f"{error.mean():.1f} mm (the template: {default.mean():.1f} mm); "
          f"{ {k: round(v, 2) for k, v in shape.phenotype.items()} }")
    assert after < 0.7 * before and error.mean() < 0.7 * default.mean()
    assert abs(np.ptp(shape.apply(template).vertices[:, 1]) - np.ptp(points[:, 1])) < 1e-3
