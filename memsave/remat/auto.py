"""auto_checkpoint: pick which submodules of a model to checkpoint to meet a memory budget.

One dry forward pass profiles every submodule: the bytes its ops save for backward, its
inputs and its forward time.  Checkpointing submodule m frees what only m's ops save
(beyond m's inputs) and costs one extra forward of m plus keeping m's inputs; so

    saved(m) = bytes(inside(m) - outside(m) - inputs(m)) - bytes(inputs(m) - inside(m) - outside(m))

where inside(m) / outside(m) are the buffers saved by ops running inside / outside m.
Parameters and the model's input are alive anyway and never counted.  Savings of
submodules that do not contain one another add up (an array saved by two of them counts
for neither: an underestimate, so the plan stays within the budget).

The choice is an exact 0/1 knapsack over the module tree: among sets of submodules none
of which contains another, the least total forward time whose savings reach
``plain - budget``.  A dynamic program over savings counted in units: the greatest common
divisor of the savings and the bytes needed, which makes it exact, whenever that gives at
most ``resolution`` units (array sizes are usually multiples of large powers of two);
otherwise units of 1/``resolution`` of the bytes needed, each saving rounded *down* (a plan
found always fits; it may take a little more time than the optimum).  If rounding hides
every feasible plan, the set saving the most is taken.

>>> import numpy as np, memsave as ms
>>> net = ms.nn.Sequential(ms.nn.Linear(64, 64), ms.functions.tanh, ms.nn.Linear(64, 64))
>>> plan = auto_checkpoint(net, np.ones((32, 64), dtype=np.float32), budget=1.0)
>>> plan.chosen, plan.predicted_bytes == plan.plain_bytes
((), True)
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memsave import backend, random
from memsave.config import using_config
from memsave.core import hooks
from memsave.core.variable import Variable
from memsave.remat.decorator import CheckpointedModule, checkpointed
from memsave.remat.planner import parse_bytes
from memsave.remat.policies import RECOMPUTE, Name, OpOutput, Policy, check_policy, decide, dots_saveable

MiB = 1 << 20


@dataclass(frozen=True)
class Candidate:
    """A way to checkpoint a submodule: its dotted ``name``, the bytes checkpointing it
    frees (``saved``), the forward seconds it adds (``time``), the bytes its backward
    recomputes (``inside``: its transient workspace when checkpointed) and the ``policy``
    of the checkpoint (None: recompute everything).  A submodule may have several."""

    name: str
    saved: int
    time: float
    inside: int = 0
    policy: Any = None

    @property
    def how(self) -> str:
        """The policy's name, or ``"recompute all"``."""
        if self.policy is None:
            return "recompute all"
        return getattr(self.policy, "__name__", type(self.policy).__name__)


