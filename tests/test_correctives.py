"""Correctives (LCA's pose- and expression-dependent corrections of the template): the numpy
reference poser applies them as stated, the GL and torch posers agree with it, they survive
the .lca file, and bad ones are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.poses import POSES
from avatar.avatar import Avatar, load_avatar, pose_features
from avatar.codes import BODY_BONES, Codes
from avatar.lca import AvatarFileError, load_avatar_file, save_avatar_file
from render.camera import Camera
from render.reference import render as reference_render
from render.skinned import SkinPose, posed_mesh
from tests.avatars import with_correctives


@pytest.fixture(scope="module")
def plain():
    return load_avatar("default")


@pytest.fixture(scope="module")
def corrected(plain):
    return Avatar(with_correctives(plain.data, plain.template), plain.template)


def smiling_wave() -> Codes:
    codes = POSES["wave"].codes(0.4)
    face = np.zeros(52)
    face[[17, 23, 24]] = [0.6, 0.8, 0.8]
    return codes.replace(face=face)


def test_rest_pose_has_no_correction_and_a_wave_moves_the_mesh_as_stated(plain, corrected):
    rest = Codes()
    np.testing.assert_array_equal(corrected.pose(rest).means, plain.pose(rest).means)
    codes = smiling_wave()
    pose = corrected.skin_pose(codes)
    assert pose.features.shape == (9 * len(BODY_BONES) + 52,)
    # The statement, one vertex at a time: rest + sum_m basis * feature, then skinning.
    c = corrected.skinned.correctives
    offsets = np.zeros((len(c.index), 3), np.float32)
    for v in range(len(c.index)):
        for m in range(c.width):
            offsets[v] += c.basis[v, m] * pose.features[c.index[v, m]]
    shaped = corrected.rig.shaped_vertices(codes.face) + offsets
    expected = corrected.rig.skin(shaped, corrected.rig.pose_codes(codes))
    np.testing.assert_allclose(posed_mesh(corrected.skinned, pose), expected, atol=2e-6)
    moved = np.linalg.norm(corrected.pose(codes).means - plain.pose(codes).means, axis=1)
    share = float((moved > 1e-4).mean())
    print(f"correctives move {share:.0%} of the waving, smiling avatar's Gaussians, up to "
          f"{moved.max() * 1e3:.1f} mm")
    assert share > 0.05 and moved.max() > 0.005


def test_features_are_local_turns_then_face_weights():
    turn = np.array([[np.cos(0.25), 0.0, np.sin(0.25), 0.0]])  # 0.5 rad about +Y
    features = pose_features(turn, np.arange(52) / 52)
    rotation = features[:9].reshape(3, 3) + np.eye(3)
    np.testing.assert_allclose(rotation, [[np.cos(0.5), 0, np.sin(0.5)], [0, 1, 0],
                                          [-np.sin(0.5), 0, np.cos(0.5)]], atol=1e-6)
    np.testing.assert_allclose(features[9:], np.arange(52) / 52, atol=1e-7)


def test_a_pose_without_features_is_refused_for_an_avatar_with_correctives(corrected):
    pose = corrected.skin_pose(Codes())
    with pytest.raises(ValueError, match="needs their features"):
        posed_mesh(corrected.skinned, SkinPose(pose.transforms, pose.blendshape_weights))


def test_gpu_poser_applies_the_same_correctives(plain, corrected):
    gl = pytest.importorskip("render.gl")
    try:
        renderer = gl.GLSplatRenderer()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    codes = smiling_wave()
    place = np.eye(4)
    place[0, 3] = 1.0
    try:
        # A room mixing an avatar with correctives and one without: each posed its own way.
        renderer.upload_avatars([plain.skinned, corrected.skinned])
        renderer.pose_avatars([plain.skin_pose(codes), corrected.skin_pose(codes, place)])
        means = renderer.means()
        n = len(plain)
        np.testing.assert_allclose(means[:n], plain.pose(codes).means, atol=2e-6)
        expected = corrected.pose(codes).means + np.float32([1.0, 0.0, 0.0])
        np.testing.assert_allclose(means[n:], expected, atol=2e-6)
        renderer.upload_avatars([corrected.skinned])
        renderer.pose_avatars([corrected.skin_pose(codes)])
        camera = Camera.look_at([0.3, 1.3, 2.4], [0, 1.0, 0], 96, 128, vertical_fov_deg=50)
        ours = renderer.render(None, camera)
        with pytest.raises(gl.RenderError, match="finite pose features"):
            renderer.pose_avatars([SkinPose(plain.skin_pose(codes).transforms, codes.face)])
    finally:
        renderer.release()
    ref = reference_render(corrected.pose(codes), camera)
    mse = float(np.mean((ours.astype(np.float64) - ref) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    print(f"GPU-posed avatar with correctives vs the reference: PSNR {psnr:.1f} dB")
    assert ref[..., 3].mean() > 0.05 and psnr >= 60


def test_torch_poser_applies_the_same_correctives(corrected):
    pytest.importorskip("torch")
    from render.cuda_pose import TorchAvatarPoser

    codes = smiling_wave()
    got = TorchAvatarPoser("cpu").pose(corrected.skinned, corrected.skin_pose(codes))
    np.testing.assert_allclose(got.to_gaussians().means, corrected.pose(codes).means, atol=1e-5)


def test_correctives_round_trip_through_the_lca_file(tmp_path, corrected):
    exact, compact = tmp_path / "exact.lca", tmp_path / "compact.lca"
    save_avatar_file(exact, corrected.data, compact=False)
    save_avatar_file(compact, corrected.data)
    for path, tolerance in ((exact, 0.0), (compact, 1e-3)):  # float16: a 2^-11 step
        back = load_avatar_file(path, corrected.template)
        assert back.corrective_bones == list(BODY_BONES)
        np.testing.assert_array_equal(back.corrective_index, corrected.data.corrective_index)
        np.testing.assert_allclose(back.corrective_basis, corrected.data.corrective_basis,
                                   rtol=tolerance, atol=1e-7)  # and its subnormal step
    size = compact.stat().st_size / 1e6
    print(f"default avatar + width-12 correctives: {size:.1f} MB (compact)")
    assert size < 20


@pytest.mark.parametrize("case, message", [
    ("index", "corrective_index outside"),
    ("basis", "corrective_basis over"),
    ("nan", "corrective_basis must be finite"),
    ("bones", "correctives name bones the template lacks"),
    ("shape", "corrective tensors have shapes"),
])
def test_bad_correctives_are_refused(tmp_path, corrected, case, message):
    import dataclasses

    data = corrected.data
    index, basis, bones = data.corrective_index.copy(), data.corrective_basis.copy(), None
    if case == "index":
        index[5, 2] = 10**6
    elif case == "basis":
        basis[7, 1, 0] = 3.0
    elif case == "nan":
        basis[7, 1, 0] = np.nan
    elif case == "bones":
        bones = [*data.corrective_bones[:-1], "tail"]
    elif case == "shape":
        index, basis = index[:100], basis[:100]
    bad = dataclasses.replace(data, corrective_index=index, corrective_basis=basis,
                              corrective_bones=bones or data.corrective_bones)
    path = tmp_path / f"{case}.lca"
    save_avatar_file(path, bad, compact=False)
    with pytest.raises(AvatarFileError, match=message):
        load_avatar_file(path, corrected.template)
