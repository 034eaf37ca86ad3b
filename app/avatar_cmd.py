"""`main.py avatar info FILE`: what is inside an avatar file."""

from __future__ import annotations

from pathlib import Path

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
    info.add_argument("file", help="a .lca file, or 'default'")
    info.set_defaults(func=run_info)
    from app.scan_cmd import add_parsers as add_scan_parsers

    add_scan_parsers(actions)  # export and import: splat scans out and in
    from app.create_cmd import add_parser as add_create_parser

    add_create_parser(actions)  # create: a personal avatar from a clip


def describe(path: Path) -> str:
    from avatar.lca import load_avatar_file
    from avatar.template import load_template

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
        f"licence:     {data.licence}",
        f"attribution: {data.attribution}",
        "provenance:  " + ", ".join(f"{k}={v}" for k, v in data.provenance.items()),
    ]
    return "\n".join(lines)


def run_info(args) -> int:
    from avatar.avatar import DEFAULT_AVATAR_PATH
    from avatar.lca import AvatarFileError

    path = DEFAULT_AVATAR_PATH if args.file == "default" else Path(args.file)
    try:
        print(describe(path))
    except AvatarFileError as exc:
        raise UserError(str(exc)) from None
    return 0
