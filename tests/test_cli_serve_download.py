"""`holmespy serve` sends a bundle's file a block at a time, from a folder and from S3.

A download link of the event page serves the file as the store hands it
over, one block (`holmespy.storage.base.CHUNK`) at a time, with the
Content-Length the store announced: its memory is a block, whatever the
file's size. Memory is measured with tracemalloc over the whole process
(the server's threads included), not timed. The other serve tests are in
test_cli_serve.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import write_bundle

from holmespy.cli.reading import DEFAULT_MAX_SIZE
from holmespy.cli.serve import Server
from holmespy.cli.source import LocalSource, S3Source, Source
from holmespy.storage.base import ObjectReader
from holmespy.storage.local import LocalStore
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location

pytestmark = pytest.mark.timeout(180)

BIG = 64 << 20
MEMORY_BOUND = 16 << 20
"""A quarter of the file: reading it whole, as serve once did, takes all of it and more."""


@contextlib.contextmanager
def serving(source: Source, max_size: int = DEFAULT_MAX_SIZE) -> Iterator[int]:
    server = Server(("127.0.0.1", 0), source, 30, max_size)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(port: int, path: str, method: str = "GET") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path)
    return conn.getresponse()


def publish(root: Path, data: bytes) -> Path:
    return write_bundle(root, service="api", rule="cpu", files={"cpu.pb.gz": data})


@pytest.fixture(params=["folder", "s3"])
def big_event(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Source, str, str]:
    """A source holding one event whose cpu.pb.gz is 64 MiB; its id and the file's sha256."""
    data = os.urandom(BIG)
    digest = hashlib.sha256(data).hexdigest()
    bundle = publish(tmp_path / "dumps", data)
    del data
    if request.param == "folder":
        return LocalSource(tmp_path / "dumps"), bundle.name, digest
    bucket: str = request.getfixturevalue("bucket")
    store = S3Store(S3Location(bucket, "prod"))
    key = bundle.relative_to(tmp_path / "dumps").as_posix()
    for name in ("cpu.pb.gz", "event.json"):
        store.put_file(f"{key}/{name}", bundle / name, timeout=120)
    return S3Source(f"s3://{bucket}/prod", 30), bundle.name, digest


def test_a_64_mib_file_is_served_whole_holding_a_few_blocks_of_memory(
    big_event: tuple[Source, str, str],
) -> None:
    source, event_id, digest = big_event
    path = f"/event/{event_id}/file/cpu.pb.gz"
    with serving(source) as port:
        head = request(port, path, "HEAD")  # also makes the S3 client before measuring
        head.read()
        tracemalloc.start()
        try:
            reply = request(port, path)
            received = hashlib.sha256()
            while block := reply.read(1 << 20):
                received.update(block)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert (head.status, head.getheader("Content-Length")) == (200, str(BIG))
    assert reply.status == 200
    assert reply.getheader("Content-Length") == str(BIG)
    assert received.hexdigest() == digest
    assert peak < MEMORY_BOUND, f"{peak:,} bytes traced while serving {BIG:,}"


def test_a_file_larger_than_max_size_is_refused_before_any_byte_is_sent(tmp_path: Path) -> None:
    bundle = publish(tmp_path / "dumps", b"x" * (2 << 20))

    with serving(LocalSource(tmp_path / "dumps"), max_size=1 << 20) as port:
        reply = request(port, f"/event/{bundle.name}/file/cpu.pb.gz")
        page = reply.read().decode()

    assert reply.status == 500
    assert reply.getheader("Content-Type") == "text/html; charset=utf-8"
    assert f"{bundle.name}/cpu.pb.gz: larger than 1 MiB, the most holmespy reads" in page


def test_a_file_that_ends_short_of_its_size_is_cut_off_not_passed_as_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file truncated between its stat and its last block: the store announced more
    # than it then gave (injected, as the race cannot be timed).
    bundle = publish(tmp_path / "dumps", b"y" * 5000)
    opened = LocalStore.open

    def announcing_more(store: LocalStore, key: str) -> ObjectReader:
        reader = opened(store, key)
        return ObjectReader(reader.size + 1000, reader.read, reader.close)

    monkeypatch.setattr(LocalStore, "open", announcing_more)
    with serving(LocalSource(tmp_path / "dumps")) as port:
        reply = request(port, f"/event/{bundle.name}/file/cpu.pb.gz")
        with pytest.raises(http.client.IncompleteRead) as cut:
            reply.read()

    assert reply.getheader("Content-Length") == "6000"
    assert cut.value.partial == b"y" * 5000
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"holmespy: GET /event/{bundle.name}/file/cpu.pb.gz:"
        " the file ended 1,000 bytes short of its announced size"
    )
