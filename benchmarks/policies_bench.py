"""Checkpoint policies on workload W, in memsave and beside torch's selective checkpointing.

memsave (run with the project's interpreter): the ``memsave bench`` strategies ``none``,
``sqrt`` and ``policy=P`` (P: nothing, dots, offload, everything on sqrt segments; int8,
fp16 on the plain model under ``memsave.saved_arrays(compress(...))``), all measured in this
one process on ``memsave bench mlp``'s W (64 x Linear(256->256)+tanh, batch 2048, float32),
by default with workload.py's parameters and input (``--init workload``, what torch gets).
Per strategy: peak live bytes of a step (``memsave.memory.measure``), matmul (``Linear``)
executions per step (a counter around ``memsave.functions.connection.Linear.forward``), the
parameter gradients' relative error against the plain step's (max over parameters of
max|g - g_exact| / max|g_exact|), and step times, the strategies alternating step by step
(one step of each per round), min and median over the rounds.

torch (``--framework torch``; run with the torch venv's interpreter): torch 2.13's selective
activation checkpointing on the same W as torch_bench.py (its ``Layer``), 8 segments of 8
layers, each but the last under ``checkpoint(segment, h, use_reentrant=False,
context_fn=partial(create_selective_checkpoint_contexts, policy_fn))`` exactly as memsave's
``checkpoint_sequential(segments="sqrt", policy=...)`` runs them.  Configurations: ``none``
(plain), ``sqrt`` (every op PREFER_RECOMPUTE: nothing_saveable), ``sac-dots`` (MUST_SAVE for
aten.addmm/mm, the ops CPU ``F.linear`` dispatches to: dots_saveable), ``sac-everything``
(every op MUST_SAVE).  Peak from the profiler's allocation events (torch_bench.profiler_peak);
matmuls counted by a dispatch mode around one step (an op SAC returns from its cache is not
executed and not counted).  ``--torch-python PY`` makes this process a driver that runs each
configuration in a fresh process, alternating them round by round, and reports min and median
over all their timed steps.

    python benchmarks/policies_bench.py --repeats 8
    python benchmarks/policies_bench.py --framework torch --torch-python .venv-torch/bin/python \
        --rounds 4 --repeats 4
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

MEMSAVE_STRATEGIES = ("none", "sqrt", "policy=nothing", "policy=dots", "policy=offload",
                      "policy=everything", "policy=int8", "policy=fp16")
TORCH_CONFIGS = ("none", "sqrt", "sac-dots", "sac-everything")
MiB = 2 ** 20


def blas_kernels() -> list[dict]:
    """The BLAS/OpenMP libraries loaded in this process (threadpoolctl), with their kernel."""
    from threadpoolctl import threadpool_info
    return [{k: info.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                      "num_threads")} for info in threadpool_info()]


# ----- memsave -------------------------------------------------------------------------------
@contextlib.contextmanager
def counting_linear(calls: list[int]) -> Iterator[None]:
    """Append 1 to ``calls`` for every execution of memsave's Linear op inside the block."""
    from memsave.functions.connection import Linear
    forward = Linear.forward

    def counted(self, *xs):
        calls.append(1)
        return forward(self, *xs)

    Linear.forward = counted
    try:
        yield
    finally:
        Linear.forward = forward


def gradient_error(grads: list, exact: list) -> float:
    """max over parameters of max|g - g_exact| / max|g_exact|."""
    import numpy as np
    return max(float(np.abs(g - e).max() / np.abs(e).max()) for g, e in zip(grads, exact))


def use_reference_arrays(workload) -> None:
    """Give ``memsave bench mlp``'s W workload.py's parameters and input (torch's too)."""
    from workload import W, init_arrays
    weights, biases, x = init_arrays(W)
    arrays = [a for pair in zip(weights, biases) for a in pair]
    for p, value in zip(workload.parameters, arrays, strict=True):
        assert p.shape == value.shape
        p.array[...] = value
    workload.x.array[...] = x


def run_memsave(repeats: int, init: str) -> dict:
    import warnings

    import memsave as ms
    from memsave import bench
    from memsave.memory import measure

    warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
    workload = bench.make_workload("mlp")
    if init == "workload":
        use_reference_arrays(workload)
    rows: dict[str, dict] = {}
    exact: list = []
    for strategy in MEMSAVE_STRATEGIES:
        bench.step(workload, strategy)                        # warm-up
        grads = [p.grad.copy() for p in workload.parameters]
        exact = exact or grads
        calls: list[int] = []
        workload.forwards = 0
        with counting_linear(calls):
            bench.step(workload, strategy)
        forwards = workload.forwards
        with measure() as m:
            bench.step(workload, strategy)
        rows[strategy] = {"strategy": strategy, "peak_bytes": m.peak, "matmuls": len(calls),
                          "layer_forwards": forwards, "grad_error": gradient_error(grads, exact),
                          "times": []}
    for _ in range(repeats):                                  # alternate: one step of each
        for strategy in MEMSAVE_STRATEGIES:
            start = time.perf_counter()
            bench.step(workload, strategy)
            rows[strategy]["times"].append(time.perf_counter() - start)
    return {"framework": "memsave", "settings": {**workload.settings, "init": init},
            "repeats": repeats,
            "environment": {**bench.environment(), "kernels": blas_kernels()},
            "rows": list(rows.values())}


