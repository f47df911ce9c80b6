"""What this Python (and this install) cannot give holmespy, said in every `event.json`.

`docs/versions.md` has the whole table; this is the part a reader of one
event needs: a key per missing feature, and a sentence saying what is
missing and what to do. Called once per event, from the tick that fires, so
it imports nothing: a prefork worker that dropped privileges after the fork
may no longer be able to read the standard library (see test_dump_root).
"""

from __future__ import annotations

import sys

from holmespy import loops

__all__ = ["lacks"]


def lacks() -> dict[str, str]:
    """{feature: what is missing and why}; empty when this Python has everything."""
    out = dict(loops.limitations())
    if not _installed("yappi"):
        out["yappi"] = (
            "yappi is not installed for this Python: HOLMES_CPU_ENGINE=yappi is unavailable"
            f" (pip install holmespy[yappi]{_yappi_build_hint()})"
        )
    return out


def _installed(name: str) -> bool:
    """Whether `import name` would find a top-level module, asked of the finders already loaded.

    Unlike `importlib.util.find_spec` this loads no module (not even
    importlib.util) and never imports `name` itself.
    """
    if name in sys.modules:
        return True
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            if find_spec(name, None) is not None:
                return True
        except Exception:
            continue
    return False


def _yappi_build_hint() -> str:
    if sys.version_info < (3, 15):
        return ""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # yappi 1.7.6 publishes no wheel for 3.15: pip then compiles it.
    return f"; with no wheel for {version}, pip builds it: it needs python{version}-dev and gcc"
