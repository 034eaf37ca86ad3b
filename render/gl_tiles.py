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
writes each splat by its Gaussian index into an RGBA32UI texture, 2 texels (32 bytes) per
splat: (mean x, mean y, qxx, qxy), (qyy, the row-to-row step exp2(2 qyy), r|g as half floats,
b as a half float | opacity as a 16-bit fraction), where q are the log2 weight's coefficients
(the conic times -log2(e) / 2) and floats are stored as their bits; and its tile rectangle
(x0|x1<<16, y0|y1<<16, empty when culled) into an RG32UI texture. It also counts, with
atomics, how many splats of each chunk of depth ranks (``chunking``, ranks from the CPU's
sort) touch each TILE_W x TILE_H tile. Then:

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
SCAN_GROUP = 256  # invocations of the tile scan
MAX_CHUNKS = 64   # the depth-ordered splats are binned in at most this many chunks
MIN_CHUNK = 1024
EMPTY_RECT = (1, 1)  # x0 = 1 > x1 = 0 and y0 = 1 > y1 = 0: no tiles
# Mesa llvmpipe (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS) silently ends every loop of a shader
# run once 65535 loop iterations have run in it, all loops and nesting levels counted
# together (for a SIMD group: the union of its lanes'). So no loop here may run longer: the
# scan splits the tiles between invocations, and the binning and the rasteriser work in
# rounds of at most LOOP_BUDGET iterations that resume where the last one stopped.
LOOP_BUDGET = 65000

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

SCAN_SHADER = f"""
#version 430
// One workgroup: each invocation scans a contiguous block of tiles (its loops stay far below
// llvmpipe's loop limit, see LOOP_BUDGET, for any image a texture can hold), then invocation 0
// scans the block sums. Also the largest tile list, so the rasteriser knows its passes.
layout(local_size_x = {SCAN_GROUP}) in;
layout(std430, binding = 7) writeonly buffer TileStarts {{ uint tile_starts[]; }};
layout(std430, binding = 8) readonly buffer TileCounts {{ uint tile_counts[]; }};
layout(std430, binding = 9) writeonly buffer Total {{ uint total_pairs; uint max_tile_pairs; }};
uniform int tile_count;
shared uint block_start[{SCAN_GROUP}];
shared uint block_max[{SCAN_GROUP}];
void main() {{
    int lane = int(gl_LocalInvocationID.x);
    int per = (tile_count + {SCAN_GROUP - 1}) / {SCAN_GROUP};
    int begin = min(tile_count, lane * per);
    int end = min(tile_count, begin + per);
    uint sum = 0u, most = 0u;
    for (int t = begin; t < end; ++t) {{
        uint n = tile_counts[t];
        sum += n;
        most = max(most, n);
    }}
    block_start[lane] = sum;
    block_max[lane] = most;
    memoryBarrierShared();
    barrier();
    if (lane == 0) {{
        uint run = 0u;
        for (int b = 0; b < {SCAN_GROUP}; ++b) {{
            uint n = block_start[b];
            block_start[b] = run;
            run += n;
            most = max(most, block_max[b]);
        }}
        total_pairs = run;
        max_tile_pairs = most;
    }}
    memoryBarrierShared();
    barrier();
    uint cursor = block_start[lane];
    for (int t = begin; t < end; ++t) {{
        tile_starts[t] = cursor;
        cursor += tile_counts[t];
    }}
}}
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
layout(binding = 2) uniform usampler2D rects;                  // by Gaussian index
layout(binding = 4) uniform usampler2D order;                  // depth rank -> Gaussian
layout(std430, binding = 6) buffer ChunkCounts {{ uint cursors[]; }};
// Where each chunk stopped (next depth rank, next tile of that splat's rectangle) and how
// many chunks have work left: a round does at most LOOP_BUDGET (tile, splat) steps per chunk.
layout(std430, binding = 10) buffer EmitState {{ uint unfinished; uint unused; uvec2 progress[]; }};
layout(r32ui, binding = 1) writeonly uniform uimage2D tile_list;
uniform int count;
uniform int tiles_x;
uniform int tile_count;
uniform int chunks;
uniform int chunk_size;
uniform uint capacity;    // entries tile_list can hold
uniform bool first_round;
{TEXEL_GLSL}
void main() {{
    int c = int(gl_GlobalInvocationID.x);
    if (c >= chunks) return;
    uint end = uint(min(count, (c + 1) * chunk_size));
    uvec2 at = first_round ? uvec2(uint(c * chunk_size), 0u) : progress[c];
    uint k = at.x, p = at.y;
    // One flat loop over the chunk's (tile, splat) pairs, front to back, at most LOOP_BUDGET
    // steps a round (llvmpipe's loop limit counts nested loops together: see LOOP_BUDGET).
    for (int n = 0; n < {LOOP_BUDGET}; ++n) {{
        if (k >= end) break;
        uint i = texelFetch(order, texel(k, 1, 0), 0).x;
        uvec2 r = texelFetch(rects, texel(i, 1, 0), 0).xy;
        uint x0 = r.x & 0xFFFFu, y0 = r.y & 0xFFFFu;
        uint w = (r.x >> 16) + 1u - x0;      // 0 for a culled splat's empty rectangle
        uint pairs = w * ((r.y >> 16) + 1u - y0);
        if (p < pairs) {{
            uint wide = max(w, 1u);   // no division by 0 on the masked-off side
            uint cell = uint(c * tile_count) + (y0 + p / wide) * uint(tiles_x) + x0 + p % wide;
            uint slot = cursors[cell];
            cursors[cell] = slot + 1u;
            if (slot < capacity) {{
                imageStore(tile_list, ivec2(slot % {LIST_ROW}u, slot / {LIST_ROW}u), uvec4(i));
            }}
            ++p;
        }}
        if (p >= pairs) {{
            ++k;
            p = 0u;
        }}
    }}
    progress[c] = uvec2(k, p);
    if (k < end) atomicAdd(unfinished, 1u);
}}
"""


