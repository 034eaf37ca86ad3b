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


# -- stage boundaries, read from the source (lazy imports inside functions included) ---------
PACKAGES = ("common", "tracking", "avatar", "render", "net", "app")
FORBIDDEN = {
    "common": {"tracking", "avatar", "render", "net", "app"},  # a leaf every stage may use
    "tracking": {"net", "render", "app"},
    "avatar": {"net", "app", "tracking"},
    "render": {"avatar", "net", "app", "tracking"},
    "net": {"render", "app", "tracking"},
}


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports, anywhere in the file."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def module_files() -> dict[str, Path]:
    return {f"{package}.{path.stem}": path for package in PACKAGES
            for path in sorted((ROOT / package).glob("*.py")) if path.stem != "__init__"}


def test_each_stage_imports_only_what_comes_before_it():
    crossings = []
    for module, path in module_files().items():
        package = module.split(".")[0]
        for name in project_imports(path):
            if name.split(".")[0] in FORBIDDEN.get(package, ()):
                crossings.append(f"{module} imports {name}")
    assert crossings == []


def test_only_app_imports_every_stage():
    reached = {}
    for module, path in module_files().items():
        package = module.split(".")[0]
        reached.setdefault(package, set()).update(n.split(".")[0] for n in project_imports(path))
    full = {"tracking", "avatar", "render", "net"}
    assert full <= reached["app"] | {"app"}
    assert [p for p, seen in reached.items() if p != "app" and full <= seen | {p}] == []


def test_no_import_cycles_between_modules():
    """Module to module, lazy imports included: a cycle (render/ had a six-file one) means
    two modules cannot be read, tested or loaded one without the other."""
    files = module_files()
    graph = {m: {n for n in project_imports(p) if n in files and n != m} for m, p in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module, path):
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