@dataclass(frozen=True)
class AutoPlan:
    """What :func:`auto_checkpoint` chose: ``chosen`` candidates, the plain run's activation
    bytes (saved for backward), the predicted bytes with the plan, and the budget in bytes.

    >>> print(AutoPlan((Candidate("0", 3 * MiB, 0.01),), 8 * MiB, 5 * MiB, 6 * MiB))
    submodule                        saved MiB  time added ms  checkpoint
    0                                    3.000         10.000  recompute all
    activations: plain 8.000 MiB, planned 5.000 MiB, budget 6.000 MiB; 10.000 ms added per step
    """

    chosen: tuple[Candidate, ...]
    plain_bytes: int
    predicted_bytes: int
    budget: int

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the checkpointed submodules."""
        return tuple(c.name for c in self.chosen)

    @property
    def time_added(self) -> float:
        """Predicted seconds of recomputation per step."""
        return sum(c.time for c in self.chosen)

    def __str__(self) -> str:
        lines = [f"{'submodule':<30} {'saved MiB':>11} {'time added ms':>14}  checkpoint"]
        lines += [f"{c.name:<30} {c.saved / MiB:11.3f} {c.time * 1e3:14.3f}  {c.how}"
                  for c in self.chosen]
        lines.append(f"activations: plain {self.plain_bytes / MiB:.3f} MiB, planned "
                     f"{self.predicted_bytes / MiB:.3f} MiB, budget {self.budget / MiB:.3f} MiB; "
                     f"{self.time_added * 1e3:.3f} ms added per step")
        return "\n".join(lines)


# ----- profiling ---------------------------------------------------------------------------

def _owners(values: Sequence[Any]) -> dict[int, Any]:
    arrays = [v.array if isinstance(v, Variable) else v for v in values]
    return {id(o): o for o in (backend.memory_owner(a) for a in arrays if backend.is_array(a))}


@dataclass
class _Op:
    """One op of the dry run: the submodules active when it ran, its seconds, its outputs
    (memory owner id and bytes; arrays are not held) and, per policy, which it keeps."""

    modules: frozenset[str]
    seconds: float
    outputs: list[tuple[int, int]]
    keeps: list[list[bool]]


def profile_modules(module: Any, *args: Any,
                    policies: Sequence[Policy] = ()) -> tuple[list[Candidate], int]:
    """Run ``module(*args)`` once, taped, and return every submodule as a :class:`Candidate`
    (not-called ones left out), one more per submodule and policy in ``policies``, and the
    plain run's activation bytes.  The RNG state is restored and modules see
    ``config.in_recompute`` (BatchNorm keeps its statistics).

    >>> import numpy as np, memsave as ms
    >>> net = ms.nn.Sequential(ms.nn.Linear(4, 4), ms.functions.tanh)
    >>> candidates, plain = profile_modules(net, np.ones((2, 4), dtype=np.float32))
    >>> [(c.name, c.saved) for c in candidates], plain
    ([('0', 0)], 32)
    """
    named = [(name, m) for name, m in module.named_modules() if name]
    leaves = _owners([p for p in module.parameters()] + list(args))
    stack: list[str] = []
    saves: dict[int, tuple[Any, list[frozenset[str]]]] = {}  # owner id -> (owner, active sets)
    inputs: dict[str, dict[int, Any]] = {name: {} for name, _ in named}
    seconds: dict[str, float] = {}
    ops: list[_Op] = []
    producers: dict[int, tuple[_Op, int, Any]] = {}  # owner id -> (op record, output, op)

    def instrument(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **kw: Any) -> Any:
            inputs[name].update(_owners([*a, *kw.values()]))
            stack.append(name)
            start = time.perf_counter()
            try:
                return forward(*a, **kw)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
                stack.pop()
        return run

    def record(array: Any, op: Any) -> Any:
        owner = backend.memory_owner(array)
        if id(owner) not in leaves:
            saves.setdefault(id(owner), (owner, []))[1].append(frozenset(stack))
        return array

    def run_op(op: Any, given: Any, forward: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        ys = forward()
        elapsed = time.perf_counter() - start
        if isinstance(op, Name):  # a tag: ask again about the output it names, as checkpoints do
            made = producers.get(id(backend.memory_owner(ys[0])))
            if made is not None:
                record_, i, producer = made
                for keeps, policy in zip(record_.keeps, policies):
                    keeps[i] = decide(policy, OpOutput(producer, i, ys[0], op.name)) != RECOMPUTE
            return ys
        owners = [backend.memory_owner(y) for y in ys]
        record_ = _Op(frozenset(stack), elapsed, [(id(o), o.nbytes) for o in owners],
                      [[decide(policy, OpOutput(op, i, y, None)) != RECOMPUTE for i, y in enumerate(ys)]
                       for policy in policies])
        ops.append(record_)
        for i, o in enumerate(owners):
            producers[id(o)] = (record_, i, op)
        return ys

    # a checkpointed submodule (a proxy) is timed through the module it wraps; its ops'
    # saves go to its own checkpoint, so it and its children show only what it keeps
    targets = [(name, m.__wrapped__ if isinstance(m, CheckpointedModule) else m) for name, m in named]
    for name, m in targets:
        object.__setattr__(m, "forward", instrument(name, m.forward))
    state = random.get_state()
    try:
        with using_config("in_recompute", True), \
                hooks.saved_array_hooks(record, lambda a: a, run_op if policies else None):
            module(*args)
    finally:
        random.set_state(state)
        for _, m in targets:
            del m.__dict__["forward"]
    plain = sum(owner.nbytes for owner, _ in saves.values())
    candidates = []
    for name, _ in named:
        if name not in seconds:
            continue
        inside = {k: o for k, (o, sets) in saves.items() if any(name in s for s in sets)}
        only = {k: o for k, o in inside.items() if all(name in s for s in saves[k][1])}
        freed = sum(o.nbytes for k, o in only.items() if k not in inputs[name])
        kept = sum(o.nbytes for k, o in inputs[name].items()
                   if k not in leaves and k not in inside and k not in saves)
        whole = Candidate(name, freed - kept, seconds[name], sum(o.nbytes for o in inside.values()))
        candidates.append(whole)
        mine = [op for op in ops if name in op.modules]
        for k, policy in enumerate(policies):
            costs, skipped = _policy_costs(k, mine, saves, only, leaves)
            candidates.append(dataclasses.replace(whole, saved=whole.saved - costs,
                                                  time=max(0.0, whole.time - skipped), policy=policy))
    return candidates, plain


def _policy_costs(k: int, ops: Sequence[_Op], saves: dict[int, Any], only: dict[int, Any],
                  leaves: dict[int, Any]) -> tuple[int, float]:
    """What checkpointing with the k-th policy changes for a submodule whose ops are ``ops``:
    the bytes of the outputs it keeps that would otherwise go (saved only inside it, or not
    saved at all), and the seconds of the ops whose every output it keeps (they are not
    re-run).  Decisions other than RECOMPUTE count as keeping the output whole (an upper
    bound for OFFLOAD and COMPRESS)."""
    kept: dict[int, int] = {}
    skipped = 0.0
    for op in ops:
        keeps = op.keeps[k]
        for (owner, nbytes), keep in zip(op.outputs, keeps):
            if keep and owner not in leaves and (owner in only or owner not in saves):
                kept[owner] = nbytes
        if keeps and all(keeps):
            skipped += op.seconds
    return sum(kept.values()), skipped


# ----- the knapsack over the module tree ---------------------------------------------------

def _contains(outer: str, inner: str) -> bool:
    return inner.startswith(outer + ".")


def _merge(f: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h[k] = min over i of f[i] + g[k - i]``, and the i used.  Entries are "the least
    time to save at least k units", so f and g are non-decreasing and the last entry,
    "at least top units", needs no more than ``g[top - i]``."""
    top = len(f) - 1
    h, pick = np.full(top + 1, np.inf), np.zeros(top + 1, dtype=np.int64)
    for i in np.flatnonzero(np.isfinite(f)):
        here = f[i] + g[:top - i + 1]  # entries i .. top
        better = here < h[i:]
        h[i:][better], pick[i:][better] = here[better], i
    return h, pick


