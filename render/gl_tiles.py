"""The tile rasteriser of the OpenGL backend: splats composited front to back in compute
shaders, with the exact 3DGS early stop.

Why: on a software GL (Mesa llvmpipe) the fixed-function path pays for every fragment of
every splat, the back of the body included, and its vertex stage runs on one thread. A
compute rasteriser runs on all cores, stops a pixel once it is opaque (T would fall below
1e-4: the reference renderer's and 3DGS's rule, so it also removes the back-to-front path's
one difference from the reference) and writes each pixel once.

Measured on llvmpipe (Mesa 22.3): a shader's buffer (SSBO) access costs a loop over the
SIMD lanes with a branch per lane and component, about 13 ns per scalar; ``texelFetch`` is
vectorised and about 15 times cheaper per vec4. So everything a pass reads many times lives
in textures (read with ``texelFetch``) and is written once with ``imageStore``; only the
atomic counters and small per-tile arrays are buffers.

Data (``ROW`` items per texture row; see ``texel``): the projection pass of ``render.gl``
writes each splat by its Gaussian index into an RGBA32UI texture, 3 texels per splat:
(mean x, mean y, tile rectangle x0|x1<<16, y0|y1<<16), (the log2 weight's coefficients: the
conic times -log2(e) / 2, opacity), (r, g, b, the row-to-row step exp2(2 qyy)); floats as
their bits. It also counts, with atomics, how many splats of each chunk of depth ranks
(``chunking``, ranks from the CPU's sort) touch each TILE_W x TILE_H tile. Then:

1. Binning without a sort: ``TOTALS_SHADER`` sums each tile's counts over the chunks,
   ``SCAN_SHADER`` (one invocation) turns the totals into tile starts and the number of
   (tile, splat) pairs, which the CPU reads to size the pair list, ``BASES_SHADER`` gives
   every (chunk, tile) its first slot, and ``EMIT_SHADER`` (one invocation per chunk) walks
   its chunk front to back (the depth order texture) and appends each splat's index to the
   lists of the tiles it touches. A
   chunk's slots come after every earlier chunk's, so each tile's list ends up in depth
   order, in work proportional to the pairs.
2. ``RASTER_SHADER`` (one workgroup per tile, one invocation per pixel column of it, each
   walking its TILE_H pixels at once so a splat is fetched once per column): front to back,
   alpha = min(0.99, o exp(-d^T conic d / 2)), skipped below 1/255, stop (without adding) when
   T would fall below 1e-4; writes premultiplied (C, 1 - T) into an RGBA32F image. The
   Gaussian is one exp2 per column, not per pixel: down a column its log2 is quadratic, so
   each row's value is the last one's times a ratio that itself changes by a constant factor.
3. ``COMPOSITE_*`` (a full-viewport triangle): blends that image over the target framebuffer
   (cleared to the background), premultiplied: any framebuffer works (a window, an sRGB XR
   swapchain image, part of a side-by-side target).
"""

from __future__ import annotations

import math

from render.reference import ALPHA_MAX, ALPHA_MIN, T_MIN

LOG2_E = 1.0 / math.log(2.0)

ROW = 1024        # items (Gaussians, splats) per texture row
LIST_ROW = 4096   # tile-list entries per texture row
TILE_W = 8        # tile columns: one SIMD lane each (llvmpipe: 8 x 32 bits)
TILE_H = 8        # rows each lane walks (measured: 8 beats 4 and 16, docs/rendering.md)
GROUP = 64        # invocations per workgroup of the per-tile passes
EMIT_GROUP = 8
MAX_CHUNKS = 64   # the depth-ordered splats are binned in at most this many chunks
MIN_CHUNK = 1024
EMPTY_RECT = (1, 1)  # x0 = 1 > x1 = 0 and y0 = 1 > y1 = 0: no tiles

# GLSL: the texel of item i's k-th part in a texture of ROW items (x parts each) per row.
TEXEL_GLSL = f"""
ivec2 texel(uint i, int parts, int k) {{
    return ivec2(int(i % {ROW}u) * parts + k, int(i / {ROW}u));
}}
"""

TOTALS_SHADER = f"""
#version 430
layout(local_size_x = {GROUP}) in;
layout(std430, binding = 6) readonly buffer ChunkCounts {{ uint chunk_counts[]; }};
layout(std430, binding = 8) writeonly buffer TileCounts {{ uint tile_counts[]; }};
uniform int tile_count;
uniform int chunks;
void main() {{
    int t = int(gl_GlobalInvocationID.x);
    if (t >= tile_count) return;
    uint sum = 0u;
    for (int c = 0; c < chunks; ++c) sum += chunk_counts[c * tile_count + t];
    tile_counts[t] = sum;
}}
"""

