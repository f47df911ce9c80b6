"""The CLI against a real S3 server (SeaweedFS, the session's `s3_server`).

Bundles are written by the library's `BundleWriter` and shipped with the
uploader's `S3Store`, so the keys are the ones production writes:
`<prefix>/<service>/<YYYY-MM-DD>/<event-id>/<file>`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from test_cli_support import (
    clean_env,
    cli,
    cpu_profile,
    heap_profile,
    pprof,
    script,
    write_bundle,
)

from holmespy.cli.source import S3Source
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location

PREFIX = "prod/holmes"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class Bucket:
    """A fresh bucket, the AWS_* settings to reach it, and a way to ship bundles to it."""

    def __init__(self, server, local: Path) -> None:
        self.server = server
        self.name = server.bucket(f"cli-{uuid.uuid4().hex[:12]}")
        self.url = f"s3://{self.name}/{PREFIX}"
        self.local = local
        self.store = S3Store(S3Location(self.name, PREFIX))

    def ship(self, folder: Path) -> Path:
        """Upload one published bundle under its relative path, event.json last."""
        rel = folder.relative_to(self.local)
        for path in sorted(folder.iterdir(), key=lambda p: p.name == "event.json"):
            self.store.put_file(f"{rel.as_posix()}/{path.name}", path, timeout=30)
        return folder

    def add(self, **kwargs) -> Path:
        return self.ship(write_bundle(self.local, **kwargs))

    def put(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.name, Key=f"{PREFIX}/{key}", Body=data)


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path) -> Bucket:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HOLMES_STORAGE", raising=False)
    return Bucket(s3_server, tmp_path / "spool")


@pytest.fixture
def events(bucket: Bucket) -> dict[str, Path]:
    """Four events of two services over two days, on two hosts."""
    files = {"threads.txt": b"Thread MainThread\n"}
    return {
        "old": bucket.add(
            service="api", rule="thread", when=NOW - dt.timedelta(days=1, hours=1), files=files
        ),
        "cpu": bucket.add(
            service="api",
            rule="cpu",
            baseline=20,
            value=30,
            when=NOW - dt.timedelta(hours=3),
            files={"cpu.pb.gz": pprof(cpu_profile({("main", "render_report"): 2_000_000_000}))},
        ),
        "mem": bucket.add(
            service="worker", rule="mem", when=NOW - dt.timedelta(hours=2), host="db-1"
        ),
        "task": bucket.add(
            service="api", rule="task", when=NOW - dt.timedelta(minutes=5), files=files
        ),
    }


def ids(text: str) -> list[str]:
    return [line.split()[-1] for line in text.splitlines()[1:]]


def test_ls_lists_events_newest_first(capsys, bucket, events):
    result = cli(capsys, "ls", "--from", bucket.url)

    assert result.code == 0, result.err
    assert ids(result.out) == [events[k].name for k in ("task", "mem", "cpu", "old")]


def test_ls_filters_from_keys_and_event_json(capsys, bucket, events):
    def listed(*argv: str) -> list[str]:
        return ids(cli(capsys, "ls", "--from", bucket.url, *argv).out)

    assert listed("--service", "api") == [events[k].name for k in ("task", "cpu", "old")]
    assert listed("--rule", "cpu", "--rule", "mem") == [events["mem"].name, events["cpu"].name]
    assert listed("--since", "4h") == [events[k].name for k in ("task", "mem", "cpu")]
    assert listed("--since", "4h", "--until", "1h") == [events["mem"].name, events["cpu"].name]
    assert listed("--host", "db-1") == [events["mem"].name]
    assert listed("-n", "2") == [events["task"].name, events["mem"].name]


def test_ls_json_is_the_event_json_objects(capsys, bucket, events):
    data = json.loads(cli(capsys, "ls", "--from", bucket.url, "--json").out)

    assert data == [
        json.loads((events[k] / "event.json").read_text()) for k in ("task", "mem", "cpu", "old")
    ]


def test_ls_follows_continuation_tokens(capsys, bucket, monkeypatch):
    made = [
        bucket.add(service="api", rule="thread", when=NOW - dt.timedelta(seconds=n))
        for n in range(7)
    ]
    monkeypatch.setattr(S3Source, "page_size", 2)  # 7 events: four pages of one day

    result = cli(capsys, "ls", "--from", bucket.url)

    assert ids(result.out) == [folder.name for folder in made]


def test_storage_from_holmes_storage(capsys, bucket, events, monkeypatch):
    monkeypatch.setenv("HOLMES_STORAGE", bucket.url)

    assert len(ids(cli(capsys, "ls").out)) == 4


def test_fetch_copies_the_bundle_byte_for_byte(capsys, bucket, events, tmp_path):
    out = tmp_path / "out"

    result = cli(capsys, "fetch", events["cpu"].name[:26], "--from", bucket.url, "-o", str(out))

    assert result.code == 0, result.err
    copy = out / events["cpu"].name
    assert result.out.strip() == str(copy)
    assert sorted(p.name for p in copy.iterdir()) == ["cpu.pb.gz", "event.json"]
    for path in copy.iterdir():
        assert path.read_bytes() == (events["cpu"] / path.name).read_bytes()


def test_fetch_latest_with_filters(capsys, bucket, events, tmp_path):
    result = cli(
        capsys, "fetch", "--latest", "--service", "api", "--rule", "cpu", "--from", bucket.url,
        "-o", str(tmp_path),
    )  # fmt: skip

    assert Path(result.out.strip()).name == events["cpu"].name


def test_show_reads_an_event_from_the_bucket(capsys, bucket, events):
    result = cli(capsys, "show", events["cpu"].name, "--from", bucket.url)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"event    {events['cpu'].name}"
    assert f"from     {bucket.url} (api/" in result.out
    assert "render_report  handlers.py" in result.out


def test_diff_of_a_gcheap_pair_in_the_bucket(capsys, bucket):
    folder = bucket.add(
        service="api",
        rule="gcheap",
        baseline=10,
        value=14,
        files={
            "heap.pb.gz": pprof(heap_profile({("main", "remember"): 1 << 20})),
            "heap-2.pb.gz": pprof(heap_profile({("main", "remember"): 5 << 20})),
        },
    )

    result = cli(capsys, "diff", folder.name, "--from", bucket.url)

    assert result.code == 0, result.err
    assert "+4.0 MiB" in result.out
    assert "remember (/srv/app/cache.py:21)" in result.out


def test_event_json_naming_files_outside_writes_nothing_there(capsys, bucket, tmp_path):
    folder = write_bundle(bucket.local, service="api", rule="thread", files={"threads.txt": b"t"})
    event = json.loads((folder / "event.json").read_text())
    event["files"] += [{"name": "../../escape.txt", "size": 4, "sha256": "0" * 64}]
    (folder / "event.json").write_text(json.dumps(event))
    bucket.ship(folder)
    out = tmp_path / "out"

    result = cli(capsys, "fetch", folder.name, "--from", bucket.url, "-o", str(out))

    assert result.code == 1
    assert "corrupt event.json lists a file named '../../escape.txt'" in result.err
    assert [p.name for p in (out / folder.name).iterdir()] == ["event.json"]
    assert not (tmp_path / "escape.txt").exists()


def test_a_hostile_event_id_is_refused_before_any_request(capsys, bucket):
    result = cli(capsys, "fetch", "../../prod", "--from", bucket.url)

    assert result.code == 2
    assert "'../../prod' is not an event id" in result.err


def test_an_object_changed_after_event_json_is_refused(capsys, bucket, events, tmp_path):
    rel = events["old"].relative_to(bucket.local).as_posix()
    original = (events["old"] / "threads.txt").read_bytes()
    bucket.put(f"{rel}/threads.txt", b"x" * len(original))  # same size, other bytes
    out = tmp_path / "out"

    result = cli(capsys, "fetch", events["old"].name, "--from", bucket.url, "-o", str(out))

    assert result.code == 1
    assert "threads.txt: the copy differs from the sha256 in event.json" in result.err
    assert "threads.txt" not in [p.name for p in (out / events["old"].name).iterdir()]


def test_a_corrupt_profile_in_the_bucket_is_reported_not_raised(capsys, bucket, tmp_path):
    folder = bucket.add(
        service="api", rule="cpu", baseline=20, value=30, files={"cpu.pb.gz": b"\x1f\x8bnope"}
    )

    shown = cli(capsys, "show", folder.name, "--from", bucket.url)
    fetched = cli(capsys, "fetch", folder.name, "--from", bucket.url, "-o", str(tmp_path))
    top = cli(capsys, "top", str(tmp_path / folder.name / "cpu.pb.gz"))

    assert shown.code == 0
    assert "cpu.pb.gz: corrupt pprof profile" in shown.out
    assert fetched.code == 0
    assert top.code == 1
    assert "corrupt pprof profile" in top.err
    assert "Traceback" not in shown.err + top.err


def test_a_missing_bucket_is_one_line_exit_1(capsys, bucket):
    result = cli(capsys, "ls", "--from", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")

    assert result.code == 1
    assert "the bucket does not exist" in result.err
    assert len(result.err.splitlines()) == 1


def test_wrong_credentials_are_said_without_the_secret(capsys, bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")

    result = cli(capsys, "ls", "--from", bucket.url)

    assert result.code == 1
    assert "check AWS_SECRET_ACCESS_KEY" in result.err
    assert "wrong-secret-0123456789" not in result.err


def test_doctor_checks_the_storage(capsys, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("HOLMES_DUMP_PATH", str(tmp_path / "dumps"))
    monkeypatch.setenv("HOLMES_CPU_ENGINE", "sampler")
    monkeypatch.setenv("HOLMES_STORAGE", bucket.url)

    good = json.loads(cli(capsys, "doctor", "--json").out)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    bad = cli(capsys, "doctor", "--json")

    (storage,) = [f for f in good if f["check"] == "storage"]
    assert storage["status"] == "ok"
    assert storage["detail"] == (
        f"{bucket.url} answers at {bucket.server.endpoint} (credentials: env)"
    )
    assert bad.code == 1
    (failed,) = [f for f in json.loads(bad.out) if f["check"] == "storage"]
    assert failed["status"] == "fail"
    assert "SignatureDoesNotMatch" in failed["detail"]
    assert "wrong-secret-0123456789" not in bad.out
    assert bucket.server.secret_key not in bad.out


def test_the_console_script_against_the_bucket(bucket, events, tmp_path):
    env = clean_env(**bucket.server.env())

    listed = script("ls", "--from", bucket.url, "--service", "worker", env=env)
    fetched = script("fetch", "--latest", "--from", bucket.url, "-o", str(tmp_path), env=env)

    assert listed.code == 0, listed.err
    assert ids(listed.out) == [events["mem"].name]
    assert fetched.code == 0, fetched.err
    assert Path(fetched.out.strip()) == tmp_path / events["task"].name
    assert (tmp_path / events["task"].name / "threads.txt").read_bytes() == b"Thread MainThread\n"
