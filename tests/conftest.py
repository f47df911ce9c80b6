"""Shared fixtures: run real programs with HOLMES_* set, and find their bundles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from holmespy import Config

pytest_plugins = ["tests.s3_server"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass
class Bundle:
    path: Path

    @property
    def event(self) -> dict[str, Any]:
        return json.loads((self.path / "event.json").read_text())

    def text(self, name: str) -> str:
        return (self.path / name).read_text()


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    dump_path: Path

    def bundles(self, rule: str | None = None) -> list[Bundle]:
        # Published bundles only: not the `.tmp-*` folder a bundle is built in.
        published = self.dump_path.glob("*/*/*/event.json")
        found = sorted(p.parent for p in published if not p.parent.name.startswith("."))
        bundles = [Bundle(p) for p in found]
        return [b for b in bundles if rule is None or b.event["rule"] == rule]


RunProgram = Callable[..., Run]


@pytest.fixture
def run_program(tmp_path: Path) -> RunProgram:
    """Run a Python program (a path or source text) in a subprocess with HOLMES_* env vars."""

    def run(program: Path | str, timeout: float = 60, **env: str) -> Run:
        dump_path = tmp_path / "dumps"
        if isinstance(program, str):
            script = tmp_path / "program.py"
            script.write_text(program)
            program = script
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
        full_env = {**clean, "HOLMES_DUMP_PATH": str(dump_path), "PYTHONPATH": str(ROOT / "src")}
        full_env.update(env)
        with subprocess.Popen(
            [sys.executable, str(program)],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            start_new_session=True,  # its own process group: see below
        ) as child:
            try:
                out, err = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                # The program and every process it forked (a hung prefork worker
                # would otherwise outlive the test, and the whole session).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                out, err = child.communicate()
                pytest.fail(f"program timed out after {timeout} s:\n{out}\n{err}")
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        assert proc.returncode == 0, f"program failed:\n{proc.stdout}\n{proc.stderr}"
        return Run(proc, dump_path)

    return run


@pytest.fixture
def uploaders() -> Iterator[list[Any]]:
    """Uploaders a test starts (append them here); all stopped at its end."""
    started: list[Any] = []
    yield started
    for uploader in started:
        uploader.stop(1)


@pytest.fixture
def holmes_stopped() -> Iterator[None]:
    """Make sure no instance leaks from one test into the next."""
    import holmespy

    holmespy.stop()
    yield
    holmespy.stop()


@dataclass(frozen=True)
class TopRow:
    flat: float
    flat_percent: float
    cum: float
    function: str


def go_pprof_top(path: Path, *, sample_index: str | None = None) -> list[TopRow]:
    """`go tool pprof -top` on a profile, parsed: the real consumer's reading of our file."""
    go = shutil.which("go")
    if go is None:
        pytest.skip(
            "go is not installed: `apt-get install golang-go` (scripts/install-system-deps)"
        )
    args = [go, "tool", "pprof", "-top", "-nodecount=20"]
    if sample_index:
        args.append(f"-sample_index={sample_index}")
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "HOME": str(path.parent),
        "PPROF_TMPDIR": str(path.parent),
    }
    out = subprocess.run(
        [*args, str(path)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert out.returncode == 0, f"go tool pprof rejected {path}:\n{out.stderr}"
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1].endswith("%") and parts[2].endswith("%"):
            rows.append(
                TopRow(
                    flat=_pprof_number(parts[0]),
                    flat_percent=float(parts[1].rstrip("%")),
                    cum=_pprof_number(parts[3]),
                    function=" ".join(parts[5:]),
                )
            )
    assert rows, f"go tool pprof printed no rows:\n{out.stdout}"
    return rows


def _pprof_number(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `predicate` holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def rules_off_config(tmp_path: Path) -> Config:
    """A watcher configuration with every rule off and hour-long ticks: events come only
    from what a test submits itself."""
    from holmespy import Config  # not at conftest's import: tests see holmespy's import untouched

    off: dict[str, Any] = {"cpu": None, "mem": None, "thread": None, "task": None, "gcheap": None}
    return Config(dump_path=tmp_path, service="unit", interval=3600, **off)
