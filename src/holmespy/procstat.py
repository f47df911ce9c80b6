"""The watcher's cheapest read: CPU time, thread count and RSS from one `/proc` file.

`/proc/<pid>/stat` answers all three in one read (2.3 µs here for open, read
and close, against ~40 µs for the same numbers through psutil). No
descriptor is kept between reads: a kept one would show in the host's
`/proc/self/fd` (a server's open-fd metric, a test that checks for leaked
descriptors), would be inherited by a forked child, and could be closed under
holmespy by a host that closes every descriptor it does not know. A kept
`pread` would save 1.2 µs a tick.
"""

from __future__ import annotations

import os
from collections import namedtuple

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from typing import NamedTuple

_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


if TYPE_CHECKING:

    class ProcSample(NamedTuple):  # a tuple: built every tick, so cheap to make
        cpu_seconds: float
        """user + system CPU time of the whole process (all threads)."""
        threads: int
        rss_bytes: int

else:  # the same tuple, without importing typing (~9 ms) at start()
    ProcSample = namedtuple("ProcSample", ["cpu_seconds", "threads", "rss_bytes"])


def parse_stat(text: bytes) -> ProcSample:
    """Parse a `/proc/<pid>/stat` line (see proc(5)).

    The command name (field 2) is in parentheses and may itself hold spaces
    and parentheses, so the numeric fields are counted after the *last* ')'.
    """
    rest = text[text.rindex(b")") + 2 :].split(maxsplit=22)
    # rest[0] is field 3 (state): field N is rest[N - 3].
    utime, stime = int(rest[11]), int(rest[12])
    return ProcSample(
        cpu_seconds=(utime + stime) / _CLK_TCK,
        threads=int(rest[17]),
        rss_bytes=int(rest[21]) * _PAGE_SIZE,
    )


class ProcStatReader:
    """Reads one process's stat file, opening it for each read."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else f"/proc/{os.getpid()}/stat"

    def read(self) -> ProcSample:
        return parse_stat(read_proc_file(self.path, 4096))

    def close(self) -> None:
        """Nothing to release: kept for callers that close what they open."""


def read_proc_file(path: str, size: int) -> bytes:
    """One read of a small `/proc` file through a descriptor that lives only for that read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def read_rss_bytes(statm_path: str) -> int:
    """RSS from `/proc/<pid>/statm` (field 2, in pages): the cheapest RSS read."""
    return int(read_proc_file(statm_path, 256).split()[1]) * _PAGE_SIZE
