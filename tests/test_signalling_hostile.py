"""The signalling server against hostile clients, over real sockets on loopback: huge numbers
and deep JSON, forged names, room squatting (one identity per token, revocation, the idle
rule), /health for strangers, wss:// with a certificate, and a server that never answers
the handshake."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time

import aiohttp
import pytest

from net.signal_client import SignallingClient, SignallingError
from net.signalling import ServerLimits, SignallingServer
from net.tokens import make_token

SECRET = b"0123456789abcdef0123456789abcdef"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _server(revoked_path=None, **limits):
    server = SignallingServer(SECRET, ServerLimits(**limits), revoked_path=revoked_path)
    port = await server.start("127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{port}/ws"


async def _until_refused(client: SignallingClient) -> str:
    with pytest.raises(SignallingError) as err:
        while True:
            await client.receive()
    return err.value.code


def _no_tracebacks(caplog):
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_huge_number_or_deep_json_is_refused_with_a_message_and_no_traceback(caplog):
    caplog.set_level(logging.INFO)

    async def main():
        server, url = await _server()
        codes = []
        for raw in ('{"type": "signal", "to": "x", "data": ' + "9" * 5000 + "}",
                    '{"type": "signal", "to": "x", "data": ' + "[" * 30_000 + "]" * 30_000
                    + "}"):
            alice = SignallingClient(url, "r", make_token(SECRET, "r"), "alice")
            await alice.join()
            await alice.send_raw(raw)
            codes.append(await _until_refused(alice))
            await alice.close()
        # and the server goes on serving
        bob = SignallingClient(url, "r", make_token(SECRET, "r"), "bob")
        await bob.join()
        await bob.close()
        await server.stop()
        return codes

    assert run(main()) == ["bad-message", "bad-message"]
    assert _no_tracebacks(caplog) == []


def test_names_with_newlines_and_escape_codes_reach_logs_and_peers_printable(caplog):
    caplog.set_level(logging.INFO, logger="splatcall.signalling")

    async def main():
        server, url = await _server()
        alice = SignallingClient(url, "r", make_token(SECRET, "r"), "alice")
        await alice.join()
        mallory = SignallingClient(url, "r", make_token(SECRET, "r"),
                                   "m\n2026 admin joined\x1b[2J\x1b]0;owned\x07")
        await mallory.join()
        event = await alice.receive()
        await mallory.close()
        await alice.close()
        await server.stop()
        return event

    event = run(main())
    assert event["type"] == "peer-joined"
    assert "\n" not in event["name"] and "\x1b" not in event["name"]
    assert event["name"].startswith("m?2026 admin joined?[2J")
    logged = "".join(r.getMessage() for r in caplog.records)
    assert "\x1b" not in logged and "\n" not in logged


def test_health_tells_strangers_nothing_but_ok():
    async def main():
        server, url = await _server()
        alice = SignallingClient(url, "r", make_token(SECRET, "r"), "alice")
        await alice.join()
        base = url.replace("ws://", "http://").replace("/ws", "/health")
        async with aiohttp.ClientSession() as session:
            async with session.get(base) as response:
                stranger = await response.json()
            async with session.get(base, params={"token": make_token(SECRET, "r")}) as response:
                wrong_room = await response.json()
            async with session.get(base, params={"token": make_token(SECRET, "health")}) as r:
                operator = await r.json()
        await alice.close()
        await server.stop()
        return stranger, wrong_room, operator

    stranger, wrong_room, operator = run(main())
    assert stranger == {"status": "ok"} and wrong_room == {"status": "ok"}
    assert operator == {"status": "ok", "rooms": 1, "participants": 1}


def test_six_sockets_with_one_token_hold_one_place_not_the_room():
    async def main():
        server, url = await _server(max_participants=3)
        token = make_token(SECRET, "r", identity="squatter")
        squatters = []
        for _ in range(6):
            squatter = SignallingClient(url, "r", token, "squatter")
            await squatter.join()
            squatters.append(squatter)
        replaced = [await _until_refused(s) for s in squatters[:-1]]
        others = []
        for name in ("alice", "bob"):  # the room still has room for two more
            other = SignallingClient(url, "r", make_token(SECRET, "r"), name)
            await other.join()
            others.append(other)
        count = len(server.rooms["r"])
        for client in squatters + others:
            await client.close()
        await server.stop()
        return replaced, count

    replaced, count = run(main())
    assert replaced == ["replaced"] * 5 and count == 3


def test_a_revoked_identity_is_dropped_and_shut_out(tmp_path):
    revoked = tmp_path / "revoked.txt"

    async def main():
        server, url = await _server(revoked_path=revoked)
        token = make_token(SECRET, "r", identity="eve")
        eve = SignallingClient(url, "r", token, "eve")
        await eve.join()
        revoked.write_text("# shut out\neve\n")
        started = time.monotonic()
        dropped = await _until_refused(eve)
        took = time.monotonic() - started
        await eve.close()
        again = SignallingClient(url, "r", token, "eve")
        with pytest.raises(SignallingError) as err:
            await again.join()
        await again.close()
        await server.stop()
        return dropped, took, err.value.code

    dropped, took, code = run(main())
    assert dropped == "revoked-token" and took < 3.0 and code == "revoked-token"


def test_members_that_never_signal_are_dropped_but_one_waiting_alone_is_not():
    async def main():
        server, url = await _server(idle_s=0.6)
        alone = SignallingClient(url, "lonely", make_token(SECRET, "lonely"), "alone")
        await alone.join()
        a = SignallingClient(url, "r", make_token(SECRET, "r"), "a")
        b = SignallingClient(url, "r", make_token(SECRET, "r"), "b")
        await a.join()
        await b.join()
        await a.receive()  # b joined
        codes = [await _until_refused(a), await _until_refused(b)]
        lonely_still_there = len(server.rooms.get("lonely", {}))
        for client in (alone, a, b):
            await client.close()
        await server.stop()
        return codes, lonely_still_there

    codes, lonely = run(main())
    assert codes == ["idle", "idle"] and lonely == 1


def test_members_that_signal_but_never_connect_are_dropped_and_connected_ones_stay():
    async def main():
        server, url = await _server(idle_s=0.6)
        a = SignallingClient(url, "r", make_token(SECRET, "r"), "a")
        b = SignallingClient(url, "r", make_token(SECRET, "r"), "b")
        await a.join()
        await b.join()
        await b.send(a.id, {"offer": 1})
        await a.receive()  # b joined
        await a.receive()  # b's offer
        await a.send(b.id, {"answer": 1})
        await a.report_connected(b.id)  # a reports the connection up; b never does
        code = await _until_refused(b)
        await asyncio.sleep(1.0)
        count = len(server.rooms["r"])
        await a.close()
        await server.stop()
        return code, count

    assert run(main()) == ("idle", 1)


def test_a_real_call_reports_its_connection_and_stays_past_the_idle_limit(tmp_path):
    from net.call import Call, CallConfig

    async def main():
        server, url = await _server(idle_s=1.0)
        calls = [Call(CallConfig(url=url, room="r", token=make_token(SECRET, "r"), name=n,
                                 host_addresses=["127.0.0.1"],
                                 avatar_cache_dir=tmp_path / n)) for n in ("a", "b")]
        for call in calls:
            await call.join()
        await asyncio.sleep(3.0)  # three idle limits
        count = len(server.rooms.get("r", {}))
        for call in calls:
            await call.leave()
        await server.stop()
        return count

    assert run(main()) == 2


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_wss_with_a_certificate_admits_a_client_that_trusts_it(tmp_path):
    cert, key = _self_signed(tmp_path)

    async def main():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        server = SignallingServer(SECRET)
        port = await server.start("127.0.0.1", 0, ssl_context=server_ctx)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False  # the certificate names localhost, we dial 127.0.0.1
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=client_ctx) as ws:
                await ws.send_json({"type": "join", "room": "r", "name": "tls",
                                    "token": make_token(SECRET, "r")})
                welcome = json.loads((await ws.receive()).data)
            with pytest.raises(aiohttp.ClientError):  # plain ws:// to a TLS port
                await session.ws_connect(f"ws://127.0.0.1:{port}/ws")
        await server.stop()
        return welcome

    assert run(main())["type"] == "welcome"


def test_a_server_that_never_answers_the_handshake_is_a_clear_error_not_a_hang():
    async def main():
        accepted = []
        listener = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        client = SignallingClient(f"ws://127.0.0.1:{port}/ws", "r", "t", connect_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(SignallingError) as err:
            await client.join()
        took = time.monotonic() - started
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
        return str(err.value), took

    message, took = run(main())
    assert "did not answer the websocket handshake" in message and took < 3.0
