"""Calibrated cameras of a multi-view rig, read from a Qualisys ``.qca.txt`` calibration.

Pose2Sim's demo (fetched by scripts/setup.d/30-media.sh) ships four synchronised views of
one person with the rig's calibration in this format, an XML file with one ``<camera>``
per view. ``read_qualisys(path)`` turns it into ``CalibratedCamera``s in OpenCV's
conventions:

- world: the lab's frame as calibrated, metres, z up (the floor is near z = 0);
- camera: x right, y down, z forward (toward the scene), so
  ``camera = camera_from_world @ world + translation`` and a point in view has z > 0;
- pixels: (0, 0) is the top-left pixel's centre of the calibrated image ``size``;
- distortion: OpenCV's (k1, k2, p1, p2, k3) on normalised coordinates.

The Qualisys file stores each camera's orientation matrix and position in the world in
millimetres, with the camera looking down its own -z and y up; its focal lengths and
principal point are in 1/64 pixel units of the sensor, from which the video's field of
view (``fov_video``) is cut. Its distortion coefficients are kept as they are (not scaled
by 1/64): on this rig they are k1 -0.046..-0.048, k2 0.135..0.140, which matches the
k1 -0.031..-0.053, k2 0.009..0.151 of Pose2Sim's own checkerboard calibration of the same
cameras, and a scaled k would be ~0. That checkerboard calibration (same world origin)
also puts the origin at (0.26, 0.96, 2.93), (-0.17, 0.81, 3.20), (-0.85, 0.41, 4.30),
(0.51, 0.11, 4.41) m in cameras 1-4; this reading gives (0.32, 0.96, 2.89), (-0.11, 0.78,
3.07), (-0.79, 0.32, 4.35), (0.50, 0.05, 4.41). tests/test_calibration.py checks the
conventions on the real views: mediapipe's landmarks on the first frames triangulate to a
standing man who reprojects within 14 px (median; 30 px at most) in all four views; the
other axis conventions give 100+ px or put him behind the cameras.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUALISYS_SUBPIXELS = 64  # the .qca's focal lengths and principal points are in 1/64 px
# Qualisys cameras look down -z with y up; OpenCV's down +z with y down: a half turn about x.
_OPENCV_FROM_QUALISYS_CAMERA = np.diag([1.0, -1.0, -1.0])


class CalibrationError(ValueError):
    """A calibration file that cannot be read; the message names the file and the fault."""


@dataclass(eq=False)
class CalibratedCamera:
    name: str
    """The camera's name in the calibration file (e.g. "cam01")."""
    size: tuple[int, int]
    """(width, height) in pixels of the image the calibration describes."""
    intrinsics: np.ndarray
    """(3, 3) float64 pinhole matrix K in pixels."""
    distortion: np.ndarray
    """(5,) float64 OpenCV distortion (k1, k2, p1, p2, k3)."""
    camera_from_world: np.ndarray
    """(3, 3) float64 rotation from world to camera axes."""
    translation: np.ndarray
    """(3,) float64 metres: camera = camera_from_world @ world + translation."""

    @property
    def position(self) -> np.ndarray:
        """(3,) the camera's centre in the world, metres."""
        return -self.camera_from_world.T @ self.translation

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points, metres -> (N, 3) in camera axes (z = depth, metres)."""
        return np.asarray(points, np.float64) @ self.camera_from_world.T + self.translation

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points, metres -> (N, 2) pixels, distortion applied."""
        import cv2

        points = np.asarray(points, np.float64).reshape(-1, 3)
        rvec = cv2.Rodrigues(self.camera_from_world)[0]
        pixels, _ = cv2.projectPoints(points, rvec, self.translation, self.intrinsics,
                                      self.distortion)
        return pixels.reshape(-1, 2)

    def normalised(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) undistorted normalised coordinates (x/z, y/z)."""
        import cv2

        pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        return cv2.undistortPoints(pixels, self.intrinsics, self.distortion).reshape(-1, 2)


def triangulate(cameras: list[CalibratedCamera], pixels: np.ndarray) -> np.ndarray:
    """Least-squares (linear, DLT) world points seen by several cameras.

    pixels: (C, N, 2), point n as seen by camera c (C >= 2). Returns (N, 3) metres.
    """
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim != 3 or pixels.shape[0] != len(cameras) or pixels.shape[2] != 2:
        raise ValueError(f"pixels must be ({len(cameras)}, N, 2), got {pixels.shape}")
    if len(cameras) < 2:
        raise ValueError("triangulation needs at least two cameras")
    rows = []  # per camera, two equations per point: (x P3 - P1) X = 0, (y P3 - P2) X = 0
    for camera, seen in zip(cameras, pixels):
        projection = np.c_[camera.camera_from_world, camera.translation]  # (3, 4)
        xy = camera.normalised(seen)  # (N, 2)
        rows.append(xy[:, 0, None] * projection[2] - projection[0])
        rows.append(xy[:, 1, None] * projection[2] - projection[1])
    system = np.stack(rows, axis=1)  # (N, 2C, 4)
    homogeneous = np.linalg.svd(system)[2][:, -1]  # (N, 4): each system's null vector
    return homogeneous[:, :3] / homogeneous[:, 3:]


def read_qualisys(path: str | Path) -> list[CalibratedCamera]:
    """The cameras of a Qualisys ``.qca.txt`` calibration, sorted by name."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise CalibrationError(f"{path}: not a readable Qualisys calibration ({exc})") from None
    cameras = []
    for element in root.findall("cameras/camera"):
        try:
            cameras.append(_qualisys_camera(element))
        except (AttributeError, KeyError, ValueError) as exc:
            name = element.get("serial", "?")
            raise CalibrationError(f"{path}: camera {name} is incomplete or malformed "
                                   f"({type(exc).__name__}: {exc})") from None
    if not cameras:
        raise CalibrationError(f"{path}: no <cameras><camera> entries (not a .qca calibration)")
    return sorted(cameras, key=lambda camera: camera.name)


