"""Rooms beyond a mesh: the same call through Janus's VideoRoom plugin (an SFU).

In a mesh every participant uploads its codes and voice once per other participant; through
an SFU it uploads them once, and Janus forwards them. ``JanusCall`` is a
``net.inbound.CallBase`` (the surface of ``net.call.Call``, the same ``CallConfig``, one
``InboundStream`` per remote):

- one *publisher* connection to Janus per participant: our Opus voice, a data channel
  "codes" (unordered, no retransmissions) and a reliable one, "control"; VideoRoom relays
  the messages of both to every subscriber on one channel (labelled with the feed's id), so
  a receiver tells them apart by their form: codes are wire packets (binary, ``SW``...),
  control messages text or binary starting with a 0x02 byte;
- one *subscriber* connection per other participant's feed: their voice, codes and control
  messages, so a message's sender is known from the connection it arrives on;
- Janus's WebSocket API (``ws://host:8188``) or its HTTP API (``http://host:8088/janus``,
  events by long-poll), with aiohttp. Over the WebSocket a participant that crashes is seen
  leaving at once (its socket closes, Janus destroys its session and the room hears
  "unpublished"/"leaving": measured 5-26 ms from SIGKILL); over HTTP only when Janus's
  ``session_timeout`` passes (60 s by default: 61.9 s measured), so ws:// is the one to use.
  When Janus itself goes away (the socket closes; over HTTP, the poll's session is unknown)
  the call says ``janus-lost``, drops its remotes and joins the room again every
  ``config.resignal_interval_s`` until Janus is back (``janus-back``).

Avatars travel as in the mesh (``net.avatar_exchange``: hello, avatar-get, chunks, end; the
same limits and validation), but a publisher's channel reaches everyone, so each control
message is addressed: text messages carry ``"to": feed`` (or a list of feeds) and binary ones
are a 0x02 byte, a count n (1 byte), n feeds (8 bytes each, big-endian), then the exchange's
message; a receiver passes on only what is addressed to it. Our avatar goes out as one
stream to everyone who asked for it meanwhile (``AvatarExchange(send_group=...)``); who asks
while it runs gets the next one. A subscriber cannot talk back to a publisher through
VideoRoom, so an ``avatar-get`` goes out on the asker's own publisher channel, and a hello is
repeated until its receiver acknowledges it (``hello-ack``, sent after any ``avatar-get`` on
the same ordered channel; a repeated hello sends the get again), since we cannot know when
the other side's subscription to us is up. Every subscriber of an avatar's owner sees each
stream go by (dropped unread when not addressed to it); avatars are cached by hash.

Clocks (``net.clock``, as in the mesh): a ping goes addressed (``"to": feed``) on our codes
channel to each remote that acknowledged our hello, the answer comes back on theirs; the
best of the recent samples gives ``clock.offset_s(feed)``.

Webcam video (``net.video``, ``video_track``): our camera is published as one more stream,
behind one ``VideoGate`` that is open while any remote asks for it (the same
``{"type": "video", "want": ...}`` message as the mesh, addressed), so nothing is encoded or
uploaded while nobody asks. Janus would relay a published stream to every subscriber, so each
receiver also tells Janus, with a ``configure`` of its own subscription (``send`` per video
stream: no renegotiation), to relay a publisher's video only while it asks (``video.want``);
it says so before its subscription's connection is up. A receiver that never asks gets no
frame even while another does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from avatar.codes import Codes
from common import safejson
from net import wire
from net.audio import use_voice_bitrate
from net.avatar_exchange import MAX_CONTROL_TEXT_BYTES
from net.clock import ClockSync
from net.config import CallConfig
from net.inbound import CallBase, InboundStream, RemoteParticipant
from net.loopback import use_host_addresses
from net.video import VideoGate, VideoRequests

log = logging.getLogger("splatcall.janus")


class JanusError(ConnectionError):
    """Janus refused a request or cannot be reached."""


class JanusSession:
    """A Janus API session: requests, and events pushed back to us.

    Two of Janus's transports: a ``ws://`` URL speaks its WebSocket API (subprotocol
    ``janus-protocol``; replies and events on the one socket), an ``http://`` URL its REST
    API (events by long-poll). They differ in what a crash costs the others: a WebSocket
    session belongs to its socket, so when our process dies the kernel closes the socket,
    Janus destroys the session at once and the room hears that we left; an HTTP session
    lives on until ``session_timeout`` (60 s by default) passes without a request."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.websocket = self.url.startswith(("ws://", "wss://"))
        self.session_id: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._replies: dict[str, asyncio.Future] = {}   # WebSocket: transaction -> reply
        self._waiting: dict[str, asyncio.Future] = {}
        self.handlers: dict[int, Callable[[dict], None]] = {}
        self._tasks: list[asyncio.Task] = []
        self.on_lost: Callable[[str], None] | None = None  # the transport went away
        self._closing = False

    async def _post(self, path: str, body: dict) -> dict:
        """One request (``path``: "", "/session" or "/session/handle") and Janus's reply."""
        assert self._http is not None
        body = dict(body, transaction=body.get("transaction") or secrets.token_hex(6))
        if self.websocket:
            reply = await self._ws_request(path, body)
        else:
            try:
                async with self._http.post(self.url + path, json=body) as response:
                    reply = await response.json(content_type=None)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise JanusError(f"cannot reach Janus at {self.url}: {exc}") from None
        if not isinstance(reply, dict):
            raise JanusError(f"Janus answered {reply!r}")
        if reply.get("janus") == "error":
            raise JanusError(f"Janus: {reply.get('error', {}).get('reason')}")
        return reply

    async def _ws_request(self, path: str, body: dict, timeout_s: float = 10.0) -> dict:
        ids = [int(part) for part in path.split("/") if part]
        if ids:
            body["session_id"] = ids[0]
        if len(ids) > 1:
            body["handle_id"] = ids[1]
        future = asyncio.get_running_loop().create_future()
        self._replies[body["transaction"]] = future
        try:
            if self._ws is None or self._ws.closed:
                raise JanusError(f"the WebSocket to Janus at {self.url} is closed")
            await self._ws.send_str(json.dumps(body))
            return await asyncio.wait_for(future, timeout_s)
        except (aiohttp.ClientError, OSError, ConnectionError) as exc:
            raise JanusError(f"cannot reach Janus at {self.url}: {exc}") from None
        except asyncio.TimeoutError:
            raise JanusError(f"Janus at {self.url} did not answer within "
                             f"{timeout_s:g} s") from None
        finally:
            self._replies.pop(body["transaction"], None)

    async def create(self) -> None:
        self._http = aiohttp.ClientSession()
        if self.websocket:
            try:
                self._ws = await self._http.ws_connect(
                    self.url, protocols=("janus-protocol",), heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
            except (aiohttp.ClientError, OSError) as exc:
                raise JanusError(f"cannot reach Janus at {self.url}: {exc}") from None
            self._tasks.append(asyncio.ensure_future(self._read_ws()))
        reply = await self._post("", {"janus": "create"})
        self.session_id = reply["data"]["id"]
        if not self.websocket:
            self._tasks.append(asyncio.ensure_future(self._poll()))
        self._tasks.append(asyncio.ensure_future(self._keepalive()))

    async def attach(self, plugin: str, on_event: Callable[[dict], None]) -> int:
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": plugin})
        handle = reply["data"]["id"]
        self.handlers[handle] = on_event
        return handle

    async def request(self, handle: int, body: dict, jsep: dict | None = None,
                      wait_event: bool = False, timeout_s: float = 10.0) -> dict:
        """Send a plugin message. Synchronous requests return their plugindata; with
        ``wait_event`` the asynchronous event answering it (with any jsep) is returned."""
        transaction = secrets.token_hex(6)
        future = asyncio.get_running_loop().create_future()
        if wait_event:
            self._waiting[transaction] = future
        message = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self._post(f"/{self.session_id}/{handle}", message)
            if not wait_event:
                return reply.get("plugindata", {}).get("data", {})
            event = await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"Janus VideoRoom: {data['error']}")
        return event

    def _dispatch(self, event) -> None:
        """One message from Janus that is not a reply: an event answering a request we wait
        on, or one for a handle's handler."""
        if not isinstance(event, dict):
            return
        future = self._waiting.get(event.get("transaction", ""))
        if future is not None and event.get("janus") == "event" and not future.done():
            future.set_result(event)
            return
        handler = self.handlers.get(event.get("sender"))
        if handler is not None:
            handler(event)

    async def _read_ws(self) -> None:
        """Everything Janus says on the WebSocket: replies to our requests (success, error,
        ack, by transaction), and events."""
        assert self._ws is not None
        why = "closed by Janus"
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = safejson.loads(message.data, 1 << 20)
                except ValueError:
                    log.warning("Janus sent a message we cannot read")
                    continue
                if not isinstance(data, dict):
                    continue
                reply = self._replies.get(data.get("transaction", ""))
                if reply is not None and data.get("janus") in ("success", "error", "ack") \
                        and not reply.done():
                    reply.set_result(data)
                    continue
                self._dispatch(data)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            why = str(exc)
        for future in list(self._replies.values()) + list(self._waiting.values()):
            if not future.done():
                future.set_exception(JanusError(f"lost Janus at {self.url}: {why}"))
        if self.on_lost is not None and not self._closing:
            self.on_lost(why)

    async def _poll(self) -> None:
        assert self._http is not None
        failing = False
        while True:
            try:
                async with self._http.get(f"{self.url}/{self.session_id}?maxev=10",
                                          timeout=aiohttp.ClientTimeout(total=40)) as response:
                    status = response.status
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError) as exc:
                (log.debug if failing else log.warning)("Janus event poll failed: %s", exc)
                failing = True  # (one warning per outage)
                await asyncio.sleep(0.5)
                continue
            failing = False
            if status == 404 or (isinstance(events, dict) and events.get("janus") == "error"):
                # Janus no longer knows our session (it restarted, or timed it out): 404.
                if self.on_lost is not None and not self._closing:
                    self.on_lost(f"Janus no longer knows our session (HTTP {status})")
                return
            if status != 200:
                log.warning("Janus event poll answered HTTP %s", status)
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(20)
            try:
                await self._post(f"/{self.session_id}", {"janus": "keepalive"})
            except JanusError as exc:
                log.warning("Janus keepalive failed: %s", exc)

    async def close(self) -> None:
        self._closing = True
        reader = self._tasks[0] if self.websocket and self._tasks else None
        for task in self._tasks:
            if task is not reader:  # the reader brings the reply to our destroy
                task.cancel()
        if self._http is not None:
            if self.session_id is not None:
                try:
                    await self._post(f"/{self.session_id}", {"janus": "destroy"})
                except JanusError:
                    pass
            if self._ws is not None:
                await self._ws.close()
                self._ws = None
            await self._http.close()
            self._http = None
        if reader is not None:
            reader.cancel()


