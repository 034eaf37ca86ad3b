"""bench/gpu_check.sh, the GPU checks in one command: its dry run on a machine without an NVIDIA
GPU (says so, runs what can run, exits 0, writes one JSON and a log), its bad options, a part
that fails, and the report's merging of parts, JUnit XML and benchmark JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check_report  # noqa: E402


def nvidia_gpu_here() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU " in listed.stdout


def run_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # $OUT: the device's
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env, check=False)


@pytest.mark.slow
def test_the_dry_run_says_no_gpu_runs_what_it_can_and_writes_one_json(tmp_path):
    if nvidia_gpu_here():
        pytest.skip("an NVIDIA GPU is present: the check would run for real (minutes)")
    out = tmp_path / "check"
    done = run_check("--out", str(out), "--python", sys.executable)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "NO NVIDIA GPU PRESENT" in done.stdout
    assert "no NVIDIA GPU present" in done.stdout  # the probe's own line
    log = (out / "gpu_check.log").read_text()
    assert "NO NVIDIA GPU PRESENT" in log and "== summary" in log

    report = json.loads((out / "gpu_check.json").read_text())
    assert report["gpu"]["present"] is False and "nvidia-smi" in report["gpu"]["reason"]
    assert report["mode"].startswith("dry run") and report["quick"] is True
    status = {p["part"]: p for p in report["parts"]}
    assert status["probe"]["status"] == "ok"
    for part in ("install", "gsplat", "gl-tests"):
        assert status[part]["status"] == "skipped" and "no NVIDIA GPU" in status[part]["note"]
    for part in ("cuda-pose-tests", "cuda-tests", "render-gl-100k", "pose", "render-cuda-100k"):
        assert status[part]["status"] == "ok", status[part]
    # The CUDA tests ran and skipped, each with its reason; none failed.
    cuda = report["tests"]["cuda-tests"]
    assert cuda["failed"] == 0 and cuda["skipped"] > 0
    assert any("gsplat" in s["reason"] or "CUDA" in s["reason"] for s in cuda["skip_reasons"])
    assert report["tests"]["cuda-pose-tests"]["passed"] > 0
    # GL rows at the quick size on this machine's GL; the CUDA rows say why they are missing.
    rows = {r["backend"]: r for r in report["render"]["rows"]}
    assert set(rows) == {"gl-gpupose", "gl"}
    assert rows["gl-gpupose"]["gaussians"] == 100_000 and rows["gl-gpupose"]["size"] == "512x512"
    assert rows["gl-gpupose"]["median_frame_ms"] > 0
    assert set(report["render"]["skipped_backends"]) == {"cuda", "cuda-gpupose"}
    # The torch poser ran its code on the CPU device; numpy's posing beside it.
    assert report["pose"]["torch"]["device"] == "cpu" and report["pose"]["torch"]["median_ms"] > 0
    assert report["pose"]["median_ms"]["total"] > 0
    assert not list(out.glob("*.partial"))


@pytest.mark.parametrize("args, message", [
    (["--budget", "soon"], "--budget must be a whole number"),
    (["--budget", "30"], "at least 60"),
    (["--only", "render-gl,warp-drive"], "unknown part 'warp-drive'"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--python", "/nonexistent/python"], "no usable Python"),
])
def test_bad_options_give_one_error_line_and_status_1(tmp_path, args, message):
    out = tmp_path / "check"
    done = run_check("--out", str(out), *args, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    done = run_check("--out", str(target), "--python", sys.executable, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error:")
    assert "not a folder" in done.stderr and target.read_text() == "keep me"


def test_a_failing_part_gives_status_2_and_is_named_in_the_json(tmp_path):
    # A Python without pytest: the CUDA pose tests cannot even start.
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    out = tmp_path / "check"
    done = run_check("--out", str(out), "--python", str(bare / "bin" / "python"),
                     "--only", "cuda-pose-tests", timeout=120)
    assert done.returncode == 2, done.stdout[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    status = {p["part"]: p for p in report["parts"]}
    assert status["cuda-pose-tests"]["status"] == "failed"
    assert status["cuda-pose-tests"]["rc"] not in (0, None)
    assert status["render-gl"]["status"] == "skipped"
    assert "cuda-pose-tests    failed" in done.stdout  # the summary table


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_x" name="test_ok" time="0.1"/>
<testcase classname="tests.test_x" name="test_bad" time="0.1">
  <failure message="assert 1 == 2">long traceback</failure></testcase>
<testcase classname="tests.test_x" name="test_skip_a"><skipped message="no GPU"/></testcase>
<testcase classname="tests.test_x" name="test_skip_b"><skipped message="no GPU"/></testcase>
</testsuite></testsuites>
"""


def test_merge_gathers_parts_junit_and_render_rows_into_one_json(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "meta.json").write_text(json.dumps({"command": "bash bench/gpu_check.sh"}))
    (work / "probe.json").write_text(json.dumps({"nvidia": {"present": True, "gpus": [
        {"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04"}]}}))
    for part in ("probe", "cuda-tests"):
        assert gpu_check_report.main(["record", "--work", str(work), "--part", part,
                                      "--status", "ok" if part == "probe" else "failed",
                                      "--rc", "0" if part == "probe" else "1",
                                      "--seconds", "3", "--timeout", "90"]) == 0
    (work / "cuda-tests.xml").write_text(JUNIT)
    row = {"backend": "cuda-gpupose", "count": "300k", "size": "stereo 2x2064x2208",
           "gaussians": 300000, "median_frame_ms": 4.2, "median_pose_ms": 1.1,
           "median_sort_ms": 0.0, "median_draw_ms": 3.1}
    (work / "render-cuda-300k.json").write_text(json.dumps(
        {"results": [row], "skipped_backends": {}, "machine": {"gl_renderer": "NVIDIA H100"}}))
    out = tmp_path / "out" / "gpu_check.json"
    assert gpu_check_report.main(["merge", "--work", str(work), "--out", str(out),
                                  "--print"]) == 0
    report = json.loads(out.read_text())
    assert report["gpu"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert [p["status"] for p in report["parts"]] == ["ok", "failed"]
    tests = report["tests"]["cuda-tests"]
    assert (tests["tests"], tests["passed"], tests["failed"], tests["skipped"]) == (4, 1, 1, 2)
    assert tests["failures"][0]["test"] == "tests.test_x::test_bad"
    assert tests["skip_reasons"] == [{"reason": "no GPU", "count": 2}]
    assert report["render"]["rows"] == [{"part": "render-cuda-300k", **row}]
    printed = capsys.readouterr().out
    assert "GPU: NVIDIA H100 80GB HBM3" in printed and "FAILED tests.test_x::test_bad" in printed
    assert "cuda-gpupose" in printed and "4.20 ms" in printed
