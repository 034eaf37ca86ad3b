"""`call --avatar stock:NAME`: a stock avatar is written once as a .lca (it has no file of its
own) and offered like any other avatar, crossing a real call on loopback whole; an unknown
name is one error line."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.cli import main


def _call(tmp_path, *extra) -> list:
    return ["call", "--room", "r", "--secret-file", str(tmp_path / "k"), "--audio", "none",
            "--server", "ws://127.0.0.1:9/ws", "--duration", "1", "--no-window", *extra]


def test_an_unknown_stock_name_is_one_error_line_naming_the_stock(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(_call(tmp_path, "--avatar", "stock:nobody")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no stock avatar 'nobody'" in err[-1], err
    assert "bjorn" in err[-1]
    assert not (tmp_path / "cache" / "splatcall" / "stock").exists()


def test_call_accepts_a_stock_avatar_and_writes_its_file_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Past the avatar's checks, the call fails only where the server is unreachable.
    assert main(_call(tmp_path, "--avatar", "stock:bjorn")) == 1
    assert "cannot reach the signalling server" in capsys.readouterr().err
    files = list((tmp_path / "cache" / "splatcall" / "stock").glob("*"))
    assert [f.name.split("-")[0] for f in files] == ["bjorn"] and files[0].suffix == ".lca"
    written = files[0].stat().st_mtime_ns
    from app.stock_avatar import stock_avatar_file

    assert stock_avatar_file("stock:bjorn") == files[0]
    assert files[0].stat().st_mtime_ns == written


def test_a_stock_avatar_crosses_the_call_as_its_lca(tmp_path):
    from app.stock_avatar import stock_avatar_file
    from avatar.avatar import load_avatar
    from avatar.template import load_template
    from net.call import Call
    from tests.calls import loopback_room

    template = load_template()
    stock = load_avatar("stock:dana", template).data
    path = stock_avatar_file("stock:dana", tmp_path / "stock")
    got = []

    async def exchange():
        server, config = await loopback_room(tmp_path)
        sender = Call(config("sender", avatar_path=path))
        receiver = Call(config("receiver"), on_avatar=lambda rid, data: got.append(data))
        await sender.join()
        await receiver.join()
        deadline = time.monotonic() + 60
        while not got:
            remote = receiver.avatars.remotes.get(sender.id)
            assert remote is None or remote.status != "refused", remote.reason
            assert time.monotonic() < deadline, "the avatar exchange did not finish"
            await asyncio.sleep(0.05)
        await receiver.leave()
        await sender.leave()
        await server.stop()

    asyncio.run(asyncio.wait_for(exchange(), 90))
    received = got[0]
    assert received.name == "dana" and len(received) == len(stock)
    assert received.shape.phenotype == stock.shape.phenotype
    # float16 in the file: the colours as the stock avatar made them, within its rounding
    np.testing.assert_allclose(np.asarray(received.colors, np.float32),
                               np.asarray(stock.colors, np.float32), atol=2e-3, rtol=2e-3)
    assert not np.allclose(np.asarray(received.colors, np.float32),
                           np.asarray(load_avatar("default", template).data.colors,
                                      np.float32), atol=0.05)


@pytest.mark.parametrize("source", ["stock:", "stock:../x"])
def test_a_malformed_stock_name_is_an_error(tmp_path, source):
    from app.stock_avatar import stock_avatar_file
    from avatar.stock import StockError

    with pytest.raises(StockError, match="no stock avatar"):
        stock_avatar_file(source, tmp_path)
