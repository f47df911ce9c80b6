"""Shared fixtures: run real programs with HOLMES_* set, and find their bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
        found = sorted(p.parent for p in self.dump_path.glob("*/*/*/event.json"))
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
        proc = subprocess.run(
            [sys.executable, str(program)],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 0, f"program failed:\n{proc.stdout}\n{proc.stderr}"
        return Run(proc, dump_path)

    return run


@pytest.fixture
def holmes_stopped() -> Iterator[None]:
    """Make sure no instance leaks from one test into the next."""
    import holmespy

    holmespy.stop()
    yield
    holmespy.stop()
