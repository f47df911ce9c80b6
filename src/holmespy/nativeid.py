"""A thread's kernel id (TID), right in forked children too.

`threading.Thread.native_id` is set once, in the thread itself. After
`fork()` the child's only thread is the one that forked, and Python 3.11
keeps the id it had in the parent: the child's main thread then claims the
parent's TID, so a CPU clock built from it reads another process's thread
(or fails) and `threads.txt` names the wrong thread. In the child that
thread's real TID is the child's pid (a process's first thread has TID ==
PID), which is what we use when the recorded id is not one of ours.
"""

from __future__ import annotations

import os
import threading

_TASKS = "/proc/self/task"

_checked: dict[tuple[int, int], int] = {}
"""(pid, recorded id) -> the id to use: one stat per process and thread, not per call."""


def native_id(thread: threading.Thread) -> int | None:
    """`thread`'s TID, corrected for the thread that forked this process."""
    native = thread.native_id
    if native is None or thread is not threading.main_thread():
        return native
    pid = os.getpid()
    if native == pid:
        return native
    key = (pid, native)
    known = _checked.get(key)
    if known is None:
        # Only a main thread recorded before a fork can be stale; an embedded
        # interpreter's main thread may legitimately have TID != PID, and then
        # its TID is listed among ours.
        stale = os.path.isdir(_TASKS) and not os.path.exists(f"{_TASKS}/{native}")
        known = _checked[key] = pid if stale else native
    return known
