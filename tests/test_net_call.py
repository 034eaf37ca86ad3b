"""Two real aiortc peers in one process on loopback: a hostile peer's garbage on the codes
and control channels is counted and dropped, and the call carries on."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from avatar.codes import Codes
from net import wire
from net.call import Call, CallConfig
from net.signalling import SignallingServer
from net.tokens import make_token

SECRET = b"call-test-secret-0123456789abcdef"


async def _hostile(tmp_path):
    server = SignallingServer(SECRET)
    port = await server.start()

    def config(name):
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room="r",
                          token=make_token(SECRET, "r"), name=name,
                          host_addresses=["127.0.0.1"], avatar_cache_dir=tmp_path / name)

    victim, attacker = Call(config("victim")), Call(config("attacker"))
    await victim.join()
    await attacker.join()
    deadline = time.monotonic() + 10
    while not (attacker.remotes and all(r.peer.codes_open.is_set() and r.peer.control_open.is_set()
                                        for r in attacker.remotes.values())):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    peer = attacker.remotes[victim.id].peer
    rng = np.random.default_rng(0)
    good = wire.encode(Codes(t=time.monotonic(), seq=1))
    garbage = [b"", b"SW", rng.bytes(384), good[:-1], good + b"x", b"SW\x01\x7f" + bytes(380),
               good[:8] + b"\xff" * 8 + good[16:]]
    for packet in garbage:
        peer.codes_channel.send(packet)
    peer.codes_channel.send("text on the codes channel")
    for junk in (b"\x01" + rng.bytes(100), "not json", '{"type": "hello", "avatar": 5}',
                 '{"type": "avatar-get", "sha256": "00"}', "[]"):
        peer.send_control(junk)
    for seq in range(10, 40):
        attacker.send_codes(Codes(t=time.monotonic(), seq=seq))
        await asyncio.sleep(1 / 60)
    await asyncio.sleep(0.3)
    remote = victim.remotes[attacker.id]
    result = (remote.decoder.malformed, remote.stats.unique, victim.poses(),
              victim.avatars.remotes[attacker.id].status)
    await attacker.leave()
    await victim.leave()
    await server.stop()
    return result


def test_garbage_from_a_peer_is_counted_and_the_call_goes_on(tmp_path):
    malformed, unique, poses, avatar_status = asyncio.run(asyncio.wait_for(_hostile(tmp_path), 30))
    assert malformed == 8  # seven bad packets and one text message
    assert unique == 30
    (pose,) = poses.values()
    assert np.all(np.isfinite(pose.body))
    assert avatar_status == "refused"  # the malformed avatar offer; the default avatar stays
