"""`main.py avatar export` and `main.py avatar import`: Gaussian-splat scans out and in.

Export poses an avatar (a built-in pose or a codes frame), bakes its shading for that pose
and writes a 3DGS PLY, a .splat or an .spz (``avatar.splatfile``).

Import turns a static splat scan of one standing person into a drivable ``.lca``:
``avatar.scanfit`` finds the floor and the person and offers up / facing candidates; here
each candidate is rendered (GL backend) and the tracker's landmarks (mediapipe holistic,
``tracking.landmarks``) say which shows an upright person from the front (a face found,
the left shoulder on the image's right); then the template is fitted, every Gaussian bound
to it, and the file written. A scan in which no candidate shows a person, or that the
template fits poorly, is refused.
"""

from __future__ import annotations

import hashlib
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from app.cli import UserError

LCA_TARGET_BYTES = 20_000_000
MIN_COVERAGE = 0.6          # of the template's surface within 3 cm of the scan
MAX_RMS_M = 0.04            # scan centres to the fitted surface (those under 10 cm)
VIEW_SIZE = (320, 480)
VIEW_GAUSSIANS = 250_000    # a sample is enough for the landmarks


def add_parsers(actions) -> None:
    """Register ``export`` and ``import`` under ``main.py avatar``."""
    from app.poses import POSES
    from avatar.splatfile import AXES

    export = actions.add_parser(
        "export", help="write an avatar, posed, as a Gaussian-splat file (.ply, .splat, .spz)",
        description="Pose an avatar (a built-in pose or one codes frame), bake its shading for "
        "that pose and write it as a 3DGS PLY (Inria's layout), a .splat (32 bytes a Gaussian) "
        "or an .spz (Niantic's compressed format), by the --out extension. PLY and .splat are "
        "written in OpenCV axes (y down, z forward), as splat viewers expect; .spz in its own "
        "RUB axes (OpenGL's, which are ours).")
    export.add_argument("avatar", help="a .lca file, or 'default'")
    export.add_argument("--out", type=Path, required=True, help="FILE.ply, FILE.splat or FILE.spz")
    source = export.add_mutually_exclusive_group()
    source.add_argument("--pose", choices=sorted(POSES), help="built-in pose (default: rest)")
    source.add_argument("--codes", type=Path, help="a codes JSONL file")
    export.add_argument("--frame", type=int, default=0, help="frame of --codes to use (default: 0)")
    export.add_argument("--time", type=float, default=0.0,
                        help="seconds into an animated --pose (default: 0)")
    export.add_argument("--axes", choices=AXES,
                        help="axes to write: opencv (x right, y down, z forward) or openxr (ours: "
                        "y up, the avatar facing +z); default: opencv for .ply and .splat, "
                        "openxr for .spz (its own convention)")
    export.set_defaults(func=run_export)

    imp = actions.add_parser(
        "import", help="turn a Gaussian-splat scan of a person into a drivable avatar (.lca)",
        description="Find the standing person in a splat scan (.ply, .splat or .spz; any units, "
        "orientation and position, floor and clutter allowed), fit the template to them, bind "
        "every Gaussian on the body to the template's surface and write a drivable .lca. "
        "Needs the 'create' and 'scan' extras (torch, scipy).")
    imp.add_argument("scan", type=Path, help="a .ply, .splat or .spz scan")
    imp.add_argument("--out", type=Path, required=True, help="the .lca file to write")
    imp.add_argument("--max-gaussians", type=int,
                     help="keep at most this many (the most visible); default: as many as keep "
                     "the file at or under 20 MB")
    imp.add_argument("--name", help="the avatar's name (default: the scan's file name)")
    imp.add_argument("--no-shape", dest="shape", action="store_false",
                     help="keep the template's body, only scaled to the scan (by default "
                     "anny's body shape is fitted to the scan and stored in the avatar)")
    imp.set_defaults(func=run_import)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- export ------------------------------------------------------------------------------

