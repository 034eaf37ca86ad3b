"""bench/bench_latency.py's split of a presented frame's latency: the parts add up to the
total, and a pose extrapolated past the newest camera frame counts from that frame's capture,
not from the instant it predicts."""

from __future__ import annotations

import numpy as np

from bench.bench_latency import split


def _call(shown: list) -> tuple[dict, dict]:
    # Camera frames at 30 Hz from t = 10 s: tracked in 25 ms, sent 0.5 ms later, arriving
    # 1 ms after that (one clock: offset 0).
    frames = {seq: [10 + seq / 30, 10 + seq / 30 + 0.025, 10 + seq / 30 + 0.0255]
              for seq in range(10)}
    sent = {"frames": {str(k): v for k, v in frames.items()}}
    received = {"clock": {"offset_ms": 0.0}, "sender_id": "s",
                "arrivals": {str(k): v[2] + 0.001 for k, v in frames.items()},
                "presented": shown}
    return sent, received


def test_an_interpolated_pose_counts_from_its_instant_and_the_parts_add_up():
    instant = 10 + 3.5 / 30                      # between frames 3 and 4 (its seq: 4)
    made, drawn, presented = 10 + 4 / 30 + 0.030, 10 + 4 / 30 + 0.031, 10 + 4 / 30 + 0.080
    parts = split(*_call([(made, [("s", instant, 4)], presented, drawn)]))
    assert np.isclose(parts["total"][0], (presented - instant) * 1000)
    assert np.isclose(parts["tracking"][0], 25.0) and np.isclose(parts["network"][0], 1.0)
    added = sum(parts[k][0] for k in ("tracking", "send tick", "network", "playout buffer",
                                      "rendering"))
    assert np.isclose(added, parts["total"][0])
    assert np.isclose(parts["waiting for the snapshot"][0], 1.0)
    assert np.isclose(parts["drawing and swap"][0], 49.0)


def test_an_extrapolated_pose_counts_from_the_capture_of_its_newest_frame():
    newest = 10 + 5 / 30
    instant = newest + 0.020                     # predicted 20 ms past frame 5 (its seq)
    made, presented = newest + 0.030, newest + 0.090
    parts = split(*_call([(made, [("s", instant, 5)], presented, made)]))
    assert np.isclose(parts["total"][0], (presented - newest) * 1000)  # 90, not 70
    assert np.isclose(parts["playout buffer"][0], (made - (newest + 0.0265)) * 1000)
    # a repeated snapshot (drawn again) and another remote's pose are not counted
    parts = split(*_call([(made, [("s", instant, 5)], presented, made),
                          (made, [("s", instant, 5)], presented + 0.05, made),
                          (made + 0.05, [("other", instant, 5)], presented + 0.1, made)]))
    assert len(parts["total"]) == 1
