"""Optimal recomputation schedules for a chain of layers under a memory budget.

A *schedule* runs layers ``0 .. L-1`` as a list of steps, each either a taped layer
(run plainly: it keeps what its backward needs) or a :class:`Checkpoint` over layers
``start .. stop-1``: run them keeping only their input, and in backward re-run them
with their own, nested schedule.  Every executed action is one of ``F_all`` (taped
forward), ``F_ck`` (forward of a checkpoint's first layer, keeping its input),
``F_none`` (forward keeping nothing) and ``B`` (a layer's backward).

:func:`revolve` is the optimum for L equal layers with S stored layer inputs (Model R:
a layer's backward re-runs its own forward): ``t(L, S)`` extra forwards (Griewank 1992).
:func:`solve` is the optimum for layers of different cost and size under a budget in
bytes: the rotor dynamic program (Beaumont et al. 2019), which may keep a layer's tape
when that is cheaper than recomputing it.

Memory model, per layer i of a :class:`Chain` (all in bytes, live above the step's start):

* ``x[i]`` is the array entering layer i (``x[L]``: the chain's output); a checkpoint
  holds its input ``x[start]`` until its backward is done; the chain's own input ``x[0]``
  belongs to the caller and is not counted.
* ``xbar[i]`` is what stays alive after running layer i taped, beyond its input: the
  arrays it saves for backward and its output.
* ``grad[i]`` is the bytes of parameter gradients layer i's backward allocates (kept).
* Gradients: the chain output's gradient (``x[L]``) is counted from the start; layer i's
  backward holds its output's gradient and writes its input's (``x[i]``).
* Workspace: the transient bytes a layer allocates on top of that while it runs
  (intermediates that die inside it, temporaries of its backward): ``fwd_workspace[i]``
  beyond ``xbar[i]`` in a taped forward, ``recompute_workspace[i]`` beyond its output in a
  forward that keeps nothing (inside a checkpoint), ``bwd_workspace[i]`` beyond the
  gradients its backward writes.  :func:`profile` measures all three, so a profiled plan's
  measured peak matches its prediction up to allocator-level noise; a hand-made Chain that
  leaves them at 0 predicts the peak without any workspace.
* After the chain: ``loss_workspace`` is what the loss and its backward allocate on top of
  everything the forward kept (the output's gradient aside), counted when the last layer's
  forward ends; :func:`profile` measures it when given the ``loss``.

>>> schedule = revolve(64, 8)
>>> schedule.extra_forwards, schedule.peak_slots
(137, 8)
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from memsave import backend, random
from memsave.config import no_grad, using_config
from memsave.core import hooks
from memsave.core.backprop import grad
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.memory import measure

# ----- budgets -----------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(budget: int | str) -> int:
    """A budget in bytes from an int or a string such as ``"300MiB"``, ``"1.5GB"``, ``"512KiB"``.

    >>> parse_bytes("300MiB"), parse_bytes("1.5GB"), parse_bytes(4096)
    (314572800, 1500000000, 4096)
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, str)):
        raise TypeError(f"budget must be bytes (an int) or a string like '300MiB', "
                        f"got {type(budget).__name__}")
    if isinstance(budget, int):
        nbytes = budget
    else:
        match = _BYTES.match(budget)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"budget {budget!r} is not a size: write a number and a unit, "
                             f"such as '300MiB', '1.5GB' or '512KiB' (units: B, KB, MB, GB, TB, "
                             "KiB, MiB, GiB, TiB)")
        nbytes = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if nbytes <= 0:
        raise ValueError(f"budget must be positive, got {budget!r}")
    return nbytes


