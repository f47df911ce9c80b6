"""`holmespy ls` over a local dump folder: order, filters, the table and --json."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from test_cli_support import clean_env, cli, script, write_bundle


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    """Five events of two services over three days, on two hosts, aged from now
    (not from when the module was imported: the ages are asserted)."""
    root = tmp_path / "dumps"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    write_bundle(root, service="checkout", rule="thread", when=now - dt.timedelta(days=2))
    write_bundle(root, service="checkout", rule="cpu", when=now - dt.timedelta(hours=5))
    write_bundle(root, service="search", rule="mem", when=now - dt.timedelta(hours=3))
    write_bundle(
        root, service="search", rule="thread", when=now - dt.timedelta(minutes=20), host="db-7"
    )
    write_bundle(root, service="checkout", rule="task", when=now - dt.timedelta(minutes=2))
    return root


def ids(text: str) -> list[str]:
    """The EVENT ID column of a table."""
    return [line.split()[-1] for line in text.splitlines()[1:]]


def rules(text: str) -> list[str]:
    return [event_id.split("-")[1] for event_id in ids(text)]


def test_lists_every_event_newest_first_with_time_age_service_and_rule(capsys, dumps):
    result = cli(capsys, "ls", "--from", str(dumps))

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "AGE", "SERVICE", "RULE", "EVENT", "ID"]
    assert rules(result.out) == ["task", "thread", "mem", "cpu", "thread"]
    assert ids(result.out) == sorted(ids(result.out), reverse=True)
    newest = lines[1].split()
    assert newest[2:4] == ["2m", "checkout"]
    # Every row's id starts under the header's EVENT ID.
    column = lines[0].index("EVENT ID")
    assert {line.index(line.split()[-1]) for line in lines[1:]} == {column}


def test_filters_by_service_rule_and_time(capsys, dumps):
    assert rules(cli(capsys, "ls", "--from", str(dumps), "--service", "search").out) == [
        "thread",
        "mem",
    ]
    by_rule = cli(capsys, "ls", "--from", str(dumps), "--rule", "thread", "--rule", "cpu").out
    assert rules(by_rule) == ["thread", "cpu", "thread"]
    assert rules(cli(capsys, "ls", "--from", str(dumps), "--since", "4h").out) == [
        "task",
        "thread",
        "mem",
    ]
    window = cli(capsys, "ls", "--from", str(dumps), "--since", "1d", "--until", "1h").out
    assert rules(window) == ["mem", "cpu"]
    # A UTC date means its midnight: the event of two days ago is the one left out.
    since_day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    by_day = cli(capsys, "ls", "--from", str(dumps), "--since", since_day).out
    assert rules(by_day) == ["task", "thread", "mem", "cpu"]


def test_host_filter_reads_the_events(capsys, dumps):
    result = cli(capsys, "ls", "--from", str(dumps), "--host", "db-7")

    assert result.code == 0
    assert rules(result.out) == ["thread"]


def test_limit_keeps_the_newest(capsys, dumps):
    assert rules(cli(capsys, "ls", "--from", str(dumps), "-n", "2").out) == ["task", "thread"]


def test_long_table_adds_value_host_pid_and_files(capsys, tmp_path):
    root = tmp_path / "dumps"
    write_bundle(root, rule="thread", value=90, files={"threads.txt": b"x"}, host="web-3")

    result = cli(capsys, "ls", "--from", str(root), "-l")

    header, row = result.out.splitlines()
    assert header.split()[5:9] == ["VALUE", "HOST", "PID", "FILES"]
    assert "90 threads" in row
    assert "web-3" in row
    assert "threads.txt" in row


def test_json_is_an_array_of_the_event_json_objects(capsys, dumps):
    result = cli(capsys, "ls", "--from", str(dumps), "--json", "--service", "checkout")

    events = json.loads(result.out)
    on_disk = {
        e["id"]: e
        for e in (json.loads(p.read_text()) for p in dumps.glob("checkout/*/*/event.json"))
    }
    assert [e["id"] for e in events] == sorted(on_disk, reverse=True)
    assert events == [on_disk[e["id"]] for e in events]


def test_a_corrupt_event_json_is_reported_and_left_out_of_json(capsys, dumps):
    broken = next(dumps.glob("search/*/*mem*/event.json"))
    broken.write_text('{"id": "trunc')

    result = cli(capsys, "ls", "--from", str(dumps), "--json")

    assert result.code == 0
    assert len(json.loads(result.out)) == 4
    assert f"{broken.parent.name}: corrupt event.json: not JSON" in result.err
    assert "Traceback" not in result.err
    table = cli(capsys, "ls", "--from", str(dumps), "-l")
    assert "(corrupt event.json)" in table.out


def test_foreign_and_half_written_folders_are_skipped(capsys, dumps):
    day = next((dumps / "checkout").iterdir())
    (day / ".tmp-123-20990101T000000.000Z-cpu-0000000000").mkdir()
    (day / "notes").mkdir()
    (dumps / "checkout" / "not-a-day").mkdir()
    (dumps / "README.txt").write_text("hello")

    assert len(ids(cli(capsys, "ls", "--from", str(dumps)).out)) == 5


def test_an_empty_folder_lists_nothing_and_says_so(capsys, tmp_path):
    result = cli(capsys, "ls", "--from", str(tmp_path))

    assert result.code == 0
    assert result.out == ""
    assert result.err.strip() == f"holmespy: no events in {tmp_path} match"


def test_source_defaults_to_holmes_dump_path(capsys, dumps, monkeypatch):
    monkeypatch.delenv("HOLMES_STORAGE", raising=False)
    monkeypatch.setenv("HOLMES_DUMP_PATH", str(dumps))

    assert len(ids(cli(capsys, "ls").out)) == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday': expected an age such as 30m"),
        (["--since", "1h", "--until", "2h"], "--since 1h is not before --until 2h"),
        (["--service", "../etc"], "--service '../etc': not a service name"),
        (["--rule", "disk"], "argument --rule: invalid choice: 'disk'"),
        (["-n", "0"], "argument -n/--limit: '0' must be at least 1"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, dumps, argv, message):
    result = cli(capsys, "ls", "--from", str(dumps), *argv)

    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_missing_folder_is_exit_1(capsys, tmp_path):
    result = cli(capsys, "ls", "--from", str(tmp_path / "nope"))

    assert result.code == 1
    assert result.err.strip() == (
        f"holmespy: {tmp_path / 'nope'}: no such dump folder (use --from, or set HOLMES_DUMP_PATH)"
    )


def test_the_console_script_lists_the_same_events(dumps):
    result = script("ls", "--from", str(dumps), "--json", env=clean_env())

    assert result.code == 0, result.err
    assert len(json.loads(result.out)) == 5
    piped = script("ls", "--from", str(dumps), env=clean_env())
    assert rules(piped.out) == ["task", "thread", "mem", "cpu", "thread"]


def test_a_service_folder_that_is_a_link_out_of_the_source_lists_nothing(capsys, tmp_path):
    # Anyone who can write the dump folder can plant `payroll -> /their/choice`;
    # `--service payroll` must not list (and so leak the names of) what is there.
    root = tmp_path / "dumps"
    write_bundle(root, service="checkout", rule="cpu")
    private = write_bundle(tmp_path / "elsewhere", service="payroll", rule="mem")
    (root / "payroll").symlink_to(private.parent.parent)

    everything = cli(capsys, "ls", "--from", str(root))
    linked = cli(capsys, "ls", "--from", str(root), "--service", "payroll")

    assert private.name not in everything.out
    assert private.name not in linked.out + linked.err
    assert "no events" in linked.err


@pytest.mark.parametrize("planted", ["link", "pipe"])
def test_an_event_json_planted_as_a_link_or_pipe_hides_no_other_event(capsys, tmp_path, planted):
    root = tmp_path / "dumps"
    good = write_bundle(root, rule="cpu", host="web-3")
    bad = write_bundle(root, rule="mem", host="web-3")
    (bad / "event.json").unlink()
    if planted == "link":
        (bad / "event.json").symlink_to("/etc/passwd")
    else:
        os.mkfifo(bad / "event.json")

    long = cli(capsys, "ls", "--from", str(root), "-l")
    by_host = cli(capsys, "ls", "--from", str(root), "--host", "web-3")

    assert long.code == 0, long.err
    assert good.name in long.out
    assert bad.name in long.out  # listed, its columns empty
    assert "refused 'event.json'" in long.err
    assert by_host.code == 0, by_host.err
    assert ids(by_host.out) == [good.name]


def test_a_service_folder_another_user_keeps_closed_hides_no_other_service(
    capsys, tmp_path, monkeypatch
):
    # Tests run as root, whom no mode stops: the refusal a non-root reader meets
    # for another user's 0700 folder is injected where the folder is opened.
    from holmespy import safefs

    root = tmp_path / "dumps"
    good = write_bundle(root, service="checkout", rule="cpu")
    write_bundle(root, service="theirs", rule="mem")
    descend = safefs.descend

    def closed(dir_fd, parts):
        if parts[:1] == ["theirs"]:
            raise PermissionError(13, "Permission denied")
        return descend(dir_fd, parts)

    monkeypatch.setattr(safefs, "descend", closed)
    result = cli(capsys, "ls", "--from", str(root))

    assert result.code == 0, result.err
    assert ids(result.out) == [good.name]
    assert f"skipped {root}/theirs: Permission denied" in result.err
