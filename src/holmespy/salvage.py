"""At start: turn what dead processes left in the dump folder into events.

A process killed in the middle of a capture (SIGKILL after a worker timeout,
the OOM killer, a SIGTERM with no time left) leaves its event's temp folder,
`.tmp-<pid>-<event-id>`, holding what was captured so far: `threads.txt`,
often `tasks.txt`, the checkpoint `event.partial.json`, and py-spy's raw
samples (py-spy outlives its target and writes them when it exits). The
first capture would otherwise have thrown that evidence away.

Every process, at start, publishes each such folder of a dead process as an
event marked `"partial": true`, with py-spy's samples turned into
`cpu.pb.gz`, and removes the folders with nothing worth keeping (a spool's
half-deleted event, an empty folder). A folder is taken by renaming it to our
own pid first, so two processes starting together never both publish it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy import safefs
from holmespy.bundle import (
    EVENT_FILE,
    PARTIAL_FILE,
    _pid_alive,
    open_dump_root,
    publish_in,
    temp_name,
)
from holmespy.event import SCHEMA
from holmespy.lazyimport import importing
from holmespy.tempdir import temp_root

log = logging.getLogger("holmespy")

STALE_SECONDS = 3600.0
"""A temp folder untouched this long is dead whoever made it (a capture lasts minutes at most)."""

YOUNG_SECONDS = 60.0
"""A folder without a checkpoint is left alone this long: its capture may be starting."""

MAX_CHECKPOINT_BYTES = 4 << 20

_TEMP_NAME = re.compile(r"\.tmp-(\d+)-(\d{8}T\d{6}\.\d{3}Z-[a-z0-9]+-[0-9a-f]+)")
_PYSPY_TEMP = re.compile(r"holmespy-pyspy-(\d+)-")


@dataclass
class Salvage:
    published: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    deferred: list[Path] = field(default_factory=list)
    """Folders of dead processes whose py-spy is still writing: salvage them a moment later."""
    errors: list[str] = field(default_factory=list)


def salvage(dump_path: Path, *, now: float | None = None) -> Salvage:
    """Publish or remove the temp folders of dead processes under `dump_path`; never raises.

    Every folder is reached through `holmespy.safefs` by descriptor: a link
    is never followed, and a root, service or day folder that someone else
    could write is left alone.
    """
    result = Salvage()
    now = time.time() if now is None else now
    host = socket.gethostname()
    try:
        root = open_dump_root(dump_path, create=False)
    except OSError as exc:
        result.errors.append(f"{dump_path}: {exc}")
        return result
    if root is None:
        return result
    with safefs.owned(root):
        for service in safefs.subfolders(root):
            try:
                service_fd = safefs.open_below(root, dump_path, [service], create=False)
            except OSError:
                continue  # not ours: the writer says so if it ever needs that folder
            if service_fd is None:
                continue
            with safefs.owned(service_fd):
                for day in safefs.subfolders(service_fd):
                    where = dump_path / service / day
                    try:
                        day_fd = safefs.open_below(
                            service_fd, dump_path / service, [day], create=False
                        )
                    except OSError:
                        continue
                    if day_fd is None:
                        continue
                    with safefs.owned(day_fd):
                        for name in os.listdir(day_fd):
                            try:
                                _one(day_fd, where, name, service, host, now, result)
                            except Exception as exc:  # one bad folder must not stop the others
                                result.errors.append(f"{where / name}: {type(exc).__name__}: {exc}")
    return result


def _one(
    day_fd: int, where: Path, name: str, service: str, host: str, now: float, result: Salvage
) -> None:
    match = _TEMP_NAME.fullmatch(name)
    if match is None:
        return  # not an event folder of ours (a store's temp file, say)
    st = os.stat(name, dir_fd=day_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return  # a link, a file, or someone else's: never ours to publish
    pid, event_id = int(match.group(1)), match.group(2)
    if pid == os.getpid():
        return
    temp = where / name
    with safefs.owned(os.open(name, safefs.DIR_FLAGS, dir_fd=day_fd)) as temp_fd:
        checkpoint = _read_checkpoint(temp_fd, temp / PARTIAL_FILE)
        age = now - _newest_mtime(temp_fd)
        pyspy_busy = age < STALE_SECONDS and _pyspy_running(temp)
    if not _dead(pid, checkpoint, host, age):
        return
    if pyspy_busy:
        # The host died and its py-spy is writing what it sampled (a replacement
        # worker starts at once): taking the folder now would lose the samples.
        result.deferred.append(temp)
        return
    mine = temp_name(event_id)
    try:
        os.rename(name, mine, src_dir_fd=day_fd, dst_dir_fd=day_fd)  # claim it first
    except FileNotFoundError:
        return  # another starting process took it
    with safefs.owned(os.open(mine, safefs.DIR_FLAGS, dir_fd=day_fd)) as temp_fd:
        published = _has(temp_fd, EVENT_FILE)
        if not published:
            _convert_pyspy(temp_fd, where / mine)
            useful = checkpoint is not None or _data_files(temp_fd)
    if published or not useful or _has(day_fd, event_id):
        # A published event the spool was deleting, an empty folder, or a duplicate.
        safefs.remove_tree(day_fd, mine)
        result.removed.append(temp)
        return
    event = checkpoint if checkpoint is not None else _minimal_event(event_id, service, pid)
    reason = (
        f"salvaged at start by pid {os.getpid()}: process {pid} ended before this event was"
        " published (killed, or out of time at exit); what it had captured is here"
    )
    earlier = event.get("partial_reason")
    event["partial"] = True
    event["partial_reason"] = reason + (f"; before that: {earlier}" if earlier else "")
    event["salvaged"] = {"by_pid": os.getpid(), "at": _iso(now)}
    publish_in(day_fd, mine, event_id, event, where=where / mine)
    result.published.append(where / event_id)


def _has(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _data_files(temp_fd: int) -> list[str]:
    out = []
    for name in os.listdir(temp_fd):
        if name.startswith(".") or name.startswith(PARTIAL_FILE) or name == EVENT_FILE:
            continue
        if stat.S_ISREG(os.stat(name, dir_fd=temp_fd, follow_symlinks=False).st_mode):
            out.append(name)
    return out


def _dead(pid: int, checkpoint: dict[str, Any] | None, host: str, age: float) -> bool:
    if age > STALE_SECONDS:
        return True
    if checkpoint is not None and checkpoint.get("host") not in (None, host):
        return False  # another host's (or container's) pid says nothing here
    if checkpoint is None and age < YOUNG_SECONDS:
        return False
    return not _pid_alive(pid)


def _pyspy_running(folder: Path) -> bool:
    """A process still works in the folder's `.pyspy` (py-spy runs with it as its cwd)."""
    with importing:
        from holmespy.profilers.cpu._pyspy import WORKDIR_NAME

    target = os.path.realpath(folder / WORKDIR_NAME)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/cwd") == target:
                return True
        except OSError:
            continue
    return False


