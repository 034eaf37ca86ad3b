"""An avatar fitted in one view of a calibrated rig, placed in the rig's world and seen from
its other cameras (pose2sim's four synchronised views and their Qualisys calibration).

``avatar create`` fits, per frame, a pinhole camera (``render.camera.Camera``, OpenGL axes)
that relates the avatar's own world to the source view's pixels. The rig's calibration
(``common.calibration.CalibratedCamera``, OpenCV axes, the lab's world) relates the source
camera to the world and to the other cameras. ``world_from_avatar`` joins the two:

- the avatar stays rigid and of its own (fitted) size: it is turned and moved, never scaled;
- scale (how far from the camera): the fitted camera's focal length against the calibrated
  one. The fit sees the person at some depth z with focal f_fit; with the calibrated focal
  f_cal the same image size puts the person at z f_cal / f_fit. So the depth comes from the
  avatar's height (the shape fit's) against the person's size in pixels, through the
  calibrated focal length: a person taller than the avatar is placed too close;
- direction: the anchor (the hips' midpoint) sits on the calibrated camera's ray through the
  pixel where the fitted camera shows it (distortion removed), and the avatar is turned
  with that ray (the fitted camera's principal point differs from the calibrated one, which
  tilts the ray), so the source camera sees it as the fit did.

Frames are a video's (here 1080 px wide) and the calibration's (1088): a frame pixel maps to
the calibrated image by stretching (``to_calibrated``), as bench/body_views.py does.
"""

from __future__ import annotations

import numpy as np

CV_FROM_GL = np.diag([1.0, -1.0, -1.0])


def to_calibrated(calibrated, pixels: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) pixels of a frame of ``frame_size`` (width, height), measured from the image's
    corner as mediapipe's and the renderer's are -> the calibrated image's (from the first
    pixel's centre)."""
    return (np.asarray(pixels, np.float64) * (np.array(calibrated.size) / np.array(frame_size))
            - 0.5)


def calibrated_focal(calibrated, frame_size: tuple[int, int]) -> np.ndarray:
    """(fx, fy) of the calibrated camera in the pixels of a frame of ``frame_size``."""
    scale = np.array(frame_size, np.float64) / np.array(calibrated.size)
    return np.array([calibrated.intrinsics[0, 0], calibrated.intrinsics[1, 1]]) * scale


def _turn_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking direction ``a`` to direction ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * skew + (1 - c) * skew @ skew


def world_from_avatar(fitted, calibrated, anchor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M (3, 3) rotation, b (3,) metres): ``world = avatar @ M.T + b`` places the avatar's
    points in the rig's world. ``fitted``: the frame's fitted Camera (its pixels are the
    frame's, whose size is ``fitted.width`` x ``fitted.height``); ``calibrated``: the source
    view's CalibratedCamera; ``anchor`` (3,): the avatar point (posed, its own world) that is
    put on the calibrated ray (the hips' midpoint)."""
    cv = fitted.cv_from_world
    rotation, shift = cv[:3, :3], cv[:3, 3]
    anchored = rotation @ anchor + shift  # the anchor in the fitted camera (OpenCV axes)
    pixel = np.array([fitted.fx * anchored[0] / anchored[2] + fitted.cx,
                      fitted.fy * anchored[1] / anchored[2] + fitted.cy])
    size = (fitted.width, fitted.height)
    ray = np.r_[calibrated.normalised(to_calibrated(calibrated, pixel[None], size))[0], 1.0]
    depth_scale = float(np.mean(calibrated_focal(calibrated, size) / [fitted.fx, fitted.fy]))
    placed = ray * anchored[2] * depth_scale
    turn = _turn_between(anchored, ray)
    # camera point of an avatar point X: turn (R X + t - anchored) + placed
    in_camera_r = turn @ rotation
    in_camera_t = turn @ (shift - anchored) + placed
    world_r = calibrated.camera_from_world.T
    return world_r @ in_camera_r, world_r @ (in_camera_t - calibrated.translation)


def placed(points: np.ndarray, placement: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(N, 3) avatar points -> the rig's world."""
    m, b = placement
    return np.asarray(points, np.float64) @ m.T + b


def render_camera(calibrated, width: int, height: int, near: float = 0.1, far: float = 50.0):
    """The calibrated camera as a render.camera.Camera (pinhole: distortion left to the
    frames, see ``undistorted``) of ``width`` x ``height`` pixels, in the rig's world."""
    from render.camera import Camera

    view = np.eye(4)
    view[:3, :3] = CV_FROM_GL @ calibrated.camera_from_world
    view[:3, 3] = CV_FROM_GL @ calibrated.translation
    sx, sy = width / calibrated.size[0], height / calibrated.size[1]
    k = calibrated.intrinsics
    # Pixel centres: the calibration's (0, 0) is the first pixel's centre, the renderer's
    # (0.5, 0.5).
    return Camera(view, width, height, k[0, 0] * sx, k[1, 1] * sy, (k[0, 2] + 0.5) * sx,
                  (k[1, 2] + 0.5) * sy, near, far)


def undistorted(image: np.ndarray, calibrated) -> np.ndarray:
    """A frame (H, W, C) of the calibrated camera (any size with its aspect, stretched as
    ``to_calibrated``) with the lens distortion removed: a pinhole image of the same K."""
    import cv2

    h, w = image.shape[:2]
    sx, sy = w / calibrated.size[0], h / calibrated.size[1]
    k = calibrated.intrinsics.copy()
    k[0] *= sx
    k[1] *= sy
    return cv2.undistort(image, k, calibrated.distortion)
