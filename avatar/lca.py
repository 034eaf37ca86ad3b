"""The ``.lca`` avatar file: safetensors tensors plus JSON metadata. Never pickle.

Layout (format version 1). The safetensors header's metadata holds one key, ``lca``, a JSON
object with:

- ``format`` ("lca"), ``format_version`` (1), ``name``, ``gaussian_count``,
- ``template``: which template the Gaussians are bound to ({"name", "vertices", "faces",
  "bones"}; version 1 references the shipped template, see avatar/template.py),
- ``bone_names`` and ``codes_layout`` (blendshape names and the driven bones, so a reader can
  check that codes mean the same thing to it),
- ``shading``: "lambert" (colours are albedo, lit per frame from the posed normals) or
  "baked" (colours used as they are),
- ``licence``, ``attribution``, ``provenance`` (how it was made: tool, source, date).

Tensors, N Gaussians bound to the template surface (float16 or float32 unless stated):

- ``binding_face`` (N,) int32: the triangle each Gaussian rides on,
- ``binding_bary`` (N, 3): barycentric position in that triangle (each >= -0.01, sum 1),
- ``binding_offset`` (N,): distance along the triangle's normal, metres,
- ``local_quats`` (N, 4): rotation (w, x, y, z) in the triangle's local frame
  (x along the first edge, z along the normal),
- ``local_scales`` (N, 3): standard deviations in metres at rest, positive,
- ``opacities`` (N,): in [0, 1],
- ``colors`` (N, 3) RGB in [0, 1] or (N, K, 3) spherical harmonics, K in {1, 4, 9, 16}.

Optional correctives (``render.skinned.Correctives``: linear corrections of the template's
rest mesh, driven per frame by pose features), present together or not at all:

- metadata ``correctives``: {"bones": [names of the template bones whose local rotations
  drive them]}; the features are, per bone in that order, its local rotation matrix minus
  the identity (9 values, row-major), then the 52 blendshape weights (``pose_features``);
- ``corrective_index`` (V, M) int32: the features that move each template vertex,
- ``corrective_basis`` (V, M, 3): metres per unit feature, finite, at most 1 m.

Optional body shape (``avatar.shape.BodyShape``: the person's own body as deltas against the
template's rest mesh), present together or not at all:

- metadata ``shape``: {"phenotype": {anny phenotype name: value in [0, 1]},
  "local_changes": {anny local-change name: value in [-1, 1]}} (what made the deltas),
- ``shape_vertex_delta`` (V, 3) and ``shape_bone_head_delta`` (J, 3) float32: metres added
  to the template's rest vertices and bone heads, finite, each at most 1 m.

Loading validates everything (header, version, shapes, dtypes, finite values, index ranges,
the template reference) and raises ``AvatarFileError`` with one readable line; nothing from
deep inside numpy or safetensors escapes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import replacing
from common.safejson import loads as json_loads
from avatar.codes import BLENDSHAPE_NAMES, BODY_BONES, HAND_BONES, HEAD_BONES
from avatar.shape import MAX_SHAPE_DELTA_M, BodyShape, ShapeError, check_shape_parameters

FORMAT = "lca"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_GAUSSIANS = 4_000_000
MAX_HEADER_BYTES = 1024 * 1024
SHADING_MODES = ("lambert", "baked")
# Bounds relative to the template body's height (1.63 m for the shipped template), so one
# participant's avatar cannot freeze everyone else's renderer. Measured on the default
# avatar (217,200 Gaussians): largest scale 0.011 m (0.007 heights), largest offset 0.02 m,
# footprint (render_footprint_m2) 53 m^2 = 20 heights^2; one avatar scaled to 30,000 m took
# 216 s a 512x512 frame against 0.5 s. The limits leave a scanned avatar 10x room.
MAX_SCALE_OF_BODY = 0.1
MAX_OFFSET_OF_BODY = 0.1
DEFAULT_FOOTPRINT_BODIES = 20.0
MAX_FOOTPRINT_BODIES = 200.0
DEFAULT_BODY_HEIGHT_M = 1.8  # when no template is given to check against
_FLOATS = (np.float16, np.float32)


class AvatarFileError(ValueError):
    """A .lca file that cannot be used: unreadable, corrupt, hostile or incompatible."""


def codes_layout() -> dict:
    return {
        "blendshapes": list(BLENDSHAPE_NAMES),
        "head": list(HEAD_BONES),
        "body": list(BODY_BONES),
        "hands": [list(HAND_BONES[0]), list(HAND_BONES[1])],
    }


@dataclass(eq=False)
class AvatarData:
    """The contents of a .lca file, validated, as float32/int32 arrays."""

    name: str
    binding_face: np.ndarray
    binding_bary: np.ndarray
    binding_offset: np.ndarray
    local_quats: np.ndarray
    local_scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    template: dict
    bone_names: list[str]
    shading: str = "lambert"
    licence: str = "unspecified"
    attribution: str = ""
    provenance: dict = field(default_factory=dict)
    corrective_bones: list[str] = field(default_factory=list)
    corrective_index: np.ndarray | None = None   # (V, M) int32
    corrective_basis: np.ndarray | None = None   # (V, M, 3) float32
    shape: BodyShape | None = None               # the person's body; None: the template's

    def __len__(self) -> int:
        return int(self.binding_face.shape[0])

    @property
    def has_correctives(self) -> bool:
        return self.corrective_index is not None


_TENSORS = ("binding_face", "binding_bary", "binding_offset", "local_quats", "local_scales",
            "opacities", "colors")
_CORRECTIVE_TENSORS = ("corrective_index", "corrective_basis")
_SHAPE_TENSORS = ("shape_vertex_delta", "shape_bone_head_delta")
MAX_CORRECTIVE_WIDTH = 128  # features per vertex
MAX_CORRECTIVE_M = 1.0      # metres per unit feature


def save_avatar_file(path: str | Path, avatar: AvatarData, compact: bool = True) -> None:
    """Write ``avatar`` to ``path`` atomically (temporary file, then rename).

    ``compact`` stores the per-Gaussian floats as float16 (offsets and positions stay
    float32), which halves the file at no visible cost.
    """
    from safetensors.numpy import save_file

    tensors = {}
    for name in _TENSORS:
        value = np.ascontiguousarray(getattr(avatar, name))
        if name == "binding_face":
            value = value.astype(np.int32)
        elif compact and name in ("local_quats", "local_scales", "opacities", "colors"):
            value = value.astype(np.float16)
        else:
            value = value.astype(np.float32)
        tensors[name] = value
    if avatar.has_correctives:
        tensors["corrective_index"] = np.ascontiguousarray(avatar.corrective_index, np.int32)
        basis = np.ascontiguousarray(avatar.corrective_basis)
        tensors["corrective_basis"] = basis.astype(np.float16 if compact else np.float32)
    if avatar.shape is not None:
        # float32: a float16 delta of 0.5 m would be off by a quarter of a millimetre.
        tensors["shape_vertex_delta"] = np.ascontiguousarray(avatar.shape.vertex_delta,
                                                             np.float32)
        tensors["shape_bone_head_delta"] = np.ascontiguousarray(avatar.shape.bone_head_delta,
                                                                np.float32)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": avatar.name,
        "gaussian_count": len(avatar),
        "template": avatar.template,
        "bone_names": list(avatar.bone_names),
        "codes_layout": codes_layout(),
        "shading": avatar.shading,
        "licence": avatar.licence,
        "attribution": avatar.attribution,
        "provenance": avatar.provenance,
    }
    if avatar.has_correctives:
        meta["correctives"] = {"bones": list(avatar.corrective_bones)}
    if avatar.shape is not None:
        meta["shape"] = {"phenotype": dict(avatar.shape.phenotype),
                         "local_changes": dict(avatar.shape.local_changes)}
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={"lca": json.dumps(meta, sort_keys=True)})


def read_header(path: str | Path) -> tuple[dict, dict]:
    """(tensor table, lca metadata) from the safetensors header, checked for sanity."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise AvatarFileError(f"{path}: not an avatar file (too short)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len + 8 > size:
                raise AvatarFileError(f"{path}: corrupt header (declares {header_len} bytes)")
            header_bytes = handle.read(header_len)
    except FileNotFoundError:
        raise AvatarFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AvatarFileError(f"{path}: is a directory, not an avatar file") from None
    except PermissionError:
        raise AvatarFileError(f"{path}: permission denied") from None
    if size > MAX_FILE_BYTES:
        raise AvatarFileError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES} byte limit")
    try:
        header = json_loads(header_bytes, MAX_HEADER_BYTES)
        meta = json_loads(header["__metadata__"]["lca"], MAX_HEADER_BYTES)
    except (ValueError, KeyError, TypeError):  # JSONLimitError is a ValueError
        raise AvatarFileError(
            f"{path}: not an avatar file (no readable lca metadata in the header)") from None
    if not isinstance(meta, dict) or not isinstance(header, dict):
        raise AvatarFileError(f"{path}: corrupt metadata")
    header.pop("__metadata__", None)
    return header, meta


