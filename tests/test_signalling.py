"""The signalling server and client over real sockets on loopback: rooms, relaying, and a
clear refusal for each way in which a client can be wrong or hostile."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from net.signal_client import SignallingClient, SignallingError
from net.signalling import ServerLimits, SignallingServer
from net.tokens import TokenError, check_token, load_or_create_secret, make_token

SECRET = b"0123456789abcdef0123456789abcdef"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _server(**limits) -> tuple[SignallingServer, str]:
    server = SignallingServer(SECRET, ServerLimits(**limits))
    port = await server.start("127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{port}/ws"


def _client(url: str, room="r1", name="", token=None) -> SignallingClient:
    return SignallingClient(url, room, token or make_token(SECRET, room), name)


# -- tokens ---------------------------------------------------------------------------------
def test_tokens_admit_only_their_room_until_they_expire():
    token = make_token(SECRET, "kitchen", ttl_s=60, now=1000)
    check_token(SECRET, token, "kitchen", now=1059)
    with pytest.raises(TokenError) as err:
        check_token(SECRET, token, "kitchen", now=1061)
    assert err.value.reason == "expired"
    with pytest.raises(TokenError) as err:
        check_token(SECRET, token, "garden", now=1000)
    assert err.value.reason == "wrong-room"
    with pytest.raises(TokenError) as err:
        check_token(b"another secret 0123456789", token, "kitchen", now=1000)
    assert err.value.reason == "invalid"
    payload, sig = token.split(".")
    forged = make_token(SECRET, "garden", now=1000).split(".")[0] + "." + sig
    for bad in (forged, "", "a.b.c", "!!!.???", 42, None, "x" * 5000):
        with pytest.raises(TokenError):
            check_token(SECRET, bad, "kitchen", now=1000)


def test_secret_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "conf" / "signalling.key"
    first = load_or_create_secret(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_secret(path) == first and len(first) >= 32


# -- rooms ----------------------------------------------------------------------------------
def test_two_clients_meet_relay_and_see_each_other_leave():
    async def main():
        server, url = await _server()
        alice, bob = _client(url, name="alice"), _client(url, name="bob")
        assert await alice.join() == []
        peers = await bob.join()
        assert [(p.id, p.name) for p in peers] == [(alice.id, "alice")]
        joined = await alice.receive()
        assert joined == {"type": "peer-joined", "id": bob.id, "name": "bob"}
        await bob.send(alice.id, {"sdp": "hello"})
        assert await alice.receive() == {"type": "signal", "from": bob.id,
                                         "data": {"sdp": "hello"}}
        await alice.send("nobody", {"x": 1})
        error = await alice.receive()
        assert error["code"] == "unknown-peer"  # not fatal
        await bob.close()
        assert await alice.receive() == {"type": "peer-left", "id": bob.id}
        # another room is separate
        carol = _client(url, room="r2")
        assert await carol.join() == []
        assert set(server.rooms) == {"r1", "r2"}
        await carol.close()
        await alice.close()
        await asyncio.sleep(0.1)
        assert server.rooms == {}
        await server.stop()

    run(main())


def test_a_client_that_vanishes_leaves_its_room():
    async def main():
        server, url = await _server(heartbeat_s=0.4)
        alice = _client(url)
        await alice.join()
        # A raw websocket that joins, then stops answering pings (its reader never runs
        # again: like a laptop whose lid closed).
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url, autoping=False)
        await ws.send_json({"type": "join", "room": "r1", "token": make_token(SECRET, "r1")})
        welcome = json.loads((await ws.receive()).data)
        joined = await alice.receive()
        assert joined["id"] == welcome["id"]
        start = time.monotonic()
        left = await asyncio.wait_for(alice.receive(), 5)
        assert left == {"type": "peer-left", "id": welcome["id"]}
        assert time.monotonic() - start < 2.0
        await session.close()
        await alice.close()
        await server.stop()

    run(main())


# -- refusals -------------------------------------------------------------------------------
def _refusal(url: str, **client) -> SignallingError:
    async def attempt():
        c = _client(url, **client)
        try:
            await c.join()
        finally:
            await c.close()

    with pytest.raises(SignallingError) as err:
        run(attempt())
    return err.value


def test_wrong_expired_and_other_room_tokens_are_refused():
    async def scenario():
        server, url = await _server()
        results = {}
        for label, kwargs in {
            "forged": {"token": make_token(b"not the server's secret!!", "r1")},
            "expired": {"token": make_token(SECRET, "r1", ttl_s=-5)},
            "other-room": {"token": make_token(SECRET, "r2")},
            "garbage": {"token": "not-a-token"},
        }.items():
            c = _client(url, **kwargs)
            try:
                await c.join()
                results[label] = None
            except SignallingError as exc:
                results[label] = (exc.code, str(exc))
            finally:
                await c.close()
        assert server.rooms == {}
        await server.stop()
        return results

    results = run(scenario())
    assert results["forged"][0] == "bad-token" and "signature" in results["forged"][1]
    assert results["expired"][0] == "expired-token" and "expired" in results["expired"][1]
    assert results["other-room"][0] == "wrong-room"
    assert results["garbage"][0] == "bad-token"


def test_a_full_room_refuses_the_next_participant():
    async def main():
        server, url = await _server(max_participants=2)
        members = [_client(url) for _ in range(2)]
        for m in members:
            await m.join()
        extra = _client(url)
        with pytest.raises(SignallingError) as err:
            await extra.join()
        assert err.value.code == "room-full" and "full" in str(err.value)
        await extra.close()
        # once someone leaves, there is room again
        await members[0].close()
        await asyncio.sleep(0.1)
        again = _client(url)
        await again.join()
        for c in (members[1], again):
            await c.close()
        await server.stop()

    run(main())


def test_oversized_messages_are_refused():
    async def main():
        server, url = await _server(max_message_bytes=1000)
        codes = []
        for size in (2000, 100_000):  # above our limit; above aiohttp's hard limit too
            alice, bob = _client(url), _client(url)
            await alice.join()
            await bob.join()
            await bob.send(alice.id, {"blob": "x" * size})
            with pytest.raises(SignallingError) as err:
                while True:
                    await bob.receive()
            codes.append(err.value.code)
            await alice.close()
            await bob.close()
        await server.stop()
        return codes

    assert run(main()) == ["too-large", "too-large"]


def test_a_flooding_client_is_cut_off_and_a_silent_one_times_out():
    async def main():
        server, url = await _server(messages_per_s=10, message_burst=20, join_timeout_s=0.3)
        alice, flood = _client(url), _client(url)
        await alice.join()
        await flood.join()
        with pytest.raises(SignallingError) as err:
            for _ in range(200):
                await flood.send(alice.id, {"x": 1})
                await asyncio.sleep(0)
            while True:
                await flood.receive()
        assert err.value.code == "rate-limited"
        await flood.close()

        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url)
        message = json.loads((await asyncio.wait_for(ws.receive(), 3)).data)
        assert message["code"] == "join-timeout"
        await session.close()

        # a malformed first message
        bad = _client(url)
        bad._session = aiohttp.ClientSession()
        bad._ws = await bad._session.ws_connect(url)
        await bad.send_raw("this is not json")
        with pytest.raises(SignallingError) as err:
            await bad.receive()
        assert err.value.code == "bad-message"
        await bad.close()
        await alice.close()
        await server.stop()

    run(main())


def test_unreachable_server_is_a_clear_error():
    err = _refusal("ws://127.0.0.1:9/ws")
    assert err.code == "unreachable" and "cannot reach" in str(err)