def export_codes(args):
    from app.poses import POSES
    from app.cli import read_codes

    if args.codes is None:
        return POSES[args.pose or "rest"].codes(args.time)
    frames = read_codes(args.codes)
    if not 0 <= args.frame < len(frames):
        raise UserError(f"{args.codes}: has {len(frames)} frame(s); "
                        f"--frame {args.frame} is not one")
    return frames[args.frame]


def run_export(args) -> int:
    from avatar.avatar import load_avatar
    from avatar.lca import AvatarFileError
    from avatar.splatfile import SplatFileError, format_of, write_splat_file

    try:
        format_of(args.out)
    except SplatFileError as exc:
        raise UserError(str(exc)) from None
    if not args.out.parent.is_dir():
        raise UserError(f"output folder {args.out.parent} does not exist")
    if args.time < 0 or not np.isfinite(args.time):
        raise UserError("--time must be a non-negative number of seconds")
    try:
        avatar = load_avatar(args.avatar)
    except AvatarFileError as exc:
        raise UserError(str(exc)) from None
    gaussians = avatar.pose(export_codes(args))
    try:
        size = write_splat_file(args.out, gaussians, args.axes)
    except SplatFileError as exc:
        raise UserError(str(exc)) from None
    _log(f"wrote {args.out}: {len(gaussians)} Gaussians, {size / 1e6:.2f} MB")
    return 0


# -- import: finding the person ------------------------------------------------------------

def view_shows_person(landmarks) -> tuple[bool, bool]:
    """(a body is found upright, it faces the camera) from one render's landmarks: nose
    above hips above ankles, spanning a third of the image; facing: a face is found and
    the person's left shoulder is on the image's right (measured: a back view finds no face
    and swaps the shoulders)."""
    from tracking.landmarks import (
        LEFT_ANKLE,
        LEFT_HIP,
        LEFT_SHOULDER,
        NOSE,
        RIGHT_ANKLE,
        RIGHT_HIP,
        RIGHT_SHOULDER,
    )

    pose = landmarks.pose
    if pose is None:
        return False, False
    nose_y = pose[NOSE, 1]
    hip_y = pose[[LEFT_HIP, RIGHT_HIP], 1].mean()
    ankle_y = pose[[LEFT_ANKLE, RIGHT_ANKLE], 1].mean()
    upright = nose_y < hip_y < ankle_y and ankle_y - nose_y > landmarks.height / 3
    facing = landmarks.face is not None and pose[LEFT_SHOULDER, 0] > pose[RIGHT_SHOULDER, 0]
    return upright, upright and facing


def placed_view(scan, person, placement):
    """The person's Gaussians (a sample of at most VIEW_GAUSSIANS) moved by ``placement``
    into the template's space, for rendering."""
    from common.rotation import matrix_to_quat, quat_multiply
    from render.gaussians import Gaussians

    sample = np.flatnonzero(person)
    if len(sample) > VIEW_GAUSSIANS:
        sample = np.sort(np.random.default_rng(0).choice(sample, VIEW_GAUSSIANS, replace=False))
    view = scan.subset(sample)
    q = matrix_to_quat(placement.rotation)
    return Gaussians(placement.apply(view.means), quat_multiply(q, view.quats),
                     view.scales * placement.scale, view.opacities, view.colors)