_ADDRESSED = b"\x02"
HELLO_REPEAT_S = 0.5
VIDEO_RETRY_S = 1.0   # a configure Janus refused is tried again after this long
CONTROL_BACKLOG_BYTES = 1 << 20


@dataclass
class JanusRemote(RemoteParticipant):
    pc: RTCPeerConnection | None = None
    created_at: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    hello_acked: bool = False
    tasks: list = field(default_factory=list)
    handle: int = 0                  # our subscriber handle at Janus
    video_mids: list = field(default_factory=list)  # its video streams in our subscription
    video_relayed: bool = True       # Janus relays them to us (its default, until we say)
    video_configured_at: float = -1e9   # when we last told Janus (a refusal is retried)
    video_frames: int = 0            # its camera's frames that reached us

    @property
    def connect_time_s(self) -> float | None:
        return None if self.connected_at is None else self.connected_at - self.created_at


class JanusCall(CallBase):
    """One participant of a Janus VideoRoom: ``config.url`` is Janus's HTTP API and
    ``config.room`` a number; the room is created on first use with room for
    ``config.max_publishers``."""

    def __init__(self, config: CallConfig, audio_track=None, video_track=None,
                 on_event: Callable[[str, str, str], None] | None = None,
                 on_audio: Callable[[str, Any], None] | None = None,
                 on_video: Callable[[str, Any], None] | None = None,
                 on_avatar: Callable[[str, Any], None] | None = None):
        super().__init__(config, on_event=on_event, on_audio=on_audio, on_avatar=on_avatar)
        self.on_video = on_video
        self.session = JanusSession(config.url)
        self.session.on_lost = self._janus_lost
        self.room = int(config.room)
        self.name = config.name
        self._audio_source = audio_track
        self._id = ""
        self.remotes: dict[str, JanusRemote] = {}
        self.publisher_pc: RTCPeerConnection | None = None
        self._codes_channel = None
        self._control_channel = None
        self._handle = 0
        self._handles: dict[str, int] = {}
        self.published_at: float | None = None
        self._hello_task: asyncio.Task | None = None
        self._video_source = video_track
        self._video_gate: VideoGate | None = None   # our camera: open while anyone asks
        # Each remote's clock offset (net.clock): pinged on our codes channel, addressed.
        self.clock = ClockSync(self._send_clock)
        self.video = VideoRequests(self._send_control)  # `want`: the window's V key
        self._video_configuring: set[str] = set()
        self._closing = False
        self._rejoin_task: asyncio.Task | None = None
        self.janus_rejoins = 0

    @property
    def id(self) -> str:
        return self._id

    async def join(self) -> None:
        """Join (and publish); raises ``JanusError`` if Janus refuses or cannot be reached."""
        try:
            await self._join()
        except BaseException:
            await self.session.close()  # no HTTP session left open behind a refusal
            raise

    async def _join(self) -> None:
        if self.config.host_addresses is not None:
            use_host_addresses(self.config.host_addresses)
        use_voice_bitrate(self.config.voice_bitrate)
        await self.session.create()
        self._handle = await self.session.attach("janus.plugin.videoroom", self._on_publisher_event)
        exists = await self.session.request(self._handle, {"request": "exists", "room": self.room})
        if not exists.get("exists"):
            try:
                await self.session.request(self._handle, {
                    "request": "create", "room": self.room,
                    "publishers": self.config.max_publishers,
                    "audiocodec": "opus", "is_private": False})
            except JanusError:
                pass  # someone else created it meanwhile
        joined = await self.session.request(self._handle, {
            "request": "join", "ptype": "publisher", "room": self.room, "display": self.name},
            wait_event=True)
        data = joined["plugindata"]["data"]
        if data.get("videoroom") != "joined":
            raise JanusError(f"could not join VideoRoom {self.room}: {data}")
        self._id = str(data["id"])
        self.joined_at = time.monotonic()
        await self._publish()
        self._hello_task = asyncio.ensure_future(self._hello_loop())
        for publisher in data.get("publishers", []):
            await self._subscribe(publisher)

    async def _publish(self) -> None:
        pc = self.publisher_pc = RTCPeerConnection()
        self._codes_channel = pc.createDataChannel("codes", ordered=False, maxRetransmits=0)
        self._control_channel = pc.createDataChannel("control")
        if self._audio_source is not None or self._video_source is not None:
            from aiortc.contrib.media import MediaRelay

            relay = MediaRelay()
            if self._audio_source is not None:
                pc.addTrack(relay.subscribe(self._audio_source))
            if self._video_source is not None:
                self._video_gate = VideoGate(relay.subscribe(self._video_source))
                pc.addTrack(self._video_gate)

        @self._codes_channel.on("open")
        def _open():
            self.published_at = time.monotonic()

        await pc.setLocalDescription(await pc.createOffer())
        event = await self.session.request(
            self._handle, {"request": "publish", "audio": self._audio_source is not None,
                           "video": self._video_source is not None, "data": True},
            jsep={"type": "offer", "sdp": pc.localDescription.sdp}, wait_event=True)
        answer = event.get("jsep")
        if not answer:
            raise JanusError(f"Janus did not answer our publish: {event}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    def _on_publisher_event(self, event: dict) -> None:
        data = event.get("plugindata", {}).get("data", {})
        for publisher in data.get("publishers", []) or []:
            asyncio.ensure_future(self._subscribe(publisher))
        gone = data.get("unpublished") or data.get("leaving")
        if gone and gone != "ok":
            asyncio.ensure_future(self._drop(str(gone), "left the room"))

    async def _subscribe(self, publisher: dict) -> None:
        feed = str(publisher["id"])
        if feed in self.remotes or feed == self.id:
            return
        pc = RTCPeerConnection()
        remote = JanusRemote(feed, str(publisher.get("display", "")),
                             InboundStream(self.config.playout), pc=pc)
        self.remotes[feed] = remote
        self._event("joined", feed, remote.name)

        def _listen(channel):
            @channel.on("message")
            def _message(message):
                arrival = time.monotonic()
                # Janus relays all of a feed's channels on one, labelled with the feed's id:
                # text and addressed binary are control messages, other binary is codes.
                if isinstance(message, str) or message[:1] == _ADDRESSED:
                    self._on_control(feed, message, arrival)
                    return
                if remote.connected_at is None:
                    remote.connected_at = arrival
                    self._event("connected", feed, f"{remote.connect_time_s * 1000:.0f} ms")
                self._receive_codes(feed, message, arrival)

        # Janus relays a feed's data only once the subscriber's own data channel is open
        # (janus.js opens one too): open one, and listen on whatever Janus opens to us.
        _listen(pc.createDataChannel("JanusDataChannel"))
        pc.on("datachannel", _listen)

        @pc.on("track")
        def _track(track):
            remote.tasks.append(asyncio.ensure_future(self._consume(remote, track)))

        handle = remote.handle = await self.session.attach("janus.plugin.videoroom",
                                                           lambda e: None)
        self._handles[feed] = handle
        event = await self.session.request(handle, {
            "request": "join", "ptype": "subscriber", "room": self.room,
            "streams": [{"feed": int(feed)}]}, wait_event=True)
        offer = event.get("jsep")
        if not offer:
            raise JanusError(f"no offer for feed {feed}: {event}")
        streams = event.get("plugindata", {}).get("data", {}).get("streams") or []
        remote.video_mids = [str(s["mid"]) for s in streams
                             if isinstance(s, dict) and s.get("type") == "video" and "mid" in s]
        if remote.video_mids:
            # Its camera reaches us only while we ask: off before the connection is up.
            await self._relay_video(remote, self.video.want)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.session.request(handle, {"request": "start"},
                                   jsep={"type": "answer", "sdp": pc.localDescription.sdp},
                                   wait_event=True)

    async def _consume(self, remote: JanusRemote, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    remote.video_frames += 1
                    if self.on_video is not None:
                        self.on_video(remote.id, frame)
                elif self.on_audio is not None:
                    self.on_audio(remote.id, frame)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def _relay_video(self, remote: JanusRemote, on: bool) -> None:
        """Ask Janus to relay ``remote``'s camera to us, or to stop (the subscriber's
        ``configure`` with ``send`` per stream: no renegotiation)."""
        self._video_configuring.add(remote.id)
        remote.video_configured_at = time.monotonic()
        try:
            await self.session.request(remote.handle, {
                "request": "configure",
                "streams": [{"mid": mid, "send": on} for mid in remote.video_mids]},
                wait_event=True)
            remote.video_relayed = on
        except (JanusError, asyncio.TimeoutError) as exc:
            log.warning("Janus would not %s %s's video: %s", "relay" if on else "stop",
                        remote.id, exc)
        finally:
            self._video_configuring.discard(remote.id)

    def _janus_lost(self, why: str) -> None:
        if self._closing or (self._rejoin_task is not None and not self._rejoin_task.done()):
            return
        log.warning("lost Janus (%s): rejoining when it is back", why)
        self._event("janus-lost", "", why)
        self._rejoin_task = asyncio.ensure_future(self._rejoin())

    async def _rejoin(self) -> None:
        """Janus went away (restarted, or its host did): our session, our publication and
        every subscription went with it. Drop the remotes, then join the room afresh every
        ``config.resignal_interval_s`` until Janus is back (a new feed id; the others
        subscribe to us again as a new participant, and we to them)."""
        try:
            if self._hello_task is not None:
                self._hello_task.cancel()
            for feed in list(self.remotes):
                await self._drop(feed, "Janus went away")
            if self.publisher_pc is not None:
                await self.publisher_pc.close()
                self.publisher_pc = None
            self._codes_channel = self._control_channel = None
            await self.session.close()
            while not self._closing:
                await asyncio.sleep(self.config.resignal_interval_s)
                self.session = JanusSession(self.config.url)
                self.session.on_lost = self._janus_lost
                try:
                    await self._join()
                except (JanusError, asyncio.TimeoutError, KeyError) as exc:
                    log.info("Janus still away: %s", exc)
                    await self.session.close()
                    continue
                self.janus_rejoins += 1
                self._event("janus-back", "", f"joined as {self.id}")
                return
        except asyncio.CancelledError:
            pass

    async def _drop(self, feed: str, why: str) -> None:
        remote = self.remotes.pop(feed, None)
        if remote is None:
            return
        self.video.wants.pop(feed, None)
        self._departure(remote, why)
        for task in remote.tasks:
            task.cancel()
        await remote.pc.close()
        self._event("left", feed, why)

    def send_codes(self, codes: Codes) -> int:
        channel = self._codes_channel
        self.sent_packets += 1
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > 16384:
            return 0
        packet = wire.encode(codes)
        channel.send(packet)
        self.sent_bytes += len(packet)
        return 1

    def _send_clock(self, remote_id: str, text: str) -> None:
        """A clock ping or reply, addressed, on our codes channel (unordered, never resent
        toward Janus; Janus's channel on to the subscriber is reliable and ordered: a
        sample that waited there has a long round trip and is passed over)."""
        channel = self._codes_channel
        if channel is not None and channel.readyState == "open" and remote_id.isdigit():
            channel.send(json.dumps(dict(json.loads(text), to=remote_id)))

    def poses(self, now_s: float | None = None) -> dict[str, Codes]:
        now_s = time.monotonic() if now_s is None else now_s
        # Only remotes that acknowledged our hello hear what we publish.
        heard = {rid: r for rid, r in self.remotes.items() if r.hello_acked}
        self.clock.tick(heard, now_s)
        self.video.tick(heard)
        for remote in list(self.remotes.values()):
            if remote.video_mids and remote.video_relayed != self.video.want \
                    and remote.id not in self._video_configuring \
                    and now_s - remote.video_configured_at > VIDEO_RETRY_S:
                remote.tasks.append(asyncio.ensure_future(
                    self._relay_video(remote, self.video.want)))
        if self._video_gate is not None:
            self._video_gate.open = any(self.video.wants.get(rid) for rid in self.remotes)
        return super().poses(now_s)

    # -- control messages, addressed over the publisher's channel --------------------------
    async def _hello_loop(self) -> None:
        """Say hello to each remote until it acknowledges (its subscription to us is up)."""
        try:
            while True:
                channel = self._control_channel
                if channel is not None and channel.readyState == "open":
                    for feed, remote in list(self.remotes.items()):
                        if not remote.hello_acked:
                            self.avatars.hello(feed, self.name)
                await asyncio.sleep(HELLO_REPEAT_S)
        except asyncio.CancelledError:
            pass

    def _exchange_options(self) -> dict:
        return {"send_group": self._send_group}  # one avatar stream for all who asked

    def _send_control(self, remote_id: str, message: str | bytes) -> None:
        self._send_group([remote_id], message)

    def _send_group(self, remote_ids: list[str], message: str | bytes) -> None:
        """``message`` on our publisher's control channel, addressed to ``remote_ids``."""
        channel = self._control_channel
        ids = [r for r in remote_ids if r.isdigit()][:255]
        if channel is None or channel.readyState != "open" or not ids:
            return
        if isinstance(message, bytes):
            channel.send(_ADDRESSED + bytes([len(ids)])
                         + b"".join(int(r).to_bytes(8, "big") for r in ids) + message)
        else:
            channel.send(json.dumps(dict(json.loads(message),
                                         to=ids[0] if len(ids) == 1 else ids)))

    def _control_backlog(self, remote_id: str) -> int:
        channel = self._control_channel
        return channel.bufferedAmount if channel is not None else 0

    def _on_control(self, feed: str, message, arrival_s: float | None = None) -> None:
        """A message on ``feed``'s channel other than codes: passed on if it is addressed to
        us (to the clock, the video requests or the avatar exchange)."""
        remote = self.remotes.get(feed)
        if remote is None or not self.id:
            return
        if isinstance(message, bytes):
            count = message[1] if len(message) > 1 else 0
            start = 2 + 8 * count
            me = int(self.id).to_bytes(8, "big")
            if len(message) > start and any(message[i:i + 8] == me
                                             for i in range(2, start, 8)):
                self._on_control_message(feed, message[start:])
            return
        try:
            data = safejson.loads(message, MAX_CONTROL_TEXT_BYTES)
        except ValueError:
            return
        to = data.get("to") if isinstance(data, dict) else None
        if not (to == self.id or (isinstance(to, list) and self.id in to)):
            return
        kind = data.get("type")
        if kind == "hello-ack":
            remote.hello_acked = True
            return
        if kind in ("clock", "clock-reply"):
            self.clock.handle(feed, message, arrival_s)
            return
        if self.video.handle(feed, message):
            return  # a request for our camera's pictures (net.video)
        if kind != "hello":
            self._on_control_message(feed, message)
            return
        said = self.avatars.remotes.get(feed)
        waiting = (said is not None and said.status == "fetching" and said._handle is not None
                   and said.received == 0)
        self._on_control_message(feed, message)
        if waiting:  # a repeated hello: our avatar-get may have gone before they heard us
            self._send_control(feed, json.dumps({"type": "avatar-get", "sha256": said.sha256}))
        # After the get, on the same ordered channel: the ack arriving means the get did.
        self._send_control(feed, json.dumps({"type": "hello-ack"}))

    def stats(self) -> dict:
        data = super().stats()
        data["room"] = self.room
        data["video_frames_published"] = (self._video_gate.sent
                                          if self._video_gate is not None else 0)
        data["janus_rejoins"] = self.janus_rejoins
        return data

    def remote_stats(self, remote_id: str, remote) -> dict:
        return {**super().remote_stats(remote_id, remote),
                "clock": self.clock.summary(remote_id),
                "video_relayed": bool(remote.video_mids) and remote.video_relayed,
                "video_frames_received": remote.video_frames}

    async def leave(self) -> None:
        self._closing = True
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
        if self._hello_task is not None:
            self._hello_task.cancel()
        await self.avatars.close()
        try:
            await self.session.request(self._handle, {"request": "leave"})
        except JanusError:
            pass
        for feed in list(self.remotes):
            await self._drop(feed, "we left")
        if self.publisher_pc is not None:
            await self.publisher_pc.close()
        await self.session.close()
