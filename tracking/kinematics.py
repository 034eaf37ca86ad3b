"""Rotation building blocks of the body and hand solvers (numpy, float64, world axes).

A bone's world rotation ``G`` takes its rest direction to its observed direction. Where a
second, independent direction is observed (the elbow plane, the palm), ``align`` fixes the
twist about the bone too; where it is not, ``swing`` takes the smallest rotation from where
the parent already put the bone, so twist stays whatever the parent gave. ``blend`` mixes
the two by how trustworthy the second direction is.

Local rotations follow ``avatar.rig``: ``G_child = G_parent q_child``.
"""

from __future__ import annotations

import numpy as np

from common.rotation import matrix_to_quat, quat_to_matrix, quat_slerp

EPS = 1e-9


def cross(a, b) -> np.ndarray:
    """``np.cross`` of two 3-vectors, the same products in the same order (so the same
    bits), without its general-shape overhead (about 35 of the 40 us a call; the body
    solver makes some 30 a frame)."""
    a0, a1, a2 = float(a[0]), float(a[1]), float(a[2])
    b0, b1, b2 = float(b[0]), float(b[1]), float(b[2])
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, EPS)


def frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal frame (3, 3), columns (primary, secondary made orthogonal, their cross)."""
    a = unit(primary)
    b = np.asarray(secondary, dtype=np.float64) - np.dot(secondary, a) * a
    b = unit(b)
    return np.stack([a, b, cross(a, b)], axis=1)


def align(rest_primary, rest_secondary, primary, secondary) -> np.ndarray:
    """The rotation taking the rest pair of directions onto the observed pair: the primary
    exactly, the secondary as closely as a rotation can."""
    return frame(primary, secondary) @ frame(rest_primary, rest_secondary).T


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3, 3) taking direction ``a`` to direction ``b``."""
    a, b = unit(a), unit(b)
    axis = cross(a, b)
    s = np.linalg.norm(axis)
    c = float(np.clip(np.dot(a, b), -1.0, 1.0))
    if s < 1e-8:
        if c > 0:
            return np.eye(3)
        # Opposite: a half turn about any axis perpendicular to a.
        helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        axis = unit(cross(a, helper))
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def blend(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """Rotation matrix a slerped toward b by ``weight`` in [0, 1]."""
    if weight <= 0.0:
        return a
    if weight >= 1.0:
        return b
    q = quat_slerp(matrix_to_quat(a), matrix_to_quat(b), weight)
    return quat_to_matrix(q)


def fraction(rotation: np.ndarray, t: float) -> np.ndarray:
    """The rotation ``rotation ** t`` (same axis, t times the angle)."""
    return blend(np.eye(3), rotation, t)


def bone_rotation(parent: np.ndarray, rest_primary, primary, rest_secondary=None,
                  secondary=None, secondary_weight: float = 1.0) -> np.ndarray:
    """World rotation of a bone whose rest direction must point along ``primary``.

    Starts from the parent's rotation and swings; when a secondary direction is given it
    also fixes the twist, weighted by ``secondary_weight`` (0: swing only).
    """
    carried = parent @ unit(rest_primary)
    swung = swing(carried, primary) @ parent
    if secondary is None or secondary_weight <= 0.0:
        return swung
    # A secondary direction (nearly) along the primary one says nothing about twist.
    along = abs(float(np.dot(unit(primary), unit(secondary))))
    weight = secondary_weight * smoothstep(0.98, 0.85, along)
    if weight <= 0.0:
        return swung
    return blend(swung, align(rest_primary, rest_secondary, primary, secondary), weight)


def smoothstep(edge0: float, edge1: float, x: float) -> float:
    """0 at edge0, 1 at edge1, smooth in between (edges may be in either order)."""
    t = (x - edge0) / (edge1 - edge0)
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def local_quaternions(names, parents: dict, world: dict) -> np.ndarray:
    """(len(names), 4) local quaternions ``G_parent^T G`` for the named bones, w >= 0."""
    mats = np.stack([world[parents[n]].T @ world[n] for n in names])
    return matrix_to_quat(mats).astype(np.float32)


def angle_deg(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(unit(a), unit(b)), -1.0, 1.0))))
