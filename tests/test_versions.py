"""What each Python version gives holmespy, as docs/versions.md tells it.

Run on every version of the matrix (3.11 on the host, 3.13 - 3.15 in the sid
root): each test states what holds on the Python running it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from holmespy import loops, support
from holmespy.bundle import host_facts
from holmespy.profilers.cpu import capture_cpu

PER_THREAD = sys.version_info >= (3, 14)


def checksum() -> int:
    return sum(range(2_000))


def burn(seconds: float) -> None:
    # Calls a Python function over and over: yappi sees calls and returns only.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        checksum()


@pytest.mark.parametrize("engine", ["pyspy", "sampler", "yappi"])
def test_every_cpu_engine_profiles_this_python(engine: str) -> None:
    # The matrix installs holmespy[profile,yappi] on every version: a missing
    # engine is a failure here, not a skip, so that no version silently lacks one.
    result: dict[str, Any] = {}
    recorder = threading.Thread(
        target=lambda: result.update(capture=capture_cpu(1.0, engine=engine, rate=100))
    )
    recorder.start()
    burn(1.2)
    recorder.join(30)

    capture = result["capture"]
    assert capture.engine == engine, capture.why
    assert capture.profile is not None
    functions = {s.stack[0].function for s in capture.profile.samples}
    assert f"{__name__}.checksum" in functions


def test_event_json_says_what_this_python_lacks() -> None:
    lacks = host_facts()["versions"]["lacks"]
    if PER_THREAD:
        assert "tasks_of_unseen_loops" in lacks
        assert "3.14+" in lacks["tasks_of_unseen_loops"]
    else:
        assert "task_count" in lacks
        assert "3.11-3.13" in lacks["task_count"]
    # This checkout's environment (make setup, the matrix) has every engine.
    assert "yappi" not in lacks


def test_a_missing_yappi_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "_installed", lambda name: name != "yappi")

    lacks = support.lacks()

    assert "pip install holmespy[yappi]" in lacks["yappi"]
    if sys.version_info >= (3, 15):
        assert "python3.15-dev" in lacks["yappi"]


def test_looking_for_an_engine_imports_nothing() -> None:
    # The tick that fires builds event.json: in a worker that dropped
    # privileges it may not be able to import anything new.
    before = set(sys.modules)
    assert support._installed("yappi") is True
    assert support._installed("no_such_module_for_holmespy") is False
    assert set(sys.modules) == before


def test_an_interpreter_without_a_task_registry_says_the_task_rule_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loops, "_REGISTRY", None)
    assert "the task rule is off" in support.lacks()["tasks"]
