"""The local folder as a store: the default place of dumps, and the layout of the spool.

Writes are atomic like bundles are (a `.tmp-<pid>-` sibling renamed into
place) and private (0700 folders, 0600 files), made by descriptor: the temp
file is created exclusively and never through a link. Reads open the root
as named and everything below it by descriptor without following a link,
and take a regular file only: a dump folder can be shared, and anyone who
can write in it can plant a link to a secret or a pipe that never answers.
Object metadata has no place on disk; a local event carries the same facts
in its `event.json`.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from holmespy import safefs
from holmespy.bundle import TMP_PREFIX, _pid_alive
from holmespy.storage.base import CHUNK, ObjectInfo, ObjectReader, UnsafeObject, check_key
from holmespy.storage.s3client import ObjectNotFound, StorageError


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def endpoint(self) -> str:
        return str(self.root)

    def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str] | None = None,
        *,
        timeout: float = 0.0,
    ) -> ObjectInfo:
        dest = self._path(key)
        temp = f"{TMP_PREFIX}{os.getpid()}-{dest.name}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with safefs.owned(safefs.open_dirs(dest.parent)) as folder:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(
                        temp, dir_fd=folder
                    )  # our own leftover; a link is removed, not followed
                try:
                    with path.open("rb") as src, open(temp, "wb", opener=_in(folder, flags)) as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(temp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=folder)
                    raise
        except OSError as exc:
            raise StorageError(f"cannot store {key} in {self.root}: {exc}") from exc
        return self._info(key, dest)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the folder the prefix names; its last part may be a partial name.
        folder, _, _ = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # removed while listing
                        yield self._info(key, path)

    def folders(
        self, prefix: str = "", *, start: str = "", start_after: str = ""
    ) -> builtins.list[str]:
        try:
            with safefs.owned(self._open_folder(_parts(prefix))) as folder:
                names = safefs.subfolders(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link where a folder should be: nothing to list
                return []
            raise
        return [n for n in names if n.startswith(start) and n > start_after]

    def files(self, prefix: str) -> builtins.list[ObjectInfo]:
        try:
            folder = self._open_folder(_parts(prefix))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no {prefix} in {self.root}") from None
        with safefs.owned(folder), os.scandir(folder) as entries:
            found = [
                _entry_info(_join(prefix, e.name), e.stat(follow_symlinks=False)) for e in entries
            ]
        return sorted(found, key=lambda info: info.key)

    def get_bytes(self, key: str, *, limit: int | None = None) -> bytes:
        with self._open_file(key)[0] as f:
            if limit is None:
                return f.read()
            # Not f.read(limit): it allocates `limit` bytes up front, and callers pass
            # their cap (256 MiB) plus one to learn whether a file is over it.
            data = bytearray()
            while len(data) < limit and (block := f.read(min(CHUNK, limit - len(data)))):
                data += block
            return bytes(data)

    def open(self, key: str) -> ObjectReader:
        f, st = self._open_file(key)
        return ObjectReader(st.st_size, f.read, f.close)

    def local_path(self, key: str) -> Path:
        return self._path(key) if key else self.root

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not stat.S_ISREG(_lstat_mode(src)):
            raise ObjectNotFound(f"no {key} in {self.root}")
        LocalStore(dest.parent).put_file(dest.name, src)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            return self._info(key, self._path(key))
        except FileNotFoundError:
            return None

    def url(self, key: str) -> str:
        return self._path(key).absolute().as_uri()

    def presign(self, key: str, expires: float) -> str | None:
        return None

    def clean_incomplete(self, prefix: str) -> int:
        """Remove temp files of dead writers under the folder `prefix` names."""
        removed = 0
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        for temp in folder.rglob(f"{TMP_PREFIX}*"):
            pid = temp.name[len(TMP_PREFIX) :].split("-", 1)[0]
            if stat.S_ISREG(_lstat_mode(temp)) and pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    temp.unlink()
                    removed += 1
        return removed

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _open_folder(self, parts: Sequence[str]) -> int:
        """The folder `parts` below the root: the root as named, each part below it
        without following a link (ELOOP for one)."""
        with safefs.owned(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root:
            return safefs.descend(root, parts)

    def _open_file(self, key: str) -> tuple[BinaryIO, os.stat_result]:
        """A regular file, read by descriptor: `UnsafeObject` for any other kind of entry."""
        parts = check_key(key).split("/")
        try:
            with safefs.owned(self._open_folder(parts[:-1])) as folder:
                fd, st = safefs.open_file(folder, parts[-1], self._path(key))
        except safefs.Refused as exc:
            raise UnsafeObject(key, exc.problem) from None
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no {key} in {self.root}") from None
        return open(fd, "rb"), st

    def _info(self, key: str, path: Path) -> ObjectInfo:
        return _entry_info(key, path.stat())


def _parts(key: str) -> builtins.list[str]:
    return check_key(key).split("/") if key else []


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _entry_info(key: str, st: os.stat_result) -> ObjectInfo:
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
    return ObjectInfo(key=key, size=st.st_size, last_modified=modified, etag=None)


def _in(folder: int, flags: int) -> Callable[[str, int], int]:
    """An `open()` opener that creates the file 0600 in `folder`, with `flags`."""
    return lambda name, _: os.open(name, flags, 0o600, dir_fd=folder)


def _lstat_mode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except OSError:
        return 0
