"""Avatars posed on the GPU (render/gl_pose.py, real compute shaders on llvmpipe) against
``Avatar.pose`` (numpy), attribute by attribute and through the renderer.

Tolerances (float32 on the GPU vs float64 triangle frames in numpy): means 2e-6 m; colours
1e-4; rotations (elementwise, up to the quaternion's sign) and scales (relative) 5e-4 at
worst and 5e-5 for 99 % of the Gaussians: the worst are on millimetre triangles (the
face), whose edges float32 vertex coordinates near 1 m only know to about 1e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from render.camera import Camera
from render.reference import render as reference_render

gl = pytest.importorskip("render.gl")
from render.skinned import SkinPose  # noqa: E402


@pytest.fixture(scope="module")
def avatar():
    from avatar.avatar import load_avatar

    return load_avatar("default")


@pytest.fixture(scope="module")
def renderer():
    try:
        r = gl.GLSplatRenderer()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    yield r
    r.release()


def poses():
    from avatar.codes import BODY_BONES, Codes
    from common.rotation import quat_from_axis_angle

    wave = Codes()
    body = wave.body.copy()
    body[BODY_BONES.index("upperarm01.R")] = quat_from_axis_angle([0, 0, 1], -0.4)
    body[BODY_BONES.index("lowerarm01.R")] = quat_from_axis_angle([1, 0, 0], -1.2)
    body[BODY_BONES.index("upperleg01.L")] = quat_from_axis_angle([1, 0, 0], -1.0)
    face = np.zeros(52)
    face[[3, 17, 25, 40]] = [0.5, 0.8, 0.3, 1.0]  # blinks, jaw, smiles: blendshapes active
    turned = Codes(body=body, face=face, gaze=np.array([[0.2, -0.1], [0.2, -0.1]]),
                   root_rotation=quat_from_axis_angle([0, 1, 0], 0.7),
                   root_translation=np.array([0.1, 0.0, -0.2]))
    return {"rest": Codes(), "waving, face, turned root": turned}


def test_every_face_blendshape_active_poses_the_means_as_numpy_does(renderer, avatar):
    """As tracking gives them: all 52 weights non-zero (the sparse per-vertex lists summed).
    Only the means are held to 2e-6 here: rotations and scales of the face's millimetre
    triangles differ by up to 6e-5 (p99) between float32 and float64 with the old dense
    loop just the same."""
    from avatar.codes import Codes

    codes = Codes(face=np.linspace(0.02, 0.3, 52))
    renderer.upload_avatars([avatar.skinned])
    renderer.pose_avatars([avatar.skin_pose(codes)])
    expected = avatar.pose(codes)
    np.testing.assert_allclose(renderer.means(), expected.means, atol=2e-6)
    moved = np.abs(expected.means - avatar.pose(Codes()).means).max(1) > 1e-4
    assert moved.sum() > 1000  # the blendshapes did move the face


def test_sparse_blendshapes_keep_each_vertex_s_nonzero_deltas_and_nothing_else():
    from render.gl_pose import sparse_blendshapes

    rng = np.random.default_rng(3)
    dense = rng.normal(size=(5, 40, 3)).astype(np.float32)
    dense[rng.random((5, 40)) < 0.7] = 0.0  # most (blendshape, vertex) pairs do not move
    dense[:, 7] = 0.0                      # a vertex no blendshape moves
    dense[2, 9] = [0.0, 0.0, 1e-6]          # one component is enough to be kept
    deltas, spans = sparse_blendshapes(dense)
    assert len(deltas) == np.count_nonzero(np.any(dense != 0, axis=2))
    assert spans[7, 1] == 0
    rebuilt = np.zeros_like(dense)
    for v, (start, count, _, _) in enumerate(spans):
        for xyz_b in deltas[start:start + count]:
            rebuilt[int(xyz_b[3]), v] = xyz_b[:3]
    np.testing.assert_array_equal(rebuilt, dense)


def gpu_gaussians(renderer, count: int):
    """The renderer's posed Gaussians read back: means, quats, scales, opacities, colours."""
    from render.gl_tiles import ROW, rows_for

    rows = rows_for(count)
    fbo = renderer.ctx.framebuffer(color_attachments=[renderer._textures["params"]])
    params = np.frombuffer(fbo.read(viewport=(0, 0, ROW, 3 * rows), components=4, dtype="f4"),
                           np.float32).reshape(3, rows * ROW, 4)[:, :count]
    fbo.release()
    fbo = renderer.ctx.framebuffer(color_attachments=[renderer._textures["colors"]])
    colors = np.frombuffer(fbo.read(viewport=(0, 0, ROW, rows), components=4, dtype="f4"),
                           np.float32).reshape(-1, 4)[:count, :3]
    fbo.release()
    return params[0, :, :3], params[1], params[2, :, :3], params[0, :, 3], colors


