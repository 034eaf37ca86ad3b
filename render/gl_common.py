"""Helpers every OpenGL module of render/ shares (the splatter, the GPU poser, the GPU sort):
uniforms and data-texture packing. No GL state of its own."""

from __future__ import annotations

import numpy as np

from render.gl_tiles import ROW, rows_for


def set_uniforms(program, **values) -> None:
    """Set the uniforms the shader compiler kept (it drops the ones a shader never reads)."""
    for name, value in values.items():
        if name in program:
            program[name].value = value


def texel_rows(items: np.ndarray, parts: int = 1) -> tuple[bytes, int]:
    """(bytes, rows) of (M, parts * 4) values laid out ROW items per texture row, padded."""
    rows = rows_for(len(items))
    out = np.zeros((rows * ROW, parts * 4), dtype=items.dtype)
    out[:len(items), :items.shape[1]] = items
    return out.tobytes(), rows
