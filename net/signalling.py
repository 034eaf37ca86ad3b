"""The signalling server: rooms over websockets, through which peers find each other and
exchange their WebRTC offers and answers. Codes and audio never pass through it.

Protocol (JSON text messages on ``ws://HOST:PORT/ws``):

- client -> server, first message within ``join_timeout_s``:
  ``{"type": "join", "room": R, "token": T, "name": N}``
- server -> client: ``{"type": "welcome", "id": ID, "room": R, "peers": [{"id", "name"}...]}``
  then ``{"type": "peer-joined", "id", "name"}`` and ``{"type": "peer-left", "id"}`` as the
  room changes.
- client -> server: ``{"type": "signal", "to": ID, "data": {...}}``; the server relays it as
  ``{"type": "signal", "from": ID, "data": {...}}`` to that member of the same room.
- client -> server: ``{"type": "connected", "with": ID}`` once a peer connection with that
  member is up (the idle rule below; not relayed).
- server -> client on refusal: ``{"type": "error", "code": C, "message": M}`` and, for fatal
  ones, a close with code ``CLOSE_CODES[C]``. Codes: bad-token, expired-token, wrong-room,
  room-full, too-large, rate-limited, bad-message, join-timeout, revoked-token, replaced
  (another connection with the same token identity took this one's place), idle (fatal);
  unknown-peer (not).

Limits protect the server from careless and hostile clients: a participant limit per room,
a message size limit, a token-bucket rate limit, a join timeout, and websocket heartbeats so
that a client that vanishes without closing (pulled cable, killed laptop) leaves its room
within a few seconds. Against squatting: a token admits one identity (``net.tokens``), and
a second connection with it replaces the first; identities listed in the ``revoked_path``
file are shut out (the file is read again when it changes, and members it names are
dropped); a member that has not reported a completed peer connection within ``idle_s`` of
another member being there to talk to is dropped (sockets that answer pings, or signal, and
never connect cannot hold a room). Names are made printable (``common.names``) before they
reach a log or a peer. ``/health`` answers "ok" to anyone, and room counts only with
``?token=`` a token for the room named "health". ``start(..., ssl_context=)`` serves wss://.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from common import safejson

from common.names import printable
from net.tokens import TokenError, check_token, read_revoked

log = logging.getLogger("splatcall.signalling")

CLOSE_CODES = {
    "bad-token": 4001,
    "expired-token": 4002,
    "wrong-room": 4003,
    "room-full": 4004,
    "too-large": 4005,
    "rate-limited": 4006,
    "bad-message": 4007,
    "join-timeout": 4008,
    "revoked-token": 4009,
    "replaced": 4010,
    "idle": 4011,
}
_TOKEN_CODES = {"invalid": "bad-token", "expired": "expired-token", "wrong-room": "wrong-room",
                "revoked": "revoked-token"}
MAX_NAME_CHARS = 64
MAX_ROOM_CHARS = 64


@dataclass
class ServerLimits:
    max_participants: int = 6          # a full mesh beyond 6 costs every peer too much uplink
    max_message_bytes: int = 64 * 1024  # an SDP with many candidates is a few kB
    messages_per_s: float = 20.0
    message_burst: int = 60
    join_timeout_s: float = 5.0
    heartbeat_s: float = 5.0
    idle_s: float = 30.0                # a member with someone to talk to must signal by then


@dataclass
class _Member:
    id: str
    name: str
    ws: web.WebSocketResponse
    tokens: float
    identity: str = ""
    refilled_at: float = field(default_factory=time.monotonic)
    expect_since: float | None = None   # someone to talk to since then, and no connection yet


class SignallingServer:
    """An aiohttp application holding rooms in memory. ``secret`` signs join tokens."""

    def __init__(self, secret: bytes, limits: ServerLimits | None = None,
                 revoked_path=None):
        self.secret = secret
        self.limits = limits or ServerLimits()
        self.revoked_path = revoked_path
        self.revoked: set[str] = set()
        self._revoked_stamp: float | None = None
        self._sweeper: asyncio.Task | None = None
        self.rooms: dict[str, dict[str, _Member]] = {}
        self.app = web.Application()
        self.app.router.add_get("/ws", self._handle)
        self.app.router.add_get("/health", self._health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context=None) -> int:
        """Listen on ``host:port`` (0 picks a free port), over TLS (wss://) when
        ``ssl_context`` is given; returns the port."""
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._check_revoked()
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.port

    # -- squatters: revoked identities and idle members ------------------------------------
    def _check_revoked(self) -> None:
        if self.revoked_path is None:
            return
        try:
            stamp = os.stat(self.revoked_path).st_mtime
        except OSError:
            stamp = None
        if stamp != self._revoked_stamp:
            self._revoked_stamp = stamp
            self.revoked = read_revoked(self.revoked_path) if stamp is not None else set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.limits.idle_s / 4))
            self._check_revoked()
            now = time.monotonic()
            for room in list(self.rooms.values()):
                for member in list(room.values()):
                    if member.identity in self.revoked:
                        await self._refuse(member.ws, "revoked-token", "the join token was revoked")
                    elif (member.expect_since is not None
                          and now - member.expect_since > self.limits.idle_s):
                        await self._refuse(member.ws, "idle", "no peer connection completed in "
                                           f"{self.limits.idle_s:g} s")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for room in list(self.rooms.values()):
            for member in list(room.values()):
                await member.ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        try:
            check_token(self.secret, request.query.get("token"), "health",
                        revoked=self.revoked)
        except TokenError:
            return web.json_response({"status": "ok"})  # strangers learn nothing more
        return web.json_response({"status": "ok", "rooms": len(self.rooms),
                                  "participants": sum(len(r) for r in self.rooms.values())})

    # -- one client -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        limits = self.limits
        # aiohttp drops anything above its own limit with close 1009; allow some headroom
        # above ours so that most oversized messages get our clearer refusal instead.
        ws = web.WebSocketResponse(heartbeat=limits.heartbeat_s,
                                   max_msg_size=4 * limits.max_message_bytes)
        await ws.prepare(request)
        member: _Member | None = None
        room_name = ""
        try:
            try:
                first = await asyncio.wait_for(ws.receive(), limits.join_timeout_s)
            except asyncio.TimeoutError:
                await self._refuse(ws, "join-timeout", "no join message within "
                                   f"{limits.join_timeout_s:g} s")
                return ws
            join = await self._parse(ws, first)
            if join is None:
                return ws
            if join.get("type") != "join":
                await self._refuse(ws, "bad-message", "the first message must be a join")
                return ws
            room_name, name = join.get("room"), join.get("name", "")
            name = printable(name, MAX_NAME_CHARS + 1) if isinstance(name, str) else name
            if (not isinstance(room_name, str) or not room_name
                    or len(room_name) > MAX_ROOM_CHARS or not isinstance(name, str)
                    or len(name) > MAX_NAME_CHARS):
                await self._refuse(ws, "bad-message", "join needs a room name (1-64 chars) "
                                   "and an optional name (up to 64 chars)")
                return ws
            try:
                identity = check_token(self.secret, join.get("token"), room_name,
                                       revoked=self.revoked)
            except TokenError as exc:
                await self._refuse(ws, _TOKEN_CODES[exc.reason], str(exc))
                return ws
            room = self.rooms.setdefault(room_name, {})
            for other in list(room.values()):
                if other.identity == identity:  # the same token again: take its place
                    await self._refuse(other.ws, "replaced", "another connection joined "
                                       "with this token")
                    await self._remove(room_name, other)
            room = self.rooms.setdefault(room_name, {})
            if len(room) >= limits.max_participants:
                await self._refuse(ws, "room-full", f"room {room_name!r} is full "
                                   f"({limits.max_participants} participants)")
                if not room:
                    self.rooms.pop(room_name, None)
                return ws
            member = _Member(id=secrets.token_hex(4), name=name, ws=ws,
                             tokens=float(limits.message_burst), identity=identity)
            peers = [{"id": m.id, "name": m.name} for m in room.values()]
            room[member.id] = member
            now = time.monotonic()
            if len(room) > 1:  # everyone now has someone to talk to
                for other in room.values():
                    if other.expect_since is None:
                        other.expect_since = now
            log.info("%s (%s) joined %s, %d now", member.id, name, printable(room_name),
                     len(room))
            await ws.send_json({"type": "welcome", "id": member.id, "room": room_name,
                                "peers": peers})
            for other in list(room.values()):
                if other is not member:
                    await self._send(other, {"type": "peer-joined", "id": member.id,
                                             "name": name})
            async for message in ws:
                if not self._take_token(member):
                    await self._refuse(ws, "rate-limited", "more than "
                                       f"{limits.messages_per_s:g} messages a second")
                    break
                data = await self._parse(ws, message)
                if data is None:
                    break
                kind = data.get("type")
                if kind == "leave":
                    break
                if kind == "connected" and isinstance(data.get("with"), str):
                    if data["with"] in room:
                        member.expect_since = None  # a peer connection is up
                    continue
                if kind != "signal" or not isinstance(data.get("to"), str):
                    await self._refuse(ws, "bad-message", f"unknown message type {kind!r}")
                    break
                target = room.get(data["to"])
                if target is None:
                    await self._send(member, {"type": "error", "code": "unknown-peer",
                                              "message": "no participant "
                                              f"{printable(data['to'])!r} here"})
                    continue
                await self._send(target, {"type": "signal", "from": member.id,
                                          "data": data.get("data")})
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away mid-write: its membership ends below
        except Exception as exc:  # noqa: BLE001 - one client's trouble must not end others'
            log.warning("a client's connection failed: %s: %s", type(exc).__name__,
                        printable(str(exc), 200))
        finally:
            if member is not None:
                await self._remove(room_name, member)
            if not ws.closed:
                await ws.close()
        return ws

    async def _parse(self, ws: web.WebSocketResponse, message) -> dict | None:
        """A client's JSON message, or None after refusing it (the connection then closes)."""
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if message.type == WSMsgType.ERROR:
            # aiohttp reports a message above its max_msg_size this way and closes with 1009.
            log.info("websocket error: %s", ws.exception())
            return None
        if message.type != WSMsgType.TEXT:
            await self._refuse(ws, "bad-message", "messages must be JSON text")
            return None
        if len(message.data.encode("utf-8")) > self.limits.max_message_bytes:
            await self._refuse(ws, "too-large", "message of "
                               f"{len(message.data)} bytes is above the limit of "
                               f"{self.limits.max_message_bytes}")
            return None
        try:
            data = safejson.loads(message.data, self.limits.max_message_bytes)
        except ValueError as exc:  # malformed, too deep, numbers of thousands of digits
            await self._refuse(ws, "bad-message", f"message refused: {exc}")
            return None
        if not isinstance(data, dict):
            await self._refuse(ws, "bad-message", "message must be a JSON object")
            return None
        return data

    def _take_token(self, member: _Member) -> bool:
        now = time.monotonic()
        member.tokens = min(float(self.limits.message_burst),
                            member.tokens + (now - member.refilled_at) * self.limits.messages_per_s)
        member.refilled_at = now
        if member.tokens < 1.0:
            return False
        member.tokens -= 1.0
        return True

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        log.info("refused a client: %s: %s", code, message)
        try:
            await ws.send_json({"type": "error", "code": code, "message": message})
            await ws.close(code=CLOSE_CODES[code], message=code.encode("ascii"))
        except (ConnectionError, RuntimeError):
            pass

    async def _send(self, member: _Member, message: dict) -> None:
        try:
            await member.ws.send_json(message)
        except (ConnectionError, RuntimeError):
            pass  # it is leaving; its own handler removes it

    async def _remove(self, room_name: str, member: _Member) -> None:
        room = self.rooms.get(room_name, {})
        if room.pop(member.id, None) is None:
            return
        log.info("%s left %s, %d remain", member.id, room_name, len(room))
        if not room:
            self.rooms.pop(room_name, None)
            return
        for other in list(room.values()):
            await self._send(other, {"type": "peer-left", "id": member.id})
