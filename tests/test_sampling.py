"""What one tick measures: /proc parsing, CPU % of usable cores, RSS %, GC samples."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import pytest

from holmespy.gcwatch import GCWatch
from holmespy.limits import Limits
from holmespy.procstat import ProcStatReader, parse_stat
from holmespy.sampling import MAX_TASK_STRIDE, Sampler

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def stat_line(comm: str, utime: int, stime: int, threads: int, rss_pages: int) -> bytes:
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0"]  # fields 3-13
    fields += [str(utime), str(stime), "0", "0", "20", "0", str(threads), "0", "100"]  # 14-22
    fields += ["1000000", str(rss_pages)]  # 23 vsize, 24 rss
    fields += ["0"] * 28
    return f"4242 ({comm}) {' '.join(fields)}\n".encode()


def test_parse_stat_reads_cpu_threads_and_rss() -> None:
    sample = parse_stat(stat_line("python3", 250, 50, 7, 1000))
    assert sample.cpu_seconds == pytest.approx(300 / TICK)
    assert sample.threads == 7
    assert sample.rss_bytes == 1000 * PAGE


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    sample = parse_stat(stat_line("my (evil) proc) 1 2", 1, 1, 3, 10))
    assert sample.threads == 3


def test_reader_matches_the_real_process() -> None:
    reader = ProcStatReader()
    try:
        sample = reader.read()
        assert sample.threads == threading.active_count() or sample.threads >= 1
        assert sample.rss_bytes > 1 << 20
        assert reader.read().cpu_seconds >= sample.cpu_seconds  # the file is read again
    finally:
        reader.close()


class FakeStat(ProcStatReader):
    """A stat file we write ourselves, so CPU time advances exactly as the test says."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.file = path
        self.set(cpu_ticks=0, threads=4, rss_pages=0)

    def set(self, cpu_ticks: int, threads: int, rss_pages: int) -> None:
        self.file.write_bytes(stat_line("fake", cpu_ticks, 0, threads, rss_pages))


def test_cpu_percent_is_of_usable_cores(tmp_path: Path) -> None:
    clock = iter([100.0, 102.0])
    stat = FakeStat(tmp_path / "stat")
    limits = Limits(cpu_cores=0.5, cpu_source="test", mem_bytes=1000 * PAGE, mem_source="test")
    sampler = Sampler(limits, stat=stat, count_tasks=False, monotonic=lambda: next(clock))
    first = sampler.sample()
    assert first.cpu is None  # no interval yet
    assert first.mem == 0.0
    stat.set(cpu_ticks=TICK, threads=9, rss_pages=250)  # 1 s of CPU in 2 s on half a core
    second = sampler.sample()
    assert second.cpu == pytest.approx(100.0)
    assert second.mem == pytest.approx(25.0)
    assert second.threads == 9
    assert second.tasks is None


def test_expensive_task_counting_is_spread_over_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("holmespy.loops.tasks_supported", lambda: True)
    monkeypatch.setattr("holmespy.loops.count_tasks", lambda: 10_000)
    costs = iter([0.0, 0.004] * 20)  # perf_counter before/after each count: 4 ms
    limits = Limits(cpu_cores=1, cpu_source="t", mem_bytes=1 << 30, mem_source="t")
    sampler = Sampler(limits, stat=FakeStat(tmp_path / "stat"), perf_counter=lambda: next(costs))
    counted = [sampler.sample().tasks for _ in range(9)]
    assert counted == [10_000, None, None, None, 10_000, None, None, None, 10_000]
    assert sampler.task_stride == 4 <= MAX_TASK_STRIDE


def test_gc_watch_records_rss_after_each_full_collection_only() -> None:
    watch = GCWatch()
    watch.install()
    try:
        gc.collect(0)
        assert watch.drain() == []
        gc.collect()
        gc.collect()
        samples = watch.drain()
    finally:
        watch.uninstall()
    assert len(samples) == 2
    assert all(rss > 1 << 20 for _, rss in samples)
    assert watch._on_gc not in gc.callbacks


def test_gc_watch_callback_never_raises_into_the_collecting_thread(tmp_path: Path) -> None:
    watch = GCWatch(str(tmp_path / "no-such-statm"))  # the file cannot be read
    watch.install()
    try:
        gc.collect()
    finally:
        watch.uninstall()
    assert watch.failures == 1


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_reading_keeps_no_descriptor_open_between_reads() -> None:
    # A host's open-fd metric or leak check must not see holmespy; a host that
    # closes every descriptor it does not know cannot pull one from under it.
    before = open_descriptors()
    reader = ProcStatReader()
    reader.read()
    watch = GCWatch()
    watch.install()
    try:
        gc.collect()
        assert len(watch.drain()) == 1
        assert open_descriptors() - before == set()
    finally:
        watch.uninstall()
