"""OpenGL backend (moderngl, OpenGL 4.3): standard 3D Gaussian splatting in shaders.

It matches ``render.reference`` (same culling, EWA projection, 1/255 footprints, SH colours).
Two pipelines draw the same splats:

- "tiles" (``render.gl_tiles``, the default on a software GL such as Mesa llvmpipe):
  compute shaders bin the depth-sorted splats into 8 x 8 pixel tiles and composite each tile
  front to back with the exact 3DGS early stop (no difference from the reference but float32
  rounding), then blend the image over the target;
- "raster" (the default on a GPU): one point (or an instanced quad along the ellipse's axes
  when a footprint exceeds the largest point size) per Gaussian, blended back to front,
  premultiplied (dst = src + (1 - src_alpha) dst); it cannot stop a pixel early, its one
  intended difference from the reference.

Per frame:

1. ``upload(gaussians)``: the attributes go to data textures (Gaussians that are not finite
   or have non-positive scales are given zero opacity, so they draw nothing); or, for
   avatars, ``upload_avatars(skinned)`` once and ``pose_avatars(poses)`` per frame pose them
   on the GPU (``render.gl_pose``); ``show(content)`` does whichever of these the content
   (``Gaussians`` or ``render.skinned.PosedAvatars``) needs, only when it changed.
2. ``sort_for(position, forward)``: a CPU depth sort along ``forward`` (``render.sort``,
   32-bit radix), skipped when neither the Gaussians nor the view moved more than the
   tolerances. One sort serves both eyes of a stereo pair: sort from the eyes' midpoint.
3. ``draw(camera, framebuffer)``: a compute pass projects every Gaussian for this camera
   (3D covariance R S S^T R^T, EWA Jacobian with clamped x/z, y/z, + 0.3 px^2 dilation, conic,
   1/255 box, colour from RGB or SH degree 0..3 toward this camera), then the pipeline
   splats them.

API for targets (the desktop window, the OpenXR swapchain, offscreen)::

    renderer = GLSplatRenderer(ctx)              # ctx: moderngl.Context (None: headless EGL)
    renderer.upload(gaussians)                   # once per pose
    #   or: renderer.upload_avatars([avatar.skinned, ...]) once (render.skinned's contract),
    #       renderer.pose_avatars([avatar.skin_pose(codes, world_from_avatar), ...])
    #   or: renderer.show(gaussians | posed_avatars)   # uploads / poses what changed
    renderer.sort_for(position, forward)         # world metres, unit view direction
    renderer.draw(camera, framebuffer, background=None)   # per eye / view; clears unless
                                                           # clear=False, viewport = camera size
    image = renderer.render(gaussians, camera)   # all of it into an RGBA32F target, (H, W, 4)
    image = renderer.render(None, camera)        # what is on the GPU (posed avatars)
    left, right = renderer.render_stereo(gaussians, [left_camera, right_camera])

``framebuffer`` is any ``moderngl.Framebuffer`` (``ctx.screen`` for a window, one wrapping an
XR swapchain image); ``viewport=(x, y, w, h)`` draws into part of it (side-by-side stereo).
Colours are display (sRGB-encoded) values blended as they are, like 3DGS: write them to an
ordinary RGBA8 target for display (no GL_FRAMEBUFFER_SRGB conversion); RGBA32F for tests.

Bad input: zero Gaussians or a 0x0 camera draw nothing (a background clear at most);
non-finite Gaussians are dropped; a pair list too large for this GL's textures falls back to
the raster path for that draw; a lost or released context raises ``GLContextLost`` and
``renderer.rebind(new_ctx)`` rebuilds everything from the last uploaded Gaussians (or the
avatars and their last poses).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from render.errors import GLContextLost, RenderError
from render.camera import Camera
from render.gaussians import Gaussians
from render.gl_common import set_uniforms
from render.gl_pose import GLAvatarPoser
from render.skinned import PosedAvatars
from render.gl_tiles import (BASES_SHADER, COMPOSITE_FRAGMENT_SHADER, COMPOSITE_VERTEX_SHADER,
                             EMIT_GROUP, EMIT_SHADER, EMPTY_RECT, GROUP, LIST_ROW, LOG2_E,
                             LOOP_BUDGET, RASTER_RESUME_SHADER, RASTER_SHADER, ROW, SCAN_SHADER,
                             TEXEL_GLSL, TILE_H, TILE_W, TOTALS_SHADER, chunking, raster_shader,
                             rows_for, tile_grid)
from render.reference import (ALPHA_MAX, ALPHA_MIN, DILATION_PX2, FRUSTUM_MARGIN, SH_C0, SH_C1,
                              SH_C2, SH_C3)
from render.sort import GLDepthSort, front_to_back, view_depths

GL_VERSION = 430
WORKGROUP = 128
PARAMS_PER_GAUSSIAN = 12  # 3 vec4: mean xyz + opacity, quat wxyz, scale xyz + unused
PIPELINES = ("auto", "tiles", "raster")
SORTS = ("cpu", "gpu")


def _fmt(values) -> str:
    return ", ".join(f"{v:.17g}" for v in values)


PREPROCESS_SHADER = f"""
// Defined by preprocess_shader: TILES (1: the tile rasteriser, 0: the raster path) and
// SH_COUNT (0: plain RGB, else 1, 4, 9 or 16 coefficients per channel). Compile-time, as
// llvmpipe runs both sides of every branch, even a uniform one.
layout(local_size_x = {WORKGROUP}) in;
// Inputs are textures (texelFetch is cheap on llvmpipe, buffer loads are not): params in 3
// planes of param_rows rows (mean + opacity, quaternion wxyz, scale + unused), colours as
// sh_slots texels per Gaussian.
layout(binding = 4) uniform sampler2D params;
layout(binding = 5) uniform sampler2D colors;
#if TILES
layout(binding = 6) uniform usampler2D rank;                  // depth rank of each Gaussian
layout(rgba32ui, binding = 2) writeonly uniform uimage2D splat_image;   // 2 texels a splat
layout(rg32ui, binding = 3) writeonly uniform uimage2D rect_image;      // its tile rectangle
layout(std430, binding = 6) buffer ChunkCounts {{ uint chunk_counts[]; }};
uniform ivec2 tile_size;
uniform ivec2 tiles;           // tiles across, down
uniform int chunk_size;        // depth ranks per binning chunk
#else
layout(std430, binding = 2) writeonly buffer Splats {{ vec4 splats[]; }};
layout(std430, binding = 4) buffer Stats {{ uint max_diameter_bits; }};  // for the point path
#endif
uniform int count;
uniform int param_rows;
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
{TEXEL_GLSL}
vec4 param(uint i, int plane) {{
    return texelFetch(params, ivec2(int(i % {ROW}u), int(i / {ROW}u) + plane * param_rows), 0);
}}

