"""BVH export read back by an independent reader (PyPI bvhio): the walk's every joint
rotation within 0.1 degree, the skeleton's offsets in centimetres, and the export command's
errors as one line each with nothing left at the output path."""

from __future__ import annotations

import numpy as np
import pytest

from app.cli import main
from app.poses import POSES
from avatar.bvh import euler_zxy_deg, exported_bones, write_bvh
from avatar.codes import Codes, write_jsonl
from avatar.rig import Rig
from common.rotation import quat_angle_rad, quat_normalize, quat_to_matrix
from avatar.template import load_template

bvhio = pytest.importorskip("bvhio", reason="bvhio is a dev dependency (pip install bvhio)")


@pytest.fixture(scope="module")
def template():
    return load_template()


def read_joints(path) -> tuple[dict, object]:
    container = bvhio.readAsBvh(str(path))
    joints = {}
    stack = [container.Root]
    while stack:
        joint = stack.pop()
        joints[joint.Name] = joint
        stack.extend(joint.Children)
    return joints, container


def test_euler_zxy_rebuilds_the_rotation_including_gimbal_lock():
    rng = np.random.default_rng(4)
    q = quat_normalize(rng.normal(size=(500, 4)))
    locked = quat_normalize(np.array([[1.0, 1.0, 0.3, 0.0], [1.0, -1.0, 0.0, 0.2]]))
    for rotation in quat_to_matrix(np.concatenate([q, locked])):
        z, x, y = np.radians(euler_zxy_deg(rotation))
        rz = quat_to_matrix(np.array([np.cos(z / 2), 0, 0, np.sin(z / 2)]))
        rx = quat_to_matrix(np.array([np.cos(x / 2), np.sin(x / 2), 0, 0]))
        ry = quat_to_matrix(np.array([np.cos(y / 2), 0, np.sin(y / 2), 0]))
        assert np.abs(rz @ rx @ ry - rotation).max() < 1e-9


def test_a_walk_read_back_by_bvhio_has_every_joint_rotation_within_a_tenth_of_a_degree(
        template, tmp_path):
    walk = POSES["walk"]
    frames = walk.frames(30.0)
    rng = np.random.default_rng(9)  # and some fingers and gaze, so every joint moves
    frames = [f.replace(hands=quat_normalize(f.hands + 0.3 * rng.normal(size=f.hands.shape)),
                        gaze=rng.uniform(-0.4, 0.4, (2, 2))) for f in frames]
    path = tmp_path / "walk.bvh"
    assert write_bvh(path, frames, template) == len(frames)

    joints, container = read_joints(path)
    rig = Rig(template)
    exported = exported_bones(template)
    assert set(joints) == {template.bone_names[i] for i in exported}
    assert container.FrameCount == len(frames) and container.FrameTime == pytest.approx(1 / 30)
    heads = np.asarray(template.bone_heads) * 100.0
    for j in exported[1:]:
        offset = np.array(joints[template.bone_names[j]].Offset)
        assert np.abs(offset - (heads[j] - heads[template.bone_parents[j]])).max() < 1e-4
    worst = 0.0
    for index, codes in enumerate(frames):
        local = rig.local_rotations(codes)
        for j in exported:
            key = joints[template.bone_names[j]].Keyframes[index]
            theirs = np.array([key.Rotation.w, key.Rotation.x, key.Rotation.y, key.Rotation.z])
            worst = max(worst, float(np.degrees(quat_angle_rad(theirs, local[j]))))
        root = joints["root"].Keyframes[index]
        expected = (rig.rest_heads[0] + codes.root_translation) * 100.0
        assert np.abs(np.array(root.Position) - expected).max() < 1e-3
    assert worst < 0.1, worst


def test_export_command_writes_a_bvh_from_a_codes_file_and_a_recording(template, tmp_path,
                                                                         capsys):
    codes_path = tmp_path / "wave.codes.jsonl"
    write_jsonl(codes_path, POSES["wave"].frames(20.0))
    out = tmp_path / "wave.bvh"
    assert main(["export", str(codes_path), "--bvh", str(out)]) == 0
    container = read_joints(out)[1]
    assert container.FrameCount == 50 and container.FrameTime == pytest.approx(0.05)

    recording = tmp_path / "session"
    recording.mkdir()
    write_jsonl(recording / "ana-p1.codes.jsonl", POSES["walk"].frames(10.0))
    write_jsonl(recording / "bo-p2.codes.jsonl", POSES["wave"].frames(10.0))
    assert main(["export", str(recording), "--participant", "ana", "--bvh", str(out)]) == 0
    assert read_joints(out)[1].FrameCount == 22
    assert "ana-p1.codes.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("setup, extra, message", [
    (lambda d: None, ["missing.jsonl"], "does not exist"),
    (lambda d: (d / "bad.jsonl").write_text('{"face": {"smile": 1}}\n'), ["bad.jsonl"],
     "unknown name"),
    (lambda d: (d / "empty.jsonl").write_text(""), ["empty.jsonl"], "no codes frames"),
    (lambda d: write_jsonl(d / "ok.jsonl", [Codes()]), ["ok.jsonl", "--participant", "x"],
     "--participant"),
    (lambda d: (d / "rec").mkdir(), ["rec"], "no recorded participants"),
    (lambda d: [(d / "rec").mkdir(), write_jsonl(d / "rec" / "a-1.codes.jsonl", [Codes()]),
                write_jsonl(d / "rec" / "b-2.codes.jsonl", [Codes()])], ["rec"],
     "choose one with --participant"),
    (lambda d: [(d / "rec").mkdir(), write_jsonl(d / "rec" / "a-1.codes.jsonl", [Codes()])],
     ["rec", "--participant", "zed"], "no participant"),
])
def test_export_errors_are_one_line_and_leave_nothing_behind(tmp_path, capsys, monkeypatch,
                                                             setup, extra, message):
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["export", *extra, "--bvh", "out.bvh"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not (tmp_path / "out.bvh").exists() and not (tmp_path / "out.bvh.part").exists()


def test_export_without_a_format_or_to_a_missing_folder_says_so(tmp_path, capsys):
    codes_path = tmp_path / "c.jsonl"
    write_jsonl(codes_path, [Codes()])
    assert main(["export", str(codes_path)]) == 1
    assert "--bvh" in capsys.readouterr().err
    assert main(["export", str(codes_path), "--bvh", str(tmp_path / "no" / "x.bvh")]) == 1
    assert "cannot write" in capsys.readouterr().err