def _qualisys_camera(element: ET.Element) -> CalibratedCamera:
    transform = element.find("transform").attrib
    intrinsic = element.find("intrinsic").attrib
    fov = element.find("fov_video").attrib
    left, top = float(fov["left"]), float(fov["top"])
    size = (int(fov["right"]) - int(fov["left"]) + 1, int(fov["bottom"]) - int(fov["top"]) + 1)

    def value(key: str) -> float:
        return float(intrinsic[key])

    intrinsics = np.array([
        [value("focalLengthU") / QUALISYS_SUBPIXELS, 0.0,
         value("centerPointU") / QUALISYS_SUBPIXELS - left],
        [0.0, value("focalLengthV") / QUALISYS_SUBPIXELS,
         value("centerPointV") / QUALISYS_SUBPIXELS - top],
        [0.0, 0.0, 1.0]])
    distortion = np.array([value("radialDistortion1"), value("radialDistortion2"),
                           value("tangentalDistortion1"), value("tangentalDistortion2"),
                           float(intrinsic.get("radialDistortion3", 0.0))])
    # The file's matrix takes world axes to the Qualisys camera's; its position is in mm.
    qualisys_from_world = np.array([[float(transform[f"r{i}{j}"]) for j in "123"]
                                    for i in "123"])
    position = np.array([float(transform[axis]) for axis in "xyz"]) / 1000.0
    camera_from_world = _OPENCV_FROM_QUALISYS_CAMERA @ qualisys_from_world
    if not np.allclose(camera_from_world @ camera_from_world.T, np.eye(3), atol=1e-4):
        raise ValueError("its transform is not a rotation")
    if intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0 or min(size) <= 0:
        raise ValueError("its focal length or field of view is not positive")
    return CalibratedCamera(name=element.get("serial", ""), size=size, intrinsics=intrinsics,
                            distortion=distortion, camera_from_world=camera_from_world,
                            translation=-camera_from_world @ position)
