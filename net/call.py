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

The signalling server going away does not end the call: connected peers carry on, and the
call rejoins the room every ``CallConfig.resignal_interval_s`` until the server is back. It
then has a new id, and so has everyone else who rejoined: it offers to every member it does
not know, and each side's hello on the new connection carries the call's ``session`` (a
random tag per ``Call``); a hello naming the session of a connection we already have marks
the new connection a duplicate: the old one carries on (no gap, no fade), known from now on
by its new signalling id, and the duplicate is closed (after ``DUPLICATE_CLOSE_S``, so
that the other side has seen our hello too). A newcomer who joined while we were
away is connected as usual.

Rooms up to ``MESH_LIMIT`` participants use this mesh; larger rooms need an SFU (see
``net.janus``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from avatar.codes import Codes
from common import safejson
from net import wire
from net.audio import use_voice_bitrate
from net.clock import ClockSync
from net.config import CallConfig
from net.inbound import CallBase, InboundStream, ReceiveStats, RemoteParticipant
from net.video import VideoRequests
from net.loopback import use_host_addresses
from net.peer import Peer
from net.signal_client import SignallingClient, SignallingError

log = logging.getLogger("splatcall.call")

MESH_LIMIT = 6
DUPLICATE_CLOSE_S = 5.0  # a duplicate connection lives this long, so both sides see its hello

__all__ = ["Call", "CallConfig", "ReceiveStats", "Remote", "MESH_LIMIT"]


@dataclass
class Remote(RemoteParticipant):
    peer: Peer | None = None
    signal_id: str = ""   # its id at the signalling server (changes when it rejoins)
    session: str = ""     # from its hello: which Call it is
    hello_seen: bool = False

    @property
    def connect_time_s(self) -> float | None:
        return self.peer.connect_time_s if self.peer is not None else None


class Call(CallBase):
    """Join with ``await call.join()``, then ``call.send_codes(codes)`` at the tracker's rate
    and ``call.poses(time.monotonic())`` at the display's; ``await call.leave()`` at the end.
    Callbacks as ``net.inbound.CallBase``, plus ``on_video(remote_id, av.VideoFrame)``."""

    def __init__(self, config: CallConfig, audio_track=None, video_track=None,
                 on_event: Callable[[str, str, str], None] | None = None,
                 on_audio: Callable[[str, Any], None] | None = None,
                 on_video: Callable[[str, Any], None] | None = None,
                 on_avatar: Callable[[str, Any], None] | None = None):
        super().__init__(config, on_event=on_event, on_audio=on_audio, on_avatar=on_avatar)
        self.on_video = on_video
        self._audio_source = audio_track
        self._video_source = video_track
        self._relay = None
        self.remotes: dict[str, Remote] = {}
        self.client = SignallingClient(config.url, config.room, config.token, config.name)
        self.session = secrets.token_hex(8)
        self._alias: dict[str, str] = {}   # a rejoined remote's new signalling id -> its key
        self._signal_task: asyncio.Task | None = None
        self.signalling_lost = False
        self.signalling_rejoins = 0
        self._closing = False
        # Each remote's clock offset (net.clock), pinged on the codes channel: unordered and
        # never resent, so a sample never waits behind an avatar on the control channel.
        self.clock = ClockSync(lambda rid, text: rid in self.remotes
                               and self.remotes[rid].peer.send_codes(text))
        self.video = VideoRequests(self._send_control)  # our camera only to those who ask

    @property
    def id(self) -> str:
        return self.client.id

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
            await self._drop(remote_id, "we left")
        await self.client.close()

    def _add_remote(self, remote_id: str, name: str) -> Remote:
        relay = self._relay
        remote = Remote(remote_id, name, InboundStream(self.config.playout),
                        signal_id=remote_id)

        async def send_signal(data: dict) -> None:
            try:
                await self.client.send(remote.signal_id, data)
            except SignallingError as exc:
                log.warning("cannot signal %s: %s", remote.signal_id, exc)

        remote.peer = Peer(
            remote_id, send_signal,
            audio_track=relay.subscribe(self._audio_source) if self._audio_source else None,
            video_track=self.video.gate(remote_id, relay.subscribe(self._video_source))
            if self._video_source else None,
            ice_servers=self.config.ice_servers,
            remote_sdp_filter=self.config.remote_sdp_filter,
            on_codes=self._receive_codes, on_control=self._on_control, on_audio=self.on_audio,
            on_video=self.on_video, on_state=self._on_peer_state)
        self.remotes[remote_id] = remote
        self._event("joined", remote_id, name)
        return remote

    async def _drop(self, remote_id: str, why: str, quiet: bool = False) -> None:
        remote = self.remotes.pop(remote_id, None)
        if remote is None:
            return
        for alias in [a for a, key in self._alias.items() if key == remote_id]:
            del self._alias[alias]
        if quiet:  # a duplicate connection: the participant carries on over another
            self.avatars.forget(remote_id)
        else:
            self._departure(remote, why)
        await remote.peer.close()
        if not quiet:
            self._event("left", remote_id, why)

    def _key(self, signal_id: str) -> str:
        """The remote a signalling id stands for (rejoined remotes keep their first key)."""
        return self._alias.get(signal_id, signal_id)

    async def _signal_loop(self) -> None:
        try:
            while not self._closing:
                try:
                    while True:
                        await self._on_room_event(await self.client.receive())
                except SignallingError as exc:
                    if self._closing:
                        return
                    self.signalling_lost = True
                    self._event("signalling-lost", "", str(exc))
                    log.warning("signalling connection lost (%s); connected peers carry on",
                                exc)
                await self._rejoin()
        except asyncio.CancelledError:
            pass

    async def _rejoin(self) -> None:
        """Join the room again once the server is back; offer to the members we do not know."""
        await self.client.close()
        while not self._closing:
            await asyncio.sleep(self.config.resignal_interval_s)
            client = SignallingClient(self.config.url, self.config.room, self.config.token,
                                      self.config.name)
            try:
                peers = await client.join()
            except SignallingError as exc:
                log.info("signalling server still away: %s", exc)
                continue
            self.client = client
            self.signalling_lost = False
            self.signalling_rejoins += 1
            self._event("signalling-back", "", f"{len(peers)} in the room")
            for info in peers:
                if info.id in self._alias or info.id in self.remotes:
                    continue
                remote = self._add_remote(info.id, info.name)
                await remote.peer.offer()
            return

    async def _on_room_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "peer-joined":
            if len(self.remotes) + 1 >= MESH_LIMIT + 1:
                log.warning("more than %d in a mesh: each peer's uplink carries every "
                            "stream", MESH_LIMIT)
            self._add_remote(str(event["id"]), str(event.get("name", "")))
        elif kind == "peer-left":
            await self._drop(self._key(str(event["id"])), "left the room")
        elif kind == "signal":
            await self._on_signal(str(event.get("from")), event.get("data"))

    async def _on_signal(self, signal_id: str, data) -> None:
        remote_id = self._key(signal_id)
        remote = self.remotes.get(remote_id)
        if isinstance(data, dict) and data.get("kind") == "offer" and remote is not None:
            pc = remote.peer.pc
            if pc.signalingState == "have-local-offer" and self.client.id < signal_id:
                return  # offers crossed: the smaller id's offer wins, the other side answers
            if pc.signalingState == "have-local-offer" or pc.remoteDescription is not None:
                # A fresh offer for a connection we already have: the other side restarted it.
                await self._drop(remote_id, "reconnecting")
                remote = None
        if remote is None:
            self._alias.pop(signal_id, None)
            remote = self._add_remote(signal_id, "")
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
            asyncio.ensure_future(self._report_connected(remote.signal_id))
        elif state == "control-open":
            self.avatars.hello(remote_id, self.config.name, {"session": self.session})
        elif state == "failed" and not self._closing:
            self._event("failed", remote_id, "connection failed")
            asyncio.ensure_future(self._reconnect(remote_id))

    async def _report_connected(self, signal_id: str) -> None:
        try:
            await self.client.report_connected(signal_id)
        except (ConnectionError, RuntimeError) as exc:  # the server went away meanwhile
            log.debug("could not report the connection to %s: %s", signal_id, exc)

    async def _reconnect(self, remote_id: str) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        name, signal_id = remote.name, remote.signal_id
        await self._drop(remote_id, "connection failed")
        if self.client.id < signal_id and not self.signalling_lost:
            new = self._add_remote(signal_id, name)
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

    def _receive_codes(self, remote_id: str, message, arrival_s: float) -> None:
        if isinstance(message, str) and self.clock.handle(remote_id, message, arrival_s):
            return  # a clock ping or its answer (net.clock)
        super()._receive_codes(remote_id, message, arrival_s)

    def poses(self, now_s: float | None = None) -> dict[str, Codes]:
        now_s = time.monotonic() if now_s is None else now_s
        self.clock.tick([rid for rid, r in self.remotes.items() if r.peer.codes_open.is_set()],
                        now_s)
        self.video.tick({rid: r.peer for rid, r in self.remotes.items()
                         if r.peer.control_open.is_set()})
        return super().poses(now_s)

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
        if not remote.hello_seen and isinstance(message, str):
            remote.hello_seen = True  # the first text message is the hello
            if self._duplicate(remote, message):
                return
        if self.video.handle(remote_id, message):
            return  # a request for our camera's pictures (net.video)
        self._on_control_message(remote_id, message)

    def _duplicate(self, remote: Remote, message: str) -> bool:
        """Read the session from a remote's first hello; True when it names a participant
        we are already connected to (a rejoin after the signalling server came back)."""
        try:
            data = safejson.loads(message, 4096)
        except ValueError:
            return False
        session = data.get("session") if isinstance(data, dict) else None
        if not isinstance(session, str) or not session or len(session) > 64:
            return False
        remote.session = session
        for key, other in self.remotes.items():
            if other is not remote and other.session == session:
                self._event("rejoined", key, remote.id)
                other.signal_id = remote.id
                self._alias[remote.id] = key
                self.remotes.pop(remote.id, None)
                self.avatars.forget(remote.id)
                asyncio.get_running_loop().call_later(
                    DUPLICATE_CLOSE_S, lambda peer=remote.peer: asyncio.ensure_future(
                        peer.close()))
                return True
        return False

    # -- reporting -----------------------------------------------------------------------
    def stats(self) -> dict:
        data = super().stats()
        data.update(signalling_lost=self.signalling_lost,
                    signalling_rejoins=self.signalling_rejoins)
        return data

    def remote_stats(self, remote_id: str, remote) -> dict:
        return {**super().remote_stats(remote_id, remote),
                "clock": self.clock.summary(remote_id),
                "video_frames_sent": self.video.sent(remote_id)}
