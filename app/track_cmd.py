"""`main.py track`: a camera, video, image or folder of images -> codes JSONL (+ preview MP4)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common.files import part_path
from app.cli import UserError, parse_size
from render.backends import BACKENDS

PREVIEW_HEIGHT = 480


def add_parser(sub) -> None:
    p = sub.add_parser(
        "track",
        help="track a person (webcam, video, image or folder) into codes",
        description="Track face, gaze, head, body and both hands of the person in INPUT and write "
        "one codes frame per picture to a JSONL file. INPUT is an image, a folder of images, "
        "a video file, or camera[:N] (a V4L2 webcam, /dev/videoN; stop with Ctrl-C). "
        "A camera that goes away mid-run is waited for: codes marked invalid keep coming "
        "until it is back. Optionally writes a preview video: the frame with its landmarks "
        "beside the default avatar driven by the codes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="image, folder, video file or camera[:N]")
    p.add_argument("--out", type=Path, help="codes JSONL file to write")
    p.add_argument("--vmc", metavar="HOST:PORT", nargs="?", const="39539",
                   help="also (or instead of --out) send every frame over the VMC protocol (OSC "
                        "over UDP) to a VMC receiver such as VSeeFace, Warudo, VNyan or a "
                        "Blender/Unity/Unreal plugin; PORT alone is this machine; no value: "
                        "this machine's port 39539, VMC's usual")
    p.add_argument("--preview", type=Path, help="also write a preview MP4 (landmarks | avatar)")
    p.add_argument("--mirror", action="store_true",
                   help="selfie mirroring: the avatar moves like your mirror image")
    p.add_argument("--no-smoothing", action="store_true", help="turn the One Euro filters off")
    p.add_argument("--landmarks", choices=("auto", "split", "holistic"), default="auto",
                   help="mediapipe graphs: split (pose, with face and hands cropped from it in "
                   "a second thread; video only) or one holistic graph; auto: split for video "
                   "and cameras, holistic for images")
    p.add_argument("--size", default="640x480", help="camera resolution WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=30.0, help="camera frame rate")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop a camera after this many seconds (0: until Ctrl-C)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="renderer for the preview's avatar")
    p.set_defaults(func=run)




class _CodesFile:
    """Codes JSONL written line by line to OUT.part (flushed each frame) and renamed to OUT
    when tracking stops for any reason, so an interrupt or crash keeps every frame so far."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = part_path(path)
        try:
            self.handle = self.tmp.open("w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
        self.count = 0

    def write(self, codes) -> None:
        self.handle.write(codes.to_json() + "\n")
        self.handle.flush()
        self.count += 1

    def close(self) -> None:
        self.handle.close()
        self.tmp.replace(self.path)


class _Preview:
    """Frame with landmarks (left) beside the avatar posed by the codes (right)."""

    def __init__(self, path: Path, backend: str, fps: float):
        from avatar.avatar import load_avatar
        from render.backends import get_backend
        from render.camera import Camera

        self.path = path
        self.fps = fps
        self.avatar = load_avatar("default")
        self.renderer = get_backend(backend)
        self.camera = Camera.look_at([0.0, 1.0, 3.2], [0.0, 0.95, 0.0], PREVIEW_HEIGHT,
                                     PREVIEW_HEIGHT, vertical_fov_deg=40.0)
        self.writer = None
        self.last_avatar = None

    def add(self, result) -> None:
        from render.video import VideoWriter, to_uint8

        if result.frame is not None:
            picture = _draw_landmarks(result.frame.image, result.landmarks)
        else:
            picture = np.zeros((PREVIEW_HEIGHT, PREVIEW_HEIGHT * 4 // 3, 3), np.uint8)
        height = PREVIEW_HEIGHT
        width = int(round(picture.shape[1] * height / picture.shape[0] / 2)) * 2
        from PIL import Image

        left = np.asarray(Image.fromarray(picture).resize((width, height), Image.BILINEAR))
        if result.codes.valid.any() or self.last_avatar is None:
            codes = result.codes
            rgba = self.renderer.render(self.avatar.pose(codes), self.camera)
            self.last_avatar = to_uint8(rgba, (0.35, 0.35, 0.38))
        canvas = np.concatenate([left, self.last_avatar], axis=1)
        if self.writer is None:
            self.writer = VideoWriter(self.path, canvas.shape[1], canvas.shape[0], self.fps)
        self.writer.write(canvas)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close() if ok else self.writer.abort()
        self.renderer.release()


def _draw_landmarks(image: np.ndarray, lm) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    if lm is None:
        return image
    draw = ImageDraw.Draw(pil)
    r = max(1, image.shape[1] // 320)

    def dots(points, colour):
        if points is None:
            return
        for x, y in points[:, :2]:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    dots(lm.face, (80, 220, 255))
    dots(lm.pose, (255, 220, 60))
    dots(lm.hands[0], (90, 255, 90))
    dots(lm.hands[1], (255, 90, 200))
    return np.asarray(pil)


def run(args) -> int:
    from avatar.codes import PARTS
    from tracking.sources import SourceError, open_source
    from tracking.tracker import Tracker, track

    size = parse_size(args.size)
    if args.out is None and args.vmc is None:
        raise UserError("say where the codes go: --out codes.jsonl, --vmc HOST:PORT, or both")
    vmc = None
    if args.vmc:
        from app.vmc_io import open_sender

        vmc = open_sender(args.vmc, "--vmc")
    try:
        source = open_source(args.input, size=size, fps=args.fps)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    static = not source.live and source.__class__.__name__ == "ImageSource"
    if static and args.landmarks == "split":
        source.close()
        raise UserError("--landmarks split tracks between video frames: use holistic (or "
                        "auto) for images")
    targets = [str(t) for t in (args.out, args.vmc and f"VMC {args.vmc}") if t]
    print(f"tracking {source.description} -> {' and '.join(targets)}", file=sys.stderr)
    out = _CodesFile(args.out) if args.out else None
    preview = None
    ok = False
    count = 0
    seen = np.zeros(len(PARTS), dtype=np.int64)
    start = time.monotonic()
    last_report = start
    try:
        if args.preview:
            preview = _Preview(args.preview, args.backend, source.nominal_fps or args.fps)
        with Tracker(mirror=args.mirror, smoothing=not args.no_smoothing, static=static,
                     backend=None if args.landmarks == "auto" else args.landmarks) as tracker:
            def should_stop():
                return bool(args.duration) and time.monotonic() - start > args.duration

            events = lambda message: print(message, file=sys.stderr)  # noqa: E731
            for result in track(source, tracker, on_event=events, should_stop=should_stop):
                count += 1
                if out is not None:
                    out.write(result.codes)
                if vmc is not None:
                    vmc.send(result.codes)
                seen += result.codes.valid
                if preview is not None:
                    preview.add(result)
                now = time.monotonic()
                if now - last_report >= 2.0:
                    print(f"  {count} frames, {count / (now - start):.1f} fps",
                          file=sys.stderr)
                    last_report = now
                if (args.max_frames and count >= args.max_frames) or should_stop():
                    break
        ok = True
    except KeyboardInterrupt:
        ok = True
        print("stopped", file=sys.stderr)
    finally:
        source.close()
        if out is not None:
            out.close()
        if vmc is not None:
            from app.vmc_io import sender_summary

            print(sender_summary(vmc), file=sys.stderr)
            vmc.close()
        if preview is not None:
            preview.close(ok)
    skipped = getattr(source, "skipped", [])
    for _path, reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    summary = ", ".join(f"{p} {n}" for p, n in zip(PARTS, seen))
    where = f"wrote {count} frames to {args.out}" if out is not None else f"tracked {count} frames"
    print(f"{where} (frames with each part: {summary})", file=sys.stderr)
    if count and not seen.any():
        print(f"warning: no person found in {args.input}: every frame is the rest pose",
              file=sys.stderr)
    if args.preview and ok:
        print(f"wrote preview {args.preview}", file=sys.stderr)
    return 0