SCAN_SHADER = """
#version 430
layout(local_size_x = 1) in;
layout(std430, binding = 7) writeonly buffer TileStarts { uint tile_starts[]; };
layout(std430, binding = 8) readonly buffer TileCounts { uint tile_counts[]; };
layout(std430, binding = 9) writeonly buffer Total { uint total_pairs; };
uniform int tile_count;
void main() {
    uint sum = 0u;
    for (int t = 0; t < tile_count; ++t) {
        tile_starts[t] = sum;
        sum += tile_counts[t];
    }
    total_pairs = sum;
}
"""

BASES_SHADER = f"""
#version 430
layout(local_size_x = {GROUP}) in;
layout(std430, binding = 6) buffer ChunkCounts {{ uint chunk_counts[]; }};  // -> write cursors
layout(std430, binding = 7) readonly buffer TileStarts {{ uint tile_starts[]; }};
uniform int tile_count;
uniform int chunks;
void main() {{
    int t = int(gl_GlobalInvocationID.x);
    if (t >= tile_count) return;
    uint cursor = tile_starts[t];
    for (int c = 0; c < chunks; ++c) {{
        uint n = chunk_counts[c * tile_count + t];
        chunk_counts[c * tile_count + t] = cursor;
        cursor += n;
    }}
}}
"""

EMIT_SHADER = f"""
#version 430
layout(local_size_x = {EMIT_GROUP}) in;
layout(binding = 2) uniform usampler2D splats;                 // by Gaussian index
layout(binding = 4) uniform usampler2D order;                  // depth rank -> Gaussian
layout(std430, binding = 6) buffer ChunkCounts {{ uint cursors[]; }};
layout(r32ui, binding = 1) writeonly uniform uimage2D tile_list;
uniform int count;
uniform int tiles_x;
uniform int tile_count;
uniform int chunks;
uniform int chunk_size;
uniform uint capacity;    // entries tile_list can hold
{TEXEL_GLSL}
void main() {{
    int c = int(gl_GlobalInvocationID.x);
    if (c >= chunks) return;
    int end = min(count, (c + 1) * chunk_size);
    for (int k = c * chunk_size; k < end; ++k) {{   // front to back within the chunk
        uint i = texelFetch(order, texel(uint(k), 1, 0), 0).x;
        uvec2 r = texelFetch(splats, texel(i, 3, 0), 0).zw;
        for (uint ty = r.y & 0xFFFFu; ty <= (r.y >> 16); ++ty) {{
            for (uint tx = r.x & 0xFFFFu; tx <= (r.x >> 16); ++tx) {{
                uint cell = uint(c * tile_count) + ty * uint(tiles_x) + tx;
                uint slot = cursors[cell];
                cursors[cell] = slot + 1u;
                if (slot < capacity) {{
                    imageStore(tile_list, ivec2(slot % {LIST_ROW}u, slot / {LIST_ROW}u),
                               uvec4(i));
                }}
            }}
        }}
    }}
}}
"""


# Below this log2 weight at the anchor row no pixel of the column can reach 1/255: a pixel's
# Mahalanobis distance is at most sqrt(2 ln 255) = 3.33 when its alpha counts, and moving
# TILE_H / 2 = 4 rows adds at most 4 sqrt(1 / 0.3) (the 0.3 px^2 dilation bounds the conic's
# eigenvalues by 1 / 0.3), so the anchor is within 10.7 of the mean (log2 weight > -82). A
# weight below it is set to 0 and stays 0 down the column.
ANCHOR_LOG2_MIN = -100.0


def _composite_row(r: int) -> str:
    """One pixel of a lane's column: weight ``e`` (opacity * Gaussian) -> front-to-back
    compositing with the 3DGS rules. A finished pixel keeps its transmittance negated
    (a live one is >= T_MIN > 0): it then takes w = 0 and stays finished."""
    return f"""
        alpha = min({ALPHA_MAX!r}, e);
        alpha = alpha >= {ALPHA_MIN!r} ? alpha : 0.0;
        w = alpha * max(t{r}, 0.0);
        next = t{r} - w;
        keep = next >= {T_MIN!r};   // 3DGS: else the pixel is done, this splat not added
        c{r} += rgb_step.rgb * (keep ? w : 0.0);
        t{r} = keep ? next : -abs(t{r});"""


