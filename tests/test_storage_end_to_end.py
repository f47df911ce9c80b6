"""Real programs with HOLMES_STORAGE set: their dumps end up in SeaweedFS, and none is lost.

These run the example programs in subprocesses, configured only by HOLMES_*
and AWS_* variables, as a user would run them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.s3_server import SeaweedFS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def test_a_thread_leak_dump_is_shipped_before_the_program_exits(
    run_program, aws_env: SeaweedFS, bucket: str
) -> None:
    run = run_program(
        ROOT / "examples" / "thread_leak.py",
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
        # On a loaded machine the cpu rule could fire near the end: its window
        # would be cut at exit, and its upload left to the next start by the
        # bounded exit (HOLMES_EXIT_SECONDS). This test is about the thread event.
        HOLMES_CPU="off",
    )
    assert run.bundles() == []  # shipped, so gone from the spool
    client = aws_env.client()
    keys = aws_env.keys(bucket)
    events = {}  # on a loaded machine the default cpu rule may fire too: every event counts
    for event_key in [k for k in keys if k.endswith("/event.json")]:
        assert event_key.startswith("prod/leaky/")
        events[event_key.rsplit("/", 1)[0]] = json.loads(
            client.get_object(Bucket=bucket, Key=event_key)["Body"].read()
        )
    shipped = [f"{folder}/event.json" for folder in events] + [
        f"{folder}/{f['name']}" for folder, event in events.items() for f in event["files"]
    ]
    assert sorted(shipped) == keys
    for folder, event in events.items():
        for listed in event["files"]:
            body = client.get_object(Bucket=bucket, Key=f"{folder}/{listed['name']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == listed["sha256"]
    [thread_event] = [folder for folder, event in events.items() if event["rule"] == "thread"]
    threads = client.get_object(Bucket=bucket, Key=f"{thread_event}/threads.txt")["Body"].read()
    assert b"leaked-" in threads


def test_a_dump_kept_by_a_wrong_setting_is_shipped_by_the_next_run(
    run_program, aws_env: SeaweedFS
) -> None:
    bucket = f"later-{hashlib.sha256(str(aws_env.root).encode()).hexdigest()[:8]}"
    first = run_program(
        ROOT / "examples" / "thread_leak.py",
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
    )
    [kept] = first.bundles(rule="thread")  # no such bucket yet: the host ran on, dumps stayed
    assert "thread leak done" in first.proc.stdout
    aws_env.bucket(bucket)
    second = run_program(
        "import holmespy\nholmespy.start()\n",  # starts, exits: the flush at exit ships it
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
        # The exit budget (0.5 s by default) is all holmespy may add to an exit;
        # importing boto3 alone can take that long, so this run grants more.
        HOLMES_EXIT_SECONDS="10",
    )
    assert second.bundles() == []
    day, event_id = kept.path.parent.name, kept.path.name
    assert f"prod/leaky/{day}/{event_id}/event.json" in aws_env.keys(bucket)


def test_on_stored_tells_the_host_where_each_stored_event_is(
    aws_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    import threading

    import holmespy
    from holmespy import Config, Rule

    told: list[holmespy.StoredEvent] = []
    arrived = threading.Event()

    def remember(stored: holmespy.StoredEvent) -> None:
        told.append(stored)
        arrived.set()

    fire_at_once = Rule(min=0, diff=0, abs=0, cooldown=3600)
    quiet = {"cpu": None, "mem": None, "task": None, "gcheap": None}
    config = Config(
        interval=0.01,
        dump_path=tmp_path,
        service="told",
        storage=f"s3://{bucket}/hooks",
        thread=fire_at_once,
        **quiet,
    )
    holmespy.start(config)
    try:
        holmespy.on_stored(remember)
        assert arrived.wait(30), holmespy.status()
    finally:
        holmespy.stop()
    [stored] = told
    assert stored.event["rule"] == "thread"
    assert stored.location.startswith(f"s3://{bucket}/hooks/told/")
    assert {f.name for f in stored.files} >= {"event.json", "threads.txt"}
    keys = aws_env.keys(bucket, "hooks/told/")
    assert sorted(f.key for f in stored.files) == sorted(k.removeprefix("hooks/") for k in keys)
