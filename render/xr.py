"""OpenXR target: Gaussians in a VR headset through any OpenXR runtime (pyopenxr, lazily).

One ``XrTarget`` owns an OpenXR instance, a session bound to an OpenGL context (GLX through a
glfw window when there is an X display, or EGL with ``XR_MNDX_egl_enable``, headless), a
swapchain per eye, a reference space, one "recentre" action and the frame loop::

    with XrTarget(graphics="egl") as target:
        while target.step(scene):       # scene(frame: XrFrame) -> Gaussians | None
            pass

Each frame (only while the session runs): ``xrWaitFrame``, ``xrBeginFrame``; when the runtime
says ``should_render`` and the views' poses are valid: locate the two views, call the scene
ONCE for the frame's content, hand it to the renderer, sort ONCE from the eyes' midpoint, then
per eye acquire / wait / draw / release its swapchain image; ``xrEndFrame`` with one
projection layer (no layer when nothing was drawn).

The content is what the scene's poser made (``render.skinned``; the app takes the poser from
its backend): ``Gaussians`` or the cuda poser's device Gaussians (uploaded when the object
changed), or, with the GL renderer, ``PosedAvatars``: the avatars' static arrays, uploaded
once, and per frame their poses (bone transforms, face weights, placement in the room), posed
on the GPU only when they changed (the renderer's ``show``).

The graphics binding (EGL / GLX contexts, swapchain formats) is ``render.xr_graphics``; the
session state machine (``Lifecycle``, free of runtime calls so it is tested alone) is
``render.xr_session``:
READY -> ``xrBeginSession``; STOPPING -> ``xrEndSession``; EXITING or LOSS_PENDING (or an
instance loss) -> the loop ends and ``close()`` destroys everything in reverse order. A user's
exit (``request_exit``, Ctrl+C) asks the runtime with ``xrRequestExitSession`` and keeps
submitting frames until the runtime has walked the session through STOPPING to EXITING.

Colour: our colours are display (sRGB-encoded) values blended as they are, like 3DGS. The
swapchain format is chosen from the runtime's list, sRGB first (GL_SRGB8_ALPHA8). Into an sRGB
image we draw with GL_FRAMEBUFFER_SRGB disabled: the values are stored as they are, i.e. as
sRGB-encoded bytes, which is what an sRGB image holds, and the compositor decodes them to
linear light when it samples: exact, and blending happens on the encoded values as in 3DGS.
(With GL_FRAMEBUFFER_SRGB enabled, GL would treat our values as linear and encode them again:
everything too bright and washed out.) Into a linear (UNORM or float) image the splats are
drawn into an RGBA8 texture first, then a full-screen pass writes ``srgb_to_linear`` of it:
the runtime reads linear values and the blending still happened in sRGB, as 3DGS does.

Errors: no pyopenxr, no runtime, no headset -> ``XrUnavailableError`` whose message is one
line naming the runtimes that work (SteamVR, Monado, Meta's Quest Link).
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from render.camera import Camera
from render.errors import XrUnavailableError
from render.gaussians import Gaussians
from render.xr_graphics import GL_FRAMEBUFFER_SRGB, EglContext, GlxContext, choose_color_format
from render.xr_session import Lifecycle

RUNTIMES_HINT = ("install and start an OpenXR runtime and make it the active one: SteamVR, "
                 "Monado (monado-service) or Meta's Quest Link")

DEFAULT_BACKGROUND = (0.08, 0.08, 0.10)  # sRGB: a dim room, not pure black
RECENTRE_BINDINGS = ("/user/hand/left/input/menu/click", "/user/hand/right/input/menu/click",
                     "/user/hand/left/input/select/click", "/user/hand/right/input/select/click")
STANDING_EYE_HEIGHT_M = 1.6  # assumed when the runtime offers no floor-level space
SORT_POSITION_TOLERANCE_M = 0.02
SORT_ANGLE_TOLERANCE_RAD = math.radians(2.0)


# -- pure maths: poses, cameras, placement ----------------------------------------------------
def world_from_pose(position, orientation_xyzw) -> np.ndarray:
    """(4, 4) rigid transform of an OpenXR ``XrPosef`` (position xyz, quaternion x y z w)."""
    x, y, z, w = (float(v) for v in orientation_xyzw)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0 or not math.isfinite(n):
        raise ValueError("pose orientation is not a finite non-zero quaternion")
    x, y, z, w = x / n, y / n, z / n, w / n
    m = np.eye(4)
    m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    m[:3, 3] = [float(v) for v in position]
    return m


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def eye_camera(world_from_eye: np.ndarray, fov: Sequence[float], width: int, height: int,
               near: float = 0.05, far: float = 100.0) -> Camera:
    """The camera of one OpenXR view: its pose in the reference space and its asymmetric FOV
    ``(angle_left, angle_right, angle_up, angle_down)`` in radians (left and down negative),
    rendered at ``width`` x ``height`` pixels."""
    left, right, up, down = (float(a) for a in fov)
    return Camera.from_fov(rigid_inverse(world_from_eye), width, height, left, right, up, down,
                           near=near, far=far)


def placements_in_front(world_from_head: np.ndarray, count: int, distance_m: float = 1.5,
                        spacing_m: float = 0.9, floor_y: float | None = None,
                        eye_height_m: float = STANDING_EYE_HEIGHT_M) -> list[np.ndarray]:
    """Where ``count`` avatars stand so the user sees them life-size: ``world_from_avatar``
    (4, 4) each, mapping avatar space (feet at y = 0, facing +Z, metres) into the XR space.

    They stand on the floor (``floor_y``, or ``eye_height_m`` below the head when the floor is
    unknown) ``distance_m`` ahead of the head along its horizontal gaze, side by side
    ``spacing_m`` apart, each turned to face the user. Only the head's yaw matters: looking
    up or down while recentring does not tilt anyone."""
    head = world_from_head[:3, 3]
    forward = -world_from_head[:3, 2]
    forward = np.array([forward[0], 0.0, forward[2]])
    if np.linalg.norm(forward) < 1e-6:  # looking straight up or down: use the head's up
        up = world_from_head[:3, 1] * np.sign(world_from_head[1, 2] or 1.0)
        forward = np.array([up[0], 0.0, up[2]])
    if np.linalg.norm(forward) < 1e-6:
        forward = np.array([0.0, 0.0, -1.0])
    forward /= np.linalg.norm(forward)
    side = np.cross(forward, [0.0, 1.0, 0.0])  # the user's right
    floor = head[1] - eye_height_m if floor_y is None else floor_y
    out = []
    for i in range(count):
        spot = head + forward * distance_m + side * (i - (count - 1) / 2) * spacing_m
        spot[1] = floor
        to_user = np.array([head[0] - spot[0], 0.0, head[2] - spot[2]])
        z = to_user / max(np.linalg.norm(to_user), 1e-9)
        x = np.cross([0.0, 1.0, 0.0], z)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, (0.0, 1.0, 0.0), z, spot
        out.append(m)
    return out


# -- what the scene sees each frame ------------------------------------------------------------
@dataclass
class XrFrame:
    """One frame as the scene sees it (world = the XR reference space, metres)."""
    index: int
    display_time_ns: int
    display_period_ns: int
    cameras: list[Camera]                 # one per eye, left first
    world_from_head: np.ndarray           # (4, 4)
    floor_y: float | None                 # floor height when the space knows it
    recentre: bool = False                # the user pressed recentre or the runtime moved the space


@dataclass
class FrameTiming:
    """Milliseconds spent per frame, for benchmarks (``XrTarget.timings``)."""
    wait_ms: float       # blocked in xrWaitFrame (the runtime pacing us)
    scene_ms: float      # the scene callback (numpy posing, or forward kinematics for the GPU)
    pose_ms: float       # GPU posing (pose_avatars, GL finished), when poses changed
    sort_ms: float       # upload (when the Gaussians changed) + depth sort (when needed)
    draw_ms: float       # both eyes' draws, GL finished
    frame_ms: float      # xrWaitFrame return to xrWaitFrame return: the achieved frame time
    display_period_ms: float
    rendered: bool


@dataclass
class _EyeSwapchain:
    handle: object
    width: int
    height: int
    images: object                       # the runtime's array of SwapchainImageOpenGLKHR
    framebuffers: dict = field(default_factory=dict)  # image index -> moderngl framebuffer


LINEARISE_VERTEX = """
#version 330
out vec2 uv;
void main() {
    vec2 corner = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
    uv = 0.5 * corner + 0.5;
    gl_Position = vec4(corner, 0.0, 1.0);
}
"""
LINEARISE_FRAGMENT = """
#version 330
uniform sampler2D image;
in vec2 uv;
out vec4 frag;
void main() {
    vec4 c = texture(image, uv);
    // c.rgb is premultiplied sRGB-encoded colour; the swapchain wants linear light.
    vec3 srgb = c.a > 0.0 ? c.rgb / c.a : vec3(0.0);
    vec3 lin = mix(srgb / 12.92, pow((srgb + 0.055) / 1.055, vec3(2.4)), step(0.04045, srgb));
    frag = vec4(lin * c.a, c.a);
}
"""


# -- the target --------------------------------------------------------------------------------
class XrTarget:
    """Draws Gaussians into an OpenXR headset, frame by frame (see the module docstring)."""

    def __init__(self, graphics: str = "auto", *, validation: bool = False,
                 renderer_factory: Callable | None = None, near: float = 0.05,
                 far: float = 100.0, background=DEFAULT_BACKGROUND,
                 application_name: str = "splatcall", mirror_window: bool = False,
                 prefer_srgb: bool = True,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        """``graphics``: "egl" (headless, XR_MNDX_egl_enable), "glx" (an X display) or "auto"
        (GLX when DISPLAY is set, else EGL). ``validation`` enables the Khronos core
        validation layer (shipped with pyopenxr); every message at warning or above lands in
        ``messages``. ``renderer_factory(ctx)`` makes the splatter (default: render.gl's
        GLSplatRenderer). ``prefer_srgb=False`` picks a linear swapchain format when the
        runtime offers one (to exercise the linearising path). ``log`` gets the session's
        progress (chatty), ``warn`` (default: ``log``) a line whenever the viewer falls back
        to a slower path."""
        if graphics == "auto":
            graphics = "glx" if os.environ.get("DISPLAY") else "egl"
        if graphics not in ("egl", "glx"):
            raise ValueError(f"graphics must be 'egl', 'glx' or 'auto', not {graphics!r}")
        self.graphics = graphics
        self.validation = validation
        self.renderer_factory = renderer_factory
        self.near, self.far = near, far
        self.background = background
        self.application_name = application_name
        self.mirror_window = mirror_window
        self.prefer_srgb = prefer_srgb
        self.log = log or (lambda message: None)
        self.warn = warn or self.log
        self.messages: list[tuple[str, str]] = []   # (severity, text) at warning or above
        self.timings: deque[FrameTiming] = deque(maxlen=100_000)  # the latest frames
        self.frames_shown = 0
        self.lifecycle = Lifecycle()
        self.capture = False                        # keep the last drawn eye images
        self.captured: list[np.ndarray] = []        # (H, W, 4) uint8 per eye, top row first
        self.captured_cameras: list[Camera] = []    # the eyes' cameras of those images
        self.runtime_name = ""
        self.system_name = ""
        self.color_format = 0
        self.color_is_srgb = True
        self.frame_index = 0
        self._xr = None
        self._instance = None
        self._messenger = None
        self._session = None
        self._space = None
        self._view_space = None
        self._floor_y: float | None = None
        self._gl = None
        self.ctx = None
        self.renderer = None
        self._eyes: list[_EyeSwapchain] = []
        self._action_set = None
        self._recentre_action = None
        self._recentre_pending = True   # place the avatars at the first tracked frame
        self._staging = None
        self._linearise = None
        self._last_wait_end = None
        self._copy_image = None
        self._readback = None

    # -- set-up and tear-down ----------------------------------------------------------------
    def __enter__(self) -> XrTarget:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            os.environ.setdefault("XR_LOADER_DEBUG", "none")  # the loader's own stderr chatter
            import xr
        except (ImportError, OSError) as exc:
            raise XrUnavailableError(f"pyopenxr is not usable ({exc}); pip install pyopenxr, "
                                     f"then {RUNTIMES_HINT}") from None
        self._xr = xr
        try:
            self._create_instance()
            self._create_session()
        except XrUnavailableError:
            self.close()
            raise
        except xr.XrException as exc:
            self.close()
            raise XrUnavailableError(f"OpenXR set-up failed: {exc}") from None

    def _create_instance(self) -> None:
        xr = self._xr
        try:
            available = {_text(e.extension_name)
                         for e in xr.enumerate_instance_extension_properties()}
        except xr.XrException:
            raise XrUnavailableError(f"no OpenXR runtime is active: {RUNTIMES_HINT}") from None
        needed = ["XR_KHR_opengl_enable"]
        if self.graphics == "egl":
            needed.append("XR_MNDX_egl_enable")
        missing = [name for name in needed if name not in available]
        if missing:
            raise XrUnavailableError(
                f"the active OpenXR runtime lacks {', '.join(missing)}"
                + (" (headless EGL needs Monado; try --xr-graphics glx with a display)"
                   if "XR_MNDX_egl_enable" in missing else ""))
        extensions = list(needed)
        for optional in ("XR_EXT_debug_utils", "XR_EXT_local_floor"):
            if optional in available:
                extensions.append(optional)
        layers = []
        if self.validation:
            layers.append(xr.LUNARG_core_validation_APILAYER_NAME)
        messenger_info = None
        if "XR_EXT_debug_utils" in extensions:
            severities = (xr.DebugUtilsMessageSeverityFlagsEXT.WARNING_BIT
                          | xr.DebugUtilsMessageSeverityFlagsEXT.ERROR_BIT)
            messenger_info = xr.DebugUtilsMessengerCreateInfoEXT(
                message_severities=severities, user_callback=self._on_debug_message)
        self._extensions = extensions
        try:
            self._instance = xr.create_instance(xr.InstanceCreateInfo(
                application_info=xr.ApplicationInfo(
                    application_name=self.application_name, application_version=1,
                    engine_name="splatcall", engine_version=1,
                    api_version=xr.Version(1, 0, 0)),
                enabled_api_layer_names=layers,
                enabled_extension_names=extensions,
                next=messenger_info))
        except xr.RuntimeUnavailableError:
            raise XrUnavailableError(f"no OpenXR runtime is active: {RUNTIMES_HINT}") from None
        except xr.RuntimeFailureError:
            raise XrUnavailableError("the active OpenXR runtime failed to start (is its service"
                                     f" running, e.g. monado-service?); {RUNTIMES_HINT}") from None
        except xr.ApiLayerNotPresentError:
            raise XrUnavailableError("the OpenXR validation layer is missing (it ships with "
                                     "pyopenxr; reinstall it)") from None
        if messenger_info is not None:
            self._messenger_info = messenger_info  # its callback must outlive the instance
            self._messenger = xr.create_debug_utils_messenger_ext(self._instance, messenger_info)
        props = xr.get_instance_properties(self._instance)
        self.runtime_name = _text(props.runtime_name)
        try:
            self._system = xr.get_system(self._instance, xr.SystemGetInfo(
                form_factor=xr.FormFactor.HEAD_MOUNTED_DISPLAY))
        except xr.FormFactorUnavailableError:
            raise XrUnavailableError(f"{self.runtime_name} sees no headset: connect and wake it"
                                     ", then try again") from None
        except xr.XrException as exc:
            raise XrUnavailableError(f"{self.runtime_name} offers no headset: {exc}") from None
        self.system_name = _text(xr.get_system_properties(self._instance, self._system).system_name)

    def _on_debug_message(self, severity, _types, data, _user) -> bool:
        text = f"{_text(data.function_name)}: {_text(data.message)}"
        level = "error" if int(severity) & 0x1000 else "warning"
        self.messages.append((level, text))
        self.log(f"OpenXR {level}: {text}")
        return False

    def _create_session(self) -> None:
        xr = self._xr
        requirements = xr.get_opengl_graphics_requirements_khr(self._instance, self._system)
        self._gl = EglContext() if self.graphics == "egl" else GlxContext(self.mirror_window)
        self.ctx = self._gl.moderngl_context()
        have = self.ctx.version_code
        low = requirements.min_api_version_supported  # an xr.Version
        if (have // 100, have // 10 % 10) < (low.major, low.minor):
            raise XrUnavailableError(f"the runtime needs OpenGL {low.major}.{low.minor},"
                                     f" this context offers {have / 100:.1f}")
        binding = self._gl.binding(xr)
        self._binding = binding  # keep alive as long as the session
        self._session = xr.create_session(self._instance, xr.SessionCreateInfo(
            system_id=self._system, next=ctypes.cast(ctypes.pointer(binding), ctypes.c_void_p)))
        self._gl.make_current()  # some runtimes switch contexts while creating the session
        self._create_spaces()
        self._create_swapchains()
        self._create_actions()
        if self.renderer_factory is None:
            from render.gl import GLSplatRenderer

            def default_renderer(ctx):
                # A head never holds still: re-sort only when it moved 2 cm or turned 2
                # degrees, far below what changes the order of splats a metre away.
                return GLSplatRenderer(ctx, position_tolerance_m=SORT_POSITION_TOLERANCE_M,
                                       angle_tolerance_rad=SORT_ANGLE_TOLERANCE_RAD)
            self.renderer_factory = default_renderer
        self.renderer = self.renderer_factory(self.ctx)
        modes = xr.enumerate_environment_blend_modes(
            self._instance, self._system, xr.ViewConfigurationType.PRIMARY_STEREO)
        self._blend_mode = (xr.EnvironmentBlendMode.OPAQUE
                            if xr.EnvironmentBlendMode.OPAQUE in list(modes) else modes[0])

    def _create_spaces(self) -> None:
        xr = self._xr
        offered = set(xr.enumerate_reference_spaces(self._session))
        kinds = [(xr.ReferenceSpaceType.STAGE, 0.0), (xr.ReferenceSpaceType.LOCAL, None)]
        if "XR_EXT_local_floor" in self._extensions:
            kinds.insert(0, (xr.ReferenceSpaceType.LOCAL_FLOOR_EXT, 0.0))
        for kind, floor in kinds:
            if kind in offered:
                self._space = xr.create_reference_space(self._session, xr.ReferenceSpaceCreateInfo(
                    reference_space_type=kind, pose_in_reference_space=xr.Posef()))
                self._floor_y = floor
                self.space_name = kind.name
                break
        if self._space is None:
            raise XrUnavailableError("the runtime offers no LOCAL or STAGE reference space")
        self._view_space = xr.create_reference_space(self._session, xr.ReferenceSpaceCreateInfo(
            reference_space_type=xr.ReferenceSpaceType.VIEW, pose_in_reference_space=xr.Posef()))

    def _create_swapchains(self) -> None:
        xr = self._xr
        views = xr.enumerate_view_configuration_views(
            self._instance, self._system, xr.ViewConfigurationType.PRIMARY_STEREO)
        self.offered_formats = [int(f) for f in xr.enumerate_swapchain_formats(self._session)]
        self.color_format, self.color_is_srgb = choose_color_format(self.offered_formats,
                                                                    self.prefer_srgb)
        for view in views:
            width, height = view.recommended_image_rect_width, view.recommended_image_rect_height
            handle = xr.create_swapchain(self._session, xr.SwapchainCreateInfo(
                usage_flags=(xr.SwapchainUsageFlags.COLOR_ATTACHMENT_BIT
                             | xr.SwapchainUsageFlags.SAMPLED_BIT),
                format=self.color_format, sample_count=1, width=width, height=height,
                face_count=1, array_size=1, mip_count=1))
            images = xr.enumerate_swapchain_images(handle, xr.SwapchainImageOpenGLKHR)
            self._eyes.append(_EyeSwapchain(handle, width, height, images))
        self.eye_size = (self._eyes[0].width, self._eyes[0].height) if self._eyes else (0, 0)

    def _create_actions(self) -> None:
        xr = self._xr
        self._action_set = xr.create_action_set(self._instance, xr.ActionSetCreateInfo(
            action_set_name="splatcall", localized_action_set_name="splatcall viewer", priority=0))
        self._recentre_action = xr.create_action(self._action_set, xr.ActionCreateInfo(
            action_type=xr.ActionType.BOOLEAN_INPUT, action_name="recentre",
            localized_action_name="Recentre the avatars"))
        bindings = [xr.ActionSuggestedBinding(self._recentre_action,
                                              xr.string_to_path(self._instance, path))
                    for path in RECENTRE_BINDINGS]
        profile = xr.string_to_path(self._instance, "/interaction_profiles/khr/simple_controller")
        xr.suggest_interaction_profile_bindings(self._instance,
                                                xr.InteractionProfileSuggestedBinding(
                                                    interaction_profile=profile,
                                                    suggested_bindings=bindings))
        xr.attach_session_action_sets(self._session, xr.SessionActionSetsAttachInfo(
            action_sets=[self._action_set]))

    def close(self) -> None:
        """Destroy everything in reverse order; safe to call twice, after a failed open and
        after the runtime went away (each step is tried; a lost runtime fails them all)."""
        xr = self._xr
        if xr is None:
            return
        if self._session is not None and self.lifecycle.running and not self.lifecycle.lost:
            try:  # the loop was abandoned mid-session: end it so the runtime lets go of it
                xr.request_exit_session(self._session)
                deadline = time.monotonic() + 2.0
                while self.lifecycle.running and time.monotonic() < deadline:
                    self._poll_events()
                    if self.lifecycle.running:
                        self._submit_empty_frame()
            except xr.XrException:
                pass

        def attempt(release, *args) -> None:
            try:
                release(*args)
            except Exception:  # noqa: BLE001 - a lost runtime or context: nothing to free
                pass

        if self.renderer is not None:
            attempt(self.renderer.release)
            self.renderer = None
        for eye in self._eyes:
            for fbo in eye.framebuffers.values():
                attempt(fbo.release)
            attempt(xr.destroy_swapchain, eye.handle)
        self._eyes = []
        for name in ("_staging", "_linearise"):
            for obj in getattr(self, name) or ():
                attempt(obj.release)
            setattr(self, name, None)
        if self._readback is not None:
            attempt(self._readback.release)
            self._readback = None
        for space in (self._view_space, self._space):
            if space is not None:
                attempt(xr.destroy_space, space)
        self._space = self._view_space = None
        if self._action_set is not None:
            attempt(xr.destroy_action_set, self._action_set)
            self._action_set = None
        if self._session is not None:
            attempt(xr.destroy_session, self._session)
            self._session = None
        if self._gl is not None:
            attempt(self._gl.release)
            self._gl = None
            self.ctx = None
        if self._messenger is not None:
            attempt(xr.destroy_debug_utils_messenger_ext, self._messenger)
            self._messenger = None
        if self._instance is not None:
            attempt(xr.destroy_instance, self._instance)
            self._instance = None

    # -- the loop --------------------------------------------------------------------------
    @property
    def exit_reason(self) -> str | None:
        return self.lifecycle.exit_reason

    def request_exit(self) -> None:
        """Leave cleanly: the runtime walks the session to EXITING, then ``step`` returns
        False."""
        if self.lifecycle.request_exit() and self._session is not None:
            self._xr.request_exit_session(self._session)

    def request_recentre(self) -> None:
        self._recentre_pending = True

    def step(self, scene: Callable[[XrFrame], Gaussians | None]) -> bool:
        """Handle the runtime's events and, while the session runs, one frame. False once the
        session has ended (``exit_reason`` says why)."""
        xr = self._xr
        try:
            self._poll_events()
            if self.lifecycle.done:
                return False
            if not self.lifecycle.running:
                time.sleep(0.01)  # IDLE: no frames may be submitted, so wait for READY
                return True
            self._frame(scene)
        except (xr.InstanceLostError, xr.SessionLostError, xr.RuntimeFailureError) as exc:
            # The runtime died or the headset went away without a LOSS_PENDING first.
            self.lifecycle.on_lost(f"the OpenXR runtime went away ({type(exc).__name__})")
        return not self.lifecycle.done

    def run(self, scene, max_frames: int | None = None, timeout_s: float | None = None) -> str:
        """Step until the session ends, ``max_frames`` rendered frames have been shown (then a
        clean exit is requested) or Ctrl+C. Returns the exit reason."""
        start = time.monotonic()
        while True:
            try:
                if not self.step(scene):
                    break
            except KeyboardInterrupt:
                self.log("interrupted: ending the OpenXR session")
                self.request_exit()
                continue
            if max_frames is not None and self.frames_shown >= max_frames:
                self.request_exit()
            if timeout_s is not None and time.monotonic() - start > timeout_s \
                    and not self.lifecycle.exit_requested:
                self.log(f"no clean end within {timeout_s:.0f} s: ending the session")
                self.request_exit()
        return self.exit_reason or "ended"

    def _poll_events(self) -> None:
        xr = self._xr
        while self._instance is not None:
            try:
                event = xr.poll_event(self._instance)
            except xr.EventUnavailable:
                return
            kind = xr.StructureType(event.type)
            if kind == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                changed = ctypes.cast(ctypes.byref(event),
                                      ctypes.POINTER(xr.EventDataSessionStateChanged)).contents
                action = self.lifecycle.on_state(int(changed.state))
                self.log(f"OpenXR session {self.lifecycle.state.name}")
                if action == "begin":
                    xr.begin_session(self._session, xr.SessionBeginInfo(
                        primary_view_configuration_type=xr.ViewConfigurationType.PRIMARY_STEREO))
                elif action == "end":
                    xr.end_session(self._session)
            elif kind == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                self.lifecycle.on_instance_loss()
            elif kind == xr.StructureType.EVENT_DATA_REFERENCE_SPACE_CHANGE_PENDING:
                self._recentre_pending = True  # the user recentred in the runtime's own menu

    def _submit_empty_frame(self) -> None:
        xr = self._xr
        state = xr.wait_frame(self._session, xr.FrameWaitInfo())
        xr.begin_frame(self._session, xr.FrameBeginInfo())
        xr.end_frame(self._session, xr.FrameEndInfo(
            display_time=state.predicted_display_time, environment_blend_mode=self._blend_mode,
            layers=[]))

    def _frame(self, scene) -> None:
        xr = self._xr
        t0 = time.perf_counter()
        state = xr.wait_frame(self._session, xr.FrameWaitInfo())
        t1 = time.perf_counter()
        xr.begin_frame(self._session, xr.FrameBeginInfo())
        layers, scene_ms, pose_ms, sort_ms, draw_ms = [], 0.0, 0.0, 0.0, 0.0
        if state.should_render:
            self._sync_actions()
            drawn = self._render_views(state, scene)
            if drawn is not None:
                layer, scene_ms, pose_ms, sort_ms, draw_ms = drawn
                layers = [ctypes.byref(layer)]
        xr.end_frame(self._session, xr.FrameEndInfo(
            display_time=state.predicted_display_time, environment_blend_mode=self._blend_mode,
            layers=layers))
        last = self._last_wait_end
        frame_ms = (t1 - last) * 1e3 if last is not None else float("nan")
        self._last_wait_end = t1
        self.timings.append(FrameTiming((t1 - t0) * 1e3, scene_ms, pose_ms, sort_ms, draw_ms,
                                        frame_ms,
                                        state.predicted_display_period / 1e6, bool(layers)))
        self.frame_index += 1
        self.frames_shown += bool(layers)

    def _sync_actions(self) -> None:
        xr = self._xr
        if not self.lifecycle.focused:
            return  # actions only sync while focused
        xr.sync_actions(self._session, xr.ActionsSyncInfo(
            active_action_sets=[xr.ActiveActionSet(self._action_set, xr.NULL_PATH)]))
        pressed = xr.get_action_state_boolean(self._session, xr.ActionStateGetInfo(
            action=self._recentre_action))
        if pressed.is_active and pressed.changed_since_last_sync and pressed.current_state:
            self._recentre_pending = True

    def _render_views(self, state, scene):
        xr = self._xr
        view_state, views = xr.locate_views(self._session, xr.ViewLocateInfo(
            view_configuration_type=xr.ViewConfigurationType.PRIMARY_STEREO,
            display_time=state.predicted_display_time, space=self._space))
        valid = xr.ViewStateFlags.ORIENTATION_VALID_BIT | xr.ViewStateFlags.POSITION_VALID_BIT
        if int(view_state.view_state_flags) & int(valid) != int(valid):
            return None  # no tracking: submit no layer rather than a wrong view
        cameras = []
        for view, eye in zip(views, self._eyes):
            world_from_eye = world_from_pose(
                (view.pose.position.x, view.pose.position.y, view.pose.position.z),
                (view.pose.orientation.x, view.pose.orientation.y, view.pose.orientation.z,
                 view.pose.orientation.w))
            cameras.append(eye_camera(world_from_eye, (view.fov.angle_left, view.fov.angle_right,
                                                       view.fov.angle_up, view.fov.angle_down),
                                      eye.width, eye.height, self.near, self.far))
        head = xr.locate_space(self._view_space, self._space, state.predicted_display_time)
        p, q = head.pose.position, head.pose.orientation
        world_from_head = world_from_pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        frame = XrFrame(self.frame_index, state.predicted_display_time,
                        state.predicted_display_period, cameras, world_from_head, self._floor_y,
                        recentre=self._recentre_pending)
        self._recentre_pending = False

        t0 = time.perf_counter()
        content = scene(frame) if scene is not None else None
        t1 = time.perf_counter()
        pose_ms, sort_ms = self._prepare(content, cameras)
        t2 = time.perf_counter()

        layer_views = []
        captured = []
        for view, eye, camera in zip(views, self._eyes, cameras):
            index = xr.acquire_swapchain_image(eye.handle, xr.SwapchainImageAcquireInfo())
            xr.wait_swapchain_image(eye.handle, xr.SwapchainImageWaitInfo(
                timeout=xr.INFINITE_DURATION))
            target = self._framebuffer(eye, index)
            self._draw_eye(camera, target)
            if self.capture:
                captured.append(self._read(target, eye, index))
            xr.release_swapchain_image(eye.handle, xr.SwapchainImageReleaseInfo())
            layer_views.append(xr.CompositionLayerProjectionView(
                pose=view.pose, fov=view.fov, sub_image=xr.SwapchainSubImage(
                    swapchain=eye.handle, image_rect=xr.Rect2Di(
                        offset=xr.Offset2Di(0, 0), extent=xr.Extent2Di(eye.width, eye.height)),
                    image_array_index=0)))
        self.ctx.finish()  # the draw time below is the GL work, not just its submission
        t3 = time.perf_counter()
        if captured:
            self.captured, self.captured_cameras = captured, cameras
        layer = xr.CompositionLayerProjection(space=self._space, views=layer_views)
        self._layer_views = layer_views  # the layer points into them until xrEndFrame
        return layer, (t1 - t0) * 1e3, pose_ms, sort_ms, (t3 - t2) * 1e3

    def _prepare(self, content, cameras: list[Camera]) -> tuple[float, float]:
        """Hand the frame's content to the renderer (upload what changed, pose on the GPU
        when the poses changed) and sort once for both eyes, from between them along their
        mean gaze. Returns (pose_ms, sort_ms), GL work finished."""
        t0 = time.perf_counter()
        pose_ms = 0.0
        if self.renderer.show(content):
            self.ctx.finish()
            pose_ms = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        middle = np.mean([c.position for c in cameras], axis=0)
        forward = np.mean([c.forward for c in cameras], axis=0)
        self.renderer.sort_for(middle, forward)
        self.ctx.finish()
        return pose_ms, (time.perf_counter() - t1) * 1e3

    def draw_offscreen(self, content, cameras: list[Camera]) -> list[np.ndarray]:
        """Draw a frame's content (what a scene returns) for ``cameras`` as the frame loop
        does (same upload, posing, sort and per-eye draw) into plain RGBA8 images instead of
        the swapchain: (H, W, 4) uint8 per camera, top row first, the bytes an sRGB
        swapchain would hold. For mirrors and for checking the headset path."""
        self._gl.make_current()
        self._prepare(content, cameras)
        images = []
        for camera in cameras:
            texture = self.ctx.texture((camera.width, camera.height), 4, dtype="f1")
            fbo = self.ctx.framebuffer(color_attachments=[texture])
            try:
                self.ctx.disable_direct(GL_FRAMEBUFFER_SRGB)
                self.renderer.draw(camera, fbo, background=self.background)
                raw = texture.read()
            finally:
                fbo.release()
                texture.release()
            images.append(np.frombuffer(raw, np.uint8).reshape(camera.height, camera.width,
                                                               4)[::-1].copy())
        return images

    def _framebuffer(self, eye: _EyeSwapchain, index: int):
        fbo = eye.framebuffers.get(index)
        if fbo is None:
            texture = self.ctx.external_texture(int(eye.images[index].image),
                                                (eye.width, eye.height), 4, 0, "f1")
            fbo = self.ctx.framebuffer(color_attachments=[texture])
            eye.framebuffers[index] = fbo
        return fbo

    def _draw_eye(self, camera: Camera, target) -> None:
        ctx = self.ctx
        ctx.disable_direct(GL_FRAMEBUFFER_SRGB)  # store our sRGB values as they are
        if self.color_is_srgb:
            self.renderer.draw(camera, target, background=self.background)
            return
        # Linear swapchain: splat (blending in sRGB, as 3DGS) into RGBA8, then linearise.
        if self._staging is None or self._staging[0].size != (camera.width, camera.height):
            for obj in self._staging or ():
                obj.release()
            texture = ctx.texture((camera.width, camera.height), 4, dtype="f1")
            self._staging = (texture, ctx.framebuffer(color_attachments=[texture]))
        if self._linearise is None:
            program = ctx.program(vertex_shader=LINEARISE_VERTEX,
                                  fragment_shader=LINEARISE_FRAGMENT)
            self._linearise = (program, ctx.vertex_array(program, []))
        self.renderer.draw(camera, self._staging[1], background=self.background)
        import moderngl

        target.use()
        ctx.viewport = (0, 0, camera.width, camera.height)
        ctx.disable(moderngl.BLEND)
        self._staging[0].use(0)
        self._linearise[0]["image"].value = 0
        self._linearise[1].render(moderngl.TRIANGLE_STRIP, vertices=4)

    def _read(self, target, eye: _EyeSwapchain, index: int) -> np.ndarray:
        """The swapchain image as stored, top row first: (H, W, 4) uint8 bytes of an sRGB
        image, or (H, W, 4) float32 linear values of a linear one.

        An sRGB image is copied bit for bit (glCopyImageSubData) into a plain RGBA8 texture
        first: reading it through a framebuffer may decode it, and the stored bytes are what
        the compositor gets."""
        if not self.color_is_srgb:
            raw = target.read(viewport=(0, 0, eye.width, eye.height), components=4, dtype="f4")
            return np.frombuffer(raw, np.float32).reshape(eye.height, eye.width, 4)[::-1].copy()
        if self._copy_image is None:
            self._copy_image = ctypes.CFUNCTYPE(None, *([ctypes.c_uint, ctypes.c_uint]
                                                        + [ctypes.c_int] * 4) * 2
                                                + [ctypes.c_int] * 3)(
                self._gl.get_proc_address("glCopyImageSubData"))
        if self._readback is None or self._readback.size != (eye.width, eye.height):
            if self._readback is not None:
                self._readback.release()
            self._readback = self.ctx.texture((eye.width, eye.height), 4, dtype="f1")
        gl_texture_2d = 0x0DE1
        self._copy_image(int(eye.images[index].image), gl_texture_2d, 0, 0, 0, 0,
                         self._readback.glo, gl_texture_2d, 0, 0, 0, 0,
                         eye.width, eye.height, 1)
        raw = self._readback.read()
        return np.frombuffer(raw, dtype=np.uint8).reshape(eye.height, eye.width, 4)[::-1].copy()


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
