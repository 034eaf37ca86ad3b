"""Body solver: pose landmarks (and the hands' palms) -> template bone rotations.

Depth from mediapipe's world landmarks is weak (DESIGN.md: arm bones 15 deg median, worse
toward the camera) while angles in the image plane are good to a few degrees. So the
skeleton is lifted from the 2D landmarks: every limb bone keeps its observed image-plane
direction exactly; its angle out of the image plane is mostly the one its length leaves
(``acos(d2 / L)``, L the world landmarks' length shrunk by ``LENGTH_SHRINK``), blended with
the world landmarks' own angle for the bone (``WORLD_ELEVATION_WEIGHT``); the sign comes
from the world landmarks. Before that, an elbow hidden behind a forearm that points at the
camera is moved toward its wrist in the image (``ELBOW_HIDDEN``: mediapipe places it too near
the shoulder). Joint limits settle that two-fold ambiguity of monocular
lifting: knees may only bend backward (a lifted shin that would bend the knee forward has
its depth sign flipped), and an elbow bends toward the front of its upper arm within the
upper arm's range of twist (a forearm that would need the upper arm turned further than
``ELBOW_TWIST_LIMIT_DEG`` from its rest has its depth sign flipped when that fits better).

Rotations are then fitted bone by bone down the chains (``tracking.kinematics``): the root
from the hip line and the torso, the spine spreading the chest's turn over its five bones,
upper arms twisted by the elbow plane, forearms by half the palm's turn, wrists by the
palm, thighs and shins twisted by the foot's direction. A limb whose landmarks mediapipe
cannot see (visibility < 0.5, e.g. legs under a desk) stays at rest, except an arm: the
template's rest is an A-pose, arms 35 degrees out, so an unseen arm (below the frame of a
webcam at a desk) hangs relaxed at the side instead (``HANG_RAD``, app/poses.py's relaxed
arms).

Axes: mediapipe's camera axes (x right, y down, z away) become the avatar's world axes by
(x, -y, -z): a person facing the camera drives an avatar facing +Z, their left hand at +X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.codes import BODY_BONES, HEAD_BONES
from common.rotation import quat_from_axis_angle, quat_to_matrix
from avatar.template import Template
from tracking import landmarks as L
from tracking.kinematics import (align, bone_rotation, cross, fraction, local_quaternions,
                                 smoothstep, swing, unit)

CAMERA_TO_WORLD = np.array([1.0, -1.0, -1.0])
VISIBLE = 0.5
# How far the upper arm may turn about its own axis from where a plain swing from rest
# leaves it (the shoulder's internal/external rotation is about 70-90 degrees each way;
# generous, so that only clearly impossible elbows, e.g. a forearm bent back behind a
# hanging arm, are flipped), and the bend below which the elbow's plane means nothing.
ELBOW_TWIST_LIMIT_DEG = 110.0
# An arm the camera does not see turns this far down from the template's A-pose, about the
# chest's forward axis, to hang at the side.
HANG_RAD = 0.55
ELBOW_MIN_BEND_DEG = 20.0
# Lifting (``_lift``): mediapipe's world landmarks measure bones some 10 % longer than the
# image plane shows them when they lie in it (the default avatar's frontal forearm 0.254 m
# in world landmarks, 0.224 m in the image at the fitted scale), which tipped in-plane bones
# 25-30 degrees out of it; and the world landmarks' own angle out of the plane, though
# poor alone, is independent of the length's error. On bench/body_loop.py's eight poses
# (the depth poses of issue 15) a shrink of 0.85-0.92 and a weight of 0.2-0.35 all give a
# limb median of 5.4-6.5 degrees (12.8 with neither), the 90th percentile 21-24 (23.3).
LENGTH_SHRINK = 0.9
WORLD_ELEVATION_WEIGHT = 0.35
MAX_ELEVATION_RAD = np.radians(85.0)
# A forearm pointing at the camera hides its elbow behind the hand, and mediapipe then
# places the elbow part way back along the upper arm: on bench/body_loop.py's arm raised
# sideways with the forearm toward the camera, shoulder-elbow is 42 px in the image where
# the frontal arm shows 63, while shoulder-wrist is 62. So where the world landmarks put the
# wrist nearer the camera than the elbow and the forearm's image length is under this
# fraction of its length, the elbow's image point moves toward the wrist: all the way at
# the first figure, not at all at the second: limb p90 19.9 -> 18.5, median 5.8 -> 5.0,
# worst 36.8 -> 26.4. (0.25, 0.75) gave 17.1 / 4.6 but moved exact landmarks' elbows on a
# forearm 59 degrees toward the camera, seen at 0.57 of its length, 6 degrees off.
ELBOW_HIDDEN = (0.3, 0.6)


@dataclass(eq=False)
class BodyPose:
    """Solved body: ``body`` (31, 4) local quaternions in BODY_BONES order, ``head``
    (4, 4) in HEAD_BONES order (from the pose's ears and nose; the face solver refines it),
    ``root_rotation`` (4,), ``root_translation`` (3,) metres, world rotations (3, 3) of
    every solved bone in ``world`` (for the hands) and per-limb flags in ``limbs_seen``."""

    body: np.ndarray
    head: np.ndarray
    root_rotation: np.ndarray
    root_translation: np.ndarray
    world: dict
    limbs_seen: dict


class BodySolver:
    """``solve(landmarks, palms=None) -> BodyPose | None`` for one template."""

    def __init__(self, template: Template, length_shrink: float = LENGTH_SHRINK):
        """``length_shrink``: the world landmarks' bone lengths are taken at this fraction
        (mediapipe's run long; 1.0 for exact world landmarks)."""
        self.template = template
        self.length_shrink = length_shrink
        names = template.bone_names
        self.parents = {n: (names[p] if p >= 0 else None) for n, p in
                        zip(names, template.bone_parents)}
        head = {n: template.bone_heads[i].astype(np.float64) for i, n in enumerate(names)}
        self.rest = head
        self.rest_dirs = {}
        for side in "LR":
            s = f".{side}"
            self.rest_dirs["thigh" + s] = head["lowerleg01" + s] - head["upperleg01" + s]
            self.rest_dirs["shin" + s] = head["foot" + s] - head["lowerleg01" + s]
            self.rest_dirs["foot" + s] = head["toe3-1" + s] - head["foot" + s]
            self.rest_dirs["upperarm" + s] = head["lowerarm01" + s] - head["upperarm01" + s]
            self.rest_dirs["forearm" + s] = head["wrist" + s] - head["lowerarm01" + s]
            self.rest_dirs["hand" + s] = head["finger3-1" + s] - head["wrist" + s]
            self.rest_dirs["palm_across" + s] = head["finger2-1" + s] - head["finger5-1" + s]
        # The front of each upper arm at rest: where its (bent) forearm points, across it.
        self.rest_elbow_front = {}
        for side in "LR":
            upper, fore = (unit(self.rest_dirs["upperarm." + side]),
                           self.rest_dirs["forearm." + side])
            self.rest_elbow_front[side] = unit(fore - np.dot(fore, upper) * upper)
        hips = 0.5 * (head["upperleg01.L"] + head["upperleg01.R"])
        shoulders = 0.5 * (head["upperarm01.L"] + head["upperarm01.R"])
        self.rest_torso = shoulders - hips
        self.rest_hip_line = head["upperleg01.L"] - head["upperleg01.R"]
        self.rest_shoulder_line = head["upperarm01.L"] - head["upperarm01.R"]
        self.rest_torso_length = float(np.linalg.norm(self.rest_torso))
        self.rest_hip_height = float(head["root"][1])
        self.lengths = {k: float(np.linalg.norm(v)) for k, v in self.rest_dirs.items()}
        self.rest_foot_height = float(min(head["foot.L"][1], head["toe3-1.L"][1]))

    # -- lifting ------------------------------------------------------------------------------
    def _lift(self, lm: L.Landmarks) -> tuple[np.ndarray, float]:
        """(33, 3) joint positions in world axes, metres, about the hips' centre, and the
        metres-per-pixel scale of the image plane."""
        image = lm.pose[:, :2].astype(np.float64) * np.array([1.0, -1.0])
        world = lm.pose_world.astype(np.float64) * CAMERA_TO_WORLD
        hips_px = 0.5 * (image[L.LEFT_HIP] + image[L.RIGHT_HIP])
        centred = image - hips_px
        core = [L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP, L.LEFT_ELBOW,
                L.RIGHT_ELBOW, L.LEFT_KNEE, L.RIGHT_KNEE]
        wxy = world[core, :2] - 0.5 * (world[L.LEFT_HIP, :2] + world[L.RIGHT_HIP, :2])
        scale = float(np.sum(centred[core] * wxy) / max(np.sum(centred[core] ** 2), 1e-9))
        scale = max(scale, 1e-6)
        points = np.concatenate([centred * scale,
                                 world[:, 2:3] - world[[L.LEFT_HIP, L.RIGHT_HIP], 2].mean()],
                                axis=1)

        chains = []
        for side, (sh, el, wr, hip, kn, an, fi) in (
                (".L", (L.LEFT_SHOULDER, L.LEFT_ELBOW, L.LEFT_WRIST, L.LEFT_HIP, L.LEFT_KNEE,
                        L.LEFT_ANKLE, L.LEFT_FOOT_INDEX)),
                (".R", (L.RIGHT_SHOULDER, L.RIGHT_ELBOW, L.RIGHT_WRIST, L.RIGHT_HIP,
                        L.RIGHT_KNEE, L.RIGHT_ANKLE, L.RIGHT_FOOT_INDEX))):
            chains.append([(sh, el, "upperarm" + side), (el, wr, "forearm" + side)])
            chains.append([(hip, kn, "thigh" + side), (kn, an, "shin" + side),
                           (an, fi, "foot" + side)])
        # Each bone's length as mediapipe's world landmarks measure it (the template's own
        # lengths, scaled by the torso, run 10-30 % longer than mediapipe's joint centres and
        # pushed bones out of the image plane). A person's left and right bones are equally
        # long, and world landmarks shorten a bone that points at the camera (depth is their
        # weak axis), so each bone takes the longer of the two sides' world measures (never
        # less than its own image-plane projection: the other side's projection, tried too,
        # pushed in-plane bones out of it on renders).
        measured: dict = {}
        for chain in chains:
            for parent, child, bone in chain:
                kind = bone.split(".")[0]
                measured[kind] = max(measured.get(kind, 0.0),
                                     float(np.linalg.norm(world[child] - world[parent])))
        # An elbow hidden behind a forearm pointing at the camera (``ELBOW_HIDDEN``).
        for el, wr in ((L.LEFT_ELBOW, L.LEFT_WRIST), (L.RIGHT_ELBOW, L.RIGHT_WRIST)):
            if world[wr, 2] <= world[el, 2]:
                continue
            full = max(self.length_shrink * measured["forearm"], 1e-9)
            seen = float(np.linalg.norm(centred[wr] - centred[el])) * scale / full
            hidden = np.clip((ELBOW_HIDDEN[1] - seen) / (ELBOW_HIDDEN[1] - ELBOW_HIDDEN[0]),
                             0.0, 1.0)
            centred[el] = centred[el] + hidden * (centred[wr] - centred[el])
        lifted = points.copy()
        for chain in chains:
            for parent, child, bone in chain:
                d2 = (centred[child] - centred[parent]) * scale
                in_plane = float(np.linalg.norm(d2))
                length = max(self.length_shrink * measured[bone.split(".")[0]], in_plane, 1e-9)
                sign = 1.0 if world[child, 2] - world[parent, 2] >= 0 else -1.0
                # The bone's angle out of the image plane: what its length leaves, blended
                # with the angle of the world landmarks' own bone.
                from_length = sign * np.arccos(min(in_plane / length, 1.0))
                bone_world = world[child] - world[parent]
                from_world = np.arcsin(np.clip(bone_world[2] / max(np.linalg.norm(bone_world),
                                                                    1e-9), -1.0, 1.0))
                elevation = ((1.0 - WORLD_ELEVATION_WEIGHT) * from_length
                             + WORLD_ELEVATION_WEIGHT * from_world)
                elevation = float(np.clip(elevation, -MAX_ELEVATION_RAD, MAX_ELEVATION_RAD))
                depth = max(in_plane, 1e-3 * length) * np.tan(elevation)
                lifted[child] = lifted[parent] + np.array([d2[0], d2[1], depth])
        return lifted, scale

    @staticmethod
    def _fix_knee(points: np.ndarray, hip: int, knee: int, ankle: int, foot: int,
                  pelvis_x: np.ndarray) -> None:
        """Flip a shin's depth when the lifted knee would bend forward (a joint limit)."""
        thigh = points[knee] - points[hip]
        shin = points[ankle] - points[knee]
        bend = np.degrees(np.arccos(np.clip(np.dot(unit(thigh), unit(shin)), -1, 1)))
        if bend < 15.0 or np.dot(cross(thigh, shin), pelvis_x) >= 0:
            return
        flipped = shin * np.array([1.0, 1.0, -1.0])
        if np.dot(cross(thigh, flipped), pelvis_x) > 0:
            delta = flipped - shin
            points[ankle] += delta
            points[foot] += delta

    def elbow_twist_deg(self, chest: np.ndarray, side: str, upper: np.ndarray,
                        fore: np.ndarray) -> float:
        """Signed turn (degrees) of the upper arm about its own axis that an elbow bent
        from ``upper`` to ``fore`` (world directions) needs, from where a plain swing of the
        upper arm from its rest (turned with the chest) leaves its front."""
        rest_upper = chest @ unit(self.rest_dirs["upperarm." + side])
        front = swing(rest_upper, upper) @ (chest @ self.rest_elbow_front[side])
        axis = unit(upper)
        bend = unit(fore - np.dot(fore, axis) * axis)
        return float(np.degrees(np.arctan2(np.dot(axis, cross(front, bend)), np.dot(front, bend))))

    def _fix_elbow(self, points: np.ndarray, chest: np.ndarray, side: str, shoulder: int,
                   elbow: int, hand: tuple) -> None:
        """Flip a forearm's depth when the elbow would bend where no shoulder can turn it
        (a joint limit); the hand's points move with the wrist."""
        upper = points[elbow] - points[shoulder]
        fore = points[hand[0]] - points[elbow]
        if (np.degrees(np.arccos(np.clip(np.dot(unit(upper), unit(fore)), -1, 1)))
                < ELBOW_MIN_BEND_DEG):
            return
        twist = self.elbow_twist_deg(chest, side, upper, fore)
        if abs(twist) <= ELBOW_TWIST_LIMIT_DEG:
            return
        flipped = fore * np.array([1.0, 1.0, -1.0])
        if abs(self.elbow_twist_deg(chest, side, upper, flipped)) < abs(twist):
            delta = flipped - fore
            for i in hand:
                points[i] += delta

    # -- solving -----------------------------------------------------------------------------
    def solve(self, lm: L.Landmarks, palms: dict | None = None) -> BodyPose | None:
        """Bone rotations for one frame, or None when the pose (shoulders) is not seen.

        ``palms``: optional {".L"/".R": (hand_direction, palm_across)} in world axes from
        the hand landmarks; they orient the wrists and twist the forearms.
        """
        if lm.pose is None or lm.pose_world is None:
            return None
        vis = lm.pose_visibility if lm.pose_visibility is not None else np.ones(33)
        if min(vis[L.LEFT_SHOULDER], vis[L.RIGHT_SHOULDER]) < VISIBLE:
            return None
        p, scale = self._lift(lm)
        hips_seen = min(vis[L.LEFT_HIP], vis[L.RIGHT_HIP]) >= VISIBLE
        mid_hip = 0.5 * (p[L.LEFT_HIP] + p[L.RIGHT_HIP])
        mid_shoulder = 0.5 * (p[L.LEFT_SHOULDER] + p[L.RIGHT_SHOULDER])
        shoulder_line = p[L.LEFT_SHOULDER] - p[L.RIGHT_SHOULDER]
        hip_line = p[L.LEFT_HIP] - p[L.RIGHT_HIP]
        torso = mid_shoulder - mid_hip
        if hips_seen:
            root = align(self.rest_torso, self.rest_hip_line, torso, hip_line)
            chest = align(self.rest_torso, self.rest_shoulder_line, torso, shoulder_line)
        else:
            # Hips out of frame (a person at a desk): the shoulders give the facing, the
            # spine stays straight.
            root = align(self.rest_shoulder_line, self.rest_torso, shoulder_line,
                         np.array([0.0, 1.0, 0.0]))
            chest = root
        pelvis_x = root @ np.array([1.0, 0.0, 0.0])
        limbs_seen = {}
        for side, ids in ((".L", (L.LEFT_HIP, L.LEFT_KNEE, L.LEFT_ANKLE, L.LEFT_FOOT_INDEX)),
                          (".R", (L.RIGHT_HIP, L.RIGHT_KNEE, L.RIGHT_ANKLE, L.RIGHT_FOOT_INDEX))):
            limbs_seen["leg" + side] = hips_seen and min(vis[ids[1]], vis[ids[2]]) >= VISIBLE
            if limbs_seen["leg" + side]:
                self._fix_knee(p, *ids, pelvis_x)

        world: dict = {"root": root}
        spine = ["spine05", "spine04", "spine03", "spine02", "spine01"]
        step = fraction(root.T @ chest, 1.0 / len(spine))
        current = root
        for bone in spine:
            current = current @ step
            world[bone] = current

        for side, (sh, el, wr, index, pinky, thumb) in (
                (".L", (L.LEFT_SHOULDER, L.LEFT_ELBOW, L.LEFT_WRIST, L.LEFT_INDEX, L.LEFT_PINKY,
                        L.LEFT_THUMB)),
                (".R", (L.RIGHT_SHOULDER, L.RIGHT_ELBOW, L.RIGHT_WRIST, L.RIGHT_INDEX,
                        L.RIGHT_PINKY, L.RIGHT_THUMB))):
            if min(vis[sh], vis[el], vis[wr]) >= VISIBLE:
                self._fix_elbow(p, world["spine01"], side[1], sh, el, (wr, index, pinky, thumb))
            self._arm(world, p, vis, side, sh, el, wr, index, pinky, palms, limbs_seen)
        for side, (hip, kn, an, heel, fi) in (
                (".L", (L.LEFT_HIP, L.LEFT_KNEE, L.LEFT_ANKLE, L.LEFT_HEEL, L.LEFT_FOOT_INDEX)),
                (".R", (L.RIGHT_HIP, L.RIGHT_KNEE, L.RIGHT_ANKLE, L.RIGHT_HEEL,
                        L.RIGHT_FOOT_INDEX))):
            if limbs_seen["leg" + side]:
                self._leg(world, p, side, hip, kn, an, heel, fi)

        # Head from the ears and nose (the face solver replaces this when it sees the face).
        head_world = None
        if min(vis[L.LEFT_EAR], vis[L.RIGHT_EAR], vis[L.NOSE]) >= VISIBLE:
            ears = p[L.LEFT_EAR] - p[L.RIGHT_EAR]
            mid_ear = 0.5 * (p[L.LEFT_EAR] + p[L.RIGHT_EAR])
            forward = p[L.NOSE] - mid_ear
            up = cross(forward, ears)
            # At rest the nose sits about 20 degrees below the ear line: tilt that back out.
            head_world = align(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.94, 0.34]), ears, up)
        head = self.head_locals(world, head_world)

        full = self._complete(world)
        body = local_quaternions(BODY_BONES, self.parents, full)
        root_q = local_quaternions(["root"], {"root": "__world__"},
                                   {**full, "__world__": np.eye(3)})[0]
        translation = self._root_translation(lm, full, p, scale, limbs_seen)
        return BodyPose(body, head, root_q, translation, full, limbs_seen)

    def head_locals(self, world: dict, head_world: np.ndarray | None) -> np.ndarray:
        """HEAD_BONES local quaternions spreading the head's turn relative to the chest
        over the three neck bones and the head (rest when ``head_world`` is None)."""
        chest = world.get("spine01", np.eye(3))
        if head_world is None:
            head_world = chest
        step = fraction(chest.T @ head_world, 1.0 / len(HEAD_BONES))
        out = {"spine01": chest}
        current = chest
        for bone in HEAD_BONES:
            current = current @ step
            out[bone] = current
        return local_quaternions(HEAD_BONES, self.parents, out)

    def _arm(self, world, p, vis, side, sh, el, wr, index, pinky, palms, limbs_seen) -> None:
        chest = world["spine01"]
        seen = min(vis[sh], vis[el], vis[wr]) >= VISIBLE
        limbs_seen["arm" + side] = seen
        if not seen:
            down = -HANG_RAD if side == ".L" else HANG_RAD
            hang = quat_to_matrix(quat_from_axis_angle([0.0, 0.0, 1.0], down))
            world["upperarm01" + side] = chest @ hang
            return
        upper = p[el] - p[sh]
        fore = p[wr] - p[el]
        bend = np.degrees(np.arccos(np.clip(np.dot(unit(upper), unit(fore)), -1, 1)))
        r = self.rest_dirs
        rest_upper, rest_fore = r["upperarm" + side], r["forearm" + side]
        # The elbow plane sets the upper arm's twist once the elbow is clearly bent.
        plane_weight = smoothstep(10.0, 30.0, bend)
        upper_g = bone_rotation(chest, rest_upper, upper, cross(rest_upper, rest_fore),
                                cross(upper, fore), plane_weight)
        world["upperarm01" + side] = upper_g
        palm = None
        if palms and side in palms:
            palm = palms[side]
        elif min(vis[index], vis[pinky]) >= VISIBLE:
            knuckles = 0.5 * (p[index] + p[pinky])
            palm = (knuckles - p[wr], p[index] - p[pinky])
        if palm is not None:
            hand_dir, across = palm
            wrist_g = align(r["hand" + side], r["palm_across" + side], hand_dir, across)
            # The forearm takes half the palm's turn about its own axis (the radius and ulna
            # share it with the wrist), the wrist the rest.
            fore_g = bone_rotation(upper_g, rest_fore, fore, r["palm_across" + side],
                                   wrist_g @ unit(r["palm_across" + side]), 0.5)
            world["lowerarm01" + side] = fore_g
            world["wrist" + side] = wrist_g
        else:
            world["lowerarm01" + side] = bone_rotation(upper_g, rest_fore, fore)

    def _leg(self, world, p, side, hip, kn, an, heel, fi) -> None:
        r = self.rest_dirs
        thigh = p[kn] - p[hip]
        shin = p[an] - p[kn]
        foot = p[fi] - p[an]
        foot_forward = p[fi] - p[heel]
        root = world["root"]
        rest_forward = r["foot" + side] * np.array([1.0, 0.0, 1.0])
        thigh_g = bone_rotation(root, r["thigh" + side], thigh, rest_forward, foot_forward, 0.7)
        world["upperleg01" + side] = thigh_g
        shin_g = bone_rotation(thigh_g, r["shin" + side], shin, rest_forward, foot_forward, 0.7)
        world["lowerleg01" + side] = shin_g
        world["foot" + side] = bone_rotation(shin_g, r["foot" + side], foot)

    def _complete(self, world: dict) -> dict:
        """World rotations of every bone: an unsolved bone turns with its parent."""
        full = {}
        for name in self.template.bone_names:
            parent = self.parents[name]
            if name in world:
                full[name] = world[name]
            else:
                full[name] = np.eye(3) if parent is None else full[parent]
        return full

    def _root_translation(self, lm, full, p, scale, limbs_seen) -> np.ndarray:
        """Sideways offset of the hips from the image centre (metres), and, when both feet
        are seen, the drop that keeps the lower foot on the ground (crouching lowers the
        root). Depth is not observed and stays 0."""
        hips_px_x = 0.5 * (lm.pose[L.LEFT_HIP, 0] + lm.pose[L.RIGHT_HIP, 0])
        x = float((hips_px_x - 0.5 * lm.width) * scale)
        y = 0.0
        if limbs_seen.get("leg.L") and limbs_seen.get("leg.R"):
            heads = self.posed_heads(full)
            lowest = min(heads["foot.L"][1], heads["foot.R"][1])
            y = float(np.clip(self.rest["foot.L"][1] - lowest, -1.0, 0.0))
        return np.array([x, y, 0.0], dtype=np.float32)

    def posed_heads(self, full: dict) -> dict:
        """Forward kinematics of the bone heads (root at its rest place) from world rotations."""
        heads = {}
        for name in self.template.bone_names:
            parent = self.parents[name]
            if parent is None:
                heads[name] = self.rest[name]
            else:
                heads[name] = heads[parent] + full[parent] @ (self.rest[name] - self.rest[parent])
        return heads
