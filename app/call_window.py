"""The call in a window (glfw): the remote participants side by side, a self-view, an overlay.

Processes: the window is a process of its own (``WindowLink`` spawns ``window_main``), the
call's asyncio loop stays on the main thread of the call's process. Drawing a frame takes
100-300 ms of CPU with Mesa's llvmpipe here, and Mesa does that work inside moderngl's
calls, which hold the GIL: on a thread of the call's process (or polled from an asyncio
task) the window stalled the event loop that long, delaying the codes, RTCP and voice that
aiortc handles there (measured: a probe thread saw 155-250 ms gaps; 13 of 786 codes frames
lost, none in a separate process). Once per call tick ``CallMonitor.tick`` makes a
``CallSnapshot`` (plain numbers and codes, picklable); the window asks for one at the start
of each frame and ``WindowLink``'s reader thread answers at once with the newest, its poses
played out afresh for that moment (``play_out_when_asked``: the window draws the pose of
when it asked, not of the call's last tick), and the window's keys come back as
``CallControls`` settings and requests that the call's tick reads.

Keys: M mute the microphone, C camera off (our avatar holds a neutral pose), V the others'
camera pictures (asked for, so sent, only while shown: net.video), O start/stop recording,
S screenshot, N recalibrate the face's neutral, R reset the view, F1 or ? help, Esc or Q
leave; left drag orbits, right/middle drag pans, the wheel zooms.

Remote participants stand ``SPACING_M`` apart in the order they joined, facing us, framed
from the waist up at eye height as if across a table. Each fades in over ``FADE_S`` when its
codes start, and out when it leaves or its codes stop for ``SILENT_S`` (the opacity of its
Gaussians, ``SkinPose.opacity``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiortc import MediaStreamTrack

from avatar.codes import Codes

SPACING_M = 0.9
FADE_S = 0.5            # fade in and out this long
SILENT_S = 1.0          # no codes this long: the participant fades out (it holds meanwhile)
SPEAKING_LEVEL = 0.02   # voice RMS above this (about -34 dBFS) shows as speaking
FRAMING_TARGET = (0.0, 1.25, 0.0)  # chest height: head and torso in view, metres
FRAMING_VERTICAL_M = 1.3           # metres of height the starting view shows at the avatar
SELF_VIEW_FRACTION = 0.25          # the self-view's width, a fraction of the window's
SELF_VIEW_PERIOD_S = 0.2           # the self-view is redrawn at 5 Hz at most,
SELF_VIEW_EVERY = 3                # and on one frame in 3 at most (when frames are slow)
TEXT_PERIOD_S = 0.25               # the overlay's numbers change 4 times a second
VIDEO_WIDTH = 160                  # the others' camera pictures, pixels wide
VIDEO_HOLD_S = 2.0                 # a picture stays this long after its camera stops
ORDER_REUSE = 1                    # the remotes' depth order serves 2 poses (1 re-used)
VOICE_PLACES_PERIOD_S = 0.1        # where the voices come from: sent 10 times a second at most
BACKGROUND = (0.12, 0.12, 0.14)
SELF_BACKGROUND = (0.2, 0.2, 0.24)
HELP = ("keys:\n"
        "  M      mute / unmute the microphone\n"
        "  C      camera off / on (your avatar holds a neutral pose)\n"
        "  V      show / hide the others' camera pictures (--video)\n"
        "  O      start / stop recording\n"
        "  S      screenshot\n"
        "  N      recalibrate your face's neutral\n"
        "  R      reset the view\n"
        "  F1 ?   this help\n"
        "  Esc Q  leave the call\n"
        "mouse: left drag orbit, right drag pan, wheel zoom")


def add_window_arguments(parser) -> None:
    """The window's and the sound's options of ``main.py call``."""
    parser.add_argument("--no-window", action="store_true",
                        help="run headless even when there is a display")
    parser.add_argument("--window-size", default="960x540", metavar="WxH",
                        help="the call window's size in pixels (default 960x540)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="FILE.png",
                        help="where the window's S key (or --screenshot-at) saves (default: "
                             "screenshot-<time>.png in the current folder)")
    parser.add_argument("--screenshot-at", type=float, default=None, metavar="S",
                        help="save a screenshot of the window this many seconds after joining")
    parser.add_argument("--speaker", metavar="DEVICE", default=None,
                        help="play the voices on this output (index or name from main.py "
                             "devices; default: the system's default output)")
    parser.add_argument("--show-video", action="store_true",
                        help="ask the others for their camera pictures (those started with "
                             "--video) and show each beside its avatar; the V key toggles it. "
                             "Nobody sends video that was not asked for")
    parser.add_argument("--spatial-voice", action="store_true",
                        help="in the window, play each voice from its avatar (stereo panning "
                             "and distance from the view); with --xr they always are")
    parser.add_argument("--mic", metavar="DEVICE", default="default",
                        help="with --audio mic: the ALSA or PulseAudio input device "
                             "(default: default)")


# -- between the threads ---------------------------------------------------------------------
class CallControls:
    """What the window asks of the call. Flags are read on the call's thread each tick;
    requests (``record``, ``recalibrate``) are taken once."""

    def __init__(self):
        self.mic_muted = False
        self.camera_off = False
        self.show_video = False  # ask the others for their camera pictures (net.video)
        self._requests: set[str] = set()
        self._lock = threading.Lock()

    def request(self, what: str) -> None:
        with self._lock:
            self._requests.add(what)

    def take(self, what: str) -> bool:
        with self._lock:
            if what in self._requests:
                self._requests.discard(what)
                return True
            return False


@dataclass
class RemoteView:
    """One remote participant as the window shows it."""

    id: str
    name: str
    codes: Codes | None          # played out this tick (None: nothing yet, or held too long)
    receiving: bool              # codes arrived within SILENT_S
    latency_ms: float | None     # capture to display estimate: transit + playout delay
    playout_ms: float            # the playout buffer's delay
    codes_hz: float
    loss_fraction: float
    voice_level: float           # RMS of the newest voice frame, 0..1
    video: np.ndarray | None = None  # its newest camera picture, (h, w, 3) uint8, if asked


@dataclass
class CallSnapshot:
    remotes: list[RemoteView] = field(default_factory=list)
    own_codes: Codes | None = None
    tracker_fps: float = 0.0
    mic_level: float = 0.0
    mic_muted: bool = False
    camera_off: bool = False
    recording: str | None = None  # the file being recorded, or None
    note: str = ""                # the newest message for the overlay (recording errors...)
    uptime_s: float = 0.0
    made_at: float = 0.0          # time.monotonic() when the call made it (its poses' time)
    show_video: bool = False      # the others' camera pictures are asked for


class RateMeter:
    """Events a second from a growing count, smoothed over about a second."""

    def __init__(self):
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int, now_s: float) -> float:
        if self._last is not None:
            t0, c0 = self._last
            if now_s - t0 >= 0.25:
                rate = (count - c0) / (now_s - t0)
                self.rate = rate if self.rate == 0 else 0.5 * self.rate + 0.5 * rate
                self._last = (now_s, count)
        else:
            self._last = (now_s, count)
        return self.rate


def voice_level(samples: np.ndarray) -> float:
    """RMS of float samples in [-1, 1]."""
    return float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0


class CallMonitor:
    """Made and fed on the call's thread: ``tick`` once per call tick, ``voice`` per voice
    frame; ``latest`` is the newest ``CallSnapshot`` (replaced whole, never mutated)."""

    def __init__(self, controls: CallControls):
        self.controls = controls
        self.latest = CallSnapshot()
        self.voice_levels: dict[str, float] = {}
        self.mic_level = 0.0
        self.note = ""
        self.recording: str | None = None
        self._rates: dict[str, RateMeter] = {}
        self._own_rate = RateMeter()
        self._own_count = 0
        self._own_codes: Codes | None = None
        self._started = time.monotonic()
        self.videos: dict[str, tuple[np.ndarray, float]] = {}  # remote -> (picture, arrival)

    def voice(self, remote_id: str, samples: np.ndarray) -> None:
        self.voice_levels[remote_id] = voice_level(samples)

    def video(self, remote_id: str, frame) -> None:
        """A remote's camera frame (``av.VideoFrame``): kept as a thumbnail VIDEO_WIDTH
        pixels wide, shown beside its avatar while it keeps coming."""
        width = VIDEO_WIDTH
        height = max(2, int(round(frame.height * width / max(frame.width, 1) / 2)) * 2)
        picture = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        self.videos[remote_id] = (picture, time.monotonic())

    def tick(self, remotes: dict, poses: dict, own_codes: Codes | None, now_s: float) -> None:
        if own_codes is not None:
            self._own_count += 1
            self._own_codes = own_codes
        views = []
        for remote_id, remote in list(remotes.items()):
            stats = remote.stats
            recent = list(stats.transit_s)[-20:]
            transit = float(np.median(recent)) if recent else None
            delay = remote.playout.delay_s
            # Sender and receiver clocks agree only on one machine; elsewhere the transit is
            # meaningless and only the playout delay is shown.
            latency = (transit + delay) * 1000 if transit is not None and 0 <= transit < 2 \
                else None
            receiving = stats.last_arrival is not None and now_s - stats.last_arrival < SILENT_S
            rate = self._rates.setdefault(remote_id, RateMeter()).update(stats.unique, now_s)
            expected = 0 if stats.first_seq is None else stats.highest_seq - stats.first_seq + 1
            picture, arrived = self.videos.get(remote_id, (None, -math.inf))
            showing = self.controls.show_video and now_s - arrived < VIDEO_HOLD_S
            views.append(RemoteView(
                remote_id, remote.name or remote_id, poses.get(remote_id), receiving, latency,
                delay * 1000, rate if receiving else 0.0,
                stats.lost / expected if expected else 0.0,
                self.voice_levels.get(remote_id, 0.0), picture if showing else None))
        for gone in set(self._rates) - set(remotes):
            del self._rates[gone]
        for gone in set(self.videos) - set(remotes):
            del self.videos[gone]
        self.latest = CallSnapshot(
            views, self._own_codes, self._own_rate.update(self._own_count, now_s),
            self.mic_level, self.controls.mic_muted, self.controls.camera_off, self.recording,
            self.note, now_s - self._started, made_at=now_s,
            show_video=self.controls.show_video)


class MicControl(MediaStreamTrack):
    """The outgoing voice track wrapped: measures its level, sends silence while muted, and
    shows every frame (as sent) to ``seen`` when set (a recording started from the window)."""

    kind = "audio"

    def __init__(self, source, controls: CallControls, monitor: CallMonitor):
        super().__init__()
        self.source, self.controls, self.monitor = source, controls, monitor
        self.seen = None

    async def recv(self):
        from net.audio import frame_to_mono

        frame = await self.source.recv()
        if self.controls.mic_muted:
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            self.monitor.mic_level = 0.0
        else:
            self.monitor.mic_level = voice_level(frame_to_mono(frame))
        if self.seen is not None:
            self.seen(frame)
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


# -- the window --------------------------------------------------------------------------------
def no_window_reason(args) -> str | None:
    """Why the call runs without a window (None: it opens one)."""
    if args.no_window:
        return "no window (--no-window)"
    if args.xr:
        return "no window (the headset shows the call)"
    from app.view_cmd import no_display_reason

    reason = no_display_reason()
    return f"{reason}: running headless" if reason else None


@dataclass
class _Seat:
    opacity: float = 0.0
    codes: Codes | None = None
    name: str = ""
    order: int = 0


def fade_step(opacity: float, showing: bool, dt_s: float) -> float:
    """The opacity ``dt_s`` later: towards 1 while ``showing``, else towards 0, FADE_S for
    the whole way."""
    step = dt_s / FADE_S
    return min(1.0, opacity + step) if showing else max(0.0, opacity - step)


def fade_opacity(fade: float) -> float:
    """The opacity scale for a fade fraction (0 gone .. 1 there). Gaussians overlap many deep
    on an avatar: scaled by 0.1 the default avatar still covered 91 % of the pixels it covers
    at 1 (0.05: 82 %, 0.02: 56 %, measured at 192x192), so a linear scale would hold it
    almost solid and pop it away at the end; an exponential curve fades what one sees."""
    return fade * 100.0 ** (fade - 1.0)


def seat_x(index: int, count: int) -> float:
    """Where seat ``index`` of ``count`` stands along X, metres (the row centred)."""
    return (index - (count - 1) / 2) * SPACING_M


def framing(count: int, width: int, height: int) -> tuple[np.ndarray, float]:
    """(orbit target, distance) showing FRAMING_VERTICAL_M of height and the row's width."""
    from app.view_cmd import VERTICAL_FOV_DEG

    half_v = math.radians(VERTICAL_FOV_DEG) / 2
    half_h = math.atan(math.tan(half_v) * width / max(height, 1))
    row_m = max(1, count) * SPACING_M
    distance = max(FRAMING_VERTICAL_M / 2 / math.tan(half_v), (row_m / 2) / math.tan(half_h))
    return np.array(FRAMING_TARGET), distance