# A picture shown on an 8-bit display: a pixel whose transmittance is under half a step of
# 8 bits can change by less than that step whatever lies behind it, so the rasteriser may
# stop there instead of at 3DGS's 1e-4 (after adding the splat that took it there, where
# 3DGS drops that splat).
DISPLAY_STOP = 0.5 / 255.0


# Below this log2 weight at the anchor row no pixel of the column can reach 1/255: a pixel's
# Mahalanobis distance is at most sqrt(2 ln 255) = 3.33 when its alpha counts, and moving
# TILE_H / 2 = 4 rows adds at most 4 sqrt(1 / 0.3) (the 0.3 px^2 dilation bounds the conic's
# eigenvalues by 1 / 0.3), so the anchor is within 10.7 of the mean (log2 weight > -82). A
# weight below it is set to 0 and stays 0 down the column.
ANCHOR_LOG2_MIN = -100.0


def _composite_row(r: int, display_stop: float | None = None) -> str:
    """One pixel of a lane's column: weight ``e`` (opacity * Gaussian) -> front-to-back
    compositing with the 3DGS rules. A finished pixel keeps its transmittance negated
    (a live one is >= T_MIN > 0): it then takes w = 0 and stays finished.

    ``display_stop``: instead of 3DGS's stop, add every splat and finish the pixel once its
    transmittance falls below this (see ``DISPLAY_STOP``)."""
    if display_stop is not None:
        return f"""
        alpha = min({ALPHA_MAX!r}, e);
        alpha = alpha >= {ALPHA_MIN!r} ? alpha : 0.0;
        w = alpha * max(t{r}, 0.0);
        next = t{r} - w;
        c{r} += rgb_step.rgb * w;
        t{r} = next >= {display_stop!r} ? next : -abs(next);"""
    return f"""
        alpha = min({ALPHA_MAX!r}, e);
        alpha = alpha >= {ALPHA_MIN!r} ? alpha : 0.0;
        w = alpha * max(t{r}, 0.0);
        next = t{r} - w;
        keep = next >= {T_MIN!r};   // 3DGS: else the pixel is done, this splat not added
        c{r} += rgb_step.rgb * (keep ? w : 0.0);
        t{r} = keep ? next : -abs(t{r});"""


