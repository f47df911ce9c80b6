"""The event bundle: one folder per trigger, written atomically.

A bundle is built under `.tmp-<pid>-<event-id>` next to its final place and
renamed to `<event-id>` only once every file and `event.json` are written and
synced, so a reader (the CLI, the uploader) never sees half an event. While
the captures run, `event.partial.json` in the temp folder says what the event
is: a process killed mid-capture leaves a temp folder that the next start
turns into an event marked partial (`holmespy.salvage`). Folders are 0700
and files 0600: dumps show code, arguments and data of the process. Every
folder and file is reached through `holmespy.safefs`: never through a link,
and only under a root that this user alone can write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from holmespy import safefs
from holmespy.manifest import EVENT_FILE as EVENT_FILE

PARTIAL_FILE = "event.partial.json"
"""The event as known so far, kept in the temp folder while the captures run."""
TMP_PREFIX = ".tmp-"
EVENT_ID_RE = re.compile(r"(\d{8}T\d{6}\.\d{3}Z)-([a-z0-9]+)-([0-9a-f]+)")
"""What `new_event_id` makes: the UTC time, the rule, random hex."""
DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
"""The `<YYYY-MM-DD>` folder of `event_folder`."""
DUMP_PATH_ALTERNATIVE = ", or set HOLMES_DUMP_PATH to a folder that only this user can write"
_DIR = os.O_RDONLY | os.O_DIRECTORY


def new_event_id(rule: str, now: dt.datetime | None = None) -> str:
    """`20261124T035412.123Z-thread-8f3a1c9b2e`: sorts by time, unique across hosts.

    40 random bits make two events of one millisecond collide once in ~10^12.
    """
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{rule}-{os.urandom(5).hex()}"


def event_folder(dump_path: Path, service: str, event_id: str) -> Path:
    """`<dump_path>/<service>/<YYYY-MM-DD>/<event-id>`, the date taken from the id (UTC)."""
    day = f"{event_id[0:4]}-{event_id[4:6]}-{event_id[6:8]}"
    return dump_path / service / day / event_id


def open_dump_root(dump_path: Path, *, create: bool) -> int | None:
    """A descriptor of the dump root, refused unless it is a folder this user alone can write.

    None if it does not exist and not `create`. See `holmespy.safefs`.
    """
    return safefs.open_root(dump_path, create=create, alternative=DUMP_PATH_ALTERNATIVE)


def make_private_dirs(path: Path) -> None:
    """mkdir -p with 0700 on every folder it creates (umask would widen or narrow it)."""
    os.close(safefs.open_dirs(path))


def write_private(path: Path, data: bytes) -> None:
    """Create `path` (0600, must not exist, not even as a link) with `data`, synced to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with safefs.owned(os.open(path, flags, 0o600)) as fd:
        os.fchmod(fd, 0o600)
        safefs.write_all(fd, data)
        os.fsync(fd)


def file_digest(path: Path, *, dir_fd: int | None = None) -> dict[str, Any]:
    """Name, size and sha256 of the regular file `path` (read from `dir_fd` when given).

    A link, pipe or device is `safefs.Refused`: a bundle lists only files.
    """
    parent = dir_fd if dir_fd is not None else os.open(path.parent, _DIR | os.O_CLOEXEC)
    try:
        fd, st = safefs.open_file(parent, path.name, path)
    finally:
        if dir_fd is None:
            os.close(parent)
    h = hashlib.sha256()
    with safefs.owned(fd):
        while block := os.read(fd, 1 << 20):
            h.update(block)
    return {"name": path.name, "size": st.st_size, "sha256": h.hexdigest()}


def temp_name(event_id: str, pid: int | None = None) -> str:
    """`.tmp-<pid>-<event-id>`: where the event is built, beside its final folder."""
    return f"{TMP_PREFIX}{os.getpid() if pid is None else pid}-{event_id}"


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2, sort_keys=False, default=str).encode() + b"\n"


def publish_in(day_fd: int, temp: str, final: str, event: dict[str, Any], *, where: Path) -> None:
    """Write `event.json` into `day_fd/temp` (listing each file), then rename it to `final`.

    The checkpoint and hidden work folders (py-spy's output) are removed
    first; only regular files are listed (anything else is `safefs.Refused`).
    """
    temp_fd = os.open(temp, safefs.DIR_FLAGS, dir_fd=day_fd)
    with safefs.owned(temp_fd):
        for name in os.listdir(temp_fd):
            if name.startswith(PARTIAL_FILE) or name.startswith("."):
                safefs.remove_tree(temp_fd, name)
        names = sorted(n for n in os.listdir(temp_fd) if n != EVENT_FILE)
        files = [file_digest(where / n, dir_fd=temp_fd) for n in names]
        safefs.write_file(temp_fd, EVENT_FILE, encode_event({**event, "files": files}))
        stamp = _publish_stamp()
        os.utime(EVENT_FILE, ns=(stamp, stamp), dir_fd=temp_fd, follow_symlinks=False)
    os.rename(temp, final, src_dir_fd=day_fd, dst_dir_fd=day_fd)
    os.fsync(day_fd)


