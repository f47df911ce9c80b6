"""`ls`, `fetch`, `show` and `diff` against a store that accepts and never answers.

botocore alone waits a minute per attempt and retries: the CLI was silent for
six minutes. Here it says what it waits for, then gives up at its deadline
in one line. The store in the end-to-end tests is a real TCP server on
127.0.0.1 that accepts every connection and never sends a byte.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import clean_env, script

from holmespy.cli.deadline import Deadline, TimedOut

NEVER = 600.0
"""What "forever" means to a test: far longer than any deadline used here."""


# -- the deadline itself --


def test_an_answer_before_the_deadline_is_returned_and_an_error_raised() -> None:
    deadline = Deadline(NEVER, "http://store")
    assert deadline.run("a listing", lambda: 42) == 42
    with pytest.raises(KeyError, match="missing"):
        deadline.run("a listing", lambda: {}["missing"])


def test_no_answer_by_the_deadline_fails_saying_what_was_awaited() -> None:
    said: list[str] = []
    never = threading.Event()
    deadline = Deadline(0.5, "http://127.0.0.1:9000", say=said.append, say_after=0.1)

    try:
        with pytest.raises(TimedOut) as info:
            deadline.run("a listing of s3://dumps/prod/", lambda: never.wait(NEVER))
    finally:
        never.set()  # the abandoned request ends with the test

    assert str(info.value) == (
        "http://127.0.0.1:9000 did not answer within 0.5s (waiting for a listing of"
        " s3://dumps/prod/); give it longer with --timeout SECONDS"
    )
    [line] = said
    assert line.startswith("waiting for http://127.0.0.1:9000 to answer (a listing of")


def test_the_deadline_is_one_for_the_whole_command() -> None:
    never = threading.Event()
    deadline = Deadline(0.5, "http://store", say=lambda _: None)
    try:
        with pytest.raises(TimedOut):
            deadline.run("first", lambda: never.wait(NEVER))
        # Nothing is left for a second request: it fails without waiting another 0.5 s.
        assert deadline.remaining() == 0
        with pytest.raises(TimedOut, match="waiting for second"):
            deadline.run("second", lambda: never.wait(NEVER))
    finally:
        never.set()


def test_a_download_may_take_long_but_not_stall() -> None:
    stall = threading.Event()
    given: list[int] = []

    def blocks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        stall.wait(NEVER)
        yield b"never"

    deadline = Deadline(0.5, "http://store", say=lambda _: None)
    chunks = blocks()

    def download() -> None:
        while block := deadline.run_step("k", lambda: next(chunks, b"")):
            given.append(len(block))

    try:
        with pytest.raises(TimedOut, match=r"within 0.5s for the next block \(waiting for k\)"):
            download()
    finally:
        stall.set()
    assert given == [1, 1]


# -- the real CLI against a silent store --


@contextlib.contextmanager
def silent_store() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(NEVER)
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["ls", "-l", "--service", "checkout"],
        ["fetch", "--latest"],
        ["show", "20261124T040800.123Z-cpu-0a1b2c3d"],
        ["diff", "20261124T040800.123Z-gcheap-0a1b2c3d"],
    ],
    ids=["ls", "ls-long", "fetch", "show", "diff"],
)
def test_a_store_that_never_answers_is_given_up_on_in_one_line(
    argv: list[str], tmp_path: Path
) -> None:
    with silent_store() as port:
        env = clean_env(
            AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="AKIAFAKEACCESSKEY",
            AWS_SECRET_ACCESS_KEY="fake-secret-key",
            AWS_REGION="us-east-1",
            HOME=str(tmp_path),
        )
        output = ["-o", str(tmp_path / "out")] if argv[0] == "fetch" else []
        result = script(
            *argv, "--from", "s3://dumps/prod", "--timeout", "4", *output, env=env, timeout=120
        )

    lines = result.err.strip().split("\n")
    assert result.code == 1, result.err
    assert lines[0].startswith(f"holmespy: waiting for http://127.0.0.1:{port} to answer (")
    assert lines[-1].startswith(f"holmespy: http://127.0.0.1:{port} did not answer within 4s")
    assert lines[-1].endswith("give it longer with --timeout SECONDS")
    assert len(lines) == 2
