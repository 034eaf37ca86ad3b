"""Integration: a Janus room as a call goes on, with Debian's Janus in a network namespace
(tests/janus_server.py). A participant that crashes is seen leaving at once (Janus's
WebSocket transport: its session dies with its socket); clocks are compared NTP-style
through Janus's data channels; a participant's webcam reaches only those who ask for it;
when Janus itself crashes and comes back, the participants rejoin and hear each other."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from avatar.codes import Codes
from tests.janus_server import JanusServer, serve_janus

pytestmark = pytest.mark.integration

LEFT_WITHIN_S = 3.0   # SIGKILL to "left" at the others (measured: under 0.1 s)


@pytest.fixture(scope="module")
def janus():
    yield from serve_janus(subnet=None)


def test_a_participant_killed_in_a_janus_room_is_seen_leaving_within_seconds_and_the_rest_go_on(
        janus, tmp_path):
    """Three participants (a `main.py call --janus ws://...` process and two in this test)
    meet through Janus; the process is SIGKILLed: both others see it leave (Janus destroys
    its session when its WebSocket closes) within LEFT_WITHIN_S, keep exchanging codes, and
    hold only each other."""
    from tests.janus_rooms import crash_in_room

    result = asyncio.run(asyncio.wait_for(
        crash_in_room(janus.ws_url, 6100, janus.client_address, tmp_path,
                      wait_left_s=LEFT_WITHIN_S + 5), 120))
    assert all(0 <= t < LEFT_WITHIN_S for t in result["left_s"]), result
    assert result["left_detail"] == ["left the room"] * 2, result
    assert result["remotes_after"] == [["ben"], ["ann"]], result
    assert all(n >= 40 for n in result["codes_after"]), result  # 2 s at 30 Hz, both ways


async def _calls(janus: JanusServer, room: int, names, tracks=None, **kwargs):
    from net.config import CallConfig
    from net.janus import JanusCall

    calls = []
    for name in names:
        call = JanusCall(CallConfig(url=janus.ws_url, room=str(room), name=name,
                                    host_addresses=[janus.client_address]),
                         video_track=(tracks or {}).get(name), **kwargs.get(name, {}))
        await call.join()
        calls.append(call)
    return calls


_SEQ = itertools.count(1)


async def _run(calls, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seq = next(_SEQ)
        for call in calls:
            call.send_codes(Codes(t=time.monotonic(), seq=seq))
            call.poses()
        await asyncio.sleep(0.02)


async def _until(calls, predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + str(
            [c.stats() for c in calls])
        await _run(calls, 0.1)


async def _clock_room(janus: JanusServer):
    from net.clock import FIRST_PINGS

    calls = await _calls(janus, 6200, ("ann", "ben", "cat"))
    try:
        def synced():
            return all(len(c.remotes) == 2 and all(
                c.clock.summary(rid)["samples"] >= FIRST_PINGS for rid in c.remotes)
                for c in calls)

        await _until(calls, synced, 30, "clock samples from every remote")
        await _run(calls, 2.0)
        return {(c.name, r.name): c.clock.summary(rid)
                for c in calls for rid, r in c.remotes.items()}
    finally:
        for call in calls:
            await call.leave()


def test_clocks_are_compared_through_janus_as_in_a_mesh(janus):
    """Three participants through Janus: each estimates the others' clock offsets over the
    data channels (a ping addressed on its own codes channel, the reply on the other's):
    on one machine the offset is within half the round trip of 0, and the round trip is
    measured."""
    summaries = asyncio.run(asyncio.wait_for(_clock_room(janus), 90))
    assert len(summaries) == 6, summaries
    for pair, summary in summaries.items():
        assert summary["refused"] == 0, (pair, summary)
        assert 0 < summary["round_trip_ms"] < 200, (pair, summary)
        # One machine, one monotonic clock: the true offset is 0, and NTP's estimate is off
        # by at most half the round trip.
        assert abs(summary["offset_ms"]) <= summary["round_trip_ms"] / 2 + 0.5, (pair, summary)
        assert abs(summary["offset_ms"]) < 20, (pair, summary)


async def _video_room(janus: JanusServer):
    from aiortc.contrib.media import MediaPlayer

    from tests.media import media_path

    camera = MediaPlayer(str(media_path("jwpIntro.mp4")), loop=True)
    pictures: dict[str, list] = {"asker": [], "other": []}
    calls = await _calls(janus, 6300, ("sender", "asker", "other"), {"sender": camera.video},
                         asker={"on_video": lambda rid, f: pictures["asker"].append(f)},
                         other={"on_video": lambda rid, f: pictures["other"].append(f)})
    sender, asker, other = calls
    seen = {}
    try:
        await _until(calls, lambda: all(len(c.remotes) == 2 and all(
            r.hello_acked for r in c.remotes.values()) for c in calls), 30,
            "everyone to hear everyone")
        await _run(calls, 3.0)
        seen["not asked"] = (len(pictures["asker"]), len(pictures["other"]),
                             sender.stats()["video_frames_published"])
        asker.video.want = True
        await _until(calls, lambda: len(pictures["asker"]) >= 10, 30, "pictures at the asker")
        await _run(calls, 2.0)
        seen["asked"] = (len(pictures["asker"]), len(pictures["other"]),
                         sender.stats()["video_frames_published"])
        picture = pictures["asker"][-1]
        seen["size"] = (picture.width, picture.height)
        seen["from"] = {asker.remotes[rid].name for rid in asker.remotes
                        if asker.remotes[rid].video_frames}
        asker.video.want = False
        await _run(calls, 2.0)  # what was on the way arrives
        stopped = (len(pictures["asker"]), sender.stats()["video_frames_published"])
        await _run(calls, 2.0)
        seen["stopped"] = (stopped, (len(pictures["asker"]),
                                     sender.stats()["video_frames_published"]))
        seen["other at the end"] = len(pictures["other"])
        seen["relayed at the end"] = [r["video_relayed"] for c in (asker, other)
                                      for r in c.stats()["remotes"].values()]
    finally:
        for call in calls:
            await call.leave()
        camera.video.stop()
    return seen


def test_through_janus_a_webcam_reaches_only_the_participant_who_asks(janus):
    """A sender with a camera (a clip) and two receivers through Janus: nothing is published
    until someone asks; the one who asks gets pictures, the other none; once nobody asks,
    the sender stops publishing and the pictures stop."""
    seen = asyncio.run(asyncio.wait_for(_video_room(janus), 150))
    assert seen["not asked"] == (0, 0, 0), seen
    received, other, published = seen["asked"]
    assert received >= 10 and published >= received, seen
    assert other == 0 and seen["other at the end"] == 0, seen
    assert seen["from"] == {"sender"}, seen
    assert seen["size"][0] > 0 and seen["size"][1] > 0, seen
    (pictures_then, published_then), (pictures_later, published_later) = seen["stopped"]
    assert pictures_later == pictures_then and published_later == published_then, seen
    assert seen["relayed at the end"] == [False] * 4, seen


async def _janus_restarts(janus: JanusServer) -> dict:
    from net.config import CallConfig
    from net.janus import JanusCall

    events = []
    calls = []
    for name, url in (("ann", janus.ws_url), ("ben", janus.url)):
        call = JanusCall(CallConfig(url=url, room="6400", name=name,
                                    host_addresses=[janus.client_address],
                                    resignal_interval_s=0.5),
                         on_event=lambda kind, rid, detail, name=name: events.append(
                             (time.monotonic(), name, kind, detail)))
        await call.join()
        calls.append(call)
    ann, ben = calls

    def hearing_each_other():
        return all(any(r.stats.unique > 10 for r in c.remotes.values()) for c in calls)

    def first(name, kind):
        return next((t for t, n, k, _ in events if n == name and k == kind), None)

    try:
        await _until(calls, hearing_each_other, 30, "the two to hear each other")
        janus.crash()
        crashed = time.monotonic()
        await _until(calls, lambda: first("ann", "janus-lost"), 10, "ws to notice")
        await _run(calls, 1.0)
        janus.restart()
        restarted = time.monotonic()
        await _until(calls, lambda: first("ann", "janus-back") and first("ben", "janus-back")
                     and hearing_each_other(), 40, "both back and hearing each other")
        heard_again = time.monotonic()
        return {"lost_after_crash_s": {n: first(n, "janus-lost") - crashed
                                       for n in ("ann", "ben")},
                "back_after_restart_s": {n: first(n, "janus-back") - restarted
                                         for n in ("ann", "ben")},
                "hearing_again_s": heard_again - restarted,
                "left": sorted(n for _, n, k, d in events if k == "left"),
                "rejoins": [c.stats()["janus_rejoins"] for c in calls],
                "remotes": [sorted(r.name for r in c.remotes.values()) for c in calls]}
    finally:
        for call in calls:
            await call.leave()


def test_after_janus_restarts_the_participants_rejoin_and_hear_each_other_again(janus):
    """Janus SIGKILLed under two participants (one on its WebSocket API, one on HTTP) and
    started again: the WebSocket one says so at once, the HTTP one when Janus no longer
    knows its session; each drops the other ("left"), rejoins the room as Janus comes back
    (``janus-back``) and hears the other again."""
    from net.inbound import event_text

    other = JanusServer(subnet=100 + (janus.subnet - 100 + 50) % 100)
    try:
        other.start()
    except RuntimeError as exc:
        pytest.fail(f"Janus did not start: {exc}")
    try:
        result = asyncio.run(asyncio.wait_for(_janus_restarts(other), 120))
    finally:
        other.stop()
    assert result["lost_after_crash_s"]["ann"] < 2, result
    assert result["hearing_again_s"] < 30, result
    assert result["left"] == ["ann", "ben"], result
    assert result["rejoins"] == [1, 1], result
    assert result["remotes"] == [["ben"], ["ann"]], result
    assert event_text("janus-lost", "", "x").startswith("lost Janus (x): rejoining")


async def _camera_process(janus: JanusServer, folder) -> dict:
    import signal

    from net.config import CallConfig
    from net.janus import JanusCall
    from tests.janus_rooms import start_participant
    from tests.media import media_path

    pictures = []
    camera = start_participant(janus.ws_url, 6500, janus.client_address, "cam", folder,
                               "--video", str(media_path("jwpIntro.mp4")))
    call = JanusCall(CallConfig(url=janus.ws_url, room="6500", name="viewer",
                                host_addresses=[janus.client_address]),
                     on_video=lambda rid, frame: pictures.append(frame))
    try:
        await call.join()
        await _until([call], lambda: any(r.hello_acked and r.stats.unique
                                         for r in call.remotes.values()), 60, "the camera")
        await _run([call], 2.0)
        before = len(pictures)
        call.video.want = True
        await _until([call], lambda: len(pictures) >= 10, 30, "its pictures")
    finally:
        camera.send_signal(signal.SIGINT)
        code = camera.wait(timeout=30)
        await call.leave()
    return {"before": before, "after": len(pictures), "exit": code,
            "log": (folder / "cam.log").read_text()}


def test_main_py_call_through_janus_sends_its_camera_to_a_receiver_who_asks(janus, tmp_path):
    """`main.py call --janus ws://... --video CLIP`: nothing reaches a receiver until it
    asks, then its pictures do; the process ends cleanly (no thread left reading the clip
    after its event loop closed)."""
    result = asyncio.run(asyncio.wait_for(_camera_process(janus, tmp_path), 150))
    assert result["before"] == 0 and result["after"] >= 10, result
    assert result["exit"] == 0 and "Traceback" not in result["log"], result["log"][-2000:]
