"""Files written whole or not at all.

``replacing(path)`` yields a temporary path beside ``path`` (same folder, so the rename is
atomic on one filesystem); when the block ends normally the temporary file is renamed over
``path``, when it raises the temporary file is removed. A crash therefore never leaves a
half-written file under the final name, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

PART_SUFFIX = ".part"


def part_path(path: str | Path) -> Path:
    """The temporary name ``replacing`` writes to: ``path`` + ".part"."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write; renames it to ``path`` on success, removes it on
    failure (the exception goes on)."""
    tmp = part_path(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) to ``path`` through ``replacing``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
