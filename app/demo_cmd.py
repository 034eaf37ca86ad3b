"""`main.py demo`: a whole call on one machine, with no webcam, GPU or display (with a
display, the receiver's side is shown live in the call window instead of written to a video:
app.demo_window).

1. Track a talking-head clip (psychopy's jwpIntro.mp4, fetched by the set-up) into codes:
   mediapipe landmarks, our solvers, the filters, exactly as a webcam would be tracked.
2. Call: a signalling server on 127.0.0.1 and two participants, "sender" and "receiver",
   connected by WebRTC. The sender offers its avatar (fetched, verified and validated by the
   receiver), streams the codes in real time on the unordered data channel and the clip's
   voice as Opus; the receiver plays the codes out through its jitter buffer and records the
   poses and the voice it received.
3. Export: the received session rendered offscreen beside the source clip, with the received
   voice, to an H.264/AAC MP4.

The tracking runs before the call rather than live because this reference machine (2 cores,
no GPU) cannot track, run two peers and render at once in real time; every byte the receiver
renders still crossed the WebRTC connection.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app.cli import UserError
from render.backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
DEMO_CLIP = ROOT / ".cache" / "media" / "jwpIntro.mp4"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the demo call (no webcam, GPU or display needed)",
        description="Track a talking-head clip, send its codes and voice over a WebRTC call "
        "between two local participants, and render what the receiver got beside the source "
        "clip to a video file. Needs no webcam, GPU or display.")
    p.add_argument("--clip", type=Path, default=DEMO_CLIP,
                   help="video with a person talking (default: psychopy's jwpIntro.mp4, "
                   "fetched by scripts/setup.sh)")
    p.add_argument("--avatar", type=Path, default=None, metavar="LCA",
                   help="the sender's avatar (default: the one the set-up created from the "
                   "demo clip, else the built-in default)")
    p.add_argument("--out", type=Path, default=Path("out/demo.mp4"),
                   help="output video (default: out/demo.mp4)")
    p.add_argument("--height", type=int, default=360, help="output height in pixels (default: 360)")
    p.add_argument("--fps", type=float, default=30.0, help="render frame rate (default: 30)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="renderer backend (default: the fastest available)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="use only the first seconds of the clip (default: all of it)")
    p.add_argument("--no-window", action="store_true",
                   help="write the video even when there is a display (with one, the demo "
                        "shows the receiver's side of the call in the call window instead)")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE.png",
                   help="with the window: where its S key or --screenshot-at saves")
    p.add_argument("--screenshot-at", type=float, default=None, metavar="S",
                   help="with the window: save a screenshot this many seconds into the call")
    p.set_defaults(func=run)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1. tracking ----------------------------------------------------------------------------
def track_clip(clip: Path, max_seconds: float) -> tuple[list, float]:
    """Codes for every frame of the clip, stamped with the clip's media time; and its fps."""
    from tracking.sources import SourceError, VideoSource
    from tracking.tracker import Tracker

    try:
        source = VideoSource(clip)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    fps = source.nominal_fps or 30.0
    frames = []
    started = time.monotonic()
    with Tracker() as tracker:
        while True:
            frame = source.read()
            if frame is None or (max_seconds and frame.media_time_s > max_seconds):
                break
            codes = tracker.process(frame).codes
            frames.append(codes.replace(t=frame.media_time_s, seq=len(frames)))
            if len(frames) % 30 == 0:
                say(f"  tracked {len(frames)} frames ({time.monotonic() - started:.0f} s)")
    source.close()
    if not frames:
        raise UserError(f"{clip}: no frames could be read")
    valid = np.array([c.valid for c in frames])
    say(f"tracked {len(frames)} frames in {time.monotonic() - started:.1f} s; "
        f"face found in {valid[:, 0].mean():.0%}, body in {valid[:, 3].mean():.0%} of them")
    return frames, fps


