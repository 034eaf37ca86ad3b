"""Webcam video only for those who ask (net.video): the requests and gates, two real calls
on loopback (a clip as the camera: nothing sent until asked, pictures while asked, none
after), and the call window drawing a remote's picture beside its avatar (Xvfb)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from app.call_window import VIDEO_WIDTH, CallControls, CallMonitor, CallSnapshot, RemoteView
from avatar.codes import Codes
from net.video import VideoRequests
from tests.media import media_path
from tests.test_call_window import _in_fresh_process, _open_window, _pixels
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture


class _Frames:
    """A stand-in camera subscription: numbered frames, as fast as asked."""

    def __init__(self):
        self.count = 0

    async def recv(self):
        self.count += 1
        return self.count

    def stop(self) -> None:
        pass


def test_a_gate_passes_frames_only_while_its_remote_asks():
    sent = []
    requests = VideoRequests(lambda rid, text: sent.append((rid, json.loads(text))))
    gate = requests.gate("b", _Frames())

    async def take(n):
        return [await gate.recv() for _ in range(n)]

    assert requests.handle("b", '{"type": "video", "want": true}')
    first = asyncio.run(take(3))
    assert first == [1, 2, 3] and gate.sent == 3
    assert requests.handle("b", '{"type": "video", "want": false}')
    assert not gate.open
    gate.open = True  # (to see what was dropped meanwhile: nothing, nobody read)
    assert asyncio.run(take(1)) == [4]
    # Someone else's messages pass through; bad requests are dropped and counted.
    assert not requests.handle("b", '{"type": "hello"}')
    assert not requests.handle("b", b"binary")
    assert not requests.handle("b", '{"type": "videos", "want": true}')
    for junk in ('{"type": "video"', '{"type": "video", "want": 1}',
                 '{"type": "video", "want": true, "pad": "' + "x" * 80 + '"}'):
        assert requests.handle("b", junk)
    assert requests.refused == 3 and gate.open
    assert requests.sent("nobody") == 0


def test_what_we_want_is_told_once_per_change_and_again_to_a_new_connection():
    sent = []
    requests = VideoRequests(lambda rid, text: sent.append((rid, json.loads(text)["want"])))
    first, second = object(), object()
    requests.tick({"a": first})
    requests.tick({"a": first})
    assert sent == [("a", False)]
    requests.want = True
    requests.tick({"a": first, "b": second})
    requests.tick({"a": first, "b": second})
    assert sent[1:] == [("a", True), ("b", True)]
    requests.tick({"a": object(), "b": second})  # a reconnected
    assert sent[3:] == [("a", True)]


async def _two_calls(tmp_path):
    from aiortc.contrib.media import MediaPlayer

    from net.call import Call
    from tests.calls import loopback_room

    server, config = await loopback_room(tmp_path)
    camera = MediaPlayer(str(media_path("jwpIntro.mp4")), loop=True)
    pictures = []
    sender = Call(config("sender"), video_track=camera.video)
    viewer = Call(config("viewer"), on_video=lambda rid, frame: pictures.append(frame))
    seen = {}

    async def run(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sender.poses()
            viewer.poses()
            await asyncio.sleep(0.02)

    try:
        await viewer.join()
        await sender.join()
        deadline = time.monotonic() + 20
        while not (viewer.remotes and all(r.peer.control_open.is_set()
                                          for c in (sender, viewer) for r in c.remotes.values())):
            assert time.monotonic() < deadline, "the calls did not connect"
            await asyncio.sleep(0.02)
        await run(3.0)
        seen["not asked"] = (len(pictures), sender.video.sent(viewer.id))
        viewer.video.want = True
        deadline = time.monotonic() + 30
        while len(pictures) < 5 and time.monotonic() < deadline:
            await run(0.2)
        seen["asked"] = (len(pictures), sender.video.sent(viewer.id))
        seen["size"] = (pictures[-1].width, pictures[-1].height) if pictures else None
        viewer.video.want = False
        await run(2.0)  # what was on the way arrives
        stopped = sender.video.sent(viewer.id)
        await run(2.0)
        seen["stopped"] = (stopped, sender.video.sent(viewer.id))
    finally:
        await sender.leave()
        await viewer.leave()
        await server.stop()
        camera.video.stop()
    return seen


def test_video_is_sent_only_while_the_receiver_asks_for_it(tmp_path):
    seen = asyncio.run(asyncio.wait_for(_two_calls(tmp_path), 120))
    assert seen["not asked"] == (0, 0), seen
    received, sent = seen["asked"]
    assert received >= 5 and sent >= received, seen
    assert seen["size"] is not None and seen["size"][0] > 0
    stopped, later = seen["stopped"]
    assert later == stopped, seen


def test_a_camera_frame_becomes_a_thumbnail_shown_only_while_asked():
    import av

    controls = CallControls()
    monitor = CallMonitor(controls)
    frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 200, np.uint8), format="rgb24")
    monitor.video("r", frame)
    picture, _ = monitor.videos["r"]
    assert picture.shape == (VIDEO_WIDTH * 240 // 320, VIDEO_WIDTH, 3)
    assert abs(int(picture.mean()) - 200) <= 2

    class _Remote:  # what CallMonitor.tick reads of a remote
        name = "r"

        class stats:
            transit_s = []
            last_arrival = None
            unique = 0
            first_seq = None
            highest_seq = -1
            lost = 0

        class playout:
            delay_s = 0.0

    monitor.tick({"r": _Remote()}, {}, None, time.monotonic())
    assert monitor.latest.remotes[0].video is None  # not asked for
    controls.show_video = True
    monitor.tick({"r": _Remote()}, {}, None, time.monotonic())
    assert monitor.latest.remotes[0].video is picture


def _check_picture(x_display: str) -> None:
    import glfw

    window, mailbox = _open_window(x_display)  # 320 x 180
    picture = np.zeros((60, 80, 3), np.uint8)
    picture[..., 0] = picture[..., 2] = 255  # magenta
    view = RemoteView("r", "remote", Codes(), True, 50.0, 30.0, 60.0, 0.0, 0.0, picture)
    mailbox.latest = CallSnapshot([view], show_video=True)
    window._last_draw = time.perf_counter() - 1.0  # wholly faded in
    window.draw_frame()
    image = _pixels(window)
    magenta = (image[..., 0] > 220) & (image[..., 2] > 220) & (image[..., 1] < 40)
    rows, cols = np.nonzero(magenta)
    # (in this small window the overlay's text box covers part of it)
    assert magenta.sum() > 0.5 * 60 * 80, magenta.sum()
    assert rows.max() - rows.min() + 1 == 60 and cols.max() - cols.min() + 1 <= 80
    assert cols.min() > 160  # to the right of the avatar standing in the middle
    mailbox.latest = CallSnapshot([RemoteView("r", "remote", Codes(), True, 50.0, 30.0, 60.0,
                                              0.0, 0.0)])
    window.draw_frame()
    image = _pixels(window)
    assert not ((image[..., 0] > 220) & (image[..., 2] > 220) & (image[..., 1] < 40)).any()
    glfw.terminate()


def test_the_window_shows_a_remote_picture_beside_its_avatar(display):  # noqa: F811
    _in_fresh_process(_check_picture, display)
