"""Codes: validation on construction, and the JSON and binary forms."""

import json

import numpy as np
import pytest

from avatar.codes import (BINARY_SIZE, BLENDSHAPE_NAMES, BODY_BONES, PARTS, Codes, CodesError,
                          read_jsonl, write_jsonl)
from common.rotation import quat_normalize


def random_codes(seed=0) -> Codes:
    rng = np.random.default_rng(seed)
    return Codes(
        t=float(rng.uniform(0, 1000)), seq=int(rng.integers(0, 2**32)),
        face=rng.uniform(0, 1, 52), gaze=rng.uniform(-0.5, 0.5, (2, 2)),
        head=quat_normalize(rng.normal(size=(4, 4))), body=quat_normalize(rng.normal(size=(31, 4))),
        hands=quat_normalize(rng.normal(size=(2, 19, 4))), root_translation=rng.normal(size=3),
        root_rotation=quat_normalize(rng.normal(size=4)),
        valid=rng.integers(0, 2, len(PARTS)).astype(bool),
    )


def test_rest_codes_are_valid_and_complete():
    c = Codes()
    assert c.face.shape == (52,) and len(BLENDSHAPE_NAMES) == 52 == len(set(BLENDSHAPE_NAMES))
    assert c.body.shape == (len(BODY_BONES), 4)
    assert all(c.is_valid(p) for p in PARTS)


@pytest.mark.parametrize("change, message", [
    ({"face": np.full(52, np.nan)}, "NaN"),
    ({"face": np.full(52, 1.5)}, "outside [0, 1]"),
    ({"face": np.full(51, 0.5)}, "shape"),
    ({"gaze": np.full((2, 2), 2.0)}, "gaze"),
    ({"body": np.ones((31, 4))}, "unit quaternion"),
    ({"root_rotation": [0, 0, 0, 0]}, "unit quaternion"),
    ({"root_translation": [0, np.inf, 0]}, "NaN or infinity"),
    ({"root_translation": [1e6, 0, 0]}, "root translation"),
    ({"t": float("nan")}, "finite"),
    ({"seq": -1}, "seq"),
    ({"seq": 2**32}, "seq"),
    ({"seq": 1.5}, "integer"),
    ({"valid": [True] * 3}, "flags"),
    ({"hands": "left"}, "numeric"),
])
def test_invalid_values_are_refused_with_a_clear_message(change, message):
    with pytest.raises(CodesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Codes(**change)


def test_json_round_trip_is_exact_and_named():
    c = random_codes(1)
    d = json.loads(c.to_json())
    assert set(d["face"]) == set(BLENDSHAPE_NAMES)
    assert set(d["body"]) == set(BODY_BONES)
    assert Codes.from_json(c.to_json()).equals(c)


def test_binary_round_trip_is_exact_and_json_survives_it():
    c = random_codes(2)
    data = c.to_bytes()
    assert len(data) == BINARY_SIZE
    back = Codes.from_bytes(data)
    assert back.equals(c)
    assert back.to_json() == c.to_json()
    # JSON -> Codes -> binary -> Codes -> JSON, as a tool would do it
    assert Codes.from_bytes(Codes.from_json(c.to_json()).to_bytes()).to_json() == c.to_json()


@pytest.mark.parametrize("data, message", [
    (b"", "bytes"),
    (b"XXXX" + bytes(BINARY_SIZE - 4), "magic"),
])
def test_bad_binary_is_refused(data, message):
    with pytest.raises(CodesError, match=message):
        Codes.from_bytes(data)


def test_binary_with_nan_or_future_version_is_refused():
    data = bytearray(Codes().to_bytes())
    data[4] = 99
    with pytest.raises(CodesError, match="version"):
        Codes.from_bytes(bytes(data))
    data = bytearray(Codes().to_bytes())
    data[-4:] = np.float32(np.nan).tobytes()
    with pytest.raises(CodesError, match="NaN"):
        Codes.from_bytes(bytes(data))


@pytest.mark.parametrize("text, message", [
    ("{", "not JSON"),
    ("[]", "JSON object"),
    ('{"face": {"smileAlot": 1}}', "unknown name"),
    ('{"face": {"jawOpen": "wide"}}', "number"),
    ('{"body": {"head": [1, 0, 0, 0]}}', "unknown name"),
    ('{"body": {"spine01": [1, 0, 0]}}', "shape"),
    ('{"colour": 1}', "unknown field"),
    ('{"valid": {"face": 1}}', "true or false"),
    ('{"hands": {"middle": {}}}', "unknown hand"),
])
def test_bad_json_is_refused(text, message):
    with pytest.raises(CodesError, match=message):
        Codes.from_json(text)


def test_partial_json_fills_rest_values():
    c = Codes.from_json('{"t": 1.5, "face": {"jawOpen": 0.25}}')
    assert c.t == 1.5 and c.blendshape("jawOpen") == 0.25 and c.blendshape("eyeBlinkLeft") == 0.0
    assert np.array_equal(c.body[:, 0], np.ones(31))


def test_jsonl_file_round_trip_and_errors_name_the_line(tmp_path):
    frames = [random_codes(s) for s in range(5)]
    path = tmp_path / "codes.jsonl"
    assert write_jsonl(path, frames) == 5
    assert all(a.equals(b) for a, b in zip(read_jsonl(path), frames))
    path.write_text(frames[0].to_json() + "\n\n" + '{"face": {"jawOpen": 7}}\n')
    with pytest.raises(CodesError, match=r"codes.jsonl:3: blendshape jawOpen"):
        read_jsonl(path)
    with pytest.raises(CodesError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CodesError, match="UTF-8"):
        read_jsonl(tmp_path / "bin.jsonl")
