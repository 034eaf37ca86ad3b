"""Colour completion: plausible colours for the parts of an avatar a clip never showed.

A webcam clip shows the front of the head and shoulders; the back of the head, the back of
the shirt, the arms, legs and feet stay unseen. Their Gaussians must not keep the default
avatar's look (its blue shirt on a person in red), so each unseen colour is filled from what
was seen, in this order (the first that applies wins):

1. Left/right symmetry: the colour seen at the mirrored point (x -> -x on the rest template).
2. Region rules, by the garment zone of the Gaussian's triangle on the rest template (the
   same zones the default avatar is dressed by, ``body_parts``):
   hair (the top and back of the head) <- the seen hair colour; shirt (torso above the hem,
   and the sleeves) <- the seen shirt at the nearest point in x, y (the front's colour on
   the back); arm skin and hands <- the seen skin; trousers <- the seen trousers, else a
   neutral dark; shoes <- the seen shoes, else dark.
3. Diffusion over the mesh (harmonic fill over triangle adjacency, within the zone first)
   for whatever remains (the ears, the back of the neck, the face's sides).

The eyes, the mouth's inside and the tongue keep the colours they came with (the default
avatar's eyes, mouth and tongue are plausible on anybody; a clip rarely shows them well).
Seen colours are returned unchanged.
"""

from __future__ import annotations

import numpy as np

from avatar.template import Template

# Garment zones of the template's triangles (``body_parts``).
HAIR, FACE, SHIRT, ARM, HAND, TROUSERS, SHOES, INNER = range(8)
PART_NAMES = ("hair", "face", "shirt", "arm", "hand", "trousers", "shoes", "inner")

# Unseen trousers and shoes: a neutral dark grey-blue and a darker brown-black (sRGB albedo).
NEUTRAL_TROUSERS = (0.17, 0.17, 0.19)
DARK_SHOES = (0.10, 0.09, 0.09)

# Zone boundaries on the rest template (metres), as the default avatar is dressed
# (scripts/build_default_avatar.py): a crew neckline sphere (its centre at (0, 1.46, 0) on
# the shipped template, kept relative to the neck03 bone so that a fitted shape moves it),
# the sleeves ending SLEEVE_M down the upper arm, the hem HEM_ABOVE_HIPS_M above the root,
# shoes below SHOE_TOP_M.
NECKLINE_ABOVE_NECK03 = (0.0, 0.0127, -0.0174)
NECKLINE_RADIUS_M = 0.122
SLEEVE_M = 0.11
HEM_ABOVE_HIPS_M = 0.09
SHOE_TOP_M = 0.085
ARM_BONES = ("clavicle", "shoulder", "upperarm", "lowerarm", "wrist", "finger", "metacarpal")
MIRROR_TOLERANCE_M = 0.01  # a mirror twin further than this is no twin (asymmetric spots)
MIN_SEEN_SHARE = 0.3  # of a zone's triangles, before its own seen colour is trusted
HAIR_TOP_SHARE = 0.3  # the hair colour from the highest share of the seen hair triangles
SHIRT_NEIGHBOURS = 16