def load_avatar_file(path: str | Path, template=None) -> AvatarData:
    """Read and validate a .lca file. ``template`` (a Template) enables the index and
    bone-name checks against the template actually used for posing."""
    path = Path(path)
    header, meta = read_header(path)
    _check_meta(path, meta)
    n = meta["gaussian_count"]
    expected_shapes = {
        "binding_face": (n,), "binding_bary": (n, 3), "binding_offset": (n,),
        "local_quats": (n, 4), "local_scales": (n, 3), "opacities": (n,),
    }
    for name in _TENSORS:
        entry = header.get(name)
        if not isinstance(entry, dict) or "shape" not in entry or "dtype" not in entry:
            raise AvatarFileError(f"{path}: tensor {name!r} is missing")
    corrective = meta.get("correctives")
    shape_meta = meta.get("shape")
    expected = set(_TENSORS) | (set(_CORRECTIVE_TENSORS) if corrective is not None else set())
    expected |= set(_SHAPE_TENSORS) if shape_meta is not None else set()
    for name in expected - set(_TENSORS):
        if not isinstance(header.get(name), dict):
            raise AvatarFileError(f"{path}: tensor {name!r} is missing")
    extra = set(header) - expected
    if extra:
        raise AvatarFileError(f"{path}: unexpected tensors {sorted(extra)}")
    for name in expected:
        shape = header[name]["shape"]
        if (not isinstance(shape, list) or len(shape) > 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                           for v in shape)):
            raise AvatarFileError(f"{path}: tensor {name!r} has a malformed shape {shape!r}"[:200])
    for name, shape in expected_shapes.items():
        if tuple(header[name]["shape"]) != shape:
            raise AvatarFileError(f"{path}: {name} has shape {header[name]['shape']}, "
                                  f"expected {list(shape)}")
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError, TypeError, OverflowError) as exc:
        raise AvatarFileError(f"{path}: corrupt tensor data ({str(exc).splitlines()[0]})") from None

    if tensors["binding_face"].dtype not in (np.int32, np.int64):
        raise AvatarFileError(f"{path}: binding_face must be int32")
    for name in _TENSORS[1:]:
        if tensors[name].dtype not in _FLOATS:
            raise AvatarFileError(f"{path}: {name} has dtype {tensors[name].dtype}, "
                                  "expected float16/32")
        if not np.all(np.isfinite(tensors[name])):
            raise AvatarFileError(f"{path}: {name} contains NaN or infinity")
    if corrective is not None:
        if tensors["corrective_index"].dtype not in (np.int32, np.int64):
            raise AvatarFileError(f"{path}: corrective_index must be int32")
        basis = tensors["corrective_basis"]
        if basis.dtype not in _FLOATS or not np.all(np.isfinite(basis)):
            raise AvatarFileError(f"{path}: corrective_basis must be finite float16/32")
    if shape_meta is not None:
        for name in _SHAPE_TENSORS:
            if tensors[name].dtype not in _FLOATS or not np.all(np.isfinite(tensors[name])):
                raise AvatarFileError(f"{path}: {name} must be finite float16/32")
    integers = ("binding_face", "corrective_index")
    arrays = {k: (v.astype(np.int32) if k in integers else v.astype(np.float32))
              for k, v in tensors.items()}
    colors = arrays["colors"]
    if not (colors.shape == (n, 3) or (colors.ndim == 3 and colors.shape[0] == n
                                       and colors.shape[1] in (1, 4, 9, 16)
                                       and colors.shape[2] == 3)):
        raise AvatarFileError(f"{path}: colors has shape {list(colors.shape)}")
    if meta["shading"] == "lambert" and colors.ndim != 2:
        raise AvatarFileError(f"{path}: lambert shading needs RGB colours, not spherical harmonics")
    faces = arrays["binding_face"]
    face_count = meta["template"]["faces"]
    if n and (faces.min() < 0 or faces.max() >= face_count):
        raise AvatarFileError(f"{path}: binding_face indexes outside the template's "
                              f"{face_count} triangles")
    bary = arrays["binding_bary"]
    if np.any(bary < -0.01) or np.any(np.abs(bary.sum(1) - 1) > 0.01):
        raise AvatarFileError(f"{path}: binding_bary is not a barycentric position")
    if np.any(arrays["local_scales"] <= 0):
        raise AvatarFileError(f"{path}: local_scales must be positive")
    if np.any(arrays["opacities"] < 0) or np.any(arrays["opacities"] > 1):
        raise AvatarFileError(f"{path}: opacities must be in [0, 1]")
    if n and np.any(np.linalg.norm(arrays["local_quats"], axis=1) < 1e-3):
        raise AvatarFileError(f"{path}: local_quats holds zero quaternions")
    if template is not None:
        ref = meta["template"]
        actual = {"vertices": len(template.vertices), "faces": len(template.faces),
                  "bones": len(template.bone_names)}
        if (any(ref[k] != actual[k] for k in actual)
                or list(meta["bone_names"]) != list(template.bone_names)):
            raise AvatarFileError(f"{path}: made for another template ({ref['name']}: {ref})")
    shape = _check_shape(path, meta, arrays) if shape_meta is not None else None
    body_height_m = DEFAULT_BODY_HEIGHT_M
    if template is not None:
        rest = template.vertices if shape is None else template.vertices + shape.vertex_delta
        body_height_m = float(np.ptp(rest[:, 1]))
    check_render_cost(path, arrays["local_scales"], arrays["binding_offset"],
                      arrays["opacities"], body_height_m)
    correctives = {}
    if corrective is not None:
        correctives = _check_correctives(path, meta, arrays)
    return AvatarData(
        name=meta["name"], template=meta["template"], bone_names=list(meta["bone_names"]),
        shading=meta["shading"], licence=meta["licence"], attribution=meta["attribution"],
        provenance=meta["provenance"], shape=shape, **arrays, **correctives,
    )


