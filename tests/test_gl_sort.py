"""The CPU depth sort the GL backend draws by (render/sort.py)."""

from __future__ import annotations

import numpy as np
import pytest

from render.sort import front_to_back, view_depths


def test_32_bit_order_equals_a_stable_float_sort():
    rng = np.random.default_rng(0)
    depths = rng.normal(3.0, 0.5, 50_000).astype(np.float32)
    depths[::7] = depths[3]  # ties keep array order
    np.testing.assert_array_equal(front_to_back(depths), np.argsort(depths, kind="stable"))


def test_16_bit_order_is_sorted_to_its_quantum():
    rng = np.random.default_rng(1)
    depths = rng.uniform(1.0, 7.0, 20_000)
    ordered = depths[front_to_back(depths, key_bits=16)]
    quantum = (depths.max() - depths.min()) / 65534
    assert np.all(np.diff(ordered) > -quantum)
    assert not np.all(np.diff(ordered) >= 0), "16-bit keys merge close depths (else test nothing)"


def test_non_finite_depths_go_last_and_degenerate_inputs():
    depths = np.array([2.0, np.nan, 1.0, np.inf, 3.0])
    assert front_to_back(depths)[:3].tolist() == [2, 0, 4]
    assert front_to_back(np.zeros(0)).shape == (0,)
    assert front_to_back(np.full(4, 5.0)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        front_to_back(depths, key_bits=8)


def test_view_depths_are_distances_along_the_view_axis():
    means = np.array([[0, 0, 0], [1, 2, -3], [0, 5, 1]], dtype=np.float32)
    np.testing.assert_allclose(view_depths(means, [0, 0, 2], [0, 0, -2]), [2, 5, 1])