def body_parts(template: Template) -> np.ndarray:
    """(F,) int8 garment zone of each template triangle (HAIR ... INNER), from the template's
    regions and its rest geometry."""
    t = template
    region = np.array(t.region_names)[t.face_regions]
    centroid = t.vertices[t.faces].mean(axis=1).astype(np.float64)
    parts = np.full(len(t.faces), INNER, np.int8)

    # The head: the scalp is the top and back, leaving forehead, face and ears bare (the
    # default avatar's hair line, relative to a point behind the eyes).
    head = region == "head"
    eye = t.bone_heads[t.bone_index("eye.L")].astype(np.float64)
    rel = centroid - np.array([0.0, eye[1] + 0.02, eye[2] - 0.075])
    scalp = (((rel[:, 1] > 0.045) & ~((rel[:, 2] > 0.065) & (rel[:, 1] < 0.058)))
             | ((rel[:, 2] < -0.02) & (rel[:, 1] > -0.06))
             | ((rel[:, 2] < 0.035) & (rel[:, 1] > 0.0) & (np.abs(rel[:, 0]) > 0.05)))
    ears = (np.abs(rel[:, 0]) > 0.068) & (rel[:, 1] < 0.03) & (rel[:, 2] > -0.05)
    parts[head] = FACE
    parts[head & scalp & ~ears] = HAIR

    # The body: arms told from the torso by their skin weights, then level lines.
    weights = np.zeros((len(t.vertices), len(t.bone_names)), np.float32)
    np.put_along_axis(weights, t.skin_indices, t.skin_weights, axis=1)
    arm_bones = [i for i, n in enumerate(t.bone_names) if n.startswith(ARM_BONES)
                 and not n.startswith(("clavicle", "shoulder"))]
    arm = weights[:, arm_bones].sum(axis=1)[t.faces].mean(axis=1) > 0.5
    along = np.zeros(len(t.faces))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        start = t.bone_heads[t.bone_index(f"upperarm01.{side}")].astype(np.float64)
        end = t.bone_heads[t.bone_index(f"lowerarm01.{side}")].astype(np.float64)
        axis = (end - start) / np.linalg.norm(end - start)
        on_side = np.sign(centroid[:, 0]) == sign
        along[on_side] = (centroid[on_side] - start) @ axis
    y = centroid[:, 1]
    hem_y = float(t.bone_heads[0, 1]) + HEM_ABOVE_HIPS_M
    neckline = t.bone_heads[t.bone_index("neck03")] + np.array(NECKLINE_ABOVE_NECK03)
    neckline[0] = 0.0
    below_neck = np.linalg.norm(centroid - neckline, axis=1) > NECKLINE_RADIUS_M
    body = region == "body"
    parts[body] = FACE  # the neck above the neckline: skin, filled like the face's
    parts[body & below_neck & (y > hem_y)] = SHIRT
    parts[body & arm] = ARM
    parts[body & arm & (along <= SLEEVE_M)] = SHIRT
    parts[body & ~arm & (y <= hem_y)] = TROUSERS
    feet = np.isin(region, ["foot.L", "foot.R"])
    parts[(body | feet) & ~arm & (y < SHOE_TOP_M)] = SHOES
    parts[feet & (y >= SHOE_TOP_M)] = TROUSERS
    parts[np.isin(region, ["hand.L", "hand.R"])] = HAND
    return parts


def mirror_faces(template: Template) -> np.ndarray:
    """(F,) index of each triangle's left/right twin (nearest centroid after x -> -x), -1
    where the nearest is further than MIRROR_TOLERANCE_M."""
    from scipy.spatial import cKDTree

    centroid = template.vertices[template.faces].mean(axis=1).astype(np.float64)
    mirrored = centroid * np.array([-1.0, 1.0, 1.0])
    distance, twin = cKDTree(centroid).query(mirrored)
    return np.where(distance <= MIRROR_TOLERANCE_M, twin, -1)


def face_adjacency(template: Template):
    """(F, F) scipy.sparse adjacency of triangles sharing an edge."""
    from scipy import sparse

    faces = np.asarray(template.faces, dtype=np.int64)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]),
                    axis=1)
    owner = np.tile(np.arange(len(faces)), 3)
    key = edges[:, 0] * (faces.max() + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = np.flatnonzero(key[1:] == key[:-1])  # consecutive owners of one edge
    a, b = owner[same], owner[same + 1]
    n = len(faces)
    adjacency = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)).tocsr()
    return ((adjacency + adjacency.T) > 0).astype(np.float64)


