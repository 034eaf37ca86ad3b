"""Depth sorting of Gaussians: view depths and radix-style orders on the CPU, and the same
order in OpenGL compute shaders (``GLDepthSort``).

numpy's stable argsort on 16-bit unsigned keys is a radix sort (linear time), so a depth
quantised to 32 bits sorts in two stable 16-bit passes (least significant half first): about
5 ms for 300k Gaussians, against about 35 ms for a stable float argsort, and exact down to
(depth range) / 2^32, a few nanometres for an avatar. A single 16-bit pass halves that again
but merges depths closer than range / 65536 (0.1 mm over 6 m) into arbitrary order.

Measured on this project's 2-core CPU (see docs/BENCHMARKS.md, "## Rendering").
"""

from __future__ import annotations

import numpy as np

from render.gl_common import set_uniforms

KEY_BITS = (16, 32)


def view_depths(means: np.ndarray, position, forward) -> np.ndarray:
    """(N,) float32 depth of each mean along the unit view direction ``forward`` from
    ``position`` (metres; the camera-space z of OpenCV axes when ``forward`` is the view axis)."""
    forward = np.asarray(forward, dtype=np.float64)
    forward = forward / np.linalg.norm(forward)
    offset = float(np.dot(np.asarray(position, dtype=np.float64), forward))
    return (means @ forward.astype(np.float32)) - np.float32(offset)


def front_to_back(depths: np.ndarray, key_bits: int = 32) -> np.ndarray:
    """(N,) uint32 indices ordering ``depths`` nearest first; equal keys keep array order.

    Non-finite depths sort last. ``key_bits`` is 32 (two radix passes) or 16 (one).
    """
    if key_bits not in KEY_BITS:
        raise ValueError(f"key_bits must be one of {KEY_BITS}")
    n = len(depths)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    d = np.asarray(depths, dtype=np.float64)
    finite = np.isfinite(d)
    lo = d[finite].min() if finite.any() else 0.0
    hi = d[finite].max() if finite.any() else 0.0
    span = hi - lo
    top = float(2**key_bits - 1)
    scale = (top - 1) / span if span > 0 else 0.0
    keys = np.where(finite, (d - lo) * scale, top)
    keys = np.clip(keys, 0, top).astype(np.uint32 if key_bits == 32 else np.uint16)
    if key_bits == 16:
        return np.argsort(keys, kind="stable").astype(np.uint32)
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    order = order[np.argsort((keys[order] >> 16).astype(np.uint16), kind="stable")]
    return order.astype(np.uint32)


# -- the same order on the GPU (OpenGL 4.3 compute shaders) ----------------------------------
# An LSD radix sort of 32-bit keys, 8 bits a pass (4 passes), stable, so it gives numpy's
# np.argsort(keys, kind="stable"). Keys are the float32 view depths' bits mapped to an
# order-preserving uint (no min/max reduction needed; NaN last). Each pass: every block of
# SORT_BLOCK keys is counted by one invocation walking it in order (stable by construction),
# the (digit, block) counts are scanned per digit and over the digits, and each block's
# invocation walks it again writing every key to its slot.
SORT_BLOCK = 256
SORT_GROUP = 64
RADIX_BITS = 8
RADIX = 1 << RADIX_BITS

SORT_KEYS_SHADER = """
#version 430
layout(local_size_x = 128) in;
layout(binding = 0) uniform sampler2D params;     // plane 0: mean xyz + opacity, ROW a row
layout(std430, binding = 0) writeonly buffer Keys { uint keys[]; };
uniform int count;
uniform int row;
uniform vec3 forward;
uniform float offset;
void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i >= uint(count)) return;
    vec3 mean = texelFetch(params, ivec2(int(i % uint(row)), int(i / uint(row))), 0).xyz;
    float depth = dot(mean, forward) - offset;
    uint bits = floatBitsToUint(depth == 0.0 ? 0.0 : depth);   // -0 sorts with +0
    // IEEE order as unsigned order: negatives flipped, positives above them; NaN last
    keys[i] = isnan(depth) ? 0xFFFFFFFFu : ((bits >> 31) != 0u ? ~bits : bits | 0x80000000u);
}
"""

