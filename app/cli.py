"""The command line: one subcommand per user-facing job.

Each command lives in its own module of ``app/`` with ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is imported only when the CLI starts, so a command's heavy
dependencies never load for another. Errors a user can cause are raised as ``UserError``
and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command name -> module. Listed in the order `--help` shows them.
COMMANDS = {
    "demo": "app.demo_cmd",
    "call": "app.call_cmd",
    "serve": "app.serve_cmd",
    "track": "app.track_cmd",
    "render": "app.render_cmd",
    "view": "app.view_cmd",
    "play": "app.play_cmd",
    "export": "app.export_cmd",
    "avatar": "app.avatar_cmd",
    "devices": "app.devices_cmd",
}


class UserError(Exception):
    """A problem the user can fix (bad file, missing device, bad option): printed as one line."""


def parse_size(text: str) -> tuple[int, int]:
    """A --size option, WIDTHxHEIGHT in pixels (16..8192 each), or UserError."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 640x480, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise UserError(f"--size {w}x{h} is outside 16..8192 pixels")
    return w, h


def read_codes(path) -> list:
    """The codes frames of a JSONL file, or a one-line ``UserError`` naming it: unreadable,
    invalid (the line and field, from ``CodesError``) or empty."""
    from avatar.codes import CodesError, read_jsonl

    try:
        frames = list(read_jsonl(path))
    except (CodesError, OSError, ValueError) as exc:
        raise UserError(f"cannot read codes from {path}: {exc}") from None
    if not frames:
        raise UserError(f"{path}: contains no codes frames")
    return frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Real-time Gaussian-avatar telepresence: webcam codes drive a 3D avatar.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
