"""detect_limits() against small fake /proc + cgroup trees, one per kind of host."""

from __future__ import annotations

from pathlib import Path

import pytest

from holmespy.limits import Limits, detect_limits

GIB = 2**30
MEMINFO = "MemTotal:        8388608 kB\nMemFree:         1024 kB\n"  # 8 GiB host
HOST_MEM = 8 * GIB

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


def make_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write each relative path with its contents under tmp_path; return tmp_path."""
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def detect(tree: Path, affinity_cores: int = 8, **overrides: float) -> Limits:
    return detect_limits(
        proc_root=tree / "proc", root=tree, affinity_cores=affinity_cores, **overrides
    )


def test_v2_quota_and_memory_max_are_the_limits(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/app.slice/web.service\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/app.slice/web.service/cpu.max": "150000 100000\n",
            "sys/fs/cgroup/app.slice/web.service/memory.max": f"{GIB}\n",
        },
    )
    limits = detect(tree)
    assert limits == Limits(1.5, "cgroup v2 cpu.max (150000/100000)", GIB, "cgroup v2 memory.max")


def test_v2_max_means_unlimited_so_affinity_and_host_memory_apply(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/app\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/app/cpu.max": "max 100000\n",
            "sys/fs/cgroup/app/memory.max": "max\n",
        },
    )
    limits = detect(tree, affinity_cores=4)
    assert limits == Limits(4.0, "CPU affinity (4 cores)", HOST_MEM, "host MemTotal")


def test_v2_parent_with_tighter_limit_binds_the_child(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/parent/child\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/parent/memory.max": f"{GIB}\n",
            "sys/fs/cgroup/parent/cpu.max": "50000 100000\n",
            "sys/fs/cgroup/parent/child/memory.max": f"{2 * GIB}\n",
            "sys/fs/cgroup/parent/child/cpu.max": "max 100000\n",
        },
    )
    limits = detect(tree)
    assert (limits.mem_bytes, limits.cpu_cores) == (GIB, 0.5)


def test_v1_cfs_quota_and_memory_limit_in_bytes_are_the_limits(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/job\n3:cpu,cpuacct:/job\n",
            "proc/self/mountinfo": V1_MOUNTS,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "200000\n",
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/job/memory.limit_in_bytes": f"{512 * 2**20}\n",
        },
    )
    limits = detect(tree)
    assert limits == Limits(
        2.0,
        "cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us (200000/100000)",
        512 * 2**20,
        "cgroup v1 memory.limit_in_bytes",
    )


def test_v1_minus_one_quota_and_huge_memory_limit_mean_unlimited(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/job\n3:cpu,cpuacct:/job\n",
            "proc/self/mountinfo": V1_MOUNTS,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    limits = detect(tree, affinity_cores=3)
    assert limits == Limits(3.0, "CPU affinity (3 cores)", HOST_MEM, "host MemTotal")


def test_v1_memory_limit_above_host_memory_means_host_memory(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/job\n",
            "proc/self/mountinfo": V1_MOUNTS,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/memory/job/memory.limit_in_bytes": f"{64 * GIB}\n",
        },
    )
    assert detect(tree).mem_source == "host MemTotal"


def test_v1_container_view_strips_the_mount_root_from_the_cgroup_path(tmp_path):
    # Inside a container the mount's root is the container's own cgroup, mounted at the top.
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/docker/abc/worker\n3:cpu,cpuacct:/docker/abc/worker\n",
            "proc/self/mountinfo": (
                "40 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup cpu,cpuacct\n"
                "41 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
            ),
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/worker/cpu.cfs_quota_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/worker/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{2 * GIB}\n",
            "sys/fs/cgroup/memory/worker/memory.limit_in_bytes": f"{GIB}\n",
        },
    )
    limits = detect(tree)
    assert (limits.cpu_cores, limits.mem_bytes) == (1.0, GIB)


def test_missing_cgroup_directory_falls_back_to_the_mount_point(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/not/visible/here\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/memory.max": f"{GIB}\n",
        },
    )
    assert detect(tree).mem_bytes == GIB


HYBRID_CGROUP = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n"
HYBRID_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def test_hybrid_host_reads_controllers_from_v1_not_the_unified_tree(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": HYBRID_CGROUP,
            "proc/self/mountinfo": HYBRID_MOUNTS,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": f"{3 * GIB}\n",
            # Decoys: the unified tree has no controllers in hybrid mode.
            "sys/fs/cgroup/unified/cpu.max": "10000 100000\n",
            "sys/fs/cgroup/unified/memory.max": "1024\n",
        },
    )
    limits = detect(tree, affinity_cores=2)
    assert limits == Limits(
        2.0, "CPU affinity (2 cores)", 3 * GIB, "cgroup v1 memory.limit_in_bytes"
    )


def test_hybrid_host_uses_v2_for_a_controller_not_mounted_on_v1(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/job\n0::/job\n",
            "proc/self/mountinfo": V1_MOUNTS.splitlines()[1] + "\n" + HYBRID_MOUNTS.splitlines()[4],
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/unified/job/cpu.max": "250000 100000\n",
        },
    )
    assert detect(tree).cpu_source == "cgroup v2 cpu.max (250000/100000)"


def test_bare_host_without_cgroups_uses_affinity_and_memtotal(tmp_path):
    tree = make_tree(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/mountinfo": ""})
    limits = detect(tree, affinity_cores=16)
    assert limits == Limits(16.0, "CPU affinity (16 cores)", HOST_MEM, "host MemTotal")


def test_default_affinity_is_the_real_one(tmp_path):
    limits = detect_limits(proc_root=make_tree(tmp_path, {"proc/meminfo": MEMINFO}) / "proc")
    assert limits.cpu_cores >= 1
    assert "cores" in limits.cpu_source


@pytest.mark.parametrize(
    "garbage",
    ["", "\x00\xff\n", "nonsense\n", "-5\n", "0 100000\n", "-5 100000\n", "1 2 3\n"],
)
def test_garbled_v2_files_are_ignored_and_said_so(tmp_path, garbage):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/app\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/app/cpu.max": garbage,
            "sys/fs/cgroup/app/memory.max": garbage,
        },
    )
    limits = detect(tree, affinity_cores=2)
    assert limits == Limits(
        2.0,
        "CPU affinity (2 cores); ignored unparsable cgroup v2 cpu.max",
        HOST_MEM,
        "host MemTotal; ignored unparsable cgroup v2 memory.max",
    )


def test_garbled_v1_period_is_ignored(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "3:cpu,cpuacct:/\n",
            "proc/self/mountinfo": V1_MOUNTS,
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "zero\n",
        },
    )
    assert detect(tree, affinity_cores=2).cpu_cores == 2.0


def test_garbled_proc_files_fall_back_to_host_values(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "what\n::\n7:memory\n",
            "proc/self/mountinfo": "garbage\n1 2 - cgroup2\n - - - \n",
            "proc/meminfo": "MemTotal: lots\n",
        },
    )
    limits = detect(tree, affinity_cores=2)
    assert (limits.cpu_cores, limits.cpu_source) == (2.0, "CPU affinity (2 cores)")
    assert limits.mem_bytes > 0
    assert "no MemTotal" in limits.mem_source


def test_missing_proc_entirely_still_gives_positive_limits(tmp_path):
    limits = detect_limits(proc_root=tmp_path / "nothing", root=tmp_path, affinity_cores=1)
    assert limits.cpu_cores == 1.0
    assert limits.mem_bytes > 0


def test_affinity_smaller_than_quota_wins(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/app\n",
            "proc/self/mountinfo": V2_MOUNT,
            "sys/fs/cgroup/app/cpu.max": "400000 100000\n",
        },
    )
    limits = detect(tree, affinity_cores=2)
    assert (limits.cpu_cores, limits.cpu_source) == (2.0, "CPU affinity (2 cores)")


def test_overrides_win_over_every_detected_limit(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/app\n",
            "proc/self/mountinfo": V2_MOUNT,
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/app/cpu.max": "50000 100000\n",
            "sys/fs/cgroup/app/memory.max": f"{GIB}\n",
        },
    )
    limits = detect(tree, cpu_cores=6.0, mem_limit=16 * GIB)
    assert limits == Limits(6.0, "HOLMES_CPU_CORES", 16 * GIB, "HOLMES_MEM_LIMIT")


def test_mount_point_escapes_in_mountinfo_are_decoded(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n",
            "proc/self/mountinfo": "30 23 0:26 / /odd\\040dir rw - cgroup2 cgroup2 rw\n",
            "proc/meminfo": MEMINFO,
            "odd dir/memory.max": f"{GIB}\n",
        },
    )
    assert detect(tree).mem_bytes == GIB


def test_real_machine_limits_are_positive():
    limits = detect_limits()
    assert limits.cpu_cores > 0
    assert limits.mem_bytes > 0
    assert limits.cpu_source
    assert limits.mem_source
