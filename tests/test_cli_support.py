"""What the CLI tests share: real bundles to read, profiles with known numbers, and
ways to run `holmespy` (in-process through `main(argv)`, or the installed script).

It holds no tests. Bundles are written by the library's own `BundleWriter`,
with reasons and histories from the real rule engine, so the CLI is tested
on what the watcher writes rather than on hand-made look-alikes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from holmespy.bundle import BundleWriter, host_facts, new_event_id, write_private
from holmespy.cli import main
from holmespy.config import DEFAULT_RULES
from holmespy.formats.pprof import encode
from holmespy.formats.profile import Frame, Profile, ValueType
from holmespy.rules import RuleState

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"cpu": "%", "mem": "%", "gcheap": "%", "thread": "threads", "task": "tasks"}


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """`holmespy ARGV...` in this process, as `main(argv)` sees it."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exit on bad usage and --help
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def script(*argv: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Result:
    """The installed `holmespy` console script, in a subprocess."""
    exe = shutil.which("holmespy", path=str(Path(sys.executable).parent))
    assert exe, "the holmespy console script is not installed (pip install -e .)"
    proc = subprocess.run(
        [exe, *argv],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without HOLMES_* and AWS_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLMES_", "AWS_"))}
    env.update(extra)
    return env


def spike(rule: str, baseline: float, value: float | None, start: dt.datetime) -> dict[str, Any]:
    """The rule part of an event.json, from the real rule engine: ten samples at
    `baseline`, then `value` (by default the least that fires), one second apart."""
    state = RuleState(rule, DEFAULT_RULES[rule])  # type: ignore[index]
    if value is None:
        value = max(state.rule.min, 2 * baseline)
    decision = None
    for n in range(11):
        sample = baseline if n < 10 else value
        wall = start.timestamp() + n
        decision = state.observe(sample, now=wall, wall=wall)
    assert decision is not None
    assert decision.fire, decision
    r = state.rule
    return {
        "rule": rule,
        "reason": decision.reason,
        "value": decision.value,
        "unit": UNITS[rule],
        "thresholds": {
            "min": r.min,
            "diff": r.diff,
            "abs": r.abs,
            "max": r.max,
            "cooldown": r.cooldown,
            "limit": str(r.limit),
            "average": decision.average,
            "cpu_max": None,
        },
        "history": [{"time": iso(t), "value": v} for t, v in state.history],
    }


def iso(epoch: float) -> str:
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def write_bundle(
    dump_path: Path,
    *,
    service: str = "checkout",
    rule: str = "thread",
    when: dt.datetime | None = None,
    files: Mapping[str, bytes] | None = None,
    baseline: float = 4,
    value: float | None = None,
    **fields: Any,
) -> Path:
    """Publish one event bundle as the watcher would; returns its folder."""
    when = when or dt.datetime.now(dt.UTC)
    event_id = new_event_id(rule, when)
    start = when - dt.timedelta(seconds=10)
    event = {
        "id": event_id,
        "service": service,
        **host_facts(),
        **spike(rule, baseline, value, start),
        "time": iso(when.timestamp()),
        **fields,
    }
    with BundleWriter(dump_path, service, event_id) as bundle:
        for name, data in (files or {}).items():
            write_private(bundle.temp / name, data)
        return bundle.publish(event)


def frame(function: str, line: int = 10, filename: str = "/srv/app/handlers.py") -> Frame:
    return Frame(function, filename, line)


def cpu_profile(stacks: Mapping[tuple[str, ...], int]) -> Profile:
    """A CPU profile: each stack (outermost first) with its CPU nanoseconds."""
    profile = Profile(
        (ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        default_sample_type="cpu",
    )
    for names, ns in stacks.items():
        stack = tuple(frame(n, 10 + i) for i, n in enumerate(names))[::-1]
        profile.add(stack, (ns // 10_000_000, ns), thread="MainThread")
    return profile


def heap_profile(sites: Mapping[tuple[str, ...], int]) -> Profile:
    """A heap profile: each allocation stack (outermost first) with its live bytes."""
    profile = Profile(
        (ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes")),
        default_sample_type="inuse_space",
    )
    for names, size in sites.items():
        stack = tuple(frame(n, 20 + i, "/srv/app/cache.py") for i, n in enumerate(names))[::-1]
        profile.add(stack, (max(1, size // 100), size))
    return profile


def pprof(profile: Profile) -> bytes:
    return encode(profile)


def census_files(
    counts: Mapping[str, int], growth: Mapping[str, int] | None = None
) -> dict[str, bytes]:
    """heap-types.txt and heap-types.json of a census, as the capture writes them."""
    from holmespy.census import Census

    census = Census(pid=os.getpid(), time=0.0, counts=dict(counts), growth=growth, top=50)
    return {"heap-types.txt": census.text().encode(), "heap-types.json": as_json(census)}


def as_json(dump: Any) -> bytes:
    """A dump's JSON twin, as the capture writes it."""
    return json.dumps(dump.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def thread_files() -> dict[str, bytes]:
    """threads.txt and threads.json of this process now, as the capture writes them."""
    from holmespy.profilers.threads import dump_threads

    text, dump = dump_threads()
    assert dump is not None
    return {"threads.txt": text.encode(), "threads.json": as_json(dump)}


def task_files(probe_timeout: float = 0.5) -> dict[str, bytes]:
    """tasks.txt and tasks.json of this process now, as the capture writes them."""
    from holmespy.profilers.tasks import dump_tasks, render

    dump = dump_tasks(probe_timeout=probe_timeout)
    return {"tasks.txt": render(dump).encode(), "tasks.json": as_json(dump)}


def read_json(text: str) -> Any:
    return json.loads(text)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


CHROMIUM = "/usr/bin/chromium"


def chromium_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after its scripts ran, as headless Chromium dumps it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "chromium is not installed: apt-get install chromium (scripts/install-system-deps)"
        )
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
