"""``main.py avatar create``: a personal avatar from a video, a folder of photos or a guided
camera capture (the pipeline is ``app.avatar_create``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.cli import UserError

MIN_BUDGET_MIN, MAX_BUDGET_MIN = 0.5, 120.0
# The guided capture: (what to do, seconds).
CAPTURE_PROMPTS = (
    ("look straight at the camera", 4.0),
    ("turn your head slowly to your left, then back", 4.0),
    ("turn your head slowly to your right, then back", 4.0),
    ("smile", 3.0),
    ("open your mouth wide, then close it", 3.0),
    ("raise your eyebrows", 3.0),
    ("show both hands, palms to the camera", 4.0),
    ("if your whole body fits in the picture: step back and turn around slowly "
     "(otherwise keep looking at the camera)", 8.0),
)
CAPTURE_FPS = 8.0  # frames kept a second of the capture
CANCELLED = "the capture was cancelled (its window was closed); nothing was written"


def add_parser(actions) -> None:
    p = actions.add_parser(
        "create", help="make your own avatar from a video, photos or the camera",
        description="Make a personal avatar (.lca) from a clip of you: tracks the frames, cuts "
        "you out, fits cameras, colours the avatar from the frames and refines it with a "
        "differentiable splatter, then scores it on frames it never saw. Record 10-30 "
        "seconds, head and shoulders in view, facing the camera and turning the head slowly, "
        "in good light. The last line printed is the held-out quality.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, metavar="FILE", help="a video file of you")
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="a folder of photos of you (several angles, one camera)")
    source.add_argument("--camera", nargs="?", const="0", metavar="N",
                        help="capture now from camera N (default 0), guided by prompts in a "
                        "window (in the terminal without a display or with --no-window; about "
                        "35 seconds)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.lca",
                   help="where to write the avatar")
    p.add_argument("--name", default=None, help="the avatar's name (default: the file's stem)")
    p.add_argument("--budget", type=float, default=10.0, metavar="MINUTES",
                   help="about how long the whole run may take; more time, better fit "
                   "(default %(default)s, on a 2-core CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--as-default", action="store_true",
                   help="also make it your avatar for `call`, `view` and `render` when they "
                   "are given no --avatar (kept in your data directory)")
    p.add_argument("--no-window", action="store_true",
                   help="with --camera: prompts in the terminal only, even with a display")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the fit (default: torch's choice; 1 is faster on a "
                   "busy machine)")
    p.set_defaults(func=run_create)


class ProgressBar:
    """One stderr line: a bar, the stage and the time left (redrawn in a terminal; one line
    per stage otherwise)."""

    WIDTH = 24

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.stage = None
        self.last_draw = 0.0

    def __call__(self, stage: str, fraction: float, left_s: float) -> None:
        from app.avatar_create import format_seconds

        now = time.perf_counter()
        elapsed = now - self.started
        overall = elapsed / max(elapsed + left_s, 1e-6)
        text = f"{stage:<11} about {format_seconds(left_s)} left"
        if self.tty:
            if stage == self.stage and now - self.last_draw < 0.2 and fraction < 1:
                return
            filled = round(self.WIDTH * overall)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                              f"{overall:4.0%} {text}   ")
            self.stream.flush()
        elif stage != self.stage:
            self.stream.write(f"  {overall:4.0%} {text}\n")
            self.stream.flush()
        self.stage, self.last_draw = stage, now

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def capture_from_camera(device: str, seconds_scale: float = 1.0, open_window=None):
    """A guided capture: prompts on stderr while frames are kept at CAPTURE_FPS. With
    ``open_window`` (called once the camera is open; returns an
    app.capture_window.CaptureWindow or None) the prompts, the camera's picture and each
    step's time left are shown there too, and closing it (or Esc) cancels the capture."""
    from app.avatar_create import clip_from_frames
    from tracking.sources import SourceError, SourceLost, open_source

    spec = f"camera:{device}"
    try:
        source = open_source(spec)
    except SourceError as exc:
        raise UserError(f"no camera to capture from: {exc}") from None
    frames, times = [], []
    say = sys.stderr
    window = None
    try:
        window = open_window() if open_window is not None else None
        say.write("guided capture: follow the prompts; keep your head and shoulders in "
                  "the picture, in good light\n")
        for count in (3, 2, 1):
            say.write(f"  starting in {count}...\n")
            say.flush()
            if window is None:
                time.sleep(1.0)
                continue
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                frame = source.read()
                if frame is None:
                    break
                if not window.show(frame.image, f"get ready: starting in {count}", 0,
                                   len(CAPTURE_PROMPTS), 1.0 - (until - time.monotonic())):
                    raise UserError(CANCELLED)
        start = time.monotonic()
        next_keep = start
        for step, (prompt, seconds) in enumerate(CAPTURE_PROMPTS, 1):
            say.write(f"  now: {prompt}\n")
            say.flush()
            began = time.monotonic()
            until = began + seconds * seconds_scale
            while time.monotonic() < until:
                frame = source.read()
                if frame is None:
                    break
                if window is not None and not window.show(
                        frame.image, prompt, step, len(CAPTURE_PROMPTS),
                        (time.monotonic() - began) / (until - began)):
                    raise UserError(CANCELLED)
                if frame.t >= next_keep:
                    frames.append(frame.image)
                    times.append(frame.t - start)
                    next_keep += 1.0 / CAPTURE_FPS
        say.write("  done: thank you\n")
    except SourceLost as exc:
        raise UserError(f"the camera stopped during the capture ({exc}); try again") from None
    finally:
        if window is not None:
            window.close()
        source.close()
    return clip_from_frames(frames, times, spec)


