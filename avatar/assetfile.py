"""Project assets stored as safetensors with one JSON document in the header's metadata.

Used for the shipped template and the tracker's face correspondence: trusted files from the
repository, checked for format and presence, not for hostility (``.lca`` files from other
people go through ``avatar.lca`` instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def save_asset(path: str | Path, tensors: dict[str, np.ndarray], key: str, metadata: dict) -> None:
    """Write tensors and ``metadata`` (under ``key``) atomically: a temporary file, then rename."""
    from safetensors.numpy import save_file

    from common.files import replacing

    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={key: json.dumps(metadata, sort_keys=True)})


def load_asset(path: str | Path, key: str, expected_format: str, error: type[Exception],
               missing_hint: str) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, metadata) of an asset, or ``error`` with one readable line."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing ({missing_hint})")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="numpy") as handle:
            metadata = json.loads(handle.metadata()[key])
    except (SafetensorError, KeyError, ValueError, OSError, TypeError) as exc:
        raise error(f"{path} is unreadable: {exc}") from None
    if metadata.get("format") != expected_format:
        raise error(f"{path}: format {metadata.get('format')!r}, expected {expected_format}")
    return tensors, metadata