SORT_COUNT_SHADER = f"""
#version 430
layout(local_size_x = {SORT_GROUP}) in;
layout(std430, binding = 0) readonly buffer Keys {{ uint keys[]; }};
layout(std430, binding = 4) buffer Counts {{ uint counts[]; }};   // [digit][block], zeroed
uniform int count;
uniform int blocks;
uniform int shift;
void main() {{
    int b = int(gl_GlobalInvocationID.x);
    if (b >= blocks) return;
    int end = min(count, (b + 1) * {SORT_BLOCK});
    for (int k = b * {SORT_BLOCK}; k < end; ++k) {{
        uint digit = (keys[k] >> uint(shift)) & {RADIX - 1}u;
        counts[digit * uint(blocks) + uint(b)] += 1u;
    }}
}}
"""

SORT_SCAN_SHADER = f"""
#version 430
layout(local_size_x = {SORT_GROUP}) in;
layout(std430, binding = 4) buffer Counts {{ uint counts[]; }};   // -> offsets in the digit
layout(std430, binding = 5) writeonly buffer Totals {{ uint totals[]; }};
uniform int blocks;
void main() {{
    uint digit = gl_GlobalInvocationID.x;
    if (digit >= {RADIX}u) return;
    uint sum = 0u;
    for (uint b = 0u; b < uint(blocks); ++b) {{
        uint n = counts[digit * uint(blocks) + b];
        counts[digit * uint(blocks) + b] = sum;
        sum += n;
    }}
    totals[digit] = sum;
}}
"""

SORT_BASES_SHADER = f"""
#version 430
layout(local_size_x = 1) in;
layout(std430, binding = 5) buffer Totals {{ uint totals[]; }};   // -> first slot of a digit
void main() {{
    uint sum = 0u;
    for (int d = 0; d < {RADIX}; ++d) {{
        uint n = totals[d];
        totals[d] = sum;
        sum += n;
    }}
}}
"""

SORT_SCATTER_SHADER = f"""
#version 430
layout(local_size_x = {SORT_GROUP}) in;
layout(std430, binding = 0) readonly buffer KeysIn {{ uint keys_in[]; }};
layout(std430, binding = 1) readonly buffer ValuesIn {{ uint values_in[]; }};
layout(std430, binding = 2) writeonly buffer KeysOut {{ uint keys_out[]; }};
layout(std430, binding = 3) writeonly buffer ValuesOut {{ uint values_out[]; }};
layout(std430, binding = 4) buffer Counts {{ uint counts[]; }};
layout(std430, binding = 5) readonly buffer Totals {{ uint bases[]; }};
uniform int count;
uniform int blocks;
uniform int shift;
uniform bool first;       // values are the indices themselves (nothing to read)
void main() {{
    int b = int(gl_GlobalInvocationID.x);
    if (b >= blocks) return;
    int end = min(count, (b + 1) * {SORT_BLOCK});
    for (int k = b * {SORT_BLOCK}; k < end; ++k) {{
        uint key = keys_in[k];
        uint digit = (key >> uint(shift)) & {RADIX - 1}u;
        uint cell = digit * uint(blocks) + uint(b);
        uint slot = counts[cell];
        counts[cell] = slot + 1u;
        keys_out[bases[digit] + slot] = key;
        values_out[bases[digit] + slot] = first ? uint(k) : values_in[k];
    }}
}}
"""


