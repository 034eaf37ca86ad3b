"""OpenGL backend (moderngl, OpenGL 4.3): standard 3D Gaussian splatting in shaders.

It matches ``render.reference`` (same culling, EWA projection, 1/255 footprints, SH colours);
the only intended difference is that blending runs back to front, so it cannot stop a pixel
early when its transmittance falls below 1e-4 as the reference (and 3DGS) does.

Per frame:

1. ``upload(gaussians)``: the attributes go to shader storage buffers (Gaussians that are
   not finite or have non-positive scales are given zero opacity, so they draw nothing).
2. ``sort_for(position, forward)``: a CPU depth sort along ``forward`` (``render.sort``,
   32-bit radix), skipped when neither the Gaussians nor the view moved more than the
   tolerances. One sort serves both eyes of a stereo pair: sort from the eyes' midpoint.
3. ``draw(camera, framebuffer)``: a compute pass projects every Gaussian for this camera
   (3D covariance R S S^T R^T, EWA Jacobian with clamped x/z, y/z, + 0.3 px^2 dilation, conic,
   1/255 box, colour from RGB or SH degree 0..3 toward this camera), then one instanced quad
   per Gaussian is blended back to front, premultiplied: dst = src + (1 - src_alpha) dst.

API for targets (the desktop window, the OpenXR swapchain, offscreen)::

    renderer = GLSplatRenderer(ctx)              # ctx: moderngl.Context (None: headless EGL)
    renderer.upload(gaussians)                   # once per pose
    renderer.sort_for(position, forward)         # world metres, unit view direction
    renderer.draw(camera, framebuffer, background=None)   # per eye / view; clears unless
                                                           # clear=False, viewport = camera size
    image = renderer.render(gaussians, camera)   # all of it into an RGBA32F target, (H, W, 4)
    left, right = renderer.render_stereo(gaussians, [left_camera, right_camera])

``framebuffer`` is any ``moderngl.Framebuffer`` (``ctx.screen`` for a window, one wrapping an
XR swapchain image); ``viewport=(x, y, w, h)`` draws into part of it (side-by-side stereo).
Colours are display (sRGB-encoded) values blended as they are, like 3DGS: write them to an
ordinary RGBA8 target for display (no GL_FRAMEBUFFER_SRGB conversion); RGBA32F for tests.

Bad input: zero Gaussians or a 0x0 camera draw nothing (a background clear at most);
non-finite Gaussians are dropped; a lost or released context raises ``GLContextLost`` and
``renderer.rebind(new_ctx)`` rebuilds everything from the last uploaded Gaussians.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from render.backends import RenderError
from render.camera import Camera
from render.gaussians import Gaussians
from render.reference import (ALPHA_MAX, ALPHA_MIN, DILATION_PX2, FRUSTUM_MARGIN, SH_C0, SH_C1,
                              SH_C2, SH_C3)
from render.sort import front_to_back, view_depths

GL_VERSION = 430
WORKGROUP = 128
PARAMS_PER_GAUSSIAN = 11  # mean xyz, quat wxyz, scale xyz, opacity


class GLContextLost(RenderError):
    """The OpenGL context is gone (released, lost or never usable); call ``rebind``."""


def _fmt(values) -> str:
    return ", ".join(f"{v:.17g}" for v in values)


PREPROCESS_SHADER = f"""
#version 430
layout(local_size_x = {WORKGROUP}) in;
layout(std430, binding = 0) readonly buffer Params {{ float params[]; }};
layout(std430, binding = 1) readonly buffer Colors {{ float colors[]; }};
layout(std430, binding = 2) writeonly buffer Splats {{ vec4 splats[]; }};
layout(std430, binding = 4) buffer Stats {{ uint max_diameter_bits; }};  // for the point path
uniform int count;
uniform int sh_count;          // 0: plain RGB, else 1, 4, 9 or 16 coefficients per channel
uniform mat3 cv_rotation;      // cv_from_world rotation (column-major as GL expects)
uniform vec3 cv_translation;
uniform vec4 intrinsics;       // fx, fy, cx, cy
uniform vec2 image_size;
uniform vec2 near_far;
uniform vec4 limits;           // x/z max, x/z min (negated), y/z max, y/z min (negated)
uniform vec3 camera_position;

