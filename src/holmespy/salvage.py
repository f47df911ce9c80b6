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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy.bundle import (
    EVENT_FILE,
    PARTIAL_FILE,
    TMP_PREFIX,
    _pid_alive,
    data_files,
    publish_folder,
    temp_folder,
)

log = logging.getLogger("holmespy")

STALE_SECONDS = 3600.0
"""A temp folder untouched this long is dead whoever made it (a capture lasts minutes at most)."""

YOUNG_SECONDS = 60.0
"""A folder without a checkpoint is left alone this long: its capture may be starting."""

MAX_CHECKPOINT_BYTES = 4 << 20

_TEMP_NAME = re.compile(r"\.tmp-(\d+)-(\d{8}T\d{6}\.\d{3}Z-[a-z]+-[0-9a-f]+)")
_PYSPY_TEMP = re.compile(r"holmespy-pyspy-(\d+)-")


@dataclass
class Salvage:
    published: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    deferred: list[Path] = field(default_factory=list)
    """Folders of dead processes whose py-spy is still writing: salvage them a moment later."""
    errors: list[str] = field(default_factory=list)


def salvage(dump_path: Path, *, now: float | None = None) -> Salvage:
    """Publish or remove the temp folders of dead processes under `dump_path`; never raises."""
    result = Salvage()
    now = time.time() if now is None else now
    host = socket.gethostname()
    try:
        services = [p for p in dump_path.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return result
    for service in services:
        try:
            days = [p for p in service.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            continue
        for day in days:
            try:
                temps = [p for p in day.iterdir() if p.name.startswith(TMP_PREFIX)]
            except OSError:
                continue
            for temp in temps:
                try:
                    _one(temp, service.name, host, now, result)
                except Exception as exc:  # one bad folder must not stop the others
                    result.errors.append(f"{temp}: {type(exc).__name__}: {exc}")
    return result


def _one(temp: Path, service: str, host: str, now: float, result: Salvage) -> None:
    match = _TEMP_NAME.fullmatch(temp.name)
    if match is None or not temp.is_dir() or temp.is_symlink():
        return  # not an event folder of ours (a store's temp file, say)
    pid, event_id = int(match.group(1)), match.group(2)
    if pid == os.getpid():
        return
    checkpoint = _read_checkpoint(temp / PARTIAL_FILE)
    age = now - _newest_mtime(temp)
    if not _dead(pid, checkpoint, host, age):
        return
    if age < STALE_SECONDS and _pyspy_running(temp):
        # The host died and its py-spy is writing what it sampled (a replacement
        # worker starts at once): taking the folder now would lose the samples.
        result.deferred.append(temp)
        return
    mine = temp_folder(temp.parent / event_id)
    try:
        os.rename(temp, mine)  # claim it: another starting process gets ENOENT
    except FileNotFoundError:
        return
    if (mine / EVENT_FILE).exists():
        # A published event the spool was deleting (upload confirmed, or over the cap).
        shutil.rmtree(mine, ignore_errors=True)
        result.removed.append(temp)
        return
    _convert_pyspy(mine)
    if checkpoint is None and not data_files(mine):
        shutil.rmtree(mine, ignore_errors=True)
        result.removed.append(temp)
        return
    final = temp.parent / event_id
    if final.exists():
        shutil.rmtree(mine, ignore_errors=True)
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
    publish_folder(mine, final, event)
    result.published.append(final)


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
    from holmespy.profilers.cpu._pyspy import WORKDIR_NAME

    workdir = folder / WORKDIR_NAME
    if not workdir.is_dir():
        return False
    target = str(workdir)
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


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            with contextlib.suppress(OSError):
                newest = max(newest, entry.lstat().st_mtime)
    return newest


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_CHECKPOINT_BYTES:
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
        "id": event_id,
        "service": service,
        "pid": pid,
        "rule": rule,
        "reason": "unknown: the process died before it wrote its checkpoint",
        "time": _iso(when.timestamp()),
    }


def _convert_pyspy(folder: Path) -> None:
    """py-spy's raw samples, left in the folder's `.pyspy`, as `cpu.pb.gz`."""
    from holmespy.profilers.cpu._pyspy import RAW_NAME, WORKDIR_NAME

    raw = folder / WORKDIR_NAME / RAW_NAME
    target = folder / "cpu.pb.gz"
    if target.exists() or not raw.is_file() or raw.is_symlink():
        return
    from holmespy.formats.pprof import write_pprof
    from holmespy.profilers.cpu._common import add_stacks, sampling_profile
    from holmespy.profilers.cpu._names import ModuleNames, ThreadTable
    from holmespy.profilers.cpu._pyspy import MAX_OUTPUT_BYTES, parse_raw

    with raw.open("rb") as fh:
        text = fh.read(MAX_OUTPUT_BYTES).decode("utf-8", "replace")
    if not text.strip():
        return
    rate = 100
    profile = sampling_profile(rate, int(raw.stat().st_mtime * 1e9))
    stacks, _ = parse_raw(text, ModuleNames(), ThreadTable(), frozenset(), profile.period)
    add_stacks(profile, stacks)
    profile.comments.append(
        "salvaged py-spy samples of a process that died during the capture: each sample"
        " counts 1/100 s of CPU (no thread clocks were read); thread names are unknown"
    )
    write_pprof(profile, target)


def remove_dead_pyspy_folders(tmp: Path | None = None) -> int:
    """`<tmp>/holmespy-pyspy-<pid>-*` of dead processes (py-spy output outside an event)."""
    folder = Path(tempfile.gettempdir()) if tmp is None else tmp
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