def find_orientation(scan, person, floor, template_height):
    """The first (up, facing) candidate whose render shows an upright person from the
    front, as an initial placement; UserError if none does."""
    from app.render_cmd import preset_camera
    from avatar.scanfit import facing_candidates, initial_placement, up_candidates
    from render.backends import get_backend
    from render.video import to_uint8
    from tracking.landmarks import LandmarkDetector

    points = scan.means[person]
    camera = preset_camera("front", *VIEW_SIZE)
    backend = get_backend("gl")
    detector = LandmarkDetector(parts=("pose", "face"), backend="holistic",
                                static_image_mode=True)
    tried = 0
    try:
        for up in up_candidates(points, floor):
            for index, facing in enumerate(facing_candidates(points, up)):
                placement = initial_placement(points, up, facing, floor, template_height)
                placed = placed_view(scan, person, placement)
                image = to_uint8(backend.render(placed, camera), (1.0, 1.0, 1.0))
                upright, frontal = view_shows_person(detector.detect(image))
                tried += 1
                if frontal:
                    _log(f"  found the person upright and facing the camera in view {tried}")
                    return placement
                if not upright and index == 0:
                    break  # no body, or upside down, in the likeliest facing: next up axis
    finally:
        detector.close()
        backend.release()
    raise UserError(f"no standing person found in the scan: the tracker sees no upright body "
                    f"facing the camera in any of {tried} views of it")


# Tracker landmarks -> the template bone whose head (joint) they mark.
LANDMARK_JOINTS = {13: "lowerarm01.L", 14: "lowerarm01.R", 15: "wrist.L", 16: "wrist.R",
                   25: "lowerleg01.L", 26: "lowerleg01.R", 27: "foot.L", 28: "foot.R"}
LIMB_PAIRS = ((13, 15, 14, 16), (25, 27, 26, 28))  # (left a, left b, right a, right b)


def _ray(camera, pixel):
    """(origin, unit direction) in world space of the ray through an image point."""
    direction_cv = np.array([(pixel[0] - camera.cx) / camera.fx,
                             (pixel[1] - camera.cy) / camera.fy, 1.0])
    direction = camera.cv_from_world[:3, :3].T @ direction_cv
    return camera.position, direction / np.linalg.norm(direction)


def triangulate(ray_a, ray_b) -> tuple[np.ndarray, float]:
    """The midpoint of the closest points of two rays, and their distance apart."""
    (c1, d1), (c2, d2) = ray_a, ray_b
    matrix = np.array([[d1 @ d1, -d1 @ d2], [d1 @ d2, -d2 @ d2]])
    t1, t2 = np.linalg.lstsq(matrix, np.array([(c2 - c1) @ d1, (c2 - c1) @ d2]), rcond=None)[0]
    p1, p2 = c1 + t1 * d1, c2 + t2 * d2
    return (p1 + p2) / 2, float(np.linalg.norm(p1 - p2))


def find_joints(placed) -> dict[str, np.ndarray]:
    """Elbows, wrists, knees and ankles of the placed person (template space), triangulated
    from the tracker's landmarks in a front and a side render. In the side view the tracker
    may swap left and right: each limb takes the pairing whose rays meet more closely."""
    from app.render_cmd import preset_camera
    from render.backends import get_backend
    from render.video import to_uint8
    from tracking.landmarks import LandmarkDetector

    cameras = [preset_camera(kind, *VIEW_SIZE) for kind in ("front", "side")]
    backend = get_backend("gl")
    detector = LandmarkDetector(parts=("pose",), backend="holistic", static_image_mode=True)
    try:
        views = [detector.detect(to_uint8(backend.render(placed, camera), (1.0, 1.0, 1.0)))
                 for camera in cameras]
    finally:
        detector.close()
        backend.release()
    if any(view.pose is None for view in views):
        return {}
    front, side = (view.pose[:, :2] for view in views)
    joints = {}
    for left_a, left_b, right_a, right_b in LIMB_PAIRS:
        pairings = []
        for swap in (False, True):
            found, gap = {}, 0.0
            for ours, theirs in ((left_a, right_a), (left_b, right_b), (right_a, left_a),
                                 (right_b, left_b)):
                point, miss = triangulate(_ray(cameras[0], front[ours]),
                                          _ray(cameras[1], side[theirs if swap else ours]))
                found[LANDMARK_JOINTS[ours]] = point
                gap += miss
            pairings.append((gap, found))
        joints.update(min(pairings, key=lambda pairing: pairing[0])[1])
    return joints


