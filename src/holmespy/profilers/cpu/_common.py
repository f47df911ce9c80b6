"""What the CPU engines share: the profile's shape and how an engine fails."""

from __future__ import annotations

from holmespy.formats.profile import Frame, Profile, ValueType

SAMPLES = ValueType("samples", "count")
CPU_NS = ValueType("cpu", "nanoseconds")

INSTALL_HINT = "pip install holmespy[profile]"


class EngineFailed(Exception):
    """An engine could not produce a profile; the message is the reason, written for the user."""


def sampling_profile(rate: int, time_nanos: int) -> Profile:
    """An empty sampled CPU profile: (samples, cpu ns) per stack, one sample per 1/rate s."""
    return Profile(
        sample_types=(SAMPLES, CPU_NS),
        time_nanos=time_nanos,
        period_type=CPU_NS,
        period=1_000_000_000 // max(1, rate),
        default_sample_type=CPU_NS.type,
    )


Stacks = dict[tuple[str, tuple[Frame, ...]], list[int]]
"""(thread label, stack innermost first) -> [samples, cpu ns]: samples summed before they
become `Sample`s, so a profile holds one sample per distinct stack and thread."""


def add_stacks(profile: Profile, stacks: Stacks) -> None:
    for (thread, stack), (count, cpu_ns) in stacks.items():
        profile.add(stack, (count, cpu_ns), thread=thread)