# -- 2. the call ----------------------------------------------------------------------------
async def run_call(frames: list, clip: Path, display_fps: float, window=None,
                   avatar: Path | None = None) -> dict:
    """Two participants on loopback; returns what the receiver recorded. ``window``
    (app.demo_window.DemoWindow) shows the receiver's side live; ``avatar``: the sender's
    (default: the built-in one)."""
    from avatar.avatar import DEFAULT_AVATAR_PATH
    from net.audio import frame_to_mono, open_audio_source
    from net.call import Call, CallConfig
    from net.signalling import SignallingServer
    from net.tokens import make_token

    secret = np.random.default_rng().bytes(32)
    server = SignallingServer(secret)
    port = await server.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{port}/ws"
    room = "demo"
    cache = Path(tempfile.mkdtemp(prefix="splatcall-avatars-"))
    received_audio: list[np.ndarray] = []
    audio_rate = [48000]
    events: list[str] = []

    recording_audio = [True]

    def on_audio(remote_id, frame) -> None:
        if recording_audio[0]:
            audio_rate[0] = frame.sample_rate
            received_audio.append(frame_to_mono(frame))
        if window is not None:
            window.voice(remote_id, frame_to_mono(frame))

    def config(name: str, avatar=None) -> CallConfig:
        return CallConfig(url=url, room=room, token=make_token(secret, room), name=name,
                          host_addresses=["127.0.0.1"], avatar_path=avatar,
                          avatar_cache_dir=cache / name)

    audio_track, description = open_audio_source(str(clip))
    sender = Call(config("sender", avatar or DEFAULT_AVATAR_PATH), audio_track=audio_track,
                  on_event=lambda kind, rid, detail: events.append(f"sender: {kind} {detail}"))
    receiver = Call(config("receiver"), on_audio=on_audio,
                    on_event=lambda kind, rid, detail: events.append(f"receiver: {kind} {detail}"))
    poses: list[tuple[float, object]] = []
    try:
        await receiver.join()
        started = time.monotonic()
        await sender.join()
        while not (sender.remotes and all(r.peer.connected_at for r in sender.remotes.values())):
            if time.monotonic() - started > 20:
                raise UserError("the two participants could not connect within 20 s")
            await asyncio.sleep(0.01)
        say(f"call connected in {time.monotonic() - started:.2f} s; voice: {description}")
        if window is not None:
            # Shown live: the sender's own avatar from the first frame, and its 11 MB transfer
            # and checks not competing with the codes (nor the window) for this CPU.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                    r.status in ("ready", "refused") for r in receiver.avatars.remotes.values()):
                window.tick(receiver, {}, None, time.monotonic())
                await asyncio.sleep(0.05)

        # The sender streams the codes at their capture times; the receiver samples its
        # playout buffer at the display rate, as a renderer would.
        t0 = time.monotonic()
        duration = frames[-1].t - frames[0].t + 1.0 / display_fps
        next_send = 0
        next_display = 0
        while True:
            now = time.monotonic() - t0
            while next_send < len(frames) and frames[next_send].t - frames[0].t <= now:
                codes = frames[next_send]
                sender.send_codes(codes.replace(t=t0 + codes.t - frames[0].t))
                next_send += 1
            if now >= next_display / display_fps:
                pose = receiver.poses(time.monotonic())
                if pose:
                    poses.append((next_display / display_fps, next(iter(pose.values()))))
                next_display += 1
                if window is not None:
                    window.tick(receiver, pose, None, time.monotonic())
                    if window.closed:
                        break
            if now > duration + 0.4:  # + the playout delay
                break
            await asyncio.sleep(0.002)
        recording_audio[0] = False
        # A short clip can end before the sender's avatar has arrived: give the transfer
        # that is under way a little longer (the offer itself comes right after connecting).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                r.status == "fetching" for r in receiver.avatars.remotes.values()):
            await asyncio.sleep(0.05)
        stats = receiver.stats()
        remote_avatar = next(iter(receiver.avatars.remotes.values()), None)
    finally:
        await sender.leave()
        await receiver.leave()
        await server.stop()
        if audio_track is not None:
            audio_track.stop()
    remote_stats = next(iter(stats["remotes"].values()), {}) if stats["remotes"] else {}
    return {
        "poses": poses, "audio": np.concatenate(received_audio) if received_audio else None,
        "audio_rate": audio_rate[0], "stats": remote_stats, "sent": sender.sent_packets,
        "sent_bytes": sender.sent_bytes, "avatar": remote_avatar, "events": events,
    }


# -- 3. export ------------------------------------------------------------------------------
def read_clip_frames(clip: Path, height: int) -> tuple[list[np.ndarray], list[float]]:
    import av
    from PIL import Image

    images, times = [], []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            image = frame.to_image()
            width = int(round(image.width * height / image.height / 2) * 2)
            images.append(np.asarray(image.resize((width, height), Image.BILINEAR)))
            times.append(float(frame.time or 0.0))
    return images, times


