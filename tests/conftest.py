"""Fixtures several test files share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on the shared 2-core machine two threads ran 3x slower
    whenever another process was busy (OpenMP's workers wait on each other)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
