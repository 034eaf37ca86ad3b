"""Avatar exchange: every receiver renders the sender's own avatar, fetched over the call.

On the reliable control channel, each side first says hello with its avatar's SHA-256 and
size. The other side looks in its cache (a file named by the hash, checked again before
use); if the avatar is not there and not above its size limit it asks for it, and the
owner streams the file as binary chunks followed by an end marker. The receiver counts
bytes as they come (more than announced or than its limit: abort), checks the hash, stores
the file in its cache under its hash, and validates it like any ``.lca`` file (the
``validate`` callback, by default ``avatar.lca.load_avatar_file``) before handing it on.
Until then, and whenever any step fails, the default avatar stands in.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("splatcall.avatar_exchange")

CHUNK_BYTES = 16 * 1024
SEND_BACKLOG_BYTES = 1 << 20
DEFAULT_MAX_AVATAR_BYTES = 128 * 1024 * 1024
_CHUNK_TAG = b"\x01"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_validate(path: Path) -> Any:
    from avatar.lca import load_avatar_file

    return load_avatar_file(path)


@dataclass
class RemoteAvatar:
    """What we know of one remote participant's avatar. ``status``: 'default' (none offered
    or not yet fetched), 'fetching', 'ready' (``avatar`` holds the validated result),
    'refused' (``reason`` says why; the default avatar stays)."""

    sha256: str = ""
    size: int = 0
    status: str = "default"
    reason: str = ""
    avatar: Any = None
    path: Path | None = None
    received: int = 0
    _part: Path | None = None
    _handle: Any = None
    _digest: Any = None


class AvatarExchange:
    """Runs the exchange for one call. ``send(remote_id, message)`` puts a message on that
    remote's control channel; ``backlog(remote_id)`` says how many bytes wait to go out;
    ``on_ready(remote_id, avatar)`` fires when a remote avatar has been validated."""

    def __init__(self, own_avatar: str | Path | None, cache_dir: str | Path,
                 send: Callable[[str, str | bytes], None],
                 backlog: Callable[[str], int] | None = None,
                 validate: Callable[[Path], Any] = default_validate,
                 max_bytes: int = DEFAULT_MAX_AVATAR_BYTES,
                 on_ready: Callable[[str, Any], None] | None = None):
        self.own_path = Path(own_avatar) if own_avatar else None
        self.own_sha = file_sha256(self.own_path) if self.own_path else ""
        self.own_size = self.own_path.stat().st_size if self.own_path else 0
        self.cache_dir = Path(cache_dir)
        self._send = send
        self._backlog = backlog or (lambda remote_id: 0)
        self.validate = validate
        self.max_bytes = max_bytes
        self.on_ready = on_ready
        self.remotes: dict[str, RemoteAvatar] = {}
        self._tasks: set[asyncio.Task] = set()
        self.served = 0  # how many times we sent our avatar

    # -- our side -----------------------------------------------------------------------
    def hello(self, remote_id: str, name: str) -> None:
        """Say hello (with our avatar's hash and size) once the control channel is open."""
        offer = {"sha256": self.own_sha, "size": self.own_size} if self.own_path else None
        self._send(remote_id, json.dumps({"type": "hello", "name": name, "avatar": offer}))

    async def _serve(self, remote_id: str) -> None:
        assert self.own_path is not None
        try:
            with open(self.own_path, "rb") as handle:
                digest = hashlib.sha256()
                for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                    while self._backlog(remote_id) > SEND_BACKLOG_BYTES:
                        await asyncio.sleep(0.005)
                    digest.update(chunk)
                    self._send(remote_id, _CHUNK_TAG + chunk)
            if digest.hexdigest() != self.own_sha:
                self._send(remote_id, json.dumps({"type": "avatar-error",
                                                  "message": "avatar file changed on disk"}))
                return
            self._send(remote_id, json.dumps({"type": "avatar-end", "sha256": self.own_sha}))
            self.served += 1
        except OSError as exc:
            self._send(remote_id, json.dumps({"type": "avatar-error", "message": str(exc)}))

    # -- their side ----------------------------------------------------------------------
    def handle(self, remote_id: str, message: str | bytes) -> None:
        """Handle one control-channel message from ``remote_id``. Never raises on bad input."""
        remote = self.remotes.setdefault(remote_id, RemoteAvatar())
        if isinstance(message, bytes):
            self._chunk(remote_id, remote, message)
            return
        try:
            data = json.loads(message)
        except ValueError:
            log.info("%s: control message is not JSON", remote_id)
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "hello":
            self._hello(remote_id, remote, data.get("avatar"))
        elif kind == "avatar-get":
            if self.own_path is not None and data.get("sha256") == self.own_sha:
                self._spawn(self._serve(remote_id))
            else:
                self._send(remote_id, json.dumps({"type": "avatar-error",
                                                  "message": "no such avatar here"}))
        elif kind == "avatar-end" and remote.status == "fetching":
            self._finish(remote_id, remote)
        elif kind == "avatar-error" and remote.status == "fetching":
            self._refuse(remote, f"the sender could not send it: {data.get('message')}")

    def _hello(self, remote_id: str, remote: RemoteAvatar, offer) -> None:
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
        cached = self.cache_dir / f"{sha}.lca"
        if cached.is_file() and cached.stat().st_size == size and file_sha256(cached) == sha:
            remote.status = "fetching"  # from the cache: validate as if it had just arrived
            self._spawn(self._validate(remote_id, remote, cached))
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

    async def _validate(self, remote_id: str, remote: RemoteAvatar, path: Path) -> None:
        try:
            avatar = await asyncio.get_running_loop().run_in_executor(None, self.validate, path)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the default avatar
            self._refuse(remote, f"the avatar is not a valid avatar file: {exc}")
            return
        remote.status, remote.avatar, remote.path = "ready", avatar, path
        log.info("%s: avatar %s ready", remote_id, remote.sha256[:12])
        if self.on_ready is not None:
            self.on_ready(remote_id, avatar)

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