_last_stamp = 0
_stamp_lock = threading.Lock()


def _new_stamp_lock_in_child() -> None:
    # A parent thread may have held the lock at the fork: the child's copy would never open.
    global _stamp_lock
    _stamp_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_stamp_lock_in_child)


def _publish_stamp() -> int:
    """Now, in epoch nanoseconds, later than any stamp this process gave before.

    It becomes the mtime of `event.json`: the spool orders events by it (the
    oldest goes first when the spool is full), so two events of the same
    millisecond keep the order they were published in, whatever their ids'
    random parts. Set explicitly because some filesystems keep mtimes only to
    the kernel tick; strictly increasing because the wall clock may step back.
    """
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


class BundleWriter:
    """Builds one event's folder under a temp name and publishes it with a rename.

    The dump root, `<service>` and `<day>` are opened (created 0700 when
    missing) without following links and checked by `safefs`; the temp
    folder is made in the day's folder by descriptor. Captures write through
    `directory`, which reaches the temp folder itself whatever happens to
    the names above it.
    """

    def __init__(self, dump_path: Path, service: str, event_id: str) -> None:
        self.root = dump_path
        self.final = event_folder(dump_path, service, event_id)
        self.temp = self.final.parent / temp_name(event_id)
        self._day_fd = -1
        self._temp_fd = -1
        self._published = False

    @property
    def directory(self) -> Path:
        """Where captures write their files: the temp folder, by its open descriptor."""
        return safefs.fd_path(self._temp_fd, self.temp)

    def __enter__(self) -> BundleWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def open(self) -> BundleWriter:
        """Open the day's folder (made if missing) and make the temp folder in it."""
        root = open_dump_root(self.root, create=True)
        assert root is not None  # created
        with safefs.owned(root):
            parts = self.final.relative_to(self.root).parts[:-1]  # <service>, <day>
            day = safefs.open_below(root, self.root, parts, create=True)
            assert day is not None
        self._day_fd = day
        try:
            os.mkdir(self.temp.name, 0o700, dir_fd=day)
            self._temp_fd = os.open(self.temp.name, safefs.DIR_FLAGS, dir_fd=day)
            os.fchmod(self._temp_fd, 0o700)
        except BaseException:
            self._close()
            raise
        return self

    def discard(self) -> None:
        """Unless published, remove the temp folder: no half-written event stays behind."""
        try:
            if not self._published and self._day_fd >= 0:
                with contextlib.suppress(OSError):
                    safefs.remove_tree(self._day_fd, self.temp.name)
        finally:
            self._close()

    def checkpoint(self, event: dict[str, Any]) -> None:
        """Replace `event.partial.json`: what a salvage publishes if the process dies now."""
        new = PARTIAL_FILE + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new, dir_fd=self._temp_fd)
        safefs.write_file(self._temp_fd, new, encode_event(event))
        os.replace(new, PARTIAL_FILE, src_dir_fd=self._temp_fd, dst_dir_fd=self._temp_fd)

    def publish(self, event: dict[str, Any]) -> Path:
        """Write `event.json` (listing every file with size and sha256), then rename."""
        publish_in(self._day_fd, self.temp.name, self.final.name, event, where=self.temp)
        self._published = True
        return self.final

    def _close(self) -> None:
        for fd in (self._temp_fd, self._day_fd):
            if fd >= 0:
                os.close(fd)
        self._temp_fd = self._day_fd = -1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_os_error(exc: OSError, where: Path) -> str:
    """An OSError said as what to do about it."""
    if isinstance(exc, safefs.Refused):
        return str(exc)  # already names the folder and what to do
    if exc.errno == errno.ENOSPC:
        todo = "free disk space or point HOLMES_DUMP_PATH elsewhere"
        return f"no space left for dumps in {where}: {todo}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        todo = "set HOLMES_DUMP_PATH to a writable folder"
        return f"cannot write dumps in {where} ({exc.strerror}): {todo}"
    todo = "check that HOLMES_DUMP_PATH is a writable folder"
    return f"cannot write dumps in {where} ({exc}): {todo}"


def host_facts() -> dict[str, Any]:
    from holmespy import __version__
    from holmespy.lazyimport import importing

    with importing:  # asyncio, on a holmespy thread: only once an event is written
        from holmespy.support import lacks

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "versions": {
            "python": sys.version.split()[0],
            "implementation": sys.implementation.name,
            "holmespy": __version__,
            "lacks": lacks(),
        },
    }
