"""Names that came from someone else (a peer's display name, a room), made safe to print.

A name with a newline can forge a line in a log; one with terminal escape codes can
rewrite a terminal. ``printable`` keeps letters, digits, punctuation and spaces of any
script, replaces every other character (controls, escapes, line and paragraph separators,
formatting characters) with "?", and cuts the result to ``limit`` characters.
"""

from __future__ import annotations

import unicodedata


def printable(text: object, limit: int = 64) -> str:
    """``text`` (anything: a non-string gives "") safe for one line of a log or terminal."""
    if not isinstance(text, str):
        return ""
    kept = [ch if ch == " " or unicodedata.category(ch)[0] in "LMNPS" else "?"
            for ch in text[:limit]]
    return "".join(kept)
