"""`holmespy serve` in a real browser, over bundles real programs wrote.

`examples/cpu_spike.py` runs with the watcher until its CPU rule fires; its
bundle (and a hostile one beside it) is served by the `holmespy` script from
the folder and from the real SeaweedFS, and each page is opened in Debian's
headless Chromium, which runs the page's script and dumps the DOM it built:
the list must show the events, the event page the hot function as frames of
its flame graph and the history chart, the hostile strings as text, and a
path out of the source a refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from serve_support import fetch, running_serve
from test_cli_support import chromium_dom, clean_env, write_bundle

from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.timeout(300)

HOSTILE = "</script><script>document.title='pwned'</script>"


class Dom(HTMLParser):
    """What the tests look for in a dumped page: frames, chart parts, title, links, text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.frames: list[str] = []
        self.chart: list[dict[str, str]] = []
        self.links: list[str] = []
        self.title = ""
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._frame = False
        self._title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        classes = attributes.get("class", "").split()
        self._frame = tag == "div" and "frame" in classes
        if tag in ("svg", "polyline", "line", "circle") and (
            tag == "svg" or "chart" in attributes.get("class", "") or self.chart
        ):
            self.chart.append({"tag": tag, **attributes})
        if tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        self._title = tag == "title" and not self.title

    def handle_data(self, data: str) -> None:
        if self._frame:
            self.frames.append(data)
            self._frame = False
        if self._title:
            self.title = data
            self._title = False
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def run_example(dump_path: Path, name: str, **env: str) -> None:
    """Run an example with the watcher, as tests/conftest.py's `run_program` does."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    full_env = {
        **clean,
        "HOLMES_DUMP_PATH": str(dump_path),
        "PYTHONPATH": str(ROOT / "src"),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=dump_path.parent,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def real_dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundles of a real CPU spike, and a hostile bundle beside them."""
    root = tmp_path_factory.mktemp("serve-real")
    dumps = root / "dumps"
    run_example(dumps, "cpu_spike.py")
    cpu = sorted(p.parent for p in dumps.glob("*/*/*-cpu-*/event.json"))
    assert cpu, "cpu_spike.py wrote no cpu event"
    hostile = write_bundle(
        dumps,
        service="evil",
        rule="thread",
        host="<img src=x onerror=\"document.title='pwned'\">",
        reason=HOSTILE,
    )
    return {"dumps": dumps, "cpu": cpu[0], "hostile": hostile, "root": root}


@pytest.fixture(scope="module")
def local_url(real_dumps: dict[str, Any]) -> Iterator[str]:
    with running_serve(["--from", str(real_dumps["dumps"])], clean_env()) as url:
        yield url


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    return tmp_path / "chromium-profile"


def test_the_list_shows_the_events(
    real_dumps: dict[str, Any], local_url: str, profile: Path
) -> None:
    dom = Dom(chromium_dom(local_url, profile))

    cpu, hostile = real_dumps["cpu"].name, real_dumps["hostile"].name
    assert f"/event/{cpu}" in dom.links
    assert f"/event/{hostile}" in dom.links
    assert dom.links.index(f"/event/{hostile}") < dom.links.index(f"/event/{cpu}")  # newest first
    assert dom.title == "Events · holmespy"


def test_the_event_page_shows_the_hot_function_in_its_flame_graph_and_the_chart(
    real_dumps: dict[str, Any], local_url: str, profile: Path
) -> None:
    event = json.loads((real_dumps["cpu"] / "event.json").read_text())

    dom = Dom(chromium_dom(f"{local_url}event/{event['id']}#search=checksum", profile))

    # The frames exist only if flame.js ran and drew them from the embedded data.
    assert any(frame.endswith("checksum") for frame in dom.frames), dom.frames[:20]
    assert "matched" in dom.all_text
    kinds = [part["tag"] for part in dom.chart]
    assert kinds[0] == "svg"
    assert "polyline" in kinds
    assert kinds.count("circle") == len(event["history"])
    assert any(part.get("class") == "threshold" for part in dom.chart)
    assert event["reason"] in dom.all_text


def test_a_hostile_bundles_strings_appear_escaped(
    real_dumps: dict[str, Any], local_url: str, profile: Path
) -> None:
    hostile = real_dumps["hostile"].name

    dom = Dom(chromium_dom(f"{local_url}event/{hostile}", profile))

    assert dom.title == f"thread {hostile} · holmespy"  # no script of the bundle ran
    assert HOSTILE in dom.all_text  # shown as text
    assert "<img src=x onerror=" in dom.all_text
    assert not any(tag == "img" for tag, _ in dom.tags)


def test_a_dot_dot_path_is_refused(local_url: str, profile: Path) -> None:
    # A browser resolves a literal `../` before sending it (test_cli_serve sends it raw);
    # encoded, it reaches the server.
    dom = Dom(chromium_dom(f"{local_url}event/..%2f..%2f..%2fetc%2fpasswd", profile))

    assert "refused the path segment" in dom.all_text
    assert "root:x:0" not in dom.all_text


# -- the same pages over the real SeaweedFS --


@pytest.fixture(scope="module")
def s3_url(real_dumps: dict[str, Any], s3_server: Any) -> Iterator[str]:
    bucket = s3_server.bucket(f"serve-{uuid.uuid4().hex[:12]}")
    env = s3_server.env()
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the store reads the AWS_* settings, as the uploader does
    try:
        store = S3Store(S3Location(bucket, "prod"))
        dumps: Path = real_dumps["dumps"]
        for folder in (real_dumps["cpu"], real_dumps["hostile"]):
            rel = folder.relative_to(dumps).as_posix()
            for path in sorted(folder.iterdir(), key=lambda p: p.name == "event.json"):
                store.put_file(f"{rel}/{path.name}", path, timeout=30)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with running_serve(["--from", f"s3://{bucket}/prod"], clean_env(**env)) as url:
        yield url


def test_over_s3_the_list_and_the_flame_graph_show_the_real_event(
    real_dumps: dict[str, Any], s3_url: str, profile: Path
) -> None:
    cpu = real_dumps["cpu"].name

    listing = Dom(chromium_dom(s3_url, profile))
    event = Dom(chromium_dom(f"{s3_url}event/{cpu}", profile))

    assert f"/event/{cpu}" in listing.links
    assert f"/event/{real_dumps['hostile'].name}" in listing.links
    assert any(frame.endswith("checksum") for frame in event.frames)
    assert f"/event/{cpu}/file/cpu.pb.gz" in event.links


def test_over_s3_a_download_is_the_stored_file(real_dumps: dict[str, Any], s3_url: str) -> None:
    cpu = real_dumps["cpu"]

    status, body = fetch(f"{s3_url}event/{cpu.name}/file/threads.txt")

    assert status == 200
    assert body == (cpu / "threads.txt").read_text()
