"""`main.py demo`: the product's main job on any machine, no webcam, GPU or display needed.

Renders the embedded default avatar talking and waving to an MP4 (out/demo.mp4), through
the same code path as `main.py render`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the demo (no webcam, GPU or display needed)",
                       description="Render the embedded default avatar talking and waving to a video "
                       "file. Needs no webcam, GPU or display.")
    p.add_argument("--out", type=Path, default=Path("out/demo.mp4"), help="output video (default: out/demo.mp4)")
    p.add_argument("--size", default="384x384", help="WIDTHxHEIGHT (default: 384x384)")
    p.add_argument("--backend", default="auto", choices=("auto", "gl", "cuda", "reference"),
                   help="renderer backend (default: the fastest available)")
    p.set_defaults(func=run)


def run(args) -> int:
    from app import render_cmd

    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_args = argparse.Namespace(
        avatar="default", pose="wave", codes=None, out=args.out, size=args.size, camera="front",
        backend=args.backend, fps=24.0, background="1,1,1",
    )
    return render_cmd.run(render_args)
