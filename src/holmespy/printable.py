"""One rule for text that came from elsewhere and is about to meet a terminal.

Thread and task names are chosen by the host's code, `event.json` strings by
whoever wrote the bundle, object keys by whoever can write to the bucket.
Printed raw, ESC starts a terminal command (OSC 52 writes the clipboard, OSC 0
the window title, `ESC [2J` clears the screen), a bidi override (U+202E)
reorders what the reader sees, and a line or paragraph separator (U+2028)
starts a line that a table or a parser does not expect.

`printable` turns every such character into a visible escape, the way Python's
`repr` spells it (`\\x1b`, `\\u202e`, `\\n`): every character Unicode does not
call printable (categories Cc, Cf, Cs, Co, Cn, Zl, Zp) except plain spaces
(Zs, e.g. a no-break space). Backslashes are left alone, so the function is
idempotent: text that went through it once (a dump written by holmespy) comes
out of it again unchanged. The price is that a name spelled with a literal
backslash-x looks like an escaped control character; the goal is a safe
terminal, not a reversible encoding.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable", "printable_lines"]

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str, limit: int | None = None) -> str:
    """`text` with every control, format and separator character escaped visibly.

    With `limit`, the result is at most `limit` characters, the last one "…"
    when something was cut.
    """
    if limit is not None and len(text) > limit:
        text = text[: limit + 1]  # escaping only lengthens: no need to look further
    if not text.isprintable():
        text = "".join(_escape(ch) for ch in text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def printable_lines(text: str) -> str:
    """Like `printable`, but keeps line feeds: for whole pages of output, line by line."""
    return "\n".join(line if line.isprintable() else printable(line) for line in text.split("\n"))


def _escape(ch: str) -> str:
    if ch.isprintable() or unicodedata.category(ch) == "Zs":
        return ch
    short = _SHORT.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