vec3 sh_coeff(uint i, int k) {{
    return texelFetch(colors, texel(i, SH_COUNT, k), 0).rgb;
}}

vec3 view_color(uint i, vec3 mean) {{
#if SH_COUNT == 0
    return texelFetch(colors, texel(i, 1, 0), 0).rgb;
#else
    vec3 dir = normalize(mean - camera_position);
    float x = dir.x, y = dir.y, z = dir.z;
    vec3 c = C0 * sh_coeff(i, 0);
#if SH_COUNT > 1
    c += -C1 * y * sh_coeff(i, 1) + C1 * z * sh_coeff(i, 2) - C1 * x * sh_coeff(i, 3);
#endif
#if SH_COUNT > 4
    float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    c += C2[0] * xy * sh_coeff(i, 4) + C2[1] * yz * sh_coeff(i, 5)
       + C2[2] * (2.0 * zz - xx - yy) * sh_coeff(i, 6) + C2[3] * xz * sh_coeff(i, 7)
       + C2[4] * (xx - yy) * sh_coeff(i, 8);
#endif
#if SH_COUNT > 9
    c += C3[0] * y * (3.0 * xx - yy) * sh_coeff(i, 9) + C3[1] * xy * z * sh_coeff(i, 10)
       + C3[2] * y * (4.0 * zz - xx - yy) * sh_coeff(i, 11)
       + C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh_coeff(i, 12)
       + C3[4] * x * (4.0 * zz - xx - yy) * sh_coeff(i, 13)
       + C3[5] * z * (xx - yy) * sh_coeff(i, 14) + C3[6] * x * (xx - 3.0 * yy) * sh_coeff(i, 15);
#endif
    return max(c + 0.5, vec3(0.0));
#endif
}}

#if TILES
// The tile rectangle project() leaves for main() to store, once: empty unless it is drawn.
uvec2 rect_out = uvec2({EMPTY_RECT[0]}u, {EMPTY_RECT[1]}u);
#endif

