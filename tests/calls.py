"""A signalling server on loopback and the configuration of calls in one of its rooms: what
every test with real aiortc participants in one process starts from."""

from __future__ import annotations

from pathlib import Path


async def loopback_room(tmp_path: Path, room: str = "r",
                        secret: bytes = b"test-secret-0123456789abcdef-0123"):
    """(server, config): a started ``SignallingServer`` on 127.0.0.1 (the caller stops it)
    and ``config(name, **fields)``, a ``CallConfig`` for ``room`` with a join token, ICE on
    127.0.0.1 and the avatar cache in ``tmp_path / name`` (any field may be overridden)."""
    from net.call import CallConfig
    from net.signalling import SignallingServer
    from net.tokens import make_token

    server = SignallingServer(secret)
    port = await server.start()

    def config(name: str, **fields) -> CallConfig:
        fields.setdefault("avatar_cache_dir", tmp_path / name)
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room=room,
                          token=make_token(secret, room), name=name,
                          host_addresses=["127.0.0.1"], **fields)

    return server, config

