"""A call: one participant's membership of a room, as a full mesh of peer connections.

``Call`` joins a room through the signalling server and keeps one ``Peer`` per other
participant: the newcomer offers to everyone already there, so offers never cross. It
sends our codes to every peer (encoded once), feeds each remote's packets through a
``PacketDecoder`` into that remote's ``PlayoutBuffer``, and hands out, per display frame,
one posed ``Codes`` per remote participant (``poses(now)``). Audio frames and validated
remote avatars reach the application through callbacks; rendering is not done here.

A participant that leaves, crashes or restarts: the signalling server reports it gone
(socket closed, or heartbeats missed) and its connection is closed; when it comes back it
joins as a new participant and offers afresh. A connection that fails while both stay in
the room is re-offered by the side with the smaller id.

Rooms up to ``MESH_LIMIT`` participants use this mesh; larger rooms need an SFU (see
``net.janus``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avatar.codes import Codes
from net import wire
from net.audio import VOICE_BITRATE, use_voice_bitrate
from net.clock import ClockSync
from net.video import VideoRequests
from net.avatar_exchange import (
    DEFAULT_MAX_AVATAR_BYTES,
    DEFAULT_MAX_CACHE_BYTES,
    AvatarExchange,
    default_validate,
)
from net.loopback import use_host_addresses
from net.peer import Peer
from net.playout import PlayoutBuffer, PlayoutConfig
from net.signal_client import SignallingClient, SignallingError

log = logging.getLogger("splatcall.call")

MESH_LIMIT = 6


@dataclass
class CallConfig:
    url: str                                   # ws://host:port/ws of the signalling server
    room: str
    token: str
    name: str = ""
    ice_servers: list[str] = field(default_factory=list)   # stun:/turn: URLs, none on a LAN
    host_addresses: list[str] | None = None    # e.g. ["127.0.0.1"]: see net.loopback
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    avatar_path: str | Path | None = None      # our own .lca, offered to the others
    avatar_cache_dir: str | Path = Path.home() / ".cache" / "splatcall" / "avatars"
    max_avatar_bytes: int = DEFAULT_MAX_AVATAR_BYTES
    max_avatar_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES  # least recently used go first
    validate_avatar: Callable[[Path], Any] = default_validate
    remote_sdp_filter: Callable[[str], str] | None = None  # test harnesses (lossy relay)
    voice_bitrate: int = VOICE_BITRATE        # Opus bits per second


@dataclass
class ReceiveStats:
    """Codes received from one remote participant."""

    packets: int = 0
    bytes: int = 0
    first_seq: int | None = None
    highest_seq: int = -1
    unique: int = 0
    transit_s: deque = field(default_factory=lambda: deque(maxlen=20000))
    first_arrival: float | None = None
    last_arrival: float | None = None
    _seen: set = field(default_factory=set)

    def add(self, codes: Codes, size: int, arrival_s: float) -> None:
        self.packets += 1
        self.bytes += size
        if self.first_seq is None:
            self.first_seq = codes.seq
            self.first_arrival = arrival_s
        self.last_arrival = arrival_s
        if codes.seq not in self._seen:
            self._seen.add(codes.seq)
            self.unique += 1
        self.highest_seq = max(self.highest_seq, codes.seq)
        self.transit_s.append(arrival_s - codes.t)

    @property
    def lost(self) -> int:
        if self.first_seq is None:
            return 0
        return (self.highest_seq - self.first_seq + 1) - self.unique

    def summary(self) -> dict:
        transit = np.array(self.transit_s) * 1000.0
        expected = 0 if self.first_seq is None else self.highest_seq - self.first_seq + 1
        out = {"packets": self.packets, "bytes": self.bytes, "unique": self.unique,
               "expected": expected, "lost": self.lost,
               "loss_fraction": self.lost / expected if expected else 0.0}
        if len(transit):
            out.update({f"transit_ms_p{q}": float(np.percentile(transit, q))
                        for q in (50, 95, 99)})
        return out


@dataclass
class Remote:
    id: str
    name: str
    peer: Peer
    playout: PlayoutBuffer
    decoder: wire.PacketDecoder = field(default_factory=wire.PacketDecoder)
    stats: ReceiveStats = field(default_factory=ReceiveStats)
    joined_at: float = field(default_factory=time.monotonic)


class Call:
    """Join with ``await call.join()``, then ``call.send_codes(codes)`` at the tracker's rate
    and ``call.poses(time.monotonic())`` at the display's; ``await call.leave()`` at the end.

    Callbacks (all optional, called on the event loop):
    ``on_event(kind, remote_id, detail)`` for joined/connected/left/failed/avatar events,
    ``on_audio(remote_id, av.AudioFrame)``, ``on_avatar(remote_id, avatar)``."""

    def __init__(self, config: CallConfig, audio_track=None, video_track=None,
                 on_event: Callable[[str, str, str], None] | None = None,
                 on_audio: Callable[[str, Any], None] | None = None,
                 on_video: Callable[[str, Any], None] | None = None,
                 on_avatar: Callable[[str, Any], None] | None = None):
        self.config = config
        self.on_event = on_event
        self.on_audio = on_audio
        self.on_video = on_video
        self._audio_source = audio_track
        self._video_source = video_track
        self._relay = None
        self.remotes: dict[str, Remote] = {}
        self.departed: list[dict] = []   # stats of remotes that left, for the record
        self.client = SignallingClient(config.url, config.room, config.token, config.name)
        self.avatars = AvatarExchange(
            config.avatar_path, config.avatar_cache_dir, send=self._send_control,
            backlog=self._control_backlog, validate=config.validate_avatar,
            max_bytes=config.max_avatar_bytes, max_cache_bytes=config.max_avatar_cache_bytes,
            on_ready=lambda rid, av: (on_avatar and on_avatar(rid, av),
                                      self._event("avatar", rid, "ready")))
        self._signal_task: asyncio.Task | None = None
        self.signalling_lost = False
        self.sent_packets = 0
        self.sent_bytes = 0
        self.joined_at: float | None = None
        self._closing = False
        # Each remote's clock offset (net.clock), pinged on the codes channel: unordered and
        # never resent, so a sample never waits behind an avatar on the control channel.
        self.clock = ClockSync(lambda rid, text: rid in self.remotes
                               and self.remotes[rid].peer.send_codes(text))
        self.video = VideoRequests(self._send_control)  # our camera only to those who ask

    @property
    def id(self) -> str:
        return self.client.id

    def _event(self, kind: str, remote_id: str, detail: str = "") -> None:
        log.info("%s %s %s", kind, remote_id, detail)
        if self.on_event is not None:
            self.on_event(kind, remote_id, detail)

    # -- joining and leaving --------------------------------------------------------------
    async def join(self) -> None:
        """Join the room and offer to everyone there. Raises ``SignallingError`` if refused."""
        if self.config.host_addresses is not None:
            use_host_addresses(self.config.host_addresses)
        use_voice_bitrate(self.config.voice_bitrate)
        if self._audio_source is not None or self._video_source is not None:
            from aiortc.contrib.media import MediaRelay

            self._relay = MediaRelay()  # one subscription per peer: tracks can't be shared
        peers = await self.client.join()
        self.joined_at = time.monotonic()
        for info in peers:
            remote = self._add_remote(info.id, info.name)
            await remote.peer.offer()
        self._signal_task = asyncio.ensure_future(self._signal_loop())

    async def leave(self) -> None:
        self._closing = True
        if self._signal_task is not None:
            self._signal_task.cancel()
        await self.avatars.close()
        for remote_id in list(self.remotes):
            await self._drop(remote_id, "left")
        await self.client.close()

    def _add_remote(self, remote_id: str, name: str) -> Remote:
        relay = self._relay

        async def send_signal(data: dict) -> None:
            try:
                await self.client.send(remote_id, data)
            except SignallingError as exc:
                log.warning("cannot signal %s: %s", remote_id, exc)

        peer = Peer(
            remote_id, send_signal,
            audio_track=relay.subscribe(self._audio_source) if self._audio_source else None,
            video_track=self.video.gate(remote_id, relay.subscribe(self._video_source))
            if self._video_source else None,
            ice_servers=self.config.ice_servers,
            remote_sdp_filter=self.config.remote_sdp_filter,
            on_codes=self._on_codes, on_control=self._on_control, on_audio=self.on_audio,
            on_video=self.on_video, on_state=self._on_peer_state)
        remote = Remote(remote_id, name, peer, PlayoutBuffer(self.config.playout))
        self.remotes[remote_id] = remote
        self._event("joined", remote_id, name)
        return remote

    async def _drop(self, remote_id: str, why: str) -> None:
        remote = self.remotes.pop(remote_id, None)
        if remote is None:
            return
        self.avatars.forget(remote_id)
        self.departed.append({"id": remote_id, "name": remote.name, "why": why,
                              "connect_s": remote.peer.connect_time_s,
                              "codes": remote.stats.summary(),
                              "malformed": remote.decoder.malformed})
        await remote.peer.close()
        self._event("left", remote_id, why)

    async def _signal_loop(self) -> None:
        try:
            while True:
                event = await self.client.receive()
                kind = event.get("type")
                if kind == "peer-joined":
                    if len(self.remotes) + 1 >= MESH_LIMIT + 1:
                        log.warning("more than %d in a mesh: each peer's uplink carries every "
                                    "stream", MESH_LIMIT)
                    self._add_remote(str(event["id"]), str(event.get("name", "")))
                elif kind == "peer-left":
                    await self._drop(str(event["id"]), "left the room")
                elif kind == "signal":
                    await self._on_signal(str(event.get("from")), event.get("data"))
        except SignallingError as exc:
            if not self._closing:
                self.signalling_lost = True
                log.warning("signalling connection lost (%s); connected peers carry on", exc)
        except asyncio.CancelledError:
            pass

    async def _on_signal(self, remote_id: str, data) -> None:
        remote = self.remotes.get(remote_id)
        if isinstance(data, dict) and data.get("kind") == "offer" and remote is not None:
            pc = remote.peer.pc
            if pc.signalingState == "have-local-offer" and self.client.id < remote_id:
                return  # offers crossed: the smaller id's offer wins, the other side answers
            if pc.signalingState == "have-local-offer" or pc.remoteDescription is not None:
                # A fresh offer for a connection we already have: the other side restarted it.
                await self._drop(remote_id, "reconnecting")
                remote = None
        if remote is None:
            remote = self._add_remote(remote_id, "")
        try:
            await remote.peer.handle_signal(data)
        except Exception as exc:  # noqa: BLE001 - a bad offer from a peer must not end the call
            log.warning("bad signal from %s: %s", remote_id, exc)

    def _on_peer_state(self, remote_id: str, state: str) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        if state == "connected":
            self._event("connected", remote_id, f"{remote.peer.connect_time_s * 1000:.0f} ms")
            asyncio.ensure_future(self._report_connected(remote_id))
        elif state == "control-open":
            self.avatars.hello(remote_id, self.config.name)
        elif state == "failed" and not self._closing:
            self._event("failed", remote_id, "connection failed")
            asyncio.ensure_future(self._reconnect(remote_id))

    async def _report_connected(self, remote_id: str) -> None:
        try:
            await self.client.report_connected(remote_id)
        except (ConnectionError, RuntimeError) as exc:  # the server went away meanwhile
            log.debug("could not report the connection to %s: %s", remote_id, exc)

    async def _reconnect(self, remote_id: str) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        name = remote.name
        await self._drop(remote_id, "connection failed")
        if self.client.id < remote_id and not self.signalling_lost:
            new = self._add_remote(remote_id, name)
            await new.peer.offer()

    # -- codes ---------------------------------------------------------------------------
    def send_codes(self, codes: Codes) -> int:
        """Send a frame to every connected participant; returns how many it went to."""
        packet = wire.encode(codes)
        sent = 0
        for remote in self.remotes.values():
            if remote.peer.send_codes(packet):
                sent += 1
                self.sent_bytes += len(packet)
        self.sent_packets += 1
        return sent

    def _on_codes(self, remote_id: str, message, arrival_s: float) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        if isinstance(message, str) and self.clock.handle(remote_id, message, arrival_s):
            return  # a clock ping or its answer (net.clock)
        codes = remote.decoder.decode(message)
        if codes is None:
            return
        remote.stats.add(codes, len(message), arrival_s)
        remote.playout.push(codes, arrival_s)

    def poses(self, now_s: float | None = None) -> dict[str, Codes]:
        """One posed ``Codes`` per remote participant that has sent anything, for display
        time ``now_s`` (``time.monotonic()`` by default)."""
        now_s = time.monotonic() if now_s is None else now_s
        self.clock.tick([rid for rid, r in self.remotes.items() if r.peer.codes_open.is_set()],
                        now_s)
        self.video.tick({rid: r.peer for rid, r in self.remotes.items()
                         if r.peer.control_open.is_set()})
        out = {}
        for remote_id, remote in self.remotes.items():
            pose = remote.playout.pose(now_s)
            if pose is not None:
                out[remote_id] = pose
        return out

    # -- control channel -------------------------------------------------------------------
    def _send_control(self, remote_id: str, message: str | bytes) -> None:
        remote = self.remotes.get(remote_id)
        if remote is not None:
            remote.peer.send_control(message)

    def _control_backlog(self, remote_id: str) -> int:
        remote = self.remotes.get(remote_id)
        return remote.peer.control_channel.bufferedAmount if remote is not None else 0

    def _on_control(self, remote_id: str, message) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        if self.video.handle(remote_id, message):
            return  # a request for our camera's pictures (net.video)
        self.avatars.handle(remote_id, message)  # rate-limited, parsed with limits
        said = self.avatars.remotes.get(remote_id)
        if said is not None and said.name and not remote.name:
            remote.name = said.name  # printable: see common.names

    # -- reporting -----------------------------------------------------------------------
    def stats(self) -> dict:
        return {
            "id": self.id, "name": self.config.name, "room": self.config.room,
            "sent_packets": self.sent_packets, "sent_bytes": self.sent_bytes,
            "signalling_lost": self.signalling_lost,
            "remotes": {rid: {"name": r.name, "connect_s": r.peer.connect_time_s,
                              "codes": r.stats.summary(), "malformed": r.decoder.malformed,
                              "playout_delay_ms": r.playout.delay_s * 1000.0,
                              "playout_status": r.playout.status,
                              "clock": self.clock.summary(rid),
                              "video_frames_sent": self.video.sent(rid),
                              "avatar": self.avatars.remotes.get(rid).status
                              if rid in self.avatars.remotes else "default"}
                        for rid, r in self.remotes.items()},
            "departed": self.departed,
        }
