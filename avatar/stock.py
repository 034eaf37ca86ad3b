"""Stock avatars: people of other builds and looks, made from the default avatar.

Each stock avatar is the default avatar's Gaussians (the same bindings to the template's
triangles, so the same clothes, hair and eyes, made by scripts/build_default_avatar.py) on
another body (an anny phenotype: ``avatar.shape.BodyShape``) with other colours of skin,
hair, eyes, shirt, trousers and shoes. The asset (assets/avatars/stock.safetensors, built by
scripts/build_stock_avatars.py) holds only each body's shape deltas (float16) and the looks;
the avatar is put together at load time (``load_avatar("stock:NAME")``, a fraction of a
second on top of loading the default).

Recolouring: every Gaussian of the default avatar is given the part of the default look it
was painted with (nearest colour of the default palette by chromaticity and brightness,
among the parts its template region can carry: a shirt on the body, hair on the head, an
iris on the eyes), then multiplied by the new colour over the default one for that part, so
the shading the default's builder painted (creases, nail folds, lash lines, hair layers)
carries over.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from avatar.lca import AvatarData
from avatar.shape import BodyShape
from avatar.template import Template

STOCK_PATH = Path(__file__).resolve().parents[1] / "assets" / "avatars" / "stock.safetensors"
STOCK_FORMAT = "splatcall-stock-avatars/1"
PREFIX = "stock:"
LOOK_PARTS = ("skin", "hair", "iris", "shirt", "trousers", "shoes")
# Default palette entries -> the look part that recolours them (absent: kept as they are).
PART_OF = {"skin": "skin", "palm": "skin", "nail": "skin", "lips": "skin", "hair": "hair",
           "brow": "hair", "lashes": "hair", "iris": "iris", "limbus": "iris",
           "shirt": "shirt", "trousers": "trousers", "shoes": "shoes"}
# What each template region may carry, by default palette entry.
REGION_PALETTE = {
    "head": ("skin", "lips", "hair", "brow", "lashes"),
    "body": ("skin", "shirt", "trousers", "shoes", "sole"),
    "foot": ("skin", "trousers", "shoes", "sole"),
    "hand": ("skin", "palm", "nail"),
    "eye_front": ("sclera", "iris", "limbus", "pupil"),
    "eye_cavity": ("skin", "lashes"),
}


class StockError(ValueError):
    """An unknown stock avatar, or a stock asset that does not fit the default avatar."""


@dataclasses.dataclass(frozen=True)
class StockAvatar:
    name: str
    description: str
    shape: BodyShape
    look: dict[str, tuple[float, float, float]]   # LOOK_PARTS -> sRGB albedo


def load_stock(path: str | Path = STOCK_PATH) -> tuple[dict, dict[str, StockAvatar]]:
    """(the default palette the stock looks are relative to, stock avatars by name)."""
    from avatar.assetfile import load_asset

    tensors, meta = load_asset(path, "stock", STOCK_FORMAT, StockError,
                               "run scripts/build_stock_avatars.py")
    avatars = {}
    for name, entry in meta["avatars"].items():
        shape = BodyShape(entry["phenotype"], entry["local_changes"],
                          tensors[f"{name}.vertex_delta"].astype(np.float32),
                          tensors[f"{name}.bone_head_delta"].astype(np.float32))
        avatars[name] = StockAvatar(name, entry["description"], shape,
                                    {k: tuple(v) for k, v in entry["look"].items()})
    return meta["palette"], avatars


def stock_names(path: str | Path = STOCK_PATH) -> list[str]:
    return sorted(load_stock(path)[1])


def stock_avatar_data(name: str, default: AvatarData, template: Template,
                      path: str | Path = STOCK_PATH) -> AvatarData:
    """The stock avatar ``name`` as AvatarData: ``default``'s Gaussians, recoloured, on the
    stock body (``default``: the shipped default avatar's data; ``template``: the shipped
    template)."""
    palette, avatars = load_stock(path)
    if name not in avatars:
        raise StockError(f"no stock avatar {name!r}; there are {', '.join(sorted(avatars))}")
    stock = avatars[name]
    colors = recolour(default.colors, part_of_gaussians(default, template, palette), palette,
                      stock.look)
    return dataclasses.replace(
        default, name=name, colors=colors, shape=stock.shape,
        attribution=default.attribution,
        provenance={"tool": "avatar.stock", "stock": name, "description": stock.description,
                    "phenotype": stock.shape.phenotype, "made_from": "the default avatar"})


def part_of_gaussians(data: AvatarData, template: Template, palette: dict) -> np.ndarray:
    """(N,) the default palette entry each Gaussian was painted with (index into
    ``list(palette)``; -1: a region no look recolours, such as the mouth's inside)."""
    names = list(palette)
    colours = np.asarray([palette[n] for n in names], dtype=np.float64)
    region = np.array([r.split(".")[0] for r in template.region_names])[
        template.face_regions[data.binding_face]]
    rgb = np.asarray(data.colors if data.colors.ndim == 2 else data.colors[:, 0], np.float64)
    out = np.full(len(rgb), -1, dtype=np.int64)
    for group, allowed in REGION_PALETTE.items():
        rows = np.flatnonzero(region == group)
        if not len(rows):
            continue
        index = np.array([names.index(a) for a in allowed])
        distance = _colour_distance(rgb[rows, None, :], colours[None, index, :])
        out[rows] = index[np.argmin(distance, axis=1)]
    return out


def _colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chromaticity difference plus a smaller brightness term: a shaded colour (a crease, a
    lash line over skin) stays nearest the colour it shades."""
    sa, sb = a.sum(-1) + 1e-3, b.sum(-1) + 1e-3
    chroma = np.linalg.norm(a / sa[..., None] - b / sb[..., None], axis=-1)
    return 3.0 * chroma + 0.3 * np.abs(np.log(sa / sb))


def recolour(colors: np.ndarray, parts: np.ndarray, palette: dict, look: dict) -> np.ndarray:
    """``colors`` (N, 3) albedo with each Gaussian of a recoloured part multiplied by the
    look's colour over the palette's for that part, clipped to [0, 1]."""
    names = list(palette)
    out = np.array(colors, dtype=np.float32, copy=True)
    for index, name in enumerate(names):
        part = PART_OF.get(name)
        if part is None or part not in look:
            continue
        base = np.asarray(palette[PART_OF_BASE.get(name, name)], dtype=np.float64)
        ratio = np.asarray(look[part], dtype=np.float64) / np.maximum(base, 1e-3)
        rows = parts == index
        out[rows] = np.clip(out[rows] * ratio, 0.0, 1.0)
    return out


# Entries recoloured by their part's ratio taken at the part's main colour (a palm takes the
# skin's ratio, a brow the hair's).
PART_OF_BASE = {"palm": "skin", "nail": "skin", "lips": "skin", "brow": "hair",
                "lashes": "hair", "limbus": "iris"}


def describe_stock(path: str | Path = STOCK_PATH) -> str:
    """One line a stock avatar: its name and what it is."""
    lines = []
    _, avatars = load_stock(path)
    for name in sorted(avatars):
        stock = avatars[name]
        lines.append(f"stock:{name:10s} {stock.description}")
    return "\n".join(lines)


def stock_metadata(palette: dict, avatars: list[StockAvatar]) -> dict:
    """The asset's metadata (what scripts/build_stock_avatars.py writes)."""
    return {"format": STOCK_FORMAT, "palette": {k: list(v) for k, v in palette.items()},
            "avatars": {a.name: {"description": a.description,
                                 "phenotype": a.shape.phenotype,
                                 "local_changes": a.shape.local_changes,
                                 "look": {k: list(v) for k, v in a.look.items()}}
                        for a in avatars}}
