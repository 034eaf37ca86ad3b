"""How far real expressions move face mesh's points, against the avatar's shapes: each real
expression's aligned landmark displacement (``FaceSolver.align``, against the clip's own calm
frames, or the template's neutral for a photograph) projected on a shape's column over that
shape's region, in units of the column. Two columns per shape: the surface's (the deltas
the solver fits, ``tracking.face.surface_basis``: anny's own) and face mesh's measured response
to a render of the avatar's shape at 1.0 (the response asset, scripts/build_face_response.py).

A real expression near full strength that holds several units of the render's response
shows that the avatar's shape, as face mesh sees it, is weaker than a real face's.

    .venv/bin/python bench/face_real_response.py [--cache real.pkl]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.codes import BLENDSHAPE_INDEX  # noqa: E402

MEDIA = Path(__file__).resolve().parents[1] / ".cache" / "media"
# (label, clip, frames of the expression, calm frames, shapes), checked by eye (issue 15's
# third pass): testMovie's strong brow raise; cap12's raised brows, its smile with teeth.
CHECKS = [
    ("testMovie brow raise", "testMovie", (142, 190), (0, 30),
     ("browInnerUp", "browOuterUpLeft", "browOuterUpRight")),
    ("cap12 frame 79 brows", "cap12_edit", (79, 80), (500, 560),
     ("browInnerUp", "browOuterUpLeft", "browOuterUpRight")),
    ("cap12 frame 201 smile", "cap12_edit", (201, 202), (500, 560),
     ("mouthSmileLeft", "mouthSmileRight")),
    ("cap12 frame 290 'O'", "cap12_edit", (290, 291), (500, 560),
     ("mouthPucker", "mouthFunnel", "jawOpen")),
]
FRAMES = {"testMovie": 237, "cap12_edit": 560}


def track(say=print) -> dict:
    """Face landmarks (pixels) per frame of the clips (split backend, video) and of
    skimage's astronaut (holistic, photograph)."""
    import skimage.data

    from tracking.landmarks import LandmarkDetector
    from tracking.sources import VideoSource

    out = {}
    for name, limit in FRAMES.items():
        source = VideoSource(MEDIA / f"{name}.mp4")
        faces = []
        try:
            with LandmarkDetector(parts=("face",)) as detector:
                while len(faces) < limit:
                    frame = source.read()
                    if frame is None:
                        break
                    faces.append(detector.detect(frame.image).face)
        finally:
            source.close()
        say(f"  {name}: {len(faces)} frames")
        out[name] = faces
    with LandmarkDetector(static_image_mode=True) as detector:
        out["astronaut"] = detector.detect(skimage.data.astronaut()).face
    return out


def load_or_track(cache: str | None) -> dict:
    """The clips' landmarks from ``cache`` (a pickle this module wrote), or tracked now and
    written there. A file that is not such a cache ends the run with one error line."""
    path = Path(cache) if cache else None
    if path is not None and path.exists():
        try:
            faces = pickle.loads(path.read_bytes())
        except Exception as exc:  # a pickle can fail in many ways; all mean "not a cache"
            sys.exit(f"error: {path} is not a landmark cache ({type(exc).__name__}); "
                     "delete it to track the clips again")
        if not isinstance(faces, dict) or not {*FRAMES, "astronaut"} <= set(faces):
            sys.exit(f"error: {path} is not a landmark cache (no {', '.join(FRAMES)}); "
                     "delete it to track the clips again")
        return faces
    faces = track(say=lambda s: print(s, file=sys.stderr))
    if path is not None:
        path.write_bytes(pickle.dumps(faces))
    return faces


def units(displacement: np.ndarray, column: np.ndarray, region: np.ndarray) -> float:
    """Least-squares multiple of ``column`` in ``displacement`` over ``region`` points."""
    c, d = column[region].reshape(-1), displacement[region].reshape(-1)
    return float(c @ d / (c @ c))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="pickle of the tracked landmarks (made if missing)")
    args = parser.parse_args()

    from avatar.template import load_template
    from tracking.face import FaceSolver, surface_basis
    from tracking.facemesh import load_correspondence, load_response

    faces = load_or_track(args.cache)
    template = load_template()
    surface = surface_basis(template, load_correspondence())
    measured = load_response().blendshapes

    def aligned(clip):
        solver = FaceSolver(template)
        return np.array([solver.align(f)[0] if f is not None else np.full((478, 3), np.nan)
                         for f in faces[clip]])

    print(f"{'expression':24s} {'shape':17s} {'surface RMS':>11s} {'units':>6s} "
          f"{'render RMS':>10s} {'units':>6s}")
    cache: dict = {}
    for label, clip, (a0, a1), (c0, c1), shapes in CHECKS:
        if clip not in cache:
            cache[clip] = aligned(clip)
        points = cache[clip]
        displacement = (np.nanmedian(points[a0:a1], axis=0)
                        - np.nanmedian(points[c0:c1], axis=0))
        report(label, displacement, shapes, surface, measured)
    solver = FaceSolver(template)
    if faces["astronaut"] is not None:
        displacement = solver.align(faces["astronaut"])[0] - solver.neutral_reference
        report("astronaut vs template", displacement, ("mouthSmileLeft", "mouthSmileRight"),
               surface, measured)


def report(label, displacement, shapes, surface, measured) -> None:
    for name in shapes:
        k = BLENDSHAPE_INDEX[name]
        size = np.linalg.norm(surface[k], axis=1)
        region = size > 0.3 * size.max()
        rms = [1000 * float(np.sqrt(np.mean(np.sum(col[k][region] ** 2, axis=1))))
               for col in (surface, measured)]
        read = [units(displacement, col[k], region) for col in (surface, measured)]
        print(f"{label:24s} {name:17s} {rms[0]:8.1f} mm {read[0]:6.2f} "
              f"{rms[1]:7.1f} mm {read[1]:6.2f}")


if __name__ == "__main__":
    main()
