"""A hostile participant on a real call (real signalling server, real WebRTC peers on
loopback, the real ``.lca`` loader and template): every attack on the others through its
avatar is refused, the receiver keeps the default avatar and stays responsive, and no
refused file stays in the cache."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time

import numpy as np
import pytest

from avatar.lca import AvatarData, load_avatar_file, save_avatar_file
from avatar.template import load_template
from net.call import Call, CallConfig
from net.signalling import SignallingServer
from net.tokens import make_token
from tests.avatars import small_default

SECRET = b"hostile-test-secret-0123456789ab"


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """The shipped default avatar cut down to 3000 Gaussians (a valid, cheap avatar)."""
    return small_default({"test": "hostile"})


def _write(tmp_path, name: str, data: AvatarData) -> tuple:
    path = tmp_path / f"{name}.lca"
    save_avatar_file(path, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


async def _call_with(tmp_path, avatar_paths, then=None, max_cache_bytes=None):
    """Senders offering ``avatar_paths`` join one after another with a receiver; returns the
    receiver's verdict per sender and ``then(receiver, senders)``'s result."""
    server = SignallingServer(SECRET)
    port = await server.start()

    def config(name, **extra):
        return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room="r",
                          token=make_token(SECRET, "r"), name=name,
                          host_addresses=["127.0.0.1"], **extra)

    extra = {} if max_cache_bytes is None else {"max_avatar_cache_bytes": max_cache_bytes}
    receiver = Call(config("receiver", avatar_cache_dir=tmp_path / "cache", **extra))
    await receiver.join()
    senders, verdicts = [], []
    for i, path in enumerate(avatar_paths):
        sender = Call(config(f"sender{i}", avatar_path=path,
                             avatar_cache_dir=tmp_path / f"s{i}"))
        await sender.join()
        senders.append(sender)
        deadline = time.monotonic() + 30
        while True:
            remote = receiver.avatars.remotes.get(sender.id)
            if remote is not None and remote.status in ("ready", "refused"):
                break
            assert time.monotonic() < deadline, "avatar exchange did not finish"
            await asyncio.sleep(0.02)
        verdicts.append((remote.status, remote.reason))
    result = await then(receiver, senders) if then is not None else None
    for sender in senders:
        await sender.leave()
    await receiver.leave()
    await server.stop()
    return verdicts, result


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def _cached(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").glob("*"))


def test_an_avatar_of_gaussians_thirty_thousand_metres_wide_is_refused_before_rendering(
        tmp_path, honest):
    giant = dataclasses.replace(honest, local_scales=np.full_like(honest.local_scales, 30000.0),
                                opacities=np.ones_like(honest.opacities))
    path, _ = _write(tmp_path, "giant", giant)
    verdicts, _ = _run(_call_with(tmp_path, [path]))
    assert verdicts[0][0] == "refused" and "too big" in verdicts[0][1]
    assert _cached(tmp_path) == []  # the refused file is not kept


def test_an_avatar_too_costly_to_render_is_refused_though_each_gaussian_is_small(
        tmp_path, honest):
    # 0.1 m Gaussians (under the 0.16 m size limit) cover 848 m^2 at rest: 16x the default
    costly = dataclasses.replace(honest, local_scales=np.full_like(honest.local_scales, 0.1),
                                 opacities=np.ones_like(honest.opacities))
    path, _ = _write(tmp_path, "costly", costly)
    verdicts, _ = _run(_call_with(tmp_path, [path]))
    assert verdicts[0][0] == "refused" and "too costly to render" in verdicts[0][1]


def test_an_avatar_claiming_more_template_faces_than_the_template_has_is_refused(
        tmp_path, honest):
    faces = len(load_template().faces)
    liar = dataclasses.replace(
        honest, template={**honest.template, "faces": faces + 1000},
        binding_face=np.full_like(honest.binding_face, faces + 500))
    path, _ = _write(tmp_path, "liar", liar)
    assert len(load_avatar_file(path)) == 3000  # passes a check without the template...
    verdicts, _ = _run(_call_with(tmp_path, [path]))
    assert verdicts[0][0] == "refused" and "another template" in verdicts[0][1]


def test_an_avatar_with_no_gaussians_is_refused(tmp_path, honest):
    empty = dataclasses.replace(honest, **{k: getattr(honest, k)[:0] for k in (
        "binding_face", "binding_bary", "binding_offset", "local_quats", "local_scales",
        "opacities", "colors")})
    path, _ = _write(tmp_path, "empty", empty)
    verdicts, _ = _run(_call_with(tmp_path, [path]))
    assert verdicts[0][0] == "refused" and "no Gaussians" in verdicts[0][1]


def test_three_hundred_hellos_naming_a_cached_avatar_are_not_rehashed_or_revalidated(
        tmp_path, honest):
    path, _ = _write(tmp_path, "honest", honest)

    async def flood(receiver, senders):
        sender = senders[0]
        before = receiver.avatars.validations
        started = time.monotonic()
        for _ in range(300):
            sender.avatars.hello(receiver.id, "flooder")
        remote = receiver.avatars.remotes[sender.id]
        deadline = time.monotonic() + 10
        while remote._limit.dropped + 20 < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # until the 300 have crossed the channel
        return (receiver.avatars.validations - before, remote._limit.dropped, remote.status,
                time.monotonic() - started)

    verdicts, (revalidated, dropped, status, _) = _run(_call_with(tmp_path, [path], flood))
    assert verdicts[0][0] == "ready"
    assert revalidated == 0          # the same hash is never hashed or validated again
    assert dropped >= 270            # and most of the flood is dropped by the rate limit
    assert status == "ready"


def test_a_refused_hash_is_remembered_and_a_second_sender_of_it_is_refused_without_work(
        tmp_path, honest):
    giant = dataclasses.replace(honest, local_scales=np.full_like(honest.local_scales, 30000.0))
    path, _ = _write(tmp_path, "giant", giant)

    async def count(receiver, senders):
        return receiver.avatars.validations

    verdicts, validations = _run(_call_with(tmp_path, [path, path], count))
    assert [v[0] for v in verdicts] == ["refused", "refused"]
    assert validations == 1


def test_the_cache_keeps_to_its_size_limit_by_evicting_the_least_recently_used(
        tmp_path, honest):
    paths = []
    for i in range(3):
        variant = dataclasses.replace(honest, name=f"v{i}",
                                      provenance={"test": "hostile", "variant": i})
        paths.append(_write(tmp_path, f"v{i}", variant))
    size = paths[0][0].stat().st_size
    verdicts, _ = _run(_call_with(tmp_path, [p for p, _ in paths],
                                  max_cache_bytes=int(size * 2.5)))
    assert [v[0] for v in verdicts] == ["ready"] * 3
    assert _cached(tmp_path) == sorted(f"{sha}.lca" for _, sha in paths[1:])
