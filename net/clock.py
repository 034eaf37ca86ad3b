"""The offset between our clock and each remote participant's, estimated NTP-style over the
call's data channel (the codes channel: unordered, never resent).

Codes carry the sender's capture time on the sender's monotonic clock; only on one machine
does that clock agree with ours. To put a remote timestamp on our clock (end-to-end latency,
the network's share of it) each side pings the other now and then:

    we send   {"type": "clock", "t0": T0}                       T0: our clock at sending
    it answers {"type": "clock-reply", "t0": T0, "t1": T1, "t2": T2}
                                  T1: its clock on arrival, T2: its clock as it answers
    we note    T3, our clock when the answer arrives

    offset = ((T1 - T0) + (T2 - T3)) / 2     its clock minus ours
    delay  = (T3 - T0) - (T2 - T1)           the round trip on the wire

as NTP does (RFC 5905, "On-Wire Protocol"). The estimate is exact when both ways take as
long, and off by at most half the round trip otherwise; of the last ``WINDOW`` samples the
one with the shortest round trip is kept (NTP's clock filter): a sample that waited in a
queue (a busy event loop) has a long round trip and is passed over. The codes channel
rather than the reliable, ordered control channel: there a ping waited behind the avatar
being sent (measured in the demo: 1.26 s round trips, the offset 625 ms off in one
process); a lost ping is simply never answered.

``ClockSync`` is transport-agnostic: ``send(remote_id, text)`` sends on the channel,
``tick(remote_ids, now)`` (once per call tick) sends the pings that are due, ``handle`` takes
every text message of the channel first and says whether it was ours. Bad input is
dropped: a reply must echo a ping we sent (and is used once), its times must be finite and
the round trip between 0 and ``MAX_DELAY_S``; answers are rate-limited per remote.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

FIRST_PINGS = 5           # this many at the start, FIRST_PERIOD_S apart,
FIRST_PERIOD_S = 0.1
PERIOD_S = 1.0            # then one a second
WINDOW = 16               # the best (shortest round trip) of the last WINDOW samples
MAX_DELAY_S = 5.0         # a longer round trip is not a sample
MAX_OUTSTANDING = 8       # pings awaiting an answer, per remote (older ones are forgotten)
MAX_ANSWERS_PER_S = 20    # answers to one remote's pings
MAX_MESSAGE_CHARS = 256
_PREFIX = '{"type": "clock'


@dataclass(frozen=True)
class ClockSample:
    offset_s: float   # the remote's clock minus ours
    delay_s: float    # round trip
    at_s: float       # our clock when it was taken


@dataclass
class _Remote:
    samples: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    outstanding: dict = field(default_factory=dict)  # t0 -> True, insertion ordered
    pings: int = 0
    next_ping_s: float = -math.inf
    answers: deque = field(default_factory=deque)    # our clock at each recent answer
    refused: int = 0


class ClockSync:
    """Per remote participant, its clock's offset from ours (see the module docstring)."""

    def __init__(self, send: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic):
        self._send = send
        self.clock = clock
        self._remotes: dict[str, _Remote] = {}

    def _remote(self, remote_id: str) -> _Remote:
        remote = self._remotes.get(remote_id)
        if remote is None:
            remote = self._remotes[remote_id] = _Remote()
        return remote

    # -- pings ---------------------------------------------------------------------------
    def tick(self, remote_ids, now_s: float | None = None) -> None:
        """Ping every remote in ``remote_ids`` whose next ping is due; forget the others."""
        now_s = self.clock() if now_s is None else now_s
        remote_ids = set(remote_ids)
        for gone in set(self._remotes) - remote_ids:
            del self._remotes[gone]
        for remote_id in remote_ids:
            remote = self._remote(remote_id)
            if now_s < remote.next_ping_s:
                continue
            t0 = self.clock()
            remote.outstanding[t0] = True
            while len(remote.outstanding) > MAX_OUTSTANDING:
                del remote.outstanding[next(iter(remote.outstanding))]
            remote.pings += 1
            remote.next_ping_s = now_s + (FIRST_PERIOD_S if remote.pings < FIRST_PINGS
                                          else PERIOD_S)
            self._send(remote_id, json.dumps({"type": "clock", "t0": t0}))

    # -- messages ------------------------------------------------------------------------
    def handle(self, remote_id: str, message, arrival_s: float | None = None) -> bool:
        """Take one control-channel message: True when it was a clock message (answered or
        noted, or dropped as bad), False when it is someone else's."""
        if not isinstance(message, str) or not message.startswith(_PREFIX):
            return False
        arrival_s = self.clock() if arrival_s is None else arrival_s
        remote = self._remote(remote_id)
        data = _parse(message)
        if data is None:
            remote.refused += 1
            return True
        if data.get("type") == "clock":
            self._answer(remote_id, remote, data, arrival_s)
        elif data.get("type") == "clock-reply":
            self._note(remote, data, arrival_s)
        else:
            remote.refused += 1
        return True

    def _answer(self, remote_id: str, remote: _Remote, data: dict, arrival_s: float) -> None:
        t0 = data.get("t0")
        if not _finite(t0):
            remote.refused += 1
            return
        while remote.answers and arrival_s - remote.answers[0] > 1.0:
            remote.answers.popleft()
        if len(remote.answers) >= MAX_ANSWERS_PER_S:
            remote.refused += 1
            return
        remote.answers.append(arrival_s)
        self._send(remote_id, json.dumps({"type": "clock-reply", "t0": t0, "t1": arrival_s,
                                          "t2": self.clock()}))

    def _note(self, remote: _Remote, data: dict, t3: float) -> None:
        t0, t1, t2 = data.get("t0"), data.get("t1"), data.get("t2")
        if not (_finite(t0) and _finite(t1) and _finite(t2)) or t0 not in remote.outstanding:
            remote.refused += 1
            return
        del remote.outstanding[t0]
        sample = ntp_sample(t0, t1, t2, t3)
        if not 0.0 <= sample.delay_s <= MAX_DELAY_S or t2 < t1:
            remote.refused += 1
            return
        remote.samples.append(sample)

    # -- what it knows -------------------------------------------------------------------
    def best(self, remote_id: str) -> ClockSample | None:
        """The sample with the shortest round trip of the recent ones (None: none yet)."""
        remote = self._remotes.get(remote_id)
        if remote is None or not remote.samples:
            return None
        return min(remote.samples, key=lambda s: s.delay_s)

    def offset_s(self, remote_id: str) -> float | None:
        """The remote's clock minus ours, seconds (None until a ping came back)."""
        best = self.best(remote_id)
        return None if best is None else best.offset_s

    def to_local(self, remote_id: str, remote_time_s: float) -> float | None:
        """A time on the remote's clock, on ours."""
        offset = self.offset_s(remote_id)
        return None if offset is None else remote_time_s - offset

    def summary(self, remote_id: str) -> dict:
        remote = self._remotes.get(remote_id)
        best = self.best(remote_id)
        return {"offset_ms": None if best is None else best.offset_s * 1000,
                "round_trip_ms": None if best is None else best.delay_s * 1000,
                "samples": 0 if remote is None else len(remote.samples),
                "refused": 0 if remote is None else remote.refused}


def ntp_sample(t0: float, t1: float, t2: float, t3: float) -> ClockSample:
    """One exchange's offset (remote minus local) and round trip: T0 and T3 on our clock,
    T1 and T2 on the remote's."""
    return ClockSample(((t1 - t0) + (t2 - t3)) / 2, (t3 - t0) - (t2 - t1), t3)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _parse(message: str) -> dict | None:
    if len(message) > MAX_MESSAGE_CHARS:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
