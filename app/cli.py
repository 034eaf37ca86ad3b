"""The command line: one subcommand per user-facing job.

Each command lives in its own module of ``app/`` with ``add_parser(subparsers)`` (which sets
``func`` on its parser) and is imported only when the CLI starts, so a command's heavy
dependencies never load for another. Errors a user can cause are raised as ``UserError``
and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import math
import sys
import tempfile
from pathlib import Path

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


# -- the argument-checking layer: run by ``main`` on every command's arguments before the
#    command starts work, so a bad number or an output that cannot be written is one line
#    at once, not a traceback (or a refusal after rendering a whole video). Options are
#    known by their ``dest``, which means the same in every command.
POSITIVE = ("fps", "height", "speed", "token_ttl", "max_message_kb", "max_participants",
            "max_gaussians")
NON_NEGATIVE = ("duration", "max_seconds", "max_frames", "start", "screenshot_after",
                "frame", "time")
OUTPUTS = ("out", "preview", "screenshot", "record", "stats", "bvh")


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_number(value, option: str, positive: bool = True) -> None:
    """UserError unless ``value`` is a finite number above zero (``positive``) or at least
    zero (not ``positive``)."""
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UserError(f"{option} must be a {'positive' if positive else 'non-negative'} "
                        f"finite number, not {value}")


def check_output(path, option: str) -> None:
    """UserError unless a file can be written at ``path``: not a directory, and its folder
    (or, when that is still to be made, the nearest existing folder above it) takes a new
    file. Checked by creating and removing a file there, so it holds for root too."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory, not a file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{option} {path}: {folder} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".splatcall-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write there ({exc.strerror})") from None


def check_args(args: argparse.Namespace) -> None:
    """Every check above on the options ``args`` has (those given: None is skipped)."""
    values = vars(args)
    for dest in POSITIVE + NON_NEGATIVE:
        value = values.get(dest)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(value, _option(dest), positive=dest in POSITIVE)
    for dest in OUTPUTS:
        if values.get(dest) is not None:
            check_output(values[dest], _option(dest))
    for address in values.get("ice_address") or ():
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UserError(f"--ice-address {address!r} is not an IP address") from None
    if values.get("command") == "call" and values.get("avatar"):
        from app.stock_avatar import is_stock, stock_avatar_file
        from avatar.stock import StockError

        if is_stock(values["avatar"]):  # crosses the call as a .lca like any other avatar
            try:
                args.avatar = str(stock_avatar_file(values["avatar"]))
            except StockError as exc:
                raise UserError(f"--avatar: {exc}") from None
        check_avatar_file(args.avatar, "--avatar")


def check_avatar_file(path, option: str) -> None:
    """UserError unless ``path`` is an avatar this program (and so every receiver) accepts:
    checked before it is offered to anyone."""
    from avatar.lca import AvatarFileError, load_avatar_file
    from avatar.template import load_template

    try:
        load_avatar_file(path, load_template())
    except AvatarFileError as exc:
        raise UserError(f"{option}: {exc}") from None


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
        check_args(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
