"""Random programs for the property suite, and how to run and compare them.

A program is a DAG over every op family: ``inputs`` (1 to 3 Variables of one shape and
dtype, 0-d included) then ``steps``, each an op applied to earlier values (any of them:
fan-out and reuse).  Every op maps values of the program's shape to one value of that
shape, so any op may read any earlier value.  ``tree`` places checkpoints: a list whose
items are step indices or :class:`Block` s (nested to depth 4) of one of the checkpoint
spellings.  The same program runs plainly (tree ignored) or checkpointed; parameters and
BatchNorm modules are rebuilt from the program's seed on every run, so runs are
independent and comparable.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F

MAX_DEPTH = 4
FLOAT64_TOL = 1e-10
FLOAT32_TOL = 1e-6


class Op(NamedTuple):
    """``arity`` values in, one out; ``fits(shape)``; ``build(rng, shape, dtype, parts)`` returns
    the function of Variables (it appends the Parameters and modules it makes to ``parts``)."""

    arity: int
    fits: Callable[[tuple[int, ...]], bool]
    build: Callable[[np.random.Generator, tuple[int, ...], Any, Parts], Callable[..., ms.Variable]]


@dataclass
class Parts:
    """What a program's ops made when built: Parameters and BatchNorm modules."""

    params: list[ms.Parameter] = field(default_factory=list)
    batchnorms: list[ms.nn.BatchNorm] = field(default_factory=list)

    def param(self, array: np.ndarray) -> ms.Parameter:
        p = ms.Parameter(array)
        self.params.append(p)
        return p


def _any(shape: tuple[int, ...]) -> bool:
    return True


def _ndim_at_least(n: int) -> Callable[[tuple[int, ...]], bool]:
    return lambda shape: len(shape) >= n


def _ndim_is(*ns: int) -> Callable[[tuple[int, ...]], bool]:
    return lambda shape: len(shape) in ns


def _batched(shape: tuple[int, ...]) -> bool:
    """BatchNorm needs (N, C) with N > 1 or (N, C, H, W) with N*H*W > 1 (an unbiased variance)."""
    return (len(shape) == 2 and shape[0] > 1) or (len(shape) == 4 and shape[0] * shape[2] * shape[3] > 1)


def _axis(rng: np.random.Generator, shape: tuple[int, ...]) -> int:
    return int(rng.integers(0, len(shape)))


def _plain(f: Callable[..., ms.Variable], arity: int = 1, fits: Callable = _any) -> Op:
    """An op with nothing to build: ``f`` itself."""
    return Op(arity, fits, lambda rng, shape, dtype, parts: f)


def _reshape(rng, shape, dtype, parts):
    return lambda a: F.reshape(F.sigmoid(F.reshape(a, (-1,))), shape)


def _weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(dtype)


def _matmul(rng, shape, dtype, parts):
    W = parts.param(_weights(rng, (shape[-1], shape[-1]), dtype, shape[-1]))
    return lambda a: a @ W


def _linear(rng, shape, dtype, parts):
    n = shape[1]
    W = parts.param(_weights(rng, (n, n), dtype, n))
    b = parts.param(_weights(rng, (n,), dtype, 1))
    return lambda a: F.linear(a, W, b)


def _conv(rng, shape, dtype, parts):
    c = shape[1]
    W = parts.param(_weights(rng, (c, c, 3, 3), dtype, 9 * c))
    b = parts.param(_weights(rng, (c,), dtype, 1))
    return lambda a: F.conv2d(a, W, b, pad=1)


def _embed(rng, shape, dtype, parts):
    ids = rng.integers(0, 3, shape[0])
    W = parts.param(_weights(rng, (3, shape[1]), dtype, 1))
    return lambda a: a * F.tanh(F.embed_id(ids, W))


def _layer_norm(rng, shape, dtype, parts):
    gamma = parts.param((1 + 0.1 * rng.standard_normal(shape[-1])).astype(dtype))
    beta = parts.param((0.1 * rng.standard_normal(shape[-1])).astype(dtype))
    return lambda a: F.layer_norm(a, gamma, beta)