def choose(candidates: Sequence[Candidate], need: int, resolution: int = 1000) -> tuple[Candidate, ...]:
    """The least-time set of candidates, at most one per submodule and none containing another
    (by dotted name), whose savings reach ``need`` bytes; ValueError if none does.  See the
    module docstring for exactness (savings counted in units, rounded down).

    >>> cs = [Candidate("a", 9, 3.0), Candidate("a.x", 4, 1.0), Candidate("a.y", 3, 1.0)]
    >>> [c.name for c in choose(cs, 5)], [c.name for c in choose(cs, 8)]
    (['a.x', 'a.y'], ['a'])
    >>> [c.how for c in choose(cs + [Candidate("a", 8, 2.0, policy=len)], 8)]
    ['len']
    """
    useful = [c for c in candidates if c.saved > 0]
    if need <= 0:
        return ()
    best = _most_saving(useful)
    if sum(c.saved for c in best) < need:
        raise ValueError(f"no set of submodules saves {need} bytes: the most is "
                         f"{sum(c.saved for c in best)}")
    unit = math.gcd(need, *(c.saved for c in useful))  # exact when few units
    if -(-need // unit) > resolution:
        unit = -(-need // resolution)
    top = -(-need // unit)
    names = sorted({c.name for c in useful})
    children: dict[str | None, list[str]] = {}
    for name in names:
        parents = [p for p in names if _contains(p, name)]
        children.setdefault(max(parents, key=len) if parents else None, []).append(name)

    def solve(name: str | None) -> tuple[np.ndarray, Callable[[int], list[Candidate]]]:
        f = np.full(top + 1, np.inf)
        f[0] = 0.0
        steps = []
        for child in children.get(name, []):
            g, rebuild = solve(child)
            f, pick = _merge(f, g)
            steps.append((pick, rebuild))
        take: list[Candidate | None] = [None] * (top + 1)  # the option taken at each k, if any
        for option in (c for c in useful if c.name == name):
            reach = min(top, option.saved // unit) + 1
            better = np.flatnonzero(option.time < f[:reach])
            f[better] = option.time
            for k in better:
                take[k] = option

        def rebuild_here(k: int) -> list[Candidate]:
            taken = take[k]
            if taken is not None:
                return [taken]
            chosen = []
            for pick, rebuild in reversed(steps):
                i = int(pick[k])
                chosen += rebuild(k - i)
                k = i
            return chosen
        return f, rebuild_here

    f, rebuild = solve(None)
    if not np.isfinite(f[top]):
        return best
    return tuple(sorted(rebuild(top), key=lambda c: c.name))


def _most_saving(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """The non-nested set of candidates with the largest total saving (exact, over the tree),
    one option per submodule."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.name not in best or c.saved > best[c.name].saved:
            best[c.name] = c
    candidates = list(best.values())

    def best_under(name: str | None) -> list[Candidate]:
        kids = [c for c in candidates if (name is None or _contains(name, c.name))
                and not any(_contains(p.name, c.name) and (name is None or _contains(name, p.name))
                            for p in candidates)]
        return [c for kid in kids for c in max(([kid], best_under(kid.name)),
                                               key=lambda s: sum(x.saved for x in s))]
    return tuple(best_under(None))


# ----- the entry point ---------------------------------------------------------------------

def resolve_budget(budget: int | str | float, plain: int) -> int:
    """Bytes from ``budget``: an int of bytes, a string such as ``"300MiB"``, or a float in
    (0, 1], a fraction of the plain run's activation bytes ``plain``.

    >>> resolve_budget(0.5, 1000), resolve_budget("1KiB", 1000), resolve_budget(10, 1000)
    (500, 1024, 10)
    """
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"a fractional budget must be in (0, 1] (a share of the plain "
                             f"run's {plain} activation bytes), got {budget}; give bytes as an "
                             "int or a string like '300MiB'")
        return int(budget * plain)
    return parse_bytes(budget)


def _replace(root: Any, name: str, new: Any) -> None:
    """Put ``new`` where the submodule ``name`` (dotted) of ``root`` is."""
    from memsave.nn import Sequential

    *path, last = name.split(".")
    parent = root
    for part in path:
        parent = getattr(parent, part)
    if isinstance(parent, Sequential):
        parent._layers[int(last)] = new
    setattr(parent, last, new)


def auto_checkpoint(module: Any, *args: Any, budget: int | str | float,
                    policies: Sequence[Policy] = (dots_saveable,),
                    resolution: int = 1000) -> AutoPlan:
    """Checkpoint, in place, the submodules of ``module`` that bring the activation bytes
    of ``module(*args)`` within ``budget`` with the least added recomputation time.

    ``budget``: bytes (int), a string like ``"300MiB"``, or a float in (0, 1]: a fraction
    of the plain run's activation bytes.  Each submodule may be checkpointed recomputing
    everything or with one of ``policies`` (default: ``dots_saveable``, which keeps matrix
    products and convolutions and recomputes what lies between: less memory freed, less
    time added; ``policies=()`` considers full recomputation only).  One dry forward pass
    on ``args`` profiles every submodule and every policy's decisions
    (:func:`profile_modules`); :func:`choose` picks a non-nested set; each chosen submodule
    is replaced on its parent by ``memsave.checkpointed(submodule, policy=...)``.  Returns the
    :class:`AutoPlan` (print it).  Calling it again re-plans: the submodules an earlier call
    wrapped are unwrapped first.  A budget below what checkpointing can reach raises
    ValueError stating the least achievable bytes.  The budget covers activations kept for
    backward; a step's peak adds gradients and one checkpointed submodule's recomputation.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> def block():
    ...     return ms.nn.Sequential(ms.nn.Linear(64, 64), F.tanh, ms.nn.Linear(64, 64), F.tanh)
    >>> net = ms.nn.Sequential(*[block() for _ in range(4)])
    >>> plan = auto_checkpoint(net, np.ones((256, 64), dtype=np.float32), budget=0.5)
    >>> len(plan.names), "3" in plan.names, plan.predicted_bytes <= plan.budget  # 3 saves most
    (3, True, True)
    """
    for policy in policies:
        check_policy(policy)
    _undo_previous_plan(module)
    candidates, plain = profile_modules(module, *args, policies=policies)
    nbytes = resolve_budget(budget, plain)
    need = plain - nbytes
    try:
        chosen = choose(candidates, need, resolution)
    except ValueError:
        least = plain - sum(c.saved for c in _most_saving([c for c in candidates if c.saved > 0]))
        raise ValueError(f"budget {nbytes} bytes is below the least activation memory "
                         f"checkpointing submodules of {type(module).__name__} reaches: {least} "
                         f"bytes (plain: {plain}). Raise the budget to at least {least} bytes, or "
                         "split the model into smaller submodules.") from None
    for c in chosen:
        proxy = checkpointed(_lookup(module, c.name), policy=c.policy)
        setattr(proxy, "_self_auto_checkpoint", True)  # noqa: B010 - a wrapt proxy's own attribute
        _replace(module, c.name, proxy)
    return AutoPlan(chosen, plain, plain - sum(c.saved for c in chosen), nbytes)


def _undo_previous_plan(module: Any) -> None:
    """Unwrap the submodules an earlier auto_checkpoint call wrapped, so a new call plans
    the model from scratch (checkpointed wrappers the user put in stay)."""
    for name, sub in list(module.named_modules()):
        if isinstance(sub, CheckpointedModule) and getattr(sub, "_self_auto_checkpoint", False):
            _replace(module, name, sub.__wrapped__)


def _lookup(root: Any, name: str) -> Any:
    for part in name.split("."):
        root = getattr(root, part)
    return root
