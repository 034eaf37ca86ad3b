"""``main.py view``: the avatar in a desktop window (glfw), posed by a codes file or a pose.

Controls: left drag orbits, right or middle drag pans, the wheel zooms; Space plays or
pauses a codes file or an animated pose, Left/Right step a frame while paused, R resets the
view, S saves a PNG screenshot, Esc or Q quits. An overlay (and the window title) shows the
frame time and the Gaussian count.

``--backend auto`` (the default) is cuda when a ``CudaBackend`` can be made here, else gl;
the start-up line names the choice and why. The gl backend poses the avatar on the GPU
(render.gl_pose) and draws straight into the window; cuda poses it on its CUDA device
(render.cuda_pose) and reference in numpy, and their image is shown as a texture
(render.cuda_interop: the cuda image is copied into it device to device by CUDA-GL interop,
through host memory where that cannot run). Without a display the command says so and
points to ``main.py render``.
``--screenshot-after N`` saves a screenshot after N frames and quits (for tests and scripts).
``--xr`` hands over to the headset viewer (``app.xr_view``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from render.backends import BACKENDS

BACKGROUND = (0.12, 0.12, 0.14)  # display colour behind the avatar
DEFAULT_TARGET = (0.0, 0.9, 0.0)  # orbit centre: the middle of a standing avatar, metres
DEFAULT_DISTANCE_M = 3.0
VERTICAL_FOV_DEG = 40.0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="show an avatar in a window (orbit, zoom, play codes)",
        description="Show an avatar in a desktop window, posed by a codes file (JSONL, played "
                    "at its own pace and looped) or a built-in pose. Drag to orbit (left) or "
                    "pan (right/middle), scroll to zoom, Space play/pause, Left/Right step, "
                    "R reset view, S screenshot, Esc/Q quit.")
    p.add_argument("--avatar", default=None, metavar="default|FILE",
                   help="the avatar: 'default' or an .lca file (default: your own avatar if "
                   "`avatar create --as-default` made one, else the built-in default)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--codes", type=Path, metavar="FILE.jsonl", help="codes to play")
    source.add_argument("--pose", metavar="NAME", help="a built-in pose (app/poses.py), e.g. wave")
    source.add_argument("--vmc", metavar="[HOST:]PORT", nargs="?", const="39539",
                        help="drive the avatar live from a VMC sender (VSeeFace, XR Animator, "
                             "Virtual Motion Capture...) sending to this port (no value: VMC's "
                             "usual 39539; PORT alone listens on every interface, "
                             "127.0.0.1:PORT only on this machine)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="renderer backend: auto is cuda when available, else gl "
                        "(default: %(default)s)")
    p.add_argument("--size", default="960x720", metavar="WxH", help="window size in pixels")
    p.add_argument("--camera", choices=("front", "portrait"), default="front",
                   help="the starting view: the whole body, or head and shoulders "
                        "(default: %(default)s)")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE.png",
                   help="where the S key (or --screenshot-after) saves (default: "
                        "screenshot-<time>.png in the current folder)")
    p.add_argument("--screenshot-after", type=int, default=None, metavar="N",
                   help="save a screenshot after N drawn frames, then quit")
    p.add_argument("--xr", action="store_true", help="view in an OpenXR headset instead")
    try:  # the XR options belong to the XR viewer
        from app.xr_view import add_xr_arguments
    except ImportError:
        pass
    else:
        add_xr_arguments(p)
    p.set_defaults(func=run)


class OrbitCamera:
    """A camera orbiting ``target`` at ``distance_m`` (yaw about +Y, pitch up), metres."""

    def __init__(self, target=DEFAULT_TARGET, distance_m: float = DEFAULT_DISTANCE_M):
        """``target`` and ``distance_m``: where R (reset) comes back to."""
        self.home = (np.array(target, dtype=np.float64), float(distance_m))
        self.reset()

    def reset(self) -> None:
        self.target = self.home[0].copy()
        self.yaw = 0.0  # 0: in front of the avatar (+Z), looking at it
        self.pitch = 0.0
        self.distance_m = self.home[1]

    def eye(self) -> np.ndarray:
        cp = math.cos(self.pitch)
        offset = np.array([math.sin(self.yaw) * cp, math.sin(self.pitch),
                           math.cos(self.yaw) * cp])
        return self.target + self.distance_m * offset

    def camera(self, width: int, height: int):
        from render.camera import Camera

        if width <= 0 or height <= 0:  # a minimised window: a 0x0 camera draws nothing
            return Camera(np.eye(4), 0, 0, 1.0, 1.0, 0.0, 0.0)
        return Camera.look_at(self.eye(), self.target, width, height,
                              vertical_fov_deg=VERTICAL_FOV_DEG)

    def orbit(self, dx_px: float, dy_px: float) -> None:
        self.yaw -= dx_px * 0.008
        self.pitch = float(np.clip(self.pitch + dy_px * 0.008, -1.5, 1.5))

    def pan(self, dx_px: float, dy_px: float, height_px: int) -> None:
        metres_per_px = 2 * self.distance_m * math.tan(math.radians(VERTICAL_FOV_DEG) / 2)
        metres_per_px /= max(height_px, 1)
        world_from_camera = np.linalg.inv(self.camera(2, 2).camera_from_world)
        right, up = world_from_camera[:3, 0], world_from_camera[:3, 1]
        self.target += (-dx_px * right + dy_px * up) * metres_per_px

    def zoom(self, steps: float) -> None:
        self.distance_m = float(np.clip(self.distance_m * 0.9 ** steps, 0.1, 50.0))


def duration_s(playback) -> float:
    """Seconds before the codes file or the pose's animation loops (0: a still pose)."""
    if playback.frames is not None:
        return playback.duration_s
    if playback.pose is None:
        return 0.0  # a live source (--vmc): nothing to play or pause
    return float(playback.pose.duration_s)


