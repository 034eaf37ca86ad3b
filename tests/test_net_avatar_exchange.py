"""Avatar exchange: a receiver fetches the sender's own .lca over the real control channel,
verifies, caches and validates it (with avatar.lca's real loader); bad, oversized and lying
avatars are refused and the default avatar stays."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import numpy as np
import pytest

from avatar.lca import AvatarData, load_avatar_file, save_avatar_file
from net.avatar_exchange import AvatarExchange
from net.call import Call, CallConfig
from net.signalling import SignallingServer
from net.tokens import make_token
from tests.avatars import small_default

SECRET = b"avatar-test-secret-0123456789abc"


@pytest.fixture(scope="module")
def small_avatar(tmp_path_factory):
    """A real .lca: the shipped default avatar cut down to 3000 Gaussians."""
    small = small_default({"test": "subset"})
    path = tmp_path_factory.mktemp("avatars") / "small.lca"
    save_avatar_file(path, small)
    return path


async def _exchange(tmp_path, avatar_path, **receiver_config):
    server = SignallingServer(SECRET)
    port = await server.start()
    got = []

    def config(name, **extra):
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room="r",
                          token=make_token(SECRET, "r"), name=name,
                          host_addresses=["127.0.0.1"], **extra)

    sender = Call(config("sender", avatar_path=avatar_path, avatar_cache_dir=tmp_path / "s"))
    receivers = []
    await sender.join()
    for round_ in range(2):  # the second receiver shares the first one's cache
        receiver = Call(config(f"receiver{round_}", avatar_cache_dir=tmp_path / "cache",
                               **receiver_config),
                        on_avatar=lambda rid, avatar: got.append(avatar))
        await receiver.join()
        deadline = time.monotonic() + 20
        while True:
            remote = receiver.avatars.remotes.get(sender.id)
            if remote is not None and remote.status in ("ready", "refused"):
                break
            assert time.monotonic() < deadline, "avatar exchange did not finish"
            await asyncio.sleep(0.02)
        receivers.append((remote.status, remote.reason, sender.avatars.served))
        await receiver.leave()
    await sender.leave()
    await server.stop()
    return receivers, got


def test_the_receiver_fetches_verifies_caches_and_validates_the_senders_avatar(tmp_path,
                                                                               small_avatar):
    results, got = asyncio.run(asyncio.wait_for(_exchange(tmp_path, small_avatar), 60))
    assert [r[0] for r in results] == ["ready", "ready"]
    assert results[0][2] == 1 and results[1][2] == 1  # the second time came from the cache
    assert len(got) == 2 and all(isinstance(a, AvatarData) and len(a) == 3000 for a in got)
    sha = hashlib.sha256(small_avatar.read_bytes()).hexdigest()
    assert (tmp_path / "cache" / f"{sha}.lca").read_bytes() == small_avatar.read_bytes()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_an_avatar_with_correctives_crosses_the_call_whole(tmp_path, small_avatar):
    from avatar.template import load_template
    from tests.avatars import with_correctives

    template = load_template()
    data = with_correctives(load_avatar_file(small_avatar, template), template, seed=3)
    path = tmp_path / "corrected.lca"
    save_avatar_file(path, data)
    sent = load_avatar_file(path, template)
    results, got = asyncio.run(asyncio.wait_for(_exchange(tmp_path, path), 60))
    assert [r[0] for r in results] == ["ready", "ready"]
    for received in got:
        assert received.corrective_bones == sent.corrective_bones
        np.testing.assert_array_equal(received.corrective_index, sent.corrective_index)
        np.testing.assert_array_equal(received.corrective_basis, sent.corrective_basis)


def test_a_shaped_avatar_crosses_the_call_whole(tmp_path, small_avatar):
    pytest.importorskip("anny")
    from avatar.shape import anny_shape
    from avatar.template import load_template

    template = load_template()
    shape = anny_shape({"weight": 0.8, "height": 0.3}, template=template)
    data = load_avatar_file(small_avatar, template)
    data.shape = shape
    path = tmp_path / "shaped.lca"
    save_avatar_file(path, data)
    results, got = asyncio.run(asyncio.wait_for(_exchange(tmp_path, path), 60))
    assert [r[0] for r in results] == ["ready", "ready"]
    for received in got:
        assert received.shape.phenotype == shape.phenotype
        np.testing.assert_array_equal(received.shape.vertex_delta, shape.vertex_delta)
        np.testing.assert_array_equal(received.shape.bone_head_delta, shape.bone_head_delta)


def test_an_invalid_avatar_is_refused_and_the_default_stays(tmp_path):
    bogus = tmp_path / "bogus.lca"
    bogus.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}" + bytes(5000))
    results, got = asyncio.run(asyncio.wait_for(_exchange(tmp_path, bogus), 60))
    assert results[0][0] == "refused" and "not a valid avatar file" in results[0][1]
    assert got == []


def test_an_avatar_over_the_size_limit_is_never_fetched(tmp_path, small_avatar):
    results, got = asyncio.run(asyncio.wait_for(
        _exchange(tmp_path, small_avatar, max_avatar_bytes=10_000), 60))
    assert results[0][0] == "refused" and "limit" in results[0][1]
    assert results[0][2] == 0 and got == []


# -- hostile senders (two exchanges wired back to back, in memory: the transport was tested
#    for real above; here the point is what a lying peer can make the receiver do) ----------
def _wired(tmp_path, payload: bytes, max_bytes=1 << 20):
    own = tmp_path / "own.lca"
    own.write_bytes(payload)
    receiver_ready = []
    receiver = AvatarExchange(None, tmp_path / "cache", send=lambda rid, m: None,
                              validate=lambda p: p.read_bytes(), max_bytes=max_bytes,
                              on_ready=lambda rid, a: receiver_ready.append(a))
    return own, receiver, receiver_ready


def test_lying_and_malformed_senders_are_refused(tmp_path):
    async def main():
        payload = b"x" * 50_000
        own, receiver, ready = _wired(tmp_path, payload)
        sha = hashlib.sha256(payload).hexdigest()
        # announces 1000 bytes, sends 50,000
        receiver.handle("p1", json.dumps({"type": "hello",
                                          "avatar": {"sha256": sha, "size": 1000}}))
        receiver.handle("p1", b"\x01" + payload[:16384])
        assert receiver.remotes["p1"].status == "refused"
        assert "more than" in receiver.remotes["p1"].reason
        # right size, wrong content
        receiver.handle("p2", json.dumps({"type": "hello",
                                          "avatar": {"sha256": sha, "size": 50_000}}))
        receiver.handle("p2", b"\x01" + b"y" * 50_000)
        receiver.handle("p2", json.dumps({"type": "avatar-end", "sha256": sha}))
        assert (receiver.remotes["p2"].status == "refused"
                and "hash" in receiver.remotes["p2"].reason)
        # malformed offers and junk messages
        for junk in ({"sha256": "zz", "size": 10}, {"sha256": sha, "size": -1},
                     {"sha256": sha, "size": True}, "nope"):
            receiver.handle("p3", json.dumps({"type": "hello", "avatar": junk}))
            assert receiver.remotes["p3"].status == "refused"
        receiver.handle("p4", b"\x01unsolicited")       # ignored: nothing was asked for
        receiver.handle("p4", "{not json")
        receiver.handle("p4", json.dumps([1, 2]))
        assert receiver.remotes["p4"].status == "default"
        # and an honest one goes through
        receiver.handle("p5", json.dumps({"type": "hello",
                                          "avatar": {"sha256": sha, "size": 50_000}}))
        for i in range(0, 50_000, 16384):
            receiver.handle("p5", b"\x01" + payload[i:i + 16384])
        receiver.handle("p5", json.dumps({"type": "avatar-end", "sha256": sha}))
        await asyncio.sleep(0.2)
        assert receiver.remotes["p5"].status == "ready" and ready == [payload]
        assert not list((tmp_path / "cache").glob("*.part"))
        await receiver.close()

    asyncio.run(main())


def test_on_a_channel_everyone_hears_one_stream_serves_everyone_who_asked_meanwhile(
        tmp_path, small_avatar):
    """``send_group`` (as through Janus): two gets that come together are answered by one
    stream addressed to both; a get during a stream waits for the next one; each stream is
    the whole file, whose hash the end message names."""
    sha = hashlib.sha256(small_avatar.read_bytes()).hexdigest()
    sent: list[tuple[tuple, object]] = []

    checks = []

    def backlog(remote_id):  # the channel is full for a moment after the first chunk
        checks.append(remote_id)
        return 1 << 30 if 2 <= len(checks) <= 20 else 0

    async def run():
        exchange = AvatarExchange(small_avatar, tmp_path / "cache", send=lambda r, m: None,
                                  backlog=backlog,
                                  send_group=lambda ids, m: sent.append((tuple(ids), m)))
        get = json.dumps({"type": "avatar-get", "sha256": sha})
        exchange.handle("b", get)
        exchange.handle("a", get)
        asked = False
        while not any(isinstance(m, str) and "avatar-end" in m for _, m in sent):
            await asyncio.sleep(0.001)
            if sent and not asked:  # the first stream has begun: c asks now
                exchange.handle("c", get)
                asked = True
        while exchange._serving:
            await asyncio.sleep(0.01)
        return exchange.rounds, exchange.served

    rounds, served = asyncio.run(asyncio.wait_for(run(), 30))
    assert (rounds, served) == (2, 3)
    groups = list(dict.fromkeys(ids for ids, _ in sent))
    assert groups == [("a", "b"), ("c",)]
    for group in groups:
        messages = [m for ids, m in sent if ids == group]
        body = b"".join(m[1:] for m in messages if isinstance(m, bytes))
        assert body == small_avatar.read_bytes()
        assert json.loads(messages[-1]) == {"type": "avatar-end", "sha256": sha}


def test_an_avatar_is_streamed_at_its_pace_so_the_codes_beside_it_are_not_held_up(tmp_path):
    """The owner never runs ahead of send_rate_bytes_s (after SEND_BURST_BYTES): on the
    channels' shared SCTP queue, an unpaced 11 MB avatar held the codes 0.2-2.4 s at a call's
    start (bench/bench_latency.py)."""
    from net.avatar_exchange import CHUNK_BYTES, SEND_BURST_BYTES

    own = tmp_path / "own.lca"
    own.write_bytes(np.random.default_rng(0).bytes(1_000_000))  # sent as bytes: not parsed
    sent: list[tuple[float, int]] = []
    exchange = AvatarExchange(own, tmp_path / "cache",
                              send=lambda remote_id, message: None)
    exchange.send_rate_bytes_s = 2_000_000

    async def stream():
        start = time.monotonic()
        await exchange._stream(["r"], lambda message: isinstance(message, bytes) and sent.append(
            (time.monotonic() - start, len(message) - 1)))  # a chunk after its 1-byte tag

    asyncio.run(stream())
    streamed = np.cumsum([n for _, n in sent])
    times = np.array([t for t, _ in sent])
    assert streamed[-1] == 1_000_000
    # never more than the burst and a chunk ahead of the rate
    assert np.all(streamed <= SEND_BURST_BYTES + CHUNK_BYTES + 2_000_000 * times + 1)
    assert times[-1] >= (1_000_000 - SEND_BURST_BYTES - CHUNK_BYTES) / 2_000_000
    assert times[-1] < 1.5  # and not much slower (0.47 s at 2 MB/s)
