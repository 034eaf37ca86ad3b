"""Cameras: a view transform plus pinhole intrinsics.

Conventions, shared by every backend:

- ``camera_from_world`` (4, 4) is a rigid transform in OpenGL/OpenXR camera axes: the camera
  looks down -Z, +Y is up, +X is right. ``cv_from_world`` gives the same camera in OpenCV axes
  (+Z forward, +Y down), which the rasterising maths uses.
- Intrinsics ``fx, fy, cx, cy`` are in pixels. The image spans [0, width] x [0, height] with
  its origin at the top-left corner; pixel (col i, row j) has its centre at (i + 0.5, j + 0.5).
  A point at OpenCV camera coordinates (x, y, z) lands at (fx x / z + cx, fy y / z + cy).
- An OpenXR field of view (angle_left < 0 < angle_right, angle_down < 0 < angle_up, radians)
  gives an asymmetric frustum through ``Camera.from_fov``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


class CameraError(ValueError):
    """A camera that cannot project: bad size, non-finite or non-rigid transform."""


@dataclass(eq=False)
class Camera:
    camera_from_world: np.ndarray
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    near: float = 0.05
    far: float = 100.0

    def __post_init__(self) -> None:
        self.camera_from_world = np.asarray(self.camera_from_world, dtype=np.float64)
        if (self.camera_from_world.shape != (4, 4)
                or not np.all(np.isfinite(self.camera_from_world))):
            raise CameraError("camera_from_world must be a finite 4x4 matrix")
        rotation = self.camera_from_world[:3, :3]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
            raise CameraError("camera_from_world must be a rigid transform (orthonormal rotation)")
        self.width, self.height = int(self.width), int(self.height)
        if self.width < 0 or self.height < 0:
            raise CameraError(f"image size {self.width}x{self.height} is negative")
        values = (self.fx, self.fy, self.cx, self.cy, self.near, self.far)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise CameraError("intrinsics must be finite with positive focal lengths")
        if not 0 < self.near < self.far:
            raise CameraError("need 0 < near < far")

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_fov(cls, camera_from_world, width: int, height: int, angle_left: float,
                 angle_right: float, angle_up: float, angle_down: float, **kw) -> "Camera":
        """A camera with OpenXR's XrFovf angles (radians; left and down negative)."""
        tl, tr = math.tan(angle_left), math.tan(angle_right)
        tu, td = math.tan(angle_up), math.tan(angle_down)
        if not (tr > tl and tu > td):
            raise CameraError("field of view must have right > left and up > down")
        fx = width / (tr - tl)
        fy = height / (tu - td)
        return cls(camera_from_world, width, height, fx, fy, cx=-tl * fx, cy=tu * fy, **kw)

    @classmethod
    def look_at(cls, eye, target, width: int, height: int, vertical_fov_deg: float = 40.0,
                up=(0.0, 1.0, 0.0), **kw) -> "Camera":
        """A symmetric pinhole camera at ``eye`` looking at ``target`` (world, metres)."""
        eye = np.asarray(eye, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - eye
        if np.linalg.norm(forward) < 1e-9:
            raise CameraError("eye and target coincide")
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-9:
            right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        true_up = np.cross(right, forward)
        world_from_camera = np.eye(4)
        world_from_camera[:3, 0], world_from_camera[:3, 1] = right, true_up
        world_from_camera[:3, 2], world_from_camera[:3, 3] = -forward, eye
        f = 0.5 * height / math.tan(math.radians(vertical_fov_deg) / 2)
        return cls(np.linalg.inv(world_from_camera), width, height, f, f, width / 2, height / 2,
                   **kw)

    # -- derived -----------------------------------------------------------------------
    @property
    def cv_from_world(self) -> np.ndarray:
        return CV_FROM_GL @ self.camera_from_world

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world space (3,)."""
        r, t = self.camera_from_world[:3, :3], self.camera_from_world[:3, 3]
        return -r.T @ t

    @property
    def forward(self) -> np.ndarray:
        """The unit view direction in world space (its OpenCV +Z axis)."""
        return self.cv_from_world[2, :3].copy()

    @property
    def intrinsics(self) -> np.ndarray:
        """The 3x3 matrix K (OpenCV convention), as gsplat's ``Ks`` expects."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def gl_projection(self) -> np.ndarray:
        """OpenGL clip_from_camera (4, 4) matching these intrinsics, depth in [-1, 1]."""
        w, h, n, f = self.width, self.height, self.near, self.far
        return np.array([
            [2 * self.fx / w, 0, 1 - 2 * self.cx / w, 0],
            [0, 2 * self.fy / h, 2 * self.cy / h - 1, 0],
            [0, 0, -(f + n) / (f - n), -2 * f * n / (f - n)],
            [0, 0, -1, 0],
        ])

    def resized(self, width: int, height: int) -> "Camera":
        """The same frustum at another image size."""
        sx, sy = width / max(self.width, 1), height / max(self.height, 1)
        return Camera(self.camera_from_world, width, height, self.fx * sx, self.fy * sy,
                      self.cx * sx, self.cy * sy, self.near, self.far)
