"""Avatars in a VR headset: ``view --xr`` and the XR stage the call app feeds frame by frame.

``XrStage`` is the room: remote participants (an ``Avatar`` each, and the latest ``Codes``
that arrived for it) standing life-size on the floor, side by side, at a comfortable
distance in front of the user, each turned toward them. It is the scene of a
``render.xr.XrTarget``: every frame the target calls it once, and participants whose codes
changed are posed again (one pose per participant per frame at most) by the stage's poser,
the backend's (``render.backends.poser_for``, asked once by the app): with the GL renderer
the stage hands over ``PosedAvatars``: each avatar's arrays once, and per changed participant
only its bone transforms, face weights and place in the room, posed on the GPU
(render.gl_pose). With the cuda backend each changed participant is posed and placed on the
CUDA device (render.cuda_pose) and the room is those device tensors concatenated. With the
reference (or ``--xr-posing cpu``, or avatars the GPU poser refuses) it poses in numpy, moves
each avatar to its place and concatenates. When nothing changed the same object comes back,
so the target neither uploads, poses nor re-sorts for an unmoved head. ``set_codes`` may be
called from another thread (the network's) while the XR loop runs.

Placement happens at the first tracked frame and again on "recentre" (the controller's menu
or select button, the runtime's own recentre, or ``XrStage.recentre()``): from the head's
position and yaw at that moment, so the avatars then stay put in the room while the user
moves.

``XrRunner(stage).start()`` runs the headset loop on its own thread for an asyncio app (the
call); ``run_xr_view(args)`` is the ``view --xr`` command: one avatar driven by a codes file
(played at its own pace, looped) or a built-in pose (``app.poses``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.codes import Codes
from common.files import write_text
from render.backends import BACKENDS
from render.errors import RenderError
from render.gaussians import Gaussians
from render.skinned import NumpyPoser, Poser
from render.xr import XrFrame, placements_in_front

COMFORT_DISTANCE_M = 1.5
POSING_NAMES = {"gl": "GPU posing", "device": "device posing"}
SIDE_SPACING_M = 0.9


@dataclass
class _Participant:
    avatar: object                      # avatar.avatar.Avatar (skinned, skin_pose)
    codes: Codes
    posed: object = None                # the poser's part: placed Gaussians or a SkinPose
    posed_codes: Codes | None = None
    posed_place: int = -1
    posed_by: str = ""                  # the poser's ``where`` when ``posed`` was made


class XrStage:
    """Remote participants placed in front of the XR user (see the module docstring)."""

    def __init__(self, distance_m: float = COMFORT_DISTANCE_M, spacing_m: float = SIDE_SPACING_M,
                 poser: Poser | None = None, warn=None):
        """``poser``: where the participants are posed (``render.backends.poser_for``;
        default numpy); ``warn`` gets a line when the stage falls back to numpy."""
        self.distance_m = distance_m
        self.spacing_m = spacing_m
        self.poser = poser or NumpyPoser()
        self.warn = warn or (lambda line: None)
        self._lock = threading.Lock()
        self._participants: dict[str, _Participant] = {}
        self._places: list[np.ndarray] = []
        self._place_version = 0
        self._recentre = True
        self._combined = None
        self._combined_key = None
        self._skinned: tuple = ()  # the avatars of the last room, kept as one tuple
        self._empty = Gaussians.empty()
        self._head = None     # world_from_head of the last frame
        self.pose_count = 0   # avatar poses run (for tests and benchmarks)

    # -- what the call app feeds in -------------------------------------------------------
    def add(self, key: str, avatar, codes: Codes | None = None) -> None:
        """A participant joins (or replaces its avatar); new arrivals trigger a re-placement."""
        with self._lock:
            self._participants[key] = _Participant(avatar, codes if codes is not None else Codes())
            self._recentre = True

    def remove(self, key: str) -> None:
        with self._lock:
            if self._participants.pop(key, None) is not None:
                self._recentre = True

    def set_codes(self, key: str, codes: Codes) -> None:
        """The latest codes for a participant (unknown keys are ignored: a late packet)."""
        with self._lock:
            participant = self._participants.get(key)
            if participant is not None:
                participant.codes = codes

    def recentre(self) -> None:
        with self._lock:
            self._recentre = True

    def voice_places(self) -> dict[str, tuple[float, float]]:
        """Where each participant's voice comes from for the user's head in the last frame:
        {key: (pan, distance)} (``app.speakers.voice_place``; from the avatar's head);
        empty before the first frame."""
        from app.speakers import HEAD_HEIGHT_M, voice_place

        with self._lock:
            if self._head is None:
                return {}
            head_from_world = np.linalg.inv(self._head)
            return {key: voice_place(head_from_world, (place @ [0.0, HEAD_HEIGHT_M, 0.0, 1.0])[:3])
                    for key, place in zip(self._participants, self._places)}

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return list(self._participants)

    # -- what the XR target calls ---------------------------------------------------------
    def __call__(self, frame: XrFrame):
        """The room for this frame, as the poser combines it: ``PosedAvatars`` for the GL
        renderer (only bone transforms, face weights and placements go to it), device
        Gaussians for cuda, else posed and placed ``Gaussians``. The same object while nothing
        changed."""
        with self._lock:
            if frame.recentre or self._recentre or len(self._places) != len(self._participants):
                self._places = placements_in_front(
                    frame.world_from_head, len(self._participants), self.distance_m,
                    self.spacing_m, floor_y=frame.floor_y)
                self._place_version += 1
                self._recentre = False
            self._head = frame.world_from_head
            work = [(p, p.codes) for p in self._participants.values()]
            places, version = list(self._places), self._place_version
        if not work:
            return self._empty
        poser = self.poser
        by = poser.where
        parts = []
        for (participant, codes), place in zip(work, places):
            if (participant.posed is None or participant.posed_codes is not codes
                    or participant.posed_place != version or participant.posed_by != by):
                avatar = participant.avatar
                participant.posed = poser.pose(avatar.skinned, avatar.skin_pose(codes, place))
                participant.posed_codes, participant.posed_place = codes, version
                participant.posed_by = by
                self.pose_count += 1
            parts.append(participant)
        # Kept objects, compared by identity (ids of freed objects could come back).
        key = (by, *(p.posed for p in parts))
        last_key = self._combined_key
        if last_key is not None and len(last_key) == len(key) and all(
                a is b for a, b in zip(key, last_key)):
            return self._combined
        skinned = tuple(p.avatar.skinned for p in parts)
        if skinned != self._skinned:  # someone joined or left: a new tuple (re-upload)
            self._skinned = skinned
        try:
            self._combined = poser.combine(self._skinned, [p.posed for p in parts])
        except RenderError as exc:
            if poser.where == "numpy":
                raise
            # Avatars the GPU poser refuses (e.g. mixed colour forms): numpy from now on.
            self.warn(f"{POSING_NAMES[poser.where]} unavailable ({exc}); posing avatars in numpy")
            self.poser = NumpyPoser()
            return self(frame)
        self._combined_key = key
        return self._combined


class XrRunner:
    """The headset loop on its own thread, for an asyncio app (the call): the OpenXR session
    and its GL context live and die on that thread, while the app's thread feeds the stage
    (``stage.add``, ``stage.set_codes``). ``stop()`` asks for a clean exit and waits."""

    def __init__(self, stage: XrStage, **target_options):
        self.stage = stage
        self.target_options = target_options
        self.error: BaseException | None = None
        self.exit_reason: str | None = None
        self.ready = threading.Event()     # set once the session is open (or failed to)
        self._stop = threading.Event()
        self._target = None
        self._thread = threading.Thread(target=self._run, name="xr", daemon=True)

    def start(self) -> XrRunner:
        self._thread.start()
        return self

    def _run(self) -> None:
        from render.xr import XrTarget

        target = XrTarget(**self.target_options)
        self._target = target
        try:
            target.open()
            self.ready.set()
            exit_asked = False
            while target.step(self.stage):
                if self._stop.is_set() and not exit_asked:
                    target.request_exit()
                    exit_asked = True
            self.exit_reason = target.exit_reason
        except BaseException as exc:  # handed to the app's thread by stop()/join()
            self.error = exc
        finally:
            self.ready.set()
            target.close()

    @property
    def frames_shown(self) -> int:
        return self._target.frames_shown if self._target is not None else 0

    def stop(self, timeout_s: float = 10.0) -> str | None:
        """End the session cleanly; re-raises an error the loop met (XrUnavailableError...)."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        return self.exit_reason


# -- codes sources for `view --xr` --------------------------------------------------------------
class CodesPlayback:
    """Codes at a wall-clock time: a JSONL recording at its own pace (looped), or a built-in
    pose. The same ``Codes`` object comes back while the frame has not changed."""

    def __init__(self, frames: list[Codes] | None = None, pose=None):
        if frames is not None and not frames:
            raise ValueError("the codes file holds no frames")
        self.frames, self.pose = frames, pose
        self._last_key, self._last = None, None
        if frames is not None:
            t0 = frames[0].t
            self._times = np.array([f.t - t0 for f in frames])
            self.duration_s = float(self._times[-1]) + (
                float(np.median(np.diff(self._times))) if len(frames) > 1 else 0.0)

    def codes_at(self, elapsed_s: float) -> Codes:
        if self.frames is not None:
            t = elapsed_s % self.duration_s if self.duration_s > 0 else 0.0
            index = max(0, int(np.searchsorted(self._times, t, side="right")) - 1)
            key = index
            if key != self._last_key:
                self._last_key, self._last = key, self.frames[index]
            return self._last
        if self.pose.duration_s <= 0:
            key = 0.0
        else:  # sample animations at 60 Hz: a new pose only when the animation moved
            key = round((elapsed_s % self.pose.duration_s) * 60) / 60
        if key != self._last_key:
            self._last_key, self._last = key, self.pose.codes(key)
        return self._last


def add_xr_arguments(parser: argparse.ArgumentParser) -> None:
    """The XR options of ``view`` (all but --xr itself start with --xr-)."""
    group = parser.add_argument_group("headset (OpenXR)")
    group.add_argument("--xr-graphics", choices=("auto", "egl", "glx"), default="auto",
                       help="OpenGL binding: glx (needs an X display), egl (headless, Monado's "
                            "XR_MNDX_egl_enable) or auto (glx when DISPLAY is set)")
    group.add_argument("--xr-distance", type=float, default=COMFORT_DISTANCE_M, metavar="M",
                       help="how far in front of you the avatar stands (default %(default)s m)")
    group.add_argument("--xr-frames", type=int, default=None, metavar="N",
                       help="leave cleanly after N rendered frames (default: until Ctrl+C or "
                            "the runtime ends the session)")
    group.add_argument("--xr-validation", action="store_true",
                       help="enable the Khronos OpenXR validation layer; report its messages")
    group.add_argument("--xr-capture", type=Path, default=None, metavar="DIR",
                       help="save the last frame's eye images (swapchain contents, .npy) to DIR")
    group.add_argument("--xr-stats", type=Path, default=None, metavar="FILE",
                       help="write frame timings and validation messages to FILE (JSON)")
    group.add_argument("--xr-posing", choices=("auto", "cpu"), default="auto",
                       help="where avatars are posed: auto (on the GPU when the renderer can: "
                            "gl, cuda) or cpu (numpy every frame, for comparisons)")
    group.add_argument("--xr-participants", type=int, default=1, metavar="N",
                       help="show N copies of the avatar side by side, as a call with N remote "
                            "participants would (for benchmarks; default 1)")


def _load_source(args) -> tuple[object, CodesPlayback, str]:
    from app.cli import UserError, read_codes
    from avatar.avatar import load_avatar
    from avatar.lca import AvatarFileError

    from app.user_avatar import avatar_or_user_default

    chosen, note = avatar_or_user_default(getattr(args, "avatar", None), "default")
    if note:
        print(note, file=sys.stderr)
    try:
        avatar = load_avatar(chosen)
    except (AvatarFileError, OSError) as exc:
        raise UserError(f"cannot load the avatar: {exc}") from None
    codes_path = getattr(args, "codes", None)
    if codes_path:
        frames = read_codes(codes_path)
        return avatar, CodesPlayback(frames=frames), f"codes from {codes_path}"
    from app.poses import POSES

    name = getattr(args, "pose", None) or "rest"
    if name not in POSES:
        raise UserError(f"unknown pose {name!r}; choose one of: {', '.join(POSES)}")
    return avatar, CodesPlayback(pose=POSES[name]), f"pose {name!r}"


def run_xr_view(args) -> int:
    """``view --xr``: the avatar in the headset until Ctrl+C, the runtime ends the session or
    ``--xr-frames`` frames. Prints one line per few seconds of progress."""
    from app.cli import UserError
    from render.backends import poser_for
    from render.errors import XrUnavailableError
    from render.xr import XrTarget

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    avatar, playback, what = _load_source(args)
    backend_name, image_backend, why = pick_backend(getattr(args, "backend", "auto") or "auto")
    renderer_factory = _renderer_factory(image_backend, say)
    participants = getattr(args, "xr_participants", 1)
    if participants < 1:
        raise UserError("--xr-participants must be at least 1")
    poser = (poser_for(backend_name, image_backend)
             if getattr(args, "xr_posing", "auto") == "auto" else NumpyPoser())
    stage = XrStage(distance_m=args.xr_distance, poser=poser, warn=say)
    keys = ["avatar"] + [f"avatar-{i}" for i in range(2, participants + 1)]
    for key in keys:
        stage.add(key, avatar, playback.codes_at(0.0))

    start = time.monotonic()
    progress = {"last": start}

    def scene(frame: XrFrame):
        now = time.monotonic()
        codes = playback.codes_at(now - start)
        for key in keys:
            stage.set_codes(key, codes)
        if now - progress["last"] >= 3.0:
            progress["last"] = now
            say(_progress_line(target))
        return stage(frame)

    target = XrTarget(args.xr_graphics, validation=args.xr_validation,
                      renderer_factory=renderer_factory,
                      log=say if args.xr_validation else None, warn=say)
    target.capture = args.xr_capture is not None  # a 2-eye readback per frame: cheap
    reason = "not started"
    try:
        try:
            target.open()
        except XrUnavailableError as exc:
            raise UserError(str(exc)) from None
        say(f"OpenXR: {target.runtime_name} / {target.system_name}, {len(target._eyes)} eyes of "
            f"{target.eye_size[0]}x{target.eye_size[1]} "
            f"{'sRGB' if target.color_is_srgb else 'linear'}, space {target.space_name}; "
            f"{len(keys)} x {avatar.name} ({len(avatar)} Gaussians), {what}, backend "
            f"{backend_name} ({why}), posed {POSED_WHERE[stage.poser.where]}. "
            "Ctrl+C leaves.")
        reason = target.run(scene, max_frames=args.xr_frames)
        say(f"{_progress_line(target)}; session ended: {reason}")
        if target.lifecycle.lost:
            raise UserError(f"{reason}; restart the runtime (and the viewer)")
        if args.xr_capture is not None and target.captured:
            args.xr_capture.mkdir(parents=True, exist_ok=True)
            for eye, image in zip(("left", "right"), target.captured):
                np.save(args.xr_capture / f"{eye}.npy", image)
    finally:
        if args.xr_stats is not None:
            _write_stats(args.xr_stats, target, stage, reason)
        target.close()
    errors = [m for m in target.messages if m[0] == "error"]
    return 1 if errors else 0


def pick_backend(name: str) -> tuple[str, object, str]:
    """(chosen name, image backend or None for gl, why) for ``--backend``. ``auto``: cuda when
    a ``CudaBackend`` can be made here (NVIDIA GPU, torch, gsplat), else gl, the reason saying
    which. A named backend that cannot run is a one-line ``UserError``. The backend is made
    here, before any window or OpenXR session."""
    from app.cli import UserError
    from render.backends import get_backend
    from render.errors import BackendUnavailable

    if name == "gl":
        return "gl", None, "asked for"
    if name == "auto":
        try:
            from render.cuda import CudaBackend

            return "cuda", CudaBackend(), "auto: CUDA is available"
        except BackendUnavailable as exc:
            return "gl", None, f"auto: no cuda backend here: {exc}"
    try:
        return name, get_backend(name), "asked for"
    except BackendUnavailable as exc:
        raise UserError(str(exc)) from None


POSED_WHERE = {"gl": "on the GPU (GL)", "device": "on the CUDA device", "numpy": "in numpy"}


def _renderer_factory(image_backend, say):
    """None for the GL splatter (the target's default: poses on the GPU), else a factory
    drawing the image backend's images into the swapchains (``BackendGLRenderer``: the cuda
    backend's through CUDA-GL interop, host memory when that cannot run)."""
    if image_backend is None:
        return None

    def factory(ctx):
        from render.cuda_interop import BackendGLRenderer

        return BackendGLRenderer(ctx, image_backend, log=say)
    return factory


def _progress_line(target) -> str:
    shown = [t for t in target.timings if t.rendered]
    if len(shown) < 2:
        return f"{len(shown)} frames shown"
    recent = shown[-30:]
    frame_ms = float(np.nanmedian([t.frame_ms for t in recent]))
    return (f"{len(shown)} frames shown, {1000 / frame_ms:.1f} fps (median frame {frame_ms:.1f} ms,"
            f" runtime period {recent[-1].display_period_ms:.1f} ms)")


def _write_stats(path: Path, target, stage: XrStage, reason: str) -> None:
    """Timings as JSON, written to a temporary name first so a crash leaves no half file."""
    stats = {
        "runtime": target.runtime_name, "system": target.system_name,
        "graphics": target.graphics, "eye_size": list(getattr(target, "eye_size", (0, 0))),
        "color_format": target.color_format, "color_is_srgb": target.color_is_srgb,
        "space": getattr(target, "space_name", None),
        "exit_reason": reason, "poses": stage.pose_count,
        "participants": len(stage.keys), "posed_by": stage.poser.where,
        "messages": [list(m) for m in target.messages],
        "frames": [vars(t) for t in target.timings],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(stats, indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    """``python -m app.xr_view``: the same as ``main.py view --xr``, without the rest of the
    CLI (the OpenXR test root has only this viewer's dependencies)."""
    from app.cli import UserError

    parser = argparse.ArgumentParser(prog="python -m app.xr_view",
                                     description="Show an avatar in a VR headset (OpenXR).")
    parser.add_argument("--avatar", default="default", help=".lca file or 'default'")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--codes", type=Path, help="codes JSONL to play (looped)")
    source.add_argument("--pose", help="built-in pose name (app.poses)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="renderer: gl (poses on the GPU), cuda (gsplat, poses on the CUDA "
                             "device, shown through CUDA-GL interop), reference (numpy, slow) "
                             "or auto (cuda when available, else gl; the default)")
    add_xr_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_xr_view(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
