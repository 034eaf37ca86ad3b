"""End-to-end latency of a call, and the call process's peak memory: from the camera frame's
capture to the presentation of the window frame that shows it, across processes on loopback.

Processes (all on 127.0.0.1): a signalling server (``main.py serve``); a sender that tracks
a real clip (psychopy's jwpIntro.mp4, read in real time as a camera: ``VideoSource(live)``)
with mediapipe on a thread and sends each frame's codes as soon as they are ready, as ``main.py
call`` does (``--tick-send``: at the next call tick, 60 Hz, as it did before);
``--extra-senders`` more participants replaying codes (for the memory with several
remotes); and a receiver that runs the call (``net.call.Call``, its playout buffers) and the
real call window (``app.call_window.WindowLink``: its own process, 960x540, GL backend under
Xvfb), which reports when each frame was presented and which sender time it showed.

The receiver estimates the sender's clock offset over the data channel (``net.clock``,
NTP-style; on one machine it should come out near 0, a check of the estimator), puts the
sender's times on its own clock and splits each presented frame's latency (first
presentation of each snapshot; the camera frame shown is the newest one captured at or
before the sender time the pose was played out for):

- tracking: capture -> codes ready (mediapipe + solvers on the sender's tracker thread)
- send tick: codes ready -> sent (the sender's loop's next turn; with ``--tick-send`` its
  next call tick)
- network: sent -> arrived (SCTP over DTLS on loopback, aiortc, both event loops)
- playout buffer: arrived -> played out, for the moment the window asked (the buffer's
  delay and interpolation between frames; with ``--tick-playout``, at the call's tick)
- rendering: played out -> presented (the pipe, drawing, swapping; with ``--tick-playout``
  also the wait for the window to ask); split again into the wait for the snapshot and the
  drawing with the swap

The instant a frame shows is its pose's sender time, but never later than the capture of the
newest camera frame its pose is made of: a pose extrapolated past the newest frame (the playout
buffer does between arrivals while the jitter is low) counts from that frame's capture, not
from the instant it predicts.

    .venv/bin/python bench/bench_latency.py [--seconds 20] [--extra-senders 0] [--tick-send]
        [--tick-playout] [--playout-margin] [--fixed-detail] [--before]

``--before`` is the old behaviour but for one fix it cannot undo: each of the window's asks
is answered for its own frame (``_WindowMailbox.ask``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT / ".cache" / "media" / "jwpIntro.mp4"
ROOM = "latency"
TICK_HZ = 60.0


def config(port: int, token: str, name: str, cache: Path, avatar=None, margin=False,
           jitter_delay=False):
    from net.call import CallConfig
    from net.playout import PlayoutConfig

    # margin: the playout buffer's margin whatever the jitter (as before low_jitter_s);
    # jitter_delay: its delay covers the jitter on a clean link too (as before latency_first)
    return CallConfig(url=f"ws://127.0.0.1:{port}/ws", room=ROOM, token=token, name=name,
                      host_addresses=["127.0.0.1"], avatar_cache_dir=cache / name,
                      avatar_path=avatar,
                      playout=PlayoutConfig(
                          low_jitter_s=0.0 if margin else PlayoutConfig.low_jitter_s,
                          latency_first=not (margin or jitter_delay)))


# -- the sender ---------------------------------------------------------------------------------
async def sender(args) -> dict:
    from net.call import Call

    from avatar.avatar import DEFAULT_AVATAR_PATH

    # Each sender offers its avatar (the default's file), as `main.py call` does.
    call = Call(config(args.port, args.token, args.name, Path(args.cache), DEFAULT_AVATAR_PATH),
                on_event=lambda *e: print(f"{time.monotonic():.3f}", *e, flush=True))
    log: dict[int, list[float]] = {}  # seq -> [capture, ready, sent]
    latest = [None]
    stop = threading.Event()
    frames = None
    if args.codes:
        from app.cli import read_codes

        frames = read_codes(args.codes)
    else:
        from tracking.sources import VideoSource
        from tracking.tracker import Tracker, track

        source = VideoSource(CLIP, live=True)
        loop = asyncio.get_running_loop()
        sent_seq = [-1]

        def send_newest() -> None:  # on the loop: the newest codes, if not sent yet
            codes = latest[0]
            if codes is not None and codes.seq != sent_seq[0]:
                if call.send_codes(codes):
                    log[codes.seq][2] = time.monotonic()
                sent_seq[0] = codes.seq

        def run_tracker() -> None:
            with Tracker() as tracker:
                for result in track(source, tracker, should_stop=stop.is_set):
                    log[result.codes.seq] = [result.codes.t, time.monotonic(), None]
                    latest[0] = result.codes
                    if not args.tick_send:  # as main.py call: sent as soon as ready
                        try:
                            loop.call_soon_threadsafe(send_newest)
                        except RuntimeError:
                            break  # the loop has closed
                    if stop.is_set():
                        break

        thread = threading.Thread(target=run_tracker, daemon=True)
    await call.join()
    if frames is None:
        thread.start()
    started = None  # the first codes sent: then args.seconds more
    seq = 0
    give_up = time.monotonic() + args.seconds + 180  # mediapipe starts slowly under load
    while time.monotonic() < give_up and (started is None
                                          or time.monotonic() - started < args.seconds):
        now = time.monotonic()
        if started is None and (frames is not None or latest[0] is not None):
            started = now
        if frames is not None:
            call.send_codes(frames[seq % len(frames)].replace(t=now, seq=seq))
            seq += 1
        else:
            send_newest()
        call.poses(now)  # the call's tick (answers clock pings, plays out others' codes)
        await asyncio.sleep(max(0.0, 1 / TICK_HZ - (time.monotonic() - now)))
    stop.set()
    if frames is None:  # mediapipe must not be mid-frame when the interpreter exits
        await asyncio.to_thread(thread.join, 30)
    peers = {rid: {"sent": r.peer.codes_sent, "congested": r.peer.codes_dropped_congested,
                   "state": r.peer.codes_channel.readyState} for rid, r in call.remotes.items()}
    await call.leave()
    return {"id": call.id, "peers": peers, "tracked": len(log),
            "frames": {str(k): v for k, v in log.items() if v[2] is not None}}


# -- the receiver -------------------------------------------------------------------------------
async def receiver(args) -> dict:
    from app.call_window import CallControls, CallMonitor, WindowLink, WindowOptions
    from net.call import Call
    from net.playout import PlayoutBuffer

    arrivals: dict[int, dict[int, float]] = {}  # id(playout buffer) -> seq -> arrival
    push = PlayoutBuffer.push

    def noted_push(self, codes, arrival_s):  # the arrival of every codes frame, by seq
        arrivals.setdefault(id(self), {}).setdefault(int(codes.seq), arrival_s)
        return push(self, codes, arrival_s)

    PlayoutBuffer.push = noted_push
    def on_avatar(remote_id: str, data) -> None:  # to the window, as `main.py call` does
        sha = call.avatars.remotes[remote_id].sha256
        link.avatar(remote_id, call.avatars.cache_dir / f"{sha}.lca")

    call = Call(config(args.port, args.token, "receiver", Path(args.cache),
                       margin=args.playout_margin, jitter_delay=args.jitter_delay),
                on_avatar=on_avatar,
                on_event=lambda *e: print(f"{time.monotonic():.3f}", *e, flush=True))
    link = WindowLink(WindowOptions(ROOM, 960, 540, 60.0, report_presented=True,
                                    fixed_detail=args.fixed_detail))
    error = link.wait_ready(180)
    if error:
        raise SystemExit(f"error: {error}")
    if not args.tick_playout:  # as main.py call: the pose of when the window asks
        link.play_out_when_asked(lambda: call.remotes, wait_codes=not args.no_codes_wait)
    monitor = CallMonitor(CallControls())
    await call.join()
    give_up = time.monotonic() + args.seconds + 240
    sender_id, watched = None, set()
    offsets, clock, most, delays = [], {}, 0, []
    while time.monotonic() < give_up:  # until the sender has come and gone
        now = time.monotonic()
        if sender_id is not None and sender_id not in call.remotes:
            break
        poses = call.poses(now)
        named = [rid for rid, r in call.remotes.items() if r.name == "sender"]
        if named:  # (a reconnection makes a new playout buffer)
            sender_id = named[0]
            watched.add(id(call.remotes[sender_id].playout))
            delays.append(call.remotes[sender_id].playout.delay_s * 1000)
        if sender_id in call.remotes and call.clock.offset_s(sender_id) is not None:
            clock = call.clock.summary(sender_id)  # (forgotten once the sender has left)
            offsets.append(clock["offset_ms"])
        most = max(most, len(call.remotes))
        link.poll()
        monitor.tick(call.remotes, poses, None, now)
        link.show(monitor.latest)
        await asyncio.sleep(max(0.0, 1 / TICK_HZ - (time.monotonic() - now)))
    stats = call.stats()["remotes"]
    remotes = most
    peak_call_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await call.leave()
    link.stop()
    peak_window_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"sender_id": sender_id, "clock": clock,
            "offsets_ms": [min(offsets, default=0), max(offsets, default=0)],
            "arrivals": {str(k): v for buffer in watched
                         for k, v in arrivals.get(buffer, {}).items()},
            "presented": list(link.presented), "remotes": remotes, "stats": stats,
            "delays_ms": delays, "waited_ms": [w * 1000 for w in link.server.waited_s],
            "peak_call_mb": peak_call_mb, "peak_window_mb": peak_window_mb}


# -- the whole ----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--extra-senders", type=int, default=0,
                        help="more remote participants, replaying codes (for the memory)")
    parser.add_argument("--tick-send", action="store_true",
                        help="the sender sends its newest codes at each 60 Hz tick (as "
                             "main.py call did before), not as soon as they are tracked")
    parser.add_argument("--tick-playout", action="store_true",
                        help="the window draws the poses played out at the call's last tick "
                             "(as before), not for the moment it asks")
    parser.add_argument("--playout-margin", action="store_true",
                        help="the playout buffer keeps its 20 ms margin whatever the jitter "
                             "(as before)")
    parser.add_argument("--jitter-delay", action="store_true",
                        help="the playout buffer delays by the jitter (p95) on a clean link "
                             "too (as before net.playout's latency_first)")
    parser.add_argument("--fixed-detail", action="store_true",
                        help="the window keeps its first level of detail however slow its "
                             "frames (as before app.call_window.DetailGovernor)")
    parser.add_argument("--no-codes-wait", action="store_true",
                        help="the window's ask is answered at once, not when codes due within "
                             "its slack have come (app.call_window.wait_for_codes)")
    parser.add_argument("--before", action="store_true",
                        help="all four as before: --tick-send --tick-playout --playout-margin "
                             "--fixed-detail")
    parser.add_argument("--skip", type=float, default=0.0, metavar="S",
                        help="leave out the frames presented in the first S seconds of the "
                             "sender's codes (the call's start: its avatar crossing the data "
                             "channel, the window's level of detail settling)")
    parser.add_argument("--timeline", action="store_true",
                        help="also list every 15th codes frame's tracking and network time "
                             "(what the codes met while the call started)")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="keep the participants' logs and results in DIR")
    parser.add_argument("--role", choices=("sender", "receiver"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="sender", help=argparse.SUPPRESS)
    parser.add_argument("--codes", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.before:
        args.tick_send = args.tick_playout = args.playout_margin = args.fixed_detail = True
        args.no_codes_wait = True
    if args.role:
        result = asyncio.run(sender(args) if args.role == "sender" else receiver(args))
        Path(args.out).write_text(json.dumps(result))
        return 0
    if not CLIP.is_file():
        sys.exit(f"error: {CLIP} is missing (scripts/setup.sh fetches it)")
    return orchestrate(args)


def orchestrate(args) -> int:
    from bench.bench_call_window import start_xvfb
    from net.tokens import load_or_create_secret, make_token
    from tests.processes import free_port

    xvfb = start_xvfb()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        secret = load_or_create_secret(tmp / "secret.key")
        port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")

        def start(*argv, log):
            proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                                    stdout=open(tmp / log, "w"), stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        def role(name, *extra):
            return start(__file__, "--role", name.split("-")[0], "--port", str(port),
                         "--token", make_token(secret, ROOM), "--seconds", str(args.seconds),
                         "--cache", str(tmp / "cache"), "--out", str(tmp / f"{name}.json"),
                         *(["--tick-send"] if args.tick_send else []),
                         *(["--tick-playout"] if args.tick_playout else []),
                         *(["--playout-margin"] if args.playout_margin else []),
                         *(["--jitter-delay"] if args.jitter_delay else []),
                         *(["--fixed-detail"] if args.fixed_detail else []),
                         *(["--no-codes-wait"] if args.no_codes_wait else []), *extra,
                         log=f"{name}.log")

        try:
            start("main.py", "serve", "--port", str(port), "--secret-file",
                  str(tmp / "secret.key"), log="serve.log")
            time.sleep(3)
            receiver_proc = role("receiver")
            time.sleep(15)  # the window opens and the receiver joins first
            codes_file = tmp / "codes.jsonl"
            if args.extra_senders:
                from app.poses import POSES
                from avatar.codes import write_jsonl

                write_jsonl(codes_file, [POSES["talk"].codes_at(i / 30).replace(seq=i)
                                         for i in range(300)])
            senders = [role("sender")] + [
                role(f"sender-{i}", "--name", f"extra{i}", "--codes", str(codes_file))
                for i in range(args.extra_senders)]
            for proc in senders + [receiver_proc]:
                if proc.wait(timeout=args.seconds + 300) != 0:
                    for log in tmp.glob("*.log"):
                        print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
                    sys.exit("error: a participant failed")
            sent = json.loads((tmp / "sender.json").read_text())
            received = json.loads((tmp / "receiver.json").read_text())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
            if xvfb is not None:
                xvfb.terminate()
                xvfb.wait(timeout=10)
    report(sent, received, args)
    return 0


def split(sent: dict, received: dict, skip_s: float = 0.0) -> dict[str, np.ndarray]:
    """Per presented frame (the first presentation of each snapshot), milliseconds; frames
    presented in the first ``skip_s`` seconds after the first that showed the sender left
    out."""
    offset = received["clock"]["offset_ms"] / 1000  # the sender's clock minus ours
    frames = {int(k): v for k, v in sent["frames"].items()}
    seqs = np.array(sorted(frames))
    captures = np.array([frames[s][0] for s in seqs])
    arrivals = {int(k): v for k, v in received["arrivals"].items()}
    parts: dict[str, list[float]] = {k: [] for k in ("tracking", "send tick", "network",
                                                     "playout buffer", "rendering", "total",
                                                     "waiting for the snapshot",
                                                     "drawing and swap")}
    seen = set()
    first = min((p[2] for p in received["presented"]
                 if any(view[0] == received["sender_id"] for view in p[1])), default=0.0)
    for made_at, shown, presented, *drawn in received["presented"]:
        if made_at in seen or presented < first + skip_s:
            continue
        seen.add(made_at)
        for remote_id, sender_time, shown_seq in shown:
            if remote_id != received["sender_id"]:
                continue
            if shown_seq in frames:  # no later than the newest camera frame it is made of
                sender_time = min(sender_time, frames[shown_seq][0])
            index = np.searchsorted(captures, sender_time, side="right") - 1
            if index < 0:
                continue
            seq = int(seqs[index])
            if seq not in arrivals:
                continue
            capture, ready, sent_at = frames[seq]
            total = presented - (sender_time - offset)
            values = {"tracking": ready - capture, "send tick": sent_at - ready,
                      "network": arrivals[seq] - (sent_at - offset),
                      "rendering": presented - made_at}
            values["playout buffer"] = made_at - arrivals[seq] - (sender_time - capture)
            values["total"] = total
            if drawn:
                values["waiting for the snapshot"] = drawn[0] - made_at
                values["drawing and swap"] = presented - drawn[0]
            # the sender time shown may lie after the frame's capture (interpolation):
            # total = capture to presentation of that instant; parts add up to it
            for key, value in values.items():
                parts[key].append(value * 1000)
    return {k: np.array(v) for k, v in parts.items()}


def timeline(sent: dict, received: dict, every: int = 15) -> None:
    """Every ``every``-th codes frame: its capture time from the first, tracking and network
    milliseconds (what crossed while the call started)."""
    offset = received["clock"]["offset_ms"] / 1000
    frames = {int(k): v for k, v in sent["frames"].items()}
    arrivals = {int(k): v for k, v in received["arrivals"].items()}
    seqs = sorted(s for s in frames if s in arrivals and frames[s][2] is not None)
    if not seqs:
        return
    first = frames[seqs[0]][0]
    print("  | capture s | seq | tracking ms | network ms |")
    print("  | --- | --- | --- | --- |")
    for seq in seqs[::every]:
        capture, ready, sent_at = frames[seq]
        print(f"  | {capture - first:.2f} | {seq} | {1000 * (ready - capture):.1f} | "
              f"{1000 * (arrivals[seq] - (sent_at - offset)):.1f} |")


def report(sent: dict, received: dict, args) -> None:
    if args.timeline:
        timeline(sent, received)
    parts = split(sent, received, args.skip)
    clock = received["clock"]
    made = [frame[0] for frame in received["presented"]]
    stale = sum(1 for a, b in zip(made, made[1:]) if a == b)
    print(f"  ({len(sent['frames'])} frames tracked and sent, {len(received['arrivals'])} "
          f"arrived, {len(made)} window frames presented, {stale} of them a snapshot "
          f"drawn the frame before again)")
    print(f"  sender: {sent['tracked']} tracked, its peers {sent['peers']}")
    for remote in received["stats"].values():
        print(f"  {remote['name']}: {remote['codes']}")
    print(f"end-to-end latency, one remote tracked from {CLIP.name} in real time, the window "
          f"960x540 (GL, Xvfb), {args.seconds:.0f} s, {len(parts['total'])} frames"
          f"{f' after the first {args.skip:g} s' if args.skip else ''}; "
          f"load average {os.getloadavg()[0]:.1f}")
    low, high = received["offsets_ms"]
    print(f"  clock offset estimated over the data channel: {clock['offset_ms']:+.2f} ms "
          f"(round trip {clock['round_trip_ms']:.2f} ms, {clock['samples']} samples; over the "
          f"call {low:+.2f} .. {high:+.2f} ms; one machine, so near 0 is right)")
    print("  | part | median ms | p90 ms |")
    print("  | --- | --- | --- |")
    detail = ("waiting for the snapshot", "drawing and swap")
    for name, values in parts.items():
        if len(values) and name not in detail:
            print(f"  | {name} | {np.median(values):.1f} | {np.percentile(values, 90):.1f} |")
    if all(len(parts[name]) for name in detail):
        print("  rendering, median (p90) ms: " + ", ".join(
            f"{name} {np.median(parts[name]):.1f} ({np.percentile(parts[name], 90):.1f})"
            for name in detail))
    remote = [(frame[2], t) for frame in received["presented"] for rid, t, _ in frame[1]
              if rid == received["sender_id"]]
    shown = np.array([presented for presented, _ in remote])
    if len(shown) > 2:
        # Smoothness: the pose's time should advance as much as the presentation's from
        # one frame to the next (a repeated pose: 0; an irregular playout: more or less).
        steps = np.diff([t for _, t in remote]) * 1000
        gaps = np.diff(shown) * 1000
        uneven = np.abs(steps - gaps)
        print(f"  the pose shown from frame to frame: {int(np.sum(steps == 0))} of "
              f"{len(steps)} repeated, its time's step off the frame's step by median "
              f"{np.median(uneven):.1f} ms (p90 {np.percentile(uneven, 90):.1f})")
        print(f"  window frames: median {np.median(gaps):.1f} ms apart "
              f"({1000 / np.median(gaps):.1f} fps); the playout buffer's delay: median "
              f"{np.median(received.get('delays_ms') or [0]):.1f} ms")
    waited = received.get("waited_ms") or []
    if waited:
        print(f"  waiting for due codes before answering the window: {np.mean(waited):.1f} ms a "
              f"frame on average, {np.mean(np.asarray(waited) > 0.5) * 100:.0f} % of frames")
    levels = [frame[4] for frame in received["presented"] if frame[1] and len(frame) > 4]
    if levels:
        counts = np.bincount(levels)
        print("  the window's level of detail (app.call_window.DETAIL_LEVELS) over those "
              "frames: " + ", ".join(f"level {i} {n}" for i, n in enumerate(counts) if n))
    print(f"  peak memory (max RSS): the call process {received['peak_call_mb']:.0f} MB, the "
          f"window process {received['peak_window_mb']:.0f} MB, with {received['remotes']} "
          f"remote(s)")


if __name__ == "__main__":
    sys.exit(main())
