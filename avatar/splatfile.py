"""Gaussian-splat files other tools read and write: the 3DGS PLY, ``.splat`` and ``.spz``.

One call each way: ``write_splat_file(path, gaussians, axes)`` and ``read_splat_file(path,
axes) -> Gaussians``; the format comes from the extension.

- ``.ply``: Inria's 3DGS layout, binary little-endian float32 ``x y z nx ny nz f_dc_0..2
  f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3``. ``f_rest`` is channel-major (all red
  coefficients, then green, then blue); opacity is a logit, scales are logs, the rotation is
  (w, x, y, z) and need not be normalised; colour = 0.5 + 0.28209479 f_dc. Written and read
  with ``plyfile`` (after our own header check: the vertex count against the file's size).
  Normals are written as zeros, as 3DGS does.
- ``.splat`` (antimatter15's web viewer format, no header): 32 bytes a Gaussian, position
  and linear scales as float32, colour and opacity as RGBA bytes, the unit quaternion
  (w, x, y, z) as bytes ``q * 128 + 128``. No spherical harmonics (the DC colour is kept).
  Written by hand: no kept library writes it.
- ``.spz`` (Niantic's gzipped format, MIT): a 16-byte header, 24-bit fixed-point positions
  (12 fractional bits), 8-bit log scales, colours, alphas and SH, rotations as smallest-three
  10-bit components (version 3). Written and read with ``gsply`` (the ``scan`` extra), which
  also reads versions 1, 2 and 4. We read the header first (magic, version, count).

Axes: our world is OpenXR's (right-handed, +Y up, the avatar facing +Z; "RUB"). ``axes``
names the axes of the file: ``"opencv"`` (x right, y down, z forward: "RDF", what 3DGS
training writes and what PLY and .splat viewers assume) or ``"openxr"`` (ours, which is also
SPZ's own RUB convention). The two differ by a half turn about X (y and z negated); the
spherical harmonics turn with it. ``DEFAULT_AXES`` gives each format its usual convention.

Every failure on reading (truncated, malformed, missing or unexpected properties, NaN, an
absurd count, empty) is one ``SplatFileError`` line naming the file; writing goes to a
temporary name, renamed when complete.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from common.rotation import quat_multiply
from render.gaussians import SH_COUNTS, Gaussians

FORMATS = (".ply", ".splat", ".spz")
AXES = ("opencv", "openxr")
DEFAULT_AXES = {".ply": "opencv", ".splat": "opencv", ".spz": "openxr"}
MAX_GAUSSIANS = 20_000_000
SH_C0 = 0.28209479177387814
SPLAT_RECORD_BYTES = 32
SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
PLY_NORMALS = ("nx", "ny", "nz")
_PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                 "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_PLY_TYPES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2,
              "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4,
              "float32": 4, "double": 8, "float64": 8}
# Sign of each SH coefficient under a half turn about X (y -> -y, z -> -z), bands 0-3 in
# render.reference.sh_basis's order.
_SH_HALF_TURN_X = np.array([1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1],
                           dtype=np.float32)


class SplatFileError(ValueError):
    """A splat file that cannot be read or written: one readable line naming the file."""


def format_of(path: str | Path) -> str:
    """The format (".ply", ".splat" or ".spz") of a path, or SplatFileError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise SplatFileError(f"{Path(path).name}: unknown splat format {suffix or '(none)'!r}; "
                             f"use {', '.join(FORMATS)}")
    return suffix


# -- axes --------------------------------------------------------------------------------

def change_axes(gaussians: Gaussians, source: str, target: str) -> Gaussians:
    """The same Gaussians with their coordinates converted between ``AXES``."""
    for axes in (source, target):
        if axes not in AXES:
            raise ValueError(f"unknown axes {axes!r}; use {', '.join(AXES)}")
    if source == target:
        return gaussians
    flip = np.array([1.0, -1.0, -1.0], dtype=np.float32)
    half_turn_x = np.array([0.0, 1.0, 0.0, 0.0])
    colors = gaussians.colors
    if colors.ndim == 3:
        colors = colors * _SH_HALF_TURN_X[: colors.shape[1], None]
    return Gaussians(gaussians.means * flip, quat_multiply(half_turn_x, gaussians.quats),
                     gaussians.scales, gaussians.opacities, colors)