def _batch_norm_function(rng, shape, dtype, parts):
    gamma = parts.param((1 + 0.1 * rng.standard_normal(shape[1])).astype(dtype))
    beta = parts.param((0.1 * rng.standard_normal(shape[1])).astype(dtype))
    return lambda a: F.batch_norm(a, gamma, beta)


def _batch_norm_module(rng, shape, dtype, parts):
    bn = ms.nn.BatchNorm(shape[1], dtype=dtype)
    parts.batchnorms.append(bn)
    parts.params.extend([bn.gamma, bn.beta])
    return bn


def _cross_entropy(rng, shape, dtype, parts):
    t = rng.integers(0, shape[1], shape[0])
    return lambda a: a * 0.5 + F.softmax_cross_entropy(a, t)


def _where(rng, shape, dtype, parts):
    condition = rng.random(shape) > 0.5
    return lambda a, b: F.where(condition, a, b)


def _fancy_index(rng, shape, dtype, parts):
    index = rng.integers(0, shape[0], shape[0])  # repeats: the gradient scatter-adds
    return lambda a: F.get_item(a, index)


def _on_axis(f: Callable[..., ms.Variable]) -> Callable:
    """An op along an axis drawn at build time: ``f(*values, axis, shape)``."""
    def build(rng, shape, dtype, parts):
        axis = _axis(rng, shape)
        return lambda *xs: f(*xs, axis, shape)
    return build


def _concat_split(a, b, axis, shape):
    first, second = F.split(F.concat([a, b], axis=axis), 2, axis=axis)
    return first * F.tanh(second)


def _stack(a, b):
    both = F.stack([a, b])
    return both[0] * both[1]


def _numpy_noise(a):
    # Chainer-style code drawing from NumPy's global RNG inside a layer.
    return a * np.asarray(np.random.random(a.shape) + 0.5, dtype=a.dtype)


def _grad_inside(a):
    # A gradient penalty: memsave.grad called inside the (maybe checkpointed) function.
    t = F.tanh(a) * F.sigmoid(a)
    g, = ms.grad(F.sum(t * t), a, create_graph=True)
    return a + g * 0.5


def _inner_step(rng, shape, dtype, parts):
    # An inner optimisation step: a constant gradient of a parameter, taken inside the function.
    W = parts.param(_weights(rng, (shape[-1], shape[-1]), dtype, shape[-1]))

    def step(a):
        g, = ms.grad(F.sum(F.square(F.tanh(a @ W))), W)
        return F.tanh(a @ (W - g * 0.1))
    return step


def _named(a):
    # Tags the output of tanh for the name-based policies.
    return ms.checkpoint_name(F.tanh(a), "h")