# -- import ---------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_scan(path: Path, name: str, max_gaussians: int | None, shape: bool = True):
    """The .lca contents (AvatarData) made from a splat scan; UserError on a bad one."""
    from avatar.lca import AvatarData, codes_layout  # noqa: F401  (layout checked on save)
    from avatar.scanfit import (
        ScanFitError,
        bind_scan,
        find_floor,
        lca_bytes_per_gaussian,
        person_points,
    )
    from avatar.splatfile import SplatFileError, format_of, read_splat_file
    from avatar.template import load_template

    started = time.monotonic()
    try:
        scan = read_splat_file(path)
    except SplatFileError as exc:
        raise UserError(str(exc)) from None
    _log(f"read {path}: {len(scan):,} Gaussians")
    template = load_template()
    template_height = float(template.vertices[:, 1].max() - template.vertices[:, 1].min())
    floor = find_floor(scan.means)
    person = person_points(scan.means, floor)
    if person.sum() < 1000:
        raise UserError(f"{path}: no person-sized lump of Gaussians found "
                        f"({int(person.sum())} after removing the floor)")
    _log(f"  {'a floor, and ' if floor is not None else ''}{int(person.sum()):,} Gaussians "
         f"in the largest lump ({time.monotonic() - started:.1f} s)")
    placement = find_orientation(scan, person, floor, template_height)
    joints = find_joints(placed_view(scan, person, placement))
    _log(f"  {len(joints)} limb joints triangulated; fitting the template "
         f"({time.monotonic() - started:.1f} s)")
    points = placement.apply(scan.means[person])
    try:
        shape, template, fit = fit_body(points, template, joints, floor is not None, shape)
    except ScanFitError as exc:
        raise UserError(f"{path}: {exc}") from None
    _log(f"  fit: {fit.rms_m * 1000:.1f} mm RMS, {fit.thickness_m * 1000:+.1f} mm thicker than "
         f"the fitted body, {fit.coverage:.0%} of it covered "
         f"({time.monotonic() - started:.1f} s)")
    if fit.coverage < MIN_COVERAGE or fit.rms_m > MAX_RMS_M:
        raise UserError(f"{path}: does not look like a standing person: the body template "
                        f"covers {fit.coverage:.0%} of it at {fit.rms_m * 1000:.0f} mm RMS")
    body_from_scan = fit.refine(placement)
    # The header (names, provenance) takes a few kilobytes of the 20 MB.
    limit = max_gaussians or (LCA_TARGET_BYTES - 65536) // lca_bytes_per_gaussian(scan.colors)
    bound = bind_scan(scan, body_from_scan, fit, template, limit, floor)
    if len(bound.face) == 0:
        raise UserError(f"{path}: no Gaussians lie on the fitted body")
    _log(f"  kept {len(bound.face):,} Gaussians: dropped {bound.dropped_background:,} off the "
         f"body and {bound.dropped_thinning:,} over the limit of {limit:,} "
         f"({time.monotonic() - started:.1f} s)")
    meta = {"vertices": len(template.vertices), "faces": len(template.faces),
            "bones": len(template.bone_names)}
    return AvatarData(
        name=name, binding_face=bound.face, binding_bary=bound.bary,
        binding_offset=bound.offset, local_quats=bound.local_quats,
        local_scales=bound.local_scales, opacities=bound.opacities, colors=bound.colors,
        template={"name": template.metadata.get("name", "anny"), **meta},
        bone_names=list(template.bone_names), shading="baked",
        licence="as the scan's", attribution=f"from the splat scan {path.name}",
        provenance={
            "tool": "main.py avatar import", "date": date.today().isoformat(),
            "source": path.name, "source_sha256": sha256_of(path),
            "source_format": format_of(path), "source_gaussians": len(scan),
            "kept": len(bound.face), "dropped_off_body": bound.dropped_background,
            "dropped_over_limit": bound.dropped_thinning,
            "scan_units_per_metre": round(1.0 / body_from_scan.scale, 6),
            "fit_rms_mm": round(fit.rms_m * 1000, 2), "fit_coverage": round(fit.coverage, 3),
            "shape": (f"anny's phenotype fitted ({_phenotype_text(shape)})" if shape else
                      "the template's body") + f", scaled to the scan, "
                     f"{fit.thickness_m * 1000:+.1f} mm thicker (in the offsets)",
        }, shape=shape)


