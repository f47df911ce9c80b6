"""How long a thread of this process has waited for a CPU (Linux schedstat).

A loop silent for half a second is not always blocked: on an overloaded
host its thread may have been ready to run and simply not scheduled. The
kernel counts that wait per thread, in the second field of
`/proc/self/task/<tid>/schedstat` (ns spent runnable but not running), so
the loop watchdog can take it out of a silence instead of blaming the loop
for the machine. Read only while a heartbeat is late, never on a healthy
tick.
"""

from __future__ import annotations

import threading

from holmespy.nativeid import native_id

__all__ = ["own_wait", "waited"]


def own_wait() -> float | None:
    """Seconds the calling thread has spent waiting for a CPU so far; None when the kernel
    does not say."""
    return _read("/proc/thread-self/schedstat")


def waited(ident: int) -> float | None:
    """Seconds the thread with `threading` ident `ident` has spent waiting for a CPU so far;
    None when the thread is unknown or the kernel does not say."""
    thread = next((t for t in threading.enumerate() if t.ident == ident), None)
    if thread is None:
        return None
    tid = native_id(thread)
    if tid is None:
        return None
    return _read(f"/proc/self/task/{tid}/schedstat")


def _read(path: str) -> float | None:
    try:
        with open(path, "rb") as f:
            fields = f.read(128).split()
        return int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None