def render_footprint_m2(local_scales: np.ndarray, opacities: np.ndarray) -> float:
    """The area the Gaussians cover at rest, m^2: per Gaussian, the 3-sigma ellipse of its two
    largest axes (pi * 3 s1 * 3 s2), weighted by opacity. A splatting renderer's work grows
    with this area (pixels touched per Gaussian), whatever the camera, so it bounds the cost
    of a frame of the avatar relative to any other."""
    ordered = np.sort(np.asarray(local_scales, np.float64), axis=1)
    return float(np.sum(np.pi * 9.0 * ordered[:, 2] * ordered[:, 1]
                        * np.asarray(opacities, np.float64)))


def check_render_cost(path, local_scales: np.ndarray, binding_offset: np.ndarray,
                      opacities: np.ndarray, body_height_m: float) -> None:
    """Refuse Gaussians too big or too far from the body for the body they ride on, and an
    avatar whose frame would cost far more to render than a normal one (see the limits)."""
    biggest = float(local_scales.max())
    if biggest > MAX_SCALE_OF_BODY * body_height_m:
        raise AvatarFileError(
            f"{path}: a Gaussian {biggest:.3g} m across is too big for a "
            f"{body_height_m:.2f} m body (limit {MAX_SCALE_OF_BODY * body_height_m:.3g} m)")
    furthest = float(np.abs(binding_offset).max())
    if furthest > MAX_OFFSET_OF_BODY * body_height_m:
        raise AvatarFileError(
            f"{path}: a Gaussian {furthest:.3g} m off the body surface is too far "
            f"(limit {MAX_OFFSET_OF_BODY * body_height_m:.3g} m)")
    footprint = render_footprint_m2(local_scales, opacities)
    limit = MAX_FOOTPRINT_BODIES * body_height_m ** 2
    if footprint > limit:
        raise AvatarFileError(
            f"{path}: too costly to render: its Gaussians cover {footprint:.4g} m^2 at rest, "
            f"over the limit of {limit:.4g} m^2 (the default avatar covers about "
            f"{DEFAULT_FOOTPRINT_BODIES * body_height_m ** 2:.3g})")