void project(uint i) {{
    vec4 mean_opacity = param(i, 0);
    vec3 mean = mean_opacity.xyz;
    float opacity = min(mean_opacity.w, 1.0);
#if TILES
    // Splats are stored by Gaussian index (an avatar's neighbouring Gaussians are near in
    // memory, so a tile's splats share cache lines: stored by depth rank the rasteriser took
    // twice as long on llvmpipe); the binning walks them by depth rank. A culled splat keeps
    // the empty tile rectangle (it is in no tile's list).
    uint slot = i;
    uint depth_rank = texelFetch(rank, texel(i, 1, 0), 0).x;
#else
    uint slot = i;
    splats[3u * slot + 2u] = vec4(0.0);  // invalid until proven drawable
#endif
    vec3 t = cv_rotation * mean + cv_translation;
    if (!(t.z > near_far.x && t.z < near_far.y) || !(opacity >= {ALPHA_MIN!r})) return;

    vec4 q = normalize(param(i, 1));
    vec3 scale = param(i, 2).xyz;
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
#if TILES
    // Pixels whose centres (i + 0.5) lie in the 1/255 ellipse's box (a hair wider: pixels
    // outside the ellipse are rejected by their alpha anyway), then the tiles holding them.
    vec2 lo = clamp(ceil(mean2d - radius - 0.51), vec2(0.0), image_size - 1.0);
    vec2 hi = clamp(floor(mean2d + radius - 0.49), vec2(0.0), image_size - 1.0);
    if (any(greaterThan(lo, hi))) return;
    uvec2 first = uvec2(lo) / uvec2(tile_size);
    uvec2 last = uvec2(hi) / uvec2(tile_size);
    rect_out = uvec2(first.x | (last.x << 16), first.y | (last.y << 16));
    // The rasteriser's log2 weight coefficients (see render.gl_tiles): opacity *
    // exp(-(A dx^2 + 2 B dx dy + C dy^2) / 2) = exp2(qa dx^2 + qb dx dy + qc dy^2) * o,
    // exp2(2 qc), the step of its row-to-row ratio, the colour as half floats and the
    // opacity as a 16-bit fraction: 2 texels, 32 bytes (half a cache line, not 1.5).
    float qa = {-0.5 * LOG2_E!r} * c / det, qb = {LOG2_E!r} * b / det;
    float qc = {-0.5 * LOG2_E!r} * a / det;
    vec3 rgb = view_color(i, mean);
    imageStore(splat_image, texel(slot, 2, 0), floatBitsToUint(vec4(mean2d, qa, qb)));
    imageStore(splat_image, texel(slot, 2, 1),
               uvec4(floatBitsToUint(qc), floatBitsToUint(exp2(2.0 * qc)),
                     packHalf2x16(rgb.rg), (packHalf2x16(vec2(rgb.b, 0.0)) & 0xFFFFu)
                                           | (packUnorm2x16(vec2(0.0, opacity)) & 0xFFFF0000u)));
    uint chunk = depth_rank / uint(chunk_size) * uint(tiles.x * tiles.y);
    for (uint ty = first.y; ty <= last.y; ++ty) {{
        for (uint tx = first.x; tx <= last.x; ++tx) {{
            atomicAdd(chunk_counts[chunk + ty * uint(tiles.x) + tx], 1u);
        }}
    }}
#else
    // The quad: the 1/255 ellipse's own axes (eigenvectors of the 2D covariance), so thin
    // Gaussians cover few pixels (the fragment shader decides pixel by pixel anyway).
    float mid = 0.5 * (a + c);
    float major = mid + sqrt(max(mid * mid - det, 0.0));
    float minor = det / major;
    vec2 axis = abs(b) > 1e-12 * major ? normalize(vec2(b, major - a))
                                       : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    // (+0.05 px: pixel centres on the contour itself stay inside despite float rounding)
    splats[3u * slot] = vec4(mean2d, axis * (sqrt(level * major) + 0.05));
    splats[3u * slot + 1u] = vec4(c / det, -b / det, a / det, opacity);
    splats[3u * slot + 2u] = vec4(view_color(i, mean), sqrt(level * minor) + 0.05);
    // Positive floats order like their bit patterns.
    atomicMax(max_diameter_bits, floatBitsToUint(2.0 * sqrt(level * major) + 1.2));
#endif
}}

