"""Voices from their avatars: where a voice comes from (pan and distance) for a listener, the
stereo mixer's gains, the headset stage's places, and the call window telling the call where
each remote stands (a real window process under Xvfb, through ``WindowLink``'s pipe)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.speakers import (HEAD_HEIGHT_M, MIN_DISTANCE_GAIN, REFERENCE_DISTANCE_M, VoiceMixer,
                          pan_gains, voice_place)
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples))))


def test_a_voice_to_the_right_pans_right_one_ahead_is_centred_and_distance_is_metres():
    listener = np.eye(4)  # at the origin looking down -Z, +X to the right
    pan, distance = voice_place(listener, (1.0, 0.0, -1.0))
    assert pan == pytest.approx(np.sin(np.pi / 4)) and distance == pytest.approx(np.sqrt(2))
    assert voice_place(listener, (-2.0, 0.0, 0.0)) == pytest.approx((-1.0, 2.0))
    assert voice_place(listener, (0.0, 0.5, -3.0))[0] == pytest.approx(0.0)
    # A listener turned 90 degrees to the left (looking down -X): -Z is now on its right.
    turned = np.eye(4)
    turned[:3, :3] = [[0, 0, -1], [0, 1, 0], [1, 0, 0]]  # listener_from_world
    assert voice_place(turned, (0.0, 0.0, -2.0))[0] == pytest.approx(1.0)


def test_pan_gains_keep_a_centred_voice_whole_and_fade_the_far_side_and_the_distance():
    assert pan_gains(0.0, REFERENCE_DISTANCE_M) == pytest.approx((1.0, 1.0))
    assert pan_gains(0.0, 0.3) == pytest.approx((1.0, 1.0))  # closer: never louder
    assert pan_gains(1.0, REFERENCE_DISTANCE_M) == pytest.approx((0.0, 1.0))
    assert pan_gains(-0.5, REFERENCE_DISTANCE_M) == pytest.approx((1.0, 0.5))
    assert pan_gains(0.0, 2 * REFERENCE_DISTANCE_M) == pytest.approx((0.5, 0.5))
    assert pan_gains(0.0, 1000.0) == pytest.approx((MIN_DISTANCE_GAIN,) * 2)


def test_the_stereo_mixer_plays_each_voice_from_its_place_and_unplaced_ones_as_in_mono():
    tone = (0.3 * np.sin(np.arange(960) * 0.05)).astype(np.float32)
    mono, stereo = VoiceMixer(), VoiceMixer(channels=2)
    for mixer in (mono, stereo):
        mixer.push("left", tone, 0.0, 0.0)
        mixer.push("right", 0.5 * tone, 0.0, 0.0)
    unplaced = stereo.mix(0.0, 960)
    assert unplaced.shape == (960, 2)
    np.testing.assert_allclose(unplaced[:, 0], mono.mix(0.0, 960), atol=1e-6)
    np.testing.assert_allclose(unplaced[:, 1], unplaced[:, 0])
    stereo.place({"left": (-1.0, REFERENCE_DISTANCE_M), "right": (1.0, REFERENCE_DISTANCE_M)})
    placed = stereo.mix(0.0, 960)
    np.testing.assert_allclose(placed[:, 0], tone, atol=1e-6)        # only the left voice
    np.testing.assert_allclose(placed[:, 1], 0.5 * tone, atol=1e-6)  # only the right one
    stereo.place({"left": (-1.0, 2 * REFERENCE_DISTANCE_M),          # farther: half as loud
                  "right": (1.0, REFERENCE_DISTANCE_M)})
    farther = stereo.mix(0.0, 960)
    assert _rms(farther[:, 0]) == pytest.approx(0.5 * _rms(tone), rel=1e-4)
    with pytest.raises(ValueError):
        VoiceMixer(channels=3)


def test_the_headset_stage_places_each_voice_at_its_avatars_head():
    from app.xr_view import XrStage
    from render.camera import Camera
    from render.xr import XrFrame

    class Still:  # the stage poses with its poser: a stand-in avatar it can pose
        skinned = None

        def skin_pose(self, codes, place):
            return place

    class Keep:
        where = "numpy"

        def pose(self, skinned, pose):
            return pose

        def combine(self, skinned, parts):
            return parts

    stage = XrStage(poser=Keep())
    assert stage.voice_places() == {}
    stage.add("a", Still())
    stage.add("b", Still())
    head = np.eye(4)
    head[:3, 3] = (0.0, 1.6, 0.0)  # standing at the origin, looking down -Z
    camera = Camera(np.linalg.inv(head), 64, 64, 50.0, 50.0, 32.0, 32.0)
    stage(XrFrame(0, 0, 0, [camera, camera], head, floor_y=0.0))
    places = stage.voice_places()
    expected = np.hypot(stage.distance_m, stage.spacing_m / 2)
    assert places["a"][0] == pytest.approx(-stage.spacing_m / 2 / expected)
    assert places["b"][0] == pytest.approx(stage.spacing_m / 2 / expected)
    assert places["a"][1] == pytest.approx(np.hypot(expected, HEAD_HEIGHT_M - 1.6))


def test_the_call_window_tells_the_call_where_each_remote_stands(display):  # noqa: F811
    import os

    from app.call_window import CallSnapshot, RemoteView, WindowLink, WindowOptions
    from avatar.codes import Codes

    os.environ["DISPLAY"] = display
    link = WindowLink(WindowOptions("test", 320, 180, 30.0))
    try:
        assert link.wait_ready(120) is None
        views = [RemoteView(name, name, Codes(seq=1), True, 50.0, 30.0, 30.0, 0.0, 0.0)
                 for name in ("first", "second")]
        deadline = time.monotonic() + 60
        while len(link.voice_places) < 2 and time.monotonic() < deadline:
            link.show(CallSnapshot(views))
            link.poll()
            time.sleep(0.05)
    finally:
        link.stop()
    places = link.voice_places
    # Seated in join order, left to right, the row centred in front of the view.
    assert places["first"][0] == pytest.approx(-places["second"][0], abs=0.02)
    assert places["first"][0] < -0.1
    assert 1.0 < places["first"][1] < 5.0
    mixer = VoiceMixer(channels=2)
    tone = np.full(480, 0.2, np.float32)
    mixer.push("first", tone, 0.0, 0.0)
    mixer.place(places)
    left, right = mixer.mix(0.0, 480).T
    assert _rms(left) > 1.2 * _rms(right)
