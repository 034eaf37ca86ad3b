"""Join tokens: signed, expiring permissions to enter one room of a signalling server.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, base64url(payload)))`` where
the payload is the JSON object ``{"room": ..., "exp": unix_seconds, "sub": identity}``.
Whoever holds the server's secret mints tokens (``main.py serve --make-token ROOM``); the
server checks the signature, the expiry, the room and whether the identity was revoked, in
that order. The identity (``sub``: a participant's name, or a random one) is who the token
admits: one connection per identity at a time, and revoking it shuts out every token minted
for it. Tokens last an hour unless asked otherwise.
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


DEFAULT_TTL_S = 3600.0
MAX_IDENTITY_CHARS = 64


def make_token(secret: bytes, room: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None,
               identity: str | None = None) -> str:
    """A token admitting ``identity`` (random when None) to ``room`` for ``ttl_s`` seconds
    from ``now`` (unix time)."""
    now = time.time() if now is None else now
    identity = identity or secrets.token_hex(6)
    if not 0 < len(identity) <= MAX_IDENTITY_CHARS:
        raise ValueError(f"a token identity has 1 to {MAX_IDENTITY_CHARS} characters")
    claims = {"room": room, "exp": int(now + ttl_s), "sub": identity}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    signature = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def check_token(secret: bytes, token: object, room: str, now: float | None = None,
                revoked: frozenset[str] | set[str] = frozenset()) -> str:
    """The identity ``token`` admits, or ``TokenError`` unless it is a valid, unexpired
    token for ``room`` whose identity is not in ``revoked``."""
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
        raise TokenError("wrong-room", "the join token is for another room")
    identity = claims.get("sub")
    if not isinstance(identity, str) or not 0 < len(identity) <= MAX_IDENTITY_CHARS:
        raise TokenError("invalid", "the join token names no identity (made by an older "
                         "version: make a new one)")
    if identity in revoked:
        raise TokenError("revoked", "the join token was revoked")
    return identity


def read_revoked(path: str | Path) -> set[str]:
    """The revoked identities listed in ``path``, one a line ("#" starts a comment); an
    empty set when the file does not exist."""
    try:
        with Path(path).open("r", encoding="utf-8", errors="replace") as handle:
            lines = handle.read(1 << 20).splitlines()
    except FileNotFoundError:
        return set()
    return {line.split("#")[0].strip() for line in lines} - {""}


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