def step_s(playback) -> float:
    """How far Left/Right step while paused: a codes file's median frame interval, else a
    30 Hz frame."""
    frames = playback.frames
    if frames is not None and len(frames) > 1:
        step = float(np.median(np.diff([f.t for f in frames])))
        if step > 0:
            return step
    return 1 / 30


def load_source(args):
    """(avatar, CodesPlayback, description) from --avatar and --codes / --pose."""
    from app.cli import UserError
    from app.xr_view import CodesPlayback
    from avatar.avatar import load_avatar
    from app.cli import read_codes
    from avatar.lca import AvatarFileError

    from app.user_avatar import avatar_or_user_default

    args.avatar, note = avatar_or_user_default(args.avatar, "default")
    if note:
        print(note, file=sys.stderr)
    try:
        avatar = load_avatar(args.avatar)
    except (AvatarFileError, OSError) as exc:
        raise UserError(f"cannot load the avatar {args.avatar!r}: {exc}") from None
    if args.codes is not None:
        frames = read_codes(args.codes)
        return avatar, CodesPlayback(frames=frames), f"{len(frames)} frames from {args.codes}"
    if args.vmc is not None:
        from app.vmc_io import VmcPlayback

        playback = VmcPlayback(args.vmc, "--vmc")
        return avatar, playback, "VMC on {}:{}".format(*playback.receiver.address)
    from app.poses import POSES

    name = args.pose or "rest"
    if name not in POSES:
        raise UserError(f"unknown pose {name!r}; choose one of: {', '.join(POSES)}")
    return avatar, CodesPlayback(pose=POSES[name]), f"pose {name!r}"


def no_display_reason() -> str | None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


def run(args) -> int:
    from app.cli import UserError, parse_size

    if getattr(args, "xr", False):
        from app.xr_view import run_xr_view

        if args.vmc is not None:
            raise UserError("--vmc drives the desktop viewer; with --xr it is not supported yet")
        return run_xr_view(args)
    width, height = parse_size(args.size)
    if args.screenshot_after is not None and args.screenshot_after < 1:
        raise UserError("--screenshot-after must be at least 1")
    hint = ("; the viewer needs a window. Render to image or video files with "
            "`main.py render` instead (it runs headless)")
    reason = no_display_reason()
    if reason:
        raise UserError(reason + hint)
    avatar, playback, what = load_source(args)
    from app.xr_view import pick_backend

    backend_name, image_backend, why = pick_backend(args.backend)
    args = argparse.Namespace(**{**vars(args), "backend": backend_name})
    import glfw

    if not glfw.init():
        raise UserError("cannot open the display" + hint)
    try:
        viewer = Viewer(args, avatar, playback, width, height, image_backend)
        print(f"view: {avatar.name} ({len(avatar)} Gaussians), {what}, backend {args.backend} "
              f"({why}); drag to orbit, S screenshot, Esc quits", file=sys.stderr, flush=True)
        return viewer.loop()
    finally:
        glfw.terminate()
        if args.vmc is not None:
            from app.vmc_io import receiver_summary

            print(f"view: {receiver_summary(playback.receiver)}", file=sys.stderr)
            playback.close()