const float C0 = {SH_C0!r};
const float C1 = {SH_C1!r};
const float C2[5] = float[5]({_fmt(SH_C2)});
const float C3[7] = float[7]({_fmt(SH_C3)});

vec3 sh_coeff(uint i, int k) {{
    uint base = (i * uint(sh_count) + uint(k)) * 3u;
    return vec3(colors[base], colors[base + 1u], colors[base + 2u]);
}}

vec3 view_color(uint i, vec3 mean) {{
    if (sh_count == 0) {{
        uint base = i * 3u;
        return vec3(colors[base], colors[base + 1u], colors[base + 2u]);
    }}
    vec3 dir = normalize(mean - camera_position);
    float x = dir.x, y = dir.y, z = dir.z;
    vec3 c = C0 * sh_coeff(i, 0);
    if (sh_count > 1) {{
        c += -C1 * y * sh_coeff(i, 1) + C1 * z * sh_coeff(i, 2) - C1 * x * sh_coeff(i, 3);
    }}
    if (sh_count > 4) {{
        float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
        c += C2[0] * xy * sh_coeff(i, 4) + C2[1] * yz * sh_coeff(i, 5)
           + C2[2] * (2.0 * zz - xx - yy) * sh_coeff(i, 6) + C2[3] * xz * sh_coeff(i, 7)
           + C2[4] * (xx - yy) * sh_coeff(i, 8);
        if (sh_count > 9) {{
            c += C3[0] * y * (3.0 * xx - yy) * sh_coeff(i, 9) + C3[1] * xy * z * sh_coeff(i, 10)
               + C3[2] * y * (4.0 * zz - xx - yy) * sh_coeff(i, 11)
               + C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh_coeff(i, 12)
               + C3[4] * x * (4.0 * zz - xx - yy) * sh_coeff(i, 13)
               + C3[5] * z * (xx - yy) * sh_coeff(i, 14) + C3[6] * x * (xx - 3.0 * yy) * sh_coeff(i, 15);
        }}
    }}
    return max(c + 0.5, vec3(0.0));
}}