def run_create(args) -> int:
    from app.avatar_create import CreateError, CreateSettings, format_seconds

    if args.out.suffix.lower() != ".lca":
        raise UserError(f"--out must end in .lca, got {args.out.name!r}")
    if not args.out.parent.is_dir():
        raise UserError(f"output folder {args.out.parent} does not exist")
    if not MIN_BUDGET_MIN <= args.budget <= MAX_BUDGET_MIN:
        raise UserError(f"--budget must be {MIN_BUDGET_MIN:g} to {MAX_BUDGET_MIN:g} minutes, "
                        f"not {args.budget:g}")
    if args.threads is not None and not 1 <= args.threads <= 256:
        raise UserError("--threads must be 1 to 256")
    settings = CreateSettings(budget_s=args.budget * 60.0, seed=args.seed,
                              name=args.name or args.out.stem, threads=args.threads)
    settings = product_settings(settings)
    started = time.perf_counter()
    try:
        clip = read_source(args, settings)
        bar = ProgressBar()
        print(f"making an avatar from {len(clip.frames)} frames of {clip.description} "
              f"(budget {format_seconds(settings.budget_s)})", file=sys.stderr)
        from app.avatar_create import create_avatar

        try:
            result = create_avatar(clip, args.out, settings, bar)
        finally:
            bar.done()
    except CreateError as exc:
        raise UserError(str(exc)) from None
    stages = ", ".join(f"{k} {format_seconds(v)}" for k, v in result.seconds.items())
    print(f"stages: {stages}; total {format_seconds(time.perf_counter() - started)}",
          file=sys.stderr)
    print(f"wrote {args.out} ({result.size_bytes / 1e6:.1f} MB, {len(result.data):,} "
          f"Gaussians, {result.provenance['gaussians_seen']:,} seen in the clip, "
          f"{result.info['training']} frames fitted)", file=sys.stderr)
    if args.as_default:
        from app.user_avatar import install_user_avatar

        try:
            target = install_user_avatar(args.out)
        except OSError as exc:
            raise UserError(f"--as-default: cannot copy the avatar to your data directory "
                            f"({exc})") from None
        print(f"your default avatar is now {target} (call, view and render use it when "
              "given no --avatar)", file=sys.stderr)
    print(result.quality.summary())
    return 0


def product_settings(settings):
    """The stages the command runs (tests turn some off to stay short): all but the
    correctives, which broke the face at expressions past the clip's (app.avatar_create,
    stage 9)."""
    settings.shape = settings.complete = True
    settings.correctives = False
    return settings


def read_source(args, settings):
    from app.avatar_create import read_images, read_video

    if args.video is not None:
        return read_video(args.video, settings.max_frames)
    if args.images is not None:
        return read_images(args.images, settings.max_frames)
    return capture_from_camera(args.camera,
                               open_window=None if args.no_window else open_capture_window)


def open_capture_window():
    """The capture window where there is a display, else None (the terminal's prompts only;
    one line says why when a display was there but the window would not open)."""
    from app.view_cmd import no_display_reason

    if no_display_reason() is not None:
        return None
    from app.capture_window import CaptureWindow

    try:
        return CaptureWindow()
    except UserError as exc:
        print(f"avatar create: no capture window ({exc}); the prompts come here",
              file=sys.stderr)
        return None
