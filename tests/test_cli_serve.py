"""`holmespy serve` over HTTP: what each page says, and every way out of the source refused.

A real server (the verb's own `Server`) runs on a free loopback port in a
thread, over bundles written by the library's `BundleWriter`; requests are
real HTTP. The browser tests are in test_cli_serve_browser.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_support import fetch, running_serve
from test_cli_deadline import silent_store
from test_cli_support import clean_env, cli, cpu_profile, heap_profile, pprof, script, write_bundle

from holmespy.cli import build_parser, site
from holmespy.cli.reading import DEFAULT_MAX_SIZE
from holmespy.cli.serve import Server
from holmespy.cli.source import LocalSource, S3Source
from holmespy.formats.profile import Frame
from holmespy.profilers.threads import format_threads
from tests.test_terminal_safety import BIDI_OVERRIDE, CLEAR_SCREEN, raw_controls

pytestmark = pytest.mark.timeout(60)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SECRET = "root:x:0:0:the-secret-outside-the-source"
HOT = {("main", "serve", "render_report"): 3_000_000_000, ("main", "serve", "parse"): 10**9}


@contextlib.contextmanager
def serving(root: Path, timeout: float = 30) -> Iterator[Server]:
    server = Server(("127.0.0.1", 0), LocalSource(root), timeout, DEFAULT_MAX_SIZE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def get(
    server: Server,
    path: str,
    *,
    method: str = "GET",
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with `path` sent exactly as given (no client-side normalising)."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def page(server: Server, path: str) -> str:
    status, _, body = get(server, path)
    assert status == 200, body[:500]
    return body.decode()


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


@pytest.fixture
def three(dumps: Path) -> dict[str, Path]:
    """A cpu event with a profile and thread stacks, a mem event, an older thread event."""
    return {
        "thread": write_bundle(
            dumps, service="worker", rule="thread", when=NOW - dt.timedelta(hours=2), host="b-1"
        ),
        "mem": write_bundle(
            dumps,
            service="api",
            rule="mem",
            when=NOW - dt.timedelta(hours=1),
            host="a-1",
            files={"heap.pb.gz": pprof(heap_profile({("main", "load", "cache_put"): 5 << 20}))},
        ),
        "cpu": write_bundle(
            dumps,
            service="api",
            rule="cpu",
            baseline=20,
            value=60,
            when=NOW,
            host="a-2",
            files={
                "cpu.pb.gz": pprof(cpu_profile(HOT)),
                "threads.txt": format_threads().encode(),
            },
        ),
    }


def ids_in(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('href="/event/')[1:]]


# -- the list --


def test_the_list_shows_every_event_newest_first(dumps: Path, three: dict[str, Path]) -> None:
    with serving(dumps) as server:
        html = page(server, "/")

    assert ids_in(html) == [three[k].name for k in ("cpu", "mem", "thread")]
    assert "60%" in html  # the value, read from event.json
    assert "a-2" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("rule=mem", ["mem"]),
        ("service=api", ["cpu", "mem"]),
        ("host=b-1", ["thread"]),
        ("since=90m", ["cpu", "mem"]),
        ("until=90m", ["thread"]),
        ("service=api&rule=cpu", ["cpu"]),
    ],
)
def test_the_list_filters_by_service_rule_host_and_time(
    dumps: Path, three: dict[str, Path], query: str, expected: list[str]
) -> None:
    with serving(dumps) as server:
        html = page(server, f"/?{query}")

    assert ids_in(html) == [three[k].name for k in expected]


def test_the_list_is_paged(
    dumps: Path, three: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site, "PAGE_SIZE", 2)
    with serving(dumps) as server:
        first = page(server, "/")
        second = page(server, "/?page=2")

    assert ids_in(first) == [three["cpu"].name, three["mem"].name]
    assert 'rel="next" href="/?page=2"' in first
    assert ids_in(second) == [three["thread"].name]
    assert 'rel="next"' not in second
    assert 'rel="prev" href="/?page=1"' in second


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("rule=bogus", "rule &#x27;bogus&#x27;: expected one of cpu"),
        ("since=yesterday-ish", "--since &#x27;yesterday-ish&#x27;: expected an age"),
        ("service=..%2Fetc", "not a service name"),
    ],
)
def test_a_bad_filter_is_a_one_line_400(
    dumps: Path, three: object, query: str, message: str
) -> None:
    with serving(dumps) as server:
        status, _, body = get(server, f"/?{query}")

    assert status == 400
    assert message in body.decode()


# -- one event --


def test_the_event_page_says_why_and_shows_chart_profile_threads_and_files(
    dumps: Path, three: dict[str, Path]
) -> None:
    event_id = three["cpu"].name
    with serving(dumps) as server:
        html = page(server, f"/event/{event_id}")

    assert "60 &gt;= 25 = average 20 of the last 10 samples + diff 25%" in html
    assert '<svg class="chart"' in html
    assert "average + 25% = 25" in html  # the threshold line it crossed
    assert "abs 70" in html
    assert html.count('<circle class="point"') == 10
    assert html.count('<circle class="fired"') == 1
    assert "cpu.pb.gz: cpu, total 4.00 s" in html
    assert '<td class="mono">render_report</td>' in html
    assert '<section class="flame" data-profile="cpu.pb.gz">' in html
    assert "threads.txt: " in html
    assert f'href="/event/{event_id}/file/cpu.pb.gz" download' in html


def test_a_file_is_downloaded_as_an_attachment_byte_for_byte(
    dumps: Path, three: dict[str, Path]
) -> None:
    event_id = three["cpu"].name
    with serving(dumps) as server:
        status, headers, body = get(server, f"/event/{event_id}/file/cpu.pb.gz")

    assert status == 200
    assert body == (three["cpu"] / "cpu.pb.gz").read_bytes()
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == 'attachment; filename="cpu.pb.gz"'


def test_two_events_are_compared_with_what_grew_between_their_heaps(dumps: Path) -> None:
    a = write_bundle(
        dumps,
        rule="mem",
        when=NOW - dt.timedelta(minutes=5),
        files={"heap.pb.gz": pprof(heap_profile({("main", "cache_put"): 1 << 20}))},
    )
    b = write_bundle(
        dumps,
        rule="mem",
        when=NOW,
        files={"heap.pb.gz": pprof(heap_profile({("main", "cache_put"): 9 << 20}))},
    )
    with serving(dumps) as server:
        html = page(server, f"/compare?a={a.name}&b={b.name}")

    assert f">{a.name}</a>" in html
    assert f">{b.name}</a>" in html
    assert "heap.pb.gz a → b: inuse_space by allocation site" in html
    assert "1.0 MiB      9.0 MiB     +8.0 MiB  cache_put" in html


def test_a_corrupt_event_json_is_a_one_line_error_page(dumps: Path) -> None:
    folder = write_bundle(dumps, rule="cpu")
    (folder / "event.json").write_text("[1, 2")
    with serving(dumps) as server:
        status, _, body = get(server, f"/event/{folder.name}")

    assert status == 500
    assert "corrupt event.json: not JSON" in body.decode()


def test_a_missing_event_is_404(dumps: Path, three: object) -> None:
    with serving(dumps) as server:
        status, _, body = get(server, "/event/19990101T000000.000Z-cpu-0000000000")

    assert status == 404
    assert "no such event" in body.decode()


# -- hostile bundles --


def test_every_string_from_a_hostile_bundle_is_escaped(dumps: Path) -> None:
    hostile = "</script><script>document.title='pwned'</script>"
    profile = cpu_profile({("main", hostile): 10**9})
    folder = write_bundle(
        dumps,
        rule="cpu",
        baseline=20,
        value=60,
        host=f"<img src=x onerror=alert(1)>{BIDI_OVERRIDE}",
        reason=f"{hostile}{CLEAR_SCREEN}",
        files={"cpu.pb.gz": pprof(profile)},
        captures={"cpu": {"error": "<b>bold</b>", "engine": "<i>x</i>"}},
    )
    with serving(dumps) as server:
        event = page(server, f"/event/{folder.name}")
        listing = page(server, "/")

    for html in (event, listing):
        assert "<script>document" not in html
        assert "<img" not in html
        assert raw_controls(html) == []
    assert "&lt;img src=x onerror=alert(1)&gt;\\u202e" in event
    assert "&lt;/script&gt;&lt;script&gt;document.title=&#x27;pwned&#x27;" in event
    assert "failed: &lt;b&gt;bold&lt;/b&gt;" in event
    # In the flame graph's data the name is JSON with <, > and & escaped: it cannot end the script.
    assert "\\u003c/script\\u003e\\u003cscript\\u003edocument.title" in event


def _profile_of(stacks: list[tuple[Frame, ...]]) -> bytes:
    """A CPU profile of `stacks` (innermost frame first), one second each."""
    profile = cpu_profile({})
    for stack in stacks:
        profile.add(stack, (100, 10**9))
    return pprof(profile)


def test_a_profile_deeper_than_a_page_nests_is_cut_not_a_500(dumps: Path) -> None:
    # 3,000 frames: one level of JSON each would pass Python's recursion limit.
    deep = tuple(Frame(f"level{n}", "/srv/app/deep.py", n) for n in range(3000))
    folder = write_bundle(
        dumps, rule="cpu", baseline=20, value=60, files={"cpu.pb.gz": _profile_of([deep])}
    )
    with serving(dumps) as server:
        status, _, body = get(server, f"/event/{folder.name}")

    assert status == 200, body[:300]
    assert b"level2999" in body  # the outermost frames are drawn
    assert b"[deeper frames not drawn]" in body


def test_a_small_profile_repeating_a_long_name_cannot_make_a_huge_page(dumps: Path) -> None:
    # 200 distinct stacks of 20 frames, all one 100,000-character name: a few KiB
    # gzipped, 400 MB once each stack is written out in full.
    name = "render_" * 15_000
    stacks = [tuple(Frame(name, "/srv/app/x.py", s) for _ in range(20)) for s in range(200)]
    data = _profile_of(stacks)
    assert len(data) < 10_000
    folder = write_bundle(dumps, rule="cpu", baseline=20, value=60, files={"cpu.pb.gz": data})
    with serving(dumps) as server:
        status, _, body = get(server, f"/event/{folder.name}")

    assert status == 200, body[:300]
    assert len(body) < 1_000_000
    assert b"render_render_" in body


def test_past_the_node_limit_new_frames_are_one_node_and_values_stay_true(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from holmespy.cli import flamegraph

    monkeypatch.setattr(flamegraph, "MAX_NODES", 5)
    profile = cpu_profile({("main", f"handler{n}", "leaf"): 10**9 for n in range(10)})
    tree = flamegraph.tree_from_profile(profile, 1)

    thread = tree.children["thread:MainThread"]
    main = next(iter(thread.children.values()))
    assert tree.value == main.value == 10 * 10**9
    assert sum(c.value for c in main.children.values()) == main.value
    assert flamegraph.MORE in main.children


def test_pages_run_only_the_packages_script(dumps: Path, three: dict[str, Path]) -> None:
    with serving(dumps) as server:
        _, headers, _ = get(server, f"/event/{three['cpu'].name}")
        status, js_headers, js = get(server, "/static/flame.js")

    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert status == 200
    assert js_headers["content-type"].startswith("text/javascript")
    assert b"textContent" in js


# -- nothing outside the source, nothing written --

ATTACKS = {
    "dot-dot": "/event/../../../../etc/passwd",
    "dot-dot-in-file": "/event/{id}/file/../../../../../etc/passwd",
    "encoded-dot-dot": "/event/%2e%2e/%2e%2e/etc/passwd",
    "encoded-slash": "/event/{id}/file/..%2f..%2f..%2fevent.json",
    "double-encoded": "/event/{id}/file/%252e%252e%252fevent.json",
    "absolute": "/event/{id}/file/%2Fetc%2Fpasswd",
    "absolute-url-path": "//etc/passwd",
    "backslash": "/event/{id}/file/..%5c..%5cevent.json",
    "nul": "/event/{id}/file/cpu.pb.gz%00.txt",
    "static-escape": "/static/..%2fsite.py",
    "unlisted-file": "/event/{id}/file/outside.txt",
    "bad-utf8": "/event/%ff%fe",
}


@pytest.mark.parametrize("path", ATTACKS.values(), ids=ATTACKS.keys())
def test_paths_outside_the_source_are_refused(
    dumps: Path, three: dict[str, Path], tmp_path: Path, path: str
) -> None:
    (tmp_path / "outside.txt").write_text(SECRET)
    with serving(dumps) as server:
        status, _, body = get(server, path.format(id=three["cpu"].name))

    assert status in (400, 403, 404), body[:300]
    assert SECRET.encode() not in body
    assert b"root:x:0" not in body


def test_a_symlink_out_of_the_folder_is_not_followed(dumps: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text(SECRET)
    folder = write_bundle(dumps, rule="thread", files={"threads.txt": b"x"})
    (folder / "threads.txt").unlink()
    (folder / "threads.txt").symlink_to(outside)
    with serving(dumps) as server:
        download = get(server, f"/event/{folder.name}/file/threads.txt")
        event = get(server, f"/event/{folder.name}")

    assert download[0] == 403
    assert SECRET.encode() not in download[2]
    assert event[0] == 200
    assert SECRET.encode() not in event[2]
    assert b"refused" in event[2]  # said in the threads part's place


def test_an_event_json_planted_as_a_link_does_not_hide_the_list(
    dumps: Path, three: dict[str, Path]
) -> None:
    (three["mem"] / "event.json").unlink()
    (three["mem"] / "event.json").symlink_to("/etc/passwd")
    with serving(dumps) as server:
        listing = page(server, "/")
        status, _, body = get(server, f"/event/{three['mem'].name}")

    assert ids_in(listing) == [three["cpu"].name, three["mem"].name, three["thread"].name]
    assert "unreadable event.json" in listing
    assert status == 403
    assert b"root:x:0" not in body


def test_a_symlinked_event_folder_is_not_followed(dumps: Path, tmp_path: Path) -> None:
    elsewhere = write_bundle(tmp_path / "elsewhere", rule="cpu", host="planted")
    day = dumps / "api" / elsewhere.parent.name
    day.mkdir(parents=True)
    (day / elsewhere.name).symlink_to(elsewhere)
    with serving(dumps) as server:
        status, _, body = get(server, f"/event/{elsewhere.name}")

    assert status in (403, 404)
    assert b"planted" not in body


FOREIGN = {
    "image-on-another-site": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    "fetch-from-another-port": {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
    "forced-navigation": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
}


@pytest.mark.parametrize("headers", FOREIGN.values(), ids=FOREIGN)
def test_a_request_another_sites_page_makes_is_refused_before_any_reading(
    dumps: Path, three: dict[str, Path], headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Such a page cannot read the reply, but each request costs decoding an event.
    with serving(dumps) as server:
        monkeypatch.setattr(Server, "site", _no_reading)
        status, _, body = get(server, f"/event/{three['cpu'].name}", headers=headers)

    assert status == 403
    assert b"another site" in body


def _no_reading(self: Server) -> site.Site:
    raise AssertionError("read the source for a refused request")


OWN = {
    "typed-url": {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},
    "own-page": {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"},
    "link-clicked-elsewhere": {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-User": "?1",
    },
    "no-fetch-metadata": {},
}


@pytest.mark.parametrize("headers", OWN.values(), ids=OWN)
def test_the_users_own_requests_are_answered(
    dumps: Path, three: dict[str, Path], headers: dict[str, str]
) -> None:
    with serving(dumps) as server:
        status, _, _ = get(server, f"/event/{three['cpu'].name}", headers=headers)

    assert status == 200


def test_a_symlinked_service_folder_is_not_listed(dumps: Path, tmp_path: Path) -> None:
    write_bundle(dumps, service="api", rule="cpu")
    private = write_bundle(tmp_path / "elsewhere", service="payroll", rule="mem")
    (dumps / "payroll").symlink_to(private.parent.parent)
    with serving(dumps) as server:
        listing = page(server, "/?service=payroll")

    assert private.name not in listing
    assert "No event matches." in listing


def test_a_request_for_another_host_name_is_refused(dumps: Path, three: object) -> None:
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own name as Host.
    with serving(dumps) as server:
        status, _, _ = get(server, "/", host="attacker.example:8642")
        port = server.server_address[1]
        allowed = [get(server, "/", host=h)[0] for h in (f"localhost:{port}", f"127.0.0.1:{port}")]

    assert status == 403
    assert allowed == [200, 200]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(Path(folder, name))
            found[str(Path(folder, name))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


REFUSED_BY_HTTP_SERVER = {
    "unknown-method": b"PROPFIND /<script> HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad-version": b"GET / HTTP/9<script>\r\nHost: 127.0.0.1\r\n\r\n",
    "uri-too-long": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    "too-many-headers": b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
}


@pytest.mark.parametrize("request_", REFUSED_BY_HTTP_SERVER.values(), ids=REFUSED_BY_HTTP_SERVER)
def test_requests_http_server_refuses_get_a_page_with_every_pages_headers(
    dumps: Path, request_: bytes
) -> None:
    import socket

    dumps.mkdir()
    with serving(dumps) as server, socket.create_connection(server.server_address[:2]) as conn:
        conn.settimeout(30)  # generous: the server closes right after its one reply
        conn.sendall(request_)
        reply = b""
        while block := conn.recv(65536):
            reply += block

    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0]
    assert status.split()[1] in (b"400", b"414", b"431", b"501"), status
    assert b"Content-Security-Policy: default-src 'none'" in head
    assert b"X-Content-Type-Options: nosniff" in head
    assert b"<script>" not in body
    assert body.count(b'class="error problem"') == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_request_smuggled_in_a_body_past_the_host_check_is_not_answered(
    dumps: Path, three: dict[str, Path], method: str
) -> None:
    # A rebound page can send a body but not a Host header: the body is a request
    # with the right Host. Answered, its reply would follow the refusal on the
    # same connection, for the page's next request to read.
    import socket

    with serving(dumps) as server:
        port = server.server_address[1]
        inner = f"GET /event/{three['cpu'].name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        outer = (
            f"{method} / HTTP/1.1\r\nHost: attacker.example:{port}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(inner)}\r\n\r\n{inner}"
        )
        with socket.create_connection(server.server_address[:2]) as conn:
            conn.settimeout(30)  # generous: the server closes right after its one reply
            conn.sendall(outer.encode())
            replies = b""
            while block := conn.recv(65536):
                replies += block

    assert replies.count(b"HTTP/1.1 ") == 1
    assert replies.startswith((b"HTTP/1.1 403", b"HTTP/1.1 405"))
    assert b"a-2" not in replies  # the cpu event's host


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_it_never_writes(dumps: Path, three: dict[str, Path], method: str) -> None:
    before = snapshot(dumps)
    with serving(dumps) as server:
        status, _, _ = get(server, f"/event/{three['cpu'].name}", method=method)
        for path in ("/", f"/event/{three['cpu'].name}", "/?rule=cpu"):
            get(server, path)

    assert status == 405
    assert snapshot(dumps) == before


# -- the verb --


def test_it_binds_to_loopback_on_8642_by_default() -> None:
    args = build_parser().parse_args(["serve"])

    assert (args.host, args.port) == ("127.0.0.1", 8642)


def test_a_bad_port_is_bad_usage_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "serve", "--port", "70000")

    assert result.code == 2
    assert len(result.err.strip().split("\n")) == 1
    assert "expected a port number" in result.err


def test_a_port_in_use_is_one_line(dumps: Path, three: object) -> None:
    with serving(dumps) as server:
        port = str(server.server_address[1])
        result = script("serve", "--from", str(dumps), "--port", port, env=clean_env())

    assert result.code == 1
    assert result.err.strip().split("\n") == [
        f"holmespy: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_each_request_to_s3_gets_its_own_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    source = S3Source("s3://dumps/prod", timeout=5)
    server = Server(("127.0.0.1", 0), source, 5, DEFAULT_MAX_SIZE)
    try:
        first, second = server.site().source, server.site().source
    finally:
        server.server_close()

    assert isinstance(first, S3Source)
    assert isinstance(second, S3Source)
    assert first.deadline is not second.deadline
    assert first.deadline is not source.deadline  # the one made at start never runs out
    assert first.store is source.store  # one client, one connection pool


def test_a_store_that_never_answers_is_a_one_line_504(tmp_path: Path) -> None:
    with silent_store() as port:
        env = clean_env(
            AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="AKIAFAKEACCESSKEY",
            AWS_SECRET_ACCESS_KEY="fake-secret-key",
            AWS_REGION="us-east-1",
            HOME=str(tmp_path),
        )
        with running_serve(["--from", "s3://dumps/prod", "--timeout", "2"], env) as url:
            first = fetch(url)
            second = fetch(url)

    for status, body in (first, second):
        assert status == 504
        message = body.split('<p class="error problem">', 1)[1].split("</p>", 1)[0]
        assert message.startswith(f"http://127.0.0.1:{port} did not answer within 2s (waiting")
        assert message.endswith("give it longer with --timeout SECONDS")


def test_too_many_query_fields_are_a_400_not_a_crash(dumps: Path, three: object) -> None:
    query = "&".join(f"f{n}=1" for n in range(50))
    with serving(dumps) as server:
        status, _, body = get(server, f"/?{query}")
        after = get(server, "/")[0]

    assert status == 400
    assert b"more than 20 fields" in body
    assert after == 200


def test_event_json_itself_can_be_downloaded(dumps: Path, three: dict[str, Path]) -> None:
    event_id = three["cpu"].name
    with serving(dumps) as server:
        status, headers, body = get(server, f"/event/{event_id}/file/event.json")

    assert status == 200
    assert body == (three["cpu"] / "event.json").read_bytes()
    assert headers["content-disposition"] == 'attachment; filename="event.json"'


def test_a_bug_in_a_page_is_a_one_line_500_and_the_server_goes_on(
    dumps: Path,
    three: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from holmespy.cli import pages

    def broken(*args: object, **kwargs: object) -> str:
        raise KeyError("oops")

    monkeypatch.setattr(pages, "event_page", broken)
    with serving(dumps) as server:
        status, _, body = get(server, f"/event/{three['cpu'].name}")
        after = get(server, "/")[0]

    assert status == 500
    assert b"internal error: KeyError: &#x27;oops&#x27;" in body
    assert after == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().split("\n") == [
        f"holmespy: GET /event/{three['cpu'].name}: internal error: KeyError: 'oops'"
    ]


def test_a_client_that_never_sends_does_not_hold_a_thread(
    dumps: Path, three: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from holmespy.cli.serve import Handler

    monkeypatch.setattr(Handler, "timeout", 0.5)
    with serving(dumps) as server, socket.create_connection(server.server_address[:2]) as conn:
        conn.settimeout(30)  # generous: the server must close first
        assert conn.recv(1) == b""  # closed by the server, having sent nothing


def test_slowloris_connections_cannot_pin_more_than_max_connections_threads(
    dumps: Path, three: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setattr(Server, "max_connections", 3)
    with serving(dumps) as server:
        address = server.server_address[:2]
        before = set(threading.enumerate())
        silent = [socket.create_connection(address) for _ in range(3)]
        try:
            with socket.create_connection(address) as extra:
                extra.settimeout(30)  # the silent ones hold theirs for 60 s: this is sooner
                assert extra.recv(1) == b""  # closed unanswered, no thread started for it
            started = set(threading.enumerate()) - before
            assert len([t for t in started if "process_request" in t.name]) == 3
        finally:
            for conn in silent:
                conn.close()
        deadline = time.monotonic() + 30  # the slots come back once the server sees them close
        while (status := _status_or_none(server, "/")) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200


def _status_or_none(server: Server, path: str) -> int | None:
    try:
        return get(server, path)[0]
    except (ConnectionError, http.client.HTTPException):
        return None


def test_many_event_pages_at_once_decode_at_most_max_readers_at_a_time(
    dumps: Path, three: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Six tabs of a big event would each hold its profiles decoded (hundreds of MB).
    from holmespy.cli import serve

    inside, asked, lock = [0], [0], threading.Lock()
    release = threading.Event()

    class CountedSlots(threading.BoundedSemaphore):
        def __enter__(self) -> bool:
            with lock:
                asked[0] += 1
            return super().__enter__()

    def slow_event(self: site.Site, event_id: str, *, parts: bool = True) -> site.EventView:
        with lock:
            inside[0] += 1
        assert release.wait(30)
        with lock:
            inside[0] -= 1
        raise serve.NotFound("released")

    monkeypatch.setattr(site.Site, "event", slow_event)
    with serving(dumps) as server:
        server.readers = CountedSlots(serve.MAX_READERS)
        path = f"/event/{three['cpu'].name}"
        clients = [threading.Thread(target=get, args=(server, path)) for _ in range(6)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while (asked[0], inside[0]) != (6, 4) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (asked[0], inside[0]) == (6, serve.MAX_READERS)  # two wait their turn
        release.set()
        for client in clients:
            client.join(30)
    assert inside[0] == 0


def test_beyond_loopback_any_host_name_is_answered() -> None:
    server = Server(("0.0.0.0", 0), LocalSource(Path("/")), 30, DEFAULT_MAX_SIZE)
    try:
        assert server.allowed_hosts() is None
    finally:
        server.server_close()


def test_a_gcheap_event_shows_what_grew_between_its_two_heap_profiles(dumps: Path) -> None:
    folder = write_bundle(
        dumps,
        rule="gcheap",
        files={
            "heap.pb.gz": pprof(heap_profile({("main", "cache_put"): 2 << 20})),
            "heap-2.pb.gz": pprof(heap_profile({("main", "cache_put"): 6 << 20})),
        },
    )
    with serving(dumps) as server:
        html = page(server, f"/event/{folder.name}")

    assert "heap.pb.gz → heap-2.pb.gz: inuse_space by allocation site" in html
    assert "2.0 MiB      6.0 MiB     +4.0 MiB  cache_put" in html


def test_thread_groups_come_from_threads_json_and_a_damaged_one_shows_the_text(dumps: Path) -> None:
    from holmespy.profilers.threads import dump_threads

    text, data = dump_threads()
    assert data is not None
    good = write_bundle(
        dumps,
        rule="thread",
        files={"threads.txt": b"", "threads.json": json.dumps(data.to_json()).encode()},
    )
    damaged = write_bundle(
        dumps, rule="thread", files={"threads.txt": text.encode(), "threads.json": b"[1"}
    )
    with serving(dumps) as server:
        from_data = page(server, f"/event/{good.name}")
        from_text = page(server, f"/event/{damaged.name}")

    count = len(data.threads)
    # threads.txt is empty in the first bundle: its groups can only have come from the data.
    assert f"threads.txt: {count} thread" in from_data
    assert "threads.json: not JSON" in from_text
    assert "threads.txt is shown as written" in from_text
    assert "threads.txt: as written</h2>" in from_text
    assert "<pre>holmespy thread dump: pid " in from_text
