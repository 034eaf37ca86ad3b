"""`call --xr`: the glue between a call and the XR stage, on the real XrStage and default
avatar (the headset loop itself is tested against Monado in test_xr_monado.py), and the
one-line refusal when no OpenXR runtime is installed."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from app.call_cmd import sync_stage
from app.poses import POSES
from app.xr_view import XrStage
from avatar.avatar import load_avatar
from avatar.codes import Codes

ROOT = Path(__file__).resolve().parents[1]


class _Frame:
    """The two fields of render.xr.XrFrame the stage reads (a stand-in: no runtime here)."""

    def __init__(self):
        self.world_from_head = np.eye(4)
        self.world_from_head[1, 3] = 1.6
        self.floor_y = 0.0
        self.recentre = False


def test_stage_follows_who_is_in_the_call():
    stage = XrStage()
    default = load_avatar("default")
    wave = POSES["wave"].codes(0.0)
    sync_stage(stage, {"a": Codes(), "b": wave}, {"a", "b"}, default)
    assert sorted(stage.keys) == ["a", "b"]
    both = stage(_Frame())
    assert len(both) == 2 * len(default)
    # b leaves; a keeps its place and its codes move it
    sync_stage(stage, {"a": wave}, {"a"}, default)
    alone = stage(_Frame())
    assert stage.keys == ["a"] and len(alone) == len(default)
    hand = alone.means[:, 1].max()
    assert hand > both.means[: len(default), 1].max() + 0.05  # a raised a hand above its head


def test_call_xr_without_a_runtime_says_so_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "main.py", "call", "--room", "r", "--secret-file",
                          str(tmp_path / "key"), "--xr", "--audio", "none", "--duration", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin",
                              "XR_RUNTIME_JSON": str(tmp_path / "none.json")})
    assert run.returncode == 1
    error = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "OpenXR" in error[0] and "Monado" in error[0]
    assert "Traceback" not in run.stderr