# The fitted body must come this much closer to the scan to be kept. Measured (mean
# two-sided distance, template's body -> fitted): the default avatar's own rest and walking
# scans 4.2 -> 4.3 and 9.2 -> 9.1 mm (the fit would explain clothes and hair, and made the
# walking one heavier: weight 0.78); stock:chen (heavier, older) 7.1 -> 5.8 mm (19 %,
# weight 0.86 found for 0.78); stock:amara 4.7 -> 4.6 mm (her gender, 0.95, not found: 0.61).
SHAPE_MIN_GAIN = 0.1


def fit_body(points, template, joints, floor, shape=True):
    """(BodyShape or None, the shaped template, ScanFit): the template posed onto the placed
    scan (Adam only), anny's shape fitted to the points in that pose, then the shaped
    template posed again and refined (ICP) onto them (issue 14). ``shape`` False: the
    template's own body, posed and refined."""
    from avatar.scanfit import fit_template
    from avatar.shape import fit_shape_to_points

    if not shape:
        fit = fit_template(points, template, joints=joints, floor=floor,
                           progress=lambda step, total: _log(f"    step {step}/{total}"))
        return None, template, fit

    first = fit_template(points, template, joints=joints, floor=floor, refine_steps=0,
                         progress=lambda step, total: _log(f"    pose step {step}/{total}"))
    started = time.monotonic()
    shape, before, after = fit_shape_to_points(points, template, first.local_rotations,
                                               first.scale, first.shift)
    _log(f"  body shape fitted in {time.monotonic() - started:.1f} s: {_phenotype_text(shape)}; "
         f"the body's mean distance to the scan {before * 1000:.1f} -> {after * 1000:.1f} mm")
    if after > (1.0 - SHAPE_MIN_GAIN) * before:
        # A body the template already fits: anny's parameters would explain the clothes' and
        # hair's Gaussians off the skin, not the person (kept, the default avatar's own
        # scans came back heavier: the rest scan drove 1 dB worse, the walking one 6 dB).
        _log(f"  keeping the template's body (the shape gains under {SHAPE_MIN_GAIN:.0%})")
        shape = None
    shaped = shape.apply(template) if shape is not None else template
    fit = fit_template(points, shaped, joints=joints, floor=floor,
                       progress=lambda step, total: _log(f"    step {step}/{total}"))
    return shape, shaped, fit


def _phenotype_text(shape) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in shape.phenotype.items())


def run_import(args) -> int:
    from avatar.lca import save_avatar_file

    if args.out.suffix.lower() != ".lca":
        raise UserError(f"--out must end in .lca, got {args.out.name!r}")
    if not args.out.parent.is_dir():
        raise UserError(f"output folder {args.out.parent} does not exist")
    if args.max_gaussians is not None and args.max_gaussians < 1:
        raise UserError("--max-gaussians must be at least 1")
    try:
        import scipy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise UserError(f"avatar import needs {exc.name}: "
                        "pip install -e '.[create,scan]'") from None
    data = import_scan(args.scan, args.name or args.scan.stem, args.max_gaussians, args.shape)
    save_avatar_file(args.out, data)
    _log(f"wrote {args.out}: {len(data):,} Gaussians, {args.out.stat().st_size / 1e6:.2f} MB")
    return 0
