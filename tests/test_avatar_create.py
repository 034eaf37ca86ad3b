"""`main.py avatar create`: bad input is one clear `error:` line (what to capture instead),
exit status 1 and nothing at --out; the pieces of the pipeline; --as-default; and a real
clip (jwpIntro.mp4) made into an avatar end to end on a short budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.media import media_path

pytest.importorskip("torch")
av = pytest.importorskip("av")


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """An H.264 MP4 of RGB frames, written with pyav."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def person_frames() -> list[np.ndarray]:
    """30 frames of jwpIntro.mp4 (a man talking, head and shoulders), 640x480."""
    from app.avatar_create import read_video

    return read_video(media_path("jwpIntro.mp4"), 30).frames


def run_create(capsys, *args) -> tuple[int, str, str]:
    from app.cli import main

    code = main(["avatar", "create", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(capsys, out: Path, words: list[str], *args) -> str:
    code, stdout, stderr = run_create(capsys, *args, "--out", out, "--budget", "1")
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(out.name + "*")), "a part file was left behind"
    return lines[0]


def test_a_clip_without_a_person_is_refused_with_what_to_record(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * k, axis=1) for k in range(30)]  # a panning textured wall
    clip = write_clip(tmp_path / "wall.mp4", frames)
    line = assert_refused(capsys, tmp_path / "me.lca", ["no person", "record yourself"],
                          "--video", clip)
    assert "wall.mp4" in line


def test_a_person_only_partly_visible_is_refused(tmp_path, capsys, person_frames):
    # The bottom half of the frames: the shirt and shoulders, no face.
    frames = [np.ascontiguousarray(np.pad(f[240:], ((0, 240), (0, 0), (0, 0)), mode="edge"))
              for f in person_frames]
    clip = write_clip(tmp_path / "shirt.mp4", frames)
    assert_refused(capsys, tmp_path / "me.lca", ["partly visible", "head", "shoulders"],
                   "--video", clip)


def test_too_few_frames_are_refused(tmp_path, capsys, person_frames):
    clip = write_clip(tmp_path / "short.mp4", person_frames[:5])
    assert_refused(capsys, tmp_path / "me.lca", ["only 5 frames", "record 10 seconds"],
                   "--video", clip)


def test_heavy_motion_blur_is_refused(tmp_path, capsys, person_frames):
    from scipy.ndimage import uniform_filter1d

    frames = [uniform_filter1d(f, 25, axis=1) for f in person_frames]  # a 25-pixel smear
    clip = write_clip(tmp_path / "blurred.mp4", frames)
    assert_refused(capsys, tmp_path / "me.lca", ["too blurred", "hold the camera still"],
                   "--video", clip)


