"""``main.py call``: join a room and exchange codes and voice with everyone in it.

Our codes come from a JSONL file (``--codes``, looped, re-stamped at ``--fps``); the
tracker will be wired in by ``app``'s demo. What arrives from each remote participant is
handed, once per display frame, to an ``on_poses(dict[remote_id, Codes])`` callback (the
renderer's entry point) and, with ``--record FILE``, written with every voice and avatar
into one recording file (``app.recording``, ``net.recording``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "call",
        help="join a call: send codes and voice, receive everyone else's",
        description=(
            "Join a room of a signalling server (main.py serve) and keep a WebRTC connection "
            "to every other participant: our codes (from --codes) and voice go out, theirs "
            "come in, are played out smoothly and can be recorded."),
    )
    parser.add_argument("--server", default="ws://127.0.0.1:8765/ws",
                        help="signalling server URL (default ws://127.0.0.1:8765/ws)")
    parser.add_argument("--room", required=True, help="room name")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token", help="join token (from main.py serve --make-token ROOM)")
    auth.add_argument("--token-file", metavar="FILE",
                      help="read the join token from this file (keeps it out of `ps`); "
                           "the SPLATCALL_TOKEN environment variable works too")
    auth.add_argument("--secret-file",
                      help="mint our own token with the server's secret file (same machine)")
    parser.add_argument("--name", default=os.environ.get("USER", "guest"),
                        help="name shown to the others")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--track", metavar="INPUT",
                        help="track a person live and send their codes: camera, camera:N, "
                             "camera:/dev/videoN, or a video file (played in real time)")
    source.add_argument("--codes", metavar="JSONL",
                        help="codes to send, one frame a line (looped), or vmc:[HOST:]PORT to "
                             "relay what a VMC sender (VSeeFace, XR Animator...) sends there "
                             "(PORT alone listens on every interface; vmc: alone on port "
                             "39539); without --codes or "
                             "--track we send nothing but still receive")
    parser.add_argument("--mirror", action="store_true",
                        help="with --track: move the avatar like a mirror image")
    parser.add_argument("--fps", type=float, default=60.0,
                        help="codes frames sent and poses played out per second (default 60)")
    parser.add_argument("--audio", default="mic",
                        help="voice source: mic (default; silence with a warning if none), "
                             "none, tone:HZ, or an audio file (looped)")
    parser.add_argument("--video", metavar="DEVICE", default=None,
                        help="also send low-resolution webcam video (320x240, 15 fps) from a "
                             "V4L2 device such as /dev/video0; off by default")
    parser.add_argument("--avatar", metavar="LCA", help="our own avatar, offered to the others")
    parser.add_argument("--avatar-cache", default=None,
                        help="where fetched avatars are kept (default ~/.cache/splatcall/avatars)")
    parser.add_argument("--record", metavar="FILE",
                        help="record the call into this one file (MPEG-TS): everyone's codes, "
                             "voices, avatars, names, join and leave times; replay it with "
                             "main.py play, render it with main.py export")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="leave after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--stats", metavar="JSON",
                        help="write call statistics here (every second and at the end)")
    parser.add_argument("--loopback", action="store_true",
                        help="offer only 127.0.0.1 to ICE (all participants on this machine)")
    parser.add_argument("--ice-address", action="append", default=[],
                        help="offer exactly this local address to ICE (repeatable)")
    parser.add_argument("--stun", action="append", default=[],
                        help="STUN/TURN server URL, e.g. stun:stun.example.org:3478 (repeatable)")
    parser.add_argument("--janus", metavar="URL",
                        help="meet through a Janus SFU (its HTTP API, e.g. "
                             "http://host:8088/janus) instead of a full mesh: for rooms of more "
                             "than 6; --room must then be a number, and avatars are not exchanged "
                             "(the default stands in)")
    parser.add_argument("--xr", action="store_true",
                        help="show the other participants life-size in a VR headset (OpenXR: "
                             "SteamVR, Monado or Meta's Quest Link)")
    parser.add_argument("--xr-graphics", choices=("auto", "egl", "glx"), default="auto",
                        help="OpenGL binding for --xr (default: glx when DISPLAY is set, else egl)")
    parser.add_argument("--vmc-out", metavar="HOST:PORT", nargs="?", const="39539",
                        help="send a participant's played-out codes over the VMC protocol to a "
                             "VMC receiver (PORT alone: this machine; no value: this machine's "
                             "port 39539, VMC's usual)")
    parser.add_argument("--vmc-of", metavar="NAME", default=None,
                        help="whose codes --vmc-out sends: a participant's name, or 'me' for "
                             "our own (default: the first remote participant)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    from app.call_window import add_window_arguments

    add_window_arguments(parser)
    parser.set_defaults(func=run)


class _LiveTracker:
    """The tracker on its own thread (mediapipe releases the GIL), so the call's event loop
    never waits for a frame: the loop sends whatever codes are newest at each tick."""

    def __init__(self, spec: str, mirror: bool, say: Callable[[str], None]):
        import threading

        from app.cli import UserError
        from tracking.sources import SourceError, VideoSource, open_source

        try:
            path = Path(spec)
            # A video file stands in for a camera: paced in real time, its end a lost device.
            self.source = (VideoSource(path, live=True)
                           if path.is_file() and not spec.startswith("camera")
                           and path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".webm")
                           else open_source(spec))
        except SourceError as exc:
            raise UserError(str(exc)) from None
        self.mirror = mirror
        self.say = say
        self._latest = None
        self.tracker = None
        self._taken_seq = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracker", daemon=True)
        self.frames = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from tracking.tracker import Tracker, track

        with Tracker(mirror=self.mirror) as tracker:
            self.tracker = tracker
            for result in track(self.source, tracker, on_event=self.say,
                                should_stop=self._stop.is_set):
                self._latest = result.codes
                self.frames += 1
                if self._stop.is_set():
                    break

    def recalibrate(self) -> str:
        """Take the face's neutral again (the window's N key); what happened, in words."""
        if self.tracker is None:
            return "the tracker has not started yet"
        self.tracker.recalibrate()
        return "recalibrating: look at the camera with a neutral face"

    def take(self):
        """The newest codes if they are new since the last call, else None."""
        codes = self._latest
        if codes is None or codes.seq == self._taken_seq:
            return None
        self._taken_seq = codes.seq
        return codes

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.source.close()


def sync_stage(stage, poses: dict, present: set, default_avatar) -> None:
    """Bring an XR stage in line with the call: participants who left step off, newcomers
    step on with ``default_avatar`` (until their own arrives), everyone takes their latest
    played-out codes."""
    known = set(stage.keys)
    for remote_id in known - present:
        stage.remove(remote_id)
    for remote_id, codes in poses.items():
        if remote_id not in known:
            stage.add(remote_id, default_avatar, codes)
        stage.set_codes(remote_id, codes)


class _Headset:
    """Remote participants in the headset: each stands on the XR stage with its own avatar
    once it has arrived (the default avatar until then), posed by the codes played out."""

    def __init__(self, graphics: str):
        from app.cli import UserError
        from app.xr_view import XrRunner, XrStage
        from avatar.avatar import load_avatar
        from avatar.template import load_template
        from render.backends import poser_for
        from render.errors import XrUnavailableError

        self.template = load_template()
        self.default_avatar = load_avatar("default", self.template)
        # The headset draws with the GL renderer, which poses the avatars in compute shaders.
        self.stage = XrStage(poser=poser_for("gl"))
        self.runner = XrRunner(self.stage, graphics=graphics).start()
        self.runner.ready.wait(60)
        if self.runner.error is not None:
            error = self.runner.error
            if isinstance(error, XrUnavailableError):
                raise UserError(str(error)) from None
            raise error

    def avatar_arrived(self, remote_id: str, data) -> None:
        from avatar.avatar import Avatar

        self.stage.add(remote_id, Avatar(data, self.template))

    def update(self, poses: dict, present: set) -> None:
        sync_stage(self.stage, poses, present, self.default_avatar)

    def stop(self) -> None:
        self.runner.stop()


def _token(args) -> str:
    from app.cli import UserError
    from net.tokens import make_token

    if args.token:
        return args.token
    if args.token_file:
        try:
            with open(args.token_file, "rb") as handle:
                token = handle.read(4096).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read a token from {args.token_file}: {exc}") from None
        if not token or len(token) > 1024:
            raise UserError(f"{args.token_file} holds no join token")
        return token
    if os.environ.get("SPLATCALL_TOKEN"):
        return os.environ["SPLATCALL_TOKEN"].strip()
    if args.secret_file:
        from net.tokens import load_or_create_secret

        try:
            secret = load_or_create_secret(args.secret_file)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot use the secret file {args.secret_file}: {exc}") from None
        return make_token(secret, args.room)  # a fresh identity: two of us may share a name
    raise UserError("give --token, --token-file or SPLATCALL_TOKEN (from main.py serve "
                    "--make-token ROOM) or --secret-file")


def _open_video(device: str):
    """A low-resolution webcam track, or a UserError saying why there is none."""
    from aiortc.contrib.media import MediaPlayer

    from app.cli import UserError

    if not Path(device).exists():
        raise UserError(f"no camera at {device}")
    try:
        player = MediaPlayer(device, format="v4l2",
                             options={"video_size": "320x240", "framerate": "15"})
    except Exception as exc:  # noqa: BLE001 - pyav reports device errors many ways
        raise UserError(f"cannot open the camera {device}: {exc}") from None
    if player.video is None:
        raise UserError(f"{device} gives no video")
    return player.video


def _vmc_codes_of(who: str | None, ours, poses: dict, remotes: dict):
    """The codes ``--vmc-out`` sends this tick: ours for 'me', else the named (or first)
    remote participant's played-out codes; None when there are none."""
    if who == "me":
        return ours
    for remote_id, codes in poses.items():
        remote = remotes.get(remote_id)
        if who is None or (remote is not None and remote.name == who):
            return codes
    return None


