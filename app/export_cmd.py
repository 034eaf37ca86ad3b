"""``main.py export``: codes (a JSONL file, or one participant of a recording folder) to an
animation file. BVH for now (``avatar.bvh``); the rendered video of a recording will join it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.cli import UserError

RECORDED_CODES = "*.codes.jsonl"  # what `call --record DIR` writes, one file a participant


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export codes or a recorded participant as a BVH animation",
        description="Export SOURCE, a codes JSONL file or a recording folder (main.py call "
                    "--record DIR: one <name>-<id>.codes.jsonl per participant), as a BVH "
                    "animation of the template's skeleton: body, head, eyes and every finger, "
                    "offsets in centimetres, Euler angles in ZXY order, one BVH frame per "
                    "codes frame at the codes' median frame interval.")
    p.add_argument("source", metavar="SOURCE", type=Path,
                   help="codes JSONL file, or a recording folder")
    p.add_argument("--bvh", type=Path, metavar="OUT.bvh", help="write a BVH file here")
    p.add_argument("--participant", metavar="NAME",
                   help="in a recording folder: whose codes (the start of the file name, "
                        "e.g. ana or ana-3f2c); needed when it holds more than one")
    p.add_argument("--fps", type=float, default=None,
                   help="BVH frame rate (default: the codes' own rate)")
    p.set_defaults(func=run)


def codes_file(source: Path, participant: str | None) -> Path:
    """The codes JSONL to export: ``source`` itself, or one participant's of a recording."""
    if not source.exists():
        raise UserError(f"{source} does not exist")
    if not source.is_dir():
        if participant is not None:
            raise UserError("--participant chooses a participant of a recording folder; "
                            f"{source} is a codes file")
        return source
    recorded = sorted(source.glob(RECORDED_CODES))
    if not recorded:
        raise UserError(f"{source} holds no recorded participants ({RECORDED_CODES})")
    names = [p.name.removesuffix(".codes.jsonl") for p in recorded]
    if participant is None:
        if len(recorded) > 1:
            raise UserError(f"{source} holds {len(recorded)} participants ({', '.join(names)}):"
                            " choose one with --participant")
        return recorded[0]
    chosen = [p for p, n in zip(recorded, names) if n == participant
              or n.startswith(participant + "-")]
    if len(chosen) != 1:
        found = "no participant" if not chosen else f"{len(chosen)} participants"
        raise UserError(f"{found} named {participant!r} in {source} ({', '.join(names)})")
    return chosen[0]


def run(args) -> int:
    from avatar.bvh import write_bvh
    from avatar.codes import CodesError, read_jsonl
    from avatar.template import load_template

    if args.bvh is None:
        raise UserError("say what to write: --bvh OUT.bvh (the only export format so far)")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise UserError("--fps must be within (0, 1000]")
    path = codes_file(args.source, args.participant)
    try:
        frames = read_jsonl(path)
    except CodesError as exc:
        raise UserError(str(exc)) from None
    if not frames:
        raise UserError(f"{path}: no codes frames in the file")
    if not args.bvh.parent.is_dir():
        raise UserError(f"cannot write {args.bvh}: the folder {args.bvh.parent} does not exist")

    def progress(done: int) -> None:
        print(f"  {done}/{len(frames)} frames", file=sys.stderr, flush=True)

    print(f"exporting {len(frames)} frames of {path} -> {args.bvh}", file=sys.stderr)
    try:
        count = write_bvh(args.bvh, frames, load_template(),
                          frame_time=1.0 / args.fps if args.fps else None, progress=progress)
    except OSError as exc:
        raise UserError(f"cannot write {args.bvh}: {exc.strerror or exc}") from None
    print(f"wrote {count} frames to {args.bvh}", file=sys.stderr)
    return 0
