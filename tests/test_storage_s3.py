"""S3Store against a real S3-compatible server (SeaweedFS on loopback, with authentication).

The client is made the way production makes it: from the standard AWS_*
settings in the environment, never from arguments.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from holmespy.config import Config
from holmespy.errors import ConfigError
from holmespy.storage.s3 import S3Store, Transfer
from holmespy.storage.s3client import Encryption, ObjectNotFound, S3Location, StorageError
from tests.s3_server import SeaweedFS

SMALL_PARTS = Transfer(multipart_threshold=5 << 20, part_size=5 << 20, concurrency=3)


@pytest.fixture
def store(bucket: str) -> S3Store:
    return S3Store(S3Location(bucket, "dumps/prod"), transfer=SMALL_PARTS)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_files_round_trip_byte_identical_in_one_put_and_in_parts(
    store: S3Store, aws_env: SeaweedFS, tmp_path: Path
) -> None:
    small = write(tmp_path / "threads.txt", b"Thread 1 (idle)\n" * 64)
    big = write(tmp_path / "heap.pb.gz", os.urandom(12 << 20))  # three parts
    metadata = {"service": "api", "rule": "mem", "host": "h\u00f6st"}
    for path in (small, big):
        key = f"api/2026-11-24/e1/{path.name}"
        info = store.put_file(key, path, metadata, timeout=60)
        assert info.size == path.stat().st_size
        assert store.get_bytes(key) == path.read_bytes()
        store.get_file(key, tmp_path / f"copy-{path.name}")
        assert (tmp_path / f"copy-{path.name}").read_bytes() == path.read_bytes()
        head = store.head(key)
        assert head is not None
        assert head.size == path.stat().st_size
        assert head.metadata == {"service": "api", "rule": "mem", "host": "h%C3%B6st"}
    raw = aws_env.client().head_object(
        Bucket=store.location.bucket, Key="dumps/prod/api/2026-11-24/e1/heap.pb.gz"
    )
    assert raw["ContentType"] == "application/gzip"
    assert raw["ETag"].endswith('-3"')  # a multipart object of three parts


def test_listing_follows_continuation_tokens_and_prefix_boundaries(
    bucket: str, tmp_path: Path
) -> None:
    store = S3Store(S3Location(bucket, "dumps"), page_size=2)
    source = write(tmp_path / "f", b"x")
    keys = [f"svc/2026-11-24/e{n}/threads.txt" for n in range(5)] + ["svc-2/2026-11-24/e/x.txt"]
    for key in keys:
        store.put_file(key, source, timeout=30)
    listed = list(store.list("svc/"))
    assert sorted(o.key for o in listed) == keys[:5]
    assert all(o.size == 1 and o.etag and o.last_modified for o in listed)
    assert sorted(o.key for o in store.list()) == sorted(keys)
    assert list(store.list("nothing/")) == []


def test_a_missing_object_is_none_or_not_found(store: S3Store, tmp_path: Path) -> None:
    assert store.head("svc/2026-11-24/e/none.txt") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("svc/2026-11-24/e/none.txt")
    with pytest.raises(ObjectNotFound):
        store.get_file("svc/2026-11-24/e/none.txt", tmp_path / "none.txt")
    assert list(tmp_path.iterdir()) == []  # no temp file left


def test_a_missing_bucket_is_a_permanent_error_saying_what_to_do(
    aws_env: SeaweedFS, tmp_path: Path
) -> None:
    store = S3Store(S3Location("no-such-bucket-here", "p"))
    with pytest.raises(StorageError) as info:
        store.put_file("svc/d/e/x.txt", write(tmp_path / "x.txt", b"x"), timeout=30)
    error = info.value
    assert error.permanent
    assert error.code == "NoSuchBucket"
    assert "s3://no-such-bucket-here/p/svc/d/e/x.txt" in str(error)
    assert "create it, or fix the bucket in HOLMES_STORAGE" in str(error)
    assert aws_env.endpoint in str(error)


@pytest.mark.parametrize(
    ("variable", "wrong", "code", "advice"),
    [
        (
            "AWS_SECRET_ACCESS_KEY",
            "wrong-secret-0123",
            "SignatureDoesNotMatch",
            "AWS_SECRET_ACCESS_KEY",
        ),
        ("AWS_ACCESS_KEY_ID", "WRONGKEYID0123", "InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_wrong_credentials_are_permanent_errors_that_never_show_them(
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    wrong: str,
    code: str,
    advice: str,
) -> None:
    monkeypatch.setenv(variable, wrong)
    store = S3Store(S3Location(bucket, "p"))
    with pytest.raises(StorageError) as info:
        store.put_file("svc/d/e/x.txt", write(tmp_path / "x.txt", b"x"), timeout=30)
    assert info.value.permanent
    assert info.value.code == code
    assert advice in str(info.value)
    for secret in (os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]):
        assert secret not in str(info.value)
        assert secret not in repr(store)


def test_an_unreachable_store_is_a_transient_error_naming_the_endpoint(
    aws_env: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    store = S3Store(S3Location("any-bucket", ""), max_attempts=1)
    with pytest.raises(StorageError) as info:
        store.put_file("svc/d/e/x.txt", write(tmp_path / "x.txt", b"x"), timeout=30)
    assert not info.value.permanent
    assert f"cannot reach the store at {closed}" in str(info.value)
    assert "AWS_ENDPOINT_URL_S3" in str(info.value)


def test_object_urls_and_presigned_links(
    store: S3Store, aws_env: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(2000)
    store.put_file("svc/d/e/cpu.pb.gz", write(tmp_path / "cpu.pb.gz", data), timeout=30)
    url = store.url("svc/d/e/cpu.pb.gz")
    assert url == f"{aws_env.endpoint}/{store.location.bucket}/dumps/prod/svc/d/e/cpu.pb.gz"
    with pytest.raises(urllib.error.HTTPError):  # the plain URL needs credentials
        urllib.request.urlopen(url, timeout=10)
    link = store.presign("svc/d/e/cpu.pb.gz", 60)
    assert link is not None
    assert "X-Amz-Expires=60" in link
    assert aws_env.secret_key not in link
    with urllib.request.urlopen(link, timeout=10) as reply:
        assert reply.read() == data


def test_aes256_encryption_is_asked_for_every_object(
    bucket: str, aws_env: SeaweedFS, tmp_path: Path
) -> None:
    store = S3Store(S3Location(bucket, ""), encryption=Encryption("AES256"), transfer=SMALL_PARTS)
    for name, size in (("small.txt", 100), ("big.pb.gz", 6 << 20)):
        path = write(tmp_path / name, os.urandom(size))
        store.put_file(f"svc/d/e/{name}", path, timeout=60)
        head = aws_env.client().head_object(Bucket=bucket, Key=f"svc/d/e/{name}")
        assert head["ServerSideEncryption"] == "AES256"
        assert store.get_bytes(f"svc/d/e/{name}") == path.read_bytes()


def test_a_kms_key_id_is_passed_through_to_the_store(bucket: str, tmp_path: Path) -> None:
    key_id = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd"
    config = Config(storage=f"s3://{bucket}/p", s3_kms_key_id=key_id)
    store = S3Store(
        S3Location(bucket, "p"), encryption=Encryption.from_config(config), max_attempts=1
    )
    sent: list[dict[str, Any]] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    # This SeaweedFS has no KMS configured: it refuses, but the request carried the key.
    with pytest.raises(StorageError):
        store.put_file("svc/d/e/x.txt", write(tmp_path / "x.txt", b"x"), timeout=30)
    assert sent[0]["x-amz-server-side-encryption"] == b"aws:kms"
    assert sent[0]["x-amz-server-side-encryption-aws-kms-key-id"] == key_id.encode()


def test_a_kms_key_id_contradicting_aes256_is_a_config_error() -> None:
    config = Config(s3_sse="AES256", s3_kms_key_id="alias/dumps")
    with pytest.raises(ConfigError, match="HOLMES_S3_KMS_KEY_ID='alias/dumps' is invalid"):
        Encryption.from_config(config)
    assert Encryption.from_config(Config(s3_kms_key_id="alias/dumps")) == Encryption(
        "aws:kms", "alias/dumps"
    )
    assert Encryption.from_config(Config()) is None


def test_uploads_left_open_by_a_crash_are_aborted(store: S3Store, aws_env: SeaweedFS) -> None:
    client, bucket = aws_env.client(), store.location.bucket
    left = client.create_multipart_upload(Bucket=bucket, Key="dumps/prod/svc/d/e1/heap.pb.gz")
    client.upload_part(
        Bucket=bucket, Key=left["Key"], UploadId=left["UploadId"], PartNumber=1, Body=b"x" * 100
    )
    other = client.create_multipart_upload(Bucket=bucket, Key="dumps/prod/svc/d/e2/heap.pb.gz")
    assert store.clean_incomplete("svc/d/e1/") == 1
    still_open = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in still_open] == [other["UploadId"]]


def test_reprs_name_the_location_and_nothing_secret(store: S3Store, aws_env: SeaweedFS) -> None:
    store.head("svc/d/e/x")  # the client now exists, with its credentials
    assert repr(store) == f"S3Store('s3://{store.location.bucket}/dumps/prod')"
    assert aws_env.secret_key not in repr(store.client)
    assert store.redact(f"echoed {aws_env.secret_key} back") == "echoed *** back"
