"""The suite's own harness: a program that hangs takes nothing with it past its test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import RunProgram

HANGS_WITH_A_FORKED_CHILD = """
import os, time
pid = os.fork()
if pid == 0:
    time.sleep(3600)
    os._exit(0)
print("child", pid, flush=True)
time.sleep(3600)
"""


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_program_that_hangs_is_killed_with_every_process_it_forked(
    run_program: RunProgram,
) -> None:
    with pytest.raises(pytest.fail.Exception, match="timed out after 2 s") as failed:
        run_program(HANGS_WITH_A_FORKED_CHILD, timeout=2)
    child = int(str(failed.value).split("child ", 1)[1].split()[0])
    deadline = time.monotonic() + 30  # a hang guard: SIGKILL is not instant under load
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child), f"the forked child {child} outlived its test"