void main() {{
    uint i = gl_GlobalInvocationID.x;
    if (i >= uint(count)) return;
    project(i);
#if TILES
    imageStore(rect_image, texel(i, 1, 0), uvec4(rect_out, 0u, 0u));
#endif
}}
"""


def preprocess_shader(tiles: bool, sh_count: int) -> str:
    """The projection compute shader for the tile rasteriser or the raster path and colours
    as RGB (``sh_count`` 0) or spherical harmonics (1, 4, 9, 16 coefficients)."""
    return (f"#version 430\n#define TILES {int(tiles)}\n#define SH_COUNT {int(sh_count)}\n"
            + PREPROCESS_SHADER)


VERTEX_SHADER = """
#version 430
layout(std430, binding = 2) readonly buffer Splats { vec4 splats[]; };
layout(std430, binding = 3) readonly buffer Order { uint order[]; };
uniform vec2 image_size;
uniform int count;
in vec2 corner;
flat out vec4 v_conic_opacity;
flat out vec3 v_color;
flat out vec2 v_mean;
void main() {
    uint i = order[count - 1 - gl_InstanceID];  // back to front
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
uniform int count;
flat out vec4 v_conic_opacity;
flat out vec3 v_color;
flat out vec2 v_mean;
void main() {
    uint i = order[count - 1 - gl_VertexID];  // back to front
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
    """(N, 12) params (mean + opacity, quaternion, scale + 0), (N, K, 3) colours and the SH
    count (0 for RGB); Gaussians that are not finite or have non-positive scales get
    opacity 0 (drawn as nothing)."""
    n = len(gaussians)
    params = np.zeros((n, PARAMS_PER_GAUSSIAN), dtype=np.float32)
    params[:, 0:3] = gaussians.means
    params[:, 3] = gaussians.opacities
    params[:, 4:8] = gaussians.quats
    params[:, 8:11] = gaussians.scales
    colors = gaussians.colors
    sh_count = 0 if colors.ndim == 2 else colors.shape[1]
    # A whole-array check first (0.2 ms for 100k); the per-Gaussian mask only when it fails.
    quat_norm2 = np.einsum("ij,ij->i", gaussians.quats, gaussians.quats)
    all_good = (n == 0 or (np.isfinite(params).all() and np.isfinite(colors).all()
                           and (params[:, 8:11] > 0).all() and (params[:, 3] > 0).all()
                           and quat_norm2.min() > 1e-16))
    if not all_good:
        bad = ~gaussians.finite_mask()
        params[bad] = 0.0
        params[bad, 4] = 1.0   # a unit quaternion and scales: harmless, and opacity 0
        params[bad, 8:11] = 1.0
        colors = np.where(bad.reshape((-1,) + (1,) * (colors.ndim - 1)), 0.0, colors)
    return params, np.asarray(colors, dtype=np.float32).reshape(n, max(sh_count, 1), 3), sh_count


def planar_params(params: np.ndarray) -> np.ndarray:
    """(N, 12) params as the params texture's pixels: 3 planes of rows_for(N) rows of ROW
    RGBA texels (mean + opacity, quaternion, scale), zero-padded."""
    n = len(params)
    rows = rows_for(n)
    out = np.zeros((3, rows * ROW, 4), dtype=np.float32)
    for plane in range(3):
        out[plane, :n] = params[:, 4 * plane:4 * plane + 4]
    return out


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
                 prefer_points: bool = True, pipeline: str = "auto", sort: str = "cpu",
                 display_stop: float | None = None):
        """``ctx``: a moderngl context (OpenGL >= 4.3), or None for a headless EGL one.

        The tolerances say how far the view may move before ``sort_for`` sorts again
        (0: whenever it moves at all); ``key_bits`` 32 or 16 (see ``render.sort``);
        ``pipeline``: "tiles" (compute-shader tile rasteriser, front to back with the 3DGS
        early stop), "raster" (GL primitives blended back to front) or "auto" (tiles on a
        software renderer such as llvmpipe, raster on a GPU); ``prefer_points`` (raster
        path): one point per Gaussian when every footprint fits the largest point size (the
        same pixels and maths, cheaper on llvmpipe), else instanced quads; ``sort``: "cpu"
        (the posed means are read back and sorted by ``render.sort.front_to_back``) or "gpu"
        (``render.sort.GLDepthSort``: a radix sort in compute shaders on the float32 depths,
        nothing read back; slower than the CPU on llvmpipe, see docs/rendering.md);
        ``display_stop`` (tile path): None for 3DGS's early stop (the reference's pixels), or
        a transmittance below which a pixel is finished after adding the splat that took it
        there (``render.gl_tiles.DISPLAY_STOP`` for pictures shown on 8-bit displays).
        """
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, not {pipeline!r}")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, not {sort!r}")
        self.sort = sort
        self.display_stop = display_stop
        self.requested_pipeline = pipeline
        self.position_tolerance_m = position_tolerance_m
        self.angle_tolerance_rad = angle_tolerance_rad
        self.key_bits = key_bits
        # The depth order sorted for one pose is kept for this many more poses of the same
        # avatars while the view stays within the tolerances (0: each pose sorts again).
        # The call window keeps it for 1 (sorts every other frame): in one frame at 30 Hz
        # codes the Gaussians barely move against each other.
        self.pose_order_reuse = 0
        self._order_age = 0  # poses drawn with the current order since it was sorted
        self.prefer_points = prefer_points
        self.last_primitive = None  # "tiles", "points" or "quads": what the last draw used
        self.last_pair_count = 0  # tile path: (tile, splat) pairs of the last draw
        self.last_raster_passes = 0  # tile path: rasteriser passes (1 unless a list is long)
        # Benchmarks: when a dict, the tile path finishes GL after each stage and adds its
        # wall and process CPU milliseconds there ("raster", "raster_cpu", ...); None: no
        # stalls.
        self.stage_ms: dict | None = None
        self.owns_context = ctx is None
        self._gaussians: Gaussians | None = None
        self._avatars = None  # render.gl_pose.GLAvatarPoser while avatars are posed here
        self._shown_skinned = self._shown_poses = None  # the PosedAvatars parts last shown
        self._nothing = Gaussians.empty()
        self._bind(ctx if ctx is not None else create_headless_context())
        self.sort_count = 0  # how many sorts ran (skips do not count)

    # -- context --------------------------------------------------------------------------
    def _bind(self, ctx) -> None:
        if ctx.version_code < GL_VERSION:
            raise RenderError(f"OpenGL {GL_VERSION // 100}.{GL_VERSION % 100 // 10} is needed,"
                              f" this context offers {ctx.version_code}")
        self.ctx = ctx
        self.pipeline = self.requested_pipeline
        if self.pipeline == "auto":
            self.pipeline = "tiles" if is_software_renderer(ctx) else "raster"
        self._build()

    @_current
    def _build(self) -> None:
        ctx = self.ctx
        self._buffers: dict[str, object] = {}
        self._textures: dict[str, object] = {}
        self._target = None
        try:
            self._projections = {}  # (tiles, sh_count) -> compute shader, made when needed
            self.projection(tiles=self.pipeline == "tiles", sh_count=0)
            self._program = ctx.program(vertex_shader=VERTEX_SHADER,
                                        fragment_shader=FRAGMENT_SHADER)
            self._point_program = ctx.program(vertex_shader=POINT_VERTEX_SHADER,
                                              fragment_shader=FRAGMENT_SHADER)
            self._point_vao = ctx.vertex_array(self._point_program, [])
            self._stats = ctx.buffer(reserve=4)
            self.max_point_size = float(ctx.info.get("GL_POINT_SIZE_RANGE", (1.0, 1.0))[1])
            self.max_texture_size = int(ctx.info.get("GL_MAX_TEXTURE_SIZE", 16384))
            corners = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")
            self._corners = ctx.buffer(corners.tobytes())
            self._vao = ctx.vertex_array(self._program, [(self._corners, "2f", "corner")])
            self._totals = ctx.compute_shader(TOTALS_SHADER)
            self._scan = ctx.compute_shader(SCAN_SHADER)
            self._bases = ctx.compute_shader(BASES_SHADER)
            self._emit = ctx.compute_shader(EMIT_SHADER)
            self._raster = ctx.compute_shader(
                RASTER_SHADER if self.display_stop is None
                else raster_shader(display_stop=self.display_stop))
            self._raster_resume = None  # for tile lists over LOOP_BUDGET: made when needed
            self._composite = ctx.program(vertex_shader=COMPOSITE_VERTEX_SHADER,
                                          fragment_shader=COMPOSITE_FRAGMENT_SHADER)
            self._composite_vao = ctx.vertex_array(self._composite, [])
            self._total = ctx.buffer(reserve=8)  # (tile, splat) pairs, the longest tile list
            self._gpu_sort = GLDepthSort(ctx) if self.sort == "gpu" else None
        except Exception as exc:  # moderngl raises its own Error, or others on a dead context
            raise GLContextLost(f"cannot build the splatting shaders: {exc}") from exc
        self._count = 0
        self._sh_count = 0
        self._means = None
        self._order_valid = False
        self._sort_key = None

    def rebind(self, ctx=None) -> None:
        """Rebuild everything on ``ctx`` (None: a new headless context) after a lost context,
        re-uploading the last Gaussians (or avatars and their last poses)."""
        if self.owns_context:
            try:
                self.ctx.release()
            except Exception:  # already gone
                pass
        self.owns_context = ctx is None
        self._bind(ctx if ctx is not None else create_headless_context())
        if self._avatars is not None:
            self._avatars.rebuild()
        elif self._gaussians is not None:
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
        if self._avatars is not None:
            self._avatars.release()
        for obj in [*self._buffers.values(), *self._textures.values(), self._vao,
                    self._corners, self._program, self._point_vao, self._point_program,
                    self._stats, *self._projections.values(), self._totals,
                    self._scan, self._bases, self._emit, self._raster,
                    *([self._raster_resume] if self._raster_resume is not None else []),
                    self._composite_vao,
                    self._composite, self._total, *(self._target or ()),
                    *([self._gpu_sort] if self._gpu_sort is not None else [])]:
            try:
                obj.release()
            except Exception:
                pass
        self._buffers = {}
        self._textures = {}
        self._projections = {}
        self._target = None

    def projection(self, tiles: bool, sh_count: int):
        """The projection compute shader for a pipeline and colour form (compiled once)."""
        key = (bool(tiles), int(sh_count))
        shader = self._projections.get(key)
        if shader is None:
            try:
                shader = self.ctx.compute_shader(preprocess_shader(*key))
            except Exception as exc:
                raise GLContextLost(f"cannot build the projection shader: {exc}") from exc
            self._projections[key] = shader
        return shader

    def _check(self, what: str):
        try:
            error = self.ctx.error
        except Exception as exc:
            raise GLContextLost(f"OpenGL context lost during {what}: {exc}") from exc
        if error == "GL_CONTEXT_LOST":
            raise GLContextLost(f"OpenGL context lost during {what}")

    def reserve(self, name: str, size: int):
        """The storage buffer ``name``, grown to at least ``size`` bytes (never shrunk)."""
        buf = self._buffers.get(name)
        size = max(size, 16)
        if buf is None or buf.size < size:
            if buf is not None:
                buf.release()
            buf = self.ctx.buffer(reserve=size, dynamic=True)
            self._buffers[name] = buf
        return buf

    def texture(self, name: str):
        """The data texture ``name`` made by ``data_texture`` (KeyError if there is none)."""
        return self._textures[name]

    def release_textures(self, prefix: str) -> None:
        """Release the data textures whose names start with ``prefix``."""
        for name in [n for n in self._textures if n.startswith(prefix)]:
            try:
                self._textures.pop(name).release()
            except Exception:  # already gone with the context
                pass

    def _buffer(self, name: str, data: bytes):
        buf = self.reserve(name, len(data))
        if data:
            buf.write(data)
        return buf

    def data_texture(self, name: str, width: int, height: int, components: int = 4,
                     dtype: str = "f4"):
        """The data texture ``name`` (nearest filtering, read with texelFetch), at least
        ``height`` rows of exactly ``width`` texels (grown, never shrunk in height)."""
        import moderngl

        tex = self._textures.get(name)
        if (tex is None or tex.width != width or tex.height < height
                or tex.components != components or tex.dtype != dtype):
            if tex is not None:
                tex.release()
            if width > self.max_texture_size or height > self.max_texture_size:
                raise RenderError(f"{name}: a {width} x {height} texture exceeds this GL's "
                                  f"limit of {self.max_texture_size}")
            tex = self.ctx.texture((width, max(height, 1)), components, dtype=dtype)
            tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
            self._textures[name] = tex
        return tex

    # -- per pose -------------------------------------------------------------------------
    @_current
    def upload(self, gaussians: Gaussians) -> None:
        """Send the Gaussians (world space) to the GPU; the next ``sort_for`` sorts again."""
        if self._avatars is not None:  # plain Gaussians from now on
            self._avatars.release()
            self._avatars = None
        params, colors, sh_count = _pack(gaussians)
        n = len(gaussians)
        rows = rows_for(n)
        slots = max(sh_count, 1)
        padded = np.zeros((rows * ROW, slots, 4), dtype=np.float32)
        padded[:n, :, :3] = colors
        try:
            self.data_texture("params", ROW, 3 * rows).write(
                planar_params(params).tobytes(), viewport=(0, 0, ROW, 3 * rows))
            self.data_texture("colors", ROW * slots, rows).write(
                padded.tobytes(), viewport=(0, 0, ROW * slots, rows))
            self.reserve("splats", n * 48)  # the raster path's projected splats
        except RenderError:
            raise
        except Exception as exc:
            raise GLContextLost(f"cannot upload Gaussians: {exc}") from exc
        self._gaussians = gaussians
        self.set_contents(n, sh_count, gaussians.means)

    def set_contents(self, count: int, sh_count: int, means, reposed: bool = False) -> None:
        """New Gaussians are in the params and colour textures (``means``: (N, 3) on the CPU,
        or None to read them back from the GPU when a sort needs them). ``reposed``: the
        same Gaussians in a new pose (their last order may be kept: ``pose_order_reuse``)."""
        keep = (reposed and count == self._count and self._order_valid
                and self._order_age < self.pose_order_reuse)
        self._count = count
        self._sh_count = sh_count
        self._means = means
        self._param_rows = rows_for(count)
        if keep:
            self._order_age += 1
        else:
            self._order_valid = False
            self._sort_key = None

    def means(self) -> np.ndarray:
        """(N, 3) float32 world-space means of the Gaussians on the GPU."""
        if self._means is None:
            self._means = self._read_means()
        return self._means

    @_current
    def _read_means(self) -> np.ndarray:
        tex = self._textures["params"]
        fbo = self.ctx.framebuffer(color_attachments=[tex])
        try:
            raw = fbo.read(viewport=(0, 0, ROW, self._param_rows), components=4, dtype="f4")
        finally:
            fbo.release()
        return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4)[:self._count, :3].copy()

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
        if self.sort == "gpu":
            self._sort_on_gpu(position, forward)
        else:
            self._sort_on_cpu(position, forward)
        self._sort_key = (position, forward)
        self._order_valid = True
        self._order_age = 0
        self.sort_count += 1
        return True

    def _sort_on_gpu(self, position, forward) -> None:
        if self._count == 0:
            return
        rows = rows_for(self._count)
        try:
            self._gpu_sort.sort(self._textures["params"], self._count, ROW, position, forward)
            self._gpu_sort.write_textures(self._count, ROW,
                                          self.data_texture("order", ROW, rows, 1, "u4"),
                                          self.data_texture("rank", ROW, rows, 1, "u4"))
            order = self.reserve("order", 4 * self._count)
            self.ctx.copy_buffer(order, self._gpu_sort.order_buffer, size=4 * self._count)
        except RenderError:
            raise
        except Exception as exc:
            raise GLContextLost(f"cannot sort on the GPU: {exc}") from exc

    def _sort_on_cpu(self, position, forward) -> None:
        depths = view_depths(self.means(), position, forward)
        order = front_to_back(depths, self.key_bits)
        rows = rows_for(len(order))
        rank = np.zeros(rows * ROW, dtype=np.uint32)
        rank[order] = np.arange(len(order), dtype=np.uint32)
        padded_order = np.zeros(rows * ROW, dtype=np.uint32)
        padded_order[:len(order)] = order
        try:
            self._buffer("order", order.tobytes())
            for name, values in (("order", padded_order), ("rank", rank)):
                self.data_texture(name, ROW, rows, 1, "u4").write(
                    values.tobytes(), viewport=(0, 0, ROW, rows))
        except RenderError:
            raise
        except Exception as exc:
            raise GLContextLost(f"cannot upload the draw order: {exc}") from exc

    # -- avatars posed on the GPU ---------------------------------------------------------
    def upload_avatars(self, bindings) -> None:
        """Keep avatars on the GPU (``render.skinned.SkinnedGaussians`` each, uploaded once);
        ``pose_avatars`` then poses them in a compute shader, so per frame only bone
        transforms and blendshape weights cross the bus. ``upload(gaussians)`` ends it."""
        if self._avatars is not None:
            self._avatars.release()
        self._avatars = None
        self._avatars = GLAvatarPoser(self, bindings)

    def pose_avatars(self, poses) -> None:
        """Pose the uploaded avatars (``render.skinned.SkinPose`` each, in the order of
        ``upload_avatars``) into the renderer's Gaussians; the next ``sort_for`` sorts."""
        if self._avatars is None:
            raise RenderError("pose_avatars needs upload_avatars first")
        self._avatars.pose(poses)

    def show(self, content) -> bool:
        """Make ``content`` what the next draws show, doing only what changed: ``Gaussians``
        (None: nothing) are uploaded when they are a new object; ``PosedAvatars`` upload their
        skinned avatars when that tuple is a new object and are posed when their poses are.
        Returns True when avatars were posed."""
        if isinstance(content, PosedAvatars):
            if self._avatars is None or content.skinned is not self._shown_skinned:
                self.upload_avatars(list(content.skinned))
                self._shown_skinned, self._shown_poses = content.skinned, None
            if content.poses is self._shown_poses:
                return False
            self.pose_avatars(list(content.poses))
            self._shown_poses = content.poses
            return True
        gaussians = content if content is not None else self._nothing
        if self._avatars is not None or gaussians is not self._gaussians:
            self.upload(gaussians)
        return False

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
            self.sort_for(camera.position, camera.forward)
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
            if self._count and not (self.pipeline == "tiles" and self._tiles(camera, viewport)):
                self._project(camera)
                self._splat(camera, viewport)
            self.ctx.scissor = None
        except (GLContextLost, RenderError):
            raise
        except Exception as exc:
            raise GLContextLost(f"drawing failed: {exc}") from exc
        self._check("draw")

    def _projection_uniforms(self, program, camera: Camera) -> None:
        cv = camera.cv_from_world
        w, h = camera.width, camera.height
        margin_x, margin_y = (FRUSTUM_MARGIN * 0.5 * w / camera.fx,
                              FRUSTUM_MARGIN * 0.5 * h / camera.fy)
        set_uniforms(program, count=self._count, param_rows=self._param_rows,
                      tile_size=(TILE_W, TILE_H), tiles=tile_grid(w, h),
                      chunk_size=chunking(self._count)[1],
                      cv_translation=tuple(map(float, cv[:3, 3])),
                      intrinsics=(camera.fx, camera.fy, camera.cx, camera.cy),
                      image_size=(float(w), float(h)), near_far=(camera.near, camera.far),
                      limits=((w - camera.cx) / camera.fx + margin_x,
                              camera.cx / camera.fx + margin_x,
                              (h - camera.cy) / camera.fy + margin_y,
                              camera.cy / camera.fy + margin_y),
                      camera_position=tuple(map(float, camera.position)))
        if "cv_rotation" in program:
            program["cv_rotation"].write(np.ascontiguousarray(cv[:3, :3].T, dtype="f4").tobytes())
        self._textures["params"].use(4)
        self._textures["colors"].use(5)

    def _project(self, camera: Camera) -> None:
        """The raster path's projection: splats by Gaussian index into a storage buffer."""
        cs = self.projection(tiles=False, sh_count=self._sh_count)
        self._projection_uniforms(cs, camera)
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
        set_uniforms(prog, image_size=(float(camera.width), float(camera.height)),
                      count=self._count, viewport=tuple(map(float, viewport)))
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

    def _tiles(self, camera: Camera, viewport) -> bool:
        """The tile rasteriser (see ``render.gl_tiles``): project by depth rank, bin into
        tiles, composite each tile front to back, blend the image over ``viewport`` of the
        bound framebuffer. False (nothing drawn) when the pair list would exceed this GL's
        texture size: the caller falls back to the raster path."""
        import moderngl

        ctx = self.ctx
        width, height = camera.width, camera.height
        tiles_x, tiles_y = tile_grid(width, height)
        tile_count = tiles_x * tiles_y
        chunks, chunk_size = chunking(self._count)
        if tiles_x > 0xFFFF or tiles_y > 0xFFFF:
            return False
        # 1. projection, by depth rank, counting each chunk's splats per tile
        if self.stage_ms is not None:
            ctx.finish()
            self.stage_ms["_mark"] = (time.perf_counter(), time.process_time())
        cs = self.projection(tiles=True, sh_count=self._sh_count)
        self._projection_uniforms(cs, camera)
        self._textures["rank"].use(6)
        splats = self.data_texture("splats", 2 * ROW, rows_for(self._count), 4, "u4")
        splats.bind_to_image(2, read=False, write=True)
        rects = self.data_texture("rects", ROW, rows_for(self._count), 2, "u4")
        rects.bind_to_image(3, read=False, write=True)
        counts = self.reserve("chunk_counts", chunks * tile_count * 4)
        counts.clear(size=chunks * tile_count * 4)
        counts.bind_to_storage_buffer(6)
        cs.run(group_x=(self._count + WORKGROUP - 1) // WORKGROUP)
        ctx.memory_barrier()
        self._stage("projection")
        # 2. binning: tile totals, starts, per-chunk slots, then the depth-ordered lists
        groups = (tile_count + GROUP - 1) // GROUP
        self.reserve("tile_starts", tile_count * 4).bind_to_storage_buffer(7)
        self.reserve("tile_counts", tile_count * 4).bind_to_storage_buffer(8)
        self._total.bind_to_storage_buffer(9)
        for shader in (self._totals, self._scan, self._bases):
            set_uniforms(shader, tile_count=tile_count, chunks=chunks)
        self._totals.run(group_x=groups)
        ctx.memory_barrier()
        self._scan.run()
        ctx.memory_barrier()
        self._bases.run(group_x=groups)
        ctx.memory_barrier()
        total, longest = map(int, np.frombuffer(self._total.read(), dtype=np.uint32)[:2])
        self.last_pair_count = total
        list_rows = rows_for(total, LIST_ROW)
        if list_rows > self.max_texture_size:
            return False
        tile_list = self.data_texture("tile_list", LIST_ROW, list_rows, 1, "u4")
        tile_list.bind_to_image(1, read=False, write=True)
        rects.use(2)
        self._textures["order"].use(4)
        state = self.reserve("emit_state", 8 + 8 * chunks)
        state.bind_to_storage_buffer(10)
        set_uniforms(self._emit, count=self._count, tiles_x=tiles_x, tile_count=tile_count,
                      chunks=chunks, chunk_size=chunk_size,
                      capacity=tile_list.height * LIST_ROW)
        # Rounds of at most LOOP_BUDGET steps per chunk (llvmpipe's loop limit, see
        # render.gl_tiles) until no chunk has work left; a chunk's work is at most its splats
        # plus all the pairs, so more rounds than that mean a broken GL: no tiles drawn.
        for round_ in range(-(-(total + chunk_size) // LOOP_BUDGET) + 1):
            state.write(b"\0\0\0\0")
            set_uniforms(self._emit, first_round=round_ == 0)
            self._emit.run(group_x=(chunks + EMIT_GROUP - 1) // EMIT_GROUP)
            ctx.memory_barrier()
            if not int(np.frombuffer(state.read(size=4), dtype=np.uint32)[0]):
                break
        else:
            return False
        self._stage("binning")
        # 3. each tile front to back into an RGBA32F image (tile lists longer than
        # LOOP_BUDGET in passes of LOOP_BUDGET entries, each resuming the last one's pixels)
        splatted = self._textures.get("splatted")
        if splatted is None or splatted.size != (width, height):
            if splatted is not None:
                splatted.release()
            splatted = ctx.texture((width, height), 4, dtype="f4")
            self._textures["splatted"] = splatted
        passes = max(1, -(-longest // LOOP_BUDGET))
        raster = self._raster if passes == 1 else self._resume_shader()
        splatted.bind_to_image(0, read=passes > 1, write=True)
        splats.use(2)
        tile_list.use(3)
        set_uniforms(raster, image_size=(width, height), tiles=(tiles_x, tiles_y))
        for index in range(passes):
            set_uniforms(raster, first_entry=index * LOOP_BUDGET,
                          final_pass=index == passes - 1)
            raster.run(group_x=tiles_x, group_y=tiles_y)
            ctx.memory_barrier()
        self.last_raster_passes = passes
        self._stage("raster")
        # 4. blended over the framebuffer (already cleared to the background)
        x, y, _, _ = viewport
        ctx.viewport = viewport
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        ctx.enable(moderngl.BLEND)
        ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
        ctx.blend_equation = moderngl.FUNC_ADD
        splatted.use(0)
        set_uniforms(self._composite, origin=(int(x), int(y)))
        self._composite_vao.render(moderngl.TRIANGLES, vertices=3)
        self._stage("composite")
        self.last_primitive = "tiles"
        return True

    @_current
    def use_display_stop(self, display_stop: float | None) -> None:
        """Change the tile rasteriser's stop (see ``__init__``'s ``display_stop``)."""
        if display_stop == self.display_stop:
            return
        self.display_stop = display_stop
        try:
            raster = self.ctx.compute_shader(
                RASTER_SHADER if display_stop is None else raster_shader(display_stop=display_stop))
        except Exception as exc:
            raise GLContextLost(f"cannot build the rasteriser: {exc}") from exc
        self._raster.release()
        self._raster = raster
        if self._raster_resume is not None:
            self._raster_resume.release()
            self._raster_resume = None

    def _resume_shader(self):
        if self._raster_resume is None:
            try:
                self._raster_resume = self.ctx.compute_shader(
                    RASTER_RESUME_SHADER if self.display_stop is None
                    else raster_shader(resume=True, display_stop=self.display_stop))
            except Exception as exc:
                raise GLContextLost(f"cannot build the rasteriser: {exc}") from exc
        return self._raster_resume

    def _stage(self, name: str) -> None:
        """Benchmarks (``stage_ms`` set): finish GL and add the time since the last mark."""
        if self.stage_ms is None:
            return
        self.ctx.finish()
        now = (time.perf_counter(), time.process_time())
        start = self.stage_ms.pop("_mark", now)
        for key, a, b in ((name, start[0], now[0]), (name + "_cpu", start[1], now[1])):
            self.stage_ms[key] = self.stage_ms.get(key, 0.0) + (b - a) * 1e3
        self.stage_ms["_mark"] = now

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
    def render(self, gaussians: Gaussians | None, camera: Camera, background=None) -> np.ndarray:
        """Upload (unless ``gaussians`` is None: what is on the GPU, e.g. posed avatars),
        sort and draw into an RGBA32F target: (H, W, 4) float32 premultiplied RGBA, the
        reference renderer's signature."""
        if camera.width == 0 or camera.height == 0:
            return np.zeros((camera.height, camera.width, 4), dtype=np.float32)
        if gaussians is not None:
            self.upload(gaussians)
        self.sort_for(camera.position, camera.forward)
        fbo = self._float_target(camera.width, camera.height)
        self.draw(camera, fbo, background)
        return self.read(camera, fbo).copy()

    @_current
    def render_stereo(self, gaussians: Gaussians | None, cameras,
                      background=None) -> list[np.ndarray]:
        """One upload (unless None) and ONE sort (from the cameras' mean position along their
        mean view direction), then a draw per camera: a list of (H, W, 4) float32 images."""
        if gaussians is not None:
            self.upload(gaussians)
        position = np.mean([c.position for c in cameras], axis=0)
        forward = np.mean([c.forward for c in cameras], axis=0)
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


def is_software_renderer(ctx) -> bool:
    """True for a CPU implementation of OpenGL (Mesa llvmpipe / softpipe, SwiftShader)."""
    try:
        name = str(ctx.info.get("GL_RENDERER", "")).lower()
    except Exception:
        return False
    return any(word in name for word in ("llvmpipe", "softpipe", "swiftshader", "software"))


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
