"""Avatar.pose: Gaussians follow skinning, blendshapes and gaze."""

import numpy as np
import pytest

from app.poses import POSES
from avatar.avatar import load_avatar
from avatar.codes import BLENDSHAPE_INDEX, Codes


@pytest.fixture(scope="module")
def avatar():
    return load_avatar("default")


def test_pose_gives_world_space_gaussians(avatar):
    g = avatar.pose(Codes())
    assert 100_000 <= len(g) <= 300_000
    assert g.means.dtype == np.float32 and g.means.shape == (len(avatar), 3)
    assert np.all(g.finite_mask())
    assert np.allclose(np.linalg.norm(g.quats, axis=1), 1, atol=1e-3)
    assert -0.05 < g.means[:, 1].min() < 0.05 and 1.6 < g.means[:, 1].max() < 1.9  # standing on y=0
    assert np.all((g.colors >= 0) & (g.colors <= 1))


def bound_to(avatar, region_names):
    regions = [avatar.template.region_names.index(r) for r in region_names]
    return np.isin(avatar.template.face_regions[avatar.data.binding_face], regions)


def test_gaussians_follow_the_skeleton(avatar):
    rest = avatar.pose(Codes()).means
    waving = avatar.pose(POSES["wave"].codes(0.0)).means
    right_hand = bound_to(avatar, ["hand.R"])
    left_hand = bound_to(avatar, ["hand.L"])
    assert waving[right_hand, 1].mean() - rest[right_hand, 1].mean() > 0.6  # raised above the head
    assert np.abs(waving[left_hand] - rest[left_hand]).max() < 0.5


def test_blendshapes_move_the_mouth(avatar):
    face = np.zeros(52)
    face[BLENDSHAPE_INDEX["jawOpen"]] = 1.0
    rest = avatar.pose(Codes()).means
    open_mouth = avatar.pose(Codes(face=face)).means
    moved = np.linalg.norm(open_mouth - rest, axis=1)
    assert moved.max() > 0.01
    assert np.median(moved[bound_to(avatar, ["hand.L", "hand.R"])]) == 0.0


def test_irises_follow_the_gaze(avatar):
    eyes = bound_to(avatar, ["eye_front.L"])
    dark = avatar.data.colors.mean(1) < 0.4  # iris and pupil
    iris = eyes & dark
    assert iris.sum() > 100
    straight = avatar.pose(Codes()).means[iris].mean(0)
    looking_left_up = avatar.pose(Codes(gaze=[[0.4, 0.3], [0.4, 0.3]])).means[iris].mean(0)
    shift = looking_left_up - straight
    assert shift[0] > 0.003 and shift[1] > 0.002  # toward +X (the avatar's left) and up


def test_lambert_shading_darkens_faces_turned_from_the_light(avatar):
    g = avatar.pose(Codes())
    back = g.means[:, 2] < -0.05
    front = g.means[:, 2] > 0.1
    assert g.colors[back].mean() < g.colors[front].mean()
