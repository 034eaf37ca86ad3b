"""Quaternion and rotation-matrix helpers, vectorised over leading axes.

Quaternions are (w, x, y, z), unit length, Hamilton product, active rotations
(``quat_apply(q, v)`` rotates the vector ``v``). This is gsplat's order; OpenXR's
(x, y, z, w) is converted at the XR boundary.
"""

from __future__ import annotations

import numpy as np

IDENTITY_QUAT = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions of the same shape (..., 4); a zero quaternion becomes identity."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    safe = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), [1.0, 0.0, 0.0, 0.0])
    return safe


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b first, then a). Shapes broadcast over (..., 4)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from quaternions (..., 4); normalises first."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) with w >= 0 from rotation matrices (..., 3, 3).

    Uses the largest of the four candidate denominators for stability (Shepperd's method).
    """
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    candidates = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    pick = np.argmax(candidates, axis=1)
    q = np.empty((m.shape[0], 4))
    for case in range(4):
        sel = pick == case
        if not np.any(sel):
            continue
        r = m[sel]
        if case == 0:
            s = np.sqrt(1.0 + trace[sel]) * 2
            q[sel] = np.stack(
                [0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                 (r[:, 1, 0] - r[:, 0, 1]) / s], 1)
        elif case == 1:
            s = np.sqrt(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]) * 2
            q[sel] = np.stack(
                [(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s, (r[:, 0, 1] + r[:, 1, 0]) / s,
                 (r[:, 0, 2] + r[:, 2, 0]) / s], 1)
        elif case == 2:
            s = np.sqrt(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]) * 2
            q[sel] = np.stack(
                [(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s, 0.25 * s,
                 (r[:, 1, 2] + r[:, 2, 1]) / s], 1)
        else:
            s = np.sqrt(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]) * 2
            q[sel] = np.stack(
                [(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s,
                 (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s], 1)
    q = np.where(q[:, :1] < 0, -q, q)
    return quat_normalize(q).reshape(shape + (4,))


def quat_from_axis_angle(axis, angle_rad) -> np.ndarray:
    """Quaternion (..., 4) rotating by ``angle_rad`` about ``axis`` (..., 3), right-handed."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * np.asarray(angle_rad, dtype=np.float64)[..., None]
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def quat_from_euler_xyz(x_rad=0.0, y_rad=0.0, z_rad=0.0) -> np.ndarray:
    """Rotation about X, then Y, then Z (extrinsic, world axes), as one quaternion."""
    qx = quat_from_axis_angle([1.0, 0.0, 0.0], x_rad)
    qy = quat_from_axis_angle([0.0, 1.0, 0.0], y_rad)
    qz = quat_from_axis_angle([0.0, 0.0, 1.0], z_rad)
    return quat_multiply(qz, quat_multiply(qy, qx))


def quat_slerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """Shortest-arc spherical interpolation between unit quaternions; ``t`` in [0, 1]."""
    a = quat_normalize(a)
    b = quat_normalize(b)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0, -b, b)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    linear = sin_theta < 1e-6
    wa = np.where(linear, 1.0 - t, np.sin((1.0 - t) * theta) / np.where(linear, 1.0, sin_theta))
    wb = np.where(linear, t, np.sin(t * theta) / np.where(linear, 1.0, sin_theta))
    return quat_normalize(wa * a + wb * b)


def quat_angle_rad(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (radians) of the rotation taking ``a`` to ``b``."""
    dot = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def quat_apply(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors (..., 3) by quaternions (..., 4)."""
    return np.einsum("...ij,...j->...i", quat_to_matrix(q), v)
