"""Shared real test media, fetched by scripts/setup.d/30-media.sh into .cache/media/.

``media_path(name)`` returns the file's path, or skips the calling test with the reason
and the command that fetches it when the file is absent (a fresh checkout before set-up).
Files: messi5.jpg, basketball1.png (Debian opencv-doc), jwpIntro.mp4 (PyPI psychopy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

MEDIA_DIR = Path(__file__).resolve().parents[1] / ".cache" / "media"
KNOWN = ("messi5.jpg", "basketball1.png", "jwpIntro.mp4")


def media_path(name: str) -> Path:
    if name not in KNOWN:
        raise ValueError(f"unknown test media {name!r}; known: {', '.join(KNOWN)}")
    path = MEDIA_DIR / name
    if not path.is_file() or path.stat().st_size == 0:
        pytest.skip(f"test media {name} is absent: run `bash scripts/setup.d/30-media.sh` "
                    "(or scripts/setup.sh test) to fetch it into .cache/media/")
    return path