def _newest_mtime(temp_fd: int) -> float:
    newest = os.fstat(temp_fd).st_mtime
    with contextlib.suppress(OSError):
        for name in os.listdir(temp_fd):
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(name, dir_fd=temp_fd, follow_symlinks=False).st_mtime)
    return newest


def _read_checkpoint(temp_fd: int, path: Path) -> dict[str, Any] | None:
    try:
        raw = safefs.read_file(temp_fd, PARTIAL_FILE, path, limit=MAX_CHECKPOINT_BYTES)
    except OSError:  # missing, a link, too big...
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _minimal_event(event_id: str, service: str, pid: int) -> dict[str, Any]:
    """What the folder's name says, for a folder that has data but no checkpoint."""
    stamp, rule = event_id.split("-")[0], event_id.split("-")[1]
    when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
    return {
        "schema": SCHEMA,
        "id": event_id,
        "service": service,
        "pid": pid,
        "rule": rule,
        "reason": "unknown: the process died before it wrote its checkpoint",
        "time": _iso(when.timestamp()),
    }


def _convert_pyspy(temp_fd: int, folder: Path) -> None:
    """py-spy's raw samples, left in the folder's `.pyspy`, as `cpu.pb.gz`."""
    with importing:
        from holmespy.formats.pprof import write_pprof
        from holmespy.naming import ModuleNames, ThreadTable
        from holmespy.profilers.cpu._common import add_stacks, sampling_profile
        from holmespy.profilers.cpu._pyspy import (
            MAX_OUTPUT_BYTES,
            RAW_NAME,
            WORKDIR_NAME,
            parse_raw,
        )

    if _has(temp_fd, "cpu.pb.gz"):
        return
    try:
        work_fd = os.open(WORKDIR_NAME, safefs.DIR_FLAGS, dir_fd=temp_fd)
    except OSError:
        return  # none, or a link
    with safefs.owned(work_fd):
        try:
            fd, st = safefs.open_file(work_fd, RAW_NAME, folder / WORKDIR_NAME / RAW_NAME)
        except OSError:
            return
        with safefs.owned(fd):
            raw = os.read(fd, MAX_OUTPUT_BYTES)
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return
    profile = sampling_profile(100, int(st.st_mtime * 1e9))
    stacks, _ = parse_raw(text, ModuleNames(), ThreadTable(), frozenset(), profile.period)
    add_stacks(profile, stacks)
    profile.comments.append(
        "salvaged py-spy samples of a process that died during the capture: each sample"
        " counts 1/100 s of CPU (no thread clocks were read); thread names are unknown"
    )
    write_pprof(profile, safefs.fd_path(temp_fd, folder) / "cpu.pb.gz")


def remove_dead_pyspy_folders(tmp: Path | None = None) -> int:
    """`<tmp>/holmespy-pyspy-<pid>-*` of dead processes (py-spy output outside an event)."""
    folder = temp_root() if tmp is None else tmp
    removed = 0
    uid = os.getuid()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _PYSPY_TEMP.match(entry.name)
        if match is None:
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if st.st_uid != uid or not entry.is_dir() or entry.is_symlink():
            continue
        if not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _iso(epoch: float) -> str:
    return (
        dt.datetime.fromtimestamp(epoch, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
