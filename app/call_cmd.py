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
import sys
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
                        help="offer low-resolution webcam video (320x240, 15 fps) from a "
                             "V4L2 device such as /dev/video0 (or a video file, looped): sent "
                             "only to those who ask for it (--show-video, the window's V key); "
                             "off by default")
    parser.add_argument("--avatar", metavar="LCA",
                        help="our own avatar, offered to the others: a .lca file or stock:NAME "
                             "(`main.py avatar list` names them)")
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
                        help="meet through a Janus SFU instead of a full mesh: for rooms of "
                             "more than 6; --room must then be a number. Its WebSocket API "
                             "(ws://host:8188: a participant that crashes is seen leaving at "
                             "once) or its HTTP API (http://host:8088/janus: only after "
                             "Janus's session timeout, 60 s by default)")
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
    never waits for a frame: ``on_codes`` (if set) is called on the tracker's thread as each
    frame's codes are ready (the call sends them at once: ``CallApp.send_as_tracked``), and
    the loop's tick takes whatever is newest and not yet sent."""

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
        self.error: str | None = None  # why the tracker stopped, if it did
        self.on_codes: Callable[[], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from tracking.tracker import Tracker, track

        try:
            with Tracker(mirror=self.mirror) as tracker:
                self.tracker = tracker
                for result in track(self.source, tracker, on_event=self.say,
                                    should_stop=self._stop.is_set):
                    self._latest = result.codes
                    self.frames += 1
                    if self.on_codes is not None:
                        self.on_codes()
                    if self._stop.is_set():
                        break
        except Exception as exc:  # noqa: BLE001 - a broken device must not end the call
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if not self._stop.is_set():
            self.error = "the source ended"

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
        # A video file stands in for a camera (tests, demos): played in real time, looped.
        player = (MediaPlayer(device, loop=True) if Path(device).is_file() else
                  MediaPlayer(device, format="v4l2",
                              options={"video_size": "320x240", "framerate": "15"}))
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


class CallApp:
    """A running ``main.py call``: its sources (codes, voice, video), its sinks (window,
    speakers, recording, headset, VMC, stats file) and the call, mesh or Janus. ``open``
    makes them (a ``UserError`` for bad input), ``tick`` runs one display frame, ``close``
    stops whatever was opened. Events of the call, the camera and the recording become one
    line in the log and, with a window, the overlay's note (``notify``)."""

    def __init__(self, args: argparse.Namespace, on_poses: Callable[[dict], None] | None):
        self.args = args
        self.on_poses = on_poses
        self.say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
        self.live = self.headset = self.window = self.controls = self.monitor = None
        self.mic = self.recording = self.vmc_out = self.speakers = self.call = None
        self.sent_early = None  # codes sent as tracked since the last tick
        self.audio_track = None
        self.frames: list = []
        self.stats_path = Path(args.stats) if args.stats else None
        self.playout_delay_s: dict[str, float] = {}
        self.names: dict[str, str] = {}   # remote id -> name, kept after it leaves
        self.events: list[dict] = []
        self.started = time.monotonic()
        self.seq = 0
        self.last_stats = self.last_status = self.started
        self.tracker_down = False

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> None:
        from app.call_window import (CallMonitor, MicControl, check_window_arguments,
                                     no_window_reason, open_call_window)
        from app.cli import UserError, read_codes
        from app.speakers import VoiceMixer, open_speakers
        from net.audio import open_audio_source

        args, say = self.args, self.say
        logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if args.fps <= 0 or args.fps > 240:
            raise UserError("--fps must be within (0, 240]")
        vmc_in = bool(args.codes) and args.codes.startswith("vmc:")
        self.frames = read_codes(args.codes) if args.codes and not vmc_in else []
        if args.avatar and not Path(args.avatar).is_file():
            raise UserError(f"avatar file {args.avatar} does not exist")
        if not args.avatar:
            from app.cli import check_avatar_file
            from app.user_avatar import avatar_or_user_default

            args.avatar, note = avatar_or_user_default(None)
            if note:
                check_avatar_file(args.avatar, "your default avatar")
                say(note)
        self.config = self._config()
        try:
            self.audio_track, self.audio_note = open_audio_source(args.audio, args.mic)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.video_track = _open_video(args.video) if args.video else None
        check_window_arguments(args)
        if args.record:
            from app.recording import open_recording

            self.recording = open_recording(args.record, args.fps, args.name)
            self.recording.own_avatar(args.avatar)
        no_window = no_window_reason(args)
        if no_window is None:
            self.window = open_call_window(args, say)  # its own process: see app.call_window
        elif not args.xr:
            say(no_window)
        if self.window is not None:
            self.controls = self.window.controls
            self.controls.show_video = getattr(args, "show_video", False)
            self.monitor = CallMonitor(self.controls)
            if self.audio_track is not None:
                self.audio_track = self.mic = MicControl(self.audio_track, self.controls,
                                                         self.monitor)
        if self.recording is not None:
            if self.mic is not None:  # our voice as sent: silence while muted
                self.mic.seen = self.recording.own_voice
                self.monitor.recording = args.record
            else:
                self.audio_track = self.recording.voice_tee(self.audio_track)
        if args.track:
            self.live = _LiveTracker(args.track, args.mirror, self._camera_event)
        elif vmc_in:
            from app.vmc_io import VmcCodesSource

            self.live = VmcCodesSource(args.codes.removeprefix("vmc:") or "39539", "--codes")
        if args.vmc_out:
            from app.vmc_io import open_sender

            self.vmc_out = open_sender(args.vmc_out, "--vmc-out")
        if args.xr:
            self.headset = _Headset(args.xr_graphics)
            say("headset ready: remote participants will stand 1.5 m in front of you")
        # Stereo: each voice from its avatar (the headset's, or the window's with --spatial-voice).
        self.mixer = VoiceMixer(channels=2 if args.xr or getattr(args, "spatial_voice", False)
                                else 1)
        self.speakers, speakers_note = open_speakers(self.mixer, args.speaker)
        if self.speakers is None:
            logging.getLogger("splatcall.call").warning("%s: the call goes on without sound",
                                                        speakers_note)
        else:
            say(f"speakers: {speakers_note}")
        self.started = self.last_stats = self.last_status = time.monotonic()  # --duration's

    def _config(self):
        from app.cli import UserError
        from net.config import CallConfig

        args = self.args
        if args.janus:
            if not args.room.isdigit():
                raise UserError("with --janus, --room must be a number (a VideoRoom id)")
            token = ""
        else:
            token = _token(args)
        addresses = ["127.0.0.1"] if args.loopback else (args.ice_address or None)
        config = CallConfig(url=args.janus or args.server, room=args.room, token=token,
                            name=args.name, ice_servers=args.stun, host_addresses=addresses,
                            avatar_path=args.avatar)
        if args.avatar_cache:
            config.avatar_cache_dir = Path(args.avatar_cache)
        return config

    def make_call(self):
        """The call, through Janus with ``--janus``, else a mesh."""
        if self.args.janus:
            from net.janus import JanusCall

            return JanusCall(self.config, audio_track=self.audio_track,
                             video_track=self.video_track, on_event=self.on_event,
                             on_audio=self.on_audio, on_avatar=self.on_avatar,
                             on_video=self.monitor.video if self.monitor is not None else None)
        from net.call import Call

        return Call(self.config, audio_track=self.audio_track, video_track=self.video_track,
                    on_event=self.on_event, on_audio=self.on_audio, on_avatar=self.on_avatar,
                    on_video=self.monitor.video if self.monitor is not None else None)

    # -- what the call reports ----------------------------------------------------------------
    def notify(self, text: str) -> None:
        """One line in the log and, with a window, the overlay's note."""
        self.say(f"[{time.monotonic() - self.started:6.2f}s] {text}")
        if self.monitor is not None:
            self.monitor.note = text

    def _camera_event(self, text: str) -> None:
        """What the tracker says about its source (on the tracker's thread)."""
        if text.startswith("source lost"):
            text += ": your avatar holds a neutral pose until the camera is back"
        self.notify(f"camera: {text}")

    def on_event(self, kind: str, remote_id: str, detail: str) -> None:
        from net.inbound import event_text

        self.events.append({"t": time.monotonic() - self.started, "event": kind,
                            "id": remote_id, "detail": detail})
        remote = self.call.remotes.get(remote_id) if self.call is not None else None
        if remote is not None and remote.name:
            self.names[remote_id] = remote.name
        elif kind == "joined" and detail:
            self.names[remote_id] = detail
        name = self.names.get(remote_id)
        who = f"{name} ({remote_id})" if name else remote_id
        self.notify(f"{kind}: {event_text(kind, who, detail)}")

    def on_audio(self, remote_id: str, frame) -> None:
        from app.speakers import voice_delay_s
        from net.audio import frame_to_mono

        if self.recording is not None:
            self.recording.audio(remote_id, frame)
        if self.speakers is not None or self.monitor is not None:
            samples = frame_to_mono(frame)
            if self.monitor is not None:
                self.monitor.voice(remote_id, samples)
            if self.speakers is not None:
                self.mixer.push(remote_id, samples, time.monotonic(), voice_delay_s(
                    self.playout_delay_s.get(remote_id, 0.0),
                    self.window.display_s if self.window is not None else 0.0))

    def on_avatar(self, remote_id: str, data) -> None:
        if self.headset is not None:
            self.headset.avatar_arrived(remote_id, data)
        exchange = self.call.avatars
        path = exchange.cache_dir / f"{exchange.remotes[remote_id].sha256}.lca"
        if self.window is not None:
            self.window.avatar(remote_id, path)
        if self.recording is not None:
            self.recording.avatar_file(remote_id, path)

    # -- one display frame ----------------------------------------------------------------------
    def own_codes(self, now: float):
        """Our codes for this tick (None: nothing new). A camera that is off, or a tracker
        that stopped, sends a neutral pose at the same rate."""
        from avatar.codes import Codes

        codes = None
        if self.live is not None:
            codes = self.live.take()  # the tracker's capture time and frame count
            error = getattr(self.live, "error", None)
            if error is not None:
                if not self.tracker_down:
                    self.tracker_down = True
                    self.notify(f"camera: the tracker stopped ({error}): your avatar holds a "
                                "neutral pose")
                codes = Codes(t=now, seq=self.seq % 2**32)
        elif self.frames:
            codes = self.frames[self.seq % len(self.frames)].replace(t=now, seq=self.seq % 2**32)
        if codes is not None and self.controls is not None and self.controls.camera_off:
            codes = self._neutral(codes)
        self.seq += 1
        return codes

    def send_as_tracked(self, loop) -> None:
        """Send the live tracker's codes as soon as it has them, on ``loop`` (the call's),
        not at the next tick: that waited half a tick on average, up to a whole one (17 ms
        at 60 Hz). The tick still sends what this has not (a tracker that stopped: the
        neutral pose) and gives the codes sent to the overlay and the recording."""
        if not isinstance(self.live, _LiveTracker):
            return

        def ready() -> None:  # the tracker's thread
            try:
                loop.call_soon_threadsafe(self._send_tracked)
            except RuntimeError:
                pass  # the loop has closed: the call is over

        self.live.on_codes = ready

    def _send_tracked(self) -> None:
        if self.call is None or self.live is None:
            return
        codes = self.live.take()
        if codes is None:
            return
        if self.controls is not None and self.controls.camera_off:
            codes = self._neutral(codes)
        self.call.send_codes(codes)
        self.sent_early = codes

    @staticmethod
    def _neutral(codes):
        from avatar.codes import Codes

        return Codes(t=codes.t, seq=codes.seq)  # neutral, same timing

    def tick(self, now: float) -> bool:
        """One display frame: send our codes, play out theirs to every sink. False: leave."""
        from app.call_window import toggle_recording

        args, call = self.args, self.call
        if args.duration and now - self.started >= args.duration:
            return False
        codes = self.own_codes(now)
        if codes is not None:
            call.send_codes(codes)
        early, self.sent_early = self.sent_early, None
        codes = codes if codes is not None else early  # sent since the last tick
        poses = call.poses(now)
        for remote_id, remote in call.remotes.items():
            self.playout_delay_s[remote_id] = remote.playout.delay_s
            if remote.name:
                self.names[remote_id] = remote.name
        self.mixer.keep_only(call.remotes)
        if self.window is not None:
            window, controls, monitor = self.window, self.controls, self.monitor
            window.poll()
            if self.mixer.channels == 2:
                self.mixer.place(window.voice_places)
            if hasattr(call, "video"):  # the mesh (net.video): asked for, or not sent
                call.video.want = controls.show_video
            if window.closed:
                self.say("the window was closed: leaving")
                return False
            if controls.take("record"):
                self.recording = toggle_recording(self.recording, args, call, self.mic, monitor)
            if controls.take("recalibrate"):
                monitor.note = (self.live.recalibrate() if isinstance(self.live, _LiveTracker)
                                else "only a live tracker (--track) recalibrates")
            if self.recording is not None and self.recording.error:
                monitor.note = self.recording.error
            monitor.tick(call.remotes, poses, codes, now)
            window.show(monitor.latest)
        if self.recording is not None:
            self.recording.tick(call.remotes, poses, codes)
        if self.headset is not None:
            self.headset.update(poses, set(call.remotes))
            self.mixer.place(self.headset.stage.voice_places())
        if self.vmc_out is not None:
            relayed = _vmc_codes_of(args.vmc_of, codes, poses, call.remotes)
            if relayed is not None:
                self.vmc_out.send(relayed)
        if poses and self.on_poses is not None:
            self.on_poses(poses)
        if self.stats_path is not None and now - self.last_stats >= 1.0:
            _write_json(self.stats_path, self.snapshot())
            self.last_stats = now
        if not args.quiet and now - self.last_status >= 5.0:
            parts = [f"{r.name or rid}: {r.stats.unique} frames, "
                     f"{r.stats.lost} lost, delay {r.playout.delay_s * 1000:.0f} ms"
                     for rid, r in call.remotes.items()]
            self.say(f"[{now - self.started:6.2f}s] " + ("; ".join(parts) or "alone in the room"))
            self.last_status = now
        return True

    def snapshot(self) -> dict:
        data = self.call.stats()
        joined_at = self.call.joined_at
        data.update({"joined_s": joined_at - self.started if joined_at else None,
                     "events": self.events, "uptime_s": time.monotonic() - self.started,
                     "fps": self.args.fps, "camera_down": self.tracker_down})
        if self.speakers is not None:
            data["speakers"] = self.speakers.summary()
        return data

    # -- the loop ------------------------------------------------------------------------------
    async def main(self) -> None:
        from app.cli import UserError
        from net.signal_client import SignallingError

        args, say = self.args, self.say
        call = self.call = self.make_call()
        say(f"joining room {args.room!r} at {args.janus or args.server} as {args.name!r}; "
            f"voice: {self.audio_note}")
        if args.janus and args.janus.startswith(("http://", "https://")):
            print("warning: over Janus's HTTP API a participant whose process dies is seen "
                  "leaving only after Janus's session timeout (60 s by default); its "
                  "WebSocket API (ws://host:8188) shows it at once", file=sys.stderr,
                  flush=True)
        try:
            await call.join()
        except (SignallingError, ConnectionError) as exc:  # JanusError is a ConnectionError
            raise UserError(f"could not join: {exc}") from None
        say(f"joined as {call.id} with {len(call.remotes)} other participant(s)")
        if self.window is not None:  # the window's pose is of when it asks, not of our tick
            self.window.play_out_when_asked(lambda: call.remotes)
        if self.live is not None:
            self.send_as_tracked(asyncio.get_running_loop())
            self.live.start()
            say(f"tracking {args.track}" if args.track else f"relaying {self.live.description}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        period = 1.0 / args.fps
        next_frame = time.monotonic()
        try:
            while not stop.is_set() and self.tick(time.monotonic()):
                next_frame += period
                delay = next_frame - time.monotonic()
                if delay < -0.5:
                    next_frame = time.monotonic()  # fell far behind: do not burst to catch up
                await asyncio.sleep(max(0.0, delay))
        finally:
            if self.stats_path is not None:
                _write_json(self.stats_path, self.snapshot())
            await call.leave()
            if self.audio_track is not None:
                # A file's player thread posts frames to this loop: stop it while the loop
                # still runs (stopped after asyncio.run, it raised "Event loop is closed").
                self.audio_track.stop()
            if self.video_track is not None:  # (the same for a video file's player thread)
                self.video_track.stop()
            if self.recording is not None:
                self.recording.close()
                say(self.recording.error or f"recorded to {args.record}")
            say("left the call")

    def close(self) -> None:
        if self.window is not None:
            self.window.stop()
        if self.speakers is not None:
            self.speakers.close()
        if self.live is not None:
            self.live.stop()
        if self.headset is not None:
            self.headset.stop()
        if self.vmc_out is not None:
            from app.vmc_io import sender_summary

            self.say(sender_summary(self.vmc_out))
            self.vmc_out.close()


def run(args: argparse.Namespace, on_poses: Callable[[dict], None] | None = None) -> int:
    """Run a call until ``--duration`` or Ctrl-C. ``on_poses`` (for the app's renderer)
    receives ``{remote_id: Codes}`` once per display frame."""
    app = CallApp(args, on_poses)
    try:
        app.open()
        asyncio.run(app.main())
    finally:
        app.close()
    return 0
