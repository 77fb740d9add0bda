"""Workloads W, cnn and transformer in PyTorch eager on the CPU, with torch.utils.checkpoint.

    none  plain forward + backward
    each  ``checkpoint(layer, h, use_reentrant=False)`` around every layer
    sqrt  ``checkpoint_sequential(layers, segments, x, use_reentrant=False)``; PyTorch runs
          the last segment without checkpointing, hence 2 x depth - segment_size forwards

The cnn and transformer modules mirror memsave.bench's (same shapes, layers and loss;
torch's default initialisation).  ``--attention explicit`` computes the transformer's
attention as softmax(q k^T / sqrt(d) + causal mask) v, keeping the (T, T) scores as
memsave's first implementation did; ``--attention sdpa`` calls
torch.nn.functional.scaled_dot_product_attention (torch's fused CPU kernel).

Run inside the torch venv (see setup_venvs.sh):

    benchmarks/.venvs/torch/bin/python benchmarks/torch_bench.py --strategy sqrt --json
    benchmarks/.venvs/torch/bin/python benchmarks/torch_bench.py --workload transformer \
        --attention sdpa --json
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint, checkpoint_sequential
from workload import (
    BLOCK_WORKLOADS,
    WORKLOADS,
    BlockWorkload,
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


class ConvBlock(torch.nn.Module):
    """``h + relu(bn(conv3x3(h)))``: one block of the cnn workload."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(width, width, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        COUNTER.tick()
        return h + torch.relu(self.bn(self.conv(h)))


class TransformerBlock(torch.nn.Module):
    """``x + proj(attn(ln1(x)))``, then ``x + fc2(gelu(fc1(ln2(x))))``: memsave's
    TransformerBlock (GPT-2 layout, causal, fused q/k/v projection, tanh GELU)."""

    def __init__(self, dim: int, heads: int, attention: str) -> None:
        super().__init__()
        self.heads, self.attention = heads, attention
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.fc1, self.fc2 = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.attention == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        length = q.shape[-2]
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        COUNTER.tick()
        batch, length, dim = x.shape
        qkv = self.qkv(self.ln1(x)).view(batch, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = self.attend(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        x = x + self.proj(out)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


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


def build_blocks(wl: BlockWorkload, strategy: str, attention: str) -> Step:
    """A step closure on the cnn or transformer workload: forward, loss, backward, grads
    set to None."""
    torch.manual_seed(wl.seed)
    if wl.name == "cnn":
        blocks = [ConvBlock(wl.width) for _ in range(wl.depth)]
    else:
        blocks = [TransformerBlock(wl.width, wl.heads, attention) for _ in range(wl.depth)]
    layers = torch.nn.Sequential(*blocks)
    x = torch.from_numpy(wl.input_array())

    def step() -> None:
        y = run_model(layers, x, strategy, wl.segments)
        loss = (y * y).sum() / y.numel()
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
    parser = bench_parser(__doc__.splitlines()[0], WORKLOADS)
    parser.add_argument("--attention", choices=("explicit", "sdpa"), default="explicit",
                        help="transformer only: explicit softmax attention or torch's SDPA")
    args = parser.parse_args()
    if args.workload == "mlp":
        step, name = build(W, args.strategy), "torch"
    else:
        step = build_blocks(BLOCK_WORKLOADS[args.workload], args.strategy, args.attention)
        name = "torch-sdpa" if args.attention == "sdpa" else "torch"
    emit(run_benchmark(name, args.strategy, step, COUNTER, profiler_peak, args.repeats,
                       versions(), args.workload), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