# ----- schedules ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """Layers ``start .. stop-1`` run keeping only their input; ``steps`` is how they are
    re-run and backpropagated (a schedule for that segment, absolute layer indices)."""

    start: int
    stop: int
    steps: tuple[Step, ...]


Step = int | Checkpoint


def _actions(steps: Sequence[Step]) -> Iterator[tuple[str, int]]:
    """Every action in execution order: forward over ``steps``, then backward in reverse."""
    for step in steps:
        if isinstance(step, Checkpoint):
            yield "F_ck", step.start
            for k in range(step.start + 1, step.stop):
                yield "F_none", k
        else:
            yield "F_all", step
    for step in reversed(steps):
        if isinstance(step, Checkpoint):
            yield from _actions(step.steps)
        else:
            yield "B", step


def _peak_slots(steps: Sequence[Step]) -> int:
    """Most checkpoint inputs held at once (a segment's own input is not counted: the
    checkpoint holding it is)."""
    held, peak = 0, 0
    for step in steps:
        if isinstance(step, Checkpoint):
            held += 1
            peak = max(peak, held)
    for step in reversed(steps):
        if isinstance(step, Checkpoint):
            # its inner plan starts from the same input, which this checkpoint holds
            peak = max(peak, held - 1 + _peak_slots(step.steps))
            held -= 1
    return peak


@dataclass(frozen=True)
class Schedule:
    """A plan for a chain of ``n_layers`` layers and what it is predicted to cost.

    ``extra_forwards``: layer forwards beyond the plain run's ``n_layers``.
    ``peak_slots``: most layer inputs stored by checkpoints at once.
    ``predicted_time`` and ``peak_bytes`` (from :func:`solve`): seconds of a training
    step and its peak live bytes under the memory model of this module.
    """

    steps: tuple[Step, ...]
    n_layers: int
    extra_forwards: int
    peak_slots: int
    predicted_time: float | None = None
    peak_bytes: int | None = None
    budget: int | None = None

    @property
    def actions(self) -> tuple[tuple[str, int], ...]:
        """``(action, layer)`` in execution order; actions are F_all, F_ck, F_none and B.

        >>> revolve(3, 2).actions
        (('F_ck', 0), ('F_ck', 1), ('F_all', 2), ('B', 2), ('F_all', 1), ('B', 1), ('F_all', 0), ('B', 0))
        """
        return tuple(_actions(self.steps))


def _schedule(steps: tuple[Step, ...], n_layers: int, **predictions: Any) -> Schedule:
    forwards = sum(1 for action, _ in _actions(steps) if action != "B")
    return Schedule(steps, n_layers, forwards - n_layers, _peak_slots(steps), **predictions)


def describe(schedule: Schedule) -> str:
    """A readable summary: the nesting of checkpoints and the predictions.

    >>> print(describe(revolve(3, 2)))
    3 layers, 2 extra forwards, at most 2 stored inputs
    checkpoint 0..0: layer 0
    checkpoint 1..1: layer 1
    layer 2
    """
    head = (f"{schedule.n_layers} layers, {schedule.extra_forwards} extra forwards, "
            f"at most {schedule.peak_slots} stored inputs")
    if schedule.peak_bytes is not None:
        head += f", predicted peak {schedule.peak_bytes / 2**20:.1f} MiB"
        head += f" (budget {schedule.budget / 2**20:.1f} MiB)" if schedule.budget else ""
    if schedule.predicted_time is not None:
        head += f", predicted step {schedule.predicted_time * 1e3:.1f} ms"
    lines = [head]

    def walk(steps: Sequence[Step], depth: int) -> None:
        for step in steps:
            if isinstance(step, Checkpoint):
                lines.append("  " * depth + f"checkpoint {step.start}..{step.stop - 1}:"
                             + (f" layer {step.steps[0]}" if step.steps == (step.start,) else ""))
                if step.steps != (step.start,):
                    walk(step.steps, depth + 1)
            else:
                lines.append("  " * depth + f"layer {step}")

    walk(schedule.steps, 0)
    return "\n".join(lines)


# ----- homogeneous chains: Revolve ---------------------------------------------------------

def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def revolve_cost(n_layers: int, slots: int) -> int:
    """``t(L, S)``: the fewest extra layer forwards that reverse L equal layers with S slots.

    Closed form (Griewank 1992): ``r·L − C(S+r, S+1)`` with r the integer such that
    ``C(S+r−1, S) < L ≤ C(S+r, S)``.

    >>> revolve_cost(64, 8), revolve_cost(128, 8), revolve_cost(32, 4), revolve_cost(5, 1)
    (137, 329, 75, 10)
    """
    _check_positive("n_layers", n_layers)
    _check_positive("slots", slots)
    if n_layers == 1:
        return 0
    r = 1
    while math.comb(slots + r, slots) < n_layers:
        r += 1
    return r * n_layers - math.comb(slots + r, slots + 1)


@cache
def _revolve_steps(start: int, stop: int, slots: int) -> tuple[Step, ...]:
    n = stop - start
    if n == 1:
        return (start,)
    if slots == 1:
        split = n - 1  # advance to the last layer, reverse it, start again from the input
    else:
        split = min(range(1, n), key=lambda j: j + revolve_cost(n - j, slots - 1) + revolve_cost(j, slots))
    first = Checkpoint(start, start + split, _revolve_steps(start, start + split, slots))
    rest = _revolve_steps(start + split, stop, slots - 1) if slots > 1 else (stop - 1,)
    return (first, *rest)


def revolve(n_layers: int, slots: int) -> Schedule:
    """The optimal schedule for ``n_layers`` equal layers storing at most ``slots`` layer
    inputs (the chain's input included): ``extra_forwards == revolve_cost(n_layers, slots)``.

    >>> s = revolve(32, 4)
    >>> s.extra_forwards, s.peak_slots <= 4
    (75, True)
    """
    _check_positive("n_layers", n_layers)
    _check_positive("slots", slots)
    return _schedule(_revolve_steps(0, n_layers, slots), n_layers)


# ----- heterogeneous chains: the rotor dynamic program -------------------------------------

_PER_LAYER_BYTES = ("grad", "fwd_workspace", "recompute_workspace", "bwd_workspace")


@dataclass
class Chain:
    """Costs of a chain of L layers (see the module docstring for the memory model).

    ``uf[i]``, ``ub[i]``: seconds of layer i's forward and backward (L entries each).
    ``x[i]``: bytes of the array entering layer i; ``x[L]`` is the chain's output (L+1).
    ``xbar[i]``: bytes alive after running layer i taped beyond its input: what it saves
    for backward plus its output (L entries).
    ``grad[i]``: bytes of parameter gradients layer i's backward allocates (L; default 0).
    ``fwd_workspace[i]``, ``recompute_workspace[i]``, ``bwd_workspace[i]``: transient bytes
    of layer i's taped forward, keep-nothing forward and backward (L each; default 0; see
    the module docstring).  ``loss_workspace``: transient bytes of the loss after the chain.

    >>> Chain(uf=[1, 1], ub=[2, 2], x=[8, 8, 8], xbar=[16, 16]).n_layers
    2
    """

    uf: Sequence[float]
    ub: Sequence[float]
    x: Sequence[int]
    xbar: Sequence[int]
    grad: Sequence[int] = field(default_factory=list)
    fwd_workspace: Sequence[int] = field(default_factory=list)
    recompute_workspace: Sequence[int] = field(default_factory=list)
    bwd_workspace: Sequence[int] = field(default_factory=list)
    loss_workspace: int = 0

    def __post_init__(self) -> None:
        n = len(self.uf)
        self.uf, self.ub = [float(v) for v in self.uf], [float(v) for v in self.ub]
        self.x, self.xbar = [int(v) for v in self.x], [int(v) for v in self.xbar]
        for name in _PER_LAYER_BYTES:
            setattr(self, name, [int(v) for v in getattr(self, name)] or [0] * n)
        if n == 0:
            raise ValueError("a Chain needs at least one layer; got uf=[]")
        expected = {"ub": n, "x": n + 1, "xbar": n, **dict.fromkeys(_PER_LAYER_BYTES, n)}
        for name, size in expected.items():
            if len(getattr(self, name)) != size:
                raise ValueError(f"Chain with {n} layers (len(uf)) needs {size} entries in {name}, "
                                 f"got {len(getattr(self, name))}")

    @property
    def n_layers(self) -> int:
        return len(self.uf)


def simulate(steps: Sequence[Step], chain: Chain) -> tuple[float, int]:
    """Predicted ``(time, peak bytes)`` of running ``steps`` on ``chain``: every action is
    replayed and the memory of the model (module docstring) is tracked.

    >>> chain = Chain(uf=[1, 1], ub=[2, 2], x=[8, 8, 8], xbar=[8, 8])
    >>> simulate((0, 1), chain)
    (6.0, 32)
    """
    x, xbar, wgrad = chain.x, chain.xbar, chain.grad
    live, peak, elapsed = x[-1], x[-1], 0.0  # the output's gradient

    def bump(extra: int) -> None:
        nonlocal peak
        peak = max(peak, live + extra)

    def run(steps: Sequence[Step]) -> None:
        nonlocal live, elapsed
        for step in steps:
            if isinstance(step, Checkpoint):
                for k in range(step.start, step.stop):
                    bump(_untaped_forward(chain, step.start, k))
                    elapsed += chain.uf[k]
                live += x[step.stop]
            else:
                bump(_taped_forward(chain, step))
                live += xbar[step]
                elapsed += chain.uf[step]
        for step in reversed(steps):
            if isinstance(step, Checkpoint):
                live -= x[step.stop]  # its consumers are done: the output goes
                run(step.steps)       # recompute, then backward through the segment
            else:
                bump(x[step] + wgrad[step] + chain.bwd_workspace[step])
                live += x[step] + wgrad[step] - xbar[step] - x[step + 1]
                elapsed += chain.ub[step]

    run(steps)
    return elapsed, peak


def _taped_forward(chain: Chain, k: int) -> int:
    """Bytes live above its start while layer k runs taped: what it keeps and its workspace
    (the last layer's forward ends the chain, so the loss's workspace counts there too)."""
    workspace = chain.fwd_workspace[k]
    if k == chain.n_layers - 1:
        workspace = max(workspace, chain.loss_workspace)
    return chain.xbar[k] + workspace


def _untaped_forward(chain: Chain, start: int, k: int) -> int:
    """Bytes live while layer k runs keeping nothing, inside a checkpoint from ``start``:
    its input (unless the checkpoint holds it), its output and its workspace."""
    return (chain.x[k] if k > start else 0) + chain.x[k + 1] + chain.recompute_workspace[k]


def _prefix(values: Sequence[float]) -> list[float]:
    out = [0]
    for v in values:
        out.append(out[-1] + v)
    return out


def _taped_backward(chain: Chain, s: int, t: int) -> int:
    """Bytes live, above a segment ``s .. t-1``'s start, while the backward of its taped first
    layer runs: what that layer kept, the segment's gradients so far (its output's
    replaced by its input's) and the backward's workspace."""
    x, w = chain.x, chain.grad
    return (chain.xbar[s] + x[s + 1] - x[t] + sum(w[s + 1:t]) + x[s] + w[s]
            + chain.bwd_workspace[s])


def minimum_budget(chain: Chain) -> tuple[int, tuple[Step, ...]]:
    """The least budget any schedule fits in under the memory model, and that schedule.

    >>> minimum_budget(Chain(uf=[1] * 4, ub=[1] * 4, x=[8] * 5, xbar=[8] * 4))[0]
    32
    """
    x, xbar, w = chain.x, chain.xbar, chain.grad
    W = _prefix(w)
    best: dict[tuple[int, int], tuple[int, tuple[Step, ...]]] = {}
    for length in range(1, chain.n_layers + 1):
        for s in range(chain.n_layers - length + 1):
            t = s + length
            # taped first layer
            rest = best[(s + 1, t)] if length > 1 else (0, ())
            peak = max(_taped_forward(chain, s), xbar[s] + rest[0], _taped_backward(chain, s, t))
            choice = (peak, (s, *rest[1]))
            fwd = 0
            for split in range(s + 1, t):
                fwd = max(fwd, _untaped_forward(chain, s, split - 1))
                rest, first = best[(split, t)], best[(s, split)]
                peak = max(fwd, x[split] + rest[0], x[split] - x[t] + W[t] - W[split] + first[0])
                if peak < choice[0]:
                    choice = (peak, (Checkpoint(s, split, first[1]), *rest[1]))
            best[(s, t)] = choice
    peak, steps = best[(0, chain.n_layers)]
    return x[-1] + peak, steps


def _units(nbytes: float, unit: int) -> int:
    return (int(nbytes) + unit // 2) // unit  # nearest, for either sign


def _memory_unit(chain: Chain, plain_peak: int, resolution: int) -> int:
    """The DP's unit of memory: the greatest common divisor of every size when that leaves
    at most ``resolution`` units in the plain run's peak (then the DP is exact), else
    1/``resolution`` of that peak.  It depends on the chain alone, so a larger budget
    never plans worse."""
    sizes = [*chain.x, *chain.xbar, *(v for name in _PER_LAYER_BYTES for v in getattr(chain, name))]
    common = math.gcd(*sizes)
    if common > 0 and plain_peak // common <= resolution:
        return common
    return max(1, -(-plain_peak // resolution))


def solve(chain: Chain, budget: int | str, resolution: int = 8000) -> Schedule:
    """The fastest schedule of ``chain`` whose peak (memory model) stays within ``budget``.

    The rotor dynamic program over (segment, free memory).  Memory is counted in units
    (:func:`_memory_unit`: exact when every size is a multiple of one unit, else
    1/``resolution`` of the plain run's peak, sizes rounded to the nearest unit); the
    schedule is then checked against ``budget`` by :func:`simulate` with exact sizes, and
    re-planned with one unit less until it fits.
    An infeasible budget raises ValueError stating the minimum budget in bytes.

    >>> chain = Chain(uf=[1] * 8, ub=[2] * 8, x=[100] * 9, xbar=[100] * 8)
    >>> solve(chain, 10_000).extra_forwards, solve(chain, 500).extra_forwards
    (0, 10)
    """
    budget = parse_bytes(budget)
    least, least_steps = minimum_budget(chain)
    if budget < least:
        raise ValueError(f"budget {budget} bytes is below the minimum any schedule of this "
                         f"{chain.n_layers}-layer chain needs: {least} bytes. Raise the budget "
                         f"to at least {least} (or use smaller layers or batches).")
    n = chain.n_layers
    taped = tuple(range(n))
    elapsed, peak = simulate(taped, chain)
    if peak <= budget:  # everything fits: no recomputation at all
        return _schedule(taped, n, predicted_time=elapsed, peak_bytes=peak, budget=budget)
    unit = _memory_unit(chain, peak, resolution)
    size = budget // unit + 1
    x, xbar, w = chain.x, chain.xbar, chain.grad
    W, UF = _prefix(w), _prefix(chain.uf)
    free = np.arange(size) * unit  # bytes free at each memory index

    def freed(k: int, t: int) -> int:  # units a checkpoint ending at k returns to its segment
        return _units(x[k] - x[t] + W[t] - W[k], unit)

    pad = max(abs(u) for t in range(n + 1) for k in range(t + 1)
              for u in (freed(k, t), _units(x[k], unit), _units(xbar[min(k, n - 1)], unit)))
    cost: dict[tuple[int, int], np.ndarray] = {}  # padded: see shifted()
    choice: dict[tuple[int, int], np.ndarray] = {}

    def shifted(s: int, t: int, by: int) -> np.ndarray:
        """``cost[(s, t)]`` at memory index ``m - by`` for every m (inf below 0)."""
        return cost[(s, t)][pad - by:pad - by + size]

    def settle(s: int, t: int, best: np.ndarray, pick: np.ndarray) -> None:
        tail = np.full(pad, best[-1])
        cost[(s, t)] = np.concatenate([np.full(pad, np.inf), best, tail])
        choice[(s, t)] = pick

    for length in range(1, n + 1):
        for s in range(n - length + 1):
            t = s + length
            need = max(_taped_forward(chain, s), _taped_backward(chain, s, t))
            best = np.full(size, chain.uf[s] + chain.ub[s])
            if length > 1:
                best += shifted(s + 1, t, _units(xbar[s], unit))
            best[free < need] = np.inf
            pick = np.full(size, s, dtype=np.int32)
            fwd = 0
            for split in range(s + 1, t):
                fwd = max(fwd, _untaped_forward(chain, s, split - 1))
                here = shifted(split, t, _units(x[split], unit)) + shifted(s, split, freed(split, t))
                here += UF[split] - UF[s]
                here[:np.searchsorted(free, fwd)] = np.inf
                better = here < best
                np.copyto(best, here, where=better)
                pick[better] = split
            settle(s, t, best, pick)

    def build(s: int, t: int, m: int) -> tuple[Step, ...]:
        split = int(choice[(s, t)][m])
        if split == s:
            return (s,) if t == s + 1 else (s, *build(s + 1, t, m - _units(xbar[s], unit)))
        first = build(s, split, min(size - 1, m - freed(split, t)))
        return (Checkpoint(s, split, first), *build(split, t, m - _units(x[split], unit)))

    steps = least_steps
    for m in range((budget - x[-1]) // unit, -1, -1):  # rounded sizes: check, step down if over
        if np.isfinite(shifted(0, n, 0)[m]):
            candidate = build(0, n, m)
            if simulate(candidate, chain)[1] <= budget:
                steps = candidate
                break
    elapsed, peak = simulate(steps, chain)
    return _schedule(steps, n, predicted_time=elapsed, peak_bytes=peak, budget=budget)


# ----- profiling ---------------------------------------------------------------------------

def _parameters(output: Variable, given: Variable) -> list[Variable]:
    """Leaves that require grad in the graph behind ``output``, other than ``given``."""
    found: dict[int, Variable] = {}
    seen: set[int] = set()
    stack = [output.creator] if output.creator is not None else []
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        for node in fn.inputs:
            if node.creator is not None:
                stack.append(node.creator)
            elif node.requires_grad and node is not given.node and node.variable is not None:
                found[id(node)] = node.variable
    return list(found.values())


def _kept_bytes(layer: Callable[[Any], Any], given: Variable) -> tuple[Variable, int]:
    """Run ``layer(given)`` taped; return its output and the bytes it keeps beyond its input:
    every distinct buffer saved for backward (parameters are not saved: they are alive
    anyway) and its output."""
    owners: dict[int, Any] = {id(backend.memory_owner(given.array)): None}
    kept = 0

    def record(array: Any, op: Any) -> Any:
        nonlocal kept
        owner = backend.memory_owner(array)
        if id(owner) not in owners:
            owners[id(owner)] = owner
            kept += owner.nbytes
        return array

    with hooks.saved_array_hooks(record, lambda array: array):
        out = layer(given)
    if not isinstance(out, Variable):
        raise TypeError(f"planner layers must return one Variable, {layer!r} returned "
                        f"{type(out).__name__}; wrap multi-output layers in a function")
    record(out.array, None)
    return out, kept


def _profile_layer(layer: Callable[[Any], Any], h: Any) -> tuple[Any, float, float, int, int]:
    """Run ``layer`` taped on ``h`` and backward through it once: its output array, forward
    and backward seconds, bytes kept beyond its input, bytes of its parameters' gradients."""
    given = Variable(h, requires_grad=True)
    start = time.perf_counter()
    out, kept = _kept_bytes(layer, given)
    backend.synchronize(out.array)
    forward = time.perf_counter() - start
    params = _parameters(out, given)
    seed = backend.get_array_module(out.array).ones_like(out.array)
    start = time.perf_counter()
    grad([out], [given, *params], grad_outputs=[seed], allow_unused=True)
    backend.synchronize(out.array)
    return out.array, forward, time.perf_counter() - start, kept, sum(p.array.nbytes for p in params)


class _GradientSource(FunctionNode):
    """A scalar after a profiled layer whose backward hands the layer a fresh gradient of
    ones that only the engine holds, as the next layer's backward would in a real step."""

    def forward(self, y: Any) -> Any:
        self._like = (backend.get_array_module(y), y.shape, y.dtype)
        return self._like[0].zeros((), dtype=y.dtype)

    def backward(self, indexes: Any, gy: Any) -> Variable:
        xp, shape, dtype = self._like
        return Variable(xp.ones(shape, dtype=dtype))


def _workspaces(layer: Callable[[Any], Any], h: Any, device: str) -> tuple[int, int, int]:
    """Transient bytes of ``layer`` on ``h`` (live bytes: :func:`memsave.memory.measure`):
    beyond what it keeps in a taped forward, beyond its output in a forward that keeps
    nothing, beyond its output's and input's gradients and its parameters' gradients in
    backward (whose output gradient and saved arrays go as soon as the engine is done)."""
    given = Variable(h, requires_grad=True)
    # one enclosing measurement: tracemalloc must have seen the saved arrays allocated to
    # see them freed during backward
    with measure(device):
        with no_grad(), measure(device) as untaped:
            out = layer(given)
        recompute = untaped.peak - out.array.nbytes
        del out
        with measure(device) as taped:
            out, kept = _kept_bytes(layer, given)
        params = _parameters(out, given)
        written = out.array.nbytes + h.nbytes + sum(p.array.nbytes for p in params)
        end, = _GradientSource().apply(out)
        del out
        with measure(device) as backward:
            grad([end], [given, *params], allow_unused=True)
    return max(0, taped.peak - kept), max(0, recompute), max(0, backward.peak - written)


def _loss_workspace(loss: Callable[[Any], Any], h: Any, device: str) -> int:
    """Bytes ``loss`` and its backward allocate on ``h`` beyond ``h``'s gradient (measured
    on the second run: a first run also allocates one-time caches)."""
    loss(Variable(h, requires_grad=True)).backward()
    given = Variable(h, requires_grad=True)
    with measure(device) as m:
        loss(given).backward()
    return max(0, m.peak - h.nbytes)


def profile(layers: Sequence[Callable[[Any], Any]], x: Any, repeats: int = 1,
            loss: Callable[[Any], Any] | None = None) -> Chain:
    """Run each layer taped on the previous layer's output and measure a Chain: forward and
    backward seconds (perf_counter; the least of ``repeats`` runs), input sizes, bytes kept
    for backward, parameter-gradient bytes, and the three workspaces (one more run of each
    layer under :func:`memsave.memory.measure`).  With ``loss`` (the function that turns the
    chain's output into the scalar you call backward on), its workspace is measured too.
    Parameters' ``.grad`` are left untouched, the RNG state is restored and layers see
    ``config.in_recompute`` (so BatchNorm does not update its running statistics).

    >>> import numpy as np, memsave.functions as F
    >>> chain = profile([F.tanh, F.tanh], np.ones((4, 4), dtype=np.float32))
    >>> chain.x, chain.xbar
    ([64, 64, 64], [64, 64])
    """
    _check_positive("repeats", repeats)
    h = (x if isinstance(x, Variable) else Variable(x)).array
    uf, ub, sizes, xbar, wgrad = [], [], [h.nbytes], [], []
    workspaces = []
    device = "cpu" if backend.get_array_module(h) is np else "gpu"  # where to measure bytes
    state = random.get_state()
    try:
        with using_config("in_recompute", True):
            for layer in layers:
                runs = [_profile_layer(layer, h) for _ in range(repeats)]
                workspaces.append(_workspaces(layer, h, device))
                h, _, _, kept, params = runs[-1]
                uf.append(min(run[1] for run in runs))
                ub.append(min(run[2] for run in runs))
                xbar.append(kept)
                wgrad.append(params)
                sizes.append(h.nbytes)
            after = 0 if loss is None else _loss_workspace(loss, h, device)
    finally:
        random.set_state(state)
    fwd, recompute, bwd = (list(column) for column in zip(*workspaces))
    return Chain(uf=uf, ub=ub, x=sizes, xbar=xbar, grad=wgrad, fwd_workspace=fwd,
                 recompute_workspace=recompute, bwd_workspace=bwd, loss_workspace=after)


def plan(layers: Sequence[Callable[[Any], Any]], x: Any, budget: int | str, *,
         gradients: str = "kept", loss: Callable[[Any], Any] | None = None) -> Schedule:
    """:func:`profile` the layers on ``x``, then :func:`solve` for ``budget``; pass the
    result to ``checkpoint_sequential(..., schedule=...)`` to run it every step.  Give the
    ``loss`` you apply to the chain's output to count its memory in the budget too.

    ``gradients="freed"`` plans for parameter gradients that do not stay in memory: an
    optimizer applied inside backward (``optimizer.step_in_backward()``) frees each one as
    soon as it is complete, so the budget goes to activations alone.

    >>> import numpy as np, memsave.functions as F
    >>> plan([F.tanh] * 4, np.ones((64, 64)), "1MiB").extra_forwards
    0
    """
    if gradients not in ("kept", "freed"):
        raise ValueError(f"gradients must be 'kept' or 'freed', got {gradients!r}")
    chain = profile(layers, x, loss=loss)
    if gradients == "freed":
        chain = dataclasses.replace(chain, grad=[0] * len(chain.uf))
    return solve(chain, budget)
