"""What this Python (and this install) cannot give holmespy, said in every `event.json`.

`docs/versions.md` has the whole table; this is the part a reader of one
event needs: a key per missing feature, and a sentence saying what is
missing and what to do. Called once per event (never per tick), so it may
look at the filesystem.
"""

from __future__ import annotations

import importlib.util
import sys

from holmespy import loops

__all__ = ["lacks"]


def lacks() -> dict[str, str]:
    """{feature: what is missing and why}; empty when this Python has everything."""
    out = dict(loops.limitations())
    try:
        from holmespy.profilers.cpu._pyspy import find_pyspy

        if find_pyspy(None)[0] is None:
            out["pyspy"] = (
                "py-spy is not installed for this Python: CPU profiles come from the"
                " in-process sampler (pip install holmespy[profile])"
            )
    except Exception as exc:  # a broken install must not cost the event
        out["pyspy"] = f"could not look for py-spy: {type(exc).__name__}: {exc}"
    try:
        has_yappi = importlib.util.find_spec("yappi") is not None
    except (ImportError, ValueError):
        has_yappi = False
    if not has_yappi:
        out["yappi"] = (
            "yappi is not installed for this Python: HOLMES_CPU_ENGINE=yappi is unavailable"
            f" (pip install holmespy[yappi]{_yappi_build_hint()})"
        )
    return out


def _yappi_build_hint() -> str:
    if sys.version_info < (3, 15):
        return ""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # yappi 1.7.6 publishes no wheel for 3.15: pip then compiles it.
    return f"; with no wheel for {version}, pip builds it: it needs python{version}-dev and gcc"
