#!/usr/bin/env python3
"""Benchmark VMC send and receive and the BVH export: cost per frame and bytes per frame.

Writes bench/results/vmc.json and prints a table. Median over --repeats frames of the
built-in animations (so bones and weights really vary): the encoder (humanoid rotations +
datagrams), python-osc's message-by-message build it replaces, the decoder (three datagrams
in, one codes frame out), a round trip through real UDP sockets on 127.0.0.1, and the BVH
export's time per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.poses import POSES
from avatar.bvh import write_bvh
from avatar.humanoid import Humanoid
from avatar.template import load_template
from net.vmc import VmcDecoder, VmcEncoder, VmcReceiver, VmcSender, encode_reference


def timed(function, frames, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 3):
        codes = frames[i % len(frames)]
        t0 = time.perf_counter()
        function(codes, i)
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="frames timed (default: 300)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/vmc.json")
    args = parser.parse_args()
    template = load_template()
    humanoid = Humanoid(template)
    frames = [c for name in ("talk", "wave", "walk", "fist") for c in POSES[name].frames(30)]
    encoder, decoder = VmcEncoder(humanoid), VmcDecoder(humanoid)
    encoded = [encoder.encode(c, 0.0) for c in frames]

    def decode(codes, i):
        for datagram in encoded[i % len(encoded)]:
            decoder.feed(datagram, float(i))
        decoder.codes()

    receiver = VmcReceiver("127.0.0.1", 0, humanoid)
    sender = VmcSender(*receiver.address, humanoid)

    def loopback(codes, i):
        sender.send(codes)
        while receiver.take() is None:
            pass

    stages = {
        "humanoid_rotations": timed(lambda c, i: humanoid.local_rotations(c), frames,
                                    args.repeats),
        "encode": timed(lambda c, i: encoder.encode(c, 0.0), frames, args.repeats),
        "encode_python_osc_per_message": timed(
            lambda c, i: encode_reference(humanoid, c, 0.0), frames, args.repeats // 3),
        "decode": timed(decode, frames, args.repeats),
        "udp_round_trip": timed(loopback, frames, args.repeats),
    }
    sender.close()
    receiver.close()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.bvh")
        t0 = time.perf_counter()
        write_bvh(path, frames, template)
        bvh_ms = (time.perf_counter() - t0) * 1e3 / len(frames)
        bvh_bytes = os.path.getsize(path)
    sizes = [len(d) for d in encoded[0]]
    result = {
        "benchmark": "vmc",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"load average {os.getloadavg()[0]:.1f}",
        "date": time.strftime("%Y-%m-%d"),
        "datagram_bytes": sizes,
        "bytes_per_frame": sum(sizes),
        "median_ms": {k: float(np.median(v)) for k, v in stages.items()},
        "p90_ms": {k: float(np.percentile(v, 90)) for k, v in stages.items()},
        # On a shared, loaded machine the fastest frame is the cost with the CPU to itself.
        "min_ms": {k: float(np.min(v)) for k, v in stages.items()},
        "bvh_ms_per_frame": bvh_ms,
        "bvh_bytes_per_frame": bvh_bytes / len(frames),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"VMC frame: datagrams {sizes} bytes, {sum(sizes)} bytes a frame")
    for k in stages:
        print(f"  {k:32s} median {result['median_ms'][k]:7.2f} ms   "
              f"p90 {result['p90_ms'][k]:7.2f} ms   min {result['min_ms'][k]:7.2f} ms")
    print(f"BVH export: {bvh_ms:.2f} ms and {bvh_bytes / len(frames):.0f} bytes a frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
