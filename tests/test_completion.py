"""Colour completion: a person in a red shirt with brown hair, seen only from the front from
the hips up, gets a red back, brown hair over the back of the head, dark legs and shoes, and
nothing of the default avatar's blue shirt."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.codes import Codes
from avatar.completion import (
    FACE,
    HAIR,
    NEUTRAL_TROUSERS,
    SHIRT,
    TROUSERS,
    body_parts,
    complete_colors,
    face_adjacency,
    mirror_faces,
)
from render.camera import Camera
from render.skinned import triangle_frames

DEFAULT_SHIRT = np.array([0.16, 0.42, 0.58])  # scripts/build_default_avatar.py
DEFAULT_HAIR = np.array([0.23, 0.15, 0.09])
DEFAULT_SKIN = np.array([0.87, 0.66, 0.55])
RED = np.array([0.80, 0.12, 0.10])
BROWN = np.array([0.45, 0.27, 0.12])
TAN = np.array([0.70, 0.50, 0.38])


@pytest.fixture(scope="module")
def avatar():
    from avatar.avatar import load_avatar

    return load_avatar("default")


def near(colors: np.ndarray, colour, within: float) -> np.ndarray:
    return np.linalg.norm(colors - colour, axis=1) < within


@pytest.fixture(scope="module")
def person(avatar):
    """The default avatar recoloured (red shirt, brown hair, tan skin; the hair strands'
    shades kept), which Gaussians were seen (front-facing triangles above the hips), and
    what the pipeline hands over: the true colours where seen, the default's elsewhere."""
    default = avatar.data.colors.astype(np.float32)
    truth = default.copy()
    truth[near(default, DEFAULT_SHIRT, 0.15)] = RED
    hair = near(default, DEFAULT_HAIR, 0.12)
    shade = default[hair].mean(axis=1, keepdims=True) / DEFAULT_HAIR.mean()
    truth[hair] = np.clip(shade * BROWN, 0, 1)
    truth[near(default, DEFAULT_SKIN, 0.05)] = TAN
    t = avatar.template
    frames, _ = triangle_frames(t.vertices, t.faces)
    face = avatar.data.binding_face
    centroid = t.vertices[t.faces].mean(axis=1)
    seen = (frames[face, 2, 2] > 0.3) & (centroid[face, 1] > 1.0)
    given = np.where(seen[:, None], truth, default)
    return truth, seen, given


def test_template_zones_mirror_and_adjacency_are_sound(avatar):
    t = avatar.template
    parts = body_parts(t)
    twin = mirror_faces(t)
    paired = twin >= 0
    print(f"{paired.mean():.0%} of the template's triangles have a mirror twin")
    assert paired.mean() > 0.9
    # A twin's twin is itself, and twins lie in the same zone.
    both = paired & (twin[np.maximum(twin, 0)] >= 0)
    assert (twin[twin[both]] == np.flatnonzero(both)).mean() > 0.95
    assert (parts[twin[paired]] == parts[paired]).mean() > 0.97
    adjacency = face_adjacency(t)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    assert degree.max() <= 3 and (degree == 3).mean() > 0.95  # a manifold triangle mesh
    centroid = t.vertices[t.faces].mean(axis=1)
    assert centroid[parts == HAIR, 1].min() > centroid[parts == SHIRT, 1].max()
    assert centroid[parts == TROUSERS, 1].max() < centroid[parts == SHIRT, 1].max()


