"""The demo's own avatar: the talker of the demo clip as himself, made once by
``avatar create`` in the set-up (scripts/setup.d/60-demo-avatar.sh) and kept in
``.cache/demo/``, because creating it takes minutes and the demo itself under one.

The file is keyed by what makes it: the clip's bytes and the creation code and assets (a
change to either makes the set-up create it again; a stale file is never used)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "demo"
BUDGET_MINUTES = 5.0  # measured: see docs/BENCHMARKS.md ("The demo's avatar")
# What the created avatar depends on, besides the clip.
SOURCES = ("app/avatar_create.py", "app/create_cmd.py", "avatar/appearance.py",
           "avatar/shape.py", "avatar/completion.py", "avatar/corrective_fit.py",
           "avatar/lca.py", "render/torch_splat.py", "assets/avatars/default.lca",
           "assets/template/template.safetensors")


def key(clip: Path) -> str:
    """16 hex digits of the hash of the clip and the creation code."""
    digest = hashlib.sha256()
    for path in [clip, *(ROOT / s for s in SOURCES)]:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def path_for(clip: Path) -> Path:
    return CACHE / f"{clip.stem}-{key(clip)}.lca"


def find(clip: Path) -> Path | None:
    """The clip's created avatar if the set-up made it for this clip and this code."""
    if not clip.is_file():
        return None
    path = path_for(clip)
    return path if path.is_file() else None


def main() -> int:
    """Create the avatar for a clip unless it is there (the set-up's step)."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(description="create the demo clip's avatar once")
    parser.add_argument("clip", type=Path)
    parser.add_argument("--budget", type=float, default=BUDGET_MINUTES, help="minutes")
    args = parser.parse_args()
    target = path_for(args.clip)
    if target.is_file():
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"{args.clip.stem}-*.lca"):
        stale.unlink()  # made from another clip or by older code
    print(f"[setup:demo-avatar] creating the demo talker's own avatar from {args.clip.name} "
          f"(once; a budget of {args.budget:g} minutes)", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "avatar", "create", "--video", str(args.clip),
         "--out", str(target), "--name", "the demo's talker", "--budget", str(args.budget),
         "--seed", "0"], cwd=ROOT)
    return done.returncode


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