def export(recording: dict, clip: Path, out: Path, height: int, fps: float, backend_name: str,
           avatar) -> None:
    from render.backends import get_backend
    from render.errors import BackendUnavailable
    from render.camera import Camera
    from render.video import VideoError, VideoWriter, to_uint8

    clip_images, clip_times = read_clip_frames(clip, height)
    try:
        backend = get_backend(backend_name)
    except BackendUnavailable as exc:
        raise UserError(str(exc)) from None
    side = height  # a square avatar panel beside the clip
    width = clip_images[0].shape[1] + side
    # Head and shoulders, as in the clip.
    camera = Camera.look_at((0.0, 1.42, 1.25), (0.0, 1.38, 0.0), side, side, vertical_fov_deg=30)
    audio = recording["audio"]
    has_audio = audio is not None and len(audio) > 0
    try:
        writer = VideoWriter(out, width, height, fps=fps, crf=20,
                             audio_rate=recording["audio_rate"] if has_audio else None)
        with writer:
            started = time.monotonic()
            poses = recording["poses"]
            for index, (t, codes) in enumerate(poses):
                clip_index = int(np.searchsorted(clip_times, t, side="right")) - 1
                clip_image = clip_images[min(max(clip_index, 0), len(clip_images) - 1)]
                rgba = backend.render_skinned(avatar.skinned, avatar.skin_pose(codes), camera)
                writer.write(np.concatenate([clip_image, to_uint8(rgba)], axis=1))
                if index % 30 == 29 or index == len(poses) - 1:
                    say(f"  rendered {index + 1}/{len(poses)} frames "
                        f"({time.monotonic() - started:.0f} s)")
            if has_audio:
                writer.write_audio(audio)
    except VideoError as exc:
        raise UserError(str(exc)) from None
    finally:
        backend.release()


def run(args) -> int:
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ log lines are noise here
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from avatar.avatar import Avatar, load_avatar
    from avatar.template import load_template

    if not args.clip.is_file():
        raise UserError(f"demo clip {args.clip} is missing: run `bash scripts/setup.sh` "
                        "(it fetches it from the psychopy package on PyPI) or pass --clip")
    if not 64 <= args.height <= 2160 or args.height % 2:
        raise UserError("--height must be an even number of pixels in 64..2160")
    if args.avatar is not None and not args.avatar.is_file():
        raise UserError(f"avatar file {args.avatar} does not exist")
    from app import demo_avatar

    avatar_path = args.avatar or demo_avatar.find(args.clip)
    if args.avatar is None:
        say(f"the talker's own avatar, created from the clip by the set-up: {avatar_path.name}"
            if avatar_path is not None else
            "the default avatar (no avatar created from this clip: `bash scripts/setup.sh` "
            "makes one for the demo clip)")
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)

    from app.demo_window import open_demo_window

    window = open_demo_window(args, say)  # opens while the clip is tracked
    try:
        say(f"1/3 tracking {args.clip.name} (mediapipe + our solvers)...")
        frames, clip_fps = track_clip(args.clip, args.max_seconds)

        say("2/3 calling: signalling server, two WebRTC participants on 127.0.0.1"
            + (", the receiver's side in the window..." if window else "..."))
        recording = asyncio.run(run_call(frames, args.clip, args.fps, window, avatar_path))
    finally:
        if window is not None:
            window.close()
    stats = recording["stats"].get("codes", {})
    poses = recording["poses"]
    if not poses:
        raise UserError("the receiver got no codes during the call")
    received_avatar = recording["avatar"]
    template = load_template()
    if received_avatar is not None and received_avatar.status == "ready":
        avatar = Avatar(received_avatar.avatar, template)
        avatar_note = (f"the sender's avatar arrived over the call "
                       f"({received_avatar.size / 1e6:.1f} MB, hash verified)")
    else:
        avatar = load_avatar("default", template)
        reason = received_avatar.reason if received_avatar is not None else "none offered"
        avatar_note = f"the default avatar stood in ({reason})"
    audio_s = (0.0 if recording["audio"] is None
               else len(recording["audio"]) / recording["audio_rate"])
    say(f"  sent {recording['sent']} codes packets "
        f"({recording['sent_bytes'] / max(recording['sent'], 1):.0f} bytes each), "
        f"received {stats.get('unique', '?')}, lost {stats.get('lost', '?')}; "
        f"{audio_s:.1f} s of voice received; {avatar_note}")

    recording_path = args.out.with_suffix(".codes.jsonl")
    from avatar.codes import write_jsonl

    if window is not None:  # the call was shown live: no video to write
        write_jsonl(recording_path, [codes.replace(t=t) for t, codes in poses])
        say(f"3/3 shown in the window; wrote {recording_path} (the received session as "
            f"codes: `main.py render --codes {recording_path} --out FILE.mp4` makes the video, "
            "or run the demo with --no-window)")
        return 0
    say(f"3/3 rendering {len(poses)} frames of what the receiver got...")
    export(recording, args.clip, args.out, args.height, args.fps, args.backend, avatar)

    write_jsonl(recording_path, [codes.replace(t=t) for t, codes in poses])
    say(f"wrote {args.out} (source clip | received avatar, with the received voice) "
        f"and {recording_path} (the received session as codes: re-render it with "
        f"`main.py render --codes {recording_path} --out FILE.mp4`)")
    return 0
