"""bench/face_mesh_probe.py's warp: the figures in docs/BENCHMARKS.md (issue 15, seventh
pass) rest on it moving the brow line by the pixels asked and leaving the eyes alone."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from face_mesh_probe import BROW, EYE_UPPER, warp_brows  # noqa: E402


def test_the_warp_moves_the_brow_line_by_the_shift_and_keeps_the_eye_line():
    image = np.full((200, 200, 3), 200, np.uint8)
    image[79:82, 40:160] = 30  # a brow line at y = 80
    image[109:112, 40:160] = 30  # an eye line at y = 110
    face = np.zeros((478, 3))
    n = len(BROW)
    face[BROW] = np.c_[np.linspace(50, 150, n), np.full(n, 80.0), np.zeros(n)]
    face[EYE_UPPER] = [[70, 110, 0], [130, 110, 0]]

    def line_rows(img, x, lo, hi):
        darkness = np.clip(150.0 - img[lo:hi, x].mean(axis=1), 0, None)
        return float((darkness * np.arange(lo, hi)).sum() / darkness.sum())

    for shift in (3.0, 6.0):
        out = warp_brows(image, face, shift)
        assert abs(line_rows(out, 100, 60, 100) - (80 - shift)) < 0.6
        assert abs(line_rows(out, 100, 100, 120) - 110) < 0.3


def test_a_cache_that_is_not_one_ends_in_one_error_line(tmp_path):
    import pickle

    import pytest
    from face_real_response import load_or_track

    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"jwpIntro": []}))
    for path in (broken, other):
        with pytest.raises(SystemExit) as ended:
            load_or_track(str(path))
        message = str(ended.value.code)
        assert message.startswith("error: ") and str(path) in message and "\n" not in message
