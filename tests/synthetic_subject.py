"""A synthetic subject for the shape fit: the default avatar re-shaped with known anny
parameters, posed in known motion, seen by known cameras, its masks rendered with the GL
backend, its pose landmarks and face points projected from the true body. The fit is given
noisy codes (the tracker is never exact) and slightly wrong cameras."""

from __future__ import annotations

import dataclasses

import numpy as np

from app.poses import POSES
from avatar.avatar import Avatar
from avatar.codes import BODY_BONES, HEAD_BONES
from avatar.shape import POSE_LANDMARK_BONES, ShapeObservation
from avatar.template import load_face_correspondence
from common.rotation import quat_from_axis_angle, quat_multiply
from render.camera import Camera


def project(camera: Camera, points: np.ndarray) -> np.ndarray:
    cv = camera.cv_from_world
    p = points @ cv[:3, :3].T + cv[:3, 3]
    return np.stack([camera.fx * p[:, 0] / p[:, 2] + camera.cx,
                     camera.fy * p[:, 1] / p[:, 2] + camera.cy], 1)


def subject_frames(count: int, portrait: bool = False):
    """(codes, camera) of ``count`` keyframes: waving and walking while turning, seen from
    the front and three-quarter views (``portrait``: head and shoulders only, close)."""
    frames = []
    for i in range(count):
        motion = POSES["wave" if i % 2 == 0 else "walk"].codes(0.15 * i)
        yaw = np.radians(-35 + 70 * i / max(count - 1, 1))
        codes = motion.replace(root_rotation=quat_multiply(
            quat_from_axis_angle([0, 1, 0], yaw), motion.root_rotation))
        if portrait:
            camera = Camera.look_at([0.1 * (i % 3 - 1), 1.55, 1.0], [0, 1.45, 0], 360, 480,
                                    vertical_fov_deg=45)
        else:
            camera = Camera.look_at([0.4 * (i % 3 - 1), 1.2, 3.6], [0, 0.9, 0], 360, 480,
                                    vertical_fov_deg=42)
        frames.append((codes, camera))
    return frames


def observe(avatar: Avatar, frames, backend, seed: int = 0, pose_noise_rad: float = 0.05,
            camera_noise_m: float = 0.01):
    """ShapeObservations of ``avatar`` (the truth) in ``frames``: landmarks and face points
    projected from its posed body, masks rendered by ``backend``; the codes and cameras
    handed to the fit carry noise."""
    rng = np.random.default_rng(seed)
    tri, bary = load_face_correspondence()
    bones = [avatar.rig.bone_names.index(n) for n in POSE_LANDMARK_BONES.values()]
    out = []
    for codes, camera in frames:
        skeleton = avatar.rig.pose_codes(codes)
        vertices = avatar.rig.posed_vertices(codes)
        body = np.zeros((33, 3))
        body[list(POSE_LANDMARK_BONES), :2] = project(camera, skeleton.heads[bones])
        body[list(POSE_LANDMARK_BONES), 2] = 1.0
        face_points = (vertices[avatar.template.faces[tri]] * bary[..., None]).sum(1)
        image = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
        mask = image[..., 3] > 0.5
        inside = ((body[:, 0] >= 0) & (body[:, 0] < camera.width) & (body[:, 1] >= 0)
                  & (body[:, 1] < camera.height))
        body[~inside, 2] = 0.0
        noisy = _noisy(codes, rng, pose_noise_rad)
        cam = dataclasses.replace(camera, camera_from_world=_shifted(camera, rng, camera_noise_m))
        out.append(ShapeObservation(noisy, cam, body, project(camera, face_points), mask))
    return out


def _noisy(codes, rng, size):
    body, head = codes.body.copy(), codes.head.copy()
    for name in ("spine03", "spine01", "clavicle.L", "clavicle.R"):
        k = BODY_BONES.index(name)
        body[k] = quat_multiply(body[k], quat_from_axis_angle(rng.standard_normal(3), size))
    k = HEAD_BONES.index("neck02")
    head[k] = quat_multiply(head[k], quat_from_axis_angle(rng.standard_normal(3), size))
    return codes.replace(body=body, head=head)


def _shifted(camera, rng, size):
    m = camera.camera_from_world.copy()
    m[:3, 3] += rng.standard_normal(3) * size
    return m