def _write_json(path: Path, data: dict) -> None:
    from common.files import write_text

    write_text(path, json.dumps(data, indent=1, default=float))


def run(args: argparse.Namespace, on_poses: Callable[[dict], None] | None = None) -> int:
    """Run a call until ``--duration`` or Ctrl-C. ``on_poses`` (for the app's renderer)
    receives ``{remote_id: Codes}`` once per display frame."""
    from app.call_window import (CallMonitor, MicControl, check_window_arguments,
                                 no_window_reason, open_call_window, toggle_recording)
    from app.cli import UserError, read_codes
    from app.speakers import VoiceMixer, open_speakers, voice_delay_s
    from avatar.codes import Codes
    from net.audio import frame_to_mono, open_audio_source
    from net.call import Call, CallConfig
    from net.signal_client import SignallingError

    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.fps <= 0 or args.fps > 240:
        raise UserError("--fps must be within (0, 240]")
    vmc_in = bool(args.codes) and args.codes.startswith("vmc:")
    frames = read_codes(args.codes) if args.codes and not vmc_in else []
    live = None
    headset = None
    if args.avatar and not Path(args.avatar).is_file():
        raise UserError(f"avatar file {args.avatar} does not exist")
    if not args.avatar:
        from app.cli import check_avatar_file
        from app.user_avatar import avatar_or_user_default

        args.avatar, note = avatar_or_user_default(None)
        if note:
            check_avatar_file(args.avatar, "your default avatar")
            if not args.quiet:
                print(note, flush=True)
    try:
        audio_track, audio_note = open_audio_source(args.audio, args.mic)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    video_track = _open_video(args.video) if args.video else None
    if args.janus:
        if not args.room.isdigit():
            raise UserError("with --janus, --room must be a number (a VideoRoom id)")
        token = ""
    else:
        token = _token(args)
    addresses = ["127.0.0.1"] if args.loopback else (args.ice_address or None)
    config = CallConfig(url=args.server, room=args.room, token=token, name=args.name,
                        ice_servers=args.stun, host_addresses=addresses,
                        avatar_path=args.avatar)
    if args.avatar_cache:
        config.avatar_cache_dir = Path(args.avatar_cache)
    window, controls, monitor, mic = None, None, None, None
    stats_path = Path(args.stats) if args.stats else None
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    check_window_arguments(args)
    recording = None
    if args.record:
        from app.recording import open_recording

        recording = open_recording(args.record, args.fps, args.name)
        recording.own_avatar(args.avatar)
    no_window = no_window_reason(args)
    if no_window is None:
        window = open_call_window(args, say)  # its own process: see app.call_window
    elif not args.xr:
        say(no_window)
    if window is not None:
        controls = window.controls
        monitor = CallMonitor(controls)
        if audio_track is not None:
            audio_track = mic = MicControl(audio_track, controls, monitor)
    if recording is not None:
        if mic is not None:  # our voice as sent: silence while muted
            mic.seen = recording.own_voice
            monitor.recording = args.record
        else:
            audio_track = recording.voice_tee(audio_track)
    if args.track:
        live = _LiveTracker(args.track, args.mirror, say)
    elif vmc_in:
        from app.vmc_io import VmcCodesSource

        live = VmcCodesSource(args.codes.removeprefix("vmc:") or "39539", "--codes")
    vmc_out = None
    if args.vmc_out:
        from app.vmc_io import open_sender

        vmc_out = open_sender(args.vmc_out, "--vmc-out")
    if args.xr:
        headset = _Headset(args.xr_graphics)
        say("headset ready: remote participants will stand 1.5 m in front of you")
    mixer = VoiceMixer()
    speakers, speakers_note = open_speakers(mixer, args.speaker)
    if speakers is None:
        logging.getLogger("splatcall.call").warning("%s: the call goes on without sound",
                                                    speakers_note)
    else:
        say(f"speakers: {speakers_note}")
    playout_delay_s: dict[str, float] = {}
    events: list[dict] = []
    started = time.monotonic()

    def on_event(kind: str, remote_id: str, detail: str) -> None:
        events.append({"t": time.monotonic() - started, "event": kind, "id": remote_id,
                       "detail": detail})
        say(f"[{time.monotonic() - started:6.2f}s] {kind} {remote_id} {detail}")

    def on_audio(remote_id: str, frame) -> None:
        if recording is not None:
            recording.audio(remote_id, frame)
        if speakers is not None or monitor is not None:
            samples = frame_to_mono(frame)
            if monitor is not None:
                monitor.voice(remote_id, samples)
            if speakers is not None:
                mixer.push(remote_id, samples, time.monotonic(), voice_delay_s(
                    playout_delay_s.get(remote_id, 0.0),
                    window.display_s if window is not None else 0.0))

    async def main() -> None:
        nonlocal recording
        if args.janus:
            from net.janus import JanusCall

            call = JanusCall(args.janus, int(args.room), name=args.name, audio_track=audio_track,
                             host_addresses=addresses, on_audio=on_audio, on_event=on_event)
        else:
            def on_avatar(remote_id: str, data) -> None:
                if headset is not None:
                    headset.avatar_arrived(remote_id, data)
                sha = call.avatars.remotes[remote_id].sha256
                if window is not None:
                    window.avatar(remote_id, call.avatars.cache_dir / f"{sha}.lca")
                if recording is not None:
                    recording.avatar_file(remote_id, call.avatars.cache_dir / f"{sha}.lca")

            call = Call(config, audio_track=audio_track, video_track=video_track,
                        on_event=on_event, on_audio=on_audio, on_avatar=on_avatar)
        say(f"joining room {args.room!r} at {args.janus or args.server} as {args.name!r}; "
            f"voice: {audio_note}")
        try:
            await call.join()
        except (SignallingError, ConnectionError) as exc:  # JanusError is a ConnectionError
            raise UserError(f"could not join: {exc}") from None
        say(f"joined as {call.id} with {len(call.remotes)} other participant(s)")
        if live is not None:
            live.start()
            say(f"tracking {args.track}" if args.track else f"relaying {live.description}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        period = 1.0 / args.fps
        seq = 0
        next_frame = time.monotonic()
        last_stats = last_status = time.monotonic()

        def snapshot() -> dict:
            data = call.stats()
            joined_at = getattr(call, "joined_at", None)
            data.update({"joined_s": joined_at - started if joined_at else None,
                         "events": events, "uptime_s": time.monotonic() - started,
                         "fps": args.fps})
            if speakers is not None:
                data["speakers"] = speakers.summary()
            return data

        try:
            while not stop.is_set():
                now = time.monotonic()
                if args.duration and now - started >= args.duration:
                    break
                codes = None
                if live is not None:
                    codes = live.take()  # the tracker's capture time and frame count
                elif frames:
                    codes = frames[seq % len(frames)].replace(t=now, seq=seq % 2**32)
                if codes is not None:
                    if controls is not None and controls.camera_off:
                        codes = Codes(t=codes.t, seq=codes.seq)  # neutral, same timing
                    call.send_codes(codes)
                seq += 1
                poses = call.poses(now)
                for remote_id, remote in call.remotes.items():
                    playout_delay_s[remote_id] = remote.playout.delay_s
                mixer.keep_only(call.remotes)
                if window is not None:
                    window.poll()
                    if window.closed:
                        say("the window was closed: leaving")
                        break
                    if controls.take("record"):
                        recording = toggle_recording(recording, args, call, mic, monitor)
                    if controls.take("recalibrate"):
                        monitor.note = (live.recalibrate() if isinstance(live, _LiveTracker)
                                        else "only a live tracker (--track) recalibrates")
                    if recording is not None and recording.error:
                        monitor.note = recording.error
                    monitor.tick(call.remotes, poses, codes, now)
                    window.show(monitor.latest)
                if recording is not None:
                    recording.tick(call.remotes, poses, codes)
                if headset is not None:
                    headset.update(poses, set(call.remotes))
                if vmc_out is not None:
                    relayed = _vmc_codes_of(args.vmc_of, codes, poses, call.remotes)
                    if relayed is not None:
                        vmc_out.send(relayed)
                if poses and on_poses is not None:
                    on_poses(poses)
                if stats_path is not None and now - last_stats >= 1.0:
                    _write_json(stats_path, snapshot())
                    last_stats = now
                if not args.quiet and now - last_status >= 5.0:
                    parts = [f"{r.name or rid}: {r.stats.unique} frames, "
                             f"{r.stats.lost} lost, delay {r.playout.delay_s * 1000:.0f} ms"
                             for rid, r in call.remotes.items()]
                    say(f"[{now - started:6.2f}s] " + ("; ".join(parts) or "alone in the room"))
                    last_status = now
                next_frame += period
                delay = next_frame - time.monotonic()
                if delay < -0.5:
                    next_frame = time.monotonic()  # fell far behind: do not burst to catch up
                await asyncio.sleep(max(0.0, delay))
        finally:
            if stats_path is not None:
                _write_json(stats_path, snapshot())
            await call.leave()
            if audio_track is not None:
                # A file's player thread posts frames to this loop: stop it while the loop
                # still runs (stopped after asyncio.run, it raised "Event loop is closed").
                audio_track.stop()
            if recording is not None:
                recording.close()
                say(recording.error or f"recorded to {args.record}")
            say("left the call")

    try:
        asyncio.run(main())
    finally:
        if window is not None:
            window.stop()
        if speakers is not None:
            speakers.close()
        if live is not None:
            live.stop()
        if headset is not None:
            headset.stop()
        if vmc_out is not None:
            from app.vmc_io import sender_summary

            say(sender_summary(vmc_out))
            vmc_out.close()
    return 0
