"""The .lca avatar file: round trip, and a clear one-line error for every kind of bad file."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from avatar.avatar import DEFAULT_AVATAR_PATH
from avatar.lca import AvatarFileError, codes_layout, load_avatar_file, save_avatar_file
from avatar.template import load_template

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def small(template):
    """The default avatar's first 500 Gaussians."""
    data = load_avatar_file(DEFAULT_AVATAR_PATH, template)
    for name in ("binding_face", "binding_bary", "binding_offset", "local_quats", "local_scales",
                 "opacities", "colors"):
        setattr(data, name, getattr(data, name)[:500].copy())
    return data


def tensors_and_meta(data):
    tensors = {n: getattr(data, n) for n in ("binding_face", "binding_bary", "binding_offset",
                                             "local_quats", "local_scales", "opacities", "colors")}
    meta = {"format": "lca", "format_version": 1, "name": data.name, "gaussian_count": len(data),
            "template": data.template, "bone_names": data.bone_names,
            "codes_layout": codes_layout(),
            "shading": data.shading, "licence": data.licence, "attribution": data.attribution,
            "provenance": data.provenance}
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta


def write_raw(path, tensors, meta):
    save_file(tensors, str(path), metadata={"lca": json.dumps(meta)})
    return path


def test_round_trip_keeps_everything(tmp_path, small, template):
    path = tmp_path / "a.lca"
    save_avatar_file(path, small, compact=False)
    back = load_avatar_file(path, template)
    assert back.name == small.name and back.provenance == small.provenance
    for name in ("binding_face", "binding_bary", "local_scales", "colors"):
        assert np.array_equal(getattr(back, name), getattr(small, name))
    save_avatar_file(path, small, compact=True)  # float16 storage: close, and still valid
    assert np.allclose(load_avatar_file(path, template).local_scales, small.local_scales, rtol=1e-3)


def test_default_avatar_is_valid(template):
    data = load_avatar_file(DEFAULT_AVATAR_PATH, template)
    assert 100_000 <= len(data) <= 300_000
    assert "anny" in data.attribution.lower()


def mutate(tensors, meta, **changes):
    t, m = dict(tensors), json.loads(json.dumps(meta))
    for key, value in changes.items():
        if key in t or key.startswith("tensor_"):
            t[key.removeprefix("tensor_")] = value
        else:
            m[key] = value
    return t, m


@pytest.mark.parametrize("case, message", [
    ("version", "format version 2 is not supported"),
    ("format", "not an avatar file"),
    ("count", "shape"),
    ("nan", "NaN or infinity"),
    ("face_index", "outside the template"),
    ("negative_scale", "positive"),
    ("opacity", r"\[0, 1\]"),
    ("dtype", "dtype"),
    ("extra", "unexpected tensors"),
    ("missing", "missing"),
    ("bary", "barycentric"),
    ("template", "another template"),
    ("layout", "codes layout"),
    ("name_type", "'name'"),
    ("huge_count", "out of range"),
    ("sh_lambert", "lambert"),
])
def test_invalid_contents_are_refused(tmp_path, small, template, case, message):
    tensors, meta = tensors_and_meta(small)
    n = len(small)
    if case == "version":
        tensors, meta = mutate(tensors, meta, format_version=2)
    elif case == "format":
        tensors, meta = mutate(tensors, meta, format="ply")
    elif case == "count":
        tensors, meta = mutate(tensors, meta, gaussian_count=n + 1)
    elif case == "nan":
        scales = tensors["local_scales"].copy()
        scales[3, 1] = np.nan
        tensors, meta = mutate(tensors, meta, local_scales=scales)
    elif case == "face_index":
        faces = tensors["binding_face"].copy()
        faces[7] = 10**6
        tensors, meta = mutate(tensors, meta, binding_face=faces)
    elif case == "negative_scale":
        tensors, meta = mutate(tensors, meta, local_scales=-tensors["local_scales"])
    elif case == "opacity":
        tensors, meta = mutate(tensors, meta, opacities=tensors["opacities"] * 3)
    elif case == "dtype":
        tensors, meta = mutate(tensors, meta, colors=(tensors["colors"] * 255).astype(np.uint8))
    elif case == "extra":
        tensors, meta = mutate(tensors, meta, tensor_payload=np.zeros(3, np.float32))
    elif case == "missing":
        tensors.pop("opacities")
    elif case == "bary":
        tensors, meta = mutate(tensors, meta, binding_bary=tensors["binding_bary"] * 2)
    elif case == "template":
        tensors, meta = mutate(tensors, meta, template={**meta["template"], "vertices": 6890})
    elif case == "layout":
        layout = codes_layout()
        layout["blendshapes"] = layout["blendshapes"][::-1]
        tensors, meta = mutate(tensors, meta, codes_layout=layout)
    elif case == "name_type":
        tensors, meta = mutate(tensors, meta, name=["x"])
    elif case == "huge_count":
        tensors, meta = mutate(tensors, meta, gaussian_count=10**9)
    elif case == "sh_lambert":
        tensors, meta = mutate(tensors, meta, colors=np.zeros((n, 4, 3), np.float32))
    path = write_raw(tmp_path / "bad.lca", tensors, meta)
    with pytest.raises(AvatarFileError, match=message):
        load_avatar_file(path, template)


def test_damaged_files_are_refused(tmp_path, small, template):
    good = tmp_path / "good.lca"
    save_avatar_file(good, small)
    data = good.read_bytes()
    cases = {
        "empty.lca": b"",
        "truncated.lca": data[: len(data) // 2],
        "header_only.lca": data[:200],
        "random.lca": np.random.default_rng(0).bytes(5000),
        "pickle.lca": pickle.dumps({"means": [1, 2, 3]}),
        "huge_header.lca": (2**40).to_bytes(8, "little") + b"{}" * 10,
        "flipped.lca": data[:8] + bytes([data[8] ^ 0xFF]) + data[9:],
    }
    plain = tmp_path / "plain.lca"
    save_file({"x": np.zeros(3, np.float32)}, str(plain))
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    for path in [*(tmp_path / n for n in cases), plain, tmp_path / "missing.lca", tmp_path]:
        with pytest.raises(AvatarFileError) as info:
            load_avatar_file(path, template)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "broken.lca"
    bad.write_bytes(b"\x00" * 64)
    run = subprocess.run([sys.executable, "main.py", "avatar", "info", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr


def test_cli_info_describes_the_default_avatar():
    run = subprocess.run([sys.executable, "main.py", "avatar", "info", "default"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    count = len(load_avatar_file(DEFAULT_AVATAR_PATH))
    assert f"gaussians:   {count} " in run.stdout and "104 bones" in run.stdout
    assert "provenance:" in run.stdout and "licence:" in run.stdout
