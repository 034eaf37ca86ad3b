"""The numpy rig: forward kinematics and skinning, checked by construction and against anny."""

import numpy as np
import pytest

from app.poses import POSES
from avatar.codes import BLENDSHAPE_INDEX, BODY_BONES, HEAD_BONES, Codes
from avatar.rig import Rig
from common.rotation import quat_from_axis_angle, quat_from_euler_xyz, quat_normalize
from avatar.template import load_template


@pytest.fixture(scope="module")
def rig():
    return Rig(load_template())


def test_rest_codes_give_the_rest_mesh(rig):
    assert np.allclose(rig.posed_vertices(Codes()), rig.template.vertices, atol=1e-6)
    skeleton = rig.pose_codes(Codes())
    assert np.allclose(skeleton.heads, rig.rest_heads, atol=1e-9)


def test_template_is_in_openxr_axes(rig):
    t = rig.template
    # feet on y=0, +Y up
    assert abs(t.vertices[:, 1].min()) < 1e-6 and 1.5 < t.vertices[:, 1].max() < 1.9
    nose_z = t.vertices[t.vertices[:, 1] > 1.4][:, 2].max()
    assert nose_z > 0.08  # the face looks toward +Z
    assert t.bone_heads[t.bone_index("wrist.L"), 0] > 0.3  # the left hand at +X
    assert np.allclose(t.skin_weights.sum(1), 1, atol=1e-5)


def test_rotating_a_parent_moves_its_children_rigidly(rig):
    i = BODY_BONES.index("upperarm01.L")
    body = Codes().body.copy()
    body[i] = quat_from_axis_angle([0, 0, 1], np.pi / 2)
    skeleton = rig.pose_codes(Codes(body=body))
    shoulder = rig.template.bone_index("upperarm01.L")
    hand = rig.template.bone_index("wrist.L")
    rest = rig.rest_heads[hand] - rig.rest_heads[shoulder]
    posed = skeleton.heads[hand] - skeleton.heads[shoulder]
    assert np.isclose(np.linalg.norm(rest), np.linalg.norm(posed))
    rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    assert np.allclose(posed, rz @ rest, atol=1e-6)
    # a bone elsewhere stays put
    foot = rig.template.bone_index("foot.R")
    assert np.allclose(skeleton.heads[foot], rig.rest_heads[foot])


def test_root_translation_and_rotation_move_everything(rig):
    codes = Codes(root_translation=[0.5, 0, -1], root_rotation=quat_from_euler_xyz(y_rad=np.pi))
    v = rig.posed_vertices(codes)
    root = rig.rest_heads[0]
    expected = (rig.template.vertices - root) * [-1, 1, -1] + root + [0.5, 0, -1]
    assert np.allclose(v, expected, atol=1e-5)


def test_gaze_turns_the_eyes(rig):
    eye = rig.template.bone_index("eye.L")
    skeleton = rig.pose_codes(Codes(gaze=[[0.3, 0.2], [0.0, 0.0]]))
    forward = skeleton.rotations[eye] @ [0, 0, 1.0]
    assert forward[0] > 0.2 and forward[1] > 0.1  # toward the avatar's left (+X) and up


def pose_cases():
    fist = POSES["fist"].codes()
    face = np.zeros(52)
    face[BLENDSHAPE_INDEX["jawOpen"]] = 0.9
    face[BLENDSHAPE_INDEX["mouthSmileLeft"]] = 0.8
    face[BLENDSHAPE_INDEX["mouthSmileRight"]] = 0.8
    head = Codes().head.copy()
    head[HEAD_BONES.index("head")] = quat_from_euler_xyz(y_rad=0.7, x_rad=-0.2)
    head[HEAD_BONES.index("neck01")] = quat_from_euler_xyz(y_rad=0.2)
    rng = np.random.default_rng(3)
    random = Codes(body=quat_normalize(Codes().body + rng.normal(0, 0.25, (31, 4))),
                   hands=quat_normalize(Codes().hands + rng.normal(0, 0.3, (2, 19, 4))),
                   head=quat_normalize(Codes().head + rng.normal(0, 0.2, (4, 4))),
                   face=rng.uniform(0, 1, 52), gaze=rng.uniform(-0.4, 0.4, (2, 2)),
                   root_translation=[0.1, -0.2, 0.3],
                   root_rotation=quat_from_euler_xyz(0.2, 1.0, -0.1))
    return {"arm_raised": POSES["wave"].codes(0.0), "fist": fist, "head_turned": Codes(head=head),
            "jaw_open_smile": Codes(face=face), "walk": POSES["walk"].codes(0.4), "random": random}


@pytest.fixture(scope="module")
def anny_model():
    """anny's own model (the `create` extra; CI installs it) and our template's offset from it."""
    pytest.importorskip("torch",
                        reason="needs the 'create' extra (torch, anny) to compare with anny")
    pytest.importorskip("anny",
                        reason="needs the 'create' extra (torch, anny) to compare with anny")
    import torch

    from scripts.build_template import OURS_FROM_ANNY, build_anny_model, template_offset

    model = build_anny_model()
    with torch.no_grad():
        rest = model()
    offset = template_offset(rest["rest_vertices"][0].numpy() @ OURS_FROM_ANNY.T,
                             rest["rest_bone_heads"][0, 0].numpy() @ OURS_FROM_ANNY.T)
    return model, offset


@pytest.mark.parametrize("name", list(pose_cases()))
def test_rig_matches_anny_within_a_millimetre(rig, anny_model, name):
    """Against anny's own forward pass: vertices under 1 mm apart."""
    from tests.anny_reference import anny_posed_vertices

    model, offset = anny_model
    codes = pose_cases()[name]
    ours = rig.posed_vertices(codes)
    theirs = anny_posed_vertices(model, rig, codes, offset)
    error_mm = np.abs(ours - theirs).max() * 1000
    moved_mm = np.abs(theirs - rig.template.vertices).max() * 1000
    print(f"{name}: max vertex error {error_mm:.4f} mm "
          f"(the pose moved vertices up to {moved_mm:.0f} mm)")
    assert moved_mm > 5  # the pose really does something
    assert error_mm < 1.0
