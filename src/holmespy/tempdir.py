"""The system's temp folder, found from any thread without `tempfile`.

`tempfile.gettempdir()` guards its first lookup with a module lock that a
fork does not reset: had holmespy's watcher thread been inside that lookup
when the host forked (a prefork server forks right after `start()`), the
child's watcher would wait on the lock forever (examples/prefork_spin.py hung
so 4 runs in 6). Importing tempfile also costs ~5 ms that every `start()`
would pay (and pathlib ~9 ms: `temp_folder` answers with a string). So
`temp_folder` never calls into tempfile: it reads the answer tempfile
already cached, if any, or makes the same search itself.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_NAMES = ("TMPDIR", "TEMP", "TMP")
_FOLDERS = ("/tmp", "/var/tmp", "/usr/tmp")


def temp_root() -> Path:
    """`temp_folder()` as a `Path`."""
    from holmespy.lazyimport import importing

    with importing:  # (pathlib not at start(): see temp_folder; on any thread: lazyimport)
        from pathlib import Path

    return Path(temp_folder())


def temp_folder() -> str:
    """Where `tempfile.gettempdir()` points, without taking tempfile's lock.

    tempfile's own cached answer when it has one (a host may also have set
    `tempfile.tempdir`); otherwise the same candidates in the same order
    ($TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, the current folder),
    the first writable folder winning. tempfile proves a folder writable by
    creating a file in it; this asks access(2), which also says no on a
    read-only file system.
    """
    tempfile = sys.modules.get("tempfile")
    known = getattr(tempfile, "tempdir", None)
    if known is not None:
        return os.fsdecode(known)
    candidates = [os.environ.get(name) for name in _NAMES]
    for folder in filter(None, [*candidates, *_FOLDERS]):
        path = os.path.abspath(folder)
        if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
            return path
    return os.getcwd()
