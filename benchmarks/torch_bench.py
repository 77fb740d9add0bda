"""Workload W in PyTorch eager on the CPU, with torch.utils.checkpoint.

    none  plain forward + backward
    each  ``checkpoint(layer, h, use_reentrant=False)`` around every layer
    sqrt  ``checkpoint_sequential(layers, segments, x, use_reentrant=False)``; PyTorch runs
          the last segment without checkpointing, hence 2 x depth - segment_size forwards

Run inside the torch venv (see setup_venvs.sh):

    benchmarks/.venvs/torch/bin/python benchmarks/torch_bench.py --strategy sqrt --json
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint, checkpoint_sequential
from workload import (
    LayerCounter,
    Step,
    W,
    Workload,
    base_versions,
    bench_parser,
    emit,
    init_arrays,
    run_benchmark,
)

COUNTER = LayerCounter()


class Layer(torch.nn.Module):
    """Linear + tanh with the given (out, in) weight and bias; counts its forwards."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(weight))
        self.bias = torch.nn.Parameter(torch.from_numpy(bias))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        COUNTER.tick()
        return torch.tanh(torch.nn.functional.linear(h, self.weight, self.bias))


def run_model(layers: torch.nn.Sequential, x: torch.Tensor, strategy: str,
              segments: int) -> torch.Tensor:
    """Output of ``layers`` on ``x`` under ``strategy``."""
    if strategy == "none":
        return layers(x)
    if strategy == "each":
        h = x
        for layer in layers:
            h = checkpoint(layer, h, use_reentrant=False)
        return h
    return checkpoint_sequential(layers, segments, x, use_reentrant=False)


def build(wl: Workload, strategy: str) -> Step:
    """A step closure on ``wl``'s model: forward, loss, backward, grads set to None."""
    weights, biases, x_np = init_arrays(wl)
    layers = torch.nn.Sequential(*(Layer(w, b) for w, b in zip(weights, biases)))
    x = torch.from_numpy(x_np)

    def step() -> None:
        y = run_model(layers, x, strategy, wl.segments)
        loss = (y * y).sum() / wl.batch
        loss.backward()
        layers.zero_grad(set_to_none=True)

    return step


def profiler_peak(step: Step) -> int:
    """Peak live CPU bytes allocated by PyTorch during ``step``, above the level before it.

    Method: run the step under ``torch.profiler.profile(profile_memory=True)``.  The profiler
    records one "[memory]" event per CPU allocation (+bytes) and free (-bytes).  The
    public ``prof.events()`` list only keeps the memory events not attributed to an operator
    (the others are folded into the operators' ``cpu_memory_usage``), so we read the raw
    Kineto events (``prof.profiler.kineto_results.events()``, whose ``nbytes()`` is the signed
    delta), sort them by timestamp and take the maximum of their running sum.  The CPU
    allocator does not cache, so this is the peak of live tensor bytes.  Sanity check: the
    plain step of W comes out at ~134 MiB, i.e. 64 saved tanh outputs of 2 MiB plus a few
    temporaries, and the running sum returns to 0 at the end of the step.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def versions() -> dict[str, str]:
    """Python, NumPy and torch versions plus torch's intra-op thread count."""
    return {**base_versions(), "torch": torch.__version__,
            "torch_threads": str(torch.get_num_threads())}


def main() -> int:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    step = build(W, args.strategy)
    emit(run_benchmark("torch", args.strategy, step, COUNTER, profiler_peak, args.repeats,
                       versions()), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