# -- colours -----------------------------------------------------------------------------

def dc_and_rest(gaussians: Gaussians) -> tuple[np.ndarray, np.ndarray]:
    """(f_dc (N, 3), SH rest (N, K-1, 3)) of any colours: RGB is degree 0."""
    c = gaussians.colors
    if c.ndim == 2:
        return ((c - 0.5) / SH_C0).astype(np.float32), np.zeros((len(c), 0, 3), np.float32)
    return c[:, 0, :], c[:, 1:, :]


def colors_from_sh(dc: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Gaussians' colours from f_dc and SH rest: RGB in [0, 1] when there is no rest."""
    if rest.shape[1] == 0:
        return np.clip(0.5 + SH_C0 * dc, 0.0, 1.0).astype(np.float32)
    return np.concatenate([dc[:, None, :], rest], axis=1).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -60, 60)))).astype(np.float32)


# -- writing -----------------------------------------------------------------------------

def write_splat_file(path: str | Path, gaussians: Gaussians, axes: str | None = None) -> int:
    """Write world-space Gaussians (OpenXR axes) to ``path`` in the format of its extension,
    in ``axes`` (default: the format's usual ones). Returns the bytes written."""
    path = Path(path)
    suffix = format_of(path)
    g = change_axes(gaussians.subset(gaussians.finite_mask()), "openxr",
                    axes or DEFAULT_AXES[suffix])
    tmp = path.with_name(path.name + ".part")
    try:
        {".ply": _write_ply, ".splat": _write_splat, ".spz": _write_spz}[suffix](tmp, g)
        tmp.replace(path)
    except OSError as exc:
        raise SplatFileError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def ply_properties(sh_rest: int) -> list[str]:
    """Property names of a 3DGS PLY with ``sh_rest`` SH coefficients per channel after DC."""
    return ["x", "y", "z", *PLY_NORMALS, "f_dc_0", "f_dc_1", "f_dc_2",
            *(f"f_rest_{i}" for i in range(3 * sh_rest)),
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def _write_ply(path: Path, g: Gaussians) -> None:
    from plyfile import PlyData, PlyElement

    dc, rest = dc_and_rest(g)
    names = ply_properties(rest.shape[1])
    columns = np.concatenate([
        g.means, np.zeros((len(g), 3), np.float32), dc,
        rest.transpose(0, 2, 1).reshape(len(g), 3 * rest.shape[1]),  # channel-major
        _logit(g.opacities)[:, None], np.log(g.scales), g.quats,
    ], axis=1).astype("<f4")
    vertex = np.ascontiguousarray(columns).view([(n, "<f4") for n in names]).reshape(-1)
    PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(path))


def _write_splat(path: Path, g: Gaussians) -> None:
    dc, _ = dc_and_rest(g)
    record = np.zeros(len(g), dtype=[("position", "<f4", 3), ("scale", "<f4", 3),
                                     ("rgba", "u1", 4), ("rotation", "u1", 4)])
    record["position"], record["scale"] = g.means, g.scales
    rgb = 0.5 + SH_C0 * dc
    record["rgba"] = np.clip(np.round(np.concatenate([rgb, g.opacities[:, None]], 1) * 255), 0, 255)
    q = g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True)
    record["rotation"] = np.clip(np.round(q * 128 + 128), 0, 255)
    record.tofile(path)


def _write_spz(path: Path, g: Gaussians) -> None:
    gsply = _import_gsply()
    dc, rest = dc_and_rest(g)
    data = gsply.GSData.from_arrays(g.means, np.log(g.scales), g.quats, _logit(g.opacities),
                                    dc, rest if rest.shape[1] else None, format="ply")
    gsply.spz.write_spz(path, data, version=3)


def _import_gsply():
    try:
        import gsply
        import gsply.spz
    except ImportError:
        raise SplatFileError(".spz needs the gsply package: pip install -e '.[scan]'") from None
    return gsply


# -- reading -----------------------------------------------------------------------------

