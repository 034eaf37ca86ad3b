"""Correctives fitted from tracked face landmarks (issue 12, step 5).

LCA corrects its template per frame from the codes; we fit the linear form a receiver without
a GPU can afford (``render.skinned.Correctives``: per-vertex offsets of the rest mesh, linear
in ``avatar.avatar.pose_features``) from where the face mesh's 478 points were tracked:

1. Per frame, pose the avatar (blendshapes, skinning; no correctives), take the template
   points the face mesh's landmarks correspond to (the tracker's asset), project them
   through the frame's camera and take the 2D residual to the tracked points.
2. Lift each residual to 3D parallel to the image plane at the point's depth (one view
   cannot see depth), and carry it back to the rest pose through the inverse of the
   skinning transform blended at the point.
3. A ridge regression of each landmark's rest-space residual on the pose features (the
   local rotations of the head bones, the 52 blendshape weights), the ridge strength picked
   on a validation share of the frames, with a static term per landmark that is dropped:
   the static mismatch of the face's shape is the shape fit's business, and correctives
   cannot hold one (features are zero at rest). By default ("zero_mean") the coefficients
   are also held to average zero over the frames (orthogonal to the mean feature vector):
   a shape fitted to the same frames has already taken up the mean correction (it cannot
   tell it from a static one), so a correction with a mean would count it twice. Without
   any static term ("free") the basis took up the static mismatch through the mean
   expression and mis-moved the face as the expression changed (docs/BENCHMARKS.md).
4. The landmark residuals spread to the template vertices within a few centimetres over
   the surface (geodesic distance along mesh edges, Gaussian weights, so the upper lip's
   residual does not leak to the lower lip), then per vertex the M features that
   contribute most are kept and refitted (ridge again) on the spread residuals.
5. Bounds: at most MAX_BASIS_M metres per unit feature, and each vertex's basis scaled
   down where its correction over the fitted frames would pass MAX_CORRECTION_M.
6. The dropped static term comes back as ``CorrectiveFit.rest_offset``, for the face shape
   to take: spread from the landmarks as a smooth warp of the space round the face (not
   over the surface: that moved the lids without the eyeballs behind them).

Eyes (their meshes follow the eye bones) and the iris landmarks (they follow the gaze) are
left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from avatar.avatar import Avatar, pose_features
from avatar.codes import HEAD_BONES, Codes
from avatar.lca import MAX_CORRECTIVE_M, MAX_CORRECTIVE_WIDTH
from avatar.template import load_face_correspondence
from render.camera import Camera
from render.skinned import Correctives, corrective_offsets, skin_points

CORRECTIVE_BONES: tuple[str, ...] = HEAD_BONES  # the face's landmarks see the head and neck
LANDMARKS = np.arange(468)  # the face mesh's points less the two irises (468-477)
SPREAD_SIGMA_M = 0.004      # landmark values interpolated over the surface (Gaussian weights)
FADE_START_M = 0.01         # ... and faded out between these distances from the nearest one
SPREAD_CUTOFF_M = 0.035
STATIC_SIGMA_M = 0.01       # the static term's warp of the space round the face
STATIC_CUTOFF_M = 0.04
MAX_BASIS_M = min(1.0, MAX_CORRECTIVE_M)
MAX_CORRECTION_M = 0.03     # no vertex moves further than this over the fitted frames
DEPTH_ITERATIONS = 100     # rounds of filling in the depth the images cannot show
# Ridge strengths tried (per frame). On jwpIntro.mp4 validation kept asking for less, but
# below 1e-5 the held-out frames' pose-dependent residual grew again (1.21 -> 1.28 px).
RIDGE_CHOICES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1)
EXCLUDED_REGIONS = ("eye_back.L", "eye_front.L", "eye_back.R", "eye_front.R")


@dataclass
class CorrectiveFit:
    """Fitted correctives in ``AvatarData``'s terms: ``bones`` (corrective_bones), ``index``
    (V, M) int32 (corrective_index), ``basis`` (V, M, 3) float32 metres per unit feature
    (corrective_basis); ``report``: residuals before and after (px, mm), frames, seconds.
    ``rest_offset`` (V, 3) float32 metres: the static part the fit left out (correctives
    cannot hold one), for the face shape to take (add it to the shape's vertex deltas): in
    "intercept" mode the mismatch at the neutral face, in "zero_mean" the frames' mean;
    zero in "free" mode and away from the face."""

    bones: list[str]
    index: np.ndarray
    basis: np.ndarray
    report: dict = field(default_factory=dict)
    rest_offset: np.ndarray | None = None


def project(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) and camera depths (N,) of world points (N, 3)."""
    cv = camera.cv_from_world
    cam = points @ cv[:3, :3].T + cv[:3, 3]
    z = cam[:, 2]
    return np.stack([camera.fx * cam[:, 0] / z + camera.cx,
                     camera.fy * cam[:, 1] / z + camera.cy], axis=1), z


def blended_rotations(avatar: Avatar, transforms: np.ndarray, triangles: np.ndarray,
                      bary: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the linear part of the skinning transform at points given as template
    triangles (N,) and barycentrics (N, 3)."""
    t = avatar.template
    corners = t.faces[triangles]  # (N, 3)
    weights = t.skin_weights[corners] * bary[:, :, None]  # (N, 3, K)
    return np.einsum("nck,nckij->nij", weights, transforms[t.skin_indices[corners], :, :3])


@dataclass
class FrameResidual:
    """One frame's landmark residuals (L landmarks): ``pixels`` (L, 2) tracked - projected;
    ``lifted`` (L, 3) world metres, the residual lifted parallel to the image plane at each
    point's depth; ``metres_per_px`` (L,); ``ray`` (L, 3) world, the point's camera ray scaled
    to unit depth and ``forward`` (3,) the camera's axis: a world offset d shows in the image
    as d - ray (forward . d), its depth part the lift cannot see; ``transforms`` (J, 3, 4)
    the frame's skinning transforms."""

    pixels: np.ndarray
    lifted: np.ndarray
    metres_per_px: np.ndarray
    ray: np.ndarray
    forward: np.ndarray
    transforms: np.ndarray


@dataclass
class LandmarkFrames:
    """The fit's data over T frames, in rest space: ``features`` (T, D) pose features;
    ``lifted`` (T, L, 3) each landmark's lifted residual carried to the rest pose (metres);
    ``depth_along``, ``depth_of`` (T, L, 3): a rest-space offset o moves the point by
    ``s = depth_of . o`` along its ray, which the lift misses as ``depth_along * s``;
    ``residual_px`` (T, L) the residual's length in the image, ``mm_per_px`` (T, L)."""

    features: np.ndarray
    lifted: np.ndarray
    depth_along: np.ndarray
    depth_of: np.ndarray
    residual_px: np.ndarray
    mm_per_px: np.ndarray

    def subset(self, rows: np.ndarray) -> LandmarkFrames:
        return LandmarkFrames(*(a[rows] for a in (self.features, self.lifted, self.depth_along,
                                                   self.depth_of, self.residual_px,
                                                   self.mm_per_px)))

    def completed(self, predicted: np.ndarray) -> np.ndarray:
        """(T, L, 3) the lifted residuals with the depth part the image cannot show taken
        from ``predicted`` (T, L, 3) rest-space offsets."""
        s = np.sum(self.depth_of * predicted, axis=-1, keepdims=True)
        return self.lifted + self.depth_along * s

    def seen_part(self, offsets: np.ndarray) -> np.ndarray:
        """(T, L, 3) what the lift shows of rest-space offsets (T, L, 3)."""
        s = np.sum(self.depth_of * offsets, axis=-1, keepdims=True)
        return offsets - self.depth_along * s


class LandmarkModel:
    """The avatar's face-mesh points (the 468 less the irises) posed per frame, with or
    without rest-space corrections."""

    def __init__(self, avatar: Avatar):
        self.avatar = avatar
        triangles, bary = load_face_correspondence()
        index = {name: i for i, name in enumerate(avatar.rig.bone_names)}
        self.bones = np.array([index[n] for n in CORRECTIVE_BONES])
        self.triangles = triangles[LANDMARKS]
        self.bary = bary[LANDMARKS].astype(np.float64)

    def features(self, codes: Codes) -> np.ndarray:
        """(D,) the correctives' features of a codes frame (``pose_features``)."""
        local = self.avatar.rig.local_rotations(codes)
        return pose_features(local[self.bones], codes.face)

    def posed_points(self, codes: Codes, offsets: np.ndarray | None = None):
        """(L, 3) posed landmark points and the skinning transforms (J, 3, 4); ``offsets``
        (V, 3) rest-space corrections applied before skinning (as the posers do)."""
        rig = self.avatar.rig
        skeleton = rig.pose_codes(codes)
        shaped = rig.shaped_vertices(codes.face)
        if offsets is not None:
            shaped = shaped + offsets
        t = self.avatar.template
        corners = t.faces[self.triangles].reshape(-1)
        posed = skin_points(shaped[corners], t.skin_indices[corners], t.skin_weights[corners],
                            skeleton.transforms).reshape(-1, 3, 3)
        return np.einsum("nk,nkj->nj", self.bary, posed), skeleton.transforms

    def residual(self, codes: Codes, camera: Camera, tracked: np.ndarray,
                 offsets: np.ndarray | None = None) -> FrameResidual:
        points, transforms = self.posed_points(codes, offsets)
        pixels, depth = project(camera, points)
        residual = np.asarray(tracked, dtype=np.float64)[LANDMARKS] - pixels
        cv = camera.cv_from_world
        lifted = np.stack([residual[:, 0] * depth / camera.fx,
                           residual[:, 1] * depth / camera.fy, np.zeros(len(depth))], axis=1)
        ray = (points @ cv[:3, :3].T + cv[:3, 3]) / depth[:, None]
        # camera -> world for row vectors: x R (R = cv's rotation, world -> camera)
        return FrameResidual(residual, lifted @ cv[:3, :3], depth / np.sqrt(camera.fx * camera.fy),
                             ray @ cv[:3, :3], cv[2, :3].copy(), transforms)

    def frames(self, codes: list[Codes], cameras: list[Camera],
               tracked: list[np.ndarray]) -> LandmarkFrames:
        """The fit's data for frames with tracked points (478, 2) each."""
        columns: dict[str, list] = {k: [] for k in ("f", "lifted", "along", "of", "px", "mm")}
        for c, camera, points in zip(codes, cameras, tracked):
            r = self.residual(c, camera, points)
            rotation = blended_rotations(self.avatar, r.transforms, self.triangles, self.bary)
            columns["f"].append(self.features(c))
            columns["lifted"].append(np.linalg.solve(rotation, r.lifted[:, :, None])[..., 0])
            columns["along"].append(np.linalg.solve(rotation, r.ray[:, :, None])[..., 0])
            columns["of"].append(np.einsum("lji,j->li", rotation, r.forward))  # M^T forward
            columns["px"].append(np.linalg.norm(r.pixels, axis=1))
            columns["mm"].append(1000 * r.metres_per_px)
        return LandmarkFrames(*(np.array(columns[k], np.float64) for k in columns))


RIDGE_MODES = ("intercept", "zero_mean", "free")


def ridge_solver(x: np.ndarray, strength: float, mode: str = "intercept"):
    """Ridge regression y ~ c + x @ coef, batched: ``x`` (..., T, D) features, the penalty
    ``strength * T`` on the coefficients (the features are in their own units, rotation
    entries and blendshape weights both of order one: unscaled, a feature that barely moves
    is held near zero, which a few dozen frames need). ``mode``: "intercept" (c free),
    "free" (c = 0), "zero_mean" (c free and ``mean(x) @ coef = 0``: the fitted x @ coef
    averages zero over the frames, so it holds only what varies with the features).
    Returns ``solve(y)`` for targets (..., T, K) -> coefficients (..., D, K), c (..., K)."""
    if mode not in RIDGE_MODES:
        raise ValueError(f"ridge mode {mode!r}: expected one of {RIDGE_MODES}")
    mean_x = np.zeros_like(x[..., :1, :]) if mode == "free" else x.mean(axis=-2, keepdims=True)
    centred = x - mean_x
    t, d = x.shape[-2], x.shape[-1]
    project = None
    if mode == "zero_mean":  # coef = P b, P projecting out the mean feature vector
        norm2 = np.maximum(np.sum(mean_x ** 2, axis=-1, keepdims=True), 1e-12)
        project = np.eye(d) - np.swapaxes(mean_x, -1, -2) @ mean_x / norm2
        centred = centred @ project
    gram = np.swapaxes(centred, -1, -2) @ centred + strength * t * np.eye(d)
    operator = np.linalg.solve(gram, np.swapaxes(centred, -1, -2))  # (..., D, T)
    if project is not None:
        operator = project @ operator

    def solve(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean_y = (np.zeros_like(y[..., :1, :]) if mode == "free"
                  else y.mean(axis=-2, keepdims=True))
        coef = operator @ (y - mean_y)
        return coef, mean_y[..., 0, :] - (mean_x @ coef)[..., 0, :]

    return solve


def ridge(x: np.ndarray, y: np.ndarray, strength: float,
          mode: str = "intercept") -> tuple[np.ndarray, np.ndarray]:
    """``ridge_solver(x, strength, mode)(y)``: coefficients (..., D, K), c (..., K)."""
    return ridge_solver(x, strength, mode)(y)


def fit_landmarks(data: LandmarkFrames, strength: float, mode: str = "zero_mean",
                  iterations: int = DEPTH_ITERATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each landmark's rest-space residual as c + features @ coefficients (``ridge_solver``'s
    ``mode``), the depth
    the images cannot show filled in turn from the fit (expectation-maximisation: varied
    views and poses pin it down; a depth no frame shows stays at the ridge's zero).
    Returns coefficients (D, L, 3), intercepts (L, 3) and the completed residuals (T, L, 3)."""
    t, l_count, _ = data.lifted.shape
    solve = ridge_solver(data.features, strength, mode)
    target = data.lifted
    for _ in range(iterations):
        coef, constant = solve(target.reshape(t, -1))
        predicted = (constant + data.features @ coef).reshape(t, l_count, 3)
        target = data.completed(predicted)
    return coef.reshape(-1, l_count, 3), constant.reshape(l_count, 3), target


def spread_weights(avatar: Avatar, triangles: np.ndarray, bary: np.ndarray):
    """(V_active,) vertex indices and (V_active, L) weights spreading landmark values to the
    template vertices: Gaussian in the geodesic (edge-path) distance from each landmark's
    nearest corner, normalised (an interpolation between the landmarks around a vertex),
    faded to zero between FADE_START_M and SPREAD_CUTOFF_M from the nearest landmark (so a
    value fades away from the face rather than being extrapolated)."""
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra

    t = avatar.template
    faces = np.asarray(t.faces, dtype=np.int64)
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    length = np.linalg.norm(t.vertices[a] - t.vertices[b], axis=1).astype(np.float64)
    n = len(t.vertices)
    graph = sparse.coo_matrix((length, (a, b)), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    sources = faces[triangles, np.argmax(bary, axis=1)]
    distance = dijkstra(graph, directed=False, indices=sources, limit=SPREAD_CUTOFF_M)
    region = np.array(t.region_names)[t.face_regions]
    excluded = np.unique(faces[np.isin(region, EXCLUDED_REGIONS)])
    distance[:, excluded] = np.inf
    distance = distance.T  # (V, L), inf beyond the cutoff
    nearest = distance.min(axis=1)
    active = np.flatnonzero(nearest < SPREAD_CUTOFF_M)
    distance, nearest = distance[active], nearest[active]
    # Interpolate between landmarks (weights relative to the nearest, summing to one), then
    # fade out past FADE_START_M from the nearest landmark.
    weights = np.exp(-0.5 * ((distance ** 2 - nearest[:, None] ** 2) / SPREAD_SIGMA_M ** 2))
    weights /= weights.sum(axis=1, keepdims=True)
    fade = np.clip((SPREAD_CUTOFF_M - nearest) / (SPREAD_CUTOFF_M - FADE_START_M), 0.0, 1.0)
    weights *= (fade * fade * (3 - 2 * fade))[:, None]  # smoothstep
    return active, weights


def fit_correctives_from_landmarks(avatar: Avatar, codes: list[Codes], cameras: list[Camera],
                                   face_2d: list[np.ndarray | None], width: int = 24,
                                   validation_every: int = 5,
                                   mode: str = "zero_mean") -> CorrectiveFit:
    """Correctives that move the avatar's face toward where its landmarks were tracked.

    ``codes``, ``cameras`` and ``face_2d`` (each (478, 2) pixels, or None where the face was
    not found) per frame, the cameras seeing the avatar in its own space (as
    ``avatar.pose(codes)`` puts it; the avatar's own correctives, if any, are not used).
    ``width``: M, features per vertex (at most 128; 24 keeps the default avatar's file near
    14 MB). Every ``validation_every``-th run of consecutive usable frames picks the ridge
    strength, then the fit uses all. ``mode`` (``ridge_solver``'s; see the module's
    docstring): "zero_mean" for an avatar whose face shape was fitted to these frames,
    "intercept" for one whose shape is right at the neutral expression, "free" to let the
    basis take up a static mismatch too. The report gives the RMS landmark
    residual before and after, over the fitted frames and (fitted without them) over the
    validation frames."""
    start = time.perf_counter()
    if not 1 <= width <= MAX_CORRECTIVE_WIDTH:
        raise ValueError(f"width {width}: expected 1..{MAX_CORRECTIVE_WIDTH}")
    if not len(codes) == len(cameras) == len(face_2d):
        raise ValueError("codes, cameras and face_2d must have one entry per frame")
    if mode not in RIDGE_MODES:
        raise ValueError(f"mode {mode!r}: expected one of {RIDGE_MODES}")
    usable = [i for i, f in enumerate(face_2d)
              if f is not None and np.shape(f)[0] >= len(LANDMARKS) and np.isfinite(f).all()]
    if len(usable) < 10:
        raise ValueError(f"{len(usable)} frames with a tracked face: need at least 10")
    model = LandmarkModel(avatar)
    data = model.frames([codes[i] for i in usable], [cameras[i] for i in usable],
                        [face_2d[i] for i in usable])
    count = len(usable)
    # Validation in runs of consecutive frames (neighbouring frames of a clip are nearly the
    # same: single frames scored the fit on what it had just seen, and picked too weak a ridge).
    run = max(1, count // (4 * validation_every))
    check = (np.arange(count) // run) % validation_every == validation_every // 2
    fit_rows, check_rows = np.flatnonzero(~check), np.flatnonzero(check)

    # The ridge strength: fitted without the validation frames, scored on what their images
    # show (rest-space metres).
    held = data.subset(check_rows)
    scores = {}
    for strength in RIDGE_CHOICES:
        coef, constant, _ = fit_landmarks(data.subset(fit_rows), strength, mode)
        predicted = constant + np.einsum("td,dlk->tlk", held.features, coef)
        scores[strength] = float(np.sqrt(np.mean((held.lifted - held.seen_part(predicted)) ** 2)))
    best = min(scores, key=scores.get)
    active, weights = spread_weights(avatar, model.triangles, model.bary)

    def rms(fit: VertexFit, rows, static: bool = False) -> tuple[float, float]:
        """RMS landmark residual (px, mm) over ``rows`` with the fitted correctives (and the
        rest offset, with ``static``)."""
        correctives = Correctives(fit.index, fit.basis, data.features.shape[1])
        px, mm = [], []
        for r in rows:
            i = usable[r]
            offsets = corrective_offsets(correctives, data.features[r])
            if static:
                offsets = offsets + fit.rest_offset
            res = model.residual(codes[i], cameras[i], face_2d[i], offsets)
            length = np.linalg.norm(res.pixels, axis=1)
            px.append(length)
            mm.append(length * 1000 * res.metres_per_px)
        return float(np.sqrt(np.mean(np.square(px)))), float(np.sqrt(np.mean(np.square(mm))))

    def rms_before(rows) -> tuple[float, float]:
        px = data.residual_px[rows]
        return (float(np.sqrt(np.mean(px ** 2))),
                float(np.sqrt(np.mean((px * data.mm_per_px[rows]) ** 2))))

    vertex_count = len(avatar.template.vertices)
    rest = avatar.template.vertices.astype(np.float64)
    corners = rest[avatar.template.faces[model.triangles]]
    landmark_rest = np.einsum("nk,nkj->nj", model.bary, corners)

    def with_rest_offset(fit: VertexFit) -> VertexFit:
        fit.rest_offset = volume_spread(rest, landmark_rest, fit.landmark_static)
        return fit

    part = with_rest_offset(fit_vertices(data.subset(fit_rows), best, active, weights, width,
                                         vertex_count, mode))
    validation = (rms_before(check_rows), rms(part, check_rows),
                  rms(part, check_rows, static=True))
    whole = with_rest_offset(fit_vertices(data, best, active, weights, width, vertex_count,
                                          mode))
    every = np.arange(count)
    fitted = rms_before(every), rms(whole, every), rms(whole, every, static=True)
    index, basis = whole.index, whole.basis
    report = {
        "frames_used": count, "frames_given": len(codes), "validation_frames": len(check_rows),
        "ridge_strength": best, "width": int(index.shape[1]),
        "ridge_validation_mm": {str(k): round(1000 * v, 4) for k, v in scores.items()},
        "vertices_corrected": int((np.abs(basis).max(axis=(1, 2)) > 0).sum()),
        "mode": mode, "mean_residual_rms_mm": round(whole.mean_residual_mm, 3),
        **{f"landmark_rms_{unit}": {
            f"{rows}_{name}": round(value[k][u], 3)
            for rows, value in (("fitted", fitted), ("validation", validation))
            for k, name in enumerate(("before", "after", "after_with_rest_offset"))}
           for u, unit in enumerate(("px", "mm"))},
        "seconds": round(time.perf_counter() - start, 2),
    }
    return CorrectiveFit(list(CORRECTIVE_BONES), index, basis, report, whole.rest_offset)


@dataclass
class VertexFit:
    """``fit_vertices``' result: ``index`` (V, M) int32, ``basis`` (V, M, 3) float32,
    ``landmark_static`` (L, 3) each landmark's static term (see ``CorrectiveFit``),
    ``mean_residual_mm``: RMS over the landmarks of their mean rest-space residual."""

    index: np.ndarray
    basis: np.ndarray
    landmark_static: np.ndarray
    mean_residual_mm: float
    rest_offset: np.ndarray | None = None


def fit_vertices(data: LandmarkFrames, strength: float, active: np.ndarray,
                 weights: np.ndarray, width: int, vertex_count: int,
                 mode: str = "zero_mean") -> VertexFit:
    """Correctives fitted on ``data``: ``active`` (V_a,) vertices and ``weights`` (V_a, L)
    from ``spread_weights``; ``vertex_count``: V, the template's; ``mode``:
    ``ridge_solver``'s."""
    x = data.features
    coef, landmark_static, completed = fit_landmarks(data, strength, mode)
    d, l_count = coef.shape[:2]
    vertex_coef = (weights @ coef.transpose(1, 0, 2).reshape(l_count, -1)).reshape(-1, d, 3)
    contribution = np.linalg.norm(vertex_coef, axis=2) * x.std(axis=0)
    m = min(width, x.shape[1])
    chosen = np.argsort(-contribution, axis=1)[:, :m]  # (V_a, M)
    targets = (weights @ completed.transpose(1, 0, 2).reshape(l_count, -1)).reshape(
        len(active), -1, 3)  # (V_a, T, 3)
    basis = np.zeros((len(active), m, 3))
    largest = np.zeros(len(active))
    for part in np.array_split(np.arange(len(active)), max(1, len(active) // 500)):
        xv = x[:, chosen[part]]  # (T, P, M)
        basis[part], _ = ridge(xv.transpose(1, 0, 2), targets[part], strength, mode)
        basis[part] = np.clip(basis[part], -MAX_BASIS_M, MAX_BASIS_M)
        moved = np.einsum("tpm,pmk->ptk", xv, basis[part])
        largest[part] = np.linalg.norm(moved, axis=2).max(axis=1)
    # No correction past MAX_CORRECTION_M over these frames.
    basis *= np.minimum(1.0, MAX_CORRECTION_M / np.maximum(largest, 1e-12))[:, None, None]
    index = np.zeros((vertex_count, m), np.int32)
    full = np.zeros((len(index), m, 3), np.float32)
    index[active] = chosen
    full[active] = basis
    mean_mm = float(1000 * np.sqrt(np.mean(np.sum(completed.mean(axis=0) ** 2, axis=1))))
    return VertexFit(index, full, landmark_static, mean_mm)


def volume_spread(vertices: np.ndarray, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(V, 3) float32: ``values`` (L, 3) at rest ``points`` (L, 3) spread to every vertex by
    straight-line distance (a smooth warp of the space round the face, so that the eyeballs,
    the mouth's inside and the hair move with the skin over them; spread along the surface
    the skin moved without them), interpolated between the points and faded out between
    FADE_START_M and STATIC_CUTOFF_M from the nearest, each at most MAX_CORRECTION_M."""
    distance = np.linalg.norm(vertices[:, None, :] - points[None, :, :], axis=2)  # (V, L)
    nearest = distance.min(axis=1, keepdims=True)
    weights = np.exp(-0.5 * (distance ** 2 - nearest ** 2) / STATIC_SIGMA_M ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    fade = np.clip((STATIC_CUTOFF_M - nearest) / (STATIC_CUTOFF_M - FADE_START_M), 0.0, 1.0)
    out = (weights @ values) * (fade * fade * (3 - 2 * fade))
    size = np.linalg.norm(out, axis=1, keepdims=True)
    return (out * np.minimum(1.0, MAX_CORRECTION_M / np.maximum(size, 1e-12))).astype(np.float32)