OPS: dict[str, Op] = {
    # math
    "add": _plain(lambda a, b: a + b, 2),
    "sub": _plain(lambda a, b: a - b * 0.5, 2),
    "mul": _plain(lambda a, b: a * F.tanh(b), 2),
    "div": _plain(lambda a, b: a / (F.tanh(b) + 1.5), 2),
    "pow": _plain(lambda a, b: F.pow(a * a + 1.0, F.tanh(b)), 2),
    "neg": _plain(lambda a: -a),
    "exp": _plain(lambda a: F.exp(F.tanh(a))),
    "log": _plain(lambda a: F.log(a * a + 1.0)),
    "sqrt": _plain(lambda a: F.sqrt(a * a + 1.0)),
    "absolute": _plain(F.absolute),
    "square": _plain(lambda a: F.square(F.tanh(a)) * 2.0),
    "matmul": Op(1, _ndim_at_least(1), _matmul),
    "mean": Op(1, _ndim_at_least(1), _on_axis(lambda a, axis, s: a - F.mean(a, axis=axis, keepdims=True))),
    # activation
    "tanh": _plain(F.tanh),
    "sigmoid": _plain(F.sigmoid),
    "relu": _plain(F.relu),
    "leaky_relu": _plain(F.leaky_relu),
    "gelu": _plain(F.gelu),
    "softmax": Op(1, _ndim_at_least(1), _on_axis(lambda a, axis, s: F.softmax(a, axis=axis))),
    "log_softmax": Op(1, _ndim_at_least(1), _on_axis(lambda a, axis, s: F.log_softmax(a, axis=axis))),
    "logsumexp": Op(1, _ndim_at_least(1),
                    _on_axis(lambda a, axis, s: a - F.logsumexp(a, axis=axis, keepdims=True))),
    # array
    "sum": _plain(lambda a: a * 0.5 + F.sum(a) * 0.1),
    "sum_to_axis": Op(1, _ndim_at_least(1), _on_axis(
        lambda a, axis, s: F.broadcast_to(F.sum(a, axis=axis, keepdims=True), s) * 0.5)),
    "reshape": Op(1, _ndim_at_least(1), _reshape),
    "transpose": _plain(lambda a: F.transpose(F.tanh(F.transpose(a))), 1, _ndim_at_least(2)),
    "flip": _plain(lambda a: a[::-1], 1, _ndim_at_least(1)),
    "fancy_index": Op(1, _ndim_at_least(1), _fancy_index),
    "concat_split": Op(2, _ndim_at_least(1), _on_axis(_concat_split)),
    "stack": _plain(_stack, 2),
    "expand_squeeze": _plain(lambda a: F.squeeze(F.expand_dims(a, 0), 0) * 1.5),
    "where": Op(2, _any, _where),
    "clip": _plain(lambda a: F.clip(a, -1.0, 1.0)),
    "max": _plain(lambda a: a * F.tanh(F.max(a))),
    "min": _plain(lambda a: a - F.min(a)),
    "max_axis": Op(1, _ndim_at_least(1), _on_axis(lambda a, axis, s: a - F.max(a, axis=axis, keepdims=True))),
    # connection
    "linear": Op(1, _ndim_is(2), _linear),
    "conv2d": Op(1, _ndim_is(4), _conv),
    "embed_id": Op(1, _ndim_is(2), _embed),
    # normalization
    "layer_norm": Op(1, _ndim_at_least(1), _layer_norm),
    "batch_norm": Op(1, _batched, _batch_norm_function),
    "BatchNorm": Op(1, _batched, _batch_norm_module),
    # pooling
    "max_pooling": _plain(lambda a: F.max_pooling_2d(a, 3, stride=1, pad=1), 1, _ndim_is(4)),
    "average_pooling": _plain(lambda a: F.average_pooling_2d(a, 3, stride=1, pad=1), 1, _ndim_is(4)),
    # loss
    "cross_entropy": Op(1, _ndim_is(2), _cross_entropy),
    "mean_squared_error": _plain(lambda a, b: a + F.mean_squared_error(a, b) * 0.1, 2),
    # attention
    "attention": _plain(F.scaled_dot_product_attention, 3, _ndim_at_least(2)),
    # noise and randomness
    "dropout": _plain(lambda a: F.dropout(a, 0.3)),
    "numpy_noise": _plain(_numpy_noise),
    # memsave.grad inside the function
    "grad_inside": _plain(_grad_inside),
    "inner_step": Op(1, _ndim_at_least(1), _inner_step),
    # a name for the policies
    "checkpoint_name": _plain(_named),
}
RANDOM_OPS = ("dropout", "numpy_noise")
GRAD_OPS = ("grad_inside", "inner_step")
DETERMINISTIC_OPS = tuple(name for name in OPS if name not in RANDOM_OPS + GRAD_OPS)


# ----- checkpoint placement -------------------------------------------------------------
KINDS = ("checkpoint", "checkpointed", "closure", "sequential")
# Exact policies (compress is approximate by design, so it is not compared to 1e-10).
POLICIES = (None, "nothing_saveable", "everything_saveable", "dots_saveable", "offload_dots_to_host",
            "save_only_these_names", "save_any_names_but_these", "ops", "combine")
