"""BVH export: codes frames as motion of the template's skeleton, for Blender, MotionBuilder
and the other animation tools that read BVH.

Hierarchy: the template's ``root`` and every bone codes drive (31 body, 4 head, 2 x 19 hand
bones) plus the two eyes (turned by the gaze), under their template names (``upperarm01.L``)
and parents. OFFSETs are the rest pose's joint-to-parent offsets in **centimetres**; a leaf
ends in an End Site at its first undriven child (a foot at its middle toe) or, for finger
tips and eyes, a third of its own offset further on.

Axes and rotations: BVH's usual axes are ours (+Y up, the figure facing +Z, its left at
+X, right-handed), and at rest every joint frame is aligned with them, as a BVH rest pose
is. So a joint's channels are exactly the codes' local rotation (``avatar.rig``) written
as Euler angles in degrees, **order ZXY**: ``CHANNELS 3 Zrotation Xrotation Yrotation``,
the rotation matrix ``Rz(z) Rx(x) Ry(y)`` (intrinsic: about Z, then the turned X, then the
turned Y), the most common BVH order. The root adds ``Xposition Yposition Zposition``
first: its head in centimetres (the rest height plus the codes' root translation), so its
OFFSET is zero.

One BVH frame per codes frame; the Frame Time is the codes' median frame interval (frames
are not resampled: a tracker that dropped a frame leaves the rest a little early).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from avatar.codes import BODY_BONES, EYE_BONES, HAND_BONES, HEAD_BONES, ROOT_BONE, Codes
from avatar.rig import Rig
from common.rotation import quat_to_matrix
from avatar.template import Template

CM_PER_M = 100.0
DEFAULT_FRAME_TIME_S = 1.0 / 30.0
ROTATION_CHANNELS = "Zrotation Xrotation Yrotation"
POSITION_CHANNELS = "Xposition Yposition Zposition"


def euler_zxy_deg(rotations: np.ndarray) -> np.ndarray:
    """(..., 3) angles (z, x, y) in degrees with ``R = Rz(z) Rx(x) Ry(y)`` for rotation
    matrices (..., 3, 3). x is in [-90, 90]; at x = +-90 (gimbal lock) z is taken as 0."""
    r = np.asarray(rotations, dtype=np.float64)
    # R[2] = (-cos x sin y, sin x, cos x cos y); R[0, 1] = -sin z cos x; R[1, 1] = cos z cos x
    x = np.arcsin(np.clip(r[..., 2, 1], -1.0, 1.0))
    locked = np.abs(r[..., 2, 1]) > 1.0 - 1e-12
    y = np.where(locked, np.arctan2(r[..., 0, 2], r[..., 0, 0]),
                 np.arctan2(-r[..., 2, 0], r[..., 2, 2]))
    z = np.where(locked, 0.0, np.arctan2(-r[..., 0, 1], r[..., 1, 1]))
    return np.degrees(np.stack([z, x, y], axis=-1))


def exported_bones(template: Template) -> list[int]:
    """Template indices of the exported joints, parents before children."""
    names = {ROOT_BONE, *BODY_BONES, *HEAD_BONES, *HAND_BONES[0], *HAND_BONES[1], *EYE_BONES}
    return [i for i, name in enumerate(template.bone_names) if name in names]


def frame_time_s(frames: Sequence[Codes]) -> float:
    """The median interval between frames' ``t`` (1/30 s for one frame or no usable t)."""
    if len(frames) < 2:
        return DEFAULT_FRAME_TIME_S
    step = float(np.median(np.diff([f.t for f in frames])))
    return step if step > 1e-4 else DEFAULT_FRAME_TIME_S


def _hierarchy(template: Template, joints: list[int]) -> tuple[list[str], list[int]]:
    """The HIERARCHY section's lines and the joints in the order it lists them (depth
    first, the order of the MOTION section's channels)."""
    heads = np.asarray(template.bone_heads, dtype=np.float64) * CM_PER_M
    parents = np.asarray(template.bone_parents)
    exported = set(joints)
    children = {j: [c for c in joints if parents[c] == j] for j in joints}
    lines: list[str] = []
    order: list[int] = []

    def number(values) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    def joint(j: int, depth: int) -> None:
        pad = "  " * depth
        name = template.bone_names[j]
        order.append(j)
        if parents[j] < 0:
            lines.append(f"ROOT {name}")
            offset, channels = np.zeros(3), f"6 {POSITION_CHANNELS} {ROTATION_CHANNELS}"
        else:
            lines.append(f"{pad}JOINT {name}")
            offset, channels = heads[j] - heads[parents[j]], f"3 {ROTATION_CHANNELS}"
        lines.extend([f"{pad}{{", f"{pad}  OFFSET {number(offset)}", f"{pad}  CHANNELS {channels}"])
        for child in children[j]:
            joint(child, depth + 1)
        if not children[j]:
            undriven = [c for c in np.flatnonzero(parents == j) if c not in exported]
            tip = (heads[undriven[len(undriven) // 2]] - heads[j] if undriven
                   else offset / 3.0)
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {number(tip)}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    joint(joints[0], 0)
    return lines, order


def motion_rows(rig: Rig, joints: list[int], codes: Codes) -> np.ndarray:
    """One frame's channel values for ``joints`` (the root first): the root's position (cm)
    and every joint's ZXY angles (degrees)."""
    local = quat_to_matrix(rig.local_rotations(codes)[joints])
    angles = euler_zxy_deg(local)
    position = (rig.rest_heads[joints[0]] + codes.root_translation) * CM_PER_M
    return np.concatenate([position, angles.ravel()])


def write_bvh(path: str | Path, frames: Sequence[Codes], template: Template,
              frame_time: float | None = None,
              progress: Callable[[int], None] | None = None) -> int:
    """Write ``frames`` as a BVH file; returns the number of frames. The file is written
    under a temporary name and renamed when complete (nothing half-written is left at
    ``path``); ``progress(frames_done)`` is called every 500 frames."""
    if not frames:
        raise ValueError("no frames to export")
    path = Path(path)
    rig = Rig(template)
    hierarchy, joints = _hierarchy(template, exported_bones(template))
    step = frame_time if frame_time is not None else frame_time_s(frames)
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("w", encoding="ascii", newline="\n") as out:
            out.write("HIERARCHY\n")
            out.write("\n".join(hierarchy) + "\n")
            out.write(f"MOTION\nFrames: {len(frames)}\nFrame Time: {step:.8f}\n")
            for done, codes in enumerate(frames, 1):
                out.write(" ".join(f"{v:.6f}" for v in motion_rows(rig, joints, codes)) + "\n")
                if progress is not None and done % 500 == 0:
                    progress(done)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(frames)
