"""Build assets/tracking/face_response.safetensors: how mediapipe's face mesh responds to
each of the template's blendshapes.

The template's blendshape deltas at the landmarks' surface points are not what face mesh
reports when the face makes the shape: rendered on the default avatar, a brow raise moves
the landmarks along a pattern with cosine 0.25-0.45 to the surface's own, a smile by 0.7 of
it (measured with bench/face_loop.py). And the neutral face's landmarks deform as the head
turns (1.6 mm RMS at 30 degrees of yaw, after alignment), which read as expression: a cubic
in the head's measured yaw and pitch, fitted on the neutral head over a grid of poses,
takes that out. So each fitted shape is rendered at full weight on
the GL backend at a few head yaws, tracked by the tracker's own graph (holistic, refined
face), aligned like the solver aligns (``FaceSolver.align``), and its displacement from the
same pose's neutral render averaged over the yaws; then made left-right symmetric (a left
shape is the mirror image of its right twin; an unpaired shape its own mirror), as the
template's shapes are, so one render's noise does not make one side read stronger.

    .venv/bin/python scripts/build_face_response.py
    .venv/bin/python scripts/build_face_response.py --shapes browDown,cheekPuff,mouthPucker

``--shapes`` re-measures only the shapes whose names start with one of the given prefixes
(on the avatar as it is now) and keeps every other row of the asset, and its pose term, as
they are: the asset's jawOpen and the pose term were measured on the default avatar before
its new look (eyes, lips) and read the closed loop and the real clips better than a full
rebuild on the new look does (docs/BENCHMARKS.md, issue 15's fourth and fifth passes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES  # noqa: E402
from tracking.face import (NOT_FITTED, FaceSolver, geometric_response, head_angles,  # noqa: E402
                           pose_features)
from tracking.facemesh import load_correspondence  # noqa: E402
from tracking.facemesh import (RESPONSE_PATH, FaceMeshError, load_response,  # noqa: E402
                               mirror_points, save_response)

YAWS_DEG = (-10.0, 0.0, 10.0)
# The neutral head's pose grid for the pose deformation (degrees; pitch up positive).
POSE_YAWS_DEG = (-36.0, -27.0, -18.0, -9.0, 0.0, 9.0, 18.0, 27.0, 36.0)
POSE_PITCHES_DEG = (-18.0, -9.0, 0.0, 9.0, 18.0)


def mirrored_name(name: str) -> str:
    if name.endswith("Left"):
        return name[:-4] + "Right"
    if name.endswith("Right"):
        return name[:-5] + "Left"
    return name


def pose_grid(aligned, t0: float) -> np.ndarray:
    """(9, 478, 3) the neutral face's deformation with head pose: a cubic in yaw and pitch
    fitted over the grid of ``POSE_YAWS_DEG`` x ``POSE_PITCHES_DEG``."""
    from face_loop import codes_for

    frontal = aligned(codes_for("neutral", 0.0, 0.0))
    features, offsets = [], []
    for yaw in POSE_YAWS_DEG:
        for pitch in POSE_PITCHES_DEG:
            points, head_rotation = aligned(codes_for("neutral", yaw, pitch), True)
            features.append(pose_features(*head_angles(head_rotation)))
            offsets.append((points - frontal).reshape(-1))
    pose, *_ = np.linalg.lstsq(np.array(features), np.array(offsets), rcond=None)
    pose = pose.reshape(len(features[0]), 478, 3)
    residual = np.array(offsets) - np.array(features) @ pose.reshape(len(pose), -1)
    print(f"pose grid: {time.perf_counter() - t0:.0f} s; deformation RMS "
          f"{1000 * np.sqrt(np.mean(np.square(offsets))):.2f} mm, left after the fit "
          f"{1000 * np.sqrt(np.mean(residual ** 2)):.2f} mm", file=sys.stderr)
    return pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", help="comma-separated name prefixes: re-measure only "
                        "these shapes, keep the asset's other rows and its pose term")
    args = parser.parse_args()
    fitted = [n for n in BLENDSHAPE_NAMES if n not in NOT_FITTED]
    kept = None
    if args.shapes:
        prefixes = tuple(p.strip() for p in args.shapes.split(",") if p.strip())
        unknown = [p for p in prefixes if not any(n.startswith(p) for n in fitted)]
        if unknown or not prefixes:
            raise SystemExit(f"error: --shapes: no fitted blendshape's name starts with "
                             f"{(unknown or [args.shapes])[0]!r}")
        fitted = [n for n in fitted if n.startswith(prefixes)]
        if any(mirrored_name(n) not in fitted for n in fitted):
            raise SystemExit("error: --shapes must take both sides of a left/right pair")
        try:
            kept = load_response()
        except FaceMeshError as exc:
            raise SystemExit(f"error: {exc}") from None
    from face_loop import SIZE, codes_for, head_camera

    from avatar.avatar import load_avatar
    from render.backends import get_backend
    from render.video import to_uint8
    from tracking.landmarks import LandmarkDetector

    avatar = load_avatar("default")
    # Aligned as the solver aligns, without a pose correction (this builds it).
    solver = FaceSolver(avatar.template, response=geometric_response(avatar.template,
                                                                     load_correspondence()))
    camera = head_camera(avatar.template)
    backend = get_backend("gl")
    response = np.zeros((len(BLENDSHAPE_NAMES), 478, 3))
    t0 = time.perf_counter()
    try:
        with LandmarkDetector(static_image_mode=True) as detector:
            def aligned(codes, rotation=False):
                rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
                face = detector.detect(to_uint8(rgba, (0.45, 0.45, 0.45))).face
                if face is None:
                    raise SystemExit("face mesh found no face on a render")
                return solver.align(face) if rotation else solver.align(face)[0]

            pose = kept.pose if kept is not None else pose_grid(aligned, t0)

            for yaw in YAWS_DEG:
                neutral = aligned(codes_for("neutral", yaw, 0.0))
                for name in fitted:
                    codes = codes_for("neutral", yaw, 0.0)
                    codes.face[BLENDSHAPE_INDEX[name]] = 1.0
                    response[BLENDSHAPE_INDEX[name]] += (aligned(codes) - neutral) / len(YAWS_DEG)
                print(f"yaw {yaw:+.0f}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        backend.release()
    mirror = mirror_points(solver.neutral_reference)
    flip = np.array([-1.0, 1.0, 1.0])
    symmetric = response.copy() if kept is None else kept.blendshapes.astype(np.float64)
    for name in fitted:
        twin = BLENDSHAPE_INDEX[mirrored_name(name)]
        symmetric[BLENDSHAPE_INDEX[name]] = 0.5 * (response[BLENDSHAPE_INDEX[name]]
                                                   + response[twin][mirror] * flip)
    metadata = {"yaws_deg": list(YAWS_DEG), "image_size": SIZE, "renderer": "gl",
                "graph": "holistic, refined face, static"}
    if kept is not None:
        # Which rows were measured on which avatar (the face-shape gains it had then).
        gains = avatar.template.metadata.get("face_shape_gains", {})
        metadata["remeasured"] = {"shapes": fitted, "face_shape_gains": gains}
    save_response(RESPONSE_PATH, symmetric, pose, metadata)
    print(f"wrote {RESPONSE_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
