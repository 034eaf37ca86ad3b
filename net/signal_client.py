"""The client side of the signalling protocol (see ``net.signalling``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from common import safejson


class SignallingError(ConnectionError):
    """The server refused us (``code`` says why: bad-token, room-full, ...) or went away."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code


@dataclass
class PeerInfo:
    id: str
    name: str


class SignallingClient:
    """One membership of one room. ``await join()``, then ``send()`` to peers and
    ``await receive()`` room events (``peer-joined``, ``peer-left``, ``signal``, ``error``)."""

    def __init__(self, url: str, room: str, token: str, name: str = "",
                 connect_timeout_s: float = 5.0):
        self.url = url
        self.room = room
        self.token = token
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.id: str = ""
        self.peers: list[PeerInfo] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def join(self) -> list[PeerInfo]:
        """Connect and join; returns the members already in the room. Raises
        ``SignallingError`` if the server refuses or cannot be reached."""
        self._session = aiohttp.ClientSession()
        try:
            try:  # a port that accepts TCP but never answers the handshake must not hang us
                self._ws = await asyncio.wait_for(self._session.ws_connect(
                    self.url, heartbeat=5.0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    max_msg_size=1 << 20), self.connect_timeout_s)
            except asyncio.TimeoutError:
                raise SignallingError("unreachable", f"the signalling server at {self.url} "
                                      "did not answer the websocket handshake within "
                                      f"{self.connect_timeout_s:g} s") from None
            await self._ws.send_json({"type": "join", "room": self.room, "token": self.token,
                                      "name": self.name})
            welcome = await asyncio.wait_for(self._next(), self.connect_timeout_s)
        except SignallingError:  # a refusal (a ConnectionError, so caught first)
            await self.close()
            raise
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await self.close()
            raise SignallingError("unreachable", f"cannot reach the signalling server at "
                                  f"{self.url}: {exc or type(exc).__name__}") from None
        if welcome.get("type") != "welcome":
            await self.close()
            raise SignallingError("bad-message", f"unexpected first reply {welcome.get('type')!r}")
        self.id = str(welcome["id"])
        self.peers = [PeerInfo(str(p["id"]), str(p.get("name", ""))) for p in welcome["peers"]]
        return self.peers

    async def send(self, to: str, data: dict) -> None:
        """Relay ``data`` (a JSON object) to the member ``to`` of our room."""
        if self._ws is None or self._ws.closed:
            raise SignallingError("closed", "not connected to the signalling server")
        await self._ws.send_json({"type": "signal", "to": to, "data": data})

    async def report_connected(self, peer_id: str) -> None:
        """Tell the server a peer connection with ``peer_id`` is up (its idle rule)."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_json({"type": "connected", "with": peer_id})

    async def send_raw(self, text: str) -> None:
        """Send a raw text message (tests of the server's limits use this)."""
        assert self._ws is not None
        await self._ws.send_str(text)

    async def receive(self) -> dict:
        """The next room event. Non-fatal errors (unknown-peer) come back as ``error``
        events; a refusal or the server going away raises ``SignallingError``."""
        return await self._next()

    async def _next(self) -> dict:
        assert self._ws is not None
        message = await self._ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            try:
                data = safejson.loads(message.data, 1 << 20)
            except ValueError as exc:
                raise SignallingError("bad-message", f"the server sent {exc}") from None
            if not isinstance(data, dict):
                raise SignallingError("bad-message", "the server sent a message that is not "
                                      "a JSON object")
            if data.get("type") == "error" and data.get("code") != "unknown-peer":
                # A fatal refusal: the close follows.
                raise SignallingError(str(data.get("code")), str(data.get("message")))
            return data
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING):
            code = self._ws.close_code
            if code == 1009:
                raise SignallingError("too-large", "the server closed the connection: "
                                      "message too large")
            raise SignallingError("closed", f"the signalling server closed the connection "
                                  f"(code {code})")
        if message.type == aiohttp.WSMsgType.ERROR:
            raise SignallingError("closed", f"signalling connection failed: {self._ws.exception()}")
        raise SignallingError("bad-message", f"unexpected websocket message {message.type}")

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            try:
                await self._ws.send_json({"type": "leave"})
            except (ConnectionResetError, RuntimeError, aiohttp.ClientError):
                pass
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._ws = None
        self._session = None
