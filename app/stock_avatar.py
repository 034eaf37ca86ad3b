"""A stock avatar as a ``.lca`` file, so that ``call --avatar stock:NAME`` offers it like any
other avatar: the call's avatar exchange sends a file (hashed, fetched in chunks, validated by
the receiver), and a stock avatar has none of its own (``avatar.stock`` makes it from the
default avatar and the stock asset).

The file is written once into ``~/.cache/splatcall/stock/`` (``$XDG_CACHE_HOME`` when set and
absolute), named by the stock name and a hash of what it is made from (the stock asset and the
default avatar), so an updated asset never reuses a stale file. Not the fetched avatars' cache:
that one evicts files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from avatar.stock import PREFIX


def is_stock(source: str | None) -> bool:
    return bool(source) and str(source).startswith(PREFIX)


def stock_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "splatcall" / "stock"


def stock_avatar_file(source: str, cache_dir: str | Path | None = None) -> Path:
    """The ``.lca`` of ``source`` ("stock:NAME"), written on first use. An unknown name (or a
    file that cannot be written) is a ``StockError`` naming the stock avatars there are."""
    from avatar.avatar import DEFAULT_AVATAR_PATH, load_avatar
    from avatar.lca import AvatarFileError, save_avatar_file
    from avatar.stock import STOCK_PATH, StockError, stock_names
    from avatar.template import load_template
    from common.names import printable

    name = str(source)[len(PREFIX):]
    names = stock_names()
    if name not in names:
        raise StockError(f"no stock avatar {printable(name)!r}; there are {', '.join(names)} "
                         "(`main.py avatar list` describes them)")
    digest = hashlib.sha256()
    for made_from in (STOCK_PATH, DEFAULT_AVATAR_PATH):
        digest.update(Path(made_from).read_bytes())
    folder = Path(cache_dir) if cache_dir is not None else stock_cache_dir()
    path = folder / f"{name}-{digest.hexdigest()[:16]}.lca"
    if path.is_file():
        return path
    try:
        avatar = load_avatar(f"{PREFIX}{name}", load_template())
        folder.mkdir(parents=True, exist_ok=True)
        save_avatar_file(path, avatar.data)  # atomic: a temporary file, then a rename
    except (AvatarFileError, OSError) as exc:
        raise StockError(f"{printable(source)}: cannot write its file into {folder} "
                         f"({exc})") from None
    return path