def diffuse(adjacency, colors: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic fill: each unknown triangle the mean of its neighbours, known ones fixed
    (one sparse solve per channel). Returns the colours and which are now known (unknowns
    in a patch with no known triangle stay unknown)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import spsolve

    _, label = connected_components(adjacency, directed=False)
    reachable = np.isin(label, np.unique(label[known]))
    todo = np.flatnonzero(~known & reachable)
    out = colors.copy()
    if todo.size == 0:
        return out, known | reachable
    fixed = np.flatnonzero(known)
    laplacian = sparse.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency
    a = laplacian[todo][:, todo].tocsc()
    rhs = -(laplacian[todo][:, fixed] @ colors[fixed])
    out[todo] = np.asarray(spsolve(a, rhs)).reshape(len(todo), -1)
    return out, known | reachable


def hair_colour(face_color: np.ndarray, seen_hair: np.ndarray,
                centroid: np.ndarray) -> np.ndarray | None:
    """The seen hair's colour: the median over the highest seen hair-zone triangles (the
    crown; a person's hairline is rarely the template's, and from the front the zone's lower
    edge shows forehead and temples)."""
    if not seen_hair.any():
        return None
    height = centroid[seen_hair, 1]
    top = height >= np.quantile(height, 1.0 - HAIR_TOP_SHARE)
    return np.median(face_color[seen_hair][top], axis=0)


def complete_colors(template: Template, binding_face: np.ndarray, colors: np.ndarray,
                    seen: np.ndarray) -> np.ndarray:
    """(N, 3) colours with every unseen one filled (see the module's docstring).

    ``binding_face`` (N,) the template triangle of each Gaussian; ``colors`` (N, 3) RGB albedo
    in [0, 1]; ``seen`` (N,) bool, which colours were observed. Seen colours come back
    unchanged; a Gaussian whose triangle also carries seen Gaussians takes their mean."""
    binding_face = np.asarray(binding_face, dtype=np.int64)
    colors = np.asarray(colors, dtype=np.float32)
    seen = np.asarray(seen, dtype=bool)
    n_faces = len(template.faces)
    if colors.shape != (len(binding_face), 3) or seen.shape != binding_face.shape:
        raise ValueError(f"colors {colors.shape} and seen {seen.shape} must be (N, 3) and (N,) "
                         f"for N = {len(binding_face)} Gaussians")
    out = colors.copy()
    if seen.all():
        return out

    # Per triangle: the mean seen colour.
    count = np.bincount(binding_face[seen], minlength=n_faces).astype(np.float64)
    total = np.stack([np.bincount(binding_face[seen], colors[seen, c].astype(np.float64),
                                  minlength=n_faces) for c in range(3)], axis=1)
    known = count > 0
    face_color = total / np.maximum(count, 1.0)[:, None]
    parts = body_parts(template)
    fillable = known | (parts != INNER)  # inner parts keep what they came with

    # 1. Symmetry.
    twin = mirror_faces(template)
    take = ~known & (twin >= 0) & fillable
    take &= known[np.maximum(twin, 0)]
    face_color[take] = face_color[twin[take]]
    observed = known.copy()  # what the region rules may learn from: seen and mirrored
    observed |= take

    # 2. Region rules.
    centroid = template.vertices[template.faces].mean(axis=1).astype(np.float64)

    def seen_median(*zones: int) -> np.ndarray | None:
        where = observed & np.isin(parts, zones)
        return np.median(face_color[where], axis=0) if where.any() else None

    filled = observed.copy()
    skin = seen_median(FACE)
    fallback = {HAIR: None, ARM: skin, HAND: skin, TROUSERS: NEUTRAL_TROUSERS,
                SHOES: DARK_SHOES}
    for zone in fallback:
        share = (observed & (parts == zone)).sum() / max(1, (parts == zone).sum())
        # A zone glimpsed at its edge (the sleeves' tops at a webcam's lower border, a
        # trouser band under the hem) shows the neighbouring garment more than its own:
        # trust its colour only when a fair share of it was seen.
        colour = seen_median(zone) if share >= MIN_SEEN_SHARE else fallback[zone]
        if zone == HAIR:
            colour = hair_colour(face_color, observed & (parts == HAIR), centroid)
        if colour is None:
            continue
        todo = ~filled & (parts == zone)
        face_color[todo] = colour
        filled |= todo
    shirt_seen = np.flatnonzero(observed & (parts == SHIRT))
    shirt_todo = np.flatnonzero(~filled & (parts == SHIRT))
    if shirt_seen.size and shirt_todo.size:
        from scipy.spatial import cKDTree

        # The front's colour on the back: the median of the nearest seen shirt triangles in x
        # and y only (several, so that one odd spot on the front is not copied).
        k = min(SHIRT_NEIGHBOURS, len(shirt_seen))
        _, nearest = cKDTree(centroid[shirt_seen, :2]).query(centroid[shirt_todo, :2], k=k)
        nearest = nearest.reshape(len(shirt_todo), k)
        face_color[shirt_todo] = np.median(face_color[shirt_seen[nearest]], axis=1)
        filled[shirt_todo] = True

    # 3. Diffusion for the rest over fillable triangles: first within each zone (the back of
    # the neck from the neck's skin, not from the hair and the shirt around it), then across
    # zones for a zone nobody saw any of.
    if (~filled & fillable).any():
        keep = np.flatnonzero(fillable)
        adjacency = face_adjacency(template)[keep][:, keep].tocoo()
        same = parts[keep][adjacency.row] == parts[keep][adjacency.col]
        within = adjacency.copy()
        within.data = within.data * same
        within.eliminate_zeros()
        for graph in (within.tocsr(), adjacency.tocsr()):
            sub, reached = diffuse(graph, face_color[keep], filled[keep])
            face_color[keep] = sub
            filled[keep] = reached

    unseen = ~seen & filled[binding_face]
    out[unseen] = np.clip(face_color[binding_face[unseen]], 0.0, 1.0).astype(np.float32)
    return out
