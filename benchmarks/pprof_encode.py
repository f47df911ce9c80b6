"""What encoding a large CPU profile to pprof costs: 100,000 samples over 1,000 stacks.

    python -m benchmarks.pprof_encode [--samples 100000] [--repeat 5]

The profile is shaped like a sampler's: 1,000 distinct stacks of 5-29 frames
drawn from 300 functions, spread over 8 threads. Encoding was measured at
~0.2 s (it used to be a test bound of 3 s, which a loaded machine could break
without any regression); here it is a figure to watch, printed with the
decode of the same bytes. Times are this thread's CPU time (`thread_time`),
which other processes on the machine do not inflate.
"""

from __future__ import annotations

import argparse
import statistics
import time

from holmespy.formats.pprof import decode, encode
from holmespy.formats.profile import Frame, Profile, ValueType


def sampler_like_profile(samples: int) -> Profile:
    pool = [
        Frame(f"app.mod{i % 37}.func_{i}", f"/srv/app/mod{i % 37}.py", i, i) for i in range(300)
    ]
    stacks = [tuple(pool[(s * 7 + k * 13) % 300] for k in range(5 + s % 25)) for s in range(1000)]
    profile = Profile((ValueType("samples", "count"), ValueType("cpu", "nanoseconds")))
    for i in range(samples):
        profile.add(stacks[(i * 7919) % 1000], (1, 10_000_000), thread=f"worker-{i % 8}")
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    profile = sampler_like_profile(args.samples)
    encodes: list[float] = []
    decodes: list[float] = []
    for _ in range(args.repeat):
        start = time.thread_time()
        data = encode(profile)
        encodes.append(time.thread_time() - start)
        start = time.thread_time()
        decoded = decode(data)
        decodes.append(time.thread_time() - start)
        assert len(decoded.samples) == args.samples
    print(f"pprof of {args.samples:,} samples ({len(data):,} bytes gzipped), CPU time, median:")
    print(f"  encode  {statistics.median(encodes) * 1e3:7.1f} ms")
    print(f"  decode  {statistics.median(decodes) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
