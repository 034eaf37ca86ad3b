"""What both topologies share: one inbound stream per remote participant (decoder -> stats ->
playout), the remote's record, and the call's surface around them.

``InboundStream`` takes a remote's codes packets as they arrive: the ``wire.PacketDecoder``
parses them (malformed ones are counted and dropped), ``ReceiveStats`` counts them, the
``PlayoutBuffer`` turns them into one pose per display frame. ``CallBase`` is what
``net.call.Call`` (mesh) and ``net.janus.JanusCall`` (SFU) have in common: the remotes, the
avatar exchange (``net.avatar_exchange``; each topology says how a control message reaches
a remote), ``poses(now)``, the events (``on_event(kind, remote_id, detail)``) and
``stats()``. A remote whose codes stop for ``CallConfig.silent_after_s`` gets a ``silent``
event (its avatar holds, then relaxes: see ``net.playout``) and a ``resumed`` one when they
come back; ``event_text`` words any event for a log line or the window's overlay.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from avatar.codes import Codes
from net import wire
from net.avatar_exchange import AvatarExchange
from net.config import CallConfig
from net.playout import PlayoutBuffer, PlayoutConfig

log = logging.getLogger("splatcall.call")


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


class InboundStream:
    """One remote participant's codes: ``receive(packet, arrival)`` as they come,
    ``pose(now)`` per display frame."""

    def __init__(self, playout: PlayoutConfig | None = None):
        self.decoder = wire.PacketDecoder()
        self.stats = ReceiveStats()
        self.playout = PlayoutBuffer(playout)
        self.silent = False   # no codes for a while (a "silent" event was sent)

    def receive(self, message, arrival_s: float) -> Codes | None:
        """Decode, count and buffer one packet; the codes, or None if it was malformed (text
        included: counted as malformed)."""
        codes = self.decoder.decode(message)
        if codes is None:
            return None
        self.stats.add(codes, len(message), arrival_s)
        self.playout.push(codes, arrival_s)
        return codes

    def pose(self, now_s: float) -> Codes | None:
        return self.playout.pose(now_s)

    def summary(self) -> dict:
        return {"codes": self.stats.summary(), "malformed": self.decoder.malformed,
                "playout_delay_ms": self.playout.delay_s * 1000.0,
                "playout_status": self.playout.status}


@dataclass
class RemoteParticipant:
    """A remote participant, whatever carries it (``net.call.Remote``: a ``Peer``;
    ``net.janus.JanusRemote``: a subscriber connection)."""

    id: str
    name: str
    inbound: InboundStream
    joined_at: float = field(default_factory=time.monotonic)

    # The stream's parts, as the app reads them.
    @property
    def stats(self) -> ReceiveStats:
        return self.inbound.stats

    @property
    def playout(self) -> PlayoutBuffer:
        return self.inbound.playout

    @property
    def decoder(self) -> wire.PacketDecoder:
        return self.inbound.decoder

    @property
    def connect_time_s(self) -> float | None:
        return None


def event_text(kind: str, who: str, detail: str = "") -> str:
    """A call event in words, for a log line or the window's overlay."""
    words = {
        "joined": f"{who} is joining",
        "connected": f"{who} connected ({detail})",
        "left": f"closed the connection to {who} as we leave" if detail == "we left"
        else f"{who} left the call ({detail})",
        "failed": f"lost the connection to {who}: reconnecting",
        "avatar": f"{who}'s own avatar arrived",
        "silent": f"no codes from {who} for {detail}: holding their pose",
        "resumed": f"{who}'s codes are back",
        "signalling-lost": f"lost the signalling server ({detail}): the call goes on, "
                           "retrying",
        "signalling-back": f"the signalling server is back ({detail})",
        "rejoined": f"{who} rejoined the signalling server as {detail}: the connection we "
                    "have carries on",
        "janus-lost": f"lost Janus ({detail}): rejoining the room when it is back",
        "janus-back": f"Janus is back: rejoined the room ({detail})",
    }
    return words.get(kind, f"{kind} {who} {detail}".strip())