def assert_matches(got, expected, label: str):
    means, quats, scales, opacities, colors = got
    quat_err = np.minimum(np.abs(quats - expected.quats), np.abs(quats + expected.quats)).max(1)
    scale_err = (np.abs(scales - expected.scales) / expected.scales).max(1)
    errors = dict(means=np.abs(means - expected.means).max(), quats=quat_err.max(),
                  quats_p99=np.quantile(quat_err, 0.99), scales=scale_err.max(),
                  scales_p99=np.quantile(scale_err, 0.99),
                  opacities=np.abs(opacities - expected.opacities).max(),
                  colors=np.abs(colors - expected.colors).max())
    print(f"{label}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert errors["means"] < 2e-6
    assert errors["quats"] < 5e-4 and errors["quats_p99"] < 5e-5
    assert errors["scales"] < 5e-4 and errors["scales_p99"] < 5e-5
    assert errors["opacities"] == 0
    assert errors["colors"] < 1e-4


@pytest.mark.parametrize("pose", list(poses()))
def test_gpu_pose_matches_numpy_pose(renderer, avatar, pose):
    codes = poses()[pose]
    renderer.upload_avatars([avatar.skinned])
    renderer.pose_avatars([avatar.skin_pose(codes)])
    assert_matches(gpu_gaussians(renderer, len(avatar)), avatar.pose(codes), pose)
    np.testing.assert_allclose(renderer.means(), avatar.pose(codes).means, atol=2e-6)


def test_two_placed_avatars_share_a_template(renderer, avatar):
    from common.rotation import quat_from_axis_angle, quat_multiply, quat_to_matrix

    keep = np.arange(0, len(avatar), 3)  # a thinned second avatar
    place = np.eye(4)
    place[:3, :3] = quat_to_matrix(quat_from_axis_angle([0, 1, 0], 2.5))
    place[:3, 3] = [1.0, 0.0, -0.5]
    codes = list(poses().values())
    renderer.upload_avatars([avatar.skinned,
                             avatar.skinned.subset(keep)])
    renderer.pose_avatars([avatar.skin_pose(codes[1]),
                           avatar.skin_pose(codes[0], place)])
    n = len(avatar)
    got = gpu_gaussians(renderer, n + len(keep))
    assert_matches(tuple(a[:n] for a in got), avatar.pose(codes[1]), "first avatar")
    second = avatar.pose(codes[0]).subset(keep)
    second.means = (second.means @ place[:3, :3].T.astype(np.float32)
                    + place[:3, 3].astype(np.float32))
    second.quats = quat_multiply(quat_from_axis_angle([0, 1, 0], 2.5),
                                 second.quats).astype(np.float32)
    assert_matches(tuple(a[n:] for a in got), second, "second avatar, placed")


def test_gpu_posed_render_agrees_with_reference(renderer, avatar):
    codes = poses()["waving, face, turned root"]
    renderer.upload_avatars([avatar.skinned])
    renderer.pose_avatars([avatar.skin_pose(codes)])
    cam = Camera.look_at([0.6, 1.2, 2.6], [0, 0.9, 0], 96, 128, vertical_fov_deg=50)
    ours = renderer.render(None, cam)  # None: what is on the GPU
    ref = reference_render(avatar.pose(codes), cam)
    mse = float(np.mean((ours.astype(np.float64) - ref) ** 2))
    value = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    print(f"GPU-posed avatar vs reference render of Avatar.pose: PSNR {value:.1f} dB")
    assert ref[..., 3].mean() > 0.05
    assert value >= 60


def test_bad_pose_input_is_a_clear_error(renderer, avatar):
    renderer.upload_avatars([avatar.skinned])
    transforms = avatar.rig.pose_codes(poses()["rest"]).transforms
    with pytest.raises(gl.RenderError, match="poses for 1 avatars"):
        renderer.pose_avatars([])
    with pytest.raises(gl.RenderError, match="bone transforms of shape"):
        renderer.pose_avatars([SkinPose(transforms[:5], np.zeros(52))])
    bad = transforms.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(gl.RenderError, match="finite"):
        renderer.pose_avatars([SkinPose(bad, np.zeros(52))])
    renderer.upload(gl.Gaussians.empty())  # plain Gaussians again: no avatars to pose
    with pytest.raises(gl.RenderError, match="upload_avatars first"):
        renderer.pose_avatars([SkinPose(transforms, np.zeros(52))])


def test_lost_context_rebuilds_the_posed_avatars(avatar):
    ctx = gl.create_headless_context()
    r = gl.GLSplatRenderer(ctx)
    codes = poses()["waving, face, turned root"]
    cam = Camera.look_at([0.0, 1.0, 2.8], [0, 0.9, 0], 48, 64)
    r.upload_avatars([avatar.skinned.subset(np.arange(0, len(avatar), 4))])
    r.pose_avatars([avatar.skin_pose(codes)])
    before = r.render(None, cam)
    ctx.release()
    with pytest.raises(gl.GLContextLost):
        r.render(None, cam)
    r.rebind()  # a fresh context: static arrays uploaded and the last pose applied again
    np.testing.assert_allclose(r.render(None, cam), before, atol=1e-6)
    r.release()


def test_a_room_mixing_baked_and_lambert_avatars_shades_each_its_own_way(renderer, avatar):
    """Shading is per avatar: a baked avatar posed first must not leave a Lambert one unlit
    (nor light the baked one)."""
    import dataclasses

    from avatar.avatar import Avatar

    assert avatar.data.shading == "lambert"
    baked = Avatar(dataclasses.replace(avatar.data, shading="baked"), avatar.template)
    codes = poses()["waving, face, turned root"]
    place = np.eye(4)
    place[0, 3] = 1.0
    for first, second in ((baked, avatar), (avatar, baked)):
        renderer.upload_avatars([first.skinned,
                                 second.skinned])
        renderer.pose_avatars([first.skin_pose(codes),
                               second.skin_pose(codes, place)])
        n = len(avatar)
        colors = gpu_gaussians(renderer, 2 * n)[4]
        for got, who in ((colors[:n], first), (colors[n:], second)):
            expected = who.pose(codes).colors
            error = np.abs(got - expected).max()
            print(f"{first.data.shading} then {second.data.shading}: {who.data.shading} colours "
                  f"max |diff| {error:.1e}")
            assert error < 1e-4
    # The two shadings differ on this avatar, so the check above can tell them apart.
    assert np.abs(baked.pose(codes).colors - avatar.pose(codes).colors).max() > 0.1


def test_a_kept_depth_order_serves_the_next_pose_only_while_the_view_holds(renderer, avatar):
    """``pose_order_reuse = 1`` (the call window): a pose after a sort is drawn in the last
    order; the one after sorts again, and so does any pose once the view moves. A frame's
    movement drawn in the last order looks as the freshly sorted one does."""
    from avatar.codes import Codes

    def codes(i: int):  # the jaw opening a little more each 30 Hz frame
        face = np.zeros(52)
        face[25] = 0.3 + 0.03 * i
        return Codes(face=face, root_translation=np.array([0.002 * i, 0.0, 0.0]))

    cam = Camera.look_at([0.2, 1.5, 0.9], [0, 1.5, 0], 96, 128, vertical_fov_deg=40)
    renderer.upload_avatars([avatar.skinned])
    try:
        renderer.pose_order_reuse = 1
        sorted_at = []
        for i in range(5):
            renderer.pose_avatars([avatar.skin_pose(codes(i))])
            sorted_at.append(renderer.sort_for(cam.position, cam.forward))
        assert sorted_at == [True, False, True, False, True]
        renderer.pose_avatars([avatar.skin_pose(codes(5))])
        kept = renderer.render(None, cam).astype(np.float64)  # in the order of pose 4
        moved = Camera.look_at([0.25, 1.5, 0.9], [0, 1.5, 0], 96, 128, vertical_fov_deg=40)
        assert renderer.sort_for(moved.position, moved.forward)  # the view moved: sorted
        renderer.pose_order_reuse = 0
        renderer.pose_avatars([avatar.skin_pose(codes(5))])
        assert renderer.sort_for(cam.position, cam.forward)
        fresh = renderer.render(None, cam).astype(np.float64)
        renderer.pose_avatars([avatar.skin_pose(codes(6))])
        assert renderer.sort_for(cam.position, cam.forward)  # 0: every pose sorts
    finally:
        renderer.pose_order_reuse = 0
    assert fresh[..., 3].mean() > 0.3  # the face fills the view
    mse = float(np.mean((kept - fresh) ** 2))
    value = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    print(f"a frame drawn in the last frame's order vs sorted: PSNR {value:.1f} dB")
    assert value >= 40