class GLDepthSort:
    """Stable front-to-back order of the Gaussians on the GPU: ``sort(params, count,
    position, forward)`` leaves the order (nearest first) in ``order_buffer`` (uint32 each);
    ``sort_keys`` sorts given uint32 keys (for tests). ``ctx``: a moderngl context, current."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._keys = ctx.compute_shader(SORT_KEYS_SHADER)
        self._count = ctx.compute_shader(SORT_COUNT_SHADER)
        self._scan = ctx.compute_shader(SORT_SCAN_SHADER)
        self._bases = ctx.compute_shader(SORT_BASES_SHADER)
        self._scatter = ctx.compute_shader(SORT_SCATTER_SHADER)
        self._textures = ctx.compute_shader(ORDER_TEXTURES_SHADER)
        self._totals = ctx.buffer(reserve=4 * RADIX)
        self._buffers: dict[str, object] = {}
        self.order_buffer = None

    def _reserve(self, name: str, size: int):
        buf = self._buffers.get(name)
        if buf is None or buf.size < max(size, 16):
            if buf is not None:
                buf.release()
            buf = self.ctx.buffer(reserve=max(size, 16), dynamic=True)
            self._buffers[name] = buf
        return buf

    def sort(self, params, count: int, row: int, position, forward) -> None:
        """Order the ``count`` Gaussians whose means are plane 0 of the ``params`` texture
        (``row`` per texture row) by depth along ``forward`` from ``position``."""
        forward = np.asarray(forward, dtype=np.float64)
        forward = forward / np.linalg.norm(forward)
        offset = float(np.dot(np.asarray(position, dtype=np.float64), forward))
        keys = self._reserve("keys_a", 4 * count)
        params.use(0)
        keys.bind_to_storage_buffer(0)
        set_uniforms(self._keys, count=count, row=row, offset=offset,
                     forward=tuple(map(float, forward)))
        self._keys.run(group_x=(count + 127) // 128)
        self.ctx.memory_barrier()
        self._radix(count)

    def write_textures(self, count: int, row: int, order_texture, rank_texture) -> None:
        """The last order into R32UI textures of ``row`` texels a row: ``order_texture``
        (depth rank -> index) and its inverse ``rank_texture`` (index -> depth rank)."""
        self.order_buffer.bind_to_storage_buffer(0)
        order_texture.bind_to_image(0, read=False, write=True)
        rank_texture.bind_to_image(1, read=False, write=True)
        self._textures["count"].value = count
        self._textures["row"].value = row
        self._textures.run(group_x=(count + 127) // 128)
        self.ctx.memory_barrier()

    def sort_keys(self, keys: np.ndarray) -> np.ndarray:
        """(N,) uint32 indices sorting ``keys`` (uint32) stably, read back from the GPU."""
        keys = np.ascontiguousarray(keys, dtype=np.uint32)
        if len(keys) == 0:
            return np.zeros(0, dtype=np.uint32)
        self._reserve("keys_a", keys.nbytes).write(keys.tobytes())
        self._radix(len(keys))
        raw = self.order_buffer.read(size=keys.nbytes)
        return np.frombuffer(raw, dtype=np.uint32).copy()

    def _radix(self, count: int) -> None:
        blocks = max(1, -(-count // SORT_BLOCK))
        buffers = [self._reserve(name, 4 * count) for name in ("keys_a", "values_a", "keys_b",
                                                                "values_b")]
        counts = self._reserve("counts", 4 * RADIX * blocks)
        groups = (blocks + SORT_GROUP - 1) // SORT_GROUP
        source, target = (buffers[0], buffers[1]), (buffers[2], buffers[3])
        for p, shift in enumerate(range(0, 32, RADIX_BITS)):
            counts.clear(size=4 * RADIX * blocks)
            source[0].bind_to_storage_buffer(0)
            source[1].bind_to_storage_buffer(1)
            target[0].bind_to_storage_buffer(2)
            target[1].bind_to_storage_buffer(3)
            counts.bind_to_storage_buffer(4)
            self._totals.bind_to_storage_buffer(5)
            for shader in (self._count, self._scan, self._scatter):
                set_uniforms(shader, count=count, blocks=blocks, shift=shift, first=p == 0)
            self._count.run(group_x=groups)
            self.ctx.memory_barrier()
            self._scan.run(group_x=RADIX // SORT_GROUP)
            self.ctx.memory_barrier()
            self._bases.run()
            self.ctx.memory_barrier()
            self._scatter.run(group_x=groups)
            self.ctx.memory_barrier()
            source, target = target, source
        self.order_buffer = source[1]

    def release(self) -> None:
        for obj in [*self._buffers.values(), self._totals, self._keys, self._count, self._scan,
                    self._bases, self._scatter, self._textures]:
            try:
                obj.release()
            except Exception:
                pass
        self._buffers = {}


ORDER_TEXTURES_SHADER = """
#version 430
layout(local_size_x = 128) in;
layout(std430, binding = 0) readonly buffer Order { uint order[]; };
layout(r32ui, binding = 0) writeonly uniform uimage2D order_image;   // rank -> Gaussian
layout(r32ui, binding = 1) writeonly uniform uimage2D rank_image;    // Gaussian -> rank
uniform int count;
uniform int row;
void main() {
    uint k = gl_GlobalInvocationID.x;
    if (k >= uint(count)) return;
    uint i = order[k];
    imageStore(order_image, ivec2(int(k % uint(row)), int(k / uint(row))), uvec4(i));
    imageStore(rank_image, ivec2(int(i % uint(row)), int(i / uint(row))), uvec4(k));
}
"""
