"""Usable CPU cores and memory limit of this process, so thresholds can be relative.

A container sees the host's cores in /proc/stat and the host's RAM in /proc/meminfo, so
"CPU %" and "RSS %" must be measured against the cgroup limits instead. Both cgroup v1 and
v2 are read straight from /proc and the cgroup filesystem; any file that is missing or
garbled just hands over to the next source, named in the returned ``*_source`` string.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")

# Paths are plain strings here, not `pathlib`: `start()` detects the limits, and
# pathlib (with re, fnmatch and urllib.parse) would cost it ~9 ms.

# v1 writes "unlimited" as LONG_MAX rounded down to a page (9223372036854771712).
_V1_UNLIMITED = 2**60


class Limits:
    """What the process may use, and where each number came from (immutable)."""

    FIELDS = ("cpu_cores", "cpu_source", "mem_bytes", "mem_source")
    __slots__ = FIELDS
    cpu_cores: float
    cpu_source: str
    mem_bytes: int
    mem_source: str

    def __init__(self, cpu_cores: float, cpu_source: str, mem_bytes: int, mem_source: str) -> None:
        object.__setattr__(self, "cpu_cores", cpu_cores)
        object.__setattr__(self, "cpu_source", cpu_source)
        object.__setattr__(self, "mem_bytes", mem_bytes)
        object.__setattr__(self, "mem_source", mem_source)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in Limits.FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not Limits:
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Limits are immutable")

    def __reduce__(self) -> tuple[type[Limits], tuple[object, ...]]:
        # (copy and pickle would otherwise set each slot, which an immutable refuses)
        return (Limits, tuple(self.as_dict().values()))


class _Mount:
    __slots__ = ("fstype", "options", "point", "root")

    def __init__(self, fstype: str, root: str, point: str, options: frozenset[str]) -> None:
        self.fstype = fstype  # "cgroup" (v1) or "cgroup2"
        self.root = root  # the mount's root inside the hierarchy
        self.point = point  # already joined under the caller's `root`, normalized (`_join`)
        self.options = options


def detect_limits(
    *,
    proc_root: str | os.PathLike[str] = "/proc",
    root: str | os.PathLike[str] = "/",
    cpu_cores: float | None = None,
    mem_limit: int | None = None,
    affinity_cores: int | None = None,
) -> Limits:
    """Find usable cores and the memory limit; explicit overrides win. Never raises."""
    proc = _join(os.fspath(proc_root))
    paths = _cgroup_paths(proc)
    mounts = _cgroup_mounts(proc, _join(os.fspath(root)))

    if cpu_cores is not None:
        cores, cpu_source = float(cpu_cores), "HOLMES_CPU_CORES"
    else:
        cores, cpu_source = _detect_cpu(_locate("cpu", paths, mounts), affinity_cores)

    if mem_limit is not None:
        mem, mem_source = mem_limit, "HOLMES_MEM_LIMIT"
    else:
        mem, mem_source = _detect_memory(_locate("memory", paths, mounts), proc)

    return Limits(cpu_cores=cores, cpu_source=cpu_source, mem_bytes=mem, mem_source=mem_source)


def _join(*parts: str) -> str:
    """`parts` joined and normalized as `pathlib` would: no empty or `.` part, `..` kept."""
    absolute = parts[0].startswith("/")
    names = [name for part in parts for name in part.split("/") if name not in ("", ".")]
    path = "/".join(names)
    return "/" + path if absolute else (path or ".")


def _parent(path: str) -> str:
    head = path.rpartition("/")[0]
    return head or ("/" if path.startswith("/") else ".")


def _within_folder(path: str, folder: str) -> bool:
    """`folder` is one of `path`'s parents (both normalized by `_join`)."""
    if folder == "/":
        return path.startswith("/") and path != "/"
    return path.startswith(folder + "/")


def _detect_cpu(located: tuple[str, list[str]] | None, affinity: int | None) -> tuple[float, str]:
    if affinity is not None:
        cores, source = float(affinity), f"CPU affinity ({affinity} cores)"
    else:
        cores, source = _affinity()
    if located is None:
        return cores, source
    version, dirs = located
    label, read = _CPU[version]
    quotas, garbled = _read_all(dirs, read)
    tightest = min(quotas, key=lambda qp: qp[0] / qp[1], default=None)
    if tightest is not None and tightest[0] / tightest[1] <= cores:
        quota, period = tightest
        cores, source = quota / period, f"{label} ({quota}/{period})"
    return cores, source + (f"; ignored unparsable {label}" if garbled else "")


def _detect_memory(located: tuple[str, list[str]] | None, proc: str) -> tuple[int, str]:
    mem, source = _host_memory(proc)
    if located is None:
        return mem, source
    version, dirs = located
    label, read = _MEM[version]
    limits, garbled = _read_all(dirs, read)
    # A cgroup limit at or above host RAM can never bind, so it means "unlimited".
    if limits and min(limits) < mem:
        mem, source = min(limits), label
    return mem, source + (f"; ignored unparsable {label}" if garbled else "")


