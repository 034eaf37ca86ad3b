"""The headset's maths against pyopenxr's own (the OpenXR SDK's xr_linear.h port), and the
session state machine, colour-format choice and placement, without a runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest

from render.camera import Camera
from render.errors import XrUnavailableError
from render.xr import eye_camera, placements_in_front, world_from_pose
from render.xr_graphics import (
    GL_RGBA8,
    GL_RGBA16F,
    GL_SRGB8_ALPHA8,
    choose_color_format,
    srgb_to_linear,
)
from render.xr_session import Lifecycle, SessionState

xr = pytest.importorskip("xr", reason="pyopenxr is not installed (pip install pyopenxr)")
from xr.utils.matrix4x4f import GraphicsAPI, Matrix4x4f_ctypes  # noqa: E402

# Per-eye fields of view of real headsets (radians: left, right, up, down), all asymmetric.
FOVS = [
    (-0.942, 0.698, 0.768, -0.960),   # a Quest 2 style left eye
    (-0.698, 0.942, 0.768, -0.960),   # its right eye
    (-0.870, 0.785, 0.890, -0.880),
    (-0.40, 0.10, 0.30, -0.60),       # narrow and strongly off-centre
]


def _xr_projection(fov, near, far) -> np.ndarray:
    left, right, up, down = fov
    m = Matrix4x4f_ctypes.create_projection_fov(
        GraphicsAPI.OPENGL, xr.Fovf(angle_left=left, angle_right=right, angle_up=up,
                                    angle_down=down), near, far)
    return m.as_numpy().astype(np.float64)  # a copy: as_numpy() views m's memory


def _xr_view(position, orientation_xyzw) -> np.ndarray:
    """camera_from_world as an OpenXR app computes it with pyopenxr's matrix helpers."""
    rotation = Matrix4x4f_ctypes.create_from_quaternion(xr.Quaternionf(*orientation_xyzw))
    world_from_eye = rotation.as_numpy().astype(np.float64)
    world_from_eye[:3, 3] = position
    # Keep each ctypes matrix alive while reading it: as_numpy() views its memory.
    pose = Matrix4x4f_ctypes(world_from_eye)
    view = pose.invert_rigid_body()
    return view.as_numpy().astype(np.float64)


def _random_pose(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return rng.uniform(-2, 2, size=3), q  # position, (x, y, z, w)


@pytest.mark.parametrize("fov", FOVS)
@pytest.mark.parametrize("size", [(320, 240), (1832, 1920)])
def test_projection_from_asymmetric_fov_matches_pyopenxr(fov, size):
    near, far = 0.05, 100.0
    camera = eye_camera(np.eye(4), fov, size[0], size[1], near, far)
    np.testing.assert_allclose(camera.gl_projection(), _xr_projection(fov, near, far),
                               rtol=1e-5, atol=1e-6)


def test_view_matrix_matches_pyopenxr():
    rng = np.random.default_rng(7)
    for _ in range(20):
        position, q = _random_pose(rng)
        camera = eye_camera(world_from_pose(position, q), FOVS[0], 320, 240)
        np.testing.assert_allclose(camera.camera_from_world, _xr_view(position, q), atol=1e-5)


def test_pixels_agree_with_the_openxr_clip_space():
    """A world point lands on the same pixel through our camera (OpenCV intrinsics, origin
    top-left) as through OpenXR's projection @ view and the GL viewport transform."""
    rng = np.random.default_rng(3)
    width, height = 640, 480
    for fov in FOVS:
        position, q = _random_pose(rng)
        camera = eye_camera(world_from_pose(position, q), fov, width, height)
        clip_from_world = _xr_projection(fov, camera.near, camera.far) @ _xr_view(position, q)
        # Points in front of the eye, inside its frustum.
        eye_points = np.stack([rng.uniform(-0.3, 0.3, 50), rng.uniform(-0.3, 0.3, 50),
                               -rng.uniform(0.5, 5.0, 50), np.ones(50)], axis=1)
        world_points = (world_from_pose(position, q) @ eye_points.T).T
        clip = (clip_from_world @ world_points.T).T
        ndc = clip[:, :2] / clip[:, 3:4]
        gl_pixels = np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], axis=1)
        cv = (camera.cv_from_world @ world_points.T).T[:, :3]
        ours = (camera.intrinsics @ cv.T).T
        ours = ours[:, :2] / ours[:, 2:3]
        np.testing.assert_allclose(ours, gl_pixels, atol=1e-6 * width)


