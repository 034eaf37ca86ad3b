"""Benchmark of a call: bandwidth, latency and CPU for 2, 4 and 8 participants.

Every participant is its own process (so that CPU per peer is its own), on loopback, with a
test tone as voice and full codes frames (face, gaze, head, body, both hands, root) at 60 Hz.
Rooms up to 6 use the mesh (``net.call``) through the signalling server; larger rooms use
Janus VideoRoom in a network namespace (``net.janus``), or the mesh when Janus cannot run
(needs root and Debian's janus; the JSON says which ran).

Figures per room size (medians over participants, each measured over ``--seconds``):

- ``bytes_per_frame``: codes packet size;
- ``codes_kbit_s_per_stream``: codes payload sent per outgoing stream; ``uplink_kbit_s``:
  everything a participant's transports sent (DTLS records: codes over SCTP plus voice over
  SRTP, without UDP/IP headers), ``voice_kbit_s``: the Opus RTP bytes of one outgoing stream;
- ``transit_ms_p50/p95/p99``: capture (sender's clock) to arrival (receiver's clock); the
  processes share one monotonic clock, so this is the true one-way network latency;
- ``latency_ms_p50/p95/p99``: capture to display, i.e. transit plus the playout delay
  (the pose shown at display time ``now`` is the sender's pose at ``now - latency``);
- ``cpu_percent_per_peer``: process CPU time / wall time (100 = one core);
- ``codes_loss``: fraction of codes frames never received.

Usage: python bench/bench_call.py [--sizes 2 4 8] [--seconds 10] [--out bench/results/call.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.files import write_text  # noqa: E402


def full_codes(seq: int, t: float):
    from avatar.codes import PARTS, Codes
    from common.rotation import quat_from_axis_angle

    rng = np.random.default_rng(seq)
    quat = lambda n: quat_from_axis_angle(rng.normal(size=(n, 3)), rng.uniform(0, 1, n))  # noqa: E731
    return Codes(t=t, seq=seq, face=rng.uniform(0, 1, 52).astype(np.float32),
                 gaze=rng.uniform(-0.5, 0.5, (2, 2)).astype(np.float32),
                 head=quat(4).astype(np.float32), body=quat(31).astype(np.float32),
                 hands=quat(38).reshape(2, 19, 4).astype(np.float32),
                 root_translation=np.array([0.1, 0.9, 0.0], np.float32),
                 root_rotation=quat(1)[0].astype(np.float32), valid=np.ones(len(PARTS), bool))


# -- one participant ----------------------------------------------------------------------------
async def participant(args) -> dict:
    from net.audio import ToneTrack

    frames = [full_codes(i, 0.0) for i in range(60)]
    tone = ToneTrack(300 + 100 * args.index)
    if args.janus_url:
        from net.config import CallConfig
        from net.janus import JanusCall

        call = JanusCall(CallConfig(url=args.janus_url, room=str(7000 + args.size),
                                    name=f"p{args.index}", host_addresses=[args.address]),
                         audio_track=tone)
    else:
        from net.call import Call, CallConfig
        from net.tokens import make_token

        call = Call(CallConfig(url=args.url, room=f"bench{args.size}",
                               token=make_token(args.secret.encode(), f"bench{args.size}"),
                               name=f"p{args.index}", host_addresses=["127.0.0.1"],
                               avatar_cache_dir=Path(args.out).parent / "avatar-cache"),
                    audio_track=tone)
    await call.join()
    # Warm up: send until every other participant's codes arrive here.
    seq, deadline = 0, time.monotonic() + 60
    ready_file = Path(args.out + ".ready")
    while True:
        call.send_codes(frames[seq % 60].replace(t=time.monotonic(), seq=seq))
        seq += 1
        ready = len(call.remotes) == args.size - 1 and all(
            r.stats.unique > 0 for r in call.remotes.values())
        if ready and not ready_file.exists():
            ready_file.write_text("ok")
        if ready and all(Path(args.out.replace(f"p{args.index}.json", f"p{j}.json.ready")).exists()
                         for j in range(args.size)):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"participant {args.index}: the room never became ready")
        await asyncio.sleep(1 / 60)

    async def transport_bytes() -> tuple[int, int]:
        pcs = ([r.peer.pc for r in call.remotes.values()] if hasattr(call, "client")
               else [call.publisher_pc])
        total = audio = 0
        for pc in pcs:
            report = await pc.getStats()
            for stat in report.values():
                if stat.type == "transport":
                    total += stat.bytesSent
                elif stat.type == "outbound-rtp" and getattr(stat, "kind", "audio") == "audio":
                    audio += stat.bytesSent
        return total, audio

    base = {rid: r.stats.unique for rid, r in call.remotes.items()}
    base_seq = {rid: r.stats.highest_seq for rid, r in call.remotes.items()}
    for r in call.remotes.values():
        r.stats.transit_s.clear()
    bytes0, audio0 = await transport_bytes()
    sent0 = call.sent_bytes
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    latency_ms: list[float] = []
    next_frame = start
    while time.monotonic() - start < args.seconds:
        now = time.monotonic()
        call.send_codes(frames[seq % 60].replace(t=now, seq=seq))
        seq += 1
        for pose in call.poses(now).values():
            latency_ms.append((now - pose.t) * 1000.0)
        next_frame += 1 / 60
        await asyncio.sleep(max(0.0, next_frame - time.monotonic()))
    wall = time.monotonic() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    bytes1, audio1 = await transport_bytes()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    streams_out = args.size - 1 if not args.janus_url else 1
    # Counted now, before anyone leaves; frames still in flight are not yet "expected"
    # (expected runs to the highest seq received), so they count neither way.
    transit = np.concatenate([np.array(r.stats.transit_s) for r in call.remotes.values()]
                             or [np.zeros(0)]) * 1e3
    received = sum(r.stats.unique - base.get(rid, 0) for rid, r in call.remotes.items())
    expected = sum(r.stats.highest_seq - base_seq.get(rid, 0) for rid, r in call.remotes.items())
    remotes = len(call.remotes)
    # Leave together: nobody's departure may disturb another's measurement.
    Path(args.out + ".done").write_text("ok")
    deadline = time.monotonic() + 60
    while not all(Path(args.out.replace(f"p{args.index}.json", f"p{j}.json.done")).exists()
                  for j in range(args.size)) and time.monotonic() < deadline:
        call.send_codes(frames[seq % 60].replace(t=time.monotonic(), seq=seq))
        seq += 1
        await asyncio.sleep(1 / 60)
    result = {
        "index": args.index, "wall_s": wall, "cpu_percent": 100.0 * cpu / wall,
        "codes_payload_kbit_s_per_stream":
            (call.sent_bytes - sent0) * 8 / 1000 / wall / streams_out,
        "uplink_kbit_s": (bytes1 - bytes0) * 8 / 1000 / wall,
        "voice_kbit_s_per_stream": (audio1 - audio0) * 8 / 1000 / wall / streams_out,
        "transit_ms": [float(np.percentile(transit, q)) if len(transit) else None
                       for q in (50, 95, 99)],
        "latency_ms": [float(np.percentile(latency_ms, q)) for q in (50, 95, 99)],
        "codes_loss": 1.0 - received / expected if expected else None,
        "remotes": remotes,
    }
    await call.leave()
    return result


# -- the room -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_room(size: int, seconds: float, workdir: Path, use_janus: bool) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("p*.json*"):
        stale.unlink()
    procs, janus = [], None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    common = [sys.executable, __file__, "--worker", "--size", str(size),
              "--seconds", str(seconds)]
    try:
        if use_janus:
            from tests.janus_server import JanusServer

            janus = JanusServer().start()
            target = ["--janus-url", janus.url, "--address", janus.client_address]
        else:
            from net.signalling import ServerLimits  # noqa: F401 - the server runs as main.py serve

            port, secret = _free_port(), "bench-secret-0123456789abcdef"
            secret_file = workdir / "secret.key"
            secret_file.write_text(secret)
            procs.append(subprocess.Popen(
                [sys.executable, "main.py", "serve", "--port", str(port), "--secret-file",
                 str(secret_file), "--max-participants", str(max(size, 2))], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL))
            deadline = time.monotonic() + 20
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("signalling server did not start")
                time.sleep(0.05)
            target = ["--url", f"ws://127.0.0.1:{port}/ws", "--secret", secret]
        workers = []
        for i in range(size):
            out = workdir / f"p{i}.json"
            log = open(workdir / f"p{i}.log", "w")
            workers.append(subprocess.Popen(common + target
                                            + ["--index", str(i), "--out", str(out)],
                                            cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT))
            time.sleep(0.2)
        procs.extend(workers)
        for worker in workers:
            worker.wait(timeout=seconds + 120)
        results = []
        for i in range(size):
            path = workdir / f"p{i}.json"
            if not path.exists():
                raise RuntimeError(f"participant {i} failed: "
                                   f"{(workdir / f'p{i}.log').read_text()[-2000:]}")
            results.append(json.loads(path.read_text()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if janus is not None:
            janus.stop()

    def median(key, index=None):
        values = [r[key] if index is None else r[key][index] for r in results
                  if r[key] is not None]
        return float(np.median(values))

    from net.wire import MAX_PACKET_BYTES

    return {
        "participants": size, "topology": "janus" if use_janus else "mesh",
        "seconds": seconds, "bytes_per_frame": MAX_PACKET_BYTES,
        "codes_kbit_s_per_stream": median("codes_payload_kbit_s_per_stream"),
        "voice_kbit_s_per_stream": median("voice_kbit_s_per_stream"),
        "uplink_kbit_s": median("uplink_kbit_s"),
        **{f"transit_ms_p{q}": median("transit_ms", k) for k, q in enumerate((50, 95, 99))},
        **{f"latency_ms_p{q}": median("latency_ms", k) for k, q in enumerate((50, 95, 99))},
        "cpu_percent_per_peer": median("cpu_percent"),
        "cpu_percent_per_peer_max": float(max(r["cpu_percent"] for r in results)),
        "codes_loss": median("codes_loss"),
        "per_participant": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "call.json"))
    parser.add_argument("--mesh-only", action="store_true", help="never use Janus")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--janus-url", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(participant(args))
        write_text(args.out, json.dumps(result))
        return 0

    from net.call import MESH_LIMIT
    from tests.janus_server import JanusServer

    janus_reason = JanusServer.unavailable()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rooms = []
    for size in args.sizes:
        use_janus = size > MESH_LIMIT and not args.mesh_only and janus_reason is None
        print(f"room of {size} ({'janus' if use_janus else 'mesh'}), {args.seconds:g} s ...",
              flush=True)
        room = run_room(size, args.seconds, ROOT / ".cache" / "bench-call" / f"room-{size}",
                        use_janus)
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                          for k, v in room.items() if k != "per_participant"}), flush=True)
        rooms.append(room)
    report = {
        "benchmark": "call", "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(),
                    "load_avg_at_end": os.getloadavg()},
        "janus_unavailable_because": janus_reason,
        "rooms": rooms,
    }
    write_text(out, json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