void main() {{
    uint i = gl_GlobalInvocationID.x;
    if (i >= uint(count)) return;
    uint p = i * {PARAMS_PER_GAUSSIAN}u;
    vec3 mean = vec3(params[p], params[p + 1u], params[p + 2u]);
    vec4 q = vec4(params[p + 3u], params[p + 4u], params[p + 5u], params[p + 6u]);
    vec3 scale = vec3(params[p + 7u], params[p + 8u], params[p + 9u]);
    float opacity = min(params[p + 10u], 1.0);
    splats[3u * i + 2u] = vec4(0.0);  // invalid until proven drawable
    vec3 t = cv_rotation * mean + cv_translation;
    if (!(t.z > near_far.x && t.z < near_far.y) || !(opacity >= {ALPHA_MIN!r})) return;

    q = normalize(q);
    float w = q.x, x = q.y, y = q.z, z = q.w;
    mat3 r = mat3(  // columns
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y),
        2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x),
        2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y));
    mat3 m = cv_rotation * r * mat3(scale.x, 0.0, 0.0, 0.0, scale.y, 0.0, 0.0, 0.0, scale.z);

    float tx = clamp(t.x / t.z, -limits.y, limits.x) * t.z;
    float ty = clamp(t.y / t.z, -limits.w, limits.z) * t.z;
    float fx = intrinsics.x, fy = intrinsics.y;
    // Rows of T = J W R S (2x3): the 2D covariance is T T^T. Its determinant comes from
    // Lagrange's identity, |t0 x t1|^2, which float32 keeps accurate for needle-like
    // Gaussians where a c - b^2 would cancel catastrophically.
    vec3 t0 = vec3(fx / t.z, 0.0, -fx * tx / (t.z * t.z)) * m;
    vec3 t1 = vec3(0.0, fy / t.z, -fy * ty / (t.z * t.z)) * m;
    float a0 = dot(t0, t0), b = dot(t0, t1), c0 = dot(t1, t1);
    vec3 minors = cross(t0, t1);
    float a = a0 + {DILATION_PX2!r};
    float c = c0 + {DILATION_PX2!r};
    float det = dot(minors, minors) + {DILATION_PX2!r} * (a0 + c0) + {DILATION_PX2 ** 2!r};
    if (!(det > 0.0)) return;
    vec2 mean2d = vec2(fx * t.x / t.z + intrinsics.z, fy * t.y / t.z + intrinsics.w);
    float level = 2.0 * log(opacity / {ALPHA_MIN!r});
    vec2 radius = sqrt(level * vec2(a, c));
    // Wholly outside the image: nothing to draw (the box test of the reference).
    if (mean2d.x + radius.x <= 0.0 || mean2d.x - radius.x >= image_size.x
        || mean2d.y + radius.y <= 0.0 || mean2d.y - radius.y >= image_size.y) return;
    if (any(isnan(mean2d)) || any(isinf(mean2d))) return;
    // The quad: the 1/255 ellipse's own axes (eigenvectors of the 2D covariance), so thin
    // Gaussians cover few pixels (the fragment shader decides pixel by pixel anyway).
    float mid = 0.5 * (a + c);
    float major = mid + sqrt(max(mid * mid - det, 0.0));
    float minor = det / major;
    vec2 axis = abs(b) > 1e-12 * major ? normalize(vec2(b, major - a))
                                       : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    // (+0.05 px: pixel centres on the contour itself stay inside despite float rounding)
    splats[3u * i] = vec4(mean2d, axis * (sqrt(level * major) + 0.05));
    splats[3u * i + 1u] = vec4(c / det, -b / det, a / det, opacity);
    splats[3u * i + 2u] = vec4(view_color(i, mean), sqrt(level * minor) + 0.05);
    // Positive floats order like their bit patterns.
    atomicMax(max_diameter_bits, floatBitsToUint(2.0 * sqrt(level * major) + 1.2));
}}
"""

VERTEX_SHADER = """
#version 430
layout(std430, binding = 2) readonly buffer Splats { vec4 splats[]; };
layout(std430, binding = 3) readonly buffer Order { uint order[]; };
uniform vec2 image_size;
in vec2 corner;
flat out vec4 v_conic_opacity;
flat out vec3 v_color;
flat out vec2 v_mean;
void main() {
    uint i = order[gl_InstanceID];
    vec4 color_minor = splats[3u * i + 2u];
    if (color_minor.w == 0.0) {  // culled: a degenerate quad outside the clip volume
        gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
        return;
    }
    vec4 mean_major = splats[3u * i];
    v_conic_opacity = splats[3u * i + 1u];
    v_color = color_minor.rgb;
    v_mean = mean_major.xy;
    // The ellipse's bounding rectangle along its own axes; guard-band clipping does the rest.
    vec2 minor_axis = vec2(-mean_major.w, mean_major.z) * (color_minor.w / length(mean_major.zw));
    vec2 pixel = mean_major.xy + corner.x * mean_major.zw + corner.y * minor_axis;
    gl_Position = vec4(2.0 * pixel.x / image_size.x - 1.0, 1.0 - 2.0 * pixel.y / image_size.y,
                       0.0, 1.0);
}
"""

# The cheaper path on llvmpipe (one vertex per Gaussian instead of an instanced quad: its
# vertex stage is single-threaded): a square point around the whole 1/255 circle, used when
# every footprint fits GL's largest point size. GL drops a point whose centre is outside the
# viewport, so the viewport grows by a guard band of the largest radius (scissored back).
POINT_VERTEX_SHADER = """
#version 430
layout(std430, binding = 2) readonly buffer Splats { vec4 splats[]; };
layout(std430, binding = 3) readonly buffer Order { uint order[]; };
uniform vec2 image_size;
uniform float guard;      // pixels added on every side of the viewport
flat out vec4 v_conic_opacity;
flat out vec3 v_color;
flat out vec2 v_mean;
void main() {
    uint i = order[gl_VertexID];
    vec4 color_minor = splats[3u * i + 2u];
    if (color_minor.w == 0.0) {
        gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
        gl_PointSize = 1.0;
        return;
    }
    vec4 mean_major = splats[3u * i];
    v_conic_opacity = splats[3u * i + 1u];
    v_color = color_minor.rgb;
    v_mean = mean_major.xy;
    gl_PointSize = 2.0 * length(mean_major.zw) + 1.0;
    vec2 extended = image_size + 2.0 * guard;
    gl_Position = vec4(2.0 * (v_mean.x + guard) / extended.x - 1.0,
                       1.0 - 2.0 * (v_mean.y + guard) / extended.y, 0.0, 1.0);
}
"""

FRAGMENT_SHADER = f"""
#version 430
uniform vec4 viewport;   // x, y, width, height of the target area (GL window coordinates)
flat in vec4 v_conic_opacity;
flat in vec3 v_color;
flat in vec2 v_mean;
out vec4 frag;
void main() {{
    // Image coordinates: origin top-left, pixel centres at i + 0.5.
    vec2 pixel = vec2(gl_FragCoord.x - viewport.x, viewport.y + viewport.w - gl_FragCoord.y);
    vec2 d = pixel - v_mean;
    float power = -0.5 * (v_conic_opacity.x * d.x * d.x + 2.0 * v_conic_opacity.y * d.x * d.y
                          + v_conic_opacity.z * d.y * d.y);
    float alpha = min({ALPHA_MAX!r}, v_conic_opacity.w * exp(min(power, 0.0)));
    if (alpha < {ALPHA_MIN!r}) discard;
    frag = vec4(v_color * alpha, alpha);
}}
"""


def _pack(gaussians: Gaussians) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, 11) params, flat colours and the SH count (0 for RGB); bad Gaussians get opacity 0."""
    n = len(gaussians)
    params = np.empty((n, PARAMS_PER_GAUSSIAN), dtype=np.float32)
    params[:, 0:3] = gaussians.means
    params[:, 3:7] = gaussians.quats
    params[:, 7:10] = gaussians.scales
    params[:, 10] = gaussians.opacities
    colors = gaussians.colors
    sh_count = 0 if colors.ndim == 2 else colors.shape[1]
    # A whole-array check first (0.2 ms for 100k); the per-Gaussian mask only when it fails.
    quat_norm2 = np.einsum("ij,ij->i", gaussians.quats, gaussians.quats)
    all_good = (n == 0 or (np.isfinite(params).all() and np.isfinite(colors).all()
                           and (params[:, 7:11] > 0).all() and quat_norm2.min() > 1e-16))
    if not all_good:
        bad = ~gaussians.finite_mask()
        params[bad] = 0.0
        params[bad, 3] = 1.0   # a unit quaternion and scales: harmless, and opacity 0
        params[bad, 7:10] = 1.0
        colors = np.where(bad.reshape((-1,) + (1,) * (colors.ndim - 1)), 0.0, colors)
    return params, np.ascontiguousarray(colors, dtype=np.float32).reshape(-1), sh_count


