"""Face-mesh geometry: which template surface point each of the 478 landmarks sits on.

The correspondence asset (``assets/tracking/face_correspondence.safetensors``, built by
``scripts/build_face_correspondence.py``) was made by running mediapipe's face mesh on a
render of the default avatar's neutral head and casting each landmark's pixel ray onto
the template mesh: per landmark a triangle and barycentric weights, plus ``neutral``, the
478 landmarks as mediapipe placed them on that neutral face, in template metres (world
axes, rest pose). Loaded with numpy alone.

The response asset (``face_response.safetensors``, ``scripts/build_face_response.py``)
holds how face mesh's aligned landmarks move with each blendshape and with head pose,
measured on renders of the default avatar (``Response``).

Landmark index groups used by the solvers are named here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import replacing
from avatar.template import Template

CORRESPONDENCE_PATH = (Path(__file__).resolve().parents[1] / "assets" / "tracking"
                       / "face_correspondence.safetensors")
CORRESPONDENCE_FORMAT = "splatcall-face-correspondence/1"
RESPONSE_PATH = CORRESPONDENCE_PATH.with_name("face_response.safetensors")
RESPONSE_FORMAT = "splatcall-face-response/1"

# Points that move little with expression: forehead, nose bridge, temples, outer face.
STABLE = np.array([10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 127, 356, 234, 454, 21, 251, 54,
                   284, 103, 332, 67, 297, 109, 338, 93, 323, 132, 361, 33, 263, 133, 362])
# Eyes, in the person's own sides (the person's right eye appears on the image's left).
RIGHT_EYE = {"outer": 33, "inner": 133, "upper": 159, "lower": 145, "iris": 468}
LEFT_EYE = {"outer": 263, "inner": 362, "upper": 386, "lower": 374, "iris": 473}
# Inner lip contour, middle of the upper and of the lower lip.
LIPS = {"upper": 13, "lower": 14}
IRIS_RIGHT = np.arange(468, 473)
IRIS_LEFT = np.arange(473, 478)


class FaceMeshError(RuntimeError):
    """The correspondence asset is missing or broken (rebuild it with the project script)."""


@dataclass(eq=False)
class Correspondence:
    """triangle (478,) int32 template face indices, bary (478, 3) float32, neutral (478, 3)
    float32 metres (mediapipe's landmarks on the neutral template head, rest pose)."""

    triangle: np.ndarray
    bary: np.ndarray
    neutral: np.ndarray
    metadata: dict

    def surface_points(self, template: Template, vertices: np.ndarray | None = None) -> np.ndarray:
        """(478, 3) points on the template surface (rest vertices unless given)."""
        vertices = template.vertices if vertices is None else vertices
        corners = vertices[template.faces[self.triangle]]  # (478, 3, 3)
        return np.einsum("nk,nkj->nj", self.bary, corners)

    def blendshape_basis(self, template: Template) -> np.ndarray:
        """(52, 478, 3) displacement of each landmark's surface point per blendshape."""
        corners = template.blendshapes[:, template.faces[self.triangle]]  # (52, 478, 3, 3)
        return np.einsum("nk,bnkj->bnj", self.bary, corners)


def save_correspondence(path: str | Path, triangle, bary, neutral, metadata: dict) -> None:
    from safetensors.numpy import save_file

    metadata = {"format": CORRESPONDENCE_FORMAT, **metadata}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        save_file({"triangle": np.asarray(triangle, np.int32),
                   "bary": np.asarray(bary, np.float32),
                   "neutral": np.asarray(neutral, np.float32)}, str(tmp),
                  metadata={"correspondence": json.dumps(metadata)})


def load_correspondence(path: str | Path = CORRESPONDENCE_PATH) -> Correspondence:
    from avatar.assetfile import load_asset

    path = Path(path)
    tensors, metadata = load_asset(path, "correspondence", CORRESPONDENCE_FORMAT, FaceMeshError,
                                   "run scripts/build_face_correspondence.py")
    shapes = {"triangle": (478,), "bary": (478, 3), "neutral": (478, 3)}
    for name, shape in shapes.items():
        if name not in tensors or tensors[name].shape != shape:
            raise FaceMeshError(f"{path}: {name} missing or not shaped {shape}")
    return Correspondence(tensors["triangle"], tensors["bary"], tensors["neutral"], metadata)


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with target ~ s R source + t (Umeyama), points (N, 3)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    a, b = source - mu_s, target - mu_t
    cov = b.T @ a / len(source)
    u, d, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[2, 2] = -1.0
    rotation = u @ fix @ vt
    var = float(np.mean(np.sum(a * a, axis=1)))
    scale = float(np.trace(np.diag(d) @ fix) / max(var, 1e-12))
    translation = mu_t - scale * rotation @ mu_s
    return scale, rotation, translation


def mirror_points(points: np.ndarray, iterations: int = 10) -> np.ndarray:
    """(N,) index of each face-mesh point's mirror twin, by nearest neighbour after fitting
    the mirror image onto the face (a few rounds of rigid ICP: the face need not face the
    x axis exactly)."""
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    twin = np.arange(len(points))
    for _ in range(iterations):
        distances = np.linalg.norm(mirrored[:, None] - points[None], axis=2)
        twin = np.argmin(distances, axis=1)
        _, rotation, translation = similarity(mirrored, points[twin])
        mirrored = mirrored @ rotation.T + translation
    return twin


@dataclass(eq=False)
class Response:
    """How face mesh's aligned landmarks respond, measured on renders of the default avatar
    (``scripts/build_face_response.py``): ``blendshapes`` (52, 478, 3) metres per unit of
    each weight; ``pose`` (K, 478, 3) metres per pose feature (``face.pose_features`` of the
    head's yaw and pitch): the neutral face's deformation with head pose."""

    blendshapes: np.ndarray
    pose: np.ndarray


def save_response(path: str | Path, blendshapes: np.ndarray, pose: np.ndarray,
                  metadata: dict) -> None:
    from avatar.assetfile import save_asset

    save_asset(path, {"blendshapes": np.asarray(blendshapes, np.float32),
                      "pose": np.asarray(pose, np.float32)}, "response",
               {"format": RESPONSE_FORMAT, **metadata})


def load_response(path: str | Path = RESPONSE_PATH) -> Response:
    from avatar.assetfile import load_asset

    tensors, _ = load_asset(path, "response", RESPONSE_FORMAT, FaceMeshError,
                            "run scripts/build_face_response.py")
    blendshapes, pose = tensors.get("blendshapes"), tensors.get("pose")
    if blendshapes is None or blendshapes.shape != (52, 478, 3):
        raise FaceMeshError(f"{path}: blendshapes missing or not shaped (52, 478, 3)")
    if pose is None or pose.ndim != 3 or pose.shape[1:] != (478, 3):
        raise FaceMeshError(f"{path}: pose missing or not shaped (K, 478, 3)")
    return Response(blendshapes, pose)