def test_world_from_pose_is_rigid_and_normalises():
    m = world_from_pose([1, 2, 3], [0, 0, 0, 2.0])  # an unnormalised identity
    np.testing.assert_allclose(m, np.array([[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3],
                                            [0, 0, 0, 1.0]]))
    with pytest.raises(ValueError):
        world_from_pose([0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError):
        world_from_pose([0, 0, 0], [math.nan, 0, 0, 1])


def test_inverted_fov_is_refused():
    with pytest.raises(ValueError):
        eye_camera(np.eye(4), (0.5, -0.5, 0.5, -0.5), 100, 100)


# -- colour formats ---------------------------------------------------------------------------
def test_srgb_formats_come_first():
    assert choose_color_format([GL_RGBA16F, GL_RGBA8, GL_SRGB8_ALPHA8]) == (GL_SRGB8_ALPHA8, True)
    assert choose_color_format([GL_RGBA16F, GL_RGBA8]) == (GL_RGBA16F, False)
    with pytest.raises(XrUnavailableError, match="no colour swapchain format"):
        choose_color_format([0x81A5])  # a depth format only


def test_srgb_to_linear_curve():
    np.testing.assert_allclose(srgb_to_linear([0.0, 0.04045, 0.5, 1.0]),
                               [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6)


# -- the session state machine --------------------------------------------------------------
def test_lifecycle_user_exit_walks_through_stopping():
    life = Lifecycle()
    assert life.on_state(SessionState.IDLE) is None and not life.running
    assert life.on_state(SessionState.READY) == "begin" and life.running
    for state in (SessionState.SYNCHRONIZED, SessionState.VISIBLE, SessionState.FOCUSED):
        assert life.on_state(state) is None
    assert life.focused
    assert life.request_exit() is True          # ask the runtime (xrRequestExitSession) ...
    assert life.request_exit() is False         # ... once
    assert not life.done                        # frames keep going until the runtime agrees
    life.on_state(SessionState.VISIBLE)
    assert life.on_state(SessionState.STOPPING) == "end" and not life.running
    life.on_state(SessionState.IDLE)
    assert not life.done
    life.on_state(SessionState.EXITING)
    assert life.done and not life.lost
    assert life.exit_reason == "the viewer was asked to exit"


def test_lifecycle_runtime_ends_the_session():
    life = Lifecycle()
    life.on_state(SessionState.READY)
    life.on_state(SessionState.FOCUSED)
    assert life.on_state(SessionState.STOPPING) == "end"
    life.on_state(SessionState.IDLE)
    life.on_state(SessionState.EXITING)
    assert life.done and life.exit_reason == "the OpenXR runtime ended the session"


def test_lifecycle_loss_pending_ends_without_end_session():
    life = Lifecycle()
    life.on_state(SessionState.READY)
    life.on_state(SessionState.LOSS_PENDING)
    assert life.done and life.lost and "lost" in life.exit_reason
    assert life.on_state(SessionState.READY) is None  # no new begin once done


def test_lifecycle_exit_before_the_session_ran_needs_no_runtime_call():
    life = Lifecycle()
    life.on_state(SessionState.IDLE)
    assert life.request_exit() is False
    assert life.done


def test_lifecycle_instance_loss():
    life = Lifecycle()
    life.on_state(SessionState.READY)
    life.on_instance_loss()
    assert life.done and life.lost and not life.running


# -- placement -------------------------------------------------------------------------------
def _head(position, yaw_rad=0.0, pitch_rad=0.0):
    cy, sy, cp, sp = math.cos(yaw_rad), math.sin(yaw_rad), math.cos(pitch_rad), math.sin(pitch_rad)
    yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    m = np.eye(4)
    m[:3, :3] = yaw @ pitch
    m[:3, 3] = position
    return m


def test_one_avatar_stands_ahead_on_the_floor_facing_the_user():
    (place,) = placements_in_front(_head([0.0, 1.6, 0.0]), 1, distance_m=1.5, floor_y=0.0)
    np.testing.assert_allclose(place[:3, 3], [0.0, 0.0, -1.5], atol=1e-9)
    np.testing.assert_allclose(place[:3, 2], [0, 0, 1], atol=1e-9)     # faces the user
    np.testing.assert_allclose(place[:3, 1], [0, 1, 0], atol=1e-9)     # upright
    # The avatar's left hand (+X in its space) is on the user's right (+X here).
    np.testing.assert_allclose(place[:3, 0], [1, 0, 0], atol=1e-9)
    assert np.allclose(place[:3, :3] @ place[:3, :3].T, np.eye(3))      # rigid: life-size


def test_placement_follows_yaw_only_and_guesses_the_floor():
    head = _head([1.0, 1.2, 2.0], yaw_rad=math.pi / 2, pitch_rad=-0.5)  # turned left, looking down
    (place,) = placements_in_front(head, 1, distance_m=2.0)
    np.testing.assert_allclose(place[:3, 3], [-1.0, 1.2 - 1.6, 2.0], atol=1e-9)
    np.testing.assert_allclose(place[:3, 1], [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(place[:3, 2], [1, 0, 0], atol=1e-9)     # toward the user


def test_several_avatars_side_by_side_each_facing_the_user():
    places = placements_in_front(_head([0.0, 1.6, 0.0]), 3, distance_m=2.0, spacing_m=1.0,
                                 floor_y=0.0)
    xs = [p[0, 3] for p in places]
    np.testing.assert_allclose(xs, [-1.0, 0.0, 1.0], atol=1e-9)
    for p in places:
        to_user = -p[:3, 3] * np.array([1, 0, 1])
        np.testing.assert_allclose(p[:3, 2], to_user / np.linalg.norm(to_user), atol=1e-9)


def test_looking_straight_down_still_places_someone():
    (place,) = placements_in_front(_head([0, 1.6, 0], pitch_rad=-math.pi / 2), 1, floor_y=0.0)
    assert np.all(np.isfinite(place)) and abs(place[1, 3]) < 1e-9
    assert abs(np.linalg.norm(place[[0, 2], 3]) - 1.5) < 1e-9


def test_eye_camera_is_a_camera():
    camera = eye_camera(np.eye(4), FOVS[0], 320, 240)
    assert isinstance(camera, Camera)
    np.testing.assert_allclose(camera.position, [0, 0, 0], atol=1e-12)
