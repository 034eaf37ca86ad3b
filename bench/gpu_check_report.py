#!/usr/bin/env python3
"""The GPU check's bookkeeping (``bench/gpu_check.sh`` calls it; the standard library and the
project's stdlib-only ``common/`` alone, so it runs before anything is installed).

    gpu_check_report.py probe  --out FILE     what this machine has: NVIDIA GPU, torch, gsplat, GL
    gpu_check_report.py record --work DIR --part NAME --status S [--rc N] [--seconds T]
                               [--timeout T] [--note TEXT] [--while-build]
    gpu_check_report.py merge  --work DIR --out FILE [--print]

``merge`` gathers the work folder (``probe.json``, ``parts.jsonl``, the benchmarks' JSON files
and pytest's JUnit XML files) into one JSON, written whole or not at all, and with ``--print``
ends with a short table (the device tool returns only the end of the output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.files import write_text  # noqa: E402


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    """(exit status, stdout + stderr) of a command run in the repository root; 127 when it is
    not there."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: no answer in {timeout:.0f} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def nvidia_gpus() -> dict:
    """The NVIDIA GPUs nvidia-smi lists: ``present``, ``gpus`` (name, driver, memory) or
    ``reason`` why none."""
    if shutil.which("nvidia-smi") is None:
        return {"present": False, "reason": "nvidia-smi not found (no NVIDIA driver here)"}
    rc, out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                    "--format=csv,noheader"])
    if rc != 0 or not out:
        return {"present": False, "reason": f"nvidia-smi lists no GPU (exit {rc}): {out[-300:]}"}
    gpus = []
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        gpus.append(dict(zip(("name", "driver", "memory", "compute_capability"), fields)))
    return {"present": True, "gpus": gpus}


def probe_torch() -> dict:
    try:
        import torch
    except ImportError as exc:
        return {"installed": False, "reason": str(exc)}
    info = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    try:  # where torch's extension builder (gsplat's build) looks for the CUDA toolkit
        from torch.utils.cpp_extension import CUDA_HOME

        info["cuda_home"] = CUDA_HOME
    except Exception as exc:  # a diagnostic only: whatever went wrong is recorded
        info["cuda_home"] = f"unknown: {exc}"
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
    return info


def probe_gsplat() -> dict:
    from importlib.util import find_spec

    if find_spec("gsplat") is None:
        return {"installed": False}
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"installed": True, "version": version("gsplat"),
                "compiled": find_spec("gsplat.csrc") is not None}
    except PackageNotFoundError:
        return {"installed": True, "version": None}


def probe_gl() -> dict:
    """The headless GL context's renderer, in a child process (an EGL set-up can hang)."""
    code = ("from render.gl import create_headless_context\n"
            "ctx = create_headless_context()\n"
            "print(ctx.info['GL_VENDOR'] + ' | ' + ctx.info['GL_RENDERER'] + ' | ' "
            "+ ctx.info['GL_VERSION'])\n")
    rc, out = _run([sys.executable, "-c", code], timeout=60)
    if rc != 0:
        return {"available": False, "reason": out.splitlines()[-1] if out else f"exit {rc}"}
    vendor, renderer, gl_version = (out.splitlines()[-1].split(" | ") + ["", ""])[:3]
    return {"available": True, "vendor": vendor, "renderer": renderer, "version": gl_version}


def probe(out: Path) -> int:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "processor": _cpu_name(),
        "python": {"executable": sys.executable, "version": platform.python_version()},
        "nvidia": nvidia_gpus(),
    }
    rc, nvcc = _run(["nvcc", "--version"])
    info["nvcc"] = nvcc.splitlines()[-1] if rc == 0 and nvcc else None
    info["nvcc_path"] = shutil.which("nvcc")
    rc, cxx = _run(["c++", "--version"])
    info["cxx"] = cxx.splitlines()[0] if rc == 0 and cxx else None
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
    info["torch"] = probe_torch()
    info["gsplat"] = probe_gsplat()
    info["gl"] = probe_gl()
    _write_json(out, info)
    nv = info["nvidia"]
    if nv["present"]:
        for gpu in nv["gpus"]:
            print(f"NVIDIA GPU: {gpu.get('name')} (driver {gpu.get('driver')}, "
                  f"{gpu.get('memory')}, compute capability {gpu.get('compute_capability')})")
    else:
        print(f"no NVIDIA GPU present: {nv['reason']}")
    t = info["torch"]
    print(f"python {info['python']['version']} ({sys.executable}), numpy {info['numpy']}, "
          + (f"torch {t['version']} (CUDA build {t['cuda_build']}, CUDA available: "
             f"{t['cuda_available']})" if t["installed"] else "no torch"))
    print(f"nvcc: {info['nvcc'] or 'not found'} ({info['nvcc_path']}), torch's CUDA_HOME: "
          f"{t.get('cuda_home')}; C++: {info['cxx']}; gsplat: {info['gsplat']}")
    gl = info["gl"]
    print("GL through EGL: " + (f"{gl['renderer']} ({gl['vendor']}, {gl['version']})"
                                if gl["available"] else f"unavailable: {gl['reason']}"))
    return 0


