"""`main.py avatar info FILE` and `avatar list`: what is inside an avatar file, which
avatars come with the program."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.cli import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("avatar", help="make your own avatar; inspect avatar (.lca) files, "
                       "export and import splat scans",
                       description="Make your own avatar from a clip; inspect avatar files; "
                       "export them as splat scans, or import a splat scan of a person as an "
                       "avatar.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="print what an avatar file holds",
                              description="Print an avatar file's name, Gaussian count, bones, "
                              "size, licence and provenance. FILE may be 'default' for the "
                              "embedded avatar.")
    info.add_argument("file", help="a .lca file, 'default' or 'stock:NAME'")
    info.set_defaults(func=run_info)
    listing = actions.add_parser("list", help="list the avatars that come with the program",
                                 description="List the embedded default avatar and the stock "
                                 "avatars (people of other builds and looks); use one with "
                                 "--avatar stock:NAME.")
    listing.set_defaults(func=run_list)
    from app.scan_cmd import add_parsers as add_scan_parsers

    add_scan_parsers(actions)  # export and import: splat scans out and in
    from app.create_cmd import add_parser as add_create_parser

    add_create_parser(actions)  # create: a personal avatar from a clip


def describe(path: Path, data=None) -> str:
    """What the avatar file at ``path`` holds (``data``: its contents already loaded, for a
    stock avatar, which has no file of its own)."""
    from avatar.lca import load_avatar_file
    from avatar.template import load_template

    if data is None:
        data = load_avatar_file(path, load_template())
    from render.gaussians import SH_COUNTS

    colours = "RGB" if data.colors.ndim == 2 else f"SH degree {SH_COUNTS[data.colors.shape[1]]}"
    lines = [
        f"file:        {path}",
        f"name:        {data.name}",
        f"size:        {path.stat().st_size / 1e6:.2f} MB",
        f"gaussians:   {len(data)} ({colours}, shading {data.shading})",
        f"template:    {data.template['name']} ({data.template['vertices']} vertices, "
        f"{data.template['faces']} triangles, {data.template['bones']} bones)",
        f"bones:       {', '.join(data.bone_names[:6])}, ... ({len(data.bone_names)} in all)",
        "correctives: " + (f"{len(data.corrective_bones)} driving bones + 52 face weights, "
                           f"{data.corrective_index.shape[1]} features a vertex"
                           if data.has_correctives else "none"),
        "body:        " + (", ".join(f"{k} {v:.2f}" for k, v in data.shape.phenotype.items())
                           + f" (anny; {np.ptp(_rest_heights(data)):.2f} m tall)"
                           if data.shape is not None else "the template's"),
        f"licence:     {data.licence}",
        f"attribution: {data.attribution}",
        "provenance:  " + ", ".join(f"{k}={v}" for k, v in data.provenance.items()),
    ]
    return "\n".join(lines)


def _rest_heights(data):
    from avatar.template import load_template

    return (load_template().vertices + data.shape.vertex_delta)[:, 1]


def run_info(args) -> int:
    from avatar.avatar import DEFAULT_AVATAR_PATH, load_avatar
    from avatar.lca import AvatarFileError

    try:
        if args.file.startswith("stock:"):
            data = load_avatar(args.file).data
            print(describe(DEFAULT_AVATAR_PATH, data).replace(
                f"file:        {DEFAULT_AVATAR_PATH}", f"file:        {args.file} (built from "
                f"{DEFAULT_AVATAR_PATH.name} and the stock asset)"))
            return 0
        path = DEFAULT_AVATAR_PATH if args.file == "default" else Path(args.file)
        print(describe(path))
    except AvatarFileError as exc:
        raise UserError(str(exc)) from None
    return 0


def run_list(args) -> int:
    from avatar.stock import StockError, describe_stock

    print(f"{'default':16s} the embedded default avatar")
    try:
        print(describe_stock())
    except StockError as exc:
        raise UserError(str(exc)) from None
    return 0