def test_a_clip_too_dark_is_refused(tmp_path, capsys, person_frames):
    frames = [(f // 10).astype(np.uint8) for f in person_frames]
    clip = write_clip(tmp_path / "dark.mp4", frames)
    assert_refused(capsys, tmp_path / "me.lca", ["too dark", "light"], "--video", clip)


def test_an_unreadable_file_is_refused(tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_refused(capsys, tmp_path / "me.lca", ["junk.mp4", "not a readable video"],
                   "--video", junk)
    assert_refused(capsys, tmp_path / "me.lca", ["no such video file"],
                   "--video", tmp_path / "absent.mp4")


def test_an_empty_image_folder_is_refused(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert_refused(capsys, tmp_path / "me.lca", ["holds no images"],
                   "--images", tmp_path / "photos")


def test_without_a_camera_the_guided_capture_is_one_error_line(tmp_path, capsys):
    assert_refused(capsys, tmp_path / "me.lca", ["no camera"], "--camera", "63")


def test_options_out_of_range_are_refused(tmp_path, capsys):
    clip = media_path("jwpIntro.mp4")
    code, _, err = run_create(capsys, "--video", clip, "--out", tmp_path / "me.png")
    assert code == 1 and "must end in .lca" in err
    code, _, err = run_create(capsys, "--video", clip, "--out", tmp_path / "me.lca",
                              "--budget", "0")
    assert code == 1 and "--budget" in err
    assert not (tmp_path / "me.lca").exists()


def test_hold_out_keeps_the_end_and_frames_spread_through_the_clip():
    from app.avatar_create import hold_out

    training, held = hold_out(100, tail_fraction=0.1, spread_every=10)
    assert set(range(90, 100)) <= set(held)
    assert len([h for h in held if h < 90]) == 9  # 5, 15, ..., 85
    assert not set(training) & set(held)
    for h in held:  # no training frame is a neighbour of a held-out one
        assert h - 1 not in training and h + 1 not in training
    training, held = hold_out(40, tail_fraction=0.25, spread_every=0, gap=False)
    assert list(held) == list(range(30, 40)) and list(training) == list(range(30))


def test_barycentric_moves_stay_inside_the_triangle():
    from app.avatar_create import barycentric

    corners = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=np.float64)
    inside = barycentric(np.array([[0.25, 0.25, 0.3]]), corners)
    np.testing.assert_allclose(inside, [[0.5, 0.25, 0.25]])
    outside = barycentric(np.array([[2.0, -1.0, 0.0]]), corners)
    assert np.all(outside >= 0) and np.isclose(outside.sum(), 1.0)


def test_the_users_avatar_lives_in_the_xdg_data_directory(tmp_path, monkeypatch):
    from app.user_avatar import avatar_or_user_default, install_user_avatar, user_avatar_path
    from avatar.avatar import DEFAULT_AVATAR_PATH

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_avatar_path() == tmp_path / "data" / "splatcall" / "avatar.lca"
    assert avatar_or_user_default(None, "default") == ("default", None)
    assert avatar_or_user_default("mine.lca", "default") == ("mine.lca", None)
    install_user_avatar(DEFAULT_AVATAR_PATH)
    chosen, note = avatar_or_user_default(None, "default")
    assert chosen == str(user_avatar_path()) and "your own avatar" in note
    assert user_avatar_path().read_bytes() == DEFAULT_AVATAR_PATH.read_bytes()
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # not absolute: ignored (XDG spec)
    assert user_avatar_path() == Path.home() / ".local/share/splatcall/avatar.lca"


# Measured (2026-12-07, 2-core VM, 1 torch thread, --budget 1.5): held-out masked PSNR
# 17.0 dB, SSIM 0.77 over 4 frames; the default avatar in the same frames and cameras
# scores 9.7 dB (bench/bench_fit_appearance.py), the person's mean colour 14.2 dB (issue
# 12). The floor sits above the flat colour: the render must have the person's own
# colours where they are, not only their average.
PSNR_FLOOR_DB = 15.0
DEFAULT_AVATAR_DB = 11.0  # the default avatar stays under this in the same frames


def test_a_real_clip_becomes_an_avatar_that_looks_like_the_person(tmp_path, capsys,
                                                                   monkeypatch,
                                                                   one_torch_thread):
    import re

    from app.cli import main
    from avatar.avatar import load_avatar
    from app.avatar_create import (
        fit_cameras,
        read_video,
        score_avatar,
        sha256_of,
        track_frames,
    )
    from avatar.lca import load_avatar_file
    from avatar.template import load_template

    video = media_path("jwpIntro.mp4")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    out = tmp_path / "me.lca"
    code, stdout, stderr = run_create(capsys, "--video", video, "--out", out, "--budget", "1.5",
                                      "--threads", "1", "--as-default", "--name", "Jon")
    assert code == 0, stderr
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"held-out PSNR (\d+\.\d) dB, SSIM (0\.\d\d|1\.00) over (\d+) frames "
                         r"\(person mask\)", last)
    assert match, last
    for stage in ("track", "segment", "cameras", "colours", "refine", "score", "write"):
        assert f"{stage} " in stderr  # each stage's time in the summary
    assert "about" in stderr and "left" in stderr  # the progress's time estimate

    template = load_template()
    data = load_avatar_file(out, template)
    assert out.stat().st_size <= 20_000_000
    p = data.provenance
    assert data.name == "Jon" and data.shading == "baked" and data.colors.shape[1:] == (4, 3)
    assert p["source_sha256"] == sha256_of(video)
    assert p["tool_version"].startswith("splatcall ")
    assert not set(p["frames_used"]) & set(p["frames_held_out"])
    assert max(p["frames_held_out"]) > max(p["frames_used"])  # the clip's end is held out
    assert min(p["frames_held_out"]) < max(p["frames_used"])  # ... and frames within it
    assert abs(float(match.group(1)) - p["held_out_psnr_db"]) <= 0.051
    assert p["held_out_psnr_db"] >= PSNR_FLOOR_DB
    assert set(p["stage_seconds"]) >= {"track", "refine", "score"}
    default = load_avatar("default", template)
    # Unseen Gaussians are kept; grown ones added, only fitted transparent ones dropped.
    assert p["gaussians_grown"] > 0
    assert len(data) == len(default.data) + p["gaussians_grown"] - p["gaussians_pruned"]

    # Expressions past the clip's keep the face whole: at the built-in poses' broad smile,
    # blink and wave, no vertex strays from where the template's own shapes and skinning
    # put it (fitted correctives moved them 0.8-7 cm there; docs/BENCHMARKS.md).
    import dataclasses

    from app.avatar_create import posed_vertices
    from app.poses import POSES
    from render.skinned import posed_mesh

    made = load_avatar(out, template)
    plain = dataclasses.replace(made.skinned, correctives=None)
    for pose in ("smile", "talk", "wave"):
        codes = POSES[pose].frames(30)[0]
        strayed = np.linalg.norm(posed_vertices(made, codes) - posed_mesh(
            plain, made.skin_pose(codes)), axis=1).max()
        assert strayed < 0.005, (pose, strayed)

    # Scored again here, independently: the file as loaded, and the default avatar, in the
    # held-out frames.
    clip = read_video(video, 400)
    keep = [clip.indices.index(i) for i in p["scored_frames"]]
    clip.frames = [clip.frames[k] for k in keep]
    clip.times = [clip.times[k] for k in keep]
    tracked = track_frames(clip)
    assert tracked.usable().all()
    mine = load_avatar(out, template)
    h, w = tracked.frames.shape[1:3]
    _, cameras, _ = fit_cameras(mine, tracked.codes, tracked.faces, tracked.shoulders, w, h)
    positions = range(len(keep))
    ours = score_avatar(mine, tracked, positions, cameras, 2)
    theirs = score_avatar(default, tracked, positions, cameras, 2)
    assert ours.psnr_db >= PSNR_FLOOR_DB - 1.0, ours
    assert theirs.psnr_db < DEFAULT_AVATAR_DB < ours.psnr_db, (theirs, ours)

    # --as-default: `render` without --avatar uses it, and says so.
    code = main(["render", "--out", str(tmp_path / "me.png"), "--size", "96x96"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "using your own avatar" in err and "'Jon'" in err


def test_too_few_photos_in_a_folder_are_refused(tmp_path, capsys, person_frames):
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for k, frame in enumerate(person_frames[:4]):
        Image.fromarray(frame).save(tmp_path / "photos" / f"{k}.jpg")
    assert_refused(capsys, tmp_path / "me.lca", ["only 4 images", "photos"],
                   "--images", tmp_path / "photos")


def test_the_guided_capture_prompts_and_keeps_frames_at_its_rate(monkeypatch, capsys):
    import tracking.sources
    from app import create_cmd

    video = media_path("jwpIntro.mp4")
    monkeypatch.setattr(tracking.sources, "open_source",
                        lambda spec: tracking.sources.VideoSource(video, live=True))
    clip = create_cmd.capture_from_camera("0", seconds_scale=0.1)  # 3.3 s of the 34
    err = capsys.readouterr().err
    for prompt, _ in create_cmd.CAPTURE_PROMPTS:
        assert f"now: {prompt}" in err
    assert 15 <= len(clip.frames) <= 35  # about 8 a second
    assert clip.frames[0].shape == (480, 640, 3) and clip.description == "camera:0"
    assert all(b > a for a, b in zip(clip.times, clip.times[1:]))


def test_an_avatar_over_20_mb_drops_its_view_dependent_colours_to_fit(tmp_path, monkeypatch):
    import app.avatar_create as create
    from avatar.avatar import load_avatar
    from avatar.lca import load_avatar_file
    from avatar.template import load_template

    template = load_template()
    data = load_avatar("default", template).data
    n = len(data)
    data.colors = np.zeros((n, 4, 3), np.float32)
    data.shading = "baked"
    full = tmp_path / "full.lca"
    size = create.write_avatar(data, full, template)
    monkeypatch.setattr(create, "MAX_LCA_BYTES", size - 1)
    data.colors = np.zeros((n, 4, 3), np.float32)
    small = create.write_avatar(data, tmp_path / "small.lca", template)
    assert small < size and load_avatar_file(tmp_path / "small.lca").colors.shape == (n, 1, 3)
    assert "colours_reduced" in load_avatar_file(tmp_path / "small.lca").provenance
    monkeypatch.setattr(create, "MAX_LCA_BYTES", 1000)
    with pytest.raises(create.CreateError, match="over the 0 MB"):
        create.write_avatar(data, tmp_path / "none.lca", template)
    assert not (tmp_path / "none.lca").exists()
