"""auto_checkpoint on the bench transformer and CNN: plans, measured peaks and step times.

For each budget fraction, a fresh copy of the workload (same seed) is wrapped as one module
(the CNN's residual layers as Residual modules), auto_checkpoint'ed, and measured beside the
plain model in this one process: peak live bytes of one step (tracemalloc), the live bytes
kept after forward, and step times interleaved round by round (ratios: median and min).

    python benchmarks/auto_bench.py [--workload transformer cnn] [--fractions 0.5 0.25]
        [--repeats 3] [--depth D] [--batch B]      (sizes default to bench's)
"""
from __future__ import annotations

import argparse
import statistics
import time

import memsave as ms
from memsave import bench, nn
from memsave.memory import MiB, measure


class Residual(nn.Module):
    """``h + block(h)``: the bench CNN's layer, with its block as a child module."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h):
        return h + self.block(h)


def model(name: str, depth: int, batch: int) -> tuple[nn.Sequential, ms.Variable]:
    workload = bench.make_workload(name, depth=depth, batch=batch)
    blocks = ([Residual(layer.__closure__[0].cell_contents) for layer in workload.layers]
              if name == "cnn" else list(workload.layers))
    return nn.Sequential(*blocks), workload.x


def step(net: nn.Module, x: ms.Variable) -> None:
    for p in net.parameters():
        p.cleargrad()
    h = net(x)
    loss = bench.loss(h)
    del h
    loss.backward()


def peaks(net: nn.Module, x: ms.Variable) -> tuple[int, int]:
    step(net, x)  # warm-up
    with measure() as m:
        step(net, x)
    with measure() as kept:
        h = net(x)
        forward_kept = kept.current
    del h
    return m.peak, forward_kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", nargs="+", default=["transformer", "cnn"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0)
    args = parser.parse_args()
    for name in args.workload:
        plain, x = model(name, args.depth, args.batch)
        plain_peak, plain_kept = peaks(plain, x)
        print(f"\n{name}: plain step peak {plain_peak / MiB:.1f} MiB, kept after forward "
              f"{plain_kept / MiB:.1f} MiB")
        for fraction in args.fractions:
            net, x = model(name, args.depth, args.batch)
            start = time.perf_counter()
            try:
                plan = ms.auto_checkpoint(net, x, budget=fraction)
            except ValueError as err:
                print(f"\nbudget {fraction}: {err}")
                continue
            planning = time.perf_counter() - start
            peak, kept = peaks(net, x)
            times: dict[str, list[float]] = {"plain": [], "auto": []}
            for _ in range(args.repeats):
                for label, which in (("plain", plain), ("auto", net)):
                    start = time.perf_counter()
                    step(which, x)
                    times[label].append(time.perf_counter() - start)
            median = statistics.median(times["auto"]) / statistics.median(times["plain"])
            least = min(times["auto"]) / min(times["plain"])
            print(f"\nbudget {fraction} of plain activations ({plan.budget / MiB:.1f} MiB); "
                  f"planning {planning:.1f} s")
            print(plan)
            print(f"measured: step peak {peak / MiB:.1f} MiB ({peak / plain_peak:.3f} of plain), "
                  f"kept after forward {kept / MiB:.1f} MiB (plain {plain_kept / MiB:.1f}); "
                  f"step time vs plain {median:.2f} median / {least:.2f} min "
                  f"({args.repeats} interleaved rounds; plain median "
                  f"{statistics.median(times['plain']) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