def camera_forward(camera: Camera) -> np.ndarray:
    """The camera's unit view direction in world space (its OpenCV +Z axis)."""
    return camera.cv_from_world[2, :3].copy()


def _current(method):
    """Run ``method`` with this renderer's context made current (and left current, as GL
    programs usually do: glcontext's nested enter/exit would unbind it), so several contexts
    in one thread (a window and an offscreen renderer) do not mix."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            self.ctx.__enter__()
        except Exception as exc:  # a released context has no GL object left to enter
            raise GLContextLost(f"the OpenGL context is gone: {exc}") from exc
        return method(self, *args, **kwargs)

    return wrapper


class GLSplatRenderer:
    """Splats Gaussians with OpenGL 4.3 shaders into any moderngl framebuffer."""

    def __init__(self, ctx=None, *, position_tolerance_m: float = 0.0,
                 angle_tolerance_rad: float = 0.0, key_bits: int = 32,
                 prefer_points: bool = True):
        """``ctx``: a moderngl context (OpenGL >= 4.3), or None for a headless EGL one.

        The tolerances say how far the view may move before ``sort_for`` sorts again
        (0: whenever it moves at all); ``key_bits`` 32 or 16 (see ``render.sort``);
        ``prefer_points``: draw one point per Gaussian when every footprint fits the largest
        point size (the same pixels and maths, cheaper on llvmpipe), else instanced quads.
        """
        self.position_tolerance_m = position_tolerance_m
        self.angle_tolerance_rad = angle_tolerance_rad
        self.key_bits = key_bits
        self.prefer_points = prefer_points
        self.last_primitive = None  # "points" or "quads": what the last draw used
        self.owns_context = ctx is None
        self._gaussians: Gaussians | None = None
        self._target = None
        self._bind(ctx if ctx is not None else create_headless_context())
        self.sort_count = 0  # how many sorts ran (skips do not count)

    # -- context --------------------------------------------------------------------------
    def _bind(self, ctx) -> None:
        if ctx.version_code < GL_VERSION:
            raise RenderError(f"OpenGL {GL_VERSION // 100}.{GL_VERSION % 100 // 10} is needed,"
                              f" this context offers {ctx.version_code}")
        self.ctx = ctx
        self._build()

    @_current
    def _build(self) -> None:
        ctx = self.ctx
        try:
            self._preprocess = ctx.compute_shader(PREPROCESS_SHADER)
            self._program = ctx.program(vertex_shader=VERTEX_SHADER,
                                        fragment_shader=FRAGMENT_SHADER)
            self._point_program = ctx.program(vertex_shader=POINT_VERTEX_SHADER,
                                              fragment_shader=FRAGMENT_SHADER)
            self._point_vao = ctx.vertex_array(self._point_program, [])
            self._stats = ctx.buffer(reserve=4)
            self.max_point_size = float(ctx.info.get("GL_POINT_SIZE_RANGE", (1.0, 1.0))[1])
            corners = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")
            self._corners = ctx.buffer(corners.tobytes())
            self._vao = ctx.vertex_array(self._program, [(self._corners, "2f", "corner")])
        except Exception as exc:  # moderngl raises its own Error, or others on a dead context
            raise GLContextLost(f"cannot build the splatting shaders: {exc}") from exc
        self._buffers: dict[str, object] = {}
        self._count = 0
        self._sh_count = 0
        self._order_valid = False
        self._sort_key = None
        self._target = None

    def rebind(self, ctx=None) -> None:
        """Rebuild everything on ``ctx`` (None: a new headless context) after a lost context,
        re-uploading the last Gaussians."""
        if self.owns_context:
            try:
                self.ctx.release()
            except Exception:  # already gone
                pass
        self.owns_context = ctx is None
        self._bind(ctx if ctx is not None else create_headless_context())
        if self._gaussians is not None:
            self.upload(self._gaussians)

    def release(self) -> None:
        """Free the GL objects (and the context, when this renderer made it)."""
        try:
            self._release_objects()
        except GLContextLost:
            pass  # they went with the context
        if self.owns_context:
            try:  # unbind first: a thread with an EGL context still current cannot make a
                self.ctx.__exit__(None, None, None)  # GLX one current (X BadAccess) later
            except Exception:
                pass
            self.ctx.release()

    @_current
    def _release_objects(self) -> None:
        for obj in [*self._buffers.values(), self._vao, self._corners, self._program,
                    self._point_vao, self._point_program, self._stats,
                    self._preprocess, *(self._target or ())]:
            try:
                obj.release()
            except Exception:
                pass
        self._buffers = {}
        self._target = None

    def _check(self, what: str):
        try:
            error = self.ctx.error
        except Exception as exc:
            raise GLContextLost(f"OpenGL context lost during {what}: {exc}") from exc
        if error == "GL_CONTEXT_LOST":
            raise GLContextLost(f"OpenGL context lost during {what}")

    def _reserve(self, name: str, size: int):
        """The storage buffer ``name``, grown to at least ``size`` bytes (never shrunk)."""
        buf = self._buffers.get(name)
        size = max(size, 16)
        if buf is None or buf.size < size:
            if buf is not None:
                buf.release()
            buf = self.ctx.buffer(reserve=size, dynamic=True)
            self._buffers[name] = buf
        return buf

    def _buffer(self, name: str, data: bytes):
        buf = self._reserve(name, len(data))
        if data:
            buf.write(data)
        return buf

    # -- per pose -------------------------------------------------------------------------
    @_current
    def upload(self, gaussians: Gaussians) -> None:
        """Send the Gaussians (world space) to the GPU; the next ``sort_for`` sorts again."""
        params, colors, sh_count = _pack(gaussians)
        try:
            self._buffer("params", params.tobytes())
            self._buffer("colors", colors.tobytes())
            self._reserve("splats", len(gaussians) * 48)  # 3 vec4 per Gaussian
        except Exception as exc:
            raise GLContextLost(f"cannot upload Gaussians: {exc}") from exc
        self._gaussians = gaussians
        self._means = gaussians.means
        self._count = len(gaussians)
        self._sh_count = sh_count
        self._order_valid = False
        self._sort_key = None

    @_current
    def sort_for(self, position, forward) -> bool:
        """Depth-sort the uploaded Gaussians for a view from ``position`` (world metres)
        along ``forward``. Returns False when the last order was kept (view within the
        tolerances, Gaussians unchanged)."""
        position = np.asarray(position, dtype=np.float64)
        forward = np.asarray(forward, dtype=np.float64)
        forward = forward / np.linalg.norm(forward)
        if self._sort_key is not None and self._order_valid:
            last_position, last_forward = self._sort_key
            moved = np.linalg.norm(position - last_position)
            turned = math.acos(float(np.clip(np.dot(forward, last_forward), -1.0, 1.0)))
            if moved <= self.position_tolerance_m and turned <= self.angle_tolerance_rad:
                return False
        depths = view_depths(self._means, position, forward)
        back_to_front = front_to_back(depths, self.key_bits)[::-1]
        try:
            self._buffer("order", np.ascontiguousarray(back_to_front).tobytes())
        except Exception as exc:
            raise GLContextLost(f"cannot upload the draw order: {exc}") from exc
        self._sort_key = (position, forward)
        self._order_valid = True
        self.sort_count += 1
        return True

    # -- per view -------------------------------------------------------------------------
    @_current
    def draw(self, camera: Camera, framebuffer=None, background=None, viewport=None,
             clear: bool = True) -> None:
        """Splat into ``framebuffer`` (default: the context's screen) for ``camera``.

        ``viewport`` (x, y, w, h) in GL window coordinates defaults to the camera's full size
        at the origin; ``background`` (RGB or premultiplied RGBA) is cleared to first when
        ``clear`` (else transparent black)."""
        if camera.width == 0 or camera.height == 0:
            return  # a minimised window: nothing to draw
        if self._count and not self._order_valid:
            self.sort_for(camera.position, camera_forward(camera))
        fbo = framebuffer if framebuffer is not None else self.ctx.screen
        viewport = tuple(viewport) if viewport is not None else (0, 0, camera.width,
                                                                 camera.height)
        try:
            fbo.use()
            self.ctx.viewport = viewport
            self.ctx.scissor = viewport
            if clear:
                bg = np.zeros(4) if background is None else np.asarray(background, float)
                bg = np.append(bg, 1.0) if bg.shape == (3,) else bg
                fbo.clear(*map(float, bg), viewport=viewport)
            if self._count:
                self._project(camera)
                self._splat(camera, viewport)
            self.ctx.scissor = None
        except GLContextLost:
            raise
        except Exception as exc:
            raise GLContextLost(f"drawing failed: {exc}") from exc
        self._check("draw")

    def _project(self, camera: Camera) -> None:
        cs = self._preprocess
        cv = camera.cv_from_world
        cs["count"].value = self._count
        cs["sh_count"].value = self._sh_count
        cs["cv_rotation"].write(np.ascontiguousarray(cv[:3, :3].T, dtype="f4").tobytes())
        cs["cv_translation"].value = tuple(map(float, cv[:3, 3]))
        cs["intrinsics"].value = (camera.fx, camera.fy, camera.cx, camera.cy)
        cs["image_size"].value = (float(camera.width), float(camera.height))
        cs["near_far"].value = (camera.near, camera.far)
        w, h = camera.width, camera.height
        margin_x, margin_y = FRUSTUM_MARGIN * 0.5 * w / camera.fx, FRUSTUM_MARGIN * 0.5 * h / camera.fy
        cs["limits"].value = ((w - camera.cx) / camera.fx + margin_x, camera.cx / camera.fx + margin_x,
                              (h - camera.cy) / camera.fy + margin_y, camera.cy / camera.fy + margin_y)
        if "camera_position" in cs:
            cs["camera_position"].value = tuple(map(float, camera.position))
        self._buffers["params"].bind_to_storage_buffer(0)
        self._buffers["colors"].bind_to_storage_buffer(1)
        self._buffers["splats"].bind_to_storage_buffer(2)
        self._stats.write(b"\0\0\0\0")
        self._stats.bind_to_storage_buffer(4)
        cs.run(group_x=(self._count + WORKGROUP - 1) // WORKGROUP)
        self.ctx.memory_barrier()

    def _splat(self, camera: Camera, viewport) -> None:
        import moderngl

        max_diameter = float(np.frombuffer(self._stats.read(), dtype=np.float32)[0])
        use_points = self.prefer_points and max_diameter <= self.max_point_size
        self.last_primitive = "points" if use_points else "quads"
        prog = self._point_program if use_points else self._program
        prog["image_size"].value = (float(camera.width), float(camera.height))
        prog["viewport"].value = tuple(map(float, viewport))
        self._buffers["splats"].bind_to_storage_buffer(2)
        self._buffers["order"].bind_to_storage_buffer(3)
        self.ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
        self.ctx.blend_equation = moderngl.FUNC_ADD
        if use_points:
            guard = math.ceil(max_diameter / 2) + 1
            x, y, w, h = viewport
            prog["guard"].value = float(guard)
            self.ctx.viewport = (x - guard, y - guard, w + 2 * guard, h + 2 * guard)
            self.ctx.enable(moderngl.PROGRAM_POINT_SIZE)
            self._point_vao.render(moderngl.POINTS, vertices=self._count)
        else:
            self._vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=self._count)

    # -- offscreen ------------------------------------------------------------------------
    def _float_target(self, width: int, height: int):
        if self._target is None or self._target[0].size != (width, height):
            for obj in self._target or ():
                obj.release()
            texture = self.ctx.texture((width, height), 4, dtype="f4")
            self._target = (texture, self.ctx.framebuffer(color_attachments=[texture]))
        return self._target[1]

    @_current
    def read(self, camera: Camera, framebuffer) -> np.ndarray:
        """(H, W, 4) float32 of ``framebuffer``'s camera-sized area, top row first."""
        raw = framebuffer.read(viewport=(0, 0, camera.width, camera.height), components=4,
                               dtype="f4")
        return np.frombuffer(raw, dtype=np.float32).reshape(camera.height, camera.width, 4)[::-1]

    @_current
    def render(self, gaussians: Gaussians, camera: Camera, background=None) -> np.ndarray:
        """Upload, sort and draw into an RGBA32F target: (H, W, 4) float32 premultiplied RGBA,
        the reference renderer's signature."""
        if camera.width == 0 or camera.height == 0:
            return np.zeros((camera.height, camera.width, 4), dtype=np.float32)
        self.upload(gaussians)
        self.sort_for(camera.position, camera_forward(camera))
        fbo = self._float_target(camera.width, camera.height)
        self.draw(camera, fbo, background)
        return self.read(camera, fbo).copy()

    @_current
    def render_stereo(self, gaussians: Gaussians, cameras, background=None) -> list[np.ndarray]:
        """One upload and ONE sort (from the cameras' mean position along their mean view
        direction), then a draw per camera: a list of (H, W, 4) float32 images."""
        self.upload(gaussians)
        position = np.mean([c.position for c in cameras], axis=0)
        forward = np.mean([camera_forward(c) for c in cameras], axis=0)
        self.sort_for(position, forward)
        images = []
        for camera in cameras:
            if camera.width == 0 or camera.height == 0:
                images.append(np.zeros((camera.height, camera.width, 4), dtype=np.float32))
                continue
            fbo = self._float_target(camera.width, camera.height)
            self.draw(camera, fbo, background)
            images.append(self.read(camera, fbo).copy())
        return images


def create_headless_context():
    """A standalone OpenGL 4.3+ context through EGL (no display needed; Mesa llvmpipe without
    a GPU). Raises ``RenderError`` with the reason when there is none."""
    try:
        import moderngl
    except ImportError as exc:
        raise RenderError(f"moderngl is not installed: {exc}") from exc
    try:
        return moderngl.create_standalone_context(require=GL_VERSION, backend="egl")
    except Exception as exc:
        raise RenderError(f"no headless OpenGL {GL_VERSION / 100:.1f} context through EGL "
                          f"(install libegl1 and libgl1-mesa-dri): {exc}") from exc