def _raster_rows(rows: int) -> str:
    """The per-splat work for a lane's ``rows`` pixels, unrolled by hand: no array indexing,
    and no branches (llvmpipe runs both sides of a branch anyway). The log2 weight q is
    quadratic down a column, so no row but the anchor (``rows // 2``) needs an exp2: each
    next row's weight is the last one's times a ratio, and the ratio is multiplied by
    exp2(2 qyy) (``rgb_step.w``) per row, up and down from the anchor."""
    anchor = rows // 2
    body = [f"""
        float dy = float(top + {anchor}) + 0.5 - mean.y;
        float q = dx * (q_coeffs.x * dx + q_coeffs.y * dy) + dy * q_coeffs.z * dy;
        float e_anchor = q >= {ANCHOR_LOG2_MIN!r} ? q_coeffs.w * exp2(q) : 0.0;
        // the next row's weight ratio down and up (log2 capped: no inf * 0)
        float down = exp2(min(q_coeffs.y * dx + q_coeffs.z * (2.0 * dy + 1.0), 100.0));
        float up = exp2(min(q_coeffs.z * (1.0 - 2.0 * dy) - q_coeffs.y * dx, 100.0));
        e = e_anchor;{_composite_row(anchor)}"""]
    for r in range(anchor + 1, rows):
        step = "" if r == rows - 1 else "\n        down *= rgb_step.w;"
        body.append(f"\n        e *= down;{step}{_composite_row(r)}")
    body.append("\n        e = e_anchor;")
    for r in range(anchor - 1, -1, -1):
        step = "" if r == 0 else "\n        up *= rgb_step.w;"
        body.append(f"\n        e *= up;{step}{_composite_row(r)}")
    return "".join(body)


def raster_shader(columns: int = TILE_W, rows: int = TILE_H) -> str:
    declare = "".join(f"""
    float t{r} = 1.0;
    vec3 c{r} = vec3(0.0);""" for r in range(rows))
    remaining = "max(" * (rows - 1) + "t0" + "".join(f", t{r})" for r in range(1, rows))
    store = "".join(f"""
    if (top + {r} < image_size.y) {{
        imageStore(splatted, ivec2(column, image_size.y - 1 - top - {r}), vec4(c{r}, 1.0 - abs(t{r})));
    }}""" for r in range(rows))
    return f"""
#version 430
layout(local_size_x = {columns}) in;
layout(binding = 2) uniform usampler2D splats;        // by Gaussian index, 3 texels each
layout(binding = 3) uniform usampler2D tile_list;
layout(std430, binding = 7) readonly buffer TileStarts {{ uint tile_starts[]; }};
layout(std430, binding = 8) readonly buffer TileCounts {{ uint tile_counts[]; }};
layout(rgba32f, binding = 0) writeonly uniform image2D splatted;
uniform ivec2 image_size;
uniform ivec2 tiles;
{TEXEL_GLSL}
void main() {{
    int column = int(gl_GlobalInvocationID.x);
    int top = int(gl_WorkGroupID.y) * {rows};
    uint tile = gl_WorkGroupID.y * uint(tiles.x) + gl_WorkGroupID.x;
    uint start = tile_starts[tile];
    uint end = start + tile_counts[tile];
    float cx = float(column) + 0.5;{declare}
    float e, alpha, w, next;
    bool keep;
    for (uint k = start; k < end; ++k) {{
        uint i = texelFetch(tile_list, ivec2(k % {LIST_ROW}u, k / {LIST_ROW}u), 0).x;
        vec2 mean = uintBitsToFloat(texelFetch(splats, texel(i, 3, 0), 0).xy);
        // log2 weight q = x dx^2 + y dx dy + z dy^2 + w (the conic times -log2(e) / 2, and
        // log2 of the opacity): opacity * exp(-d^T conic d / 2) = exp2(q)
        vec4 q_coeffs = uintBitsToFloat(texelFetch(splats, texel(i, 3, 1), 0));
        vec4 rgb_step = uintBitsToFloat(texelFetch(splats, texel(i, 3, 2), 0));
        float dx = cx - mean.x;{_raster_rows(rows)}
        if ({remaining} < 0.0) break;   // every pixel of the column is done
    }}
    if (column >= image_size.x) return;
    // Stored bottom row first, as GL framebuffers are.{store}
}}
"""


RASTER_SHADER = raster_shader()

COMPOSITE_VERTEX_SHADER = """
#version 430
void main() {  // one triangle covering the viewport
    vec2 p = vec2(float((gl_VertexID & 1) * 4 - 1), float((gl_VertexID >> 1) * 4 - 1));
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

COMPOSITE_FRAGMENT_SHADER = """
#version 430
layout(binding = 0) uniform sampler2D splatted;
uniform ivec2 origin;   // the viewport's lower-left corner in window coordinates
out vec4 frag;
void main() {
    frag = texelFetch(splatted, ivec2(gl_FragCoord.xy) - origin, 0);
}
"""


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """Tiles across and down for an image of ``width`` x ``height`` pixels."""
    return (width + TILE_W - 1) // TILE_W, (height + TILE_H - 1) // TILE_H


def chunking(count: int) -> tuple[int, int]:
    """(chunks, chunk_size): how the depth-ordered splats are split for binning."""
    chunks = max(1, min(MAX_CHUNKS, -(-count // MIN_CHUNK)))
    return chunks, max(1, -(-count // chunks))


def rows_for(count: int, per_row: int = ROW) -> int:
    """Texture rows holding ``count`` items (at least one)."""
    return max(1, -(-count // per_row))
