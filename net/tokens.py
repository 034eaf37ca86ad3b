"""Join tokens: signed, expiring permissions to enter one room of a signalling server.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, base64url(payload)))`` where
the payload is the JSON object ``{"room": ..., "exp": unix_seconds}``. Whoever holds the
server's secret mints tokens (``main.py serve --make-token ROOM``); the server checks the
signature, the expiry and the room, in that order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from common import safejson
from common.files import replacing
SECRET_BYTES = 32


class TokenError(ValueError):
    """A token that does not admit its holder. ``reason`` is 'invalid', 'expired' or
    'wrong-room'."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, room: str, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """A token admitting its holder to ``room`` for ``ttl_s`` seconds from ``now`` (unix time)."""
    now = time.time() if now is None else now
    payload = _b64(json.dumps({"room": room, "exp": int(now + ttl_s)}, separators=(",", ":"))
                   .encode("utf-8"))
    signature = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def check_token(secret: bytes, token: object, room: str, now: float | None = None) -> None:
    """Raise ``TokenError`` unless ``token`` is a valid, unexpired token for ``room``."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 1024:
        raise TokenError("invalid", "the join token is malformed")
    payload, signature = token.split(".")
    expected = hmac.new(secret, payload.encode("ascii", "replace"), hashlib.sha256).digest()
    try:
        given = _unb64(signature)
        claims = safejson.loads(_unb64(payload), 1024)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("invalid", "the join token is malformed") from None
    if not hmac.compare_digest(given, expected):
        raise TokenError("invalid", "the join token's signature does not match this server")
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        raise TokenError("invalid", "the join token is malformed")
    now = time.time() if now is None else now
    if claims["exp"] < now:
        raise TokenError("expired", f"the join token expired {now - claims['exp']:.0f} s ago")
    if claims.get("room") != room:
        raise TokenError("wrong-room", f"the join token is for another room, not {room!r}")


MAX_SECRET_BYTES = 1024


def load_or_create_secret(path: str | Path) -> bytes:
    """The server secret stored at ``path`` (created, readable only by its owner, if missing)."""
    path = Path(path).expanduser()
    if path.exists():
        with path.open("rb") as handle:
            secret = handle.read(MAX_SECRET_BYTES + 1).strip()
        if len(secret) > MAX_SECRET_BYTES or not all(33 <= b < 127 for b in secret):
            raise ValueError(f"{path}: not a secret file (one line of at most "
                             f"{MAX_SECRET_BYTES} printable characters)")
        if len(secret) < 16:
            raise ValueError(f"{path}: the secret is too short (at least 16 bytes)")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(SECRET_BYTES).encode("ascii")
    with replacing(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
    return secret


def default_secret_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "splatcall" / "signalling.key"
