"""torch, gsplat and cupy stay out of the import graph of everything but the CUDA backend and
the asset builders: a call and its rendering must run with numpy alone."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE_MODULES = [
    "app.cli", "app.poses", "avatar.avatar", "avatar.codes", "avatar.lca", "avatar.rig",
    "avatar.template", "render.backends", "render.camera", "render.gaussians", "render.reference",
    "render.video", "render.gl",
]
OPTIONAL_HEAVY = ("torch", "gsplat", "cupy")


def test_core_imports_without_heavy_dependencies():
    code = (
        "import importlib, sys\n"
        f"for name in {OPTIONAL_HEAVY!r}:\n"
        "    sys.modules[name] = None  # any import of it now fails loudly\n"
        f"for module in {CORE_MODULES!r}:\n"
        "    importlib.import_module(module)\n"
        "from app.cli import build_parser\n"
        "build_parser()  # imports every command module\n"
        "import avatar.avatar, avatar.codes\n"
        "avatar.avatar.load_avatar('default').pose(avatar.codes.Codes())\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