LABELS = ("Tanh", "Sigmoid", "Linear", "MatMul", "Exp", "Mul", "Add", "Dropout", "LayerNormalization",
          "BatchNormalization", "Convolution2D", "Softmax", "GetItem", "Name")


@dataclass(frozen=True)
class Block:
    """Steps (and blocks) run as one checkpointed call of spelling ``kind``, with ``policy``:
    a name in POLICIES; ``("ops", labels)`` keeps the outputs of ops with those labels."""

    kind: str
    items: tuple
    segments: int | str = 1
    policy: Any = None


def make_policy(spec: Any) -> Callable | None:
    """The policy function a Block's ``policy`` names."""
    if spec is None:
        return None
    P = ms.policies
    if isinstance(spec, tuple):
        labels = spec[1]
        return lambda out: P.SAVE if out.label in labels else P.RECOMPUTE
    if spec == "save_only_these_names":
        return P.save_only_these_names("h")
    if spec == "save_any_names_but_these":
        return P.save_any_names_but_these("h")
    if spec == "combine":
        return P.combine(P.dots_saveable, P.save_only_these_names("h"))
    return getattr(P, spec)


@st.composite
def policy_specs(draw: Any) -> Any:
    name = draw(st.sampled_from(POLICIES))
    if name == "ops":
        return ("ops", frozenset(draw(st.sets(st.sampled_from(LABELS), max_size=4))))
    return name


@st.composite
def trees(draw: Any, n_steps: int, kinds: Sequence[str] = KINDS, max_depth: int = MAX_DEPTH,
          odds: int = 3, policies: bool = False) -> tuple:
    """Checkpoint placement over ``n_steps`` steps: a block opens at a step with chance
    ``1 / odds`` (``odds=1``: always, down to ``max_depth``)."""
    def items(lo: int, hi: int, depth: int) -> tuple:
        out: list = []
        i = lo
        while i < hi:
            if depth < max_depth and draw(st.integers(0, odds - 1)) == 0:
                j = draw(st.integers(i + 1, hi))
                kind = draw(st.sampled_from(kinds))
                children = items(i, j, depth + 1)
                segments = draw(st.one_of(st.integers(1, len(children)), st.just("sqrt")))
                policy = draw(policy_specs()) if policies else None
                out.append(Block(kind, children, segments, policy))
                i = j
            else:
                out.append(i)
                i += 1
        return tuple(out)

    return items(0, n_steps, 0)


def depth(tree: Sequence) -> int:
    """How deeply the blocks of ``tree`` nest (0: no checkpoint)."""
    return max((1 + depth(item.items) for item in tree if isinstance(item, Block)), default=0)


# ----- programs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Program:
    shape: tuple[int, ...]
    dtype: Any
    n_inputs: int
    steps: tuple[tuple[str, tuple[int, ...]], ...]   # (op name, positions of its arguments)
    tree: tuple
    seed: int
    n_outputs: int = 1

    def inputs(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return [rng.uniform(-2, 2, self.shape).astype(self.dtype) for _ in range(self.n_inputs)]

    def build(self) -> tuple[list[Callable], Parts]:
        """The step functions with fresh parameters (the same values on every call)."""
        rng = np.random.default_rng(self.seed + 1)
        parts = Parts()
        fns = [OPS[name].build(rng, self.shape, np.dtype(self.dtype), parts) for name, _ in self.steps]
        return fns, parts

    def __str__(self) -> str:
        return (f"Program(shape={self.shape}, dtype={np.dtype(self.dtype).name}, n_inputs={self.n_inputs}, "
                f"steps={self.steps}, tree={self.tree}, seed={self.seed}, n_outputs={self.n_outputs})")


SCALAR = st.just(())
NONSCALAR = st.one_of(
    st.tuples(st.integers(1, 5)),
    st.tuples(st.integers(1, 4), st.integers(1, 5)),
    st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(2, 3), st.integers(2, 3)),
)
SHAPES = st.one_of(SCALAR, NONSCALAR)