class CallBase:
    """The surface both topologies offer: ``await join()``, ``send_codes(codes)`` at the
    tracker's rate, ``poses(now)`` at the display's, ``stats()``, ``await leave()``.

    Callbacks (all optional, called on the event loop): ``on_event(kind, remote_id,
    detail)`` (joined, connected, left, failed, avatar, silent, resumed, rejoined, and for
    the call itself, remote_id "": signalling-lost, signalling-back, janus-lost,
    janus-back),
    ``on_audio(remote_id,
    av.AudioFrame)``, ``on_avatar(remote_id, avatar)`` when a remote's own avatar has been
    fetched and validated."""

    remotes: dict[str, RemoteParticipant]

    def __init__(self, config: CallConfig,
                 on_event: Callable[[str, str, str], None] | None = None,
                 on_audio: Callable[[str, Any], None] | None = None,
                 on_avatar: Callable[[str, Any], None] | None = None):
        self.config = config
        self.on_event = on_event
        self.on_audio = on_audio
        self.on_avatar = on_avatar
        self.remotes = {}
        self.departed: list[dict] = []   # stats of remotes that left, for the record
        self.sent_packets = 0
        self.sent_bytes = 0
        self.joined_at: float | None = None
        self.avatars = AvatarExchange(
            config.avatar_path, config.avatar_cache_dir, send=self._send_control,
            backlog=self._control_backlog, validate=config.validate_avatar,
            max_bytes=config.max_avatar_bytes, max_cache_bytes=config.max_avatar_cache_bytes,
            on_ready=self._avatar_ready, **self._exchange_options())

    @property
    def id(self) -> str:
        raise NotImplementedError

    # -- what each topology provides -----------------------------------------------------
    def _send_control(self, remote_id: str, message: str | bytes) -> None:
        raise NotImplementedError

    def _control_backlog(self, remote_id: str) -> int:
        raise NotImplementedError

    def _exchange_options(self) -> dict:
        """More arguments for this topology's ``AvatarExchange``."""
        return {}

    # -- shared ----------------------------------------------------------------------------
    def _event(self, kind: str, remote_id: str, detail: str = "") -> None:
        log.info("%s %s %s", kind, remote_id, detail)
        if self.on_event is not None:
            self.on_event(kind, remote_id, detail)

    def _avatar_ready(self, remote_id: str, avatar) -> None:
        if self.on_avatar is not None:
            self.on_avatar(remote_id, avatar)
        self._event("avatar", remote_id, "ready")

    def _receive_codes(self, remote_id: str, message, arrival_s: float) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        if remote.inbound.receive(message, arrival_s) is not None and remote.inbound.silent:
            remote.inbound.silent = False
            self._event("resumed", remote_id, "")

    def _on_control_message(self, remote_id: str, message) -> None:
        remote = self.remotes.get(remote_id)
        if remote is None:
            return
        self.avatars.handle(remote_id, message)  # rate-limited, parsed with limits
        said = self.avatars.remotes.get(remote_id)
        if said is not None and said.name and not remote.name:
            remote.name = said.name  # printable: see common.names

    def poses(self, now_s: float | None = None) -> dict[str, Codes]:
        """One posed ``Codes`` per remote participant that has sent anything, for display
        time ``now_s`` (``time.monotonic()`` by default)."""
        now_s = time.monotonic() if now_s is None else now_s
        out = {}
        quiet_s = self.config.silent_after_s
        for remote_id, remote in list(self.remotes.items()):
            pose = remote.inbound.pose(now_s)
            if pose is not None:
                out[remote_id] = pose
            last = remote.stats.last_arrival
            if last is not None and not remote.inbound.silent and now_s - last > quiet_s:
                remote.inbound.silent = True
                self._event("silent", remote_id, f"{now_s - last:.1f} s")
        return out

    def _departure(self, remote: RemoteParticipant, why: str) -> None:
        self.avatars.forget(remote.id)
        self.departed.append({"id": remote.id, "name": remote.name, "why": why,
                              "connect_s": remote.connect_time_s,
                              "codes": remote.stats.summary(),
                              "malformed": remote.decoder.malformed})

    def remote_stats(self, remote_id: str, remote: RemoteParticipant) -> dict:
        said = self.avatars.remotes.get(remote_id)
        return {"name": remote.name, "connect_s": remote.connect_time_s,
                **remote.inbound.summary(),
                "silent": remote.inbound.silent,
                "avatar": said.status if said is not None else "default",
                "avatar_sha256": said.sha256 if said is not None and said.status == "ready"
                else ""}

    def stats(self) -> dict:
        return {"id": self.id, "name": self.config.name, "room": self.config.room,
                "sent_packets": self.sent_packets, "sent_bytes": self.sent_bytes,
                "remotes": {rid: self.remote_stats(rid, r) for rid, r in self.remotes.items()},
                "departed": self.departed,
                "avatar_served": self.avatars.served, "avatar_streams": self.avatars.rounds}
