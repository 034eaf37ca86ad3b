"""Per-frame pose corrections of the photometric fit (avatar.appearance.PoseCorrections) and
Gaussians grown where the person mask reaches past the avatar (avatar.grow)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from avatar.appearance import (
    AppearanceModel,
    FitFrame,
    FitSettings,
    PoseCorrections,
    fit_appearance,
    head_weights,
    quat_of_rotvec,
    render_model,
    rotation_matrices,
    visible_gaussians,
)
from avatar.codes import Codes
from render.camera import Camera

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def avatar():
    from avatar.avatar import load_avatar

    return load_avatar("default")


def portrait(width=64, height=48) -> Camera:
    return Camera.look_at([0.0, 1.5, 0.9], [0.0, 1.45, 0.0], width, height, vertical_fov_deg=40)


def test_rotations_of_axis_angle_vectors_match_scipy():
    from scipy.spatial.transform import Rotation

    rotvec = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [0.0, 1e-5, 0.0], [2.0, 0.5, -1.0]])
    want = Rotation.from_rotvec(rotvec)
    got = rotation_matrices(torch.tensor(rotvec, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, want.as_matrix(), atol=1e-7)
    quat = quat_of_rotvec(torch.tensor(rotvec, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(quat, want.as_quat(scalar_first=True), atol=1e-7)


def test_a_head_turn_moves_the_head_about_the_neck_and_leaves_the_body(avatar):
    vertices = avatar.rig.posed_vertices(Codes())
    index = np.arange(0, len(avatar), 5)
    model = AppearanceModel(avatar, index)
    weight = head_weights(avatar, index)
    assert 0.05 < (weight > 0.95).mean() < 0.6 and (weight < 0.05).mean() > 0.3
    corrections = PoseCorrections(2, weight)
    with torch.no_grad():
        corrections.head_turn[0] = torch.tensor([0.0, 0.2, 0.0])  # frame 1 gets -0.1 (centred)
    means, quats = model.posed(model.base(vertices))[:2]
    neck = np.array([0.0, 1.5, 0.0], np.float32)
    head = np.array([0.0, 1.6, 0.0], np.float32)
    moved, turned = corrections.apply(0, means, quats, head, neck)
    moved, means = moved.detach().numpy(), means.detach().numpy()
    body = weight == 0.0
    np.testing.assert_allclose(moved[body], means[body], atol=1e-6)
    from scipy.spatial.transform import Rotation

    # Each Gaussian moves by its head weight's share of the turn about the neck.
    turned_all = Rotation.from_rotvec([0.0, 0.1, 0.0]).apply(means - neck) + neck
    expected = means + weight[:, None] * (turned_all - means)
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    assert np.abs(moved[weight == 1.0] - means[weight == 1.0]).max() > 0.01
    # Centred: the two frames' corrections cancel.
    state = corrections.state()
    np.testing.assert_allclose(state["head_turn"].sum(axis=0), 0.0, atol=1e-7)


def test_the_fit_recovers_known_per_frame_shifts(avatar):
    """Two renders of the avatar shifted 1 cm left and right: with the appearance right and
    held fixed, the corrections alone bring each frame back (within 3 mm)."""
    camera = portrait()
    vertices = avatar.rig.posed_vertices(Codes())
    index = visible_gaussians(avatar, [(vertices, camera)])
    subject = AppearanceModel(avatar, index)
    frames = []
    for dx in (0.01, -0.01):
        with torch.no_grad():
            rgba = render_model(subject, subject.base(vertices + [dx, 0.0, 0.0]),
                                camera).numpy()
        frames.append(FitFrame(vertices.astype(np.float32), camera,
                               np.clip(rgba[..., :3], 0, 1), rgba[..., 3] > 0.5))
    model = AppearanceModel(avatar, index)
    fixed = dict(lr_sh_dc=0.0, lr_sh_rest=0.0, lr_opacity=0.0, lr_log_scale=0.0, lr_offset=0.0)
    log = fit_appearance(model, frames, FitSettings(steps=40, pose_corrections=True,
                                                    correction_weight=0.0, lr_shift=0.001,
                                                    **fixed))
    shift = log.corrections.state()["body_shift"]
    assert shift[0, 0] == pytest.approx(0.01, abs=0.003), shift
    assert shift[1, 0] == pytest.approx(-0.01, abs=0.003), shift


def test_gaussians_grow_into_the_mask_past_the_avatar_and_nowhere_else(avatar):
    from scipy.ndimage import binary_dilation

    from app.avatar_create import render_avatar
    from avatar.grow import GrowView, grow_gaussians

    camera = portrait(96, 72)
    vertices = avatar.rig.posed_vertices(Codes()).astype(np.float32)
    alpha = render_avatar(avatar, vertices, camera)[..., 3]
    image = np.full((72, 96, 3), 0.25, np.float32)
    index = visible_gaussians(avatar, [(vertices, camera)])
    # A mask the avatar fills: nothing to grow.
    same = grow_gaussians(avatar, index, [GrowView(vertices, camera, image, alpha > 0.5,
                                                   alpha)], 10_000)
    assert same.count == 0
    # A person 3 pixels wider all round: children on the band, coloured from the frame.
    wider = binary_dilation(alpha > 0.5, iterations=3)
    grown = grow_gaussians(avatar, index, [GrowView(vertices, camera, image, wider, alpha)],
                           10_000)
    assert grown.count > 100 and len(grown.data.binding_face) == len(avatar) + grown.count
    np.testing.assert_allclose(grown.colors, 0.25, atol=1e-6)
    from avatar.avatar import Avatar

    child = Avatar(grown.data, avatar.template).skinned.subset(
        np.arange(len(avatar), len(avatar) + grown.count))
    from render.skinned import gaussians_on_mesh

    means = gaussians_on_mesh(child, vertices).means
    cam = means @ camera.cv_from_world[:3, :3].T + camera.cv_from_world[:3, 3]
    col = np.floor(camera.fx * cam[:, 0] / cam[:, 2] + camera.cx).astype(int)
    row = np.floor(camera.fy * cam[:, 1] / cam[:, 2] + camera.cy).astype(int)
    assert (wider[row, col] & (alpha[row, col] < 0.5)).all()
    # At most max_new.
    assert grow_gaussians(avatar, index, [GrowView(vertices, camera, image, wider, alpha)],
                          50).count == 50