@st.composite
def programs(draw: Any, ops: Sequence[str] = DETERMINISTIC_OPS, shapes: Any = SHAPES,
             dtypes: Sequence[Any] = (np.float64, np.float32), max_steps: int = 8,
             kinds: Sequence[str] = KINDS, max_depth: int = MAX_DEPTH, odds: int = 3,
             must_use: Sequence[str] = (), policies: bool = False) -> Program:
    """A random program over ``ops`` (those that fit the drawn shape), with at least one
    op of ``must_use`` when it is given (and one fits); ``policies``: each checkpoint
    gets a random policy."""
    shape = draw(shapes)
    fitting = [name for name in ops if OPS[name].fits(shape)]
    n_inputs = draw(st.integers(1, 3))
    names = draw(st.lists(st.sampled_from(fitting), min_size=1, max_size=max_steps))
    required = [name for name in must_use if OPS[name].fits(shape)]
    if required:
        names[draw(st.integers(0, len(names) - 1))] = draw(st.sampled_from(required))
    steps = []
    for i, name in enumerate(names):
        available = n_inputs + i
        picks = draw(st.lists(st.integers(0, 2 * available), min_size=OPS[name].arity,
                              max_size=OPS[name].arity))
        # Mostly recent values (a chain), sometimes any earlier one (fan-out, reuse).
        steps.append((name, tuple(available - 1 - (k % available) if k < available else k % available
                                  for k in picks)))
    return Program(shape=shape, dtype=draw(st.sampled_from(dtypes)), n_inputs=n_inputs,
                   steps=tuple(steps), tree=draw(trees(len(steps), kinds, max_depth, odds, policies)),
                   seed=draw(st.integers(0, 2**16)),
                   n_outputs=draw(st.integers(1, min(2, len(steps)))))


def execute(program: Program, xs: Sequence[ms.Variable], fns: Sequence[Callable], checkpointed: bool,
            keep: list | None = None) -> list[ms.Variable]:
    """Run ``program`` on ``xs``; return its outputs (the last ``n_outputs`` values).

    ``keep``, when given, receives every intermediate Variable (so none is dropped).
    """
    env = list(xs)
    items = program.tree if checkpointed else tuple(range(len(program.steps)))
    _run_items(program, fns, items, env)
    if keep is not None:
        keep.extend(env)
    return env[-program.n_outputs:]


def _run_items(program: Program, fns: Sequence[Callable], items: Sequence, env: list) -> None:
    for item in items:
        if isinstance(item, Block):
            env.extend(_run_block(program, fns, item, env))
        else:
            _name, positions = program.steps[item]
            env.append(fns[item](*[env[p] for p in positions]))


def _run_block(program: Program, fns: Sequence[Callable], block: Block, env: list) -> Sequence:
    n = len(env)

    def body(*values: ms.Variable) -> tuple:
        local = list(values)
        _run_items(program, fns, block.items, local)
        return tuple(local[n:])

    policy = make_policy(block.policy)
    if block.kind == "checkpoint":
        return ms.checkpoint(body, *env, policy=policy)
    if block.kind == "checkpointed":
        return ms.checkpointed(body, policy=policy)(*env)
    if block.kind == "closure":  # the block's inputs are captured, not passed
        captured = tuple(env)
        return ms.checkpoint(lambda: body(*captured), policy=policy)

    def layer(item: Any) -> Callable[[tuple], tuple]:
        def run(values: tuple) -> tuple:
            local = list(values)
            _run_items(program, fns, (item,), local)
            return tuple(local)
        return run

    out = ms.checkpoint_sequential([layer(item) for item in block.items], tuple(env),
                                   segments=block.segments, policy=policy)
    return out[n:]


