"""SIGTERM without a handler: publish the capture in progress, then die of SIGTERM as before.

A process that leaves SIGTERM at its default dies at once when it gets one:
no `atexit`, no `finally`, so a capture in progress would be lost. uvicorn
is the common case: it handles SIGTERM while it serves, then puts the
previous handler back and raises SIGTERM again to die "as expected".

So at `start()`, and only when SIGTERM has the default disposition, holmespy
installs a handler that cuts the capture in progress, gives the capturer
`HOLMES_EXIT_SECONDS` to publish it, restores the default and raises SIGTERM
again: the process dies of SIGTERM as it would have (same exit status, same
signal seen by its parent), at most that bound later. A handler the host
installs later simply replaces ours; one that saves and restores the
previous handler (uvicorn) restores ours, which then runs on the re-raise.
A host's own handler, or SIG_IGN, is never touched: that host decides how
it exits, and the exit path through `atexit` covers it.

What differs from the default: like any Python-level handler, ours runs in
the main thread between bytecodes, so a main thread stuck inside a long C
call delays the death until the call returns (the default would kill at
once). `HOLMES_EXIT_SECONDS=0` installs nothing.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # not `signal`: its enums cost ~4 ms
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

_on_term: Callable[[str], None] | None = None


def install(on_term: Callable[[str], None]) -> str:
    """Install the SIGTERM handler if SIGTERM has no handler; says what was done."""
    global _on_term
    _on_term = on_term
    if threading.current_thread() is not threading.main_thread():
        return "not installed: start() ran outside the main thread"
    try:
        current = _signal.getsignal(_signal.SIGTERM)
        if current is _handle:
            return "installed"
        if not _is_default(current):
            return "not installed: the host handles SIGTERM itself"
        _signal.signal(_signal.SIGTERM, _handle)
    except (ValueError, OSError) as exc:  # not the main interpreter, or no such signal
        return f"not installed: {exc}"
    return "installed"


def uninstall() -> None:
    """Put the default back if our handler is still the one installed (main thread only)."""
    global _on_term
    _on_term = None
    if threading.current_thread() is not threading.main_thread():
        return  # the handler stays; without a callback it only re-raises
    try:
        if _signal.getsignal(_signal.SIGTERM) is _handle:
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def _is_default(handler: object) -> bool:
    # `signal.SIG_DFL` is an IntEnum equal to 0; `_signal` says it as the int.
    return isinstance(handler, int) and handler == _signal.SIG_DFL


def _handle(signum: int, frame: FrameType | None) -> None:
    try:
        callback = _on_term
        if callback is not None:
            callback("SIGTERM received")
    finally:
        # Die of SIGTERM, as the process would have without holmespy.
        _signal.signal(signum, _signal.SIG_DFL)
        _signal.raise_signal(signum)