def test_unseen_parts_take_the_seen_colours_not_the_default_look(avatar, person):
    truth, seen, given = person
    print(f"{seen.mean():.0%} of the Gaussians seen")
    out = complete_colors(avatar.template, avatar.data.binding_face, given, seen)
    assert out.shape == given.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[seen], given[seen])
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1

    t = avatar.template
    parts = body_parts(t)[avatar.data.binding_face]
    centroid = t.vertices[t.faces].mean(axis=1)[avatar.data.binding_face]
    back = centroid[:, 2] < -0.02
    default = avatar.data.colors
    shirt_back = ~seen & back & near(default, DEFAULT_SHIRT, 0.05)
    hair_back = ~seen & back & (parts == HAIR)
    legs = ~seen & (parts == TROUSERS)
    face_side = ~seen & (parts == FACE)
    for name, where, want in (("shirt back", shirt_back, RED), ("back of the head", hair_back,
                                                                 BROWN)):
        mean = out[where].mean(axis=0)
        print(f"{name}: {where.sum()} unseen Gaussians, mean colour {np.round(mean, 2)}")
        assert where.sum() > 1000
        assert np.linalg.norm(mean - want) < 0.1
    # Most of it plainly red; the rest lies on the garment edges (triangles shared by shirt
    # and skin, or the hem, which the zones put in the trousers): 96 % measured.
    red = near(out[shirt_back], RED, 0.15).mean()
    print(f"shirt back: {red:.0%} within 0.15 of the seen red")
    assert red > 0.85
    # Nothing anywhere is left the default avatar's blue.
    assert not near(out, DEFAULT_SHIRT, 0.15).any()
    leg_mean = out[legs].mean(axis=0)
    print(f"legs: mean {np.round(leg_mean, 2)}")
    np.testing.assert_allclose(leg_mean, NEUTRAL_TROUSERS, atol=0.02)
    # The face's unseen sides are filled from the seen skin, not left the default's.
    skin_like = near(out[face_side], TAN, 0.12).mean()
    print(f"unseen face and neck: {skin_like:.0%} near the seen skin")
    assert skin_like > 0.8


def test_a_fully_seen_avatar_comes_back_unchanged_and_bad_shapes_are_refused(avatar):
    colors = avatar.data.colors.astype(np.float32)
    seen = np.ones(len(colors), bool)
    np.testing.assert_array_equal(
        complete_colors(avatar.template, avatar.data.binding_face, colors, seen), colors)
    with pytest.raises(ValueError, match="must be"):
        complete_colors(avatar.template, avatar.data.binding_face, colors[:10], seen)


def render_front_and_back(avatar, colors: np.ndarray) -> np.ndarray:
    """(H, 2W, 3) the avatar at rest with ``colors`` seen from the front and from behind
    (GL where there is one, else the reference renderer on a smaller image)."""
    from render.gaussians import Gaussians

    posed = avatar.pose(Codes())
    lit = posed.colors / np.maximum(avatar.data.colors, 1e-6) * colors  # the same light
    g = Gaussians(posed.means, posed.quats, posed.scales, posed.opacities,
                  np.clip(lit, 0, 1).astype(np.float32))
    try:
        from render import gl

        renderer = gl.GLSplatRenderer()
        size, render = (256, 384), renderer.render
    except Exception:  # no headless GL here: the reference, smaller
        from render.reference import render as reference

        renderer, size, render = None, (64, 96), reference
    try:
        views = []
        for eye in ([0.0, 1.0, 3.2], [0.0, 1.0, -3.2]):
            camera = Camera.look_at(eye, [0.0, 0.9, 0.0], *size, vertical_fov_deg=40)
            rgba = render(g, camera)
            views.append(np.clip(rgba[..., :3] + (1 - rgba[..., 3:]) * 0.5, 0, 1))
    finally:
        if renderer is not None:
            renderer.release()
    return np.concatenate(views, axis=1)


def test_the_completed_person_renders_red_from_behind(avatar, person, tmp_path):
    truth, seen, given = person
    out = complete_colors(avatar.template, avatar.data.binding_face, given, seen)
    picture = render_front_and_back(avatar, out)
    from PIL import Image

    Image.fromarray((picture * 255).round().astype(np.uint8)).save(tmp_path / "completed.png")
    h, w2 = picture.shape[:2]
    w = w2 // 2
    # The back view's torso (a box at chest height in the middle): red, not blue.
    chest = picture[int(0.30 * h):int(0.40 * h), w + int(0.42 * w):w + int(0.58 * w)]
    mean = chest.reshape(-1, 3).mean(axis=0)
    print(f"back view, chest: mean colour {np.round(mean, 2)}")
    assert mean[0] > 2 * mean[2] and mean[0] > 2 * mean[1]


def test_the_zones_follow_a_taller_body(avatar):
    import dataclasses

    t = avatar.template
    taller = dataclasses.replace(t, vertices=t.vertices * [1.0, 1.1, 1.0],
                                 bone_heads=t.bone_heads * [1.0, 1.1, 1.0])
    same = (body_parts(taller) == body_parts(t)).mean()
    print(f"{same:.1%} of the triangles keep their zone on a body 10 % taller")
    assert same > 0.97