def _affinity() -> tuple[float, str]:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
        return float(n), f"os.cpu_count() ({n} cores)"
    return float(n), f"CPU affinity ({n} cores)"


def _host_memory(proc: str) -> tuple[int, str]:
    total = _mem_total(_read(proc + "/meminfo") or "")
    if total is not None and total > 0:
        return total * 1024, "host MemTotal"
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        physical = -1
    if physical > 0:
        return physical, "host sysconf physical memory (no MemTotal)"
    # Nothing to measure against: a huge limit keeps memory rules quiet rather than wrong.
    return sys.maxsize, "unknown (no MemTotal, no sysconf)"


def _mem_total(meminfo: str) -> int | None:
    """kB of the first well-formed `MemTotal:  16318412 kB` line, or None."""
    for line in meminfo.splitlines():
        if not line.startswith("MemTotal:"):
            continue
        rest = line[len("MemTotal:") :]
        number = rest.lstrip()
        digits = len(number) - len(number.lstrip("0123456789"))
        if len(number) < len(rest) and digits and number[digits:].startswith(" kB"):
            return int(number[:digits])
    return None


def _read(path: str) -> str | None:
    # os.open and os.read rather than open(): no buffered text object to build
    # for each of the seven small files `start()` reads here.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8")
    except (OSError, ValueError):  # ValueError: undecodable bytes or NUL in a garbled path
        return None


def _cgroup_paths(proc: str) -> dict[str, str]:
    """Controller name -> cgroup path; the v2 unified hierarchy is under the key ""."""
    paths: dict[str, str] = {}
    for line in (_read(proc + "/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].startswith("/"):
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _cgroup_mounts(proc: str, root: str) -> list[_Mount]:
    mounts = []
    for line in (_read(proc + "/self/mountinfo") or "").splitlines():
        if " - cgroup" not in line:  # most mounts: the file system type follows " - "
            continue
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if sep and len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            point = _join(root, _unescape(fields[4]))
            options = frozenset(tail[2].split(","))
            mounts.append(_Mount(tail[0], _unescape(fields[3]), point, options))
    return mounts


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes such as \040.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _locate(
    controller: str, paths: dict[str, str], mounts: list[_Mount]
) -> tuple[str, list[str]] | None:
    """The cgroup version holding `controller`, and the directories from ours up to the mount."""
    # On hybrid hosts the controllers live on v1 and the v2 tree only tracks processes,
    # so v1 wins whenever it has the controller mounted.
    v1 = [m for m in mounts if m.fstype == "cgroup" and controller in m.options]
    if controller in paths and v1:
        return "v1", _dirs(paths[controller], v1)
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    if "" in paths and v2:
        return "v2", _dirs(paths[""], v2)
    return None


def _dirs(path: str, mounts: list[_Mount]) -> list[str]:
    mount = next((m for m in mounts if _within(path, m.root)), mounts[0])
    # A container's own cgroup is usually mounted as its root: strip the part above it.
    relative = path[len(mount.root) :] if _within(path, mount.root) else path
    leaf = _join(mount.point, relative)
    # Outside our cgroup namespace the path reads like "/../..": never climb above the mount.
    if ".." in leaf.split("/") or not os.path.isdir(leaf):
        leaf = mount.point
    dirs = [leaf]
    while dirs[-1] != mount.point and _within_folder(dirs[-1], mount.point):
        dirs.append(_parent(dirs[-1]))
    return dirs


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _read_all(dirs: list[str], read: Callable[[str], _T | None]) -> tuple[list[_T], bool]:
    """Every limit set along the walk (a parent's limit binds too), and whether any was garbled."""
    found: list[_T] = []
    garbled = False
    for directory in dirs:
        try:
            value = read(directory)
        except ValueError:
            garbled = True
            continue
        if value is not None:
            found.append(value)
    return found, garbled


# Readers return None for "no limit here" and raise ValueError for a garbled file.


def _cpu_v2(directory: str) -> tuple[int, int] | None:
    text = _read(directory + "/cpu.max")
    if text is None or text.split()[:1] == ["max"]:
        return None
    quota, period = map(int, text.split())
    return _positive(quota), _positive(period)


def _cpu_v1(directory: str) -> tuple[int, int] | None:
    text = _read(directory + "/cpu.cfs_quota_us")
    if text is None or int(text) == -1:
        return None
    return _positive(int(text)), _positive(int(_read(directory + "/cpu.cfs_period_us") or ""))


def _memory_v2(directory: str) -> int | None:
    text = _read(directory + "/memory.max")
    if text is None or text.strip() == "max":
        return None
    return _positive(int(text))


def _memory_v1(directory: str) -> int | None:
    text = _read(directory + "/memory.limit_in_bytes")
    if text is None or int(text) >= _V1_UNLIMITED:
        return None
    return _positive(int(text))


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError(value)
    return value


_CPU = {
    "v1": ("cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us", _cpu_v1),
    "v2": ("cgroup v2 cpu.max", _cpu_v2),
}
_MEM = {
    "v1": ("cgroup v1 memory.limit_in_bytes", _memory_v1),
    "v2": ("cgroup v2 memory.max", _memory_v2),
}