# ----- torch ---------------------------------------------------------------------------------
def torch_step(config: str) -> tuple[Callable[[], None], Callable[[], int]]:
    """W's step under ``config`` and a function counting the matmuls one step executes."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.checkpoint import (
        CheckpointPolicy,
        checkpoint,
        create_selective_checkpoint_contexts,
    )
    from torch_bench import Layer
    from workload import W, init_arrays

    matmul_ops = {torch.ops.aten.addmm.default, torch.ops.aten.mm.default}

    def policy_fn(ctx, op, *args, **kwargs):
        keep = config == "sac-everything" or op in matmul_ops
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    weights, biases, x_np = init_arrays(W)
    layers = [Layer(w, b) for w, b in zip(weights, biases)]
    segments = [torch.nn.Sequential(*layers[i:i + W.segment_size])
                for i in range(0, W.depth, W.segment_size)]
    x = torch.from_numpy(x_np)
    context_fn = functools.partial(create_selective_checkpoint_contexts, policy_fn)

    def step() -> None:
        h = x
        if config == "none":
            for segment in segments:
                h = segment(h)
        else:
            for segment in segments[:-1]:
                if config == "sqrt":
                    h = checkpoint(segment, h, use_reentrant=False)
                else:
                    h = checkpoint(segment, h, use_reentrant=False, context_fn=context_fn)
            h = segments[-1](h)
        loss = (h * h).sum() / W.batch
        loss.backward()
        for layer in layers:
            layer.zero_grad(set_to_none=True)

    class CountForwardMatmuls(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.addmm.default:   # F.linear with bias; backward uses mm
                CountForwardMatmuls.count += 1
            return func(*args, **(kwargs or {}))

    def count_matmuls() -> int:
        with CountForwardMatmuls():
            step()
        return CountForwardMatmuls.count

    return step, count_matmuls


def run_torch_config(config: str, repeats: int) -> dict:
    import torch
    from torch_bench import COUNTER, profiler_peak
    from workload import base_versions, time_steps

    step, count_matmuls = torch_step(config)
    start = COUNTER.count
    step()                                                    # warm-up
    forwards = COUNTER.count - start
    matmuls = count_matmuls()
    peak = profiler_peak(step)
    times = time_steps(step, repeats)
    return {"framework": "torch", "strategy": config, "peak_bytes": peak, "matmuls": matmuls,
            "layer_forwards": forwards, "times": times,
            "environment": {**base_versions(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(),
                            "torch_config": torch.__config__.show().splitlines()[:4],
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "kernels": blas_kernels(),
                            "OPENBLAS": {k: os.environ.get(k) for k in
                                         ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}}


def drive_torch(python: str, rounds: int, repeats: int) -> dict:
    """Each torch configuration in a fresh process, A/B/C/D then again, ``rounds`` times."""
    rows: dict[str, dict] = {}
    for _ in range(rounds):
        for config in TORCH_CONFIGS:
            out = subprocess.run([python, __file__, "--framework", "torch", "--config", config,
                                  "--repeats", str(repeats)], check=True, capture_output=True,
                                 text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            row = rows.setdefault(config, {**result, "times": []})
            assert row["peak_bytes"] == result["peak_bytes"] and row["matmuls"] == result["matmuls"]
            row["times"].extend(result["times"])
    env = rows["none"].pop("environment")
    for row in rows.values():
        row.pop("environment", None)
    return {"framework": "torch", "rounds": rounds, "repeats": repeats, "environment": env,
            "rows": list(rows.values())}


# ----- report --------------------------------------------------------------------------------
def table(result: dict) -> str:
    """Markdown rows: peak and time ratios against the plain step of the same run."""
    rows = result["rows"]
    base = rows[0]
    base_min, base_med = min(base["times"]), statistics.median(base["times"])
    lines = ["| framework | strategy | peak MiB | peak/plain | min ms | min/plain | median ms "
             "| median/plain | matmuls/step | layer fwd | grad rel err |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t_min, t_med = min(r["times"]), statistics.median(r["times"])
        err = f"{r['grad_error']:.1e}" if "grad_error" in r else ""
        lines.append(f"| {result['framework']} | {r['strategy']} | {r['peak_bytes'] / MiB:.1f} "
                     f"| {r['peak_bytes'] / base['peak_bytes']:.3f} | {t_min * 1e3:.1f} "
                     f"| {t_min / base_min:.2f} | {t_med * 1e3:.1f} | {t_med / base_med:.2f} "
                     f"| {r['matmuls']} | {r['layer_forwards']} | {err} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("memsave", "torch"), default="memsave")
    parser.add_argument("--config", choices=TORCH_CONFIGS,
                        help="torch: measure this one configuration and print one JSON line")
    parser.add_argument("--torch-python", help="torch: the interpreter of the torch venv; runs "
                                               "every configuration in fresh processes")
    parser.add_argument("--rounds", type=int, default=4, help="torch: processes per configuration")
    parser.add_argument("--repeats", type=int, default=8,
                        help="timed steps per strategy (memsave) or per process (torch)")
    parser.add_argument("--init", choices=("workload", "bench"), default="workload",
                        help="memsave: W's parameters and input from workload.py (LeCun scale, "
                             "as torch gets them) or memsave bench's own (torch's default init, "
                             "zero biases: activations decay to 1e-15 by layer 64)")
    parser.add_argument("--json", help="also write the full result (every step time) here")
    args = parser.parse_args()
    if args.framework == "torch" and args.config:
        print(json.dumps(run_torch_config(args.config, args.repeats)))
        return 0
    if args.framework == "torch":
        if not args.torch_python:
            parser.error("--framework torch needs --config or --torch-python")
        result = drive_torch(args.torch_python, args.rounds, args.repeats)
    else:
        result = run_memsave(args.repeats, args.init)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result["environment"]))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
