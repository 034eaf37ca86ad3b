"""The XR stage (participants placed in the room, posed once per codes change) and the
`view --xr` command's behaviour without a runtime. Runs everywhere: no headset needed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.xr_view import CodesPlayback, XrStage
from avatar.avatar import load_avatar
from avatar.codes import Codes, write_jsonl
from common.rotation import quat_to_matrix
from render.gl_pose import GLPoser
from render.skinned import PosedAvatars, SkinnedGaussians, SkinPose, place_gaussians
from render.xr import XrFrame, placements_in_front

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def avatar():
    return load_avatar("default")


def _frame(index=0, head=(0.0, 1.6, 0.0), recentre=False) -> XrFrame:
    world_from_head = np.eye(4)
    world_from_head[:3, 3] = head
    return XrFrame(index, 0, 11_111_111, [], world_from_head, 0.0, recentre)


def test_place_gaussians_moves_means_and_turns_covariances(avatar):
    g = avatar.pose(Codes()).subset(slice(0, 500))
    (place,) = placements_in_front(np.array([[0, 0, 1, 0], [0, 1, 0, 1.6], [-1, 0, 0, 0],
                                             [0, 0, 0, 1.0]]), 1, floor_y=0.0)  # head turned
    moved = place_gaussians(g, place)
    rotation = place[:3, :3]
    np.testing.assert_allclose(moved.means, g.means @ rotation.T + place[:3, 3], atol=1e-5)
    def cov(q, s):
        return quat_to_matrix(q) @ np.diag(s**2) @ quat_to_matrix(q).T

    for i in (0, 17, 499):
        np.testing.assert_allclose(cov(moved.quats[i], moved.scales[i]),
                                   rotation @ cov(g.quats[i], g.scales[i]) @ rotation.T,
                                   atol=1e-9)
    np.testing.assert_array_equal(moved.colors, g.colors)


def test_stage_places_the_avatar_life_size_in_front_of_the_user(avatar):
    stage = XrStage(distance_m=1.5)
    stage.add("alice", avatar, Codes())
    g = stage(_frame())
    rest = avatar.pose(Codes())
    height = float(np.ptp(g.means[:, 1]))
    assert abs(height - float(np.ptp(rest.means[:, 1]))) < 1e-4   # life-size: no scaling
    assert 1.4 < height < 2.1
    assert abs(float(g.means[:, 1].min()) - float(rest.means[:, 1].min())) < 1e-4  # on the floor
    centre = g.means.mean(axis=0)
    assert abs(centre[0]) < 0.1 and abs(centre[2] + 1.5) < 0.2


def test_stage_poses_only_when_codes_change_and_returns_the_same_object(avatar):
    stage = XrStage()
    codes = Codes()
    stage.add("alice", avatar, codes)
    first = stage(_frame(0))
    assert stage(_frame(1)) is first and stage.pose_count == 1   # nothing changed: no work
    stage.set_codes("alice", codes.replace(seq=1))
    second = stage(_frame(2))
    assert second is not first and stage.pose_count == 2
    stage.set_codes("nobody", codes)                             # a stray key is ignored
    assert stage(_frame(3)) is second


def test_stage_stays_put_until_recentred(avatar):
    stage = XrStage(distance_m=1.5)
    stage.add("alice", avatar)
    before = stage(_frame(0, head=(0.0, 1.6, 0.0))).means.mean(axis=0)
    after_walk = stage(_frame(1, head=(0.5, 1.6, 1.0))).means.mean(axis=0)
    np.testing.assert_allclose(after_walk, before, atol=1e-6)       # stable in the room
    moved = stage(_frame(2, head=(0.5, 1.6, 1.0), recentre=True)).means.mean(axis=0)
    np.testing.assert_allclose(moved[[0, 2]] - before[[0, 2]], [0.5, 1.0], atol=1e-3)
    stage.recentre()
    assert stage.pose_count == 2
    stage(_frame(3, head=(0.0, 1.6, 0.0)))
    assert stage.pose_count == 3


def test_two_participants_stand_side_by_side(avatar):
    stage = XrStage(distance_m=2.0, spacing_m=1.0)
    stage.add("alice", avatar)
    stage.add("bob", avatar)
    g = stage(_frame())
    assert len(g) == 2 * len(avatar)
    xs = [g.means[:len(avatar), 0].mean(), g.means[len(avatar):, 0].mean()]
    assert xs[0] < -0.3 and xs[1] > 0.3
    stage.remove("bob")
    assert len(stage(_frame(1))) == len(avatar)


def test_gpu_stage_hands_over_poses_not_gaussians(avatar):
    """With a renderer that poses on the GPU, per frame only poses go out: the avatars'
    arrays once, new pose objects only for codes or placement changes."""
    stage = XrStage(distance_m=2.0, spacing_m=1.0, poser=GLPoser())
    stage.add("alice", avatar)
    stage.add("bob", avatar, Codes(seq=5))
    first = stage(_frame(0))
    assert isinstance(first, PosedAvatars) and stage.pose_count == 2
    assert all(isinstance(b, SkinnedGaussians) for b in first.skinned)
    assert all(isinstance(p, SkinPose) for p in first.poses)
    # Each participant has its own life-size placement: the numpy stage's, exactly.
    places = placements_in_front(_frame().world_from_head, 2, 2.0, 1.0, floor_y=0.0)
    for pose, place in zip(first.poses, places):
        np.testing.assert_allclose(pose.world_from_avatar, place)
    assert stage(_frame(1)) is first and stage.pose_count == 2     # nothing changed
    stage.set_codes("bob", Codes(seq=6))
    second = stage(_frame(2))
    assert second is not first and stage.pose_count == 3               # only bob again
    assert second.skinned is first.skinned                             # no re-upload
    assert second.poses[0] is first.poses[0] and second.poses[1] is not first.poses[1]
    stage.recentre()
    third = stage(_frame(3, head=(1.0, 1.6, 0.0)))
    assert stage.pose_count == 5 and third.skinned is first.skinned
    assert third.poses[0].world_from_avatar[0, 3] - first.poses[0].world_from_avatar[0, 3] \
        == pytest.approx(1.0)
    stage.remove("bob")
    fourth = stage(_frame(4))
    assert len(fourth.skinned) == 1 and fourth.skinned is not first.skinned
    stage.remove("alice")
    assert len(stage(_frame(5))) == 0                              # an empty room


def test_gpu_posed_room_matches_the_numpy_posed_room(avatar):
    """The same room (two participants, their own codes and places) posed both ways and
    drawn by the GL renderer for both eyes: the same posed Gaussians, the same pixels."""
    gl = pytest.importorskip("render.gl")
    from app.poses import POSES
    from render.xr import eye_camera, world_from_pose

    try:
        renderer = gl.GLSplatRenderer()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL 4.3 through EGL here: {exc}")
    stage = XrStage(distance_m=2.2, spacing_m=0.9)
    stage.add("alice", avatar, POSES["wave"].codes(0.4))
    stage.add("bob", avatar, POSES["smile"].codes(0.0))
    head = world_from_pose((0.05, 1.6, 0.1), (0.0, 0.0998, 0.0, 0.995))   # turned a little
    cameras = []
    for dx in (-0.032, 0.032):
        eye = head.copy()
        eye[:3, 3] += head[:3, 0] * dx
        cameras.append(eye_camera(eye, (-0.8, 0.8, 0.7, -0.7), 160, 120))
    frame = XrFrame(0, 0, 11_111_111, cameras, head, 0.0)
    try:
        numpy_room = stage(frame)
        stage.poser = GLPoser()
        gpu_room = stage(frame)
        assert isinstance(gpu_room, PosedAvatars) and len(numpy_room) == 2 * len(avatar)
        renderer.upload_avatars(list(gpu_room.skinned))
        renderer.pose_avatars(list(gpu_room.poses))
        np.testing.assert_allclose(renderer.means(), numpy_room.means, atol=2e-5)
        # As the headset target does: one sort for both eyes, then a draw per eye.
        gpu_images = renderer.render_stereo(None, cameras, (0.08, 0.08, 0.1))
        numpy_images = renderer.render_stereo(numpy_room, cameras, (0.08, 0.08, 0.1))
    finally:
        renderer.release()
    for got, expected in zip(gpu_images, numpy_images):
        figure = np.abs(expected[..., :3] - [0.08, 0.08, 0.1]).sum(axis=-1) > 0.05
        assert figure.mean() > 0.05                                # both people are in view
        mse = float(np.mean((got - expected) ** 2))
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        print(f"GPU- vs numpy-posed room: PSNR {psnr:.1f} dB")
        assert psnr > 60


def test_device_posed_room_matches_the_numpy_posed_room(avatar):
    """With an image backend that poses on its device (the cuda backend's poser), the
    stage poses and places each participant there; torch's CPU device stands in for CUDA
    here (render.cuda_pose, the same code)."""
    torch = pytest.importorskip("torch")
    from app.poses import POSES
    from render.cuda_pose import DeviceGaussians, DevicePoser, TorchAvatarPoser

    wave = POSES["wave"].codes(0.6)
    device = XrStage(poser=DevicePoser(TorchAvatarPoser("cpu")))
    numpy_stage = XrStage()
    for stage in (device, numpy_stage):
        stage.add("alice", avatar, wave)
        stage.add("bob", avatar, Codes())
    room = device(_frame())
    expected = numpy_stage(_frame())
    assert isinstance(room, DeviceGaussians) and room.means.device == torch.device("cpu")
    got = room.to_gaussians()
    assert len(got) == len(expected) == 2 * len(avatar)
    assert np.abs(got.means - expected.means).max() < 1e-5
    assert np.minimum(np.abs(got.quats - expected.quats),
                      np.abs(got.quats + expected.quats)).max() < 1e-4
    np.testing.assert_allclose(got.colors, expected.colors, atol=1e-5)
    # Unchanged codes: the same object, no pose; one participant's new codes: one pose.
    count = device.pose_count
    assert device(_frame(1)) is room and device.pose_count == count
    device.set_codes("bob", wave)
    assert device(_frame(2)) is not room and device.pose_count == count + 1


def test_stage_falls_back_to_numpy_when_the_gpu_poser_refuses_the_room(avatar):
    """Avatars the GL poser cannot take (here: a template with 13 skin influences a vertex,
    the shaders take 12) are posed in numpy from then on, with one warning, instead of
    failing the frame."""
    import copy
    import dataclasses

    other = copy.copy(avatar)
    skinned = avatar.skinned
    other.skinned = dataclasses.replace(
        skinned, skin_indices=np.pad(skinned.skin_indices, ((0, 0), (0, 4))),
        skin_weights=np.pad(skinned.skin_weights, ((0, 0), (0, 4))))
    assert other.skinned.skin_indices.shape[1] == 13
    warnings = []
    stage = XrStage(poser=GLPoser(), warn=warnings.append)
    stage.add("alice", avatar)
    stage.add("bob", other)
    room = stage(_frame())
    assert stage.poser.where == "numpy" and len(warnings) == 1
    assert "13 skin influences" in warnings[0]
    assert not isinstance(room, PosedAvatars) and len(room) == 2 * len(avatar)


def test_xr_view_auto_backend_is_gl_here_and_cuda_is_one_clear_line():
    """pick_backend (view and view --xr): auto is gl without CUDA, with the reason; an
    explicit cuda is a UserError of one line."""
    from app.cli import UserError
    from app.xr_view import pick_backend

    name, backend, why = pick_backend("auto")
    if name == "cuda":
        pytest.skip("this machine has a CUDA backend: auto rightly picks it")
    assert (name, backend) == ("gl", None)
    assert why.startswith("auto: no cuda backend here: the cuda backend needs"), why
    with pytest.raises(UserError, match="^the cuda backend needs") as error:
        pick_backend("cuda")
    assert "\n" not in str(error.value)
    assert pick_backend("gl") == ("gl", None, "asked for")
    assert pick_backend("reference")[1].name == "reference"


def test_codes_arrive_from_another_thread(avatar):
    stage = XrStage()
    stage.add("alice", avatar)
    stage(_frame(0))
    sent = [Codes(seq=i) for i in range(1, 51)]

    def network():
        for codes in sent:
            stage.set_codes("alice", codes)

    thread = threading.Thread(target=network)
    thread.start()
    frames = 0
    while thread.is_alive() and frames < 1000:
        stage(_frame(frames))
        frames += 1
    thread.join()
    stage(_frame(frames))
    assert 2 <= stage.pose_count <= 52
    assert stage._participants["alice"].posed_codes is sent[-1]  # the latest one wins


def test_codes_playback_follows_the_recording_and_loops(tmp_path):
    frames = [Codes(t=10.0 + i / 30, seq=i) for i in range(30)]
    playback = CodesPlayback(frames=frames)
    assert playback.codes_at(0.0) is frames[0]
    assert playback.codes_at(0.5).seq == 15
    assert playback.codes_at(1.0 + 0.5).seq == 15           # looped after 1 s
    assert playback.codes_at(0.51) is playback.codes_at(0.52)


def test_still_pose_playback_returns_one_object():
    from app.poses import POSES

    playback = CodesPlayback(pose=POSES["rest"])
    assert playback.codes_at(0.0) is playback.codes_at(5.0)
    wave = CodesPlayback(pose=POSES["wave"])
    assert wave.codes_at(0.0) is not wave.codes_at(0.5)


def _run_viewer(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XR_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "app.xr_view", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_runtime_gives_one_clear_line(tmp_path):
    pytest.importorskip("xr", reason="pyopenxr is not installed (pip install pyopenxr)")
    # No active runtime anywhere the loader looks: an empty config home and system dirs.
    result = _run_viewer(["--pose", "rest", "--xr-frames", "1"],
                         {"XR_RUNTIME_JSON": str(tmp_path / "missing.json"),
                          "XDG_CONFIG_HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path)},
                         tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no OpenXR runtime is active")
    for runtime in ("SteamVR", "Monado", "Meta"):
        assert runtime in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_inputs_give_clear_errors(tmp_path):
    pytest.importorskip("xr", reason="pyopenxr is not installed (pip install pyopenxr)")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "seq": 0, "face": [2.0]}\n')
    result = _run_viewer(["--codes", str(bad)], {}, tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    assert "bad.jsonl:1" in result.stderr and "Traceback" not in result.stderr

    result = _run_viewer(["--pose", "moonwalk"], {}, tmp_path)
    assert result.returncode == 1 and "unknown pose 'moonwalk'" in result.stderr
    assert "wave" in result.stderr

    broken = tmp_path / "broken.lca"
    broken.write_bytes(b"\x00" * 64)
    result = _run_viewer(["--avatar", str(broken)], {}, tmp_path)
    assert result.returncode == 1 and "cannot load the avatar" in result.stderr
    assert "Traceback" not in result.stderr

    empty = tmp_path / "empty.jsonl"
    write_jsonl(empty, [])
    result = _run_viewer(["--codes", str(empty)], {}, tmp_path)
    assert result.returncode == 1 and "no codes frames" in result.stderr


def test_stats_are_written_even_without_a_runtime(tmp_path):
    pytest.importorskip("xr", reason="pyopenxr is not installed (pip install pyopenxr)")
    stats = tmp_path / "stats.json"
    result = _run_viewer(["--xr-stats", str(stats)],
                         {"XR_RUNTIME_JSON": str(tmp_path / "missing.json"),
                          "XDG_CONFIG_HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path)},
                         tmp_path)
    assert result.returncode == 1
    data = json.loads(stats.read_text())
    assert data["frames"] == [] and data["exit_reason"] == "not started"


def test_main_view_xr_hands_over_to_the_headset_viewer(tmp_path):
    """`main.py view --xr` (app/view_cmd.py) reaches run_xr_view: the same one-line error."""
    pytest.importorskip("xr", reason="pyopenxr is not installed (pip install pyopenxr)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XR_")}
    env.update({"XR_RUNTIME_JSON": str(tmp_path / "missing.json"),
                "XDG_CONFIG_HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path)})
    result = subprocess.run([sys.executable, "main.py", "view", "--xr", "--pose", "wave",
                             "--xr-frames", "1"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: no OpenXR runtime is active")
