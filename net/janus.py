"""Rooms beyond a mesh: the same call through Janus's VideoRoom plugin (an SFU).

In a mesh every participant uploads its codes and voice once per other participant; through
an SFU it uploads them once, and Janus forwards them. ``JanusCall`` offers the surface of
``net.call.Call`` (``join``, ``send_codes``, ``poses``, ``stats``, ``leave``):

- one *publisher* connection to Janus per participant: our Opus voice plus a data channel
  "codes" (unordered, no retransmissions), which VideoRoom relays to every subscriber;
- one *subscriber* connection per other participant's feed: their voice and their codes,
  so a packet's sender is known from the connection it arrives on;
- Janus's HTTP API (session, handles, long-poll for events) with aiohttp.

Avatar exchange is not carried over Janus (VideoRoom relays one data channel per feed);
participants in a Janus room show the default avatar, or avatars fetched beforehand.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from avatar.codes import Codes
from net import wire
from net.audio import use_voice_bitrate
from net.call import ReceiveStats
from net.loopback import use_host_addresses
from net.playout import PlayoutBuffer, PlayoutConfig

log = logging.getLogger("splatcall.janus")


class JanusError(ConnectionError):
    """Janus refused a request or cannot be reached."""


class JanusSession:
    """A Janus API session over HTTP: requests, and events by long-poll."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session_id: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self.handlers: dict[int, Callable[[dict], None]] = {}
        self._tasks: list[asyncio.Task] = []

    async def _post(self, path: str, body: dict) -> dict:
        assert self._http is not None
        body = dict(body, transaction=body.get("transaction") or secrets.token_hex(6))
        try:
            async with self._http.post(self.url + path, json=body) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise JanusError(f"cannot reach Janus at {self.url}: {exc}") from None
        if reply.get("janus") == "error":
            raise JanusError(f"Janus: {reply.get('error', {}).get('reason')}")
        return reply

    async def create(self) -> None:
        self._http = aiohttp.ClientSession()
        reply = await self._post("", {"janus": "create"})
        self.session_id = reply["data"]["id"]
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
        reply = await self._post(f"/{self.session_id}/{handle}", message)
        if not wait_event:
            return reply.get("plugindata", {}).get("data", {})
        try:
            event = await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"Janus VideoRoom: {data['error']}")
        return event

    async def _poll(self) -> None:
        assert self._http is not None
        while True:
            try:
                async with self._http.get(f"{self.url}/{self.session_id}?maxev=10",
                                          timeout=aiohttp.ClientTimeout(total=40)) as response:
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError) as exc:
                log.warning("Janus event poll failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                future = self._waiting.get(event.get("transaction", ""))
                if future is not None and event.get("janus") == "event" and not future.done():
                    future.set_result(event)
                    continue
                handler = self.handlers.get(event.get("sender"))
                if handler is not None:
                    handler(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(20)
            try:
                await self._post(f"/{self.session_id}", {"janus": "keepalive"})
            except JanusError as exc:
                log.warning("Janus keepalive failed: %s", exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._http is not None:
            if self.session_id is not None:
                try:
                    await self._post(f"/{self.session_id}", {"janus": "destroy"})
                except JanusError:
                    pass
            await self._http.close()
            self._http = None


@dataclass
class JanusRemote:
    id: str
    name: str
    pc: RTCPeerConnection
    playout: PlayoutBuffer
    decoder: wire.PacketDecoder = field(default_factory=wire.PacketDecoder)
    stats: ReceiveStats = field(default_factory=ReceiveStats)
    created_at: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    tasks: list = field(default_factory=list)

    @property
    def connect_time_s(self) -> float | None:
        return None if self.connected_at is None else self.connected_at - self.created_at


class JanusCall:
    """One participant of a Janus VideoRoom. ``room`` is a number; the room is created on
    first use with room for ``max_publishers``."""

    def __init__(self, url: str, room: int, name: str = "", audio_track=None,
                 host_addresses: list[str] | None = None, max_publishers: int = 32,
                 playout: PlayoutConfig | None = None,
                 on_audio: Callable[[str, Any], None] | None = None,
                 on_event: Callable[[str, str, str], None] | None = None):
        self.session = JanusSession(url)
        self.room = room
        self.name = name
        self.host_addresses = host_addresses
        self.max_publishers = max_publishers
        self.playout_config = playout or PlayoutConfig()
        self.on_audio = on_audio
        self.on_event = on_event
        self._audio_source = audio_track
        self.id = ""
        self.remotes: dict[str, JanusRemote] = {}
        self.departed: list[dict] = []
        self.publisher_pc: RTCPeerConnection | None = None
        self._codes_channel = None
        self._handle = 0
        self._handles: dict[str, int] = {}
        self.sent_packets = 0
        self.sent_bytes = 0
        self.published_at: float | None = None
        self._started = time.monotonic()

    def _event(self, kind: str, remote_id: str, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(kind, remote_id, detail)

    async def join(self) -> None:
        if self.host_addresses is not None:
            use_host_addresses(self.host_addresses)
        use_voice_bitrate()
        await self.session.create()
        self._handle = await self.session.attach("janus.plugin.videoroom", self._on_publisher_event)
        exists = await self.session.request(self._handle, {"request": "exists", "room": self.room})
        if not exists.get("exists"):
            try:
                await self.session.request(self._handle, {
                    "request": "create", "room": self.room, "publishers": self.max_publishers,
                    "audiocodec": "opus", "is_private": False})
            except JanusError:
                pass  # someone else created it meanwhile
        joined = await self.session.request(self._handle, {
            "request": "join", "ptype": "publisher", "room": self.room, "display": self.name},
            wait_event=True)
        data = joined["plugindata"]["data"]
        if data.get("videoroom") != "joined":
            raise JanusError(f"could not join VideoRoom {self.room}: {data}")
        self.id = str(data["id"])
        await self._publish()
        for publisher in data.get("publishers", []):
            await self._subscribe(publisher)

    async def _publish(self) -> None:
        pc = self.publisher_pc = RTCPeerConnection()
        self._codes_channel = pc.createDataChannel("codes", ordered=False, maxRetransmits=0)
        if self._audio_source is not None:
            from aiortc.contrib.media import MediaRelay

            pc.addTrack(MediaRelay().subscribe(self._audio_source))

        @self._codes_channel.on("open")
        def _open():
            self.published_at = time.monotonic()

        await pc.setLocalDescription(await pc.createOffer())
        event = await self.session.request(
            self._handle, {"request": "publish", "audio": self._audio_source is not None,
                           "data": True},
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
        remote = JanusRemote(feed, str(publisher.get("display", "")), pc,
                             PlayoutBuffer(self.playout_config))
        self.remotes[feed] = remote
        self._event("joined", feed, remote.name)

        def _listen(channel):
            @channel.on("message")
            def _message(message):
                arrival = time.monotonic()
                if isinstance(message, str):
                    return  # Janus relays binary codes as binary; text is not ours
                if remote.connected_at is None:
                    remote.connected_at = arrival
                    self._event("connected", feed, f"{remote.connect_time_s * 1000:.0f} ms")
                codes = remote.decoder.decode(message)
                if codes is not None:
                    remote.stats.add(codes, len(message), arrival)
                    remote.playout.push(codes, arrival)

        # Janus relays a feed's data only once the subscriber's own data channel is open
        # (janus.js opens one too): open one, and listen on whatever Janus opens to us.
        _listen(pc.createDataChannel("JanusDataChannel"))
        pc.on("datachannel", _listen)

        @pc.on("track")
        def _track(track):
            remote.tasks.append(asyncio.ensure_future(self._consume(feed, track)))

        handle = await self.session.attach("janus.plugin.videoroom", lambda e: None)
        self._handles[feed] = handle
        event = await self.session.request(handle, {
            "request": "join", "ptype": "subscriber", "room": self.room,
            "streams": [{"feed": int(feed)}]}, wait_event=True)
        offer = event.get("jsep")
        if not offer:
            raise JanusError(f"no offer for feed {feed}: {event}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.session.request(handle, {"request": "start"},
                                   jsep={"type": "answer", "sdp": pc.localDescription.sdp},
                                   wait_event=True)

    async def _consume(self, feed: str, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if self.on_audio is not None:
                    self.on_audio(feed, frame)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def _drop(self, feed: str, why: str) -> None:
        remote = self.remotes.pop(feed, None)
        if remote is None:
            return
        self.departed.append({"id": feed, "name": remote.name, "why": why,
                              "codes": remote.stats.summary()})
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

    def poses(self, now_s: float | None = None) -> dict[str, Codes]:
        now_s = time.monotonic() if now_s is None else now_s
        out = {}
        for feed, remote in self.remotes.items():
            pose = remote.playout.pose(now_s)
            if pose is not None:
                out[feed] = pose
        return out

    def stats(self) -> dict:
        return {"id": self.id, "name": self.name, "room": self.room,
                "sent_packets": self.sent_packets, "sent_bytes": self.sent_bytes,
                "remotes": {f: {"name": r.name, "connect_s": r.connect_time_s,
                                "codes": r.stats.summary(), "malformed": r.decoder.malformed,
                                "playout_delay_ms": r.playout.delay_s * 1000.0}
                            for f, r in self.remotes.items()},
                "departed": self.departed}

    async def leave(self) -> None:
        try:
            await self.session.request(self._handle, {"request": "leave"})
        except JanusError:
            pass
        for feed in list(self.remotes):
            await self._drop(feed, "we left")
        if self.publisher_pc is not None:
            await self.publisher_pc.close()
        await self.session.close()