def corrective_feature_count(bone_count: int) -> int:
    """D: 9 values per driving bone, then the 52 blendshape weights."""
    return 9 * bone_count + len(BLENDSHAPE_NAMES)


def _check_correctives(path: Path, meta: dict, arrays: dict) -> dict:
    """The corrective fields of ``AvatarData`` (popped from ``arrays``), checked."""
    corrective = meta["correctives"]
    bones = corrective.get("bones") if isinstance(corrective, dict) else None
    if (not isinstance(bones, list) or not all(isinstance(b, str) for b in bones)
            or len(set(bones)) != len(bones) or not set(bones) <= set(meta["bone_names"])):
        raise AvatarFileError(f"{path}: correctives name bones the template lacks")
    index = arrays.pop("corrective_index").astype(np.int64)
    basis = arrays.pop("corrective_basis")
    vertices = meta["template"]["vertices"]
    if (index.ndim != 2 or index.shape[0] != vertices
            or not 1 <= index.shape[1] <= MAX_CORRECTIVE_WIDTH
            or basis.shape != (*index.shape, 3)):
        raise AvatarFileError(f"{path}: corrective tensors have shapes {list(index.shape)} and "
                              f"{list(basis.shape)}, expected ({vertices}, M) and "
                              f"({vertices}, M, 3) with M <= {MAX_CORRECTIVE_WIDTH}")
    count = corrective_feature_count(len(bones))
    if index.min() < 0 or index.max() >= count:
        raise AvatarFileError(f"{path}: corrective_index outside its {count} features")
    if np.abs(basis).max() > MAX_CORRECTIVE_M:
        raise AvatarFileError(f"{path}: corrective_basis over {MAX_CORRECTIVE_M} m a feature")
    return {"corrective_bones": list(bones), "corrective_index": index.astype(np.int32),
            "corrective_basis": basis}


