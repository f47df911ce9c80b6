"""`holmespy flame`: a flame graph page checked in a real browser, and the exports.

The page is opened in headless Chromium (Debian's `chromium`, installed by
scripts/install-system-deps), which runs its script and dumps the DOM it
built: the frames must be there as elements, with widths in proportion to
their time, and the search and zoom given in the URL must have applied.
"""

from __future__ import annotations

import json
import os
import stat
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from test_cli_support import chromium_dom, clean_env, cli, cpu_profile, pprof, script

from holmespy.formats.collapsed import to_collapsed
from holmespy.formats.pprof import read_pprof

# Four seconds: render_report 2.5 s itself plus 0.5 s in escape; parse 1 s.
STACKS = {
    ("main", "serve", "render_report"): 2_500_000_000,
    ("main", "serve", "render_report", "escape"): 500_000_000,
    ("main", "serve", "parse"): 1_000_000_000,
}
HOSTILE = "</script><script>document.title='pwned'</script>"


@pytest.fixture
def cpu_file(tmp_path: Path) -> Path:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(pprof(cpu_profile(STACKS)))
    return path


class Frames(HTMLParser):
    """The frame elements of a dumped page: text, classes and inline style of each."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, str]] = []
        self.title = ""
        self.matched = ""
        self._into: dict[str, str] | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "div" and "frame" in attributes.get("class", "").split():
            self._into = {**attributes, "text": ""}
            self.frames.append(self._into)
        elif tag == "title":
            self._in = "title"
        elif attributes.get("id") == "matched":
            self._in = "matched"

    def handle_endtag(self, tag: str) -> None:
        self._into = None
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self._into["text"] += data
        elif self._in == "title":
            self.title += data
        elif self._in == "matched":
            self.matched += data

    def named(self, text: str) -> dict[str, str]:
        (found,) = [f for f in self.frames if f["text"] == text]
        return found


def width(frame: dict[str, str]) -> float:
    style = dict(part.split(":", 1) for part in frame["style"].replace(" ", "").split(";") if part)
    return float(style["width"].rstrip("%"))


def render(page: Path, tmp_path: Path, fragment: str = "") -> Frames:
    """Open `page` in headless Chromium and parse the DOM its script built."""
    html = chromium_dom(page.as_uri() + fragment, tmp_path / "chromium-profile")
    parser = Frames()
    parser.feed(html)
    return parser


def test_the_page_renders_every_frame_in_proportion(capsys, tmp_path, cpu_file):
    page = tmp_path / "flame.html"
    result = cli(capsys, "flame", str(cpu_file), "-o", str(page))
    assert result.code == 0, result.err

    dom = render(page, tmp_path)

    names = {f["text"] for f in dom.frames}
    assert names == {
        "all",
        "thread:MainThread",
        "main",
        "serve",
        "render_report",
        "parse",
        "escape",
    }
    assert width(dom.named("all")) == 100
    assert width(dom.named("render_report")) == pytest.approx(75, abs=0.01)
    assert width(dom.named("parse")) == pytest.approx(25, abs=0.01)
    assert width(dom.named("escape")) == pytest.approx(12.5, abs=0.01)
    assert "3.00 s (75.00%)" in dom.named("render_report")["title"]
    assert "/srv/app/handlers.py" in dom.named("render_report")["title"]


def test_search_and_zoom_from_the_url_apply(capsys, tmp_path, cpu_file):
    page = tmp_path / "flame.html"
    cli(capsys, "flame", str(cpu_file), "-o", str(page))
    path = ";".join(
        ["thread:MainThread"]
        + [f"{name} (/srv/app/handlers.py)" for name in ("main", "serve", "render_report")]
    )

    searched = render(page, tmp_path, "#search=" + quote("REPORT"))
    zoomed = render(page, tmp_path, "#zoom=" + quote(path))

    assert [f["text"] for f in searched.frames if "match" in f["class"].split()] == [
        "render_report"
    ]
    assert searched.matched == "matched 3.00 s (75.00%)"
    assert width(zoomed.named("render_report")) == 100
    assert width(zoomed.named("escape")) == pytest.approx(100 / 6, abs=0.01)
    assert "ancestor" in zoomed.named("serve")["class"].split()
    assert not [f for f in zoomed.frames if f["text"] == "parse"]


def test_a_frame_name_cannot_inject_markup(capsys, tmp_path):
    path = tmp_path / "evil.pb.gz"
    path.write_bytes(pprof(cpu_profile({("main", HOSTILE): 1_000_000_000})))
    page = tmp_path / "evil.html"
    cli(capsys, "flame", str(path), "-o", str(page))

    dom = render(page, tmp_path)

    assert dom.title == "evil.pb.gz flame graph"
    assert HOSTILE in {f["text"] for f in dom.frames}


def test_collapsed_export_is_the_profile_per_function(capsys, tmp_path, cpu_file):
    out = tmp_path / "cpu.folded"
    assert cli(capsys, "flame", str(cpu_file), "-o", str(out)).code == 0

    lines = out.read_text().splitlines()

    assert lines == [
        "thread:MainThread;main (/srv/app/handlers.py);serve (/srv/app/handlers.py);"
        "parse (/srv/app/handlers.py) 1000000000",
        "thread:MainThread;main (/srv/app/handlers.py);serve (/srv/app/handlers.py);"
        "render_report (/srv/app/handlers.py) 2500000000",
        "thread:MainThread;main (/srv/app/handlers.py);serve (/srv/app/handlers.py);"
        "render_report (/srv/app/handlers.py);escape (/srv/app/handlers.py) 500000000",
    ]


def test_lines_keeps_one_frame_per_line(capsys, cpu_file):
    result = cli(capsys, "flame", str(cpu_file), "-o", "-", "-f", "collapsed", "--lines")

    assert result.out == to_collapsed(read_pprof(cpu_file))
    assert "handlers.py:12" in result.out


def test_speedscope_export(capsys, tmp_path, cpu_file):
    out = tmp_path / "cpu.json"
    assert cli(capsys, "flame", str(cpu_file), "-o", str(out)).code == 0

    data = json.loads(out.read_text())

    assert data["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    (profile,) = data["profiles"]
    assert profile["unit"] == "nanoseconds"
    assert profile["endValue"] == 4_000_000_000
    names = [f["name"] for f in data["shared"]["frames"]]
    assert sorted(names) == ["escape", "main", "parse", "render_report", "serve"]


def test_the_format_must_be_known(capsys, tmp_path, cpu_file):
    result = cli(capsys, "flame", str(cpu_file), "-o", str(tmp_path / "graph.svg"))

    assert result.code == 2
    assert "cannot tell the format from the name; add -f html|collapsed|speedscope" in result.err
    assert not (tmp_path / "graph.svg").exists()


def test_a_corrupt_profile_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.pb.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00\x00\x00")

    result = cli(capsys, "flame", str(bad), "-o", str(tmp_path / "out.html"))

    assert result.code == 1
    assert "corrupt pprof profile" in result.err
    assert not (tmp_path / "out.html").exists()


def test_the_console_script_writes_a_page_with_no_network_reference(tmp_path, cpu_file):
    page = tmp_path / "page.html"

    result = script("flame", str(cpu_file), "-o", str(page), env=clean_env())

    assert result.code == 0, result.err
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "")
    assert "https://" not in text
    assert "<script src" not in text
    assert "<link" not in text


def test_out_in_new_folders_is_private_under_umask_000(capsys, tmp_path, cpu_file):
    out = tmp_path / "reports" / "today" / "cpu.html"
    old = os.umask(0)
    try:
        result = cli(capsys, "flame", str(cpu_file), "-o", str(out))
    finally:
        os.umask(old)

    assert result.code == 0, result.err
    modes = [stat.S_IMODE(p.stat().st_mode) for p in (out.parent.parent, out.parent, out)]
    assert modes == [0o700, 0o700, 0o600]


def test_a_link_planted_at_out_is_replaced_not_written_through(capsys, tmp_path, cpu_file):
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    out = tmp_path / "shared" / "cpu.folded"
    out.parent.mkdir()
    out.symlink_to(victim)

    result = cli(capsys, "flame", str(cpu_file), "-o", str(out))

    assert result.code == 0, result.err
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink()
    assert "render_report" in out.read_text()
