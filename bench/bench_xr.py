"""Headset benchmark: frame times of the OpenXR viewer in a real runtime (Monado, headless).

Runs ``python -m app.xr_view`` inside the Monado root that scripts/setup.d/50-xr.sh builds
(.cache/xr-root; needs root for chroot), against ``monado-service`` with the null
compositor, and reads the viewer's per-frame timings (--xr-stats):

- still: the default avatar in one pose: after the first frame nothing is posed, uploaded or
  sorted again (unless the head moves), so a frame is the two eyes' draws;
- wave-gpu-N: the ``wave`` animation on N participants side by side (the avatar counts of
  the rendering benchmark: 1 x 203k, 2 x = 407k, 5 x = 1.02M Gaussians), posed on the GPU:
  per frame forward kinematics on the CPU, the GL compute shaders pose, one sort, two draws;
- wave-cpu-N: the same posed in numpy (``--xr-posing cpu``): pose, place, concatenate,
  upload, sort, draw: the path before GPU posing, and the cuda backend's.

Per frame: ``wait`` (blocked in xrWaitFrame), ``scene`` (numpy pose + placement, or forward
kinematics for the GPU), ``pose`` (GPU posing, GL finished), ``sort`` (upload when the
Gaussians changed + depth sort when the head moved enough), ``draw`` (both eyes' draws, GL
finished) and ``frame`` (xrWaitFrame to xrWaitFrame: what the user gets). Medians and 90th
percentiles after 3 warm-up frames.

    sudo .venv/bin/python bench/bench_xr.py [--frames 60] [--participants 1 2 5]
        [--frames-many 20] [--out bench/results/xr.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.files import write_text  # noqa: E402

ROOT = REPO / ".cache" / "xr-root"
RUNTIME_DIR = "/tmp/splatcall-xr-bench"
WARMUP = 3


def chroot(*command: str, env: dict | None = None) -> list[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/root", "XDG_RUNTIME_DIR": RUNTIME_DIR,
            "PYTHONPATH": "/opt/splatcall"}
    base.update(env or {})
    return ["chroot", str(ROOT), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in base.items()),
            *command]


def summary(values) -> dict:
    values = np.asarray([v for v in values if v == v], dtype=float)  # NaN: no previous frame
    if not len(values):
        return {}
    return {"median": round(float(np.median(values)), 2),
            "p90": round(float(np.percentile(values, 90)), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--participants", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--frames-many", type=int, default=20,
                        help="frames for more than one participant (each frame takes longer)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "xr.json")
    args = parser.parse_args()
    if os.geteuid() != 0 or not (ROOT / ".splatcall-xr").exists():
        print("needs root and the Monado root (.cache/xr-root: scripts/setup.sh test as root)",
              file=sys.stderr)
        return 2

    target = ROOT / "opt" / "splatcall"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("app", "avatar", "common", "render", "assets"):
        shutil.rmtree(target / name, ignore_errors=True)
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc_dir = ROOT / "proc"
    mounted_here = subprocess.run(["mountpoint", "-q", str(proc_dir)]).returncode != 0
    if mounted_here:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    runtime_dir = ROOT / RUNTIME_DIR.lstrip("/")
    shutil.rmtree(runtime_dir, ignore_errors=True)
    runtime_dir.mkdir(mode=0o700, parents=True)
    monado = subprocess.Popen(chroot("monado-service", env={"XRT_COMPOSITOR_NULL": "1",
                                                            "XRT_NO_STDIN": "1"}),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, no GPU",
               "date": datetime.date.today().isoformat(),
               "load_average_before": os.getloadavg()[0], "frames": args.frames, "scenarios": {}}
    try:
        deadline = time.monotonic() + 30
        while not (runtime_dir / "monado_comp_ipc").exists():
            if monado.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("monado-service did not start")
            time.sleep(0.1)
        scenarios = {"still": (["--pose", "rest"], args.frames)}
        for n in args.participants:
            for posing in ("auto", "cpu"):
                scenarios[f"wave-{'gpu' if posing == 'auto' else 'cpu'}-{n}"] = (
                    ["--pose", "wave", "--xr-posing", posing, "--xr-participants", str(n)],
                    args.frames if n == 1 else args.frames_many)
        for name, (options, frames) in scenarios.items():
            print(f"[bench_xr] {name}: {frames} frames", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            stats_file = f"/tmp/xr-bench-{name}.json"
            run = subprocess.run(chroot("/bin/sh", "-c", "cd /opt/splatcall && exec /opt/venv/"
                                        "bin/python -m app.xr_view --xr-graphics egl "
                                        f"--xr-frames {frames} --xr-stats {stats_file} "
                                        + " ".join(options)),
                                 capture_output=True, text=True, timeout=1800)
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr[-2000:]}")
            stats = json.loads((ROOT / stats_file.lstrip("/")).read_text())
            results["eye_size"] = stats["eye_size"]
            results["runtime"] = stats["runtime"]
            shown = [f for f in stats["frames"] if f["rendered"]][WARMUP:]
            results["scenarios"][name] = {
                "poses": stats["poses"], "participants": stats["participants"],
                "posed_by": stats["posed_by"], "frames": len(shown),
                "load_average_before": round(load_before, 2),
                **{f"{key}_ms": summary(f[f"{key}_ms"] for f in shown)
                   for key in ("wait", "scene", "pose", "sort", "draw", "frame",
                               "display_period")},
            }
            print(f"[bench_xr] {name}: {results['scenarios'][name]}", file=sys.stderr)
    finally:
        os.kill(monado.pid, signal.SIGTERM)
        monado.wait(timeout=15)
        if mounted_here:
            subprocess.run(["umount", str(proc_dir)], check=False)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
