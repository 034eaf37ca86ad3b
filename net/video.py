"""Webcam video, sent only to those who ask for it.

A participant started with a camera track (``main.py call --video``) adds one video track to
each peer connection, but its frames pass only while that peer wants them: each peer's track
is a ``VideoGate`` over its own subscription to the camera, which reads and drops the frames
nobody asked for (so nothing is encoded or sent; the camera's relay queue does not grow).
A receiver asks, or stops asking, with one control-channel message::

    {"type": "video", "want": true}

``VideoRequests`` keeps both sides: ``want`` (do we want the others' pictures: the window's
V key, ``--show-video``), told to every remote whose control channel is open whenever it
changes (``tick``, once per call tick), and the gates of our own camera, opened and shut by
the others' messages (``handle``: True when a control message was this module's).
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from typing import Callable

from aiortc import MediaStreamTrack

_PREFIX = '{"type": "video"'
MAX_MESSAGE_CHARS = 64
_TIME_BASE = Fraction(1, 90000)   # RTP's video clock


class VideoGate(MediaStreamTrack):
    """One peer's view of our camera: frames pass while ``open``, else are dropped. Frames
    leave stamped on the monotonic clock, whatever their source said: with a looped clip
    standing in for a camera (timestamps starting again at 0) aiortc's VP8 sender stopped
    for good at the loop point (``avcodec_send_frame()``: invalid data; twice through Janus,
    never since the frames are stamped here; the encoder alone, fed the same frames, did
    not fail, so the exact trigger is not pinned down)."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self.source = source
        self.open = False
        self.sent = 0      # frames passed on
        self.dropped = 0   # frames read while shut

    async def recv(self):
        while True:
            frame = await self.source.recv()
            if self.open:
                self.sent += 1
                if hasattr(frame, "time_base"):  # (test stand-ins are plain numbers)
                    # One clock for every gate: a frame shared by several peers' gates
                    # (MediaRelay) may be restamped by another while it is encoded.
                    frame.pts = int(time.monotonic() * 90000)
                    frame.time_base = _TIME_BASE
                return frame
            self.dropped += 1

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class VideoRequests:
    """Who wants whose video (see the module docstring); ``send(remote_id, text)`` is the
    control channel."""

    def __init__(self, send: Callable[[str, str], None]):
        self._send = send
        self.want = False                     # we want the others' pictures
        self._told: dict[str, tuple] = {}     # (connection, want) each remote was told
        self.gates: dict[str, VideoGate] = {}  # our camera, per remote
        self.wants: dict[str, bool] = {}       # what each remote last asked of our camera
                                               # (the caller forgets a remote that left)
        self.refused = 0

    def gate(self, remote_id: str, track: MediaStreamTrack) -> VideoGate:
        """``track`` (this remote's subscription to our camera), shut until it asks."""
        gate = self.gates[remote_id] = VideoGate(track)
        return gate

    def tick(self, connections: dict) -> None:
        """Tell every remote in ``connections`` ({remote_id: its connection object}, control
        channel open) what we want, once per change and per connection (a reconnected
        remote is told afresh); forget the remotes that left."""
        for gone in set(self._told) - set(connections):
            del self._told[gone]
        for gone in set(self.gates) - set(connections):
            if self.gates[gone].readyState == "ended":
                del self.gates[gone]
        for remote_id, connection in connections.items():
            if self._told.get(remote_id) != (connection, self.want):
                self._send(remote_id, json.dumps({"type": "video", "want": self.want}))
                self._told[remote_id] = (connection, self.want)

    def handle(self, remote_id: str, message) -> bool:
        """Take one control message: True when it was a video request (applied, or dropped
        as malformed), False when it is someone else's."""
        if not isinstance(message, str) or not message.startswith(_PREFIX):
            return False
        try:
            data = json.loads(message) if len(message) <= MAX_MESSAGE_CHARS else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("type") != "video" \
                or not isinstance(data.get("want"), bool):
            self.refused += 1
            return True
        self.wants[remote_id] = data["want"]
        gate = self.gates.get(remote_id)
        if gate is not None:
            gate.open = data["want"]
        return True

    def sent(self, remote_id: str) -> int:
        """Frames of our camera passed on to ``remote_id``."""
        gate = self.gates.get(remote_id)
        return 0 if gate is None else gate.sent