def read_splat_file(path: str | Path, axes: str | None = None) -> Gaussians:
    """Gaussians from a splat file, converted from ``axes`` (default: the format's usual
    ones) to ours. Raises SplatFileError on anything that is not a usable splat."""
    path = Path(path)
    suffix = format_of(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise SplatFileError(f"{path}: not a file")
    except FileNotFoundError:
        raise SplatFileError(f"{path}: no such file") from None
    if size == 0:
        raise SplatFileError(f"{path}: empty file")
    try:
        g = {".ply": _read_ply, ".splat": _read_splat, ".spz": _read_spz}[suffix](path, size)
    except PermissionError:
        raise SplatFileError(f"{path}: permission denied") from None
    if len(g) == 0:
        raise SplatFileError(f"{path}: holds no Gaussians")
    bad = ~np.isfinite(np.concatenate([g.means, g.quats, g.scales, g.opacities[:, None],
                                       g.colors.reshape(len(g), -1)], axis=1)).all(axis=1)
    if bad.any():
        raise SplatFileError(f"{path}: {int(bad.sum())} Gaussian(s) hold NaN or infinite values")
    if np.any(np.linalg.norm(g.quats, axis=1) < 1e-8):
        raise SplatFileError(f"{path}: holds zero-length rotations")
    g.quats /= np.linalg.norm(g.quats, axis=1, keepdims=True)
    return change_axes(g, axes or DEFAULT_AXES[suffix], "openxr")


def _check_count(path: Path, count: int, what: str) -> None:
    if count > MAX_GAUSSIANS:
        raise SplatFileError(f"{path}: {what} {count:,} Gaussians, over the limit of "
                             f"{MAX_GAUSSIANS:,}")


def read_ply_header(path: Path, size: int) -> tuple[str, int, list[tuple[str, str]], int]:
    """(format, vertex count, [(property, type)], header bytes) of a PLY, checked against
    the file's size before any data is read."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise SplatFileError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    header_bytes = head.index(b"\n", end) + 1 if b"\n" in head[end:] else len(head)
    try:
        lines = head[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise SplatFileError(f"{path}: corrupt PLY header (not ASCII)") from None
    fmt, count, props, element = "", -1, [], None
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            element = words[1]
            if element == "vertex":
                try:
                    count = int(words[2])
                except ValueError:
                    raise SplatFileError(f"{path}: corrupt vertex count {words[2]!r}") from None
        elif words[0] == "property" and element == "vertex":
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise SplatFileError(f"{path}: unexpected vertex property {' '.join(words[1:])!r}"
                                     " (a 3DGS PLY has scalar properties only)")
            props.append((words[2], words[1]))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise SplatFileError(f"{path}: unknown PLY format {fmt!r}")
    if count < 0:
        raise SplatFileError(f"{path}: no vertex element (not a Gaussian splat PLY)")
    _check_count(path, count, "header promises")
    if fmt != "ascii":
        needed = header_bytes + count * sum(_PLY_TYPES[t] for _, t in props)
        if size < needed:
            raise SplatFileError(f"{path}: truncated: the header promises {count:,} Gaussians "
                                 f"({needed:,} bytes) but the file has {size:,}")
    return fmt, count, props, header_bytes


def _read_ply(path: Path, size: int) -> Gaussians:
    from plyfile import PlyData, PlyParseError

    _, count, props, _ = read_ply_header(path, size)
    names = [n for n, _ in props]
    missing = [n for n in _PLY_REQUIRED if n not in names]
    if missing:
        raise SplatFileError(f"{path}: missing 3DGS properties {', '.join(missing)} "
                             "(not a Gaussian splat PLY)")
    rest_names = sorted((n for n in names if n.startswith("f_rest_")),
                        key=lambda n: int(n[7:]) if n[7:].isdigit() else -1)
    unexpected = [n for n in names if n not in _PLY_REQUIRED and n not in PLY_NORMALS
                  and n not in rest_names]
    if unexpected:
        raise SplatFileError(f"{path}: unexpected properties {', '.join(unexpected)}")
    rest_count = len(rest_names) // 3
    expected_rest = [f"f_rest_{i}" for i in range(3 * rest_count)]
    if (rest_count + 1) not in SH_COUNTS or rest_names != expected_rest:
        raise SplatFileError(f"{path}: f_rest properties {len(rest_names)} do not form SH "
                             "degree 1, 2 or 3 (9, 24 or 45 values)")
    try:
        vertex = PlyData.read(str(path))["vertex"].data
    except (PlyParseError, ValueError, TypeError, IndexError, EOFError, OSError) as exc:
        first_line = str(exc).splitlines()[0][:120]
        raise SplatFileError(f"{path}: corrupt PLY data ({first_line})") from None
    if len(vertex) != count:
        raise SplatFileError(f"{path}: read {len(vertex)} of {count} Gaussians")

    def column(*keys: str) -> np.ndarray:
        return np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=1)

    dc = column("f_dc_0", "f_dc_1", "f_dc_2")
    rest = column(*rest_names).reshape(count, 3, rest_count).transpose(0, 2, 1) if rest_count \
        else np.zeros((count, 0, 3), np.float32)
    with np.errstate(over="ignore"):
        scales = np.exp(column("scale_0", "scale_1", "scale_2"))
    return Gaussians(column("x", "y", "z"), column("rot_0", "rot_1", "rot_2", "rot_3"), scales,
                     _sigmoid(column("opacity")[:, 0]), colors_from_sh(dc, rest))


def _read_splat(path: Path, size: int) -> Gaussians:
    if size % SPLAT_RECORD_BYTES:
        raise SplatFileError(f"{path}: {size} bytes is not a whole number of 32-byte .splat "
                             "records (truncated or not a .splat file)")
    _check_count(path, size // SPLAT_RECORD_BYTES, "holds")
    record = np.fromfile(path, dtype=[("position", "<f4", 3), ("scale", "<f4", 3),
                                      ("rgba", "u1", 4), ("rotation", "u1", 4)])
    rgba = record["rgba"].astype(np.float32) / 255.0
    quats = (record["rotation"].astype(np.float32) - 128.0) / 128.0
    scales = record["scale"].astype(np.float32)
    if np.any(scales[np.isfinite(scales)] <= 0):
        raise SplatFileError(f"{path}: holds zero or negative scales (not a .splat file?)")
    return Gaussians(record["position"], quats, scales, rgba[:, 3], rgba[:, :3])


def read_spz_header(path: Path) -> tuple[int, int, int]:
    """(version, count, SH degree) from an .spz's header (gzip, or NGSP version 4)."""
    with path.open("rb") as handle:
        raw = handle.read(4096)
    if raw[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, 16)
        except zlib.error:
            raise SplatFileError(f"{path}: corrupt gzip stream (not an .spz file?)") from None
    else:
        head = raw[:16]
    if len(head) < 16:
        raise SplatFileError(f"{path}: truncated .spz header")
    magic, version, count, sh_degree = struct.unpack("<IIIB", head[:13])
    if magic != SPZ_MAGIC:
        raise SplatFileError(f"{path}: not an .spz file (magic {magic:#010x})")
    if version not in (1, 2, 3, 4):
        raise SplatFileError(f"{path}: .spz version {version} is not supported (1 to 4)")
    if sh_degree > 3:
        raise SplatFileError(f"{path}: SH degree {sh_degree} is not supported (0 to 3)")
    _check_count(path, count, "header promises")
    return version, count, sh_degree


def _read_spz(path: Path, size: int) -> Gaussians:
    _, count, _ = read_spz_header(path)
    gsply = _import_gsply()
    try:
        data = gsply.spz.read_spz(path)
    except (ValueError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as exc:
        raise SplatFileError(f"{path}: corrupt .spz ({str(exc).splitlines()[0][:120]})") from None
    if len(data.means) != count:
        raise SplatFileError(f"{path}: read {len(data.means)} of {count} Gaussians")
    shn = data.shN if data.shN is not None and data.shN.size else np.zeros((count, 0, 3))
    with np.errstate(over="ignore"):
        scales = np.exp(np.asarray(data.scales, dtype=np.float32))
    return Gaussians(data.means, data.quats, scales, _sigmoid(np.asarray(data.opacities)),
                     colors_from_sh(np.asarray(data.sh0, np.float32), np.asarray(shn, np.float32)))