# ----- one training step, and what it leaves behind -----------------------------------------
@dataclass
class Step:
    outputs: list[np.ndarray]
    firsts: list[np.ndarray | None]
    seconds: list[np.ndarray | None]
    running_stats: list[np.ndarray]
    rng_after: tuple[float, ...]
    grad_dtypes: list[tuple[Any, Any]]


def run_step(program: Program, checkpointed: bool, second_order: bool = False, seed_rng: bool = True,
             keep_intermediates: bool = False,
             make_inputs: Callable[[list[np.ndarray]], list[ms.Variable]] | None = None,
             after_forward: Callable[[list[ms.Variable]], None] | None = None) -> Step:
    """Forward, first derivatives (``backward()``, or ``grad(create_graph=True)`` and then the
    derivative of ``<first, v>`` with ``second_order``), BatchNorm statistics, next RNG draws.

    ``make_inputs(arrays)`` makes the input Variables (default: ``Variable(a)``);
    ``after_forward(inputs + params)`` runs between forward and backward.
    """
    if seed_rng:
        ms.random.seed(program.seed)
        np.random.seed(program.seed)
    fns, parts = program.build()
    arrays = program.inputs()
    xs = make_inputs(arrays) if make_inputs is not None else [ms.Variable(a) for a in arrays]
    keep: list | None = [] if keep_intermediates else None
    outs = execute(program, xs, fns, checkpointed, keep)
    # Copied now: an output may be a view of an input that after_forward writes into.
    out_arrays = [y.array.copy() for y in outs]
    if after_forward is not None:
        after_forward(xs + parts.params)
    rng = np.random.default_rng(program.seed + 2)
    loss = sum(F.sum(y * rng.standard_normal(y.shape).astype(y.dtype)) for y in outs)
    wrt = xs + parts.params
    seconds: list = []
    if second_order:
        firsts = list(ms.grad([loss], wrt, create_graph=True, allow_unused=True))
        used = [(g, x) for g, x in zip(firsts, wrt) if g is not None]
        if used:
            total = sum(F.sum(g * rng.standard_normal(x.shape).astype(x.dtype)) for g, x in used)
            seconds = [None if g is None else g.array.copy()
                       for g in ms.grad([total], wrt, allow_unused=True)]
        first_arrays = [None if g is None else g.array.copy() for g in firsts]
    else:
        loss.backward()
        first_arrays = [None if w.grad is None else w.grad.copy() for w in wrt]
    rng_after = ((float(ms.random.get_generator().random()), float(np.random.random()))
                 if seed_rng else ())
    return Step(outputs=out_arrays, firsts=first_arrays, seconds=seconds,
                running_stats=[s.copy() for bn in parts.batchnorms
                               for s in (bn.running_mean, bn.running_var)],
                rng_after=rng_after,
                grad_dtypes=[(w.dtype, None if g is None else g.dtype) for w, g in zip(wrt, first_arrays)])


def assert_same_step(actual: Step, expected: Step, program: Program, what: str = "checkpointed") -> None:
    tol = FLOAT64_TOL if np.dtype(program.dtype) == np.float64 else FLOAT32_TOL
    for name in ("outputs", "firsts", "seconds", "running_stats"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert len(a) == len(e), f"{what}: {len(a)} {name}, plain {len(e)}\n{program}"
        for i, (x, y) in enumerate(zip(a, e)):
            assert (x is None) == (y is None), f"{what}: {name}[{i}] is {x!r}, plain {y!r}\n{program}"
            if y is not None:
                np.testing.assert_allclose(x, y, atol=tol, rtol=tol,
                                           err_msg=f"{what}: {name}[{i}] differs\n{program}")
    assert actual.rng_after == expected.rng_after, \
        f"{what}: RNG streams after the step {actual.rng_after}, plain {expected.rng_after}\n{program}"


# ----- example budgets ----------------------------------------------------------------------
def examples(share: float) -> settings:
    """The selected property profile with ``share`` times its ``max_examples``."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    profile = settings.get_profile(f"property-{name}")
    return settings(profile, max_examples=max(1, round(profile.max_examples * share)))
