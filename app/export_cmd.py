"""``main.py export``: codes (a JSONL file, or one participant of a call recording) to a BVH
animation (``avatar.bvh``), and a call recording (``call --record FILE``) to an MP4: H.264
with every chosen participant side by side and AAC with every voice mixed (``app.replay``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.cli import UserError
from render.backends import BACKENDS

RECORDED_CODES = "*.codes.jsonl"  # what `call --record DIR` writes, one file a participant


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a recording as an MP4 video, or codes as a BVH animation",
        description="Export a call recording (main.py call --record FILE) as an MP4 video "
                    "(--out: everyone side by side, every voice mixed), or SOURCE (a codes "
                    "JSONL file, a recording file, or an older recording folder of "
                    "<name>-<id>.codes.jsonl files) as a BVH "
                    "animation of the template's skeleton: body, head, eyes and every finger, "
                    "offsets in centimetres, Euler angles in ZXY order, one BVH frame per "
                    "codes frame at the codes' median frame interval.")
    p.add_argument("source", metavar="SOURCE", type=Path,
                   help="a recording file, a codes JSONL file, or a recording folder")
    p.add_argument("--bvh", type=Path, metavar="OUT.bvh", help="write a BVH file here")
    p.add_argument("--out", type=Path, metavar="OUT.mp4",
                   help="render a recording to this MP4 (H.264 + AAC)")
    p.add_argument("--size", default="960x540", metavar="WxH",
                   help="video size (default 960x540)")
    p.add_argument("--camera", choices=("front", "side", "orbit"), default="front",
                   help="front, side (from the right, 60 degrees) or orbit (one turn over the "
                        "video) (default: front)")
    p.add_argument("--participants", metavar="NAMES",
                   help="comma-separated names to show (default: everyone recorded)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="renderer backend for --out (default: the fastest available)")
    p.add_argument("--participant", metavar="NAME",
                   help="in a recording folder: whose codes (the start of the file name, "
                        "e.g. ana or ana-3f2c); needed when it holds more than one")
    p.add_argument("--fps", type=float, default=None,
                   help="BVH or video frame rate (default: the codes' own rate; for a "
                        "recording, the call's)")
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


def recorded_frames(source: Path, participant: str | None) -> list:
    """One participant's frames of a recording file, timed on the recording's clock."""
    from app.replay import choose, load_recording

    recording = load_recording(source)
    everyone = choose(recording, None)
    if participant is None:
        if len(everyone) > 1:
            raise UserError(f"{source} holds {len(everyone)} participants "
                            f"({', '.join(p.name for p in everyone)}): choose one with "
                            "--participant")
        chosen = everyone
    else:
        chosen = choose(recording, participant)
    (who,) = chosen[:1]
    return [codes.replace(t=t) for t, codes in zip(who.times, who.frames)]


def run(args) -> int:
    from app.replay import is_recording
    from avatar.bvh import write_bvh
    from app.cli import read_codes
    from avatar.template import load_template

    if args.fps is not None and not 0 < args.fps <= 1000:
        raise UserError("--fps must be within (0, 1000]")
    if args.out is not None:
        if args.bvh is not None:
            raise UserError("give --out or --bvh, not both")
        return export_video(args)
    if args.bvh is None:
        raise UserError("say what to write: --out OUT.mp4 (a recording) or --bvh OUT.bvh")
    if args.source.is_file() and is_recording(args.source):
        path = args.source
        frames = recorded_frames(args.source, args.participant)
    else:
        path = codes_file(args.source, args.participant)
        frames = read_codes(path)
    if not frames:
        raise UserError(f"{path}: no codes frames for this participant")
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


def export_video(args) -> int:
    """A recording as an MP4: ``round(duration * fps)`` frames and exactly as much audio."""
    import math
    import time

    from app.cli import parse_size
    from app.render_cmd import open_backend
    from app.replay import Replay, SceneRenderer, audio_samples, choose, load_recording, \
        scene_camera
    from net.recording import SAMPLE_RATE
    from render.video import VideoError, VideoWriter, to_uint8

    width, height = parse_size(args.size)
    if width % 2 or height % 2:
        raise UserError(f"an MP4 needs an even --size, got {width}x{height}")
    if args.out.suffix.lower() != ".mp4":
        raise UserError(f"--out must end in .mp4, got {args.out.name!r}")
    if not args.out.parent.is_dir():
        raise UserError(f"cannot write {args.out}: the folder {args.out.parent} does not exist")
    if not args.source.is_file() or not args.source.exists():
        raise UserError(f"{args.source} is not a recording file")
    recording = load_recording(args.source)
    participants = choose(recording, args.participants)
    replay = Replay(recording, participants)
    fps = args.fps or replay.fps
    frames = max(1, int(round(replay.duration_s * fps)))
    samples = audio_samples(frames, fps)
    backend = open_backend(args.backend)
    background = (1.0, 1.0, 1.0)
    names = ", ".join(s.participant.name or s.participant.id for s in replay.seats)
    print(f"exporting {args.source} ({replay.duration_s:.2f} s; {names}) -> {args.out}: "
          f"{frames} frames at {fps:g} fps, {width}x{height}, {backend.name} backend",
          file=sys.stderr, flush=True)
    scene = SceneRenderer(backend, replay)
    writer = None
    started = time.monotonic()
    try:
        writer = VideoWriter(args.out, width, height, fps=fps, audio_rate=SAMPLE_RATE)
        for index in range(frames):
            t = index / fps
            angle = 2 * math.pi * index / frames if args.camera == "orbit" else 0.0
            camera = scene_camera(args.camera, width, height, replay.width_m, angle)
            writer.write(to_uint8(scene.render(t, camera, background), background))
            if index % 10 == 9 or index == frames - 1:
                _progress(index + 1, frames, time.monotonic() - started)
        writer.write_audio(replay.mixed_voices(samples))
        writer.close()
        writer = None
    except VideoError as exc:
        raise UserError(str(exc)) from None
    finally:
        if writer is not None:
            writer.abort()
        backend.release()
    print(f"\nwrote {frames} frames and {samples / SAMPLE_RATE:.3f} s of audio to {args.out}",
          file=sys.stderr)
    return 0


def _progress(done: int, total: int, elapsed_s: float) -> None:
    bar = "#" * int(30 * done / total)
    left = elapsed_s / done * (total - done)
    print(f"\r  [{bar:<30}] {done}/{total} frames, {left:.0f} s left", end="",
          file=sys.stderr, flush=True)
