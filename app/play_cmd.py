"""``main.py play``: a call recording in a window (glfw), everyone side by side.

Keys: Space play/pause, Left/Right seek 5 s back/forward (one frame while paused), Home to
the start, + and - double or halve the speed, R reset the view, S screenshot, Esc/Q quit;
drag to orbit (left) or pan (right/middle), scroll to zoom (``app.view_cmd``'s viewer with
several avatars posed through the posing contract). Sound is not played yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from render.backends import BACKENDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "play", help="replay a call recording in a window",
        description="Replay a call recording (main.py call --record FILE) in a window: the "
                    "participants side by side. Space play/pause, Left/Right seek 5 s (a frame "
                    "while paused), Home start, +/- speed, drag orbit, scroll zoom, R reset, "
                    "S screenshot, Esc/Q quit.")
    p.add_argument("recording", type=Path, metavar="FILE", help="the recording")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="renderer backend: auto is cuda when available, else gl")
    p.add_argument("--size", default="1280x720", metavar="WxH", help="window size in pixels")
    p.add_argument("--participants", metavar="NAMES",
                   help="comma-separated names to show (default: everyone recorded)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1)")
    p.add_argument("--start", type=float, default=0.0, metavar="S",
                   help="start this many seconds in")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE.png",
                   help="where the S key (or --screenshot-after) saves")
    p.add_argument("--screenshot-after", type=int, default=None, metavar="N",
                   help="save a screenshot after N drawn frames, then quit")
    p.add_argument("--xr", action="store_true",
                   help="replay in a headset (not supported yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from app.cli import UserError, parse_size
    from app.replay import Replay, choose, load_recording
    from app.view_cmd import no_display_reason

    if args.xr:
        raise UserError("play --xr is not supported yet; use the window (drop --xr)")
    width, height = parse_size(args.size)
    if not 0.0625 <= args.speed <= 16:
        raise UserError("--speed must be within 1/16..16")
    if args.screenshot_after is not None and args.screenshot_after < 1:
        raise UserError("--screenshot-after must be at least 1")
    reason = no_display_reason()
    if reason:
        raise UserError(reason + "; play needs a window. Render the recording to a video "
                        "with `main.py export FILE --out FILE.mp4` instead (it runs headless)")
    recording = load_recording(args.recording)
    replay = Replay(recording, choose(recording, args.participants))
    from app.xr_view import pick_backend

    backend_name, image_backend, why = pick_backend(args.backend)
    args = argparse.Namespace(**{**vars(args), "backend": backend_name, "camera": "front"})
    import glfw

    if not glfw.init():
        raise UserError("cannot open the display")
    try:
        viewer = make_viewer(args, replay, width, height, image_backend)
        names = ", ".join(s.participant.name or s.participant.id for s in replay.seats)
        print(f"play: {args.recording} ({replay.duration_s:.1f} s at {replay.fps:g} fps"
              f"{', cut short' if recording.truncated else ''}): {names}; backend "
              f"{backend_name} ({why}); Space pauses, +/- speed, Left/Right seek; no sound yet",
              file=sys.stderr, flush=True)
        return viewer.loop()
    finally:
        glfw.terminate()


class _Timeline:
    """What ``view``'s viewer needs of a playback: a duration to play (``frames`` empty)."""

    pose = None

    def __init__(self, duration_s: float):
        self.frames: list = []
        self.duration_s = duration_s


def make_viewer(args, replay, width: int, height: int, image_backend):
    from app.view_cmd import Viewer

    class PlayViewer(Viewer):
        """``view``'s window showing every seat of a replay at the playback clock."""

        def __init__(self):
            super().__init__(args, replay.seats[0].avatar, _Timeline(replay.duration_s),
                             width, height, image_backend)
            self.playing = True
            self.speed = args.speed
            self.media_s = min(max(0.0, args.start), replay.duration_s)
            self._last_clock = 0.0
            self._tuples: dict = {}
            self._fit()

        def _fit(self) -> None:
            self.orbit.reset()
            self.orbit.distance_m = max(3.0, replay.width_m * 1.6)

        def _on_key(self, window, key, scancode, action, mods):
            import glfw

            if action not in (glfw.PRESS, glfw.REPEAT):
                return super()._on_key(window, key, scancode, action, mods)
            step = 5.0 if self.playing else 1.0 / replay.fps
            if key == glfw.KEY_RIGHT:
                self.media_s = min(replay.duration_s, self.media_s + step)
            elif key == glfw.KEY_LEFT:
                self.media_s = max(0.0, self.media_s - step)
            elif key == glfw.KEY_HOME:
                self.media_s = 0.0
            elif key in (glfw.KEY_EQUAL, glfw.KEY_KP_ADD):
                self.speed = min(16.0, self.speed * 2)
            elif key in (glfw.KEY_MINUS, glfw.KEY_KP_SUBTRACT):
                self.speed = max(1 / 16, self.speed / 2)
            elif key == glfw.KEY_R:
                self._fit()
            else:
                super()._on_key(window, key, scancode, action, mods)

        def draw_frame(self) -> None:
            import glfw

            if self.playing:
                self.media_s += (self.clock_s - self._last_clock) * self.speed
                if self.media_s >= replay.duration_s:
                    self.media_s, self.playing = replay.duration_s, False
            self._last_clock = self.clock_s
            visible = replay.skin_poses(self.media_s)
            key = tuple(id(seat) for seat, _ in visible)
            skinned = self._tuples.setdefault(key, tuple(s.avatar.skinned for s, _ in visible))
            parts = [self.poser.pose(s.avatar.skinned, pose) for s, pose in visible]
            if parts:
                self.renderer.show(self.poser.combine(skinned, parts))
            width, height = glfw.get_framebuffer_size(self.window)
            if width == 0 or height == 0:
                return
            camera = self.orbit.camera(width, height)
            from app.view_cmd import BACKGROUND

            screen = self.ctx.screen
            screen.use()
            self.ctx.clear(*BACKGROUND)
            if parts:
                self.renderer.sort_for(camera.position, camera.forward)
                self.renderer.draw(camera, screen, background=BACKGROUND)
            names = "  |  ".join(s.participant.name or s.participant.id for s in replay.seats)
            text = (f"{self.media_s:6.2f} / {replay.duration_s:.2f} s  x{self.speed:g}  "
                    f"{'playing' if self.playing else 'paused'}   {names}")
            self._overlay.draw(screen, text, (width, height))
            if self.frames_drawn % 15 == 0:
                glfw.set_window_title(self.window, f"splatcall play - {text}")

    return PlayViewer()