def _check_shape(path: Path, meta: dict, arrays: dict) -> BodyShape:
    """The body shape of ``AvatarData`` (its tensors popped from ``arrays``), checked."""
    shape = meta["shape"]
    if not isinstance(shape, dict) or set(shape) != {"phenotype", "local_changes"}:
        raise AvatarFileError(f"{path}: metadata 'shape' must hold phenotype and local_changes")
    try:
        check_shape_parameters(shape["phenotype"], shape["local_changes"])
    except ShapeError as exc:
        raise AvatarFileError(f"{path}: {exc}") from None
    vertex_delta = arrays.pop("shape_vertex_delta")
    head_delta = arrays.pop("shape_bone_head_delta")
    expected = [(meta["template"]["vertices"], 3), (meta["template"]["bones"], 3)]
    if [vertex_delta.shape, head_delta.shape] != expected:
        raise AvatarFileError(f"{path}: shape deltas have shapes {list(vertex_delta.shape)} and "
                              f"{list(head_delta.shape)}, expected {list(expected[0])} and "
                              f"{list(expected[1])}")
    largest = max(float(np.abs(vertex_delta).max(initial=0.0)),
                  float(np.abs(head_delta).max(initial=0.0)))
    if largest > MAX_SHAPE_DELTA_M:
        raise AvatarFileError(f"{path}: a shape delta of {largest:.3g} m is over the "
                              f"{MAX_SHAPE_DELTA_M} m limit")
    return BodyShape(dict(shape["phenotype"]), dict(shape["local_changes"]),
                     vertex_delta, head_delta)


def _check_meta(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise AvatarFileError(f"{path}: not an avatar file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise AvatarFileError(f"{path}: format version {version!r} is not supported "
                              f"(this program reads version {FORMAT_VERSION})")
    types = {"name": str, "gaussian_count": int, "template": dict, "bone_names": list,
             "shading": str, "licence": str, "attribution": str, "provenance": dict}
    for key, kind in types.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise AvatarFileError(f"{path}: metadata field {key!r} is missing or not a "
                                  f"{kind.__name__}")
    if meta["gaussian_count"] == 0:
        raise AvatarFileError(f"{path}: holds no Gaussians (nothing to render)")
    if not 0 <= meta["gaussian_count"] <= MAX_GAUSSIANS:
        raise AvatarFileError(f"{path}: gaussian_count {meta['gaussian_count']} is out of range")
    if meta["shading"] not in SHADING_MODES:
        raise AvatarFileError(f"{path}: unknown shading {meta['shading']!r}")
    template = meta["template"]
    for key in ("vertices", "faces", "bones"):
        if not isinstance(template.get(key), int) or template[key] <= 0:
            raise AvatarFileError(f"{path}: template reference lacks {key!r}")
    if not isinstance(template.get("name"), str):
        raise AvatarFileError(f"{path}: template reference lacks a name")
    layout = meta.get("codes_layout")
    if layout != codes_layout():
        raise AvatarFileError(f"{path}: its codes layout differs from this program's")
