"""What the peak of a ``memsave bench`` step consists of: a tracemalloc snapshot at the peak.

Runs one warm-up step, then one step with a profile hook that takes a tracemalloc snapshot
whenever the live bytes reach a new high (checked at every Python call and return, so the
snapshot is the largest state between two calls; a kernel's own temporaries show up when it
returns).  Prints the peak above the step's start and the live bytes at the snapshot,
grouped by the line that allocated them, or with ``--frames N`` by the last N calls that led
there (which op, called from forward, a recomputation or backward).

    python benchmarks/peak_snapshot.py cnn --strategy each --top 12
    python benchmarks/peak_snapshot.py transformer --strategy each --frames 5
"""
from __future__ import annotations

import argparse
import sys
import tracemalloc

from memsave import bench

MIB = 2**20


def snapshot_at_peak(workload: bench.Workload, strategy: str) -> tuple[int, tracemalloc.Snapshot]:
    """(live bytes at the highest point, the snapshot taken there), above the step's start."""
    tracemalloc.start(8)
    base = tracemalloc.get_traced_memory()[0]
    best = [0, None]

    def hook(frame, event, arg):
        current = tracemalloc.get_traced_memory()[0]
        if current > best[0] + 64 * 1024:
            best[0], best[1] = current, tracemalloc.take_snapshot()

    sys.setprofile(hook)
    try:
        bench.step(workload, strategy)
    finally:
        sys.setprofile(None)
    tracemalloc.stop()
    return best[0] - base, best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=bench.WORKLOADS)
    parser.add_argument("--strategy", default="none")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--frames", type=int, default=1,
                        help="group by the last N frames of each allocation (default: its line)")
    args = parser.parse_args()
    workload = bench.make_workload(args.workload)
    bench.step(workload, args.strategy)
    live, snapshot = snapshot_at_peak(workload, args.strategy)
    stats = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]
                                   ).statistics("lineno" if args.frames == 1 else "traceback")
    print(f"{args.workload} {args.strategy}: {live / MIB:.1f} MiB live above the step's start "
          f"at the highest point; by allocating line (all live bytes of the process):")
    for stat in stats[:args.top]:
        frames = list(stat.traceback)[-args.frames:]      # oldest first: the allocation last
        where = " <- ".join(f"{f.filename.split('/memsave/')[-1]}:{f.lineno}"
                            for f in reversed(frames))
        print(f"  {stat.size / MIB:7.2f} MiB in {stat.count:4d} blocks  {where}")


if __name__ == "__main__":
    main()
