"""Running `holmespy serve` as a real process for tests, and reading its pages."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def running_serve(argv: list[str], env: Mapping[str, str]) -> Iterator[str]:
    """`holmespy serve ARGV --port 0` as a real process; yields the URL it printed."""
    exe = shutil.which("holmespy", path=str(Path(sys.executable).parent))
    assert exe, "the holmespy console script is not installed (pip install -e .)"
    proc = subprocess.Popen(
        [exe, "serve", *argv, "--port", "0"],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed once it listens: no polling needed
        if not url.startswith("http://127.0.0.1:"):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"holmespy serve did not start: {err}")
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def fetch(url: str) -> tuple[int, str]:
    """Status and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=120) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
