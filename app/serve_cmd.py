"""``main.py serve``: run the signalling server, or mint a join token for one of its rooms."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the signalling server that call participants meet through",
        description=(
            "Run the websocket signalling server (rooms, signed expiring join tokens, "
            "participant/size/rate limits). Participants connect to ws://HOST:PORT/ws. "
            "With --make-token ROOM, print a join token for ROOM and exit instead."),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    parser.add_argument("--secret-file", default=None,
                        help="file holding the secret that signs join tokens (created if "
                             "missing; default ~/.config/splatcall/signalling.key)")
    parser.add_argument("--max-participants", type=int, default=6,
                        help="participants per room (default 6: a full mesh beyond that "
                             "needs an SFU)")
    parser.add_argument("--max-message-kb", type=int, default=64,
                        help="largest signalling message accepted, in KiB (default 64)")
    parser.add_argument("--make-token", metavar="ROOM", default=None,
                        help="print a join token for ROOM and exit")
    parser.add_argument("--token-ttl", type=float, default=3600.0,
                        help="lifetime of a token made with --make-token, seconds (default an "
                             "hour)")
    parser.add_argument("--identity", metavar="NAME", default=None,
                        help="with --make-token: who the token admits (default: a random "
                             "identity); one connection per identity, revocable with --revoke")
    parser.add_argument("--revoked-file", metavar="FILE", default=None,
                        help="identities shut out, one a line; re-read when it changes, and "
                             "members it names are dropped (default: none)")
    parser.add_argument("--revoke", metavar="IDENTITY", default=None,
                        help="add IDENTITY to --revoked-file and exit")
    parser.add_argument("--cert", metavar="PEM", default=None,
                        help="TLS certificate: serve wss:// (needed whenever the server is "
                             "reached over an untrusted network)")
    parser.add_argument("--key", metavar="PEM", default=None,
                        help="the private key of --cert")
    parser.add_argument("-v", "--verbose", action="store_true", help="log joins and refusals")
    parser.set_defaults(func=run)


def _secret(path_arg: str | None) -> bytes:
    from app.cli import UserError
    from net.tokens import default_secret_path, load_or_create_secret

    path = path_arg or default_secret_path()
    try:
        return load_or_create_secret(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot use the secret file {path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from app.cli import UserError
    from net.signalling import ServerLimits, SignallingServer
    from net.tokens import make_token

    if args.revoke is not None:
        if not args.revoked_file:
            raise UserError("--revoke needs --revoked-file")
        if not args.revoke.strip() or "\n" in args.revoke or len(args.revoke) > 64:
            raise UserError("an identity has 1 to 64 characters on one line")
        try:
            with open(args.revoked_file, "a", encoding="utf-8") as handle:
                handle.write(args.revoke.strip() + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {args.revoked_file}: {exc.strerror}") from None
        return 0
    if (args.cert is None) != (args.key is None):
        raise UserError("--cert and --key go together")
    secret = _secret(args.secret_file)
    if args.make_token is not None:
        if not args.make_token or len(args.make_token) > 64:
            raise UserError("a room name has 1 to 64 characters")
        if args.identity is not None and not 0 < len(args.identity) <= 64:
            raise UserError("an identity has 1 to 64 characters")
        print(make_token(secret, args.make_token, args.token_ttl, identity=args.identity))
        return 0
    ssl_context = None
    if args.cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot use --cert {args.cert} / --key {args.key}: {exc}") from None
    if not 1 <= args.port <= 65535:
        raise UserError(f"port {args.port} is not in 1..65535")
    if args.max_participants < 2:
        raise UserError("a room needs room for at least 2 participants")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    limits = ServerLimits(max_participants=args.max_participants,
                          max_message_bytes=args.max_message_kb * 1024)

    async def serve() -> None:
        server = SignallingServer(secret, limits, revoked_path=args.revoked_file)
        try:
            port = await server.start(args.host, args.port, ssl_context=ssl_context)
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        print(f"signalling server on {'wss' if ssl_context else 'ws'}://{args.host}:{port}/ws "
              f"(up to {limits.max_participants} per room); Ctrl-C stops it", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        print("signalling server stopped", file=sys.stderr)

    asyncio.run(serve())
    return 0