def record(args) -> int:
    entry = {"part": args.part, "status": args.status, "rc": args.rc, "seconds": args.seconds,
             "timeout_s": args.timeout, "note": args.note}
    if args.while_build:
        entry["while"] = "the gsplat build ran on the other CPU cores"
    with open(Path(args.work) / "parts.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    return 0


def junit_summary(path: Path) -> dict:
    """Counts, failures (name and the message's first lines) and skip reasons of a JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        return {"error": f"unreadable JUnit XML: {exc}"}
    cases = list(root.iter("testcase"))
    failures, skips = [], {}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                text = (node.get("message") or node.text or "").strip()
                failures.append({"test": name, "kind": tag, "message": text[:600]})
        for node in case.findall("skipped"):
            reason = (node.get("message") or "").strip()
            skips[reason] = skips.get(reason, 0) + 1
    failed = {f["test"] for f in failures}
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return {"tests": len(cases), "passed": len(cases) - len(failed) - skipped,
            "failed": len(failed), "skipped": skipped, "failures": failures,
            "skip_reasons": [{"reason": r, "count": n} for r, n in skips.items()]}


def merge(args) -> int:
    work, out = Path(args.work), Path(args.out)
    meta = _read_json(work / "meta.json") or {}
    report = {"check": "gpu_check", **meta,
              "updated": datetime.datetime.now().isoformat(timespec="seconds")}
    probe_info = _read_json(work / "probe.json")
    report["gpu"] = (probe_info or {}).get("nvidia", {"present": None,
                                                      "reason": "the probe did not finish"})
    report["probe"] = probe_info
    parts = []
    if (work / "parts.jsonl").exists():
        parts = [json.loads(line) for line in (work / "parts.jsonl").read_text().splitlines()
                 if line.strip()]
    report["parts"] = parts
    report["tests"] = {p.stem: junit_summary(p) for p in sorted(work.glob("*.xml"))}
    rows, skipped, machine = [], {}, None
    for path in sorted(work.glob("render-*.json")):
        data = _read_json(path)
        if not data:
            continue
        machine = machine or data.get("machine")
        skipped.update(data.get("skipped_backends", {}))
        for row in data.get("results", []):
            rows.append({"part": path.stem, **row})
    report["render"] = {"rows": rows, "skipped_backends": skipped, "machine": machine}
    report["pose"] = _read_json(work / "pose.json")
    report["gsplat"] = _read_json(work / "gsplat.json")
    _write_json(out, report)
    if args.print:
        print_summary(report, out)
    return 0


def print_summary(report: dict, out: Path) -> None:
    print("\n== summary")
    gpu = report["gpu"]
    if gpu.get("present"):
        print("GPU: " + "; ".join(g.get("name", "?") for g in gpu["gpus"]))
    else:
        print(f"GPU: NONE - no NVIDIA GPU present ({gpu.get('reason')})")
    print(f"{'part':18s} {'status':8s} {'s':>5s}  note")
    for p in report["parts"]:
        print(f"{p['part']:18s} {p['status']:8s} {p['seconds'] or 0:5.0f}  {p.get('note') or ''}")
    for name, t in report["tests"].items():
        if "error" in t:
            print(f"tests {name}: {t['error']}")
            continue
        print(f"tests {name}: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
        for f in t["failures"][:5]:
            print(f"  FAILED {f['test']}: {f['message'].splitlines()[0] if f['message'] else ''}")
    machine = report["render"]["machine"]
    if machine:
        print(f"GL renderer (render rows): {machine.get('gl_renderer')}")
    for row in report["render"]["rows"]:
        print(f"render {row['backend']:13s} {row['count']:>4s} {row['size']:20s} frame "
              f"{row['median_frame_ms']:8.2f} ms (pose {row['median_pose_ms']}, sort "
              f"{row['median_sort_ms']}, draw {row['median_draw_ms']})")
    for name, reason in report["render"]["skipped_backends"].items():
        print(f"render {name}: skipped: {reason}")
    pose = report.get("pose")
    if pose:
        print(f"pose numpy ({pose['gaussians']} Gaussians): median "
              f"{pose['median_ms']['total']:.1f} ms")
        t = pose.get("torch")
        if t and "median_ms" in t:
            print(f"pose torch on {t['device_name']}: median {t['median_ms']:.2f} ms, p90 "
                  f"{t['p90_ms']:.2f} ms")
        elif t:
            print(f"pose torch: {t['unavailable']}")
    print(f"wrote {out}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="what this machine has, to FILE (JSON) and stdout")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    r = sub.add_parser("record", help="append one part's outcome to DIR/parts.jsonl")
    r.add_argument("--work", required=True, help="the check's work folder")
    r.add_argument("--part", required=True, help="part name")
    r.add_argument("--status", required=True,
                   choices=["ok", "failed", "timeout", "skipped", "error"], help="outcome")
    r.add_argument("--rc", type=int, default=None, help="the part's exit status")
    r.add_argument("--seconds", type=float, default=None, help="how long it ran")
    r.add_argument("--timeout", type=int, default=None, help="the time it was given")
    r.add_argument("--note", default="", help="one line on what happened")
    r.add_argument("--while-build", action="store_true",
                   help="the part ran while the gsplat build ran on the other cores")
    m = sub.add_parser("merge", help="gather the work folder into one JSON")
    m.add_argument("--work", required=True, help="the check's work folder")
    m.add_argument("--out", required=True, help="JSON file to write (whole or not at all)")
    m.add_argument("--print", action="store_true", help="end with a short summary table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.command == "probe":
        return probe(args.out)
    if args.command == "record":
        return record(args)
    return merge(args)


if __name__ == "__main__":
    sys.exit(main())
