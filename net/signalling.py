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
- server -> client on refusal: ``{"type": "error", "code": C, "message": M}`` and, for fatal
  ones, a close with code ``CLOSE_CODES[C]``. Codes: bad-token, expired-token, wrong-room,
  room-full, too-large, rate-limited, bad-message, join-timeout (fatal); unknown-peer (not).

Limits protect the server from careless and hostile clients: a participant limit per room,
a message size limit, a token-bucket rate limit, a join timeout, and websocket heartbeats so
that a client that vanishes without closing (pulled cable, killed laptop) leaves its room
within a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from common import safejson

from net.tokens import TokenError, check_token

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
}
_TOKEN_CODES = {"invalid": "bad-token", "expired": "expired-token", "wrong-room": "wrong-room"}
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


@dataclass
class _Member:
    id: str
    name: str
    ws: web.WebSocketResponse
    tokens: float
    refilled_at: float = field(default_factory=time.monotonic)


class SignallingServer:
    """An aiohttp application holding rooms in memory. ``secret`` signs join tokens."""

    def __init__(self, secret: bytes, limits: ServerLimits | None = None):
        self.secret = secret
        self.limits = limits or ServerLimits()
        self.rooms: dict[str, dict[str, _Member]] = {}
        self.app = web.Application()
        self.app.router.add_get("/ws", self._handle)
        self.app.router.add_get("/health", self._health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port."""
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        for room in list(self.rooms.values()):
            for member in list(room.values()):
                await member.ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"rooms": len(self.rooms),
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
            if (not isinstance(room_name, str) or not room_name
                    or len(room_name) > MAX_ROOM_CHARS or not isinstance(name, str)
                    or len(name) > MAX_NAME_CHARS):
                await self._refuse(ws, "bad-message", "join needs a room name (1-64 chars) "
                                   "and an optional name (up to 64 chars)")
                return ws
            try:
                check_token(self.secret, join.get("token"), room_name)
            except TokenError as exc:
                await self._refuse(ws, _TOKEN_CODES[exc.reason], str(exc))
                return ws
            room = self.rooms.setdefault(room_name, {})
            if len(room) >= limits.max_participants:
                await self._refuse(ws, "room-full", f"room {room_name!r} is full "
                                   f"({limits.max_participants} participants)")
                if not room:
                    self.rooms.pop(room_name, None)
                return ws
            member = _Member(id=secrets.token_hex(4), name=name, ws=ws,
                             tokens=float(limits.message_burst))
            peers = [{"id": m.id, "name": m.name} for m in room.values()]
            room[member.id] = member
            log.info("%s (%s) joined %s, %d now", member.id, name, room_name, len(room))
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
                if kind != "signal" or not isinstance(data.get("to"), str):
                    await self._refuse(ws, "bad-message", f"unknown message type {kind!r}")
                    break
                target = room.get(data["to"])
                if target is None:
                    await ws.send_json({"type": "error", "code": "unknown-peer",
                                        "message": f"no participant {data['to']!r} here"})
                    continue
                await self._send(target, {"type": "signal", "from": member.id,
                                          "data": data.get("data")})
        except (ConnectionResetError, asyncio.CancelledError):
            pass
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
        except (ConnectionResetError, RuntimeError):
            pass

    async def _send(self, member: _Member, message: dict) -> None:
        try:
            await member.ws.send_json(message)
        except (ConnectionResetError, RuntimeError):
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
