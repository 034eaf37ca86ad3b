"""`main.py render` end to end: every built-in pose to PNG, an animation to MP4 read back with
pyav, and a clear error for each kind of bad request."""

import av
import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.poses import POSES
from avatar.codes import write_jsonl

BACKEND = "reference"  # the numerical reference; other backends have their own agreement tests


@pytest.mark.parametrize("pose", sorted(POSES))
def test_every_builtin_pose_renders_to_png(tmp_path, pose, capsys):
    out = tmp_path / f"{pose}.png"
    assert main(["render", "--pose", pose, "--out", str(out), "--size", "96x128",
                 "--backend", BACKEND]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (128, 96, 3)
    figure = np.any(image < 200, axis=2)  # not the white background
    rows, cols = np.nonzero(figure)
    assert figure.mean() > 0.05, "the avatar should fill part of the frame"
    assert 30 < cols.mean() < 66 and rows.max() - rows.min() > 0.55 * 128  # centred, standing tall
    assert not (tmp_path / f"{pose}.png.part").exists()


def test_animation_to_mp4_reads_back(tmp_path):
    out = tmp_path / "talk.mp4"
    assert main(["render", "--pose", "talk", "--out", str(out), "--size", "64x64", "--fps", "5",
                 "--backend", BACKEND, "--camera", "orbit"]) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == int(POSES["talk"].duration_s * 5)
    assert frames[0].shape == (64, 64, 3)
    assert np.any(frames[0] < 200)


def test_audio_is_muxed_beside_the_video(tmp_path):
    """A recorded voice (here a 440 Hz tone written by pyav) travels into the MP4."""
    wav = tmp_path / "voice.wav"
    rate = 16000
    samples = (0.4 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "with_voice.mp4"
    assert main(["render", "--pose", "talk", "--out", str(out), "--size", "32x32", "--fps", "4",
                 "--backend", BACKEND, "--audio", str(wav)]) == 0
    with av.open(str(out)) as container:
        audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
        rate_out = container.streams.audio[0].rate
    spectrum = np.abs(np.fft.rfft(audio[: rate_out // 2]))
    assert abs(np.argmax(spectrum) * rate_out / (rate_out // 2) - 440) < 5


def test_codes_file_drives_the_render(tmp_path):
    codes = tmp_path / "codes.jsonl"
    write_jsonl(codes, POSES["wave"].frames(2)[:2])
    out = tmp_path / "wave.png"
    assert main(["render", "--codes", str(codes), "--out", str(out), "--size", "64x64",
                 "--backend", BACKEND, "--camera", "side"]) == 0
    assert out.stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--avatar", "missing.lca"], "missing.lca: no such file"),
    (["--codes", "CODES_BAD"], "codes.jsonl:1:"),
    (["--codes", "CODES_EMPTY"], "contains no codes frames"),
    (["--out", "/nonexistent-dir/x.png"], "does not exist"),
    (["--out", "OUT_TXT"], "must end in .png or .mp4"),
    (["--size", "big"], "--size must look like"),
    (["--size", "65x64", "--out", "OUT_MP4"], "even --size"),
    (["--out", "/proc/version.png"], "cannot write"),
    (["--background", "2,0,0"], "--background"),
    (["--audio", "/nonexistent.wav", "--out", "OUT_MP4"], "cannot read audio"),
    (["--audio", "/etc/hostname"], "needs an .mp4"),
])
def test_bad_requests_fail_with_one_clear_line(tmp_path, capsys, argv, message):
    (tmp_path / "codes.jsonl").write_text('{"face": {"jawOpen": 3}}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    substitutions = {"CODES_BAD": str(tmp_path / "codes.jsonl"),
                     "CODES_EMPTY": str(tmp_path / "empty.jsonl"),
                     "OUT_TXT": str(tmp_path / "x.txt"), "OUT_MP4": str(tmp_path / "x.mp4")}
    argv = [substitutions.get(a, a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.png")]
    if "--size" not in argv:
        argv += ["--size", "32x32"]
    assert main(["render", "--backend", BACKEND, *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_unknown_pose_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--pose", "backflip", "--out", "x.png"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'backflip'" in capsys.readouterr().err


def test_portrait_camera_frames_the_face_large_and_centred(tmp_path):
    """A head-and-shoulders framing: at 512x512 the eyes land in the upper middle, about a
    tenth of the frame apart (the full-body camera puts them some 15 px apart)."""
    from app.render_cmd import portrait_camera, preset_camera
    from avatar.avatar import load_avatar

    avatar = load_avatar("default")
    codes = POSES["talk"].codes(0.0)
    names = list(avatar.rig.bone_names)
    eyes = avatar.rig.pose_codes(codes).heads[[names.index("eye.L"), names.index("eye.R")]]

    def pixels(camera):
        cv = camera.cv_from_world @ np.c_[eyes, np.ones(2)].T
        return (camera.intrinsics @ (cv[:3] / cv[2]))[:2].T

    portrait = pixels(portrait_camera(avatar, codes, 512, 512))
    full = pixels(preset_camera("front", 512, 512))
    spacing, full_spacing = (float(np.linalg.norm(p[0] - p[1])) for p in (portrait, full))
    assert 40 < spacing < 80 and full_spacing < 20
    centre = portrait.mean(axis=0)
    assert abs(centre[0] - 256) < 10 and 100 < centre[1] < 220
    out = tmp_path / "portrait.png"
    assert main(["render", "--pose", "talk", "--camera", "portrait", "--size", "96x96",
                 "--backend", "gl", "--out", str(out)]) == 0
    assert Image.open(out).size == (96, 96)
