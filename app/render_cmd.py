"""`main.py render`: an avatar in a built-in pose or driven by a codes file, to PNG or MP4."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from app.cli import UserError, parse_size
from render.backends import BACKENDS

CAMERAS = ("front", "side", "orbit", "portrait")
PORTRAIT_DISTANCE_M = 1.1
PORTRAIT_HEIGHT_M = 0.62  # what a portrait frame spans: the head and the shoulders
FPS = 30.0
AUDIO_RATE = 48000


def add_parser(sub) -> None:
    from app.poses import POSES

    p = sub.add_parser(
        "render",
        help="render an avatar offscreen to a PNG or an MP4",
        description="Render an avatar (the embedded default or a .lca file) in a built-in pose or "
        "animation, or driven by a codes JSONL file, to a PNG image or an H.264 MP4 video. "
        "Needs no display or GPU.",
    )
    p.add_argument("--avatar", default=None,
                   help="'default' or a .lca file (default: your own avatar if `avatar create "
                   "--as-default` made one, else the built-in default)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--pose", choices=sorted(POSES),
                        help="built-in pose or animation (default: rest)")
    source.add_argument("--codes", type=Path, help="codes JSONL file (one frame per line)")
    p.add_argument("--out", type=Path, required=True, help="output file: .png (one frame) or .mp4")
    p.add_argument("--size", default="512x512", help="WIDTHxHEIGHT in pixels (default: 512x512)")
    p.add_argument("--camera", choices=CAMERAS, default="front",
                   help="front, side (from the avatar's left), orbit around it, or portrait "
                        "(head and shoulders, from the front of the first frame's face; "
                        "default: front)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="renderer backend (default: the fastest available)")
    p.add_argument("--fps", type=float, default=FPS, help=f"video frame rate (default: {FPS:g})")
    p.add_argument("--background", default="1,1,1",
                   help="background colour r,g,b in [0,1] (default: white)")
    p.add_argument("--audio", type=Path,
                   help="an audio file to put beside the video (e.g. a call recording's .wav); "
                        "MP4 only")
    p.set_defaults(func=run)




def parse_colour(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise UserError(f"--background must be r,g,b with values in [0, 1], got {text!r}")
    return values  # type: ignore[return-value]


def preset_camera(kind: str, width: int, height: int, angle_rad: float = 0.0):
    """A camera framing a standing avatar (1.6-1.8 m tall) from the front, side or an orbit
    angle (radians, counter-clockwise seen from above, 0 = front)."""
    from render.camera import Camera

    distance, target = 3.3, np.array([0.0, 0.88, 0.0])
    if kind == "side":
        angle_rad = math.pi / 2
    eye = target + np.array([distance * math.sin(angle_rad), 0.12, distance * math.cos(angle_rad)])
    # Fit 2.1 m of height, or of width on a tall, narrow frame.
    fov = math.degrees(2 * math.atan(1.05 / distance * max(1.0, height / width)))
    return Camera.look_at(eye, target, width, height, vertical_fov_deg=fov)


def portrait_framing(avatar, codes) -> tuple[np.ndarray, np.ndarray]:
    """(target, forward): the point a head-and-shoulders camera looks at (below the eyes, so
    the shoulders are in) and the avatar's horizontal facing, for one codes frame."""
    rig = avatar.rig
    skeleton = rig.pose_codes(codes)
    names = list(rig.bone_names)
    eyes = skeleton.heads[[names.index("eye.L"), names.index("eye.R")]].mean(axis=0)
    facing = skeleton.rotations[rig.root_index] @ np.array([0.0, 0.0, 1.0])
    facing[1] = 0.0
    norm = np.linalg.norm(facing)
    forward = facing / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])
    return eyes - np.array([0.0, 0.12, 0.0]), forward


