#!/usr/bin/env python3
"""Build the stock avatars' asset (assets/avatars/stock.safetensors): a few people of other
builds and looks, each the default avatar on an anny body with other colours (avatar/stock.py
puts them together at load time).

Needs the `create` extra (torch + anny==0.6.2) for the bodies. Stores per person the body's
shape deltas against the template (float16: a quarter of a millimetre at the largest) and
the look, with the default avatar's palette that the looks recolour (read from
scripts/build_default_avatar.py: rebuild this asset when that palette changes).
Deterministic: the same anny gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scripts.build_default_avatar as default_look  # noqa: E402
from avatar.stock import STOCK_PATH, StockAvatar, stock_metadata  # noqa: E402
from avatar.template import load_template  # noqa: E402

PALETTE = {name.lower(): getattr(default_look, name) for name in (
    "SKIN", "PALM", "NAIL", "LIPS", "HAIR", "BROW", "LASHES", "SHIRT", "TROUSERS", "SHOES",
    "SOLE", "SCLERA", "IRIS", "LIMBUS", "PUPIL")}

# anny's phenotype: gender 0 male .. 1 female, age 0.5 a young adult .. 1 old, muscle,
# weight, height and proportions 0..1 (0.5: the template).
PEOPLE = (
    ("amara", "a woman in her thirties, slight, dark skin, black hair, mustard shirt",
     {"gender": 0.95, "age": 0.58, "weight": 0.42, "height": 0.45, "muscle": 0.45},
     {"skin": (0.42, 0.27, 0.19), "hair": (0.05, 0.04, 0.04), "iris": (0.25, 0.15, 0.08),
      "shirt": (0.82, 0.60, 0.16), "trousers": (0.14, 0.14, 0.17), "shoes": (0.10, 0.08, 0.08)}),
    ("bjorn", "a tall, strong man, fair skin, blond hair, green shirt, jeans",
     {"gender": 0.0, "age": 0.55, "weight": 0.55, "height": 0.78, "muscle": 0.75},
     {"skin": (0.93, 0.75, 0.66), "hair": (0.78, 0.62, 0.36), "iris": (0.30, 0.45, 0.65),
      "shirt": (0.20, 0.45, 0.28), "trousers": (0.17, 0.24, 0.42), "shoes": (0.36, 0.22, 0.13)}),
    ("chen", "an older, heavier man, grey hair, burgundy shirt, beige trousers",
     {"gender": 0.05, "age": 0.9, "weight": 0.78, "height": 0.4, "muscle": 0.4},
     {"skin": (0.88, 0.70, 0.55), "hair": (0.62, 0.61, 0.58), "iris": (0.22, 0.14, 0.08),
      "shirt": (0.50, 0.13, 0.17), "trousers": (0.60, 0.52, 0.38), "shoes": (0.08, 0.08, 0.08)}),
    ("dana", "a young, slim woman, auburn hair, white shirt, black trousers",
     {"gender": 1.0, "age": 0.45, "weight": 0.3, "height": 0.55, "muscle": 0.4},
     {"skin": (0.74, 0.53, 0.41), "hair": (0.45, 0.17, 0.07), "iris": (0.33, 0.48, 0.28),
      "shirt": (0.90, 0.89, 0.86), "trousers": (0.09, 0.09, 0.11), "shoes": (0.55, 0.12, 0.12)}),
)


def build() -> tuple[dict[str, np.ndarray], dict]:
    from avatar.shape import anny_shape

    template = load_template()
    tensors, avatars = {}, []
    for name, description, phenotype, look in PEOPLE:
        shape = anny_shape(phenotype, template=template)
        tensors[f"{name}.vertex_delta"] = shape.vertex_delta.astype(np.float16)
        tensors[f"{name}.bone_head_delta"] = shape.bone_head_delta.astype(np.float16)
        avatars.append(StockAvatar(name, description, shape, look))
    return tensors, stock_metadata(PALETTE, avatars)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STOCK_PATH, help="output .safetensors path")
    args = parser.parse_args()
    try:
        import anny  # noqa: F401
    except ImportError:
        print("error: needs the 'create' extra: pip install torch==2.13.0 anny==0.6.2",
              file=sys.stderr)
        return 1
    from avatar.assetfile import save_asset

    tensors, metadata = build()
    save_asset(args.out, tensors, "stock", metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, "
          f"{len(metadata['avatars'])} stock avatars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
