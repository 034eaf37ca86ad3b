"""The playout buffer: turns codes packets that arrive late, out of order or not at all into
a smooth pose for every display frame.

Clocks: the sender stamps each frame with its own monotonic time ``t``; the receiver notes
the local arrival time. ``arrival - t`` is the transit time plus an unknown clock offset;
its minimum over a recent window (``base``) is the fastest path seen. A frame is played at
``t + base + delay`` where ``delay`` adapts to the jitter: it is the 95th percentile of
``arrival - t - base`` over the window (the jitter) plus a margin, rises at once when the
network gets worse and relaxes slowly when it gets better.

**Latency first** (``latency_first``, the default): while the link loses no more than
``lossy_fraction`` of the frames, the delay covers only ``clean_percentile`` (75) of the
jitter and adds no margin; a frame later than that is covered by extrapolating along the
last motion (below) until it comes. On a call most of the jitter is the sender's tracking
time, not the network: on one 2-core machine (bench/bench_latency.py; docs/BENCHMARKS.md,
"Latency first") the tracker's 30-50 ms spread made the jitter's p95 60-130 ms, and the
delay that covered it was half the end-to-end latency. Simulated (tests/test_net_playout.py's
``played_stream``, a tracker's jitter of p95 about 95 ms, shown at 22 fps): the age of what
is shown 120 ms behind the p95 delay, 90 at p75, 85 at p50 or with no delay; the shown
head's jerk (RMS second difference) 4.0, 6.9, 8.7 and 15 mrad. p75 takes most of the
latency for under twice the jerk. And a delay grown over a burst (the tracker's start, a
stall) shrinks back at ``clean_decay_per_s`` (halving in 0.35 s): at the jitter-robust 0.2
a second the start's 300-500 ms took most of a 20 s run to go (median delay 80-100 ms where
the target was about 30). A lossy link gets the jitter-robust delay below.

The margin is what trades latency for smoothness. While the jitter is low (at most
``low_jitter_s``: a LAN, loopback, where what varies is mostly the sender's tracking time) there
is none: the newest frames play as soon as the jitter allows, and between arrivals the pose
goes on along the last motion (extrapolation, below) until the next frame takes over. As the
jitter grows past ``low_jitter_s`` the margin grows with it, up to ``margin_s`` at twice
``low_jitter_s`` (room to interpolate between two frames across a late or lost one: the
jitter-robust behaviour of a lossy link), and is all there whatever the jitter while more
than ``lossy_fraction`` of the frames are missing (gaps in ``seq``: lost, or never sent by a
sender that skipped one, which is as conservative). Measured on a 30 Hz stream with 20 ms of
tracking jitter, sampled at 22 fps (docs/BENCHMARKS.md, "Latency end to end: playout at the
window's ask"): 14 ms less latency than a 20 ms margin, the motion's second differences the
same. ``low_jitter_s`` = 0 gives the margin always (as before).

For a display time ``now`` the buffer plays sender time ``ts = now - base - delay``:

- between two frames: linear interpolation (blendshapes, gaze, translation) and slerp
  (every rotation);
- past the newest frame (a lost or late packet): extrapolation along the last motion for at
  most ``max_extrapolate_s``;
- still nothing (the sender went quiet): hold that pose for ``hold_s``, then relax to the
  rest pose over ``relax_s`` (a smoothstep), so a dropped call never freezes a face mid-word.

``delay_s`` is part of the call's latency: one-way latency = transit + delay.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from avatar.codes import GAZE_LIMIT_RAD, PART_INDEX, PARTS, Codes
from common.rotation import quat_slerp

_QUAT_FIELDS = ("head", "body", "hands", "root_rotation")
_QUAT_PARTS = {"head": ("head",), "body": ("body",), "hands": ("left_hand", "right_hand"),
               "root_rotation": ("root",)}


@dataclass
class PlayoutConfig:
    min_delay_s: float = 0.0
    max_delay_s: float = 0.5
    margin_s: float = 0.020          # about one frame interval at 60 Hz
    low_jitter_s: float = 0.025      # jitter (p95) up to this: no margin (see the module)
    lossy_fraction: float = 0.02     # more codes frames lost than this (over window_s): the
                                     # margin whatever the jitter
    window_s: float = 2.0            # jitter and clock statistics look this far back
    latency_first: bool = True       # a clean link: the delay covers clean_percentile of the
    clean_percentile: float = 75.0   # jitter, with no margin (see the module)
    max_extrapolate_s: float = 0.100
    hold_s: float = 0.5
    relax_s: float = 1.0
    delay_decay_per_s: float = 0.2   # how fast a too-large delay shrinks, as a fraction a second
    clean_decay_per_s: float = 2.0   # ... on a clean link, latency first (halves in 0.35 s)


class PlayoutBuffer:
    """One remote participant's codes stream. ``push`` packets as they arrive, ``pose(now)``
    for each display frame. Times in seconds; ``now`` and arrivals on the same local clock.
    Thread-safe: the call's loop pushes and plays out at its tick, the call window's reader
    thread plays out when the window asks (``app.call_window.SnapshotServer``)."""

    def __init__(self, config: PlayoutConfig | None = None):
        self.config = config or PlayoutConfig()
        self._frames: list[Codes] = []          # sorted by t
        self._times: list[float] = []
        self._transits: deque[tuple[float, float, int]] = deque()  # (arrival, arrival - t, seq)
        self.base_s: float | None = None
        self.delay_s: float = self.config.margin_s
        self._last_update: float | None = None
        self.status = "waiting"
        self.late = 0
        self.duplicates = 0
        self.loss = 0.0               # the fraction of codes frames lost over window_s
        self._seen: deque[int] = deque(maxlen=256)
        self._played_until = -np.inf
        self._lock = threading.Lock()

    def margin(self, jitter_s: float) -> float:
        """The margin added to a jitter (p95) of ``jitter_s``: none up to ``low_jitter_s``,
        growing to ``margin_s`` at twice it."""
        cfg = self.config
        if cfg.low_jitter_s <= 0:
            return cfg.margin_s
        return cfg.margin_s * float(np.clip(jitter_s / cfg.low_jitter_s - 1.0, 0.0, 1.0))

    # -- input --------------------------------------------------------------------------
    def push(self, codes: Codes, arrival_s: float) -> None:
        with self._lock:
            self._push(codes, arrival_s)

    def _push(self, codes: Codes, arrival_s: float) -> None:
        cfg = self.config
        if self._frames and abs(codes.t - self._times[-1]) > 10.0:
            self._reset()  # the sender restarted its clock: start over
        if codes.seq in self._seen:
            self.duplicates += 1
            return
        self._seen.append(codes.seq)
        transit = arrival_s - codes.t
        self._transits.append((arrival_s, transit, codes.seq))
        while self._transits and self._transits[0][0] < arrival_s - cfg.window_s:
            self._transits.popleft()
        self.base_s = min(tr for _, tr, _ in self._transits)
        excess = np.array([tr for _, tr, _ in self._transits]) - self.base_s
        jitter, clean_jitter = (float(v) for v in np.percentile(
            excess, [95, cfg.clean_percentile]))
        seqs = [seq for _, _, seq in self._transits]
        self.loss = 1.0 - len(seqs) / (max(seqs) - min(seqs) + 1)
        lossy = self.loss > cfg.lossy_fraction
        margin = cfg.margin_s if lossy else self.margin(jitter)
        target = float(np.clip(jitter + margin, cfg.min_delay_s, cfg.max_delay_s))
        if cfg.latency_first and not lossy:
            target = float(np.clip(clean_jitter, cfg.min_delay_s, cfg.max_delay_s))
        if self._last_update is None or target > self.delay_s:
            self.delay_s = target
        else:
            rate = (cfg.clean_decay_per_s if cfg.latency_first and not lossy
                    else cfg.delay_decay_per_s)
            step = rate * (arrival_s - self._last_update)
            self.delay_s = max(target, self.delay_s * (1.0 - min(step, 1.0)))
        self._last_update = arrival_s
        if codes.t <= self._played_until:
            self.late += 1
            return
        i = bisect.bisect(self._times, codes.t)
        self._times.insert(i, codes.t)
        self._frames.insert(i, codes)

    def arrivals(self) -> tuple[float | None, float | None]:
        """(when the newest codes frame arrived, the median interval between arrivals over
        ``window_s``): None where not known yet. The call window uses them to start a frame
        when the next frame is about to come (``app.call_window.wait_for_codes``)."""
        with self._lock:
            if not self._transits:
                return None, None
            times = [a for a, _, _ in self._transits]
            gaps = np.diff(times)
            return times[-1], (float(np.median(gaps)) if len(gaps) >= 3 else None)

    def reset(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._frames.clear()
        self._times.clear()
        self._transits.clear()
        self._seen.clear()
        self.base_s = None
        self.delay_s = self.config.margin_s
        self._last_update = None
        self._played_until = -np.inf
        self.loss = 0.0
        self.status = "waiting"

    # -- output -------------------------------------------------------------------------
    def playout_time(self, now_s: float) -> float | None:
        """The sender time played at local time ``now_s`` (None before the first frame)."""
        if self.base_s is None:
            return None
        return now_s - self.base_s - self.delay_s

    def pose(self, now_s: float) -> Codes | None:
        """The pose to show at local time ``now_s``; None before any frame has arrived."""
        with self._lock:
            return self._pose(now_s)

    def _pose(self, now_s: float) -> Codes | None:
        ts = self.playout_time(now_s)
        if ts is None or not self._frames:
            return None
        cfg = self.config
        frames, times = self._frames, self._times
        # Forget frames that can no longer be needed (keep one before ts to interpolate from).
        keep_from = max(0, bisect.bisect(times, ts) - 2)
        if keep_from:
            del frames[:keep_from]
            del times[:keep_from]
        self._played_until = max(self._played_until, min(ts, times[-1]))

        if ts <= times[0]:
            self.status = "playing"
            return frames[0].replace(t=ts)
        i = bisect.bisect(times, ts)
        if i < len(frames):
            a, b = frames[i - 1], frames[i]
            self.status = "playing"
            return blend(a, b, (ts - a.t) / (b.t - a.t), ts)
        # Past the newest frame.
        newest = frames[-1]
        gap = ts - newest.t
        ahead = min(gap, cfg.max_extrapolate_s)
        if len(frames) >= 2 and 0 < newest.t - frames[-2].t <= 0.25:
            prev = frames[-2]
            pose = blend(prev, newest, 1.0 + ahead / (newest.t - prev.t), ts)
        else:
            pose = newest.replace(t=ts)
        if gap <= cfg.max_extrapolate_s:
            self.status = "extrapolating"
            return pose
        quiet = gap - cfg.max_extrapolate_s
        if quiet <= cfg.hold_s:
            self.status = "holding"
            return pose
        x = min(1.0, (quiet - cfg.hold_s) / cfg.relax_s)
        self.status = "relaxing" if x < 1.0 else "rest"
        rest = Codes(t=ts, seq=pose.seq, valid=pose.valid)
        return blend(pose, rest, x * x * (3.0 - 2.0 * x), ts)


def blend(a: Codes, b: Codes, x: float, t: float) -> Codes:
    """The pose a fraction ``x`` of the way from ``a`` to ``b`` (``x`` > 1 extrapolates):
    lerp for weights, gaze and translation, slerp for rotations, clamped to valid ranges.
    A part valid in only one of the two frames is taken from that frame."""
    x = float(x)
    valid_a, valid_b = a.valid, b.valid
    out = {}

    def pick(field: str, parts: tuple[str, ...], mixed):
        idx = [PART_INDEX[p] for p in parts]
        if all(valid_a[i] and valid_b[i] for i in idx):
            return mixed()
        if all(valid_b[i] for i in idx) or not all(valid_a[i] for i in idx):
            return getattr(b, field)
        return getattr(a, field)

    def lerp(field):
        return getattr(a, field) + x * (getattr(b, field) - getattr(a, field))

    out["face"] = pick("face", ("face",), lambda: np.clip(lerp("face"), 0.0, 1.0))
    out["gaze"] = pick("gaze", ("gaze",),
                       lambda: np.clip(lerp("gaze"), -GAZE_LIMIT_RAD, GAZE_LIMIT_RAD))
    out["root_translation"] = pick("root_translation", ("root",),
                                   lambda: np.clip(lerp("root_translation"), -99.0, 99.0))
    for field in _QUAT_FIELDS:
        parts = _QUAT_PARTS[field]
        if field == "hands":
            hands = np.empty_like(a.hands)
            for side, part in enumerate(parts):
                ia = PART_INDEX[part]
                if valid_a[ia] and valid_b[ia]:
                    hands[side] = quat_slerp(a.hands[side], b.hands[side], x)
                else:
                    hands[side] = (b if valid_b[ia] or not valid_a[ia] else a).hands[side]
            out["hands"] = hands
        else:
            out[field] = pick(field, parts, lambda f=field: quat_slerp(getattr(a, f),
                                                                        getattr(b, f), x))
    valid = valid_a | valid_b
    return Codes(t=t, seq=b.seq, valid=valid, **{k: np.asarray(v, np.float32)
                                                  for k, v in out.items()})


__all__ = ["PlayoutBuffer", "PlayoutConfig", "blend", "PARTS"]
