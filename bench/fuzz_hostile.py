"""Fuzz what a hostile peer can hand a receiver: mutated ``.lca`` avatar files (headers,
metadata and tensors) through the receiver's own validation and posing, and mutated
signalling messages through a real server on loopback. Prints counts per outcome; any
crash (an exception other than the refusal each layer promises) is listed and makes the
exit status 1.

    .venv/bin/python bench/fuzz_hostile.py --lca 10000 --signalling 2000

Packets are fuzzed by tests/test_wire.py (100,000 per run)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avatar.avatar import DEFAULT_AVATAR_PATH, Avatar  # noqa: E402
from avatar.codes import Codes  # noqa: E402
from avatar.lca import AvatarData, AvatarFileError, load_avatar_file, save_avatar_file  # noqa: E402
from avatar.template import load_template  # noqa: E402

_TENSORS = ("binding_face", "binding_bary", "binding_offset", "local_quats", "local_scales",
            "opacities", "colors")
_WILD = [None, 0, -1, 1, 7, 2**31, 2**63, -2**63, 1e308, -0.0, "", "x" * 300, [], {}, [[[]]],
         True, [None], [1, -1], [2**40, 3], [3000, 3, 1], "9" * 5000]


def _split(raw: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _join(header: dict | str, body: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    data = text.encode()
    return struct.pack("<Q", len(data)) + data + body


def mutate_header(rng, header: dict, body: bytes) -> bytes:
    header = json.loads(json.dumps(header))
    meta = json.loads(header["__metadata__"]["lca"])
    choice = rng.integers(7)
    if choice == 0:    # a tensor entry's shape, dtype or offsets
        name = _TENSORS[rng.integers(len(_TENSORS))]
        field = ("shape", "dtype", "data_offsets")[rng.integers(3)]
        header[name][field] = (_WILD[rng.integers(len(_WILD))] if rng.random() < 0.6 else
                               ["F16", "F32", "I32", "I64", "U8", "BOOL", "F64"][rng.integers(7)]
                               if field == "dtype" else
                               [int(v) for v in rng.integers(-5, 10**6, rng.integers(0, 4))])
    elif choice == 1:  # a metadata field
        key = list(meta)[rng.integers(len(meta))]
        meta[key] = _WILD[rng.integers(len(_WILD))]
    elif choice == 2:  # the template reference
        key = ("vertices", "faces", "bones", "name")[rng.integers(4)]
        meta["template"][key] = _WILD[rng.integers(len(_WILD))] if rng.random() < 0.5 else \
            int(meta["template"].get(key, 1) if key != "name" else 1) + int(rng.integers(-3, 4))
    elif choice == 3:  # deep nesting in the metadata
        depth = int(rng.integers(10, 200_000))
        meta["provenance"] = "@@"
        text = json.dumps(meta).replace('"@@"', "[" * depth + "]" * depth)
        header["__metadata__"]["lca"] = text
        return _join(header, body)
    elif choice == 4:  # a tensor dropped or an extra one
        if rng.random() < 0.5:
            header.pop(_TENSORS[rng.integers(len(_TENSORS))], None)
        else:
            header["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif choice == 5:  # gaussian_count out of step with the tensors
        meta["gaussian_count"] = int(meta["gaussian_count"] + rng.integers(-3000, 3000))
    else:              # raw bytes of the header text flipped
        text = bytearray(json.dumps(header).encode())
        for _ in range(int(rng.integers(1, 8))):
            text[rng.integers(len(text))] = int(rng.integers(256))
        return struct.pack("<Q", len(text)) + bytes(text) + body
    header["__metadata__"]["lca"] = json.dumps(meta)
    return _join(header, body)


def mutate_tensors(rng, data: AvatarData) -> AvatarData:
    arrays = {name: np.array(getattr(data, name), copy=True) for name in _TENSORS}
    for _ in range(int(rng.integers(1, 4))):
        name = _TENSORS[rng.integers(len(_TENSORS))]
        flat = arrays[name].reshape(-1)
        index = rng.integers(len(flat), size=int(rng.integers(1, 50)))
        if name == "binding_face":
            flat[index] = rng.choice([-1, 2**31 - 1, 10**6, 0, int(flat.max()) + 1])
        else:
            flat[index] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e4, 6e4, 3e4, 0.5,
                                      -1e-3, 2.0])
    return AvatarData(**{**{k: getattr(data, k) for k in (
        "name", "template", "bone_names", "shading", "licence", "attribution", "provenance")},
        **arrays})


def fuzz_lca(count: int, seed: int) -> tuple[collections.Counter, list]:
    template = load_template()
    full = load_avatar_file(DEFAULT_AVATAR_PATH, template)
    keep = np.arange(0, len(full), len(full) // 3000)[:3000]
    small = AvatarData(name="fuzz", **{k: getattr(full, k)[keep] for k in _TENSORS},
                       template=full.template, bone_names=full.bone_names, shading=full.shading,
                       licence=full.licence, attribution=full.attribution, provenance={})
    rng = np.random.default_rng(seed)
    outcomes, crashes = collections.Counter(), []
    codes = Codes()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base.lca"
        save_avatar_file(base, small)
        header, body = _split(base.read_bytes())
        path = Path(folder) / "fuzzed.lca"
        for i in range(count):
            kind = ("header", "bytes", "tensors")[i % 3]
            if kind == "header":
                path.write_bytes(mutate_header(rng, header, body))
            elif kind == "bytes":
                raw = bytearray(base.read_bytes())
                for _ in range(int(rng.integers(1, 20))):
                    raw[rng.integers(len(raw))] = int(rng.integers(256))
                if rng.random() < 0.1:
                    raw = raw[: int(rng.integers(len(raw)))]
                path.write_bytes(bytes(raw))
            else:
                save_avatar_file(path, mutate_tensors(rng, small), compact=rng.random() < 0.5)
            try:
                data = load_avatar_file(path, template)  # what the receiver's validate does
                Avatar(data, template).pose(codes)       # and what it does with an accepted one
                outcomes[f"{kind}: accepted"] += 1
            except AvatarFileError:
                outcomes[f"{kind}: refused"] += 1
            except Exception as exc:  # noqa: BLE001 - a crash is what we are looking for
                outcomes[f"{kind}: CRASH"] += 1
                crashes.append(f"{kind} #{i}: {type(exc).__name__}: {str(exc)[:200]}")
    return outcomes, crashes


def _mutated_message(rng) -> str:
    base = {"type": "signal", "to": "someone", "data": {"sdp": "v=0", "type": "offer"}}
    choice = rng.integers(6)
    if choice == 0:
        return "[" * int(rng.integers(1, 40_000)) + "]" * int(rng.integers(0, 40_000))
    if choice == 1:
        return json.dumps({**base, "data": 0}).replace(
            "0}", "9" * int(rng.integers(1, 6000)) + "}")
    if choice == 2:
        base[["type", "to", "data"][rng.integers(3)]] = _WILD[rng.integers(len(_WILD))]
        return json.dumps(base)
    if choice == 3:
        raw = bytearray(json.dumps(base).encode())
        for _ in range(int(rng.integers(1, 6))):
            raw[rng.integers(len(raw))] = int(rng.integers(32, 127))
        return raw.decode("ascii", "replace")
    if choice == 4:
        return json.dumps({"type": ["join", "leave", "signal", "x", None][rng.integers(5)],
                           "name": "\x1b[2J\n" * 20, "room": "r\n"})
    return json.dumps(base)


async def fuzz_signalling(count: int, seed: int) -> tuple[collections.Counter, list]:
    from net.signal_client import SignallingClient, SignallingError
    from net.signalling import ServerLimits, SignallingServer
    from net.tokens import make_token

    secret = b"fuzz-secret-0123456789abcdef0123"
    problems: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.exc_info or record.levelno >= logging.ERROR:
                problems.append(record.getMessage())

    for name in ("splatcall.signalling", "aiohttp.server", "aiohttp.web", "asyncio"):
        logging.getLogger(name).addHandler(Catch())
    server = SignallingServer(secret, ServerLimits(messages_per_s=1e6, message_burst=10**6))
    port = await server.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{port}/ws"
    rng = np.random.default_rng(seed)
    outcomes = collections.Counter()
    peer = SignallingClient(url, "r", make_token(secret, "r"), "peer")
    await peer.join()
    client = None
    for _ in range(count):
        if client is None:
            client = SignallingClient(url, "r", make_token(secret, "r"), "fuzz")
            await client.join()
        try:
            await client.send_raw(_mutated_message(rng).replace('"someone"', f'"{peer.id}"'))
            reply = await asyncio.wait_for(client.receive(), 0.05)
            outcomes[f"answered {reply.get('type')}"] += 1
        except asyncio.TimeoutError:
            outcomes["relayed or ignored"] += 1
        except SignallingError as exc:
            outcomes[f"refused {exc.code}"] += 1
            await client.close()
            client = None
    # the server still works
    check = SignallingClient(url, "r", make_token(secret, "r"), "after")
    await check.join()
    await check.close()
    if client is not None:
        await client.close()
    await peer.close()
    await server.stop()
    return outcomes, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lca", type=int, default=10_000, help="mutated avatar files")
    parser.add_argument("--signalling", type=int, default=2000, help="mutated messages")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    failed = False
    if args.lca:
        started = time.monotonic()
        outcomes, crashes = fuzz_lca(args.lca, args.seed)
        print(f".lca files: {args.lca} in {time.monotonic() - started:.0f} s")
        for key, value in sorted(outcomes.items()):
            print(f"  {key}: {value}")
        for crash in crashes[:20]:
            print("  ", crash)
        failed |= bool(crashes)
    if args.signalling:
        started = time.monotonic()
        outcomes, problems = asyncio.run(fuzz_signalling(args.signalling, args.seed))
        print(f"signalling messages: {args.signalling} in {time.monotonic() - started:.0f} s")
        for key, value in sorted(outcomes.items()):
            print(f"  {key}: {value}")
        for problem in problems[:20]:
            print("   logged:", problem)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
