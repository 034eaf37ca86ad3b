"""One WebRTC connection (aiortc) to one remote participant.

Per connection:

- ``codes``: a data channel, unordered, no retransmissions (a late pose is worthless; the
  playout buffer covers a lost one). Pre-negotiated as id 0 so that both sides have it
  before the offer/answer exchange and no in-band open message can be lost.
- ``control``: a reliable, ordered data channel (id 1) for hello, avatar exchange and any
  message that must arrive.
- an audio transceiver (Opus): our voice out if we have a source, theirs in always.
- optionally a low-resolution video track (off by default).

Offers and answers travel through the signalling server; aiortc gathers every candidate
before it finishes ``setLocalDescription``, so one offer and one answer suffice (no trickle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("splatcall.peer")

CODES_CHANNEL_ID = 0
CONTROL_CHANNEL_ID = 1
# Above this many bytes queued on the codes channel the link is congested: drop frames
# rather than queue stale poses.
CODES_BACKLOG_BYTES = 16 * 1024


class Peer:
    """The connection to ``remote_id``. Callbacks receive ``(remote_id, ...)``:

    - ``on_codes(remote_id, packet_bytes, arrival_monotonic_s)``
    - ``on_control(remote_id, message)`` (str for JSON text, bytes for binary)
    - ``on_audio(remote_id, av.AudioFrame)``; ``on_video(remote_id, av.VideoFrame)``
    - ``on_state(remote_id, state)``: "connected" (codes flow), "control-open", "failed",
      "closed"
    """

    def __init__(self, remote_id: str, send_signal: Callable[[dict], Awaitable[None]], *,
                 audio_track: MediaStreamTrack | None = None,
                 video_track: MediaStreamTrack | None = None,
                 ice_servers: list[str] | None = None,
                 remote_sdp_filter: Callable[[str], str] | None = None,
                 on_codes=None, on_control=None, on_audio=None, on_video=None, on_state=None):
        self.remote_id = remote_id
        self._send_signal = send_signal
        self._sdp_filter = remote_sdp_filter
        servers = [RTCIceServer(urls=u) for u in (ice_servers or [])]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.codes_channel = self.pc.createDataChannel(
            "codes", ordered=False, maxRetransmits=0, negotiated=True, id=CODES_CHANNEL_ID)
        self.control_channel = self.pc.createDataChannel(
            "control", negotiated=True, id=CONTROL_CHANNEL_ID)
        self._on_codes = on_codes
        self._on_control = on_control
        self._on_audio = on_audio
        self._on_video = on_video
        self._on_state = on_state
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.codes_sent = 0
        self.codes_dropped_congested = 0
        self._tasks: list[asyncio.Task] = []
        self._audio_track = audio_track
        self._video_track = video_track
        self._tracks_added = False
        self.closed = False
        self.codes_open = asyncio.Event()
        self.control_open = asyncio.Event()

        @self.codes_channel.on("open")
        def _codes_open():
            self.codes_open.set()
            if self.connected_at is None:
                self.connected_at = time.monotonic()
            self._state("connected")

        @self.control_channel.on("open")
        def _control_open():
            self.control_open.set()
            self._state("control-open")

        @self.codes_channel.on("message")
        def _codes_message(message):
            if self._on_codes is not None:
                self._on_codes(self.remote_id, message, time.monotonic())

        @self.control_channel.on("message")
        def _control_message(message):
            if self._on_control is not None:
                self._on_control(self.remote_id, message)

        @self.pc.on("track")
        def _track(track):
            handler = self._on_audio if track.kind == "audio" else self._on_video
            self._tasks.append(asyncio.ensure_future(self._consume(track, handler)))

        @self.pc.on("connectionstatechange")
        async def _state_change():
            state = self.pc.connectionState
            if state in ("failed", "closed"):
                self._state(state)

    def _state(self, state: str) -> None:
        if self._on_state is not None:
            self._on_state(self.remote_id, state)

    def _add_tracks(self) -> None:
        if self._tracks_added:
            return
        self._tracks_added = True
        if self._audio_track is not None:
            self.pc.addTrack(self._audio_track)
        elif not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            self.pc.addTransceiver("audio", direction="recvonly")
        if self._video_track is not None:
            self.pc.addTrack(self._video_track)

    async def _consume(self, track, handler) -> None:
        # Always read incoming media, even with nobody listening: aiortc queues it otherwise.
        try:
            while True:
                frame = await track.recv()
                if handler is not None:
                    handler(self.remote_id, frame)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    # -- negotiation ---------------------------------------------------------------------
    async def offer(self) -> None:
        """Start the connection: create and send an offer."""
        self._add_tracks()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send_signal({"kind": "offer", "sdp": self.pc.localDescription.sdp})

    async def handle_signal(self, data: dict) -> None:
        """Apply an offer or answer from the remote side. Raises ValueError if malformed."""
        if not isinstance(data, dict) or data.get("kind") not in ("offer", "answer") \
                or not isinstance(data.get("sdp"), str):
            raise ValueError("signal is not an offer or answer")
        sdp = data["sdp"]
        if self._sdp_filter is not None:
            sdp = self._sdp_filter(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=data["kind"]))
        if data["kind"] == "offer":
            self._add_tracks()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self._send_signal({"kind": "answer", "sdp": self.pc.localDescription.sdp})

    # -- sending -------------------------------------------------------------------------
    def send_codes(self, packet: bytes) -> bool:
        """Send one codes packet if the channel is open and not congested."""
        channel = self.codes_channel
        if channel.readyState != "open":
            return False
        if channel.bufferedAmount > CODES_BACKLOG_BYTES:
            self.codes_dropped_congested += 1
            return False
        channel.send(packet)
        self.codes_sent += 1
        return True

    def send_control(self, message: str | bytes) -> None:
        if self.control_channel.readyState == "open":
            self.control_channel.send(message)

    @property
    def connect_time_s(self) -> float | None:
        if self.connected_at is None:
            return None
        return self.connected_at - self.created_at

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
