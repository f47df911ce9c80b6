"""Secrets in URLs never shown: the S3 endpoint's user info and query, the webhook's
password, token and path, wherever holmespy speaks (logs, status, doctor, CLI
errors, reprs, the webhook's payload)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from test_cli_support import clean_env, script

from holmespy.config import Config
from holmespy.redact import address, public_url, redact
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location, StorageError
from holmespy.storage.uploader import Uploader
from tests.s3_server import publish_bundle

PASSWORD = "hunter22-pw"
TOKEN = "tok-3f9a1c"
SECRETS = (PASSWORD, TOKEN, "AKIAFAKEACCESSKEY", "fake/secret+key")


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@pytest.fixture
def secret_endpoint(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> str:
    """An S3 endpoint whose URL holds a password and a token, on a closed port."""
    url = f"http://admin:{PASSWORD}@127.0.0.1:{closed_port}/?token={TOKEN}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEACCESSKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake/secret+key")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return url


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shown in: {text}"


def test_urls_in_any_text_lose_user_info_and_query() -> None:
    text = 'could not connect to "http://u:p4ss@store:9000/b?X-Amz-Signature=abc" (retry)'
    assert redact(text) == 'could not connect to "http://***@store:9000/b?***" (retry)'
    assert redact("s3://bucket/prefix/key") == "s3://bucket/prefix/key"


def test_public_and_bare_forms_of_a_url() -> None:
    url = "https://bot:pw@[::1]:8443/T0/B0/xoxb?token=t"
    assert public_url(url) == "https://***@[::1]:8443/T0/B0/xoxb?***"
    assert public_url(url, path=False) == "https://***@[::1]:8443/…"
    assert address(url) == "https://[::1]:8443/T0/B0/xoxb"
    assert public_url("http://[::1") == "(a malformed URL, 11 characters)"


def test_a_storage_error_never_shows_the_endpoint_password(secret_endpoint: str) -> None:
    store = S3Store(S3Location.parse("s3://bucket/prod"), max_attempts=1)
    with pytest.raises(StorageError) as info:
        store.get_bytes("svc/x")
    assert_no_secret(str(info.value))
    assert "http://***@127.0.0.1:" in str(info.value)
    assert_no_secret(store.endpoint + repr(store))


def test_the_webhook_is_never_told_the_endpoint_password(secret_endpoint: str) -> None:
    store = S3Store(S3Location.parse("s3://bucket/prod"))
    assert store.url("svc/2026-01-01/e/cpu.pb.gz").endswith(
        "/bucket/prod/svc/2026-01-01/e/cpu.pb.gz"
    )
    assert_no_secret(store.url("k"))
    assert "@" not in store.url("k")


def test_ls_against_a_secret_endpoint_fails_in_one_line_without_it(
    secret_endpoint: str, tmp_path: Path
) -> None:
    env = clean_env(
        AWS_ENDPOINT_URL_S3=secret_endpoint,
        AWS_ACCESS_KEY_ID="AKIAFAKEACCESSKEY",
        AWS_SECRET_ACCESS_KEY="fake/secret+key",
        AWS_REGION="us-east-1",
        HOME=str(tmp_path),
    )
    result = script("ls", "--from", "s3://bucket/prod", env=env)

    assert result.code == 1
    assert len(result.err.strip().split("\n")) == 1, result.err
    assert_no_secret(result.out + result.err)


def test_doctor_never_shows_the_endpoint_or_webhook_secrets(
    secret_endpoint: str, tmp_path: Path
) -> None:
    env = clean_env(
        AWS_ENDPOINT_URL_S3=secret_endpoint,
        AWS_ACCESS_KEY_ID="AKIAFAKEACCESSKEY",
        AWS_SECRET_ACCESS_KEY="fake/secret+key",
        AWS_REGION="us-east-1",
        HOME=str(tmp_path),
        HOLMES_STORAGE="s3://bucket/prod",
        HOLMES_DUMP_PATH=str(tmp_path / "dumps"),
        HOLMES_CPU_ENGINE="sampler",
        HOLMES_WEBHOOK_URL=f"https://bot:{PASSWORD}@hooks.example/{TOKEN}?t={TOKEN}",
    )
    result = script("doctor", env=env)

    assert "storage" in result.out
    assert "https://***@hooks.example/…" in result.out
    assert_no_secret(result.out + result.err)


def test_status_and_log_never_show_the_endpoint_password(
    secret_endpoint: str,
    tmp_path: Path,
    uploaders: list[Uploader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dumps = tmp_path / "dumps"
    config = Config(dump_path=dumps, service="svc", storage="s3://bucket/prod")
    uploaders.append(uploader := Uploader(config).start())
    uploader.notify(publish_bundle(dumps, "svc", {"threads.txt": b"x"}))
    failed = threading.Event()
    for _ in range(600):  # polls for up to a minute: the first attempt fails in well under one
        if uploader.status()["failed_attempts"]:
            break
        failed.wait(0.1)
    status = uploader.status()
    assert status["failed_attempts"]
    assert_no_secret(str(status) + caplog.text + repr(uploader) + repr(config))
