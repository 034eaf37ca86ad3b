"""Every bad input of issue 16, through the real command line (``app.cli.main``): one
``error:`` line naming the problem and exit status 1, never a traceback, and nothing
half-written left behind."""

from __future__ import annotations

import json
import struct

import pytest

from app.cli import main
from avatar.avatar import DEFAULT_AVATAR_PATH
from avatar.codes import Codes


def _lca(header: dict) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + bytes(64)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def files(tmp_path):
    """The hostile and broken inputs, written as real files."""

    deep_meta = json.dumps({"__metadata__": {"lca": '{"a": ' + _deep(100_000) + "}"}})
    (tmp_path / "deep_header.lca").write_bytes(
        struct.pack("<Q", 60_000) + (_deep(30_000)).encode() + bytes(64))
    (tmp_path / "deep_meta.lca").write_bytes(
        struct.pack("<Q", len(deep_meta)) + deep_meta.encode() + bytes(64))
    if DEFAULT_AVATAR_PATH.is_file():
        raw = DEFAULT_AVATAR_PATH.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + length])
        for name, shape in (("int_shape", 7), ("null_shape", None)):
            bad = dict(header, opacities=dict(header["opacities"], shape=shape))
            body = json.dumps(bad).encode().ljust(length)
            (tmp_path / f"{name}.lca").write_bytes(
                struct.pack("<Q", len(body)) + body + raw[8 + length:])
        meta = json.loads(header["__metadata__"]["lca"])
        empty = {"__metadata__": {"lca": json.dumps(dict(meta, gaussian_count=0))}}
        for name in ("binding_face", "binding_bary", "binding_offset", "local_quats",
                     "local_scales", "opacities", "colors"):
            width = header[name]["shape"][1:]
            empty[name] = {"dtype": header[name]["dtype"], "shape": [0, *width],
                           "data_offsets": [0, 0]}
        body = json.dumps(empty).encode()
        (tmp_path / "empty.lca").write_bytes(struct.pack("<Q", len(body)) + body)
    frame = Codes().to_json()
    (tmp_path / "deep.jsonl").write_text(_deep(100_000) + "\n")
    (tmp_path / "bignum.jsonl").write_text(frame[:-1] + ', "seq": ' + "9" * 5000 + "}\n")
    (tmp_path / "long_line.jsonl").write_text('{"t": 0, "pad": "' + "x" * (3 << 20) + '"}\n')
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    return tmp_path


# (arguments, words the error line must hold); {d} is the folder of the files above.
CASES = [
    (["avatar", "info", "{d}/deep_header.lca"], "not an avatar file"),
    (["avatar", "info", "{d}/deep_meta.lca"], "not an avatar file"),
    (["avatar", "info", "{d}/int_shape.lca"], "malformed shape"),
    (["avatar", "info", "{d}/null_shape.lca"], "malformed shape"),
    (["avatar", "info", "{d}/empty.lca"], "no Gaussians"),
    (["render", "--avatar", "{d}/deep_meta.lca", "--out", "{d}/o.png"], "not an avatar file"),
    (["render", "--avatar", "{d}/empty.lca", "--out", "{d}/o.png"], "no Gaussians"),
    (["render", "--codes", "{d}/deep.jsonl", "--out", "{d}/o.png"], "nested"),
    (["render", "--codes", "{d}/bignum.jsonl", "--out", "{d}/o.png"], "5000 digits"),
    (["render", "--codes", "{d}/long_line.jsonl", "--out", "{d}/o.png"], "line longer than"),
    (["render", "--pose", "wave", "--out", "{d}/folder"], "is a directory"),
    (["render", "--pose", "wave", "--out", "{d}/a_file/o.mp4"], "not a directory"),
    (["render", "--pose", "wave", "--out", "{d}/o.mp4", "--fps", "0"], "--fps"),
    (["render", "--pose", "wave", "--out", "{d}/o.mp4", "--fps", "-5"], "--fps"),
    (["render", "--pose", "wave", "--out", "{d}/o.mp4", "--fps", "nan"], "--fps"),
    (["track", "{d}/image.png", "--out", "{d}/folder"], "is a directory"),
    (["track", "{d}/image.png", "--out", "{d}/a_file/c.jsonl"], "not a directory"),
    (["track", "{d}/image.png", "--preview", "{d}/folder"], "is a directory"),
    (["demo", "--out", "{d}/a_file/demo.mp4"], "not a directory"),
    (["view", "--pose", "wave", "--screenshot", "{d}/a_file/s.png"], "not a directory"),
    (["serve", "--secret-file", "{d}/k", "--token-ttl", "nan", "--make-token", "r"],
     "--token-ttl"),
    (["serve", "--secret-file", "{d}/k", "--token-ttl", "-100", "--make-token", "r"],
     "--token-ttl"),
    (["serve", "--secret-file", "{d}/k", "--max-message-kb", "0"], "--max-message-kb"),
    (["serve", "--secret-file", "{d}/image.png", "--make-token", "r"], "not a secret file"),
    (["call", "--room", "r", "--record", "{d}/folder"], "is a directory"),
    (["call", "--room", "r", "--record", "{d}/a_file/r.ts"], "not a directory"),
    (["call", "--room", "r", "--stats", "{d}/a_file/s.json"], "not a directory"),
    (["call", "--room", "r", "--fps", "nan"], "--fps"),
    (["call", "--room", "r", "--avatar", "{d}/deep_meta.lca"], "not an avatar file"),
    (["call", "--room", "r", "--avatar", "{d}/empty.lca"], "no Gaussians"),
    (["call", "--room", "r", "--ice-address", "999.1.1.1"], "not an IP address"),
    (["call", "--room", "r", "--codes", "{d}/deep.jsonl"], "nested"),
    (["call", "--room", "r", "--codes", "{d}/bignum.jsonl"], "5000 digits"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_gives_one_error_line_and_leaves_nothing_behind(files, capsys, argv, words):
    if any("shape" in a or "empty" in a for a in argv) and not DEFAULT_AVATAR_PATH.is_file():
        pytest.skip("the default avatar is missing")
    before = {p.name for p in files.iterdir()}
    argv = [a.format(d=files) for a in argv]
    if argv[0] == "call":  # fail before joining anything: no server listens on port 9
        argv += ["--secret-file", str(files / "k"), "--audio", "none",
                 "--server", "ws://127.0.0.1:9/ws", "--duration", "1"]
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert words in lines[0], lines[0]
    left = {p.name for p in files.iterdir()} - before - {"k"}
    assert not left, f"left behind: {left}"


def test_tracking_an_image_with_no_person_warns(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (320, 240), (90, 120, 150)).save(tmp_path / "wall.png")
    assert main(["track", str(tmp_path / "wall.png"), "--out", str(tmp_path / "c.jsonl")]) == 0
    assert "warning: no person found" in capsys.readouterr().err
