"""The user's own avatar: where ``avatar create --as-default`` keeps it, and which avatar a
command uses when none is named.

The file is ``$XDG_DATA_HOME/splatcall/avatar.lca`` (``~/.local/share/splatcall/avatar.lca``
when XDG_DATA_HOME is unset or not absolute, as the XDG base-directory spec says).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.files import replacing

AVATAR_FILE = "avatar.lca"


def data_dir() -> Path:
    """splatcall's folder in the user's data directory (not created here)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "splatcall"


def user_avatar_path() -> Path:
    return data_dir() / AVATAR_FILE


def install_user_avatar(source: str | Path) -> Path:
    """Copy ``source`` (a checked .lca) to the user's avatar, whole or not at all."""
    target = user_avatar_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def avatar_or_user_default(given: str | None, fallback: str | None = None
                           ) -> tuple[str | None, str | None]:
    """(the avatar to use, a one-line note or None): ``given`` when set; else the user's own
    avatar when one was made with ``--as-default`` (with a note saying so); else
    ``fallback``."""
    if given:
        return given, None
    path = user_avatar_path()
    if path.is_file():
        return str(path), (f"using your own avatar {path} (made with `avatar create "
                           "--as-default`; --avatar picks another)")
    return fallback, None
