"""Folders and files that holmespy owns, reached without following symbolic links.

holmespy often runs as root and by default keeps its dumps under the shared
temp folder, where anyone with a local account can create names. So a name
is never trusted to lead where it did before:

- A root folder (the dump root) is opened without following a link at its
  last component, and used only if it is a folder that the effective user
  owns and nobody else can write, as OpenSSH's StrictModes treats `~/.ssh`.
  Anything else is `Refused`, with a message that says what to do. The
  folders above it are the user's choice of path and are followed as the
  kernel follows them: whatever they lead to must still pass the check.
- Below a root, every folder is opened relative to its parent's descriptor
  with `O_NOFOLLOW | O_DIRECTORY` and checked the same way; every file is
  opened relative to its folder with `O_NOFOLLOW` and taken only if `fstat`
  of the open descriptor says it is a regular file (no link, no pipe, no
  device), the same one `lstat` saw.
- What holmespy creates is 0700 (folders) or 0600 (files) whatever the
  umask: `mkdir` and `O_CREAT | O_EXCL` either make a new entry or fail, and
  `fchmod` restores what the umask took away.

Linux only, as holmespy is: `/proc/self/fd/N` names an open folder for code
that wants a path (see `fd_path`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a named pipe planted under a file's name must not hang.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class Refused(PermissionError):
    """A folder or file holmespy will not use; the message says why and what to do."""

    def __init__(self, path: Path | str, problem: str, todo: str) -> None:
        # strerror and filename as OSError handlers print them: "<path>: refused: it ...".
        super().__init__(errno.EPERM, f"refused: it {problem}; {todo}", str(path))
        self.path = str(path)
        self.problem = problem
        self.todo = todo

    def __str__(self) -> str:
        return f"refused {self.path}: it {self.problem}; {self.todo}"


@contextlib.contextmanager
def owned(fd: int) -> Iterator[int]:
    """`with owned(os.open(...)) as fd:` closes the descriptor at the end of the block."""
    try:
        yield fd
    finally:
        os.close(fd)


def user(uid: int) -> str:
    """`uid 0 (root)`: how messages name a user."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:  # a container's arbitrary uid has no passwd entry
        return f"uid {uid}"