def portrait_camera(avatar, codes, width: int, height: int):
    """A head-and-shoulders camera in front of the avatar's face for one codes frame."""
    from render.camera import Camera

    target, forward = portrait_framing(avatar, codes)
    eye = target + forward * PORTRAIT_DISTANCE_M + np.array([0.0, 0.03, 0.0])
    half = PORTRAIT_HEIGHT_M / 2 * max(1.0, height / width)
    fov = math.degrees(2 * math.atan(half / PORTRAIT_DISTANCE_M))
    return Camera.look_at(eye, target, width, height, vertical_fov_deg=fov)


def load_frames(args) -> list:
    from app.poses import POSES
    from app.cli import read_codes

    if args.codes is not None:
        return read_codes(args.codes)
    return POSES[args.pose or "rest"].frames(args.fps)


def open_backend(name: str):
    from render.backends import get_backend
    from render.errors import BackendUnavailable

    try:
        return get_backend(name)
    except BackendUnavailable as exc:
        raise UserError(str(exc)) from None


def run(args) -> int:
    from avatar.avatar import load_avatar
    from avatar.lca import AvatarFileError
    from render.video import VideoError, VideoWriter, read_audio, to_uint8, write_png

    width, height = parse_size(args.size)
    background = parse_colour(args.background)
    suffix = args.out.suffix.lower()
    if suffix not in (".png", ".mp4"):
        raise UserError(f"--out must end in .png or .mp4, got {args.out.name!r}")
    if not args.out.parent.is_dir():
        raise UserError(f"output folder {args.out.parent} does not exist")
    if suffix == ".mp4" and (width % 2 or height % 2):
        raise UserError(f"an MP4 needs an even --size, got {width}x{height}")
    audio = None
    if args.audio is not None:
        if suffix != ".mp4":
            raise UserError("--audio needs an .mp4 output")
        try:
            audio = read_audio(args.audio, AUDIO_RATE)
        except VideoError as exc:
            raise UserError(str(exc)) from None
    from app.user_avatar import avatar_or_user_default

    args.avatar, note = avatar_or_user_default(args.avatar, "default")
    if note:
        print(note, file=sys.stderr)
    try:
        avatar = load_avatar(args.avatar)
    except AvatarFileError as exc:
        raise UserError(str(exc)) from None
    frames = load_frames(args)
    if suffix == ".png":
        frames = frames[:1]
    elif args.camera == "orbit" and len(frames) == 1:
        frames = frames * int(3 * args.fps)  # a still pose: three seconds around it
    backend = open_backend(args.backend)
    print(f"rendering {len(frames)} frame(s) of '{avatar.name}' ({len(avatar)} Gaussians) "
          f"at {width}x{height} with the {backend.name} backend", file=sys.stderr)

    started = time.monotonic()
    writer = None
    try:
        if suffix == ".mp4":
            writer = VideoWriter(args.out, width, height, fps=args.fps,
                                 audio_rate=AUDIO_RATE if audio is not None else None)
        # A portrait camera stays where the first frame puts it: a steady frame, as a
        # webcam is, rather than one that follows every nod.
        portrait = (portrait_camera(avatar, frames[0], width, height)
                    if args.camera == "portrait" else None)
        for index, codes in enumerate(frames):
            angle = 2 * math.pi * index / max(len(frames), 1) if args.camera == "orbit" else 0.0
            if args.camera == "orbit" and len(frames) == 1:
                angle = math.radians(30)
            camera = portrait or preset_camera(args.camera, width, height, angle)
            rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
            image = to_uint8(rgba, background)
            if writer is None:
                write_png(args.out, image)
            else:
                writer.write(image)
            if len(frames) > 1 and (index % 10 == 9 or index == len(frames) - 1):
                print(f"  frame {index + 1}/{len(frames)} ({time.monotonic() - started:.1f} s)",
                      file=sys.stderr)
        if writer is not None:
            if audio is not None:
                writer.write_audio(audio)
            writer.close()
            writer = None
    except VideoError as exc:
        raise UserError(str(exc)) from None
    finally:
        if writer is not None:
            writer.abort()
        backend.release()
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
