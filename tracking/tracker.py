"""Tracker: frames -> landmarks -> solvers -> filtered ``Codes``.

``Tracker.process(frame)`` returns a ``TrackResult`` (the codes and the landmarks behind
them). A part the camera does not see is marked invalid in ``codes.valid`` and holds rest
values. ``track(source, tracker)`` drives a source: for a live source that is lost (camera
unplugged) it keeps yielding all-invalid codes at the source's frame rate and tries to
reopen it every ``reconnect_interval_s``; a finite source simply ends.

Codes carry the frame's capture time ``t`` (monotonic seconds) and a running ``seq``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from avatar.codes import PART_INDEX, PARTS, Codes
from avatar.template import Template, load_template
from tracking.body import BodySolver
from tracking.face import FaceSolver
from tracking.filters import OneEuro, QuaternionOneEuro
from tracking.hands import HandSolver, hand_scale_ok, palm_directions, to_world
from tracking.landmarks import LandmarkDetector, Landmarks
from tracking.sources import Frame, FrameSource, SourceLost

# (min cutoff Hz, beta) per filtered field: tuned on jwpIntro.mp4 (a still talker) and
# a synthetic fast wave; see bench/bench_track.py for the jitter and lag they give.
FILTER_SETTINGS = {
    "face": (2.0, 4.0),
    "gaze": (2.0, 4.0),
    "head": (1.5, 2.0),
    "body": (1.2, 2.0),
    "hands": (1.5, 2.0),
    "root_translation": (1.0, 2.0),
    "root_rotation": (1.2, 2.0),
}
_PART_OF_FIELD = {"face": ("face",), "gaze": ("gaze",), "head": ("head",), "body": ("body",),
                  "hands": ("left_hand", "right_hand"), "root_translation": ("root",),
                  "root_rotation": ("root",)}
_QUATERNION_FIELDS = ("head", "body", "hands", "root_rotation")


@dataclass(eq=False)
class TrackResult:
    codes: Codes
    landmarks: Landmarks | None
    frame: Frame | None


class Tracker:
    """Landmarks and solvers for one person on one stream.

    ``mirror``: flip frames horizontally first, so the avatar moves like a mirror image
    (raise your right hand, the avatar raises its left); off by default, the avatar keeps
    your own handedness. ``smoothing``: One Euro filtering per part. ``static``: every
    frame is an unrelated photograph (no tracking between frames, no calibration).
    ``backend``: the landmark backend (``LandmarkDetector``); None picks "split" for video
    and "holistic" for photographs.
    """

    def __init__(self, template: Template | None = None, mirror: bool = False,
                 smoothing: bool = True, static: bool = False, backend: str | None = None,
                 detector: LandmarkDetector | None = None, calibration_s: float = 2.0):
        self.template = template or load_template()
        self.mirror = mirror
        self.static = static
        self.detector = detector or LandmarkDetector(backend=backend, static_image_mode=static)
        self.body = BodySolver(self.template)
        self.hands = HandSolver(self.template)
        self.face = FaceSolver(self.template, calibration_s=calibration_s)
        if not static:
            self.face.recalibrate(start=True)
        self.smoothing = smoothing and not static
        self.filters = {name: (QuaternionOneEuro if name in _QUATERNION_FIELDS else OneEuro)(
            *FILTER_SETTINGS[name]) for name in FILTER_SETTINGS if name != "hands"}
        self.hand_filters = [QuaternionOneEuro(*FILTER_SETTINGS["hands"]) for _ in range(2)]
        self.seq = 0
        self.timings_ms: dict[str, float] = {}
        self._was_valid = np.zeros(len(PARTS), dtype=bool)
        self._blas = ThreadpoolController()

    def recalibrate(self) -> None:
        """Take the person's neutral face again from the next seconds of frames."""
        self.face.recalibrate(start=True)

    def process(self, frame: Frame) -> TrackResult:
        """Landmarks and codes of one frame. The hands and the face are solved as soon as
        the detector has them (with the split backend the hands in its crop thread while the
        pose graph runs, the face there too on a talking head); ``timings_ms`` then holds
        "landmarks" (the detector, these solves included) and "solvers" (what follows it)."""
        image = frame.image[:, ::-1] if self.mirror else frame.image
        solved = {}
        # numpy's OpenBLAS at one thread while the solvers run: its worker threads spin
        # after each of the face fit's matrix products, which doubled the solvers' CPU time
        # (19 -> 37-49 ms a frame with both hands, measured 2026-11-24) and took the core
        # the pose graph needs.
        with self._blas.limit(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            landmarks = self.detector.detect(
                image, on_hands=lambda lm: solved.update(hands=self.solve_hands(lm)),
                on_face=lambda lm: solved.update(face=self._solve_face(lm, frame.t)))
            t1 = time.perf_counter()
            codes = self.solve(landmarks, frame.t, hands=solved.get("hands"),
                               face=solved.get("face"))
        self.timings_ms = {"landmarks": (t1 - t0) * 1000,
                           "solvers": (time.perf_counter() - t1) * 1000}
        return TrackResult(codes, landmarks, frame)

    def solve_hands(self, lm: Landmarks) -> list:
        """Per side (0 = left), None or (finger-bone rotations (19, 4), palm directions) from
        the hand landmarks alone: no filtering, no state, safe beside the pose's work."""
        out = [None, None]
        worlds = {side: to_world(lm.hands_world[side]) for side in range(2)
                  if lm.hands_world[side] is not None}
        sides = [side for side, world in worlds.items() if hand_scale_ok(world)]
        if sides:  # both hands in one call: the solver's cost is per call, not per hand
            rotations = self.hands.solve_many(np.stack([worlds[s] for s in sides]), sides)
            for side, solved in zip(sides, rotations):
                out[side] = (solved, palm_directions(worlds[side]))
        return out

    def _solve_face(self, lm: Landmarks, t: float):
        """The face solver's result on the frame's face (None without one); called by the
        detector as soon as it has the face, so the fit runs beside the other graphs."""
        return None if lm.face is None else self.face.solve(lm.face, t)

    def solve(self, lm: Landmarks, t: float, hands: list | None = None,
              face=None) -> Codes:
        """Codes from one frame's landmarks (filtered unless smoothing is off). ``hands``:
        ``solve_hands(lm)``, ``face``: the face solver's result on ``lm.face``, if already
        done."""
        values = Codes().__dict__.copy()
        valid = np.zeros(len(PARTS), dtype=bool)

        if hands is None:
            hands = self.solve_hands(lm)
        palms = {}
        for side, solved in enumerate(hands):
            if solved is None or lm.hands_world[side] is None:  # dropped with a lost pose
                continue
            values["hands"][side], palms[(".L", ".R")[side]] = solved
            valid[PART_INDEX[("left_hand", "right_hand")[side]]] = True

        body = self.body.solve(lm, palms)
        world_rotations = {}
        if body is not None:
            values["body"] = body.body
            values["root_rotation"] = body.root_rotation.astype(np.float32)
            values["root_translation"] = body.root_translation
            values["head"] = body.head
            world_rotations = body.world
            valid[PART_INDEX["body"]] = valid[PART_INDEX["root"]] = True
            head_from_pose = not np.allclose(np.abs(body.head[:, 0]), 1.0)
            valid[PART_INDEX["head"]] = head_from_pose

        if lm.face is not None:
            result = face if face is not None else self.face.solve(lm.face, t)
            values["face"] = result.weights
            values["gaze"] = result.gaze
            values["head"] = self.body.head_locals(world_rotations, result.head_rotation)
            valid[PART_INDEX["face"]] = valid[PART_INDEX["gaze"]] = valid[PART_INDEX["head"]] = True

        values.update(t=t, seq=self.seq, valid=valid)
        self.seq = (self.seq + 1) % 2**32
        if self.smoothing:
            self._filter(values, t)
        for name in _QUATERNION_FIELDS:
            values[name] = _unit(values[name])
        return Codes(**values)

    def _filter(self, values: dict, t: float) -> None:
        valid = values["valid"]
        # Two hands, two validity flags: each hand has its own filter.
        for side, part in enumerate((PART_INDEX["left_hand"], PART_INDEX["right_hand"])):
            if valid[part]:
                if not self._was_valid[part]:
                    self.hand_filters[side].reset()
                values["hands"][side] = self.hand_filters[side].filter(values["hands"][side], t)
        for name, filt in self.filters.items():
            parts = [PART_INDEX[p] for p in _PART_OF_FIELD[name]]
            if not all(valid[p] for p in parts):
                continue
            if not all(self._was_valid[p] for p in parts):
                filt.reset()  # coming back after a gap: start from the new value, not the old
            out = filt.filter(values[name], t)
            if name in ("face",):
                out = np.clip(out, 0.0, 1.0)
            values[name] = out.astype(np.float32)
        self._was_valid = valid.copy()

    def lost(self, t: float) -> Codes:
        """An all-invalid frame (rest values) for a moment with no picture."""
        codes = Codes(t=t, seq=self.seq, valid=np.zeros(len(PARTS), dtype=bool))
        self.seq = (self.seq + 1) % 2**32
        self._was_valid[:] = False
        return codes

    def close(self) -> None:
        self.detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unit(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return (q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def track(source: FrameSource, tracker: Tracker, reconnect_interval_s: float = 1.0,
          on_event: Callable[[str], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Iterator[TrackResult]:
    """Track every frame of ``source``; see the module docstring for lost live sources.

    ``on_event`` receives one-line messages (source lost, source back); ``should_stop`` is
    polled while a live source is away.
    """
    say = on_event or (lambda message: None)
    while True:
        try:
            frame = source.read()
        except SourceLost as exc:
            say(f"source lost: {exc}")
            if not source.live:
                yield TrackResult(tracker.lost(time.monotonic()), None, None)
                return
            yield from _wait_for_source(source, tracker, reconnect_interval_s, say, should_stop)
            if should_stop and should_stop():
                return
            continue
        if frame is None:
            return
        yield tracker.process(frame)


def _wait_for_source(source, tracker, interval_s, say, should_stop) -> Iterator[TrackResult]:
    period = 1.0 / (source.nominal_fps or 30.0)
    next_try = time.monotonic()
    while not (should_stop and should_stop()):
        now = time.monotonic()
        if now >= next_try:
            if source.reopen():
                say("source is back")
                return
            next_try = now + interval_s
        yield TrackResult(tracker.lost(now), None, None)
        time.sleep(period)
