"""The uploader against a real S3-compatible server: nothing lost, whatever the store does.

Bundles are published exactly as the watcher publishes them; the uploader is
configured only by `Config` (HOLMES_*) and the standard AWS_* settings. The
crash and exit cases run the uploader in a real subprocess.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from holmespy.config import Config
from holmespy.storage.spool import Spool
from holmespy.storage.uploader import Backoff, Uploader
from tests.s3_server import SeaweedFS, plant_event, publish_bundle

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "svc"
QUICK = Backoff(base=0.05, cap=0.5, permanent=0.2)


@pytest.fixture
def make_uploader(
    tmp_path: Path, bucket: str, uploaders: list[Uploader]
) -> Callable[..., Uploader]:
    """An uploader of `svc` over `tmp_path/dumps` to `s3://<bucket>/prod`, started."""

    def make(**changes: Any) -> Uploader:
        config = Config(
            dump_path=tmp_path / "dumps", service=SERVICE, storage=f"s3://{bucket}/prod"
        )
        uploader = Uploader(config.replace(**changes), backoff=QUICK).start()
        uploaders.append(uploader)
        return uploader

    return make


def spooled(dump_path: Path) -> list[str]:
    return [e.id for e in Spool(dump_path, 1 << 40).events()]


def assert_delivered(server: SeaweedFS, bucket: str, folder: Path, event: dict[str, Any]) -> None:
    """The bucket holds exactly the bundle's files, with event.json and every sha256 it lists."""
    base = f"prod/{SERVICE}/{folder.parent.name}/{folder.name}"
    names = sorted([f["name"] for f in event["files"]] + ["event.json"])
    assert server.keys(bucket, base + "/") == [f"{base}/{name}" for name in names]
    client = server.client()
    stored = client.get_object(Bucket=bucket, Key=f"{base}/event.json")["Body"].read()
    assert json.loads(stored) == event
    for listed in event["files"]:
        body = client.get_object(Bucket=bucket, Key=f"{base}/{listed['name']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == listed["sha256"]


def read_event(folder: Path) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((folder / "event.json").read_text())
    return event


def test_a_bundle_round_trips_byte_identical_with_its_metadata(
    make_uploader: Callable[..., Uploader], aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    uploader = make_uploader()
    folder = publish_bundle(
        tmp_path / "dumps",
        SERVICE,
        {"threads.txt": b"Thread 1\n" * 100, "heap.pb.gz": os.urandom(20 << 20)},  # multipart
        rule="mem",
    )
    event = read_event(folder)
    uploader.notify(folder)
    assert uploader.flush(60)
    assert_delivered(aws_env, bucket, folder, event)
    assert not folder.exists()  # it left the spool
    key = f"prod/{SERVICE}/{folder.parent.name}/{folder.name}/heap.pb.gz"
    head = aws_env.client().head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["service"] == SERVICE
    assert head["Metadata"]["rule"] == "mem"
    assert head["Metadata"]["pid"] == str(os.getpid())
    assert head["Metadata"]["event-id"] == folder.name
    assert head["Metadata"]["host"] == socket.gethostname()
    status = uploader.status()
    assert status["uploaded"] == 1
    assert status["storage"] == f"s3://{bucket}/prod"
    assert (
        status["last_upload"] == f"s3://{bucket}/prod/{SERVICE}/{folder.parent.name}/{folder.name}/"
    )


def test_a_dump_made_while_the_store_is_down_arrives_when_it_is_back(
    make_uploader: Callable[..., Uploader], aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    uploader = make_uploader()
    aws_env.stop()
    try:
        folder = publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"during the outage"})
        kept = json.loads((folder / "event.json").read_text())
        uploader.notify(folder)
        deadline = time.monotonic() + 20
        while uploader.status()["failed_attempts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = uploader.status()
        assert status["failed_attempts"] >= 1
        assert status["permanent_errors"] == 0
        assert "cannot reach the store" in str(status["last_error"])
        assert spooled(tmp_path / "dumps") == [folder.name]
    finally:
        aws_env.start()
    assert uploader.flush(30)
    assert spooled(tmp_path / "dumps") == []
    base = f"prod/{SERVICE}/{folder.parent.name}/{folder.name}"
    stored = aws_env.client().get_object(Bucket=bucket, Key=f"{base}/event.json")["Body"].read()
    assert json.loads(stored) == kept
    assert aws_env.keys(bucket) == [f"{base}/event.json", f"{base}/threads.txt"]


def test_events_left_by_an_earlier_run_are_shipped_when_the_next_one_starts(
    make_uploader: Callable[..., Uploader], aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    left = [
        publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": bytes([n])}) for n in range(3)
    ]
    events = [read_event(folder) for folder in left]
    uploader = make_uploader()
    assert uploader.flush(30)  # nobody called notify: the start-up pass found them
    assert uploader.status()["uploaded"] == 3
    for folder, event in zip(left, events, strict=True):
        assert_delivered(aws_env, bucket, folder, event)


def test_planted_events_are_set_aside_and_the_later_ones_still_reach_the_bucket(
    make_uploader: Callable[..., Uploader], aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    dumps = tmp_path / "dumps"
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root-only secret\n")
    linked = [
        {
            "name": "cpu.pb.gz",
            "size": 17,
            "sha256": hashlib.sha256(b"root-only secret\n").hexdigest(),
        }
    ]
    symlinked = plant_event(dumps, SERVICE, {}, listed=linked)
    (symlinked / "cpu.pb.gz").symlink_to(secret)
    forged = [{"name": "cpu.pb.gz", "size": 6, "sha256": "0" * 64}]
    wrong_sha = plant_event(dumps, SERVICE, {"cpu.pb.gz": b"forged"}, listed=forged)
    real = [publish_bundle(dumps, SERVICE, {"threads.txt": bytes([n]) * 9}) for n in range(2)]
    events = [read_event(folder) for folder in real]

    uploader = make_uploader()

    assert uploader.flush(30)
    for folder, event in zip(real, events, strict=True):
        assert_delivered(aws_env, bucket, folder, event)
    assert len(aws_env.keys(bucket)) == 4  # the real events' files, nothing else
    status = uploader.status()
    assert (status["uploaded"], status["quarantined"], status["failed_attempts"]) == (2, 2, 0)
    aside = sorted(p.name for p in (dumps / SERVICE / "quarantine").iterdir())
    assert aside == sorted([symlinked.name, wrong_sha.name])


@pytest.mark.timeout(120)  # a hang guard, not a measure
@pytest.mark.parametrize(
    ("variable", "advice"),
    [
        ("AWS_SECRET_ACCESS_KEY", "check AWS_SECRET_ACCESS_KEY"),
        ("AWS_ACCESS_KEY_ID", "check AWS_ACCESS_KEY_ID"),
    ],
)
def test_wrong_credentials_keep_the_spool_and_say_what_to_check_without_showing_them(
    make_uploader: Callable[..., Uploader],
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    advice: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="holmespy")
    real = {name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    monkeypatch.setenv(variable, f"wrong-{variable.lower()}-value")
    folder = publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"x"})
    uploader = make_uploader()
    # A wrong setting does not make flush wait it out: an hour is never reached
    # (pytest-timeout ends the test long before), so False is the early give-up.
    assert not uploader.flush(3600)
    assert spooled(tmp_path / "dumps") == [folder.name]
    status = uploader.status()
    assert status["permanent_errors"] >= 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"cannot upload to s3://{bucket}/prod" in line
    assert advice in line
    assert "1 event(s) wait in" in line
    said = caplog.text + json.dumps(status) + repr(uploader) + repr(uploader.store)
    for secret in (*real.values(), os.environ[variable]):
        assert secret not in said


def test_a_missing_bucket_keeps_the_spool_until_someone_creates_it(
    make_uploader: Callable[..., Uploader],
    aws_env: SeaweedFS,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = f"later-{os.urandom(4).hex()}"
    uploader = make_uploader(storage=f"s3://{missing}/prod")
    folder = publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"x"})
    event = read_event(folder)
    uploader.notify(folder)
    assert not uploader.flush(30)
    assert f"cannot upload to s3://{missing}/prod" in caplog.text
    assert (
        "the bucket does not exist: create it, or fix the bucket in HOLMES_STORAGE" in caplog.text
    )
    assert spooled(tmp_path / "dumps") == [folder.name]
    aws_env.bucket(missing)  # the operator reads the log line and fixes it
    assert uploader.flush(30)
    assert_delivered(aws_env, missing, folder, event)


def test_the_spool_cap_drops_the_oldest_undelivered_events(
    make_uploader: Callable[..., Uploader], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uploader = make_uploader(storage="s3://no-such-bucket-for-cap/prod", spool_max=250_000)
    folders = []
    for _ in range(4):
        folders.append(
            publish_bundle(tmp_path / "dumps", SERVICE, {"heap.pb.gz": os.urandom(100_000)})
        )
        uploader.notify(folders[-1])
    assert not uploader.flush(10)
    assert spooled(tmp_path / "dumps") == [f.name for f in folders[2:]]
    assert uploader.status()["dropped"] == 2
    assert "before they were uploaded" in caplog.text
    assert folders[0].name in caplog.text


CHILD = textwrap.dedent(
    """
    import atexit, sys, time
    from pathlib import Path
    from holmespy.config import Config
    from holmespy.storage.s3 import S3Store, Transfer
    from holmespy.storage.s3client import S3Location
    from holmespy.storage.uploader import Uploader

    dump, storage, mode, reports = sys.argv[1:5]
    config = Config(dump_path=Path(dump), service="svc", storage=storage)
    parts = Transfer(multipart_threshold=5 << 20, part_size=5 << 20, concurrency=1)
    store = S3Store(S3Location.parse(storage), transfer=parts)
    if mode == "slow":  # a slow link, so that the parent can kill us between two parts
        store.client.meta.events.register(
            "before-send.s3.UploadPart", lambda **_: time.sleep(0.25)
        )
    uploader = Uploader(config, store=store)
    uploader.reporter.subscribe(
        lambda stored: open(reports, "a").write(stored.event["id"] + "\\n")
    )
    uploader.start()
    if mode == "exit":
        # A capture finishes just as the program ends: the upload itself runs
        # in the bounded flush at interpreter exit, as holmespy.start() wires it.
        import os
        from holmespy.bundle import BundleWriter, new_event_id, write_private

        assert uploader.flush(10)  # started and idle
        event_id = new_event_id("cpu")
        with BundleWriter(Path(dump), "svc", event_id) as bundle:
            write_private(bundle.temp / "cpu.pb.gz", os.urandom(12 << 20))
            uploader.notify(bundle.publish({"id": event_id, "rule": "cpu"}))
        def stop() -> None:
            stored = uploader.stop(float(sys.argv[5]))
            print("stored" if stored else "left in the spool", uploader.failed_attempts, flush=True)

        atexit.register(stop)
        sys.exit(0)
    print("delivered" if uploader.flush(60) else "not delivered", flush=True)
    time.sleep(60 if mode == "slow" else 0)
    """
)


def run_child(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HOLMES_"))}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env={**clean, **env, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_process_killed_mid_upload_is_finished_by_the_next_delivered_once(
    aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    dumps, reports = tmp_path / "dumps", tmp_path / "reports.txt"
    folder = publish_bundle(
        dumps, SERVICE, {"heap.pb.gz": os.urandom(30 << 20), "threads.txt": b"stacks"}, rule="mem"
    )
    storage = f"s3://{bucket}/prod"
    client = aws_env.client()
    first = run_child(tmp_path, aws_env.env(), str(dumps), storage, "slow", str(reports))
    try:
        deadline = time.monotonic() + 30
        parts: list[Any] = []
        while len(parts) < 2 and time.monotonic() < deadline:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads:
                upload = uploads[0]
                reply = client.list_parts(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                parts = reply.get("Parts", [])
            time.sleep(0.02)
        assert len(parts) >= 2, "the first process never got into its multipart upload"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        first.communicate()
    # Killed halfway: no object of the event is visible yet, and it is still spooled.
    assert aws_env.keys(bucket) == []
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    assert spooled(dumps) == [folder.name]
    event = json.loads((folder / "event.json").read_text())

    second = run_child(tmp_path, aws_env.env(), str(dumps), storage, "normal", str(reports))
    out, err = second.communicate(timeout=60)
    assert out.strip() == "delivered", err
    assert spooled(dumps) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    base = f"prod/{SERVICE}/{folder.parent.name}/{folder.name}"
    assert aws_env.keys(bucket) == [
        f"{base}/event.json",
        f"{base}/heap.pb.gz",
        f"{base}/threads.txt",
    ]
    for listed in event["files"]:
        body = client.get_object(Bucket=bucket, Key=f"{base}/{listed['name']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == listed["sha256"]
    assert reports.read_text().split() == [folder.name]  # told once, by the process that shipped it


def test_an_upload_begun_at_exit_is_flushed_in_parts(
    aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    dumps, reports = tmp_path / "dumps", tmp_path / "reports.txt"
    storage = f"s3://{bucket}/prod"
    child = run_child(tmp_path, aws_env.env(), str(dumps), storage, "exit", str(reports), "30")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.startswith("stored "), (out, err)  # by the exit flush
    assert spooled(dumps) == []
    [event_id] = reports.read_text().split()
    keys = aws_env.keys(bucket)
    assert [k.rsplit("/", 1)[1] for k in keys] == ["cpu.pb.gz", "event.json"]
    head = aws_env.client().head_object(Bucket=bucket, Key=keys[0])
    assert head["ETag"].endswith('-3"')  # sent in parts, by threads started inside atexit
    assert event_id in keys[0]


def test_exit_with_the_store_unreachable_is_bounded_and_keeps_the_spool(
    aws_env: SeaweedFS, tmp_path: Path
) -> None:
    dumps, reports = tmp_path / "dumps", tmp_path / "reports.txt"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {**aws_env.env(), "AWS_ENDPOINT_URL_S3": closed}
    child = run_child(tmp_path, env, str(dumps), "s3://any-bucket/prod", "exit", str(reports), "2")
    out, err = child.communicate(timeout=60)  # a hang guard: the store never answers
    assert child.returncode == 0, err
    # Exiting at all with a store that refuses every connection means that the
    # exit flush gave up (by its bound) after trying: it never waits for the store.
    assert out.startswith("left in the spool "), (out, err)
    assert int(out.split()[-1]) >= 1  # attempts that failed before it gave up
    assert len(spooled(dumps)) == 1
    assert not reports.exists()


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_webhook_is_told_where_each_file_is_with_working_presigned_links(
    make_uploader: Callable[..., Uploader],
    aws_env: SeaweedFS,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="holmespy")
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received.clear()
    try:
        hook = f"http://127.0.0.1:{server.server_port}/hook?token=hook-secret-42"
        uploader = make_uploader(webhook_url=hook, presign=600.0)
        data = os.urandom(4000)
        folder = publish_bundle(tmp_path / "dumps", SERVICE, {"cpu.pb.gz": data}, rule="cpu")
        event = json.loads((folder / "event.json").read_text())
        uploader.notify(folder)
        assert uploader.flush(30)
    finally:
        server.shutdown()
    [(path, payload)] = Hook.received
    assert path == "/hook?token=hook-secret-42"
    assert payload["event"] == event
    base = f"{SERVICE}/{folder.parent.name}/{folder.name}"
    assert payload["location"] == f"s3://{bucket}/prod/{base}/"
    assert [f["name"] for f in payload["files"]] == ["cpu.pb.gz", "event.json"]
    stored = payload["files"][0]
    assert stored["key"] == f"{base}/cpu.pb.gz"
    assert stored["url"] == f"{aws_env.endpoint}/{bucket}/prod/{base}/cpu.pb.gz"
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    with urllib.request.urlopen(stored["presigned_url"], timeout=10) as reply:
        assert reply.read() == data
    assert aws_env.secret_key not in json.dumps(payload)
    assert "hook-secret-42" not in caplog.text + repr(uploader.reporter)
    assert uploader.status()["reporter_errors"] == 0
