"""One configuration for a call, whatever the topology (``net.call``'s mesh or ``net.janus``'s
SFU): where to meet, who we are, how to play out what arrives, which avatar we offer and how
much of theirs we accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from net.audio import VOICE_BITRATE
from net.avatar_exchange import DEFAULT_MAX_AVATAR_BYTES, DEFAULT_MAX_CACHE_BYTES, default_validate
from net.playout import PlayoutConfig


@dataclass
class CallConfig:
    url: str                                   # mesh: ws://host:port/ws of the signalling
                                               # server; Janus: its HTTP API, http://host:8088/janus
    room: str                                  # Janus: a number (a VideoRoom id)
    token: str = ""                            # mesh only: the join token
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
    max_publishers: int = 32                   # Janus: room size when we create the room
    silent_after_s: float = 1.0                # no codes this long: a "silent" event
    resignal_interval_s: float = 1.0           # mesh: retry the signalling server this often