class Viewer:
    """The window, its input and the draw loop."""

    def __init__(self, args, avatar, playback, width: int, height: int, image_backend=None):
        """``image_backend``: the backend for a non-gl ``args.backend`` when already made
        (``app.xr_view.pick_backend``), else made here."""
        import glfw
        import moderngl

        from app.cli import UserError
        from render.backends import get_backend, poser_for
        from render.errors import BackendUnavailable, RenderError

        self.args, self.avatar, self.playback = args, avatar, playback
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 4)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        self.window = glfw.create_window(width, height, "splatcall view", None, None)
        if not self.window:
            raise UserError("cannot open an OpenGL 4.3 window on this display "
                            "(try --backend reference, or `main.py render`)")
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)
        self.ctx = moderngl.create_context(require=430)
        try:
            if args.backend == "gl":
                from render.gl import GLSplatRenderer

                # The avatar stays on the GPU: each new codes frame sends bone transforms and
                # face weights, and compute shaders pose its Gaussians (render.gl_pose).
                self.renderer = GLSplatRenderer(self.ctx)
                self.poser = poser_for("gl")
            else:
                from render.cuda_interop import BackendGLRenderer

                # The backend's image goes into a texture drawn over the window: for cuda
                # device to device (CUDA-GL interop), through host memory where that cannot
                # run (one line says why) and for the reference renderer.
                def say(line: str) -> None:
                    print(f"view: {line}", file=sys.stderr, flush=True)

                backend = image_backend or get_backend(args.backend)
                self.poser = poser_for(args.backend, backend)  # cuda: on its device
                self.renderer = BackendGLRenderer(self.ctx, backend, log=say)
        except (BackendUnavailable, RenderError) as exc:
            raise UserError(str(exc)) from None
        self.orbit = OrbitCamera()
        if args.camera == "portrait":
            from app.render_cmd import PORTRAIT_HEIGHT_M, portrait_framing

            target, _ = portrait_framing(avatar, playback.codes_at(0.0))
            self.orbit = OrbitCamera(target, PORTRAIT_HEIGHT_M / 2
                                     / math.tan(math.radians(VERTICAL_FOV_DEG) / 2))
        self.playing = duration_s(playback) > 0
        self.clock_s = 0.0
        self.frames_drawn = 0
        self.frame_ms = 0.0
        self._posed_key = None
        self._skinned = (avatar.skinned,)  # one tuple, so the GL renderer uploads it once
        self._drag = None
        self._last_overlay = None
        self._overlay = Overlay(self.ctx)
        glfw.set_key_callback(self.window, self._on_key)
        glfw.set_mouse_button_callback(self.window, self._on_button)
        glfw.set_cursor_pos_callback(self.window, self._on_cursor)
        glfw.set_scroll_callback(self.window, self._on_scroll)

    # -- input ----------------------------------------------------------------------------
    def _on_key(self, window, key, scancode, action, mods):
        import glfw

        if action not in (glfw.PRESS, glfw.REPEAT):
            return
        if key in (glfw.KEY_ESCAPE, glfw.KEY_Q):
            glfw.set_window_should_close(window, True)
        elif key == glfw.KEY_SPACE:
            self.playing = not self.playing and duration_s(self.playback) > 0
        elif key == glfw.KEY_RIGHT and not self.playing:
            self.clock_s += step_s(self.playback)
        elif key == glfw.KEY_LEFT and not self.playing:
            self.clock_s = max(0.0, self.clock_s - step_s(self.playback))
        elif key == glfw.KEY_R:
            self.orbit.reset()
        elif key == glfw.KEY_S:
            self.screenshot_requested = True

    def _on_button(self, window, button, action, mods):
        import glfw

        if action == glfw.PRESS:
            self._drag = (button, *glfw.get_cursor_pos(window))
        else:
            self._drag = None

    def _on_cursor(self, window, x, y):
        import glfw

        if self._drag is None:
            return
        button, x0, y0 = self._drag
        self._drag = (button, x, y)
        if button == glfw.MOUSE_BUTTON_LEFT:
            self.orbit.orbit(x - x0, y - y0)
        else:
            self.orbit.pan(x - x0, y - y0, glfw.get_window_size(window)[1])

    def _on_scroll(self, window, dx, dy):
        self.orbit.zoom(dy)

    # -- drawing --------------------------------------------------------------------------
    def loop(self) -> int:
        import glfw

        self.screenshot_requested = False
        last = time.perf_counter()
        while not glfw.window_should_close(self.window):
            now = time.perf_counter()
            if self.playing:
                self.clock_s += now - last
            last = now
            self.draw_frame()
            self.frames_drawn += 1
            after = self.args.screenshot_after
            if self.screenshot_requested or (after is not None and self.frames_drawn >= after):
                self.screenshot_requested = False
                path = self.save_screenshot()
                print(f"view: screenshot saved to {path}", file=sys.stderr, flush=True)
                if after is not None and self.frames_drawn >= after:
                    break
            glfw.swap_buffers(self.window)
            glfw.poll_events()
        return 0

    def draw_frame(self) -> None:
        import glfw

        start = time.perf_counter()
        width, height = glfw.get_framebuffer_size(self.window)
        codes = self.playback.codes_at(self.clock_s)
        if codes is not self._posed_key:
            self._posed_key = codes
            skinned = self.avatar.skinned
            posed = self.poser.pose(skinned, self.avatar.skin_pose(codes))
            self.renderer.show(self.poser.combine(self._skinned, [posed]))
        camera = self.orbit.camera(width, height)
        if width == 0 or height == 0:
            return  # minimised: nothing to draw until it comes back
        screen = self.ctx.screen
        self.renderer.sort_for(camera.position, camera.forward)
        self.renderer.draw(camera, screen, background=BACKGROUND)
        self.ctx.finish()
        self.frame_ms = 0.8 * self.frame_ms + 0.2 * (time.perf_counter() - start) * 1e3 \
            if self.frames_drawn else (time.perf_counter() - start) * 1e3
        text = (f"{self.frame_ms:5.1f} ms  {len(self.avatar):,} Gaussians  "
                f"{self.args.backend}  {'playing' if self.playing else 'paused'}")
        self._overlay.draw(screen, text, (width, height))
        if self.frames_drawn % 15 == 0:
            glfw.set_window_title(self.window, f"splatcall view - {text}")

    def save_screenshot(self) -> Path:
        """The window's pixels as a PNG (written to a temporary name, then renamed)."""
        from PIL import Image

        import glfw

        width, height = glfw.get_framebuffer_size(self.window)
        raw = self.ctx.screen.read(viewport=(0, 0, width, height), components=3)
        image = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)[::-1]
        path = self.args.screenshot or Path(f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        from common.files import replacing

        with replacing(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        return path


class Overlay:
    """Lines of text in the top-left corner, or ``at`` pixels from it (PIL's built-in bitmap
    font, as a texture)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.program = ctx.program(
            vertex_shader="""#version 330
                uniform vec4 rect;   // x, y, w, h in NDC
                uniform bool rows_up; // the texture's first row is its bottom (GL-drawn)
                out vec2 uv;
                void main() {
                    vec2 c = vec2(gl_VertexID & 1, gl_VertexID >> 1);
                    uv = vec2(c.x, rows_up ? c.y : 1.0 - c.y);
                    gl_Position = vec4(rect.xy + c * rect.zw, 0.0, 1.0);
                }""",
            fragment_shader="""#version 330
                uniform sampler2D text;
                in vec2 uv;
                out vec4 color;
                void main() { color = texture(text, uv); }""")
        self.vao = ctx.vertex_array(self.program, [])
        self.texture = None
        self.text = None

    def draw(self, fbo, text: str, size, at=(0, 0)) -> None:
        self.prepare(text)
        self.draw_texture(fbo, self.texture, size, at)

    def prepare(self, text: str) -> None:
        """Compose ``text``'s texture (PIL: milliseconds) unless it is the one shown."""
        from PIL import Image, ImageDraw, ImageFont

        if text != self.text:
            font = ImageFont.load_default()
            box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
            img = Image.new("RGBA", (box[2] + 8, box[3] + 6), (0, 0, 0, 160))
            ImageDraw.Draw(img).text((4, 3), text, font=font, fill=(255, 255, 255, 255))
            rgba = np.asarray(img, dtype=np.float32) / 255
            rgba[..., :3] *= rgba[..., 3:]  # premultiplied
            if self.texture is not None:
                self.texture.release()
            self.texture = self.ctx.texture(img.size, 4, rgba.tobytes(), dtype="f4")
            self.text = text

    def draw_texture(self, fbo, texture, size, at=(0, 0), rows_up: bool = False) -> None:
        """``texture`` (premultiplied RGBA) at its own size, ``at`` pixels from the top left
        of ``fbo`` (``size`` pixels); ``rows_up`` for a texture GL drew into."""
        import moderngl

        w, h = size
        tw, th = texture.size
        fbo.use()
        self.ctx.viewport = (0, 0, w, h)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
        x, y = at
        self.program["rect"].value = (-1.0 + 2.0 * x / w, 1.0 - 2.0 * (y + th) / h,
                                      2.0 * tw / w, 2.0 * th / h)
        self.program["rows_up"].value = rows_up
        texture.use(0)
        self.vao.render(moderngl.TRIANGLE_STRIP, vertices=4)