SELF_VIEW_FROM_M = 1.0    # the self-view draws the Gaussians above this height at rest
SELF_VIEW_STRIDE = 2      # ... every second one of them (it is a thumbnail)
# (stride, from this many pixels a metre): the level of detail of the remote avatars.
LOD_PIXELS_PER_M = ((1, 800.0), (2, 300.0), (4, 0.0))
# The remote avatars are splatted into at most this many pixels, then stretched over the
# window (bilinear): llvmpipe's tile rasteriser costs about in proportion to the pixels.
# Half of 960x540 (a scale of 0.71 each way); see render_size for what it costs.
RENDER_PIXELS = 960 * 540 // 2


# Levels of detail the window steps through when its frames are slow (DetailGovernor):
# (strides added to lod_stride's, the fraction of RENDER_PIXELS splatted). At the 960x540
# window's framing (stride 2, 679x382 at level 0), PSNR of the window's pixels against full
# detail, and the CPU a frame takes relative to level 0 (bench/bench_call_window.py --quality
# and --detail-level; docs/BENCHMARKS.md, "Latency end to end: playout at the window's ask,
# detail by frame time"): 39.3 dB 1.0, 38.0 dB 0.8, 36.8 dB 0.7, 34.3 dB 0.6.
#
# Below those, the head keeps level 3's stride and only the rest of the body thins further
# (``thinned``'s ``head_stride``): in a call the face carries the signals, and a uniform
# stride of 6 smeared its brows and eyes into blobs. Entries: (strides added for the head,
# strides added for the rest, fraction of RENDER_PIXELS).
DETAIL_LEVELS = ((0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (2, 2, 0.5), (2, 6, 0.5),
                 (2, 6, 1 / 3))
DETAIL_BUDGET_MS = 40.0     # a frame's drawing within this (25 fps): a margin over 20 fps
DETAIL_SLOW_FRAMES = 4      # this many frames over the budget in a row: one level down
DETAIL_RETRY_S = 5.0        # a level left for being slow is tried again this much later,
DETAIL_RETRY_MAX_S = 60.0   # twice as late after each try that was too slow, up to this


class DetailGovernor:
    """Chooses the level of detail (``DETAIL_LEVELS``) from the time the window's frames take
    to draw: DETAIL_SLOW_FRAMES frames in a row over ``budget_ms`` step one level down; the
    level above is taken again once the time it took when last drawn (remembered per level,
    smoothed) fits the budget with room to spare, or, if it did not, DETAIL_RETRY_S later
    (the machine may have calmed down; after each such try that was too slow again, twice
    as late, up to DETAIL_RETRY_MAX_S: each costs DETAIL_SLOW_FRAMES slow frames). A slow
    machine (other work on its cores, llvmpipe) then draws a little less detail instead of
    dropping below 20 fps, and each frame shows its pose sooner (the frame time is part of
    the latency).
    ``fixed``: stay at level 0 (benchmarks of one level)."""

    def __init__(self, budget_ms: float = DETAIL_BUDGET_MS, fixed: bool = False):
        self.budget_ms = budget_ms
        self.fixed = fixed
        self.level = 0
        self._slow = 0
        self._ms: dict[int, float] = {}        # level -> smoothed draw time when last there
        self._left_at: dict[int, float] = {}   # level -> when it was left for being slow
        self._retry_s: dict[int, float] = {}   # level -> how long after that to try it again
        self._trying: int | None = None        # the level taken again on trial, if so
        self.frames = [0] * len(DETAIL_LEVELS)  # frames drawn at each level

    def update(self, draw_ms: float, now_s: float) -> int:
        """One frame drawn at ``self.level`` in ``draw_ms``: the level for the next frame."""
        level = self.level
        self.frames[level] += 1
        if self.fixed:
            return level
        last = self._ms.get(level)
        self._ms[level] = draw_ms if last is None else 0.7 * last + 0.3 * draw_ms
        self._slow = self._slow + 1 if draw_ms > self.budget_ms else 0
        if self._slow >= DETAIL_SLOW_FRAMES and level + 1 < len(DETAIL_LEVELS):
            self._left_at[level] = now_s
            self._retry_s[level] = (min(2 * self._retry_s.get(level, DETAIL_RETRY_S),
                                        DETAIL_RETRY_MAX_S) if self._trying == level
                                    else DETAIL_RETRY_S)
            self.level, self._slow, self._trying = level + 1, 0, None
        elif level > 0 and self._slow == 0:
            above = self._ms.get(level - 1)
            fits = above is not None and above <= self.budget_ms * 0.9
            waited = now_s - self._left_at.get(level - 1, -1e9)
            if fits or waited >= self._retry_s.get(level - 1, DETAIL_RETRY_S):
                if not fits:
                    self._ms.pop(level - 1, None)  # measure it afresh
                self.level, self._slow = level - 1, 0
                self._trying = None if fits else level - 1
        return self.level

    def describe(self, level: int | None = None) -> str:
        head, body, fraction = DETAIL_LEVELS[self.level if level is None else level]
        strides = f"stride +{head}" if head == body else f"stride +{head} head, +{body} body"
        return f"{strides}, {fraction:.0%} of the pixels"


def thinned(skinned, stride: int, keep=None, head=None, head_stride: int | None = None):
    """Every ``stride``-th Gaussian of ``skinned`` (of those in ``keep``, default all), each
    with ``stride`` times its area to cover for the ones dropped beside it: a level of
    detail. Keeping the larger Gaussians instead (opacity x area) lost the face, which is
    made of small ones. ``head`` (a mask over ``skinned``, see ``head_mask``) with
    ``head_stride``: those Gaussians take that stride instead."""
    keep = np.arange(len(skinned)) if keep is None else np.asarray(keep)
    if head is None or head_stride is None or head_stride == stride:
        if stride == 1 and len(keep) == len(skinned):
            return skinned
        kept = skinned.subset(keep[::stride])
        return dataclasses.replace(kept, local_scales=kept.local_scales
                                   * np.float32(math.sqrt(stride)))
    in_head = head[keep]
    chosen = np.concatenate([keep[in_head][::head_stride], keep[~in_head][::stride]])
    grow = np.concatenate([np.full(len(keep[in_head][::head_stride]), head_stride, np.float32),
                           np.full(len(keep[~in_head][::stride]), stride, np.float32)])
    order = np.argsort(chosen, kind="stable")  # the avatar's own order: memory stays local
    kept = skinned.subset(chosen[order])
    return dataclasses.replace(kept, local_scales=kept.local_scales
                               * np.sqrt(grow[order])[:, None])


HEAD_FROM_TOP_M = 0.27  # the head: the Gaussians this far below the avatar's top at rest


def head_mask(avatar) -> np.ndarray:
    """(N,) bool: the Gaussians of ``avatar``'s head and neck in the rest pose (within
    HEAD_FROM_TOP_M of its highest point)."""
    heights = avatar.pose(Codes()).means[:, 1]
    return heights > heights.max() - HEAD_FROM_TOP_M


def lod_stride(pixels_per_m: float) -> int:
    """How thin (``thinned``) an avatar drawn at ``pixels_per_m`` may be. The 960x540
    window's framing is 415 px/m: stride 2, and with ``render_size`` the pair that cost the
    least CPU for its PSNR (bench/bench_call_window.py --quality; docs/BENCHMARKS.md, "The
    call window's frame rate")."""
    for stride, threshold in LOD_PIXELS_PER_M:
        if pixels_per_m >= threshold:
            return stride
    return LOD_PIXELS_PER_M[-1][0]


def render_size(width: int, height: int, budget: int | None = None) -> tuple[int, int]:
    """The size the remote avatars are splatted at for a ``width`` x ``height`` window: the
    same shape, at most ``budget`` (default RENDER_PIXELS) pixels. Measured on the default
    avatar in the 960x540 window's framing (bench/bench_call_window.py --quality,
    2026-12-06): see docs/BENCHMARKS.md, "The call window's frame rate"."""
    budget = RENDER_PIXELS if budget is None else budget
    pixels = width * height
    if budget <= 0 or pixels <= budget:
        return width, height
    scale = math.sqrt(budget / pixels)
    return max(1, round(width * scale)), max(1, round(height * scale))


def upper_body(avatar):
    """The self-view's ``SkinnedGaussians``: those above SELF_VIEW_FROM_M in the rest pose
    (it shows head and shoulders; projecting the legs it never shows cost as much as
    drawing), thinned by SELF_VIEW_STRIDE: the default avatar 217k -> 146k -> 73k. A hand
    raised from below the cut is not drawn there."""
    rest = avatar.pose(Codes())
    above = np.flatnonzero(rest.means[:, 1] > SELF_VIEW_FROM_M)
    if not len(above):
        return avatar.skinned
    return thinned(avatar.skinned, SELF_VIEW_STRIDE, above)


class _Stretch:
    """An offscreen RGBA8 target the remote avatars are splatted into, drawn stretched over
    the window with bilinear filtering (``render_size``)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._fbo = None
        self.program = ctx.program(
            vertex_shader="""#version 330
                out vec2 uv;
                void main() {
                    vec2 c = vec2(gl_VertexID & 1, gl_VertexID >> 1);
                    uv = c;
                    gl_Position = vec4(2.0 * c - 1.0, 0.0, 1.0);
                }""",
            fragment_shader="""#version 330
                uniform sampler2D image;
                in vec2 uv;
                out vec4 color;
                void main() { color = vec4(texture(image, uv).rgb, 1.0); }""")
        self.vao = ctx.vertex_array(self.program, [])

    def target(self, size: tuple[int, int]):
        import moderngl

        if self._fbo is None or self._fbo.size != tuple(size):
            if self._fbo is not None:
                self._fbo.color_attachments[0].release()
                self._fbo.release()
            texture = self.ctx.texture(tuple(size), 4)
            texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
            texture.repeat_x = texture.repeat_y = False
            self._fbo = self.ctx.framebuffer(color_attachments=[texture])
        return self._fbo

    def stretch(self, screen, size: tuple[int, int]) -> None:
        import moderngl

        screen.use()
        self.ctx.viewport = (0, 0, *size)
        self.ctx.disable(moderngl.BLEND)
        self._fbo.color_attachments[0].use(0)
        self.vao.render(moderngl.TRIANGLE_STRIP, vertices=4)


@dataclass
class WindowOptions:
    """What the window process is started with (picklable)."""

    room: str
    width: int
    height: int
    fps: float                      # the most frames a second it draws
    avatar: str | None = None       # our avatar file (None: the default)
    screenshot: Path | None = None  # where S and screenshot_at save
    screenshot_at: float | None = None  # seconds after joining
    report_presented: bool = False  # benchmarks: say when each frame was presented, and what
    fixed_detail: bool = False      # benchmarks: no DetailGovernor (level 0 throughout)


def make_window(options: WindowOptions, own_avatar, mailbox):
    """The ``CallWindow`` (a ``view`` viewer subclass drawing with the GL backend).
    ``mailbox``: ``latest`` (the newest ``CallSnapshot``), ``send(message)`` to the call,
    ``receive()`` taking in what the call sent (``_WindowMailbox``)."""
    import glfw

    from app.cli import UserError
    from app.view_cmd import Overlay, Viewer
    from avatar.avatar import Avatar, load_avatar
    from avatar.lca import AvatarFileError, load_avatar_file
    from avatar.template import load_template
    from render.gl import GLSplatRenderer
    from render.gl_tiles import DISPLAY_STOP
    from render.skinned import PosedAvatars

    class _Still:
        frames: list = []
        pose = None
        duration_s = 0.0

    class CallWindow(Viewer):
        def __init__(self):
            view_args = argparse.Namespace(backend="gl", camera="front",
                                           screenshot=options.screenshot, screenshot_after=None)
            super().__init__(view_args, own_avatar, _Still(), options.width, options.height,
                             None)
            glfw.set_window_title(self.window, f"splatcall - room {options.room}")
            self.template = load_template()
            self.default_avatar = load_avatar("default", self.template)
            self.avatars: dict[str, object] = {}  # remote id -> its own Avatar, once arrived
            self.seats: dict[str, _Seat] = {}
            # The remotes' depth order is sorted every other frame while the view holds
            # (render.gl: pose_order_reuse; bench/bench_call_window.py --profile).
            self.renderer.pose_order_reuse = ORDER_REUSE
            # A window shows 8 bits a channel: pixels stop at half a step's transmittance.
            self.renderer.use_display_stop(DISPLAY_STOP)
            self.self_renderer = GLSplatRenderer(self.ctx, display_stop=DISPLAY_STOP)
            self._self_skinned = (upper_body(own_avatar),)
            self._self_codes_key = None
            self._self_target = None
            self._self_drawn_at, self._self_drawn_frame = -1.0, -SELF_VIEW_EVERY
            self._text, self._text_at = "", -1.0
            self._skinned_cache: dict[tuple, tuple] = {}
            # (id(avatar), head stride, body stride) -> (avatar, thinned)
            self._lod: dict[tuple, tuple] = {}
            self._heads: dict[int, tuple] = {}  # id(avatar) -> (avatar, head_mask)
            self._labels: list = []
            self._scaled = _Stretch(self.ctx)
            self._voices: dict = {}
            self._videos: dict[str, list] = {}  # remote -> [picture shown, its texture]
            self._voices_at = -1.0
            self._help = Overlay(self.ctx)
            self._stats = Overlay(self.ctx)
            self.show_help = False
            self.message, self.message_until = "", 0.0
            self.screenshot_at = options.screenshot_at
            self._joins = 0
            self._last_draw = time.perf_counter()
            self.detail = DetailGovernor(fixed=options.fixed_detail)
            self._fit(1)

        def _fit(self, count: int) -> None:
            w, h = glfw.get_framebuffer_size(self.window)
            target, distance = framing(count, w or options.width, h or options.height)
            from app.view_cmd import OrbitCamera

            self.orbit = OrbitCamera(target, distance)
            self._fitted = count

        def avatar_arrived(self, remote_id: str, path: str) -> None:
            """A remote's own avatar (its validated file): it replaces the default."""
            try:
                self.avatars[remote_id] = Avatar(load_avatar_file(path, self.template),
                                                 self.template)
            except (AvatarFileError, OSError) as exc:
                self.say(f"cannot show {remote_id}'s avatar: {exc}")

        def say(self, text: str, seconds: float = 3.0) -> None:
            self.message, self.message_until = text, time.perf_counter() + seconds
            self._text_at = -1.0
            print(f"call: {text}", file=sys.stderr, flush=True)

        # -- input --------------------------------------------------------------------------
        def _on_key(self, window, key, scancode, action, mods):
            if action not in (glfw.PRESS, glfw.REPEAT):
                return
            snap = mailbox.latest
            if key == glfw.KEY_M:
                mailbox.send(("set", "mic_muted", not snap.mic_muted))
                self.say("microphone muted" if not snap.mic_muted else "microphone on")
            elif key == glfw.KEY_C:
                mailbox.send(("set", "camera_off", not snap.camera_off))
                self.say("camera off: your avatar holds a neutral pose"
                         if not snap.camera_off else "camera on")
            elif key == glfw.KEY_V:
                mailbox.send(("set", "show_video", not snap.show_video))
                self.say("asking for the others' camera pictures" if not snap.show_video
                         else "camera pictures hidden (not sent)")
            elif key == glfw.KEY_O:
                mailbox.send(("request", "record"))
            elif key == glfw.KEY_N:
                mailbox.send(("request", "recalibrate"))
            elif key == glfw.KEY_F1 or (key == glfw.KEY_SLASH and mods & glfw.MOD_SHIFT):
                self.show_help = not self.show_help
            elif key == glfw.KEY_R:
                self._fit(max(1, len(self.seats)))
            elif key == glfw.KEY_S:
                self.screenshot_requested = True
            elif key in (glfw.KEY_ESCAPE, glfw.KEY_Q):
                glfw.set_window_should_close(window, True)

        # -- the loop -----------------------------------------------------------------------
        def run(self) -> None:
            """Draw at up to ``options.fps`` until the window closes or the call ends."""
            self.screenshot_requested = False
            period = 1.0 / options.fps
            while not glfw.window_should_close(self.window):
                started = time.perf_counter()
                # Ask for the newest snapshot now and draw it: the call's reader thread
                # answers at once with its newest tick's (WindowLink). The frame time goes
                # with it: the voice waits that much more (app.speakers.voice_delay_s).
                mailbox.ask(self.frame_ms / 1000)
                for remote_id, path in mailbox.receive(FRESH_WAIT_S):
                    self.avatar_arrived(remote_id, path)
                got = time.monotonic()  # the snapshot's here: drawing starts
                if mailbox.stopped:
                    break
                self.draw_frame()
                self.frames_drawn += 1
                snap = mailbox.latest
                if self.screenshot_at is not None and snap.uptime_s >= self.screenshot_at:
                    self.screenshot_at = None
                    self.screenshot_requested = True
                if self.screenshot_requested:
                    self.screenshot_requested = False
                    self.say(f"screenshot saved to {self.save_screenshot()}")
                glfw.swap_buffers(self.window)
                if options.report_presented:  # the frame is out: what it showed, and when
                    mailbox.send(("presented", snap.made_at, [
                        (view.id, view.codes.t, view.codes.seq) for view in snap.remotes
                        if view.codes is not None], time.monotonic(), got,
                        self.detail.level))
                self.prepare_next(snap)
                glfw.poll_events()
                time.sleep(max(0.0, period - (time.perf_counter() - started)))

        def update_seats(self, snap: CallSnapshot, dt_s: float) -> list[tuple[str, _Seat]]:
            """Fade everyone one frame on; the seats still (partly) visible, in join order."""
            present = {view.id: view for view in snap.remotes}
            for remote_id, view in present.items():
                seat = self.seats.get(remote_id)
                if seat is None:
                    self._joins += 1
                    seat = self.seats[remote_id] = _Seat(order=self._joins)
                seat.name = view.name
                if view.codes is not None:
                    seat.codes = view.codes
                showing = view.receiving and seat.codes is not None
                seat.opacity = fade_step(seat.opacity, showing, dt_s)
            for remote_id in list(self.seats):
                if remote_id not in present:
                    seat = self.seats[remote_id]
                    seat.opacity = fade_step(seat.opacity, False, dt_s)
                    if seat.opacity <= 0.0:
                        del self.seats[remote_id]
                        self.avatars.pop(remote_id, None)
            return sorted(((i, s) for i, s in self.seats.items() if s.codes is not None),
                          key=lambda item: item[1].order)

        def draw_frame(self) -> None:
            now = time.perf_counter()
            dt, self._last_draw = now - self._last_draw, now
            snap = mailbox.latest
            fb_w, fb_h = glfw.get_framebuffer_size(self.window)
            if fb_w == 0 or fb_h == 0:
                return
            seated = self.update_seats(snap, dt)
            if len(seated) > self._fitted:
                self._fit(len(seated))  # someone joined: widen the view to hold the row
            camera = self.orbit.camera(fb_w, fb_h)
            self.send_voice_places(seated, camera, now)
            head_extra, body_extra, fraction = DETAIL_LEVELS[self.detail.level]
            base = lod_stride(camera.fy / self.orbit.distance_m)
            stride, body_stride = base + head_extra, base + body_extra
            parts, skinned = [], []
            for index, (remote_id, seat) in enumerate(seated):
                if seat.opacity <= 0.0:
                    continue
                avatar = self.avatars.get(remote_id, self.default_avatar)
                # Keyed by id, holding the avatar: its id cannot be reused while cached.
                kept = self._lod.get((id(avatar), stride, body_stride))
                if kept is None:
                    head = None
                    if body_stride != stride:
                        head = self._heads.get(id(avatar), (None, None))[1]
                        if head is None:
                            head = head_mask(avatar)
                            self._heads[id(avatar)] = (avatar, head)
                    kept = self._lod[(id(avatar), stride, body_stride)] = (
                        avatar, thinned(avatar.skinned, body_stride, head=head,
                                        head_stride=stride))
                lod = kept[1]
                place = np.eye(4)
                place[0, 3] = seat_x(index, len(seated))
                pose = avatar.skin_pose(seat.codes, place)
                pose.opacity = fade_opacity(seat.opacity)
                parts.append(self.poser.pose(lod, pose))
                skinned.append(lod)
            key = tuple(id(s) for s in skinned)
            skinned_tuple = self._skinned_cache.get(key)
            if skinned_tuple is None:
                self._skinned_cache = {key: tuple(skinned)}  # keep one: uploads when it changes
                skinned_tuple = self._skinned_cache[key]
            screen = self.ctx.screen
            if parts:
                self.renderer.show(PosedAvatars(skinned_tuple, tuple(parts)))
                self.renderer.sort_for(camera.position, camera.forward)
                size = render_size(fb_w, fb_h, int(RENDER_PIXELS * fraction))
                if size == (fb_w, fb_h):
                    self.renderer.draw(camera, screen, background=BACKGROUND)
                else:  # splatted smaller, then stretched over the window
                    target = self._scaled.target(size)
                    self.renderer.draw(camera.resized(*size), target, background=BACKGROUND)
                    self._scaled.stretch(screen, (fb_w, fb_h))
            else:
                screen.use()
                self.ctx.viewport = (0, 0, fb_w, fb_h)
                screen.clear(*BACKGROUND, 1.0)
            self.draw_self_view(snap, fb_w, fb_h)
            self.draw_videos(snap, seated, camera, fb_w, fb_h)
            self.draw_labels(seated, camera, fb_w, fb_h)
            self.draw_text(snap, fb_w, fb_h)
            self.ctx.finish()
            done = time.perf_counter()
            self.frame_ms = 0.8 * self.frame_ms + 0.2 * (done - now) * 1e3
            if parts:  # (the level matters only while someone is drawn)
                self.detail.update((done - now) * 1e3, done)

        def send_voice_places(self, seated, camera, now: float) -> None:
            """Where each remote's voice comes from for a listener at the camera (the call's
            mixer pans them when asked to, ``--spatial-voice``): sent when it changes, 10
            times a second at most."""
            from app.speakers import HEAD_HEIGHT_M, voice_place

            if now - self._voices_at < VOICE_PLACES_PERIOD_S:
                return
            places = {remote_id: tuple(round(v, 3) for v in voice_place(
                          camera.camera_from_world,
                          (seat_x(index, len(seated)), HEAD_HEIGHT_M, 0.0)))
                      for index, (remote_id, _) in enumerate(seated)}
            if places != self._voices:
                mailbox.send(("voices", places))
                self._voices = places
            self._voices_at = now

        def draw_self_view(self, snap: CallSnapshot, fb_w: int, fb_h: int) -> None:
            """Our avatar, head and shoulders from the front (as the others see us), in the
            bottom-right corner: its texture, redrawn by ``prepare_next`` (drawn here only
            when there is none yet of this size)."""
            w, h = self._self_view_size(fb_w, fb_h)
            if self._self_target is None or self._self_target.size != (w, h):
                if self._self_target is not None:
                    self._self_target.release()
                self._self_target = self.ctx.framebuffer(
                    color_attachments=[self.ctx.texture((w, h), 4)])
                self._self_drawn_at, self._self_drawn_frame = -1.0, -SELF_VIEW_EVERY
                self.render_self_view(snap)
            self._stats.draw_texture(self.ctx.screen, self._self_target.color_attachments[0],
                                     (fb_w, fb_h), at=(fb_w - w - 8, fb_h - h - 8), rows_up=True)

        @staticmethod
        def _self_view_size(fb_w: int, fb_h: int) -> tuple[int, int]:
            w = max(16, int(fb_w * SELF_VIEW_FRACTION))
            return w, min(max(16, int(w * 4 / 3)), fb_h // 2)

        def render_self_view(self, snap: CallSnapshot) -> None:
            """Redraw the self-view's texture, SELF_VIEW_PERIOD_S and SELF_VIEW_EVERY frames
            apart at least: posing and drawing a whole avatar each frame took a third of the
            frame on llvmpipe."""
            from render.camera import Camera

            now = time.perf_counter()
            if (self._self_target is None or now - self._self_drawn_at < SELF_VIEW_PERIOD_S
                    or self.frames_drawn - self._self_drawn_frame < SELF_VIEW_EVERY):
                return
            self._self_drawn_at, self._self_drawn_frame = now, self.frames_drawn
            codes = Codes() if snap.camera_off or snap.own_codes is None else snap.own_codes
            if codes is not self._self_codes_key:
                self._self_codes_key = codes
                posed = self.poser.pose(self._self_skinned[0], own_avatar.skin_pose(codes))
                self.self_renderer.show(self.poser.combine(self._self_skinned, [posed]))
            w, h = self._self_target.size
            camera = Camera.look_at(np.array([0.0, 1.5, 1.1]), np.array([0.0, 1.45, 0.0]),
                                    w, h, vertical_fov_deg=30.0)
            self.self_renderer.sort_for(camera.position, camera.forward)
            self.self_renderer.draw(camera, self._self_target, background=SELF_BACKGROUND)

        def prepare_next(self, snap: CallSnapshot) -> None:
            """After a frame is presented, before the next ask: what the next frame shows
            that does not wait for the remotes' newest pose (the self-view, 5 times a second;
            the overlay's text, 4 times a second). Done here, it is not part of the time
            from the ask to the presentation, the latency a remote's codes see: the frames
            that redrew the self-view took 5-8 ms longer."""
            self.render_self_view(snap)
            now = time.perf_counter()
            if now - self._text_at >= TEXT_PERIOD_S:
                self._text, self._text_at = self.overlay_text(snap), now
                self._stats.prepare(self._text)

        def draw_videos(self, snap: CallSnapshot, seated, camera, fb_w: int, fb_h: int) -> None:
            """Each remote's camera picture (when asked for and coming) to the right of its
            avatar's head, kept inside the window."""
            pictures = {view.id: view.video for view in snap.remotes if view.video is not None}
            for remote_id in set(self._videos) - set(pictures):
                self._videos.pop(remote_id)[1].release()
            cv = camera.cv_from_world
            for index, (remote_id, seat) in enumerate(seated):
                picture = pictures.get(remote_id)
                if picture is None or seat.opacity <= 0.05:
                    continue
                h, w = picture.shape[:2]
                kept = self._videos.get(remote_id)
                if kept is None or kept[1].size != (w, h):
                    if kept is not None:
                        kept[1].release()
                    kept = self._videos[remote_id] = [None, self.ctx.texture((w, h), 3)]
                if kept[0] is not picture:  # a new picture
                    kept[1].write(np.ascontiguousarray(picture).tobytes())
                    kept[0] = picture
                point = cv @ np.array([seat_x(index, len(seated)) + 0.25, 1.7, 0.0, 1.0])
                if point[2] <= 0.1:
                    continue
                u = camera.fx * point[0] / point[2] + camera.cx
                v = camera.fy * point[1] / point[2] + camera.cy
                at = (int(min(max(u, 0), fb_w - w)), int(min(max(v - h / 2, 0), fb_h - h)))
                self._stats.draw_texture(self.ctx.screen, kept[1], (fb_w, fb_h), at=at)

        def draw_labels(self, seated, camera, fb_w: int, fb_h: int) -> None:
            while len(self._labels) < len(seated):
                self._labels.append(Overlay(self.ctx))
            cv = camera.cv_from_world
            for index, (_, seat) in enumerate(seated):
                if seat.opacity <= 0.05:
                    continue
                # Under the avatar's chest, kept inside the window.
                point = cv @ np.array([seat_x(index, len(seated)), 0.9, 0.0, 1.0])
                if point[2] <= 0.1:
                    continue
                u = camera.fx * point[0] / point[2] + camera.cx
                v = camera.fy * point[1] / point[2] + camera.cy
                self._labels[index].draw(
                    self.ctx.screen, seat.name, (fb_w, fb_h),
                    at=(int(u) - 3 * len(seat.name), int(min(max(v, 0), fb_h - 40))))

        def draw_text(self, snap: CallSnapshot, fb_w: int, fb_h: int) -> None:
            # Drawing the text into its texture costs milliseconds: numbers change 4 times a
            # second (readable, too), anything else as it happens.
            if self._text_at < 0:  # (``prepare_next`` keeps it after the first)
                self._text, self._text_at = self.overlay_text(snap), time.perf_counter()
            self._stats.draw(self.ctx.screen, self._text, (fb_w, fb_h))
            if self.show_help:
                self._help.draw(self.ctx.screen, HELP, (fb_w, fb_h),
                                at=(max(0, fb_w // 2 - 170), max(0, fb_h // 2 - 80)))

        def overlay_text(self, snap: CallSnapshot) -> str:
            lines = []
            for view in snap.remotes:
                latency = (f"{view.latency_ms:4.0f} ms" if view.latency_ms is not None
                           else f"buffer {view.playout_ms:3.0f} ms")
                speaking = "  SPEAKING" if view.voice_level > SPEAKING_LEVEL else ""
                state = "" if view.receiving else "  (no codes)"
                lines.append(f"{view.name}: {latency}  {view.codes_hz:4.1f} codes/s  "
                             f"loss {view.loss_fraction * 100:4.1f}%  voice "
                             f"{view.voice_level:.2f}{speaking}{state}")
            if not snap.remotes:
                lines.append("waiting for others to join")
            mic = "MUTED" if snap.mic_muted else f"{snap.mic_level:.2f}"
            lines.append(f"you: tracker {snap.tracker_fps:4.1f} fps  mic {mic}"
                         f"{'  camera off' if snap.camera_off else ''}"
                         f"{'  REC ' + snap.recording if snap.recording else ''}"
                         f"  draw {self.frame_ms:4.1f} ms"
                         f"{f'  detail -{self.detail.level}' if self.detail.level else ''}")
            if snap.note:
                lines.append(snap.note)
            if self.message and time.perf_counter() < self.message_until:
                lines.append(self.message)
            lines.append("F1 or ? for help")
            return "\n".join(lines)

    try:
        return CallWindow()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - GL context creation fails many ways
        raise UserError(f"cannot open the call window: {exc}") from None


def check_window_arguments(args) -> None:
    """A UserError for a bad window option, display or not."""
    from app.cli import UserError, parse_size

    parse_size(args.window_size)
    if args.screenshot_at is not None and not args.screenshot_at >= 0:
        raise UserError("--screenshot-at must be 0 or more seconds")
    if args.speaker is not None and not args.speaker.strip():
        raise UserError("--speaker needs a device (see main.py devices)")


def open_call_window(args, say) -> WindowLink | None:
    """The window process for ``main.py call``, open and drawing (its first snapshot
    pending), or None when it could not open (``say`` gets one line why; the call goes on
    headless). Bad options are a UserError."""
    from app.cli import parse_size

    width, height = parse_size(args.window_size)
    options = WindowOptions(args.room, width, height, min(args.fps, 60.0), args.avatar,
                            args.screenshot, args.screenshot_at)
    link = WindowLink(options)
    error = link.wait_ready(WINDOW_START_S)
    if error:
        link.stop()
        say(f"{error}: running headless")
        return None
    return link


def posed_now(snapshot: CallSnapshot, remotes: dict, now_s: float) -> CallSnapshot:
    """``snapshot`` (the call tick's) with each remote's pose played out for ``now_s`` from
    its playout buffer (``remotes``: the call's, id -> ``RemoteParticipant``; a buffer is
    thread-safe), made at ``now_s``. A remote no longer in the call keeps the tick's pose."""
    views = []
    for view in snapshot.remotes:
        remote = remotes.get(view.id)
        codes = remote.playout.pose(now_s) if remote is not None else None
        views.append(view if codes is None else dataclasses.replace(view, codes=codes))
    return dataclasses.replace(snapshot, remotes=views, made_at=now_s)


FRAME_BUDGET_S = 0.100    # a wait for codes never makes the window's frame longer than this
MAX_CODES_WAIT_S = 0.020  # nor waits longer than this (the window waits FRESH_WAIT_S for us)
DUE_GRACE_S = 0.004       # codes due are waited for this long past their time
# Codes already due by up to this much of an interval when the window asks are late (the
# sender's tracker took longer): they are waited for like codes due within the slack. Beside
# the tracker 16 % of the asks came while the codes were late, mostly by under 10 ms.
LATE_CODES_FRACTION = 0.5


def wait_for_codes(remotes: dict, frame_s: float, clock=time.monotonic,
                   sleep=time.sleep) -> float:
    """Before answering the window's ask: if a remote's next codes frame is due (its last
    arrival plus the median interval, ``PlayoutBuffer.arrivals``) within the window's slack
    (FRAME_BUDGET_S less its frame time ``frame_s``, at most MAX_CODES_WAIT_S), wait until it
    has arrived (or a few ms past due). The frame then starts on codes that have just come
    instead of ones up to an interval old: a frame that shows a capture sooner, about half an
    interval (17 ms at 30 Hz) on average, never below 10 fps. With the sender's tracker and
    this window on one 2-core machine the window draws at 14-18 fps; a 50 ms budget (20 fps)
    and 15 ms never let it wait, 100 ms and 20 ms took 8 ms off the median latency at the same
    frame rate (docs/BENCHMARKS.md, "Latency first"). Codes already due by under
    LATE_CODES_FRACTION of an interval (late) are waited for within the slack too. Returns the
    seconds waited."""
    start = clock()
    slack = min(FRAME_BUDGET_S - frame_s, MAX_CODES_WAIT_S)
    if slack <= 0.001:
        return 0.0
    due, last_seen = None, {}
    for remote_id, remote in list(remotes.items()):
        last, interval = remote.playout.arrivals()
        if last is None or interval is None:
            continue
        last_seen[remote_id] = last
        upcoming = last + interval
        if start - LATE_CODES_FRACTION * interval <= upcoming < start:
            upcoming = start + slack - DUE_GRACE_S  # late: it comes any moment, wait it out
        if start <= upcoming <= start + slack:
            due = upcoming if due is None else min(due, upcoming)
    if due is None:
        return 0.0
    deadline = min(start + slack, due + DUE_GRACE_S)
    while clock() < deadline:
        if any(remote_id in remotes and remotes[remote_id].playout.arrivals()[0] != last
               for remote_id, last in last_seen.items()):
            break
        sleep(0.001)
    return clock() - start


def toggle_recording(recording, args, call, mic, monitor: CallMonitor):
    """The window's O key: stop ``recording``, or start one (``call-<time>.ts`` here, with
    our avatar and the remote avatars already fetched); returns the recording now running
    (None: none). Failures go to the overlay, the call goes on."""
    from app.cli import UserError
    from app.recording import open_recording

    if recording is not None:
        if mic is not None:
            mic.seen = None
        recording.close()
        monitor.note = recording.error or f"recording stopped: {monitor.recording}"
        monitor.recording = None
        return None
    path = time.strftime("call-%Y%m%d-%H%M%S.ts")
    try:
        recording = open_recording(path, args.fps, args.name)
    except UserError as exc:
        monitor.note = str(exc)
        return None
    recording.own_avatar(args.avatar)
    exchange = call.avatars  # the mesh and Janus alike (net.inbound.CallBase)
    for remote_id, remote in exchange.remotes.items():
        avatar_path = exchange.cache_dir / f"{remote.sha256}.lca"
        if remote.sha256 and avatar_path.is_file():
            recording.avatar_file(remote_id, avatar_path)
    if mic is not None:
        mic.seen = recording.own_voice
    monitor.recording = path
    monitor.note = f"recording to {path}"
    return recording


WINDOW_START_S = 120.0  # the window process imports, loads the avatar and opens GL


class WindowLink:
    """The call's side of the window process (multiprocessing, spawned). The window asks for
    a snapshot at the start of each frame and a reader thread here answers at once with the
    newest one the call's tick made (``show``), or with the next one if the window already
    has that: the window draws the pose of the newest tick, never one waiting in the pipe (at
    most one snapshot is ever in flight, so a slow window never makes the call wait nor
    fills the pipe). Before, the call answered on its next tick and the window drew that
    snapshot only on its next frame: when the tick came late (a loaded machine), the window
    drew the old snapshot again and the new one a whole frame later. Keys come back as
    ``CallControls`` settings and requests. The window is a process, not a thread: Mesa runs
    the GL work inside moderngl's calls, which hold the GIL, and a probe thread beside the
    window measured gaps of 155-250 ms (p99, max) while it drew: the call's event loop would
    have stalled as long."""

    def __init__(self, options: WindowOptions):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a clean process for GL and glfw
        self._conn, child = context.Pipe()
        self.process = context.Process(target=window_main, args=(options, child),
                                       name="call-window", daemon=True)
        self.process.start()
        child.close()
        self.server = SnapshotServer(self._conn)

    controls = property(lambda self: self.server.controls)
    closed = property(lambda self: self.server.closed)
    display_s = property(lambda self: self.server.display_s)
    voice_places = property(lambda self: self.server.voice_places)
    presented = property(lambda self: self.server.presented)
    frames_asked = property(lambda self: self.server.wants)  # one a window frame

    def wait_ready(self, timeout_s: float) -> str | None:
        """None once the window is open (and the reader thread started), else why not."""
        if not self._conn.poll(timeout_s):
            return "the call window did not open in time"
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            return "the call window's process ended"
        if message[0] == "error":
            return message[1]
        self.server.start()
        return None

    def poll(self) -> None:
        """Nothing to do: the reader thread takes in what the window says as it comes (kept
        for the call's tick, which calls it)."""

    def show(self, snapshot: CallSnapshot) -> None:
        """The call tick's newest snapshot: sent now if the window is waiting for one."""
        self.server.show(snapshot)

    def play_out_when_asked(self, remotes, wait_codes: bool = True) -> None:
        """Answer each of the window's asks at once with the newest snapshot, its poses
        played out for that moment (``posed_now``; ``remotes()``: the call's remotes), not
        for the call's last tick: the pose waited for the window up to a tick (17 ms at 60
        Hz, more when the tick is late) before. ``wait_codes``: when a remote's next
        codes frame is due within the window's slack, answer when it has come
        (``wait_for_codes``)."""
        self.server.pose_now = lambda snapshot, now: posed_now(snapshot, remotes(), now)
        self.server.wait_now = ((lambda frame_s: wait_for_codes(remotes(), frame_s))
                                if wait_codes else None)

    def avatar(self, remote_id: str, path: Path) -> None:
        self.server.send(("avatar", remote_id, str(path)))

    def stop(self) -> None:
        self.server.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.server.stop()


class SnapshotServer:
    """The call's end of the window's pipe: a reader thread takes in what the window says
    (``want``, key settings and requests, voice places, presented frames, ``closed``) and
    answers each ``want`` with the newest snapshot not yet sent, at once if the call's tick
    has made one since, else as soon as ``show`` gets the next one. With ``pose_now``
    (``WindowLink.play_out_when_asked``) every ``want`` is answered at once: the newest
    tick's snapshot with its poses played out afresh for the moment asked."""

    def __init__(self, conn):
        self._conn = conn
        self.controls = CallControls()
        self.closed = False        # the user closed the window (or it died)
        self.display_s = 0.0       # the window's frame time: a pose shows this much later
        self.voice_places: dict = {}  # remote id -> (pan, distance) from the window's camera
        # With WindowOptions.report_presented: (snapshot's made_at, [(remote id, sender time
        # shown, seq)], time.monotonic() after the swap, time.monotonic() when the snapshot
        # was in and drawing began, the level of detail of the next frame) per frame drawn.
        self.presented: deque = deque(maxlen=100_000)
        self._lock = threading.Lock()   # the snapshot slot and the pipe's sending end
        self._newest: CallSnapshot | None = None  # from show(), not yet sent
        self._shown: CallSnapshot | None = None   # the newest from show()
        # (snapshot, now) -> the snapshot with its poses for now (None: the tick's poses)
        self.pose_now = None
        self.wait_now = None       # (the window's frame time) -> waits for fresh codes
        self.waited_s: deque = deque(maxlen=10_000)  # what wait_now waited, per ask
        self._wanted = True        # the window is waiting for a snapshot
        self._want_id = None       # the frame it is for (sent back with the snapshot)
        self.wants = 0             # snapshots asked for: one at the start of each frame
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._read, name="call-window-reader",
                                        daemon=True)
        self._thread.start()

    def show(self, snapshot: CallSnapshot) -> None:
        with self._lock:
            self._newest = self._shown = snapshot
            if self._wanted:
                self._send_newest()

    def send(self, message) -> None:
        with self._lock:
            self._send(message)

    def stop(self) -> None:
        self.closed = True
        self._conn.close()  # the reader's recv ends (EOF or OSError)
        if self._thread is not None:
            self._thread.join(5)

    def _read(self) -> None:
        try:
            while not self.closed:
                self._take(self._conn.recv())
        except (EOFError, OSError, TypeError, ValueError):
            pass  # the window process is gone (or we closed the pipe)
        self.closed = True

    def _take(self, message) -> None:
        kind = message[0]
        if kind == "want":
            self.display_s = float(message[1])
            self.wants += 1
            if self.wait_now is not None and self.pose_now is not None:
                try:
                    self.waited_s.append(self.wait_now(self.display_s))
                except Exception as exc:  # noqa: BLE001 - answer without waiting; the
                    # reader thread must live on (its end reads as the window closed)
                    self.wait_now = None
                    print(f"call: waiting for codes failed, answering at once from now on: "
                          f"{exc!r}", file=sys.stderr)
            with self._lock:
                self._wanted = True
                self._want_id = message[2] if len(message) > 2 else None
                if self._newest is not None or (self.pose_now is not None
                                                and self._shown is not None):
                    self._send_newest()
        elif kind == "set":
            setattr(self.controls, message[1], bool(message[2]))
        elif kind == "request":
            self.controls.request(message[1])
        elif kind == "voices":
            self.voice_places = dict(message[1])
        elif kind == "presented":
            self.presented.append(message[1:])
        elif kind == "closed":
            self.closed = True

    def _send_newest(self) -> None:  # with the lock held
        snapshot = self._shown if self._newest is None else self._newest
        if self.pose_now is not None:
            try:
                snapshot = self.pose_now(snapshot, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the tick's poses will do; the reader
                # thread must live on (its end reads as the window closed: the call leaves)
                print(f"call: playing out for the window failed: {exc!r}", file=sys.stderr)
        if self._send(("snapshot", snapshot, self._want_id)):
            self._newest, self._wanted = None, False

    def _send(self, message) -> bool:  # with the lock held
        if self.closed:
            return False
        try:
            self._conn.send(message)
            return True
        except (BrokenPipeError, OSError):
            self.closed = True
            return False


FRESH_WAIT_S = 0.025  # the window waits this long at most for its snapshot (a 60 Hz tick)


class _WindowMailbox:
    """The window process's side of the pipe."""

    def __init__(self, conn):
        self.conn = conn
        self.latest = CallSnapshot()
        self.stopped = False
        self.fresh = False     # latest came in for this frame (False: drawn before)
        self.asked = None      # the number of the frame asked for last (ask)

    def ask(self, frame_s: float) -> None:
        """Ask for the snapshot of the frame starting now (``frame_s``: the frame time). An
        answer that comes too late for its frame (the call's process busy: the window stops
        waiting after FRESH_WAIT_S and draws what it has) is still the newest for the next
        frame, but ``receive`` then waits for that frame's own answer too: else every frame
        after one late answer would draw the answer to the frame before (a whole frame old)."""
        self.asked = 0 if self.asked is None else self.asked + 1
        self.send(("want", frame_s, self.asked))

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            self.stopped = True

    def receive(self, wait_s: float = 0.0) -> list[tuple[str, str]]:
        """Take in everything the call sent, keeping only the newest snapshot (the others
        are stale); returns the avatars that arrived. ``wait_s``: wait that long at most
        for a snapshot if none is there."""
        avatars = []
        self.fresh = False
        deadline = time.monotonic() + wait_s
        try:
            while not self.stopped:
                while self.conn.poll():
                    message = self.conn.recv()
                    if message[0] == "snapshot":
                        self.latest = message[1]
                        answers = message[2] if len(message) > 2 else None
                        self.fresh = self.fresh or answers is None or answers == self.asked
                    elif message[0] == "avatar":
                        avatars.append((message[1], message[2]))
                    elif message[0] == "stop":
                        self.stopped = True
                left = deadline - time.monotonic()
                if self.fresh or left <= 0 or not self.conn.poll(left):
                    break
        except (EOFError, OSError):
            self.stopped = True  # the call process is gone
        return avatars


def window_main(options: WindowOptions, conn) -> None:
    """The window process: open the window, draw until the call stops it or it is closed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the call's to handle
    # numpy's BLAS on this thread alone: its second thread spun after each frame's small
    # products, a third of a core taken from the sender's tracker and llvmpipe (one 2-core
    # machine, bench/bench_latency.py: the window process 107 -> 75 % of a core).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    mailbox = _WindowMailbox(conn)
    try:
        import glfw

        from avatar.avatar import load_avatar
        from avatar.lca import AvatarFileError

        try:
            own = load_avatar(options.avatar or "default")
        except (AvatarFileError, OSError) as exc:
            mailbox.send(("error", f"cannot load the avatar {options.avatar!r}: {exc}"))
            return
        if not glfw.init():
            mailbox.send(("error", "cannot open the display"))
            return
        try:
            try:
                window = make_window(options, own, mailbox)
            except Exception as exc:  # noqa: BLE001 - UserError and GL failures alike
                mailbox.send(("error", str(exc)))
                return
            mailbox.send(("ready",))
            window.run()
            if not mailbox.stopped:
                mailbox.send(("closed",))
        finally:
            glfw.terminate()
    finally:
        conn.close()
