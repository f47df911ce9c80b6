"""Real failing programs, their profiles read by `go tool pprof`: the guilty code comes first."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLES, Bundle, Run, RunProgram, go_pprof_top

pytestmark = pytest.mark.timeout(120)


def first_bundle(run: Run, rule: str) -> Bundle:
    bundles = run.bundles(rule)
    assert bundles, f"no {rule} event:\n{run.proc.stdout}\n{run.proc.stderr}"
    return bundles[0]


def top_function(rows: list, skip: tuple[str, ...] = ()) -> str:
    return next(r.function for r in rows if not any(s in r.function for s in skip))


def test_hot_loop_cpu_profile_names_the_hot_function(run_program: RunProgram) -> None:
    bundle = first_bundle(run_program(EXAMPLES / "cpu_spike.py"), "cpu")
    rows = go_pprof_top(bundle.path / "cpu.pb.gz")
    assert rows[0].function.endswith("checksum"), rows[:5]
    assert rows[0].flat_percent > 50
    assert bundle.event["captures"]["cpu"]["engine"] in ("pyspy", "sampler")


def test_blocked_loop_cpu_profile_names_the_blocking_handler(run_program: RunProgram) -> None:
    bundle = first_bundle(run_program(EXAMPLES / "blocked_loop.py"), "cpu")
    rows = go_pprof_top(bundle.path / "cpu.pb.gz")
    # The hot frames are render_report and the builtin sum it calls.
    hottest = top_function(rows, skip=("sum",))
    assert hottest.endswith("render_report"), rows[:5]


def test_steady_leak_heap_profile_names_the_allocation_site(run_program: RunProgram) -> None:
    bundle = first_bundle(run_program(EXAMPLES / "mem_leak.py"), "mem")
    rows = go_pprof_top(bundle.path / "heap.pb.gz", sample_index="inuse_space")
    assert rows[0].function.endswith("remember"), rows[:5]
    assert rows[0].flat > 10e6  # megabytes leaked inside the window
    assert "bytes" in bundle.text("heap-types.txt")


def test_prefork_workers_each_profile_their_own_spin(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "prefork_spin.py")
    bundles = run.bundles("cpu")
    workers = {int(w) for w in run.proc.stdout.split("workers [")[1].split("]")[0].split(",")}
    assert {b.event["pid"] for b in bundles} == workers, run.proc.stdout + run.proc.stderr
    for bundle in bundles:
        rows = go_pprof_top(bundle.path / "cpu.pb.gz")
        # worker_spin's own frames (its generator expression included) hold most samples.
        spin = [r for r in rows if "worker_spin" in r.function]
        assert rows[0] in spin, (bundle.event["captures"]["cpu"], rows[:5])
        assert sum(r.flat_percent for r in spin) > 50, (bundle.event["captures"]["cpu"], rows[:5])


def test_gcheap_takes_two_heap_profiles_in_a_row(run_program: RunProgram) -> None:
    bundle = first_bundle(run_program(EXAMPLES / "gcheap_growth.py"), "gcheap")
    files = {f["name"] for f in bundle.event["files"]}
    assert {"heap.pb.gz", "heap-2.pb.gz", "heap-types.txt", "threads.txt"} <= files
    for name in ("heap.pb.gz", "heap-2.pb.gz"):
        rows = go_pprof_top(bundle.path / name, sample_index="inuse_space")
        assert top_function(rows).endswith("open_session"), (name, rows[:5])


def test_cpu_max_guard_blocks_the_capture(run_program: RunProgram) -> None:
    # The rule's min (10 %) is above the guard (5 %): every sample that could fire is guarded.
    program = (EXAMPLES / "cpu_spike.py").read_text()
    program += "\nprint('skipped:', holmespy.status().skipped)\n"
    run = run_program(program, HOLMES_CPU_MAX="5")
    assert run.bundles() == []
    assert "skipped: {'cpu': {'cpu-max': " in run.proc.stdout, run.proc.stdout