def kind(mode: int) -> str:
    """What an entry is, in words, for a refusal."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


def check_private(st: os.stat_result, path: Path | str, *, alternative: str = "") -> None:
    """Refuse a folder that is not ours alone: another owner, or writable by group or others.

    `alternative` ends each todo (", or set HOLMES_DUMP_PATH to ...").
    """
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(path, f"is {kind(st.st_mode)}, not a folder", f"remove it{alternative}")
    if st.st_uid != me:
        raise Refused(
            path,
            f"is owned by {user(st.st_uid)}, not by {user(me)} that holmespy runs as",
            f"remove it (what another user put there is not to be trusted){alternative}",
        )
    if st.st_mode & _OTHERS_WRITE:
        who = (
            "group and others"
            if st.st_mode & _OTHERS_WRITE == _OTHERS_WRITE
            else ("its group" if st.st_mode & stat.S_IWGRP else "others")
        )
        raise Refused(
            path,
            f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})",
            f"run `chmod go-w {path}` if what it holds is yours{alternative}",
        )


def open_root(path: Path, *, create: bool, alternative: str = "") -> int | None:
    """A descriptor of the folder `path`, checked by `check_private`.

    Missing folders (`path` and its parents) are created 0700 when `create`;
    without it a missing `path` gives None. A link at `path` itself is
    refused, never followed.
    """
    path = Path(os.path.abspath(path))
    if path.parent == path:  # "/" has no parent to open it from
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            check_private(os.fstat(fd), path, alternative=alternative)
        except BaseException:
            os.close(fd)
            raise
        return fd
    try:
        parent = open_dirs(path.parent) if create else _open_followed(path.parent)
    except FileNotFoundError:
        if create:
            raise
        return None
    with owned(parent):
        return open_child(parent, path.name, path, create=create, alternative=alternative)


def open_child(
    dir_fd: int, name: str, path: Path, *, create: bool, alternative: str = ""
) -> int | None:
    """The folder `name` in `dir_fd`, never through a link, checked by `check_private`.

    Created 0700 when missing and `create`; else a missing folder gives None.
    `path` is its name in messages.
    """
    created = False
    try:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                return None
            # Only now: mkdir on a read-only file system fails even where the folder exists.
            try:
                os.mkdir(name, PRIVATE_DIR, dir_fd=dir_fd)
                created = True
            except FileExistsError:
                pass  # made by a sibling process meanwhile: checked below like any other
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        raise Refused(path, f"is {kind(mode)}, not a folder", f"remove it{alternative}") from None
    try:
        if created:
            os.fchmod(fd, PRIVATE_DIR)  # the umask may have taken bits away
        check_private(os.fstat(fd), path, alternative=alternative)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_below(
    root_fd: int, root: Path, parts: Sequence[str], *, create: bool, alternative: str = ""
) -> int | None:
    """The folder `root/part/part...` opened from `root_fd` by `open_child`, one part at a time.

    None when a part is missing and not `create`. `root_fd` stays open.
    """
    fd = os.dup(root_fd)
    path = root
    try:
        for part in parts:
            path = path / part
            child = open_child(fd, part, path, create=create, alternative=alternative)
            os.close(fd)
            fd = -1
            if child is None:
                return None
            fd = child
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def descend(dir_fd: int, parts: Sequence[str]) -> int:
    """The folder `part/part...` below `dir_fd`, each part opened without following a link.

    Unlike `open_below`, no check of owner or mode: for reading folders that
    may belong to someone else (`holmespy ls --from`), where only links matter.
    """
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def subfolders(dir_fd: int) -> list[str]:
    """Names of the real folders in `dir_fd` (links to folders are not folders), sorted."""
    with os.scandir(dir_fd) as entries:
        return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))


def remove_tree(dir_fd: int, name: str) -> None:
    """Delete `name` in `dir_fd` and all below it; a link is removed, never followed."""
    if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # walks by descriptors, does not follow links
    else:
        os.unlink(name, dir_fd=dir_fd)


def open_dirs(path: Path, mode: int = PRIVATE_DIR) -> int:
    """`mkdir -p` that returns a descriptor of `path`; the folders it creates get `mode` exactly.

    Existing folders are followed as the user named them; each missing one is
    created and then opened without following links, so a link planted in
    its place meanwhile is refused (ELOOP) rather than written through.
    """
    path = Path(os.path.abspath(path))
    missing: list[str] = []
    existing = path
    while not os.path.lexists(existing):
        missing.append(existing.name)
        existing = existing.parent
    fd = _open_followed(existing)
    try:
        for name in reversed(missing):
            child = _make_dir(fd, name, mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_temp_dir_in(path: Path, prefix: str) -> Path:
    """`make_temp_dir` by path: a new private `<prefix><random>` folder in `path`.

    Unlike `tempfile.mkdtemp`, it takes no module lock a fork could leave held
    (see holmespy.tempdir).
    """
    # The temp folder itself may be a link (TMPDIR=/tmp on macOS is one): follow it.
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        name, fd = make_temp_dir(dir_fd, prefix)
        os.close(fd)
    finally:
        os.close(dir_fd)
    return path / name


def make_temp_dir(dir_fd: int, prefix: str) -> tuple[str, int]:
    """A new private folder `<prefix><random>` in `dir_fd`: its name and a descriptor.

    The name cannot be guessed, and `mkdir` fails rather than reuse anything
    already there, so nobody can plant a link or a folder of theirs under it.
    """
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(name, PRIVATE_DIR, dir_fd=dir_fd)
        except FileExistsError:
            continue
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        os.fchmod(fd, PRIVATE_DIR)
        return name, fd
    raise FileExistsError(errno.EEXIST, "no free temporary name", prefix)


def open_file(dir_fd: int, name: str, path: Path | str) -> tuple[int, os.stat_result]:
    """`name` in `dir_fd` opened for reading, only if it is a regular file; and its fstat.

    Raises `Refused` for a link, folder, pipe, socket or device, and
    FileNotFoundError when there is no such entry.
    """
    seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(seen.st_mode):
        raise Refused(
            path,
            f"is {kind(seen.st_mode)}, not a regular file",
            "holmespy takes only regular files",
        )
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link after the stat
            raise Refused(path, "is a symbolic link", "holmespy takes only regular files") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise Refused(path, "was replaced while it was opened", "holmespy takes only regular files")
    return fd, st


def read_file(dir_fd: int, name: str, path: Path | str, *, limit: int) -> bytes:
    """The content of the regular file `name` in `dir_fd`; `Refused` if longer than `limit`."""
    fd, st = open_file(dir_fd, name, path)
    with owned(fd):
        return read_open(fd, st, path, limit=limit)


def read_open(fd: int, st: os.stat_result, path: Path | str, *, limit: int) -> bytes:
    """The content of the open regular file `fd` (its fstat `st`), at most `limit` bytes."""
    if st.st_size > limit:
        raise Refused(path, f"is {st.st_size} bytes, more than {limit}", "it is not read")
    data = b""
    while len(data) <= limit:
        block = os.read(fd, limit + 1 - len(data))
        if not block:
            return data
        data += block
    raise Refused(path, f"grew past {limit} bytes while read", "it is not read")


def write_file(dir_fd: int, name: str, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Create `name` in `dir_fd` (it must not exist, not even as a link) with `data`, synced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with owned(os.open(name, flags, mode, dir_fd=dir_fd)) as fd:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)


def replace_file(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write `path` whole or not at all: a new temp file renamed over it.

    Missing parent folders are created 0700; the file gets `mode` whatever
    the umask. A link at `path` is replaced by the file, never written
    through, and the temp name cannot be guessed in advance.
    """
    with owned(open_dirs(path.parent)) as folder:
        temp = f".{path.name}.tmp-{secrets.token_hex(6)}"
        write_file(folder, temp, data, mode)
        try:
            os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fd_path(fd: int, fallback: Path) -> Path:
    """A path that reaches what `fd` is open on, whatever happens to its names meanwhile.

    `/proc/self/fd/N` is resolved by the kernel to the open folder or file
    itself; without /proc, `fallback` (its name when it was opened).
    """
    path = Path(f"/proc/self/fd/{fd}")
    return path if os.path.exists(path) else fallback


def _open_followed(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _make_dir(dir_fd: int, name: str, mode: int) -> int:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        created = False
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    if created:
        os.fchmod(fd, mode)
    return fd
