"""Avatar exchange: every receiver renders the sender's own avatar, fetched over the call.

On the reliable control channel, each side first says hello with its avatar's SHA-256 and
size. The other side looks in its cache (a file named by the hash, checked again before
use); if the avatar is not there and not above its size limit it asks for it, and the
owner streams the file as binary chunks followed by an end marker. The receiver counts
bytes as they come (more than announced or than its limit: abort), checks the hash, stores
the file in its cache under its hash, and validates it like any ``.lca`` file (the
``validate`` callback, by default ``avatar.lca.load_avatar_file``) before handing it on.
Until then, and whenever any step fails, the default avatar stands in.

A peer may be hostile. Its avatar is validated against the template we pose with (index
ranges, counts, Gaussian sizes and offsets relative to the body, opacities, a render-cost
bound: ``avatar.lca.check_render_cost``); the verdict is remembered per hash, so naming the
same avatar again costs nothing (no second hash, no second validation). Text messages from
each peer are rate-limited (``ControlRateLimit``) and size-limited, and parsed with depth
limits (``common.safejson``). The cache holds at most ``max_cache_bytes``: the least
recently used files go first, and a file that fails validation is deleted at once.

Messages (JSON text): ``hello``, ``avatar-get``, ``avatar-end``, ``avatar-error``;
binary messages are ``b"\\x01" + chunk`` and are accepted only while a fetch is under way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common import safejson
from common.names import printable

log = logging.getLogger("splatcall.avatar_exchange")

CHUNK_BYTES = 16 * 1024
# The owner keeps at most this much of its avatar queued on the channel, and streams it at
# SEND_RATE_BYTES_S (a burst of SEND_BURST_BYTES allowed). The codes share the channels'
# SCTP association, whose queue is first come, first served: with 1 MB queued and no pace,
# on one 2-core machine running a tracker and a window (bench/bench_latency.py) the codes
# crossing during the call's first 5 s took 0.2-2.4 s instead of 1 ms (the receiver's
# Python SCTP falls behind); at 3 MB/s they took 1-5 ms throughout. On a real uplink
# (10-40 Mbit/s) an unpaced avatar would fill the bottleneck's queue for the voice too.
# Costs the 11.4 MB default avatar 1.4 -> 4.2 s on an idle loopback (the default avatar
# stands in meanwhile, and a cached avatar is not sent again).
SEND_BACKLOG_BYTES = 64 * 1024
SEND_RATE_BYTES_S = 3_000_000
SEND_BURST_BYTES = 32 * 1024
DEFAULT_MAX_AVATAR_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_CACHE_BYTES = 1024 * 1024 * 1024
STALE_PART_S = 3600.0
MAX_CONTROL_TEXT_BYTES = 4096   # our longest control message (hello with a long name) is ~250
GATHER_S = 0.05                 # a stream to a group waits this long for more askers
MAX_GROUP = 100                 # remotes one stream is addressed to (its list fits the above)
_CHUNK_TAG = b"\x01"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_validate(path: Path) -> Any:
    """The avatar in ``path`` (an ``AvatarData``), checked against the shipped template that
    the receiver will pose it with, or ``AvatarFileError``."""
    from avatar.lca import load_avatar_file
    from avatar.template import load_template

    return load_avatar_file(path, load_template())


class ControlRateLimit:
    """A token bucket: ``burst`` messages at once, then ``per_s`` a second. Honest peers send
    a hello and an avatar-get or two per connection; 20 a burst and 2 a second leave them
    far from the limit while 300 hellos in a row cost the receiver 20 handlings."""

    def __init__(self, burst: float = 20.0, per_s: float = 2.0):
        self.burst, self.per_s = burst, per_s
        self.tokens, self.stamp = burst, time.monotonic()
        self.dropped = 0

    def allow(self, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        self.tokens = min(self.burst, self.tokens + (now_s - self.stamp) * self.per_s)
        self.stamp = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False


@dataclass
class RemoteAvatar:
    """What we know of one remote participant's avatar. ``status``: 'default' (none offered
    or not yet fetched), 'fetching', 'ready' (``avatar`` holds the validated result),
    'refused' (``reason`` says why; the default avatar stays)."""

    sha256: str = ""
    size: int = 0
    name: str = ""   # the display name from its hello, made printable
    status: str = "default"
    reason: str = ""
    avatar: Any = None
    path: Path | None = None
    received: int = 0
    _part: Path | None = None
    _handle: Any = None
    _digest: Any = None
    _limit: ControlRateLimit | None = None


class AvatarExchange:
    """Runs the exchange for one call. ``send(remote_id, message)`` puts a message on that
    remote's control channel; ``backlog(remote_id)`` says how many bytes wait to go out;
    ``on_ready(remote_id, avatar)`` fires when a remote avatar has been validated. With
    ``send_group(remote_ids, message)`` (a channel everyone hears, as through an SFU) our
    avatar goes out as one stream to everyone who asked for it meanwhile."""

    def __init__(self, own_avatar: str | Path | None, cache_dir: str | Path,
                 send: Callable[[str, str | bytes], None],
                 backlog: Callable[[str], int] | None = None,
                 validate: Callable[[Path], Any] = default_validate,
                 max_bytes: int = DEFAULT_MAX_AVATAR_BYTES,
                 on_ready: Callable[[str, Any], None] | None = None,
                 max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
                 send_group: Callable[[list[str], str | bytes], None] | None = None):
        self.own_path = Path(own_avatar) if own_avatar else None
        self.own_sha = file_sha256(self.own_path) if self.own_path else ""
        self.own_size = self.own_path.stat().st_size if self.own_path else 0
        self.cache_dir = Path(cache_dir)
        self._send = send
        self._backlog = backlog or (lambda remote_id: 0)
        self.validate = validate
        self.max_bytes = max_bytes
        self.on_ready = on_ready
        self.max_cache_bytes = max_cache_bytes
        self.remotes: dict[str, RemoteAvatar] = {}
        # sha256 -> (validated avatar, "") or (None, reason): each hash is checked once
        self.verdicts: dict[str, tuple[Any, str]] = {}
        self.validations = 0  # how many times an avatar was hashed from cache or validated
        self._tasks: set[asyncio.Task] = set()
        self.served = 0  # how many times we sent our avatar
        self._serving: set[str] = set()
        self._send_group = send_group
        self._waiting: set[str] = set()
        self._round_running = False
        self.rounds = 0  # how many streams of our avatar went out (a stream serves a group)
        self.send_rate_bytes_s = SEND_RATE_BYTES_S  # 0: no pace

    # -- our side -----------------------------------------------------------------------
    def hello(self, remote_id: str, name: str, extra: dict | None = None) -> None:
        """Say hello (with our avatar's hash and size) once the control channel is open;
        ``extra`` adds fields the call itself reads (its session, see ``net.call``)."""
        offer = {"sha256": self.own_sha, "size": self.own_size} if self.own_path else None
        self._send(remote_id, json.dumps({"type": "hello", "name": name, "avatar": offer,
                                          **(extra or {})}))

    async def _serve(self, remote_id: str) -> None:
        if self._send_group is None:
            await self._stream([remote_id], lambda message: self._send(remote_id, message))
            return
        # One channel reaches everyone (an SFU): one stream for all who asked meanwhile;
        # who asks while it runs waits for the next (a stream joined midway is no use).
        self._waiting.add(remote_id)
        if self._round_running:
            return
        self._round_running = True
        try:
            await asyncio.sleep(GATHER_S)  # the gets of a room that just met come together
            while self._waiting:
                group = sorted(self._waiting)[:MAX_GROUP]
                self._waiting.difference_update(group)
                await self._stream(group, lambda message, g=group: self._send_group(g, message))
        finally:
            self._round_running = False

    async def _stream(self, group: list[str], send: Callable[[str | bytes], None]) -> None:
        assert self.own_path is not None
        try:
            with open(self.own_path, "rb") as handle:
                digest = hashlib.sha256()
                started, streamed = time.monotonic(), 0
                for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                    if self.send_rate_bytes_s > 0:  # the pace: never ahead of the rate
                        ahead = ((streamed - SEND_BURST_BYTES) / self.send_rate_bytes_s
                                 - (time.monotonic() - started))
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                    while self._backlog(group[0]) > SEND_BACKLOG_BYTES:
                        await asyncio.sleep(0.002)
                    digest.update(chunk)
                    send(_CHUNK_TAG + chunk)
                    streamed += len(chunk)
            if digest.hexdigest() != self.own_sha:
                send(json.dumps({"type": "avatar-error", "message": "avatar file changed on disk"}))
                return
            send(json.dumps({"type": "avatar-end", "sha256": self.own_sha}))
            self.served += len(group)
            self.rounds += 1
        except OSError as exc:
            send(json.dumps({"type": "avatar-error", "message": str(exc)}))
        finally:
            self._serving.difference_update(group)

    # -- their side ----------------------------------------------------------------------
    def handle(self, remote_id: str, message: str | bytes) -> None:
        """Handle one control-channel message from ``remote_id``. Never raises on bad input."""
        remote = self.remotes.get(remote_id)
        if remote is None:
            remote = self.remotes[remote_id] = RemoteAvatar(_limit=ControlRateLimit())
        if isinstance(message, bytes):
            self._chunk(remote_id, remote, message)
            return
        if not remote._limit.allow():
            if remote._limit.dropped in (1, 100, 10000):
                log.warning("%s: over the control message rate limit, %d dropped",
                            remote_id, remote._limit.dropped)
            return
        try:
            data = safejson.loads(message, MAX_CONTROL_TEXT_BYTES)
        except ValueError as exc:
            log.info("%s: control message refused: %s", remote_id, exc)
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "hello":
            remote.name = printable(data.get("name")) or remote.name
            self._hello(remote_id, remote, data.get("avatar"))
        elif kind == "avatar-get":
            if remote_id in self._serving:
                return  # one copy at a time per peer: a flood of gets sends one avatar
            if self.own_path is not None and data.get("sha256") == self.own_sha:
                self._serving.add(remote_id)
                self._spawn(self._serve(remote_id))
            else:
                self._send(remote_id, json.dumps({"type": "avatar-error",
                                                  "message": "no such avatar here"}))
        elif kind == "avatar-end" and remote.status == "fetching":
            self._finish(remote_id, remote)
        elif kind == "avatar-error" and remote.status == "fetching":
            self._refuse(remote, f"the sender could not send it: {data.get('message')}")

    def _hello(self, remote_id: str, remote: RemoteAvatar, offer) -> None:
        if (isinstance(offer, dict) and offer.get("sha256") == remote.sha256
                and remote.status in ("fetching", "ready")):
            return  # the same avatar again: already on its way or in use
        self._abort(remote)
        if offer is None:
            remote.status, remote.sha256 = "default", ""
            return
        sha, size = ((offer.get("sha256"), offer.get("size")) if isinstance(offer, dict)
                     else (None, None))
        if not isinstance(sha, str) or not _SHA_RE.match(sha) or isinstance(size, bool) \
                or not isinstance(size, int) or size <= 0:
            self._refuse(remote, "malformed avatar offer")
            return
        remote.sha256, remote.size = sha, size
        if size > self.max_bytes:
            self._refuse(remote, f"avatar of {size} bytes is over the {self.max_bytes} byte limit")
            return
        if sha in self.verdicts:  # seen before in this call: no second hash or validation
            avatar, reason = self.verdicts[sha]
            if avatar is None:
                self._refuse(remote, reason)
            else:
                self._accept(remote_id, remote, avatar, self.cache_dir / f"{sha}.lca")
            return
        cached = self.cache_dir / f"{sha}.lca"
        if cached.is_file() and cached.stat().st_size == size:
            remote.status = "fetching"  # from the cache: hash and validate as if just arrived
            self._spawn(self._validate(remote_id, remote, cached, check_hash=True))
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        remote.status, remote.received = "fetching", 0
        remote._part = self.cache_dir / f"{sha}.{os.getpid()}.{remote_id}.part"
        remote._handle = open(remote._part, "wb")
        remote._digest = hashlib.sha256()
        self._send(remote_id, json.dumps({"type": "avatar-get", "sha256": sha}))

    def _chunk(self, remote_id: str, remote: RemoteAvatar, message: bytes) -> None:
        if (remote.status != "fetching" or remote._handle is None
                or not message.startswith(_CHUNK_TAG)):
            return  # unsolicited binary data: ignored
        chunk = message[1:]
        remote.received += len(chunk)
        if remote.received > remote.size:
            self._refuse(remote, f"sender sent more than the {remote.size} bytes it announced")
            return
        remote._handle.write(chunk)
        remote._digest.update(chunk)

    def _finish(self, remote_id: str, remote: RemoteAvatar) -> None:
        handle, part = remote._handle, remote._part
        if handle is None or part is None:
            return
        handle.close()
        remote._handle = None
        if remote.received != remote.size or remote._digest.hexdigest() != remote.sha256:
            self._refuse(remote, "the avatar received does not match its hash or size")
            return
        final = self.cache_dir / f"{remote.sha256}.lca"
        part.replace(final)
        remote._part = None
        self._spawn(self._validate(remote_id, remote, final))

    def _hash_and_validate(self, path: Path, sha: str, check_hash: bool) -> Any:
        if check_hash and file_sha256(path) != sha:
            raise ValueError("the cached file does not match its hash")
        return self.validate(path)

    async def _validate(self, remote_id: str, remote: RemoteAvatar, path: Path,
                        check_hash: bool = False) -> None:
        sha = remote.sha256
        self.validations += 1
        try:
            avatar = await asyncio.get_running_loop().run_in_executor(
                None, self._hash_and_validate, path, sha, check_hash)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the default avatar
            reason = f"the avatar is not a valid avatar file: {str(exc)[:300]}"
            self.verdicts[sha] = (None, reason)
            path.unlink(missing_ok=True)  # never keep a refused file in the cache
            if remote.sha256 == sha and remote.status == "fetching":
                self._refuse(remote, reason)
            return
        self.verdicts[sha] = (avatar, "")
        try:
            os.utime(path)  # most recently used: evicted last
        except OSError:
            pass
        self._evict(keep=path)
        if remote.sha256 == sha and remote.status == "fetching":
            self._accept(remote_id, remote, avatar, path)

    def _accept(self, remote_id: str, remote: RemoteAvatar, avatar: Any, path: Path) -> None:
        remote.status, remote.avatar, remote.path = "ready", avatar, path
        log.info("%s: avatar %s ready", remote_id, remote.sha256[:12])
        if self.on_ready is not None:
            self.on_ready(remote_id, avatar)

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used cached avatars until the cache is within
        ``max_cache_bytes`` (``keep``, the one just used, stays whatever its size)."""
        try:
            stale = time.time() - STALE_PART_S  # a fetch cut off by a crash long ago
            for part in self.cache_dir.glob("*.part"):
                if part.stat().st_mtime < stale:
                    part.unlink(missing_ok=True)
            files = [(p.stat().st_mtime, p.stat().st_size, p)
                     for p in self.cache_dir.glob("*.lca") if p.is_file()]
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.max_cache_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            log.info("avatar cache: evicted %s", path.name)

    def _refuse(self, remote: RemoteAvatar, reason: str) -> None:
        log.warning("avatar refused, keeping the default: %s", reason)
        self._abort(remote)
        remote.status, remote.reason, remote.avatar = "refused", reason, None

    def _abort(self, remote: RemoteAvatar) -> None:
        if remote._handle is not None:
            remote._handle.close()
            remote._handle = None
        if remote._part is not None:
            remote._part.unlink(missing_ok=True)
            remote._part = None

    def forget(self, remote_id: str) -> None:
        remote = self.remotes.pop(remote_id, None)
        if remote is not None:
            self._abort(remote)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for remote_id in list(self.remotes):
            self.forget(remote_id)