def _raster_rows(rows: int, display_stop: float | None = None) -> str:
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
        e = e_anchor;{_composite_row(anchor, display_stop)}"""]
    for r in range(anchor + 1, rows):
        step = "" if r == rows - 1 else "\n        down *= rgb_step.w;"
        body.append(f"\n        e *= down;{step}{_composite_row(r, display_stop)}")
    body.append("\n        e = e_anchor;")
    for r in range(anchor - 1, -1, -1):
        step = "" if r == 0 else "\n        up *= rgb_step.w;"
        body.append(f"\n        e *= up;{step}{_composite_row(r, display_stop)}")
    return "".join(body)


def raster_shader(columns: int = TILE_W, rows: int = TILE_H, resume: bool = False,
                  display_stop: float | None = None) -> str:
    """The tile rasteriser. ``resume``: the variant for tile lists longer than LOOP_BUDGET,
    run once per LOOP_BUDGET entries (``first_entry``): it loads each pixel's (C, signed T)
    from the image the last pass left and stores it again, (C, 1 - T) after the last pass.
    (The one-pass variant reads nothing back: on llvmpipe even a branch not taken costs.)"""
    declare = "".join(f"""
    float t{r} = 1.0;
    vec3 c{r} = vec3(0.0);""" for r in range(rows))
    if resume:
        declare += "".join(f"""
    if (first_entry > 0u && top + {r} < image_size.y) {{
        vec4 state = imageLoad(splatted, ivec2(column, image_size.y - 1 - top - {r}));
        c{r} = state.rgb;
        t{r} = state.a;
    }}""" for r in range(rows))
    alpha = "final_pass ? 1.0 - abs(t{r}) : t{r}" if resume else "1.0 - abs(t{r})"
    remaining = "max(" * (rows - 1) + "t0" + "".join(f", t{r})" for r in range(1, rows))
    store = "".join(f"""
    if (top + {r} < image_size.y) {{
        imageStore(splatted, ivec2(column, image_size.y - 1 - top - {r}),
                   vec4(c{r}, {alpha.format(r=r)}));
    }}""" for r in range(rows))
    if resume:
        image = "layout(rgba32f, binding = 0) uniform image2D splatted;   // read and written"
        extent = f"""
uniform uint first_entry;   // this pass: the tile lists' entries first_entry ... + {LOOP_BUDGET}
uniform bool final_pass;"""
        span = f"""
    uint listed = tile_counts[tile];
    uint start = tile_starts[tile] + min(first_entry, listed);
    uint end = tile_starts[tile] + min(first_entry + {LOOP_BUDGET}u, listed);"""
    else:
        image = "layout(rgba32f, binding = 0) writeonly uniform image2D splatted;"
        extent = ""
        span = """
    uint start = tile_starts[tile];
    uint end = start + tile_counts[tile];"""
    return f"""
#version 430
layout(local_size_x = {columns}) in;
layout(binding = 2) uniform usampler2D splats;        // by Gaussian index, 2 texels each
layout(binding = 3) uniform usampler2D tile_list;
layout(std430, binding = 7) readonly buffer TileStarts {{ uint tile_starts[]; }};
layout(std430, binding = 8) readonly buffer TileCounts {{ uint tile_counts[]; }};
{image}
uniform ivec2 image_size;
uniform ivec2 tiles;{extent}
{TEXEL_GLSL}
void main() {{
    int column = int(gl_GlobalInvocationID.x);
    int top = int(gl_WorkGroupID.y) * {rows};
    uint tile = gl_WorkGroupID.y * uint(tiles.x) + gl_WorkGroupID.x;{span}
    float cx = float(column) + 0.5;{declare}
    float e, alpha, w, next;
    bool keep;
    for (uint k = start; k < end; ++k) {{
        uint i = texelFetch(tile_list, ivec2(k % {LIST_ROW}u, k / {LIST_ROW}u), 0).x;
        vec4 mean_q = uintBitsToFloat(texelFetch(splats, texel(i, 2, 0), 0));
        uvec4 rest = texelFetch(splats, texel(i, 2, 1), 0);
        vec2 mean = mean_q.xy;
        // log2 weight q = x dx^2 + y dx dy + z dy^2 (the conic times -log2(e) / 2) and the
        // opacity w: opacity * exp(-d^T conic d / 2) = w exp2(q)
        vec4 q_coeffs = vec4(mean_q.zw, uintBitsToFloat(rest.x), unpackUnorm2x16(rest.w).y);
        vec4 rgb_step = vec4(unpackHalf2x16(rest.z), unpackHalf2x16(rest.w).x,
                             uintBitsToFloat(rest.y));
        float dx = cx - mean.x;{_raster_rows(rows, display_stop)}
        if ({remaining} < 0.0) break;   // every pixel of the column is done
    }}
    if (column >= image_size.x) return;
    // Stored bottom row first, as GL framebuffers are.{store}
}}
"""


RASTER_SHADER = raster_shader()
RASTER_RESUME_SHADER = raster_shader(resume=True)

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
