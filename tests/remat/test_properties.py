"""Property tests: a checkpointed call is indistinguishable from the plain one.

Outputs, first and second derivatives (inputs and closure-captured Parameters), RNG
streams, output structure and argument passing must match the plain call (float64,
atol 1e-10); the recomputation must stop early, run each checkpointed layer exactly
once more, and refuse (CheckpointError) to fill slots from a run that differs.
"""
import re
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memsave as ms
import memsave.functions as F
from memsave.remat.sequential import segment_bounds
from memsave.testing import assert_checkpoint_equivalent

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")

# F.dropout lives in memsave/functions/noise.py; the dropout cases run only where it exists.

ATOL = RTOL = 1e-10


def _close(actual, expected, what):
    assert (actual is None) == (expected is None), f"{what}: {actual!r} vs {expected!r}"
    if expected is not None:
        np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL, err_msg=what)


def _matrices(min_rows=2, max_rows=4, min_cols=3, max_cols=5, lo=-1.0, hi=1.0):
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(min_cols, max_cols))
    return shapes.flatmap(lambda s: hnp.arrays(
        np.float64, s, elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False)))


def _weight(rng, rows, cols):
    return ms.Parameter(rng.standard_normal((rows, cols)) / np.sqrt(cols))


# ----- 1. random op chains ------------------------------------------------------------
OPS = ("tanh", "sigmoid", "relu", "square", "gauss", "linear", "scale", "skip",
       "sum_broadcast", "transpose_twice", "reshape_round_trip", "get_item")


def build_chain(ops, shape, seed=0):
    """``(fn, params)``: fn applies ``ops`` (name, int arg, float arg) to an input of ``shape``.

    Intermediates are kept in a list so that "skip" can add an earlier one (of the
    current shape: the int argument picks which).
    """
    rng = np.random.default_rng(seed)
    shapes = [tuple(shape)]
    params = []
    steps = []
    for name, k, c in ops:
        r, n = shape = shapes[-1]
        if name in ("tanh", "sigmoid", "relu", "square"):
            f = getattr(F, name)
            steps.append(lambda hs, f=f: f(hs[-1]))
        elif name == "gauss":
            steps.append(lambda hs: F.exp(-F.square(hs[-1])))
        elif name == "linear":
            W = _weight(rng, n, n)
            params.append(W)
            steps.append(lambda hs, W=W: F.linear(hs[-1], W))
        elif name == "scale":
            steps.append(lambda hs, c=c: hs[-1] * c)
        elif name == "skip":
            same = [i for i, s in enumerate(shapes) if s == shape]
            j = same[k % len(same)]
            steps.append(lambda hs, j=j: hs[-1] + hs[j])
        elif name == "sum_broadcast":
            axis = k % 2
            steps.append(lambda hs, a=axis, s=shape:
                         F.broadcast_to(F.sum(hs[-1], axis=a, keepdims=True), s))
        elif name == "transpose_twice":
            steps.append(lambda hs: F.transpose(F.transpose(hs[-1])))
        elif name == "reshape_round_trip":
            steps.append(lambda hs, s=shape: F.reshape(F.reshape(hs[-1], (s[1], s[0])), s))
        elif name == "get_item":
            if k % 2 == 0 or r == 1:
                index = (slice(None, None, -1), slice(None))
            else:
                index = (slice(1, None), slice(None))
                shape = (r - 1, n)
            steps.append(lambda hs, i=index: F.get_item(hs[-1], i))
        else:  # pragma: no cover - guards the OPS list
            raise AssertionError(name)
        shapes.append(shape)

    def fn(x):
        hs = [x]
        for step in steps:
            hs.append(step(hs))
        return hs[-1]

    return fn, params


op_lists = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 7),
                              st.floats(-1.5, 1.5, allow_nan=False)), min_size=1, max_size=8)


def _run_with_params(fn, x, params, checkpointed, gy_seed=1):
    for p in params:
        p.cleargrad()
    xv = ms.Variable(x.copy())
    y = ms.checkpoint(fn, xv) if checkpointed else fn(xv)
    gy = np.random.default_rng(gy_seed).standard_normal(y.shape)
    F.sum(y * gy).backward()
    return y.array.copy(), xv.grad, [p.grad for p in params]


@given(_matrices(), op_lists)
@example(np.linspace(-1, 1, 12).reshape(3, 4), [(name, k, 0.75) for k, name in enumerate(OPS)])
@example(np.linspace(-0.9, 0.8, 8).reshape(2, 4),
         [("linear", 0, 1.0), ("get_item", 1, 1.0), ("skip", 0, 1.0), ("linear", 0, 1.0),
          ("skip", 1, 1.0), ("square", 0, 1.0), ("sum_broadcast", 1, 1.0), ("skip", 2, -1.25)])
def test_random_op_chain_matches_plain(x, ops):
    fn, params = build_chain(ops, x.shape)
    assert_checkpoint_equivalent(fn, x, second_order=True)
    y0, gx0, gp0 = _run_with_params(fn, x, params, checkpointed=False)
    y1, gx1, gp1 = _run_with_params(fn, x, params, checkpointed=True)
    _close(y1, y0, "output")
    _close(gx1, gx0, "input gradient")
    for i, (a, b) in enumerate(zip(gp1, gp0)):
        assert b is not None
        _close(a, b, f"gradient of Parameter {i}")


# ----- 2. random segmentations ----------------------------------------------------------
LAYER_KINDS = ("tanh_linear", "sigmoid_scale", "gauss_skip", "relu_linear_tanh")


class CountedChain:
    """L layers, each ending in an op that saves (so recomputing a segment runs all of it)."""

    def __init__(self, kinds, width, seed=0):
        rng = np.random.default_rng(seed)
        self.params = [_weight(rng, width, width) for _ in kinds]
        self.calls = [0] * len(kinds)
        self.layers = [self._layer(i, kind) for i, kind in enumerate(kinds)]

    def _layer(self, i, kind):
        W = self.params[i]

        def layer(h):
            self.calls[i] += 1
            if kind == "tanh_linear":
                return F.tanh(F.linear(h, W))
            if kind == "sigmoid_scale":
                return F.sigmoid(F.linear(h, W) * 1.5)
            if kind == "gauss_skip":
                return F.exp(-F.square(F.linear(h, W))) + F.tanh(h)
            return F.tanh(F.relu(F.linear(h, W)) + h)
        return layer


@given(_matrices(), st.data())
def test_random_segmentation_gradients_and_layer_counts(x, data):
    L = data.draw(st.integers(1, 8), label="L")
    segments = data.draw(st.one_of(st.integers(1, L), st.just("sqrt")), label="segments")
    kinds = data.draw(st.lists(st.sampled_from(LAYER_KINDS), min_size=L, max_size=L), label="kinds")
    chain = CountedChain(kinds, x.shape[1])
    gy = np.random.default_rng(3).standard_normal(x.shape)

    def run(checkpointed):
        chain.calls = [0] * L
        for p in chain.params:
            p.cleargrad()
        xv = ms.Variable(x.copy())
        if checkpointed:
            y = ms.checkpoint_sequential(chain.layers, xv, segments=segments)
        else:
            y = xv
            for layer in chain.layers:
                y = layer(y)
        F.sum(y * gy).backward()
        return y.array.copy(), xv.grad, [p.grad for p in chain.params], list(chain.calls)

    y0, gx0, gp0, calls0 = run(False)
    y1, gx1, gp1, calls1 = run(True)
    _close(y1, y0, "output")
    _close(gx1, gx0, "input gradient")
    for i, (a, b) in enumerate(zip(gp1, gp0)):
        _close(a, b, f"gradient of layer {i}'s weight")

    n_segments = min(L, max(1, round(np.sqrt(L))) if segments == "sqrt" else segments)
    bounds = segment_bounds(L, segments)
    assert len(bounds) == n_segments
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]] and bounds[-1][1] == L
    last_start = bounds[-1][0]
    assert calls0 == [1] * L
    # Every layer of a checkpointed segment runs once more; the last segment is not recomputed.
    assert calls1 == [2] * last_start + [1] * (L - last_start)
    assert sum(calls1) == L + last_start


# ----- 3. random nesting --------------------------------------------------------------
UNARY = {
    "tanh": F.tanh,
    "sigmoid": F.sigmoid,
    "gauss": lambda h: F.exp(-F.square(h)),
    "square_half": lambda h: F.square(h) * 0.5,
    "swish": lambda h: h * F.sigmoid(h),
}


def build_nested(depth, pre, post, params, checkpointed):
    """Level i: pre op, linear, [checkpoint(level i+1)], post op; level 0 is checkpointed too."""

    def level(i):
        def body(h):
            h = F.linear(UNARY[pre[i]](h), params[i])
            if i + 1 < depth:
                inner = level(i + 1)
                h = ms.checkpoint(inner, h) if checkpointed else inner(h)
            return UNARY[post[i]](h) + h
        body.__qualname__ = f"level{i}"
        return body

    outer = level(0)
    return (lambda x: ms.checkpoint(outer, x)) if checkpointed else outer


@given(_matrices(), st.data())
def test_random_nesting_first_and_second_derivatives(x, data):
    depth = data.draw(st.integers(1, 4), label="depth")
    names = st.lists(st.sampled_from(sorted(UNARY)), min_size=depth, max_size=depth)
    pre, post = data.draw(names, label="pre"), data.draw(names, label="post")
    rng = np.random.default_rng(5)
    params = [_weight(rng, x.shape[1], x.shape[1]) for _ in range(depth)]
    gy = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)

    def run(checkpointed):
        fn = build_nested(depth, pre, post, params, checkpointed)
        for p in params:
            p.cleargrad()
        xv = ms.Variable(x.copy())
        y = fn(xv)
        F.sum(y * gy).backward()
        first = (y.array.copy(), xv.grad, [p.grad for p in params])
        # Double backprop: d/d(x, W) of <d<y, gy>/dx, v>.
        xv = ms.Variable(x.copy())
        y = fn(xv)
        gx, = ms.grad(F.sum(y * gy), xv, create_graph=True)
        gg = ms.grad(F.sum(gx * v), [xv] + params, allow_unused=True)
        second = (gx.array.copy(), [None if g is None else g.array.copy() for g in gg])
        return first, second

    (y0, gx0, gp0), (ggx0, gg0) = run(False)
    (y1, gx1, gp1), (ggx1, gg1) = run(True)
    _close(y1, y0, "output")
    _close(gx1, gx0, "input gradient")
    for i, (a, b) in enumerate(zip(gp1, gp0)):
        _close(a, b, f"gradient of level {i}'s weight")
    _close(ggx1, ggx0, "create_graph first derivative")
    for i, (a, b) in enumerate(zip(gg1, gg0)):
        _close(a, b, f"second derivative {i}")


# ----- 4. randomness inside -----------------------------------------------------------
def noisy(ratio, memsave_mask=True, numpy_global=False, dropout=False):
    def fn(x):
        h = x
        if memsave_mask:
            mask = ms.random.get_generator(np).random(x.shape) >= ratio
            h = F.sigmoid(h * mask)
        if numpy_global:
            h = F.tanh(h * (np.random.random(x.shape) + 0.5))
        if dropout:
            h = F.tanh(F.dropout(h, ratio))
        return h * F.tanh(h)
    return fn


@given(_matrices(lo=0.1, hi=1.0), st.floats(0.2, 0.8), st.booleans(),
       st.booleans(), st.sampled_from(["metadata", "checksum"]))
def test_randomness_replayed_with_preserved_rng_state(x, ratio, numpy_global, dropout, check):
    fn = noisy(ratio, memsave_mask=True, numpy_global=numpy_global, dropout=dropout)
    # Also checks that the RNG streams after the call are where the plain call leaves them.
    assert_checkpoint_equivalent(fn, x, second_order=True, preserve_rng_state=True,
                                 determinism_check=check)


@given(_matrices(lo=0.1, hi=1.0), st.floats(0.2, 0.8),
       st.booleans())
def test_draws_between_forward_and_backward_are_unaffected(x, ratio, dropout):
    """Replay uses the snapshot taken at forward and leaves the outer streams where they were."""
    fn = noisy(ratio, memsave_mask=True, numpy_global=True, dropout=dropout)
    gy = np.random.default_rng(9).standard_normal(x.shape)

    def draws():
        return (ms.random.get_generator(np).random(4).tolist(), np.random.random(4).tolist())

    def run(checkpointed):
        ms.random.seed(4)
        xv = ms.Variable(x.copy())
        y = ms.checkpoint(fn, xv) if checkpointed else fn(xv)
        between = draws()
        F.sum(y * gy).backward()
        return y.array.copy(), xv.grad, between, draws()

    y0, gx0, between0, after0 = run(False)
    y1, gx1, between1, after1 = run(True)
    _close(y1, y0, "output")
    _close(gx1, gx0, "input gradient")
    assert between1 == between0
    assert after1 == after0, "the recomputation moved the RNG streams outside the checkpoint"


UNSEEDED = """
import warnings; warnings.simplefilter("ignore")
import numpy as np, memsave as ms, memsave.functions as F
def fn(v):
    mask = ms.random.get_generator(np).random(v.shape) >= 0.5
    return F.tanh(v * mask) * F.tanh(v)
x = ms.Variable(np.linspace(0.5, 1.5, 400))
y = ms.checkpoint(fn, x, determinism_check="checksum")
F.sum(y).backward()
kept = y.array != 0
assert (np.isclose(x.grad, (1 - np.tanh(x.array) ** 2) * 2 * np.tanh(x.array)) == kept).all(), \
    "the recomputed mask differs from forward's"
print("ok")
"""


def test_mask_replayed_when_memsave_random_was_never_seeded():
    """Fresh interpreter: the generator starts from OS entropy; the replay must still match."""
    done = subprocess.run([sys.executable, "-c", UNSEEDED], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# Fixed, distinct, nonzero inputs: any change of mask changes the value fingerprint.  Large,
# so that two bool dropout masks (fingerprint: count and three samples) practically never agree.
NOISY_X = np.linspace(0.5, 1.5, 32 * 48).reshape(32, 48)


@pytest.mark.parametrize("kind, op", [
    ("mask", "Sigmoid"), ("numpy", "Tanh"),
    ("dropout", "Dropout"),
])
@given(ratio=st.floats(0.3, 0.7), seed=st.integers(0, 2**16))
def test_randomness_without_preserved_state_is_caught_by_checksum(kind, op, ratio, seed):
    ms.random.seed(seed)
    fn = noisy(ratio, memsave_mask=kind == "mask", numpy_global=kind == "numpy",
               dropout=kind == "dropout")
    x = ms.Variable(NOISY_X.copy())
    y = ms.checkpoint(fn, x, preserve_rng_state=False, determinism_check="checksum")
    with pytest.raises(ms.CheckpointError) as info:
        F.sum(y).backward()
    message = str(info.value)
    assert f"{op} at " in message and "recomputed different values" in message
    assert "checkpoint(" in message and "fn" in message


# ----- 5. structured outputs ----------------------------------------------------------
Pair = namedtuple("Pair", "first second")

_leaf_templates = st.one_of(
    st.integers(0, 3).map(lambda i: ("var", i)),
    st.sampled_from(["int", "str", "none", "float"]).map(lambda k: ("obj", k)),
    st.just(("input",)),
)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=3).map(lambda xs: ("tuple", xs)),
        st.lists(children, max_size=3).map(lambda xs: ("list", xs)),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
        .map(lambda d: ("dict", d)),
        st.tuples(children, children).map(lambda ab: ("pair", list(ab))),
    )


templates = st.recursive(_leaf_templates, _extend, max_leaves=7)


def build_structure(template, objects):
    """fn(x) returning ``template`` filled in: Variables from x, and the given objects."""

    def make(t, x):
        kind = t[0]
        if kind == "var":
            return F.tanh(x * (t[1] + 0.5)) * F.sigmoid(x)
        if kind == "obj":
            return objects[t[1]]
        if kind == "input":
            return x
        if kind == "tuple":
            return tuple(make(c, x) for c in t[1])
        if kind == "list":
            return [make(c, x) for c in t[1]]
        if kind == "dict":
            return {k: make(c, x) for k, c in t[1].items()}
        return Pair(*(make(c, x) for c in t[1]))

    return lambda x: make(template, x)


def _assert_same_structure(got, want, path="out"):
    assert type(got) is type(want), f"{path}: {type(got).__name__} vs {type(want).__name__}"
    if isinstance(want, ms.Variable):
        return
    if isinstance(want, dict):
        assert list(got) == list(want), path
        for k in want:
            _assert_same_structure(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_structure(g, w, f"{path}[{i}]")
    else:
        assert got is want, f"{path}: {got!r} is not the object fn returned"


def _variables(out):
    if isinstance(out, ms.Variable):
        return [out]
    if isinstance(out, dict):
        return [v for value in out.values() for v in _variables(value)]
    if isinstance(out, (tuple, list)):
        return [v for item in out for v in _variables(item)]
    return []


@given(_matrices(), templates)
@example(np.linspace(-1, 1, 6).reshape(2, 3),
         ("pair", [("dict", {"a": ("list", [("var", 0), ("obj", "str"), ("input",)]),
                             "b": ("obj", "none")}),
                   ("tuple", [("obj", "int"), ("pair", [("var", 3), ("obj", "float")]),
                              ("list", [])])]))
def test_structured_outputs_keep_type_structure_and_gradients(x, template):
    # Objects made at run time, so that `is` means "the very object fn returned".
    objects = {"int": int("1" * 25), "str": "".join(["tag", str(x.shape[0])]), "none": None,
               "float": float(x.shape[1]) + 0.25}
    fn = build_structure(template, objects)

    def run(checkpointed):
        xv = ms.Variable(x.copy())
        out = ms.checkpoint(fn, xv) if checkpointed else fn(xv)
        leaves = _variables(out)
        if leaves:
            rng = np.random.default_rng(7)
            sum(F.sum(v * rng.standard_normal(v.shape)) for v in leaves).backward()
        return out, leaves, xv.grad

    plain, plain_leaves, gx0 = run(False)
    if not plain_leaves:  # nothing to differentiate: a checkpoint of it is a mistake, said so
        with pytest.raises(TypeError, match="holds no Variable"):
            run(True)
        return
    ckpt, ckpt_leaves, gx1 = run(True)
    _assert_same_structure(ckpt, plain)
    assert len(ckpt_leaves) == len(plain_leaves)
    for i, (a, b) in enumerate(zip(ckpt_leaves, plain_leaves)):
        _close(a.array, b.array, f"output leaf {i}")
    _close(gx1, gx0, "input gradient")
    if plain_leaves:
        assert_checkpoint_equivalent(fn, x)


# ----- 6. keyword and non-array arguments ---------------------------------------------
@given(_matrices(), st.floats(-2, 2, allow_nan=False), st.sampled_from(["tanh", "sigmoid"]))
def test_kwargs_and_array_arguments_pass_through(x, scale, mode):
    rng = np.random.default_rng(11)
    b0, w0 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    mode = "".join(mode)  # a fresh str object
    seen = []

    def fn(a, b, *, w, scale, mode, tag=None):
        seen.append({"a": a, "b": b, "w": w, "scale": scale, "mode": mode, "tag": tag})
        assert isinstance(a, ms.Variable), f"ndarray argument arrived as {type(a).__name__}"
        act = getattr(F, mode)
        return act(a * w * scale) + F.tanh(b * w) * b

    def run(checkpointed):
        seen.clear()
        b, w = ms.Variable(b0.copy()), ms.Variable(w0.copy())
        if checkpointed:
            y = ms.checkpoint(fn, x, b, w=w, scale=scale, mode=mode, tag="t")
        else:
            y = fn(ms.Variable(x, requires_grad=False), b, w=w, scale=scale, mode=mode, tag="t")
        F.sum(y * x).backward()
        return y.array.copy(), b.grad, w.grad, b, w, list(seen)

    y0, gb0, gw0, _, _, _ = run(False)
    y1, gb1, gw1, b, w, calls = run(True)
    _close(y1, y0, "output")
    _close(gb1, gb0, "gradient of positional Variable")
    _close(gw1, gw0, "gradient of keyword Variable")
    assert len(calls) == 2, "forward + one recomputation"
    forward = calls[0]
    assert forward["b"] is b and forward["w"] is w
    for call in calls:
        assert isinstance(call["a"], ms.Variable) and isinstance(call["w"], ms.Variable)
        np.testing.assert_array_equal(call["a"].array, x)
        np.testing.assert_array_equal(call["w"].array, w0)
        assert call["scale"] is scale and call["mode"] is mode and call["tag"] == "t"


# ----- 7. early stop ------------------------------------------------------------------
class Tick(ms.FunctionNode):
    """Identity that saves nothing and counts its forward runs."""

    def __init__(self, counts, key):
        self.counts, self.key = counts, key

    def forward(self, x):
        self.counts[self.key] += 1
        return x.copy()

    def backward(self, indexes, gy):
        return gy


@given(_matrices(), st.lists(st.booleans(), min_size=1, max_size=8))
def test_recompute_stops_after_last_saving_op(x, plan):
    """``plan``: True = an op that saves (tanh), False = a counting op that saves nothing."""
    counts = {i: 0 for i, saves in enumerate(plan) if not saves}
    counts["tail"] = 0

    def tail(h):
        counts["tail"] += 1
        return F.reshape(F.transpose(-h + 1.0), (-1,))

    def fn(h):
        for i, saves in enumerate(plan):
            h = F.tanh(h) if saves else Tick(counts, i).apply(h)[0]
        return tail(h)

    xv = ms.Variable(x.copy())
    y = ms.checkpoint(fn, xv)
    assert all(c == 1 for c in counts.values())
    F.sum(y * y).backward()
    last_save = max((i for i, saves in enumerate(plan) if saves), default=-1)
    expected = {i: 2 if i < last_save else 1 for i in counts if i != "tail"}
    expected["tail"] = 1
    assert counts == expected
    # and the gradient is still right
    plain = ms.Variable(x.copy())
    y0 = fn(plain)
    F.sum(y0 * y0).backward()
    _close(xv.grad, plain.grad, "input gradient")


# ----- 8. determinism errors ----------------------------------------------------------
def _changing(first, second):
    """fn(x) = second_op(tanh(x)); the second op is ``first`` on the first call, then ``second``."""
    calls = [0]

    def fn(x):
        calls[0] += 1
        op = first if calls[0] == 1 else second
        return op(F.tanh(x))
    return fn


@given(_matrices())
def test_changed_op_is_reported_with_both_ops(x):
    fn = _changing(F.square, F.sigmoid)
    y = ms.checkpoint(fn, ms.Variable(x.copy()))
    with pytest.raises(ms.CheckpointError) as info:
        F.sum(y).backward()
    message = str(info.value)
    assert re.search(r"forward saved Square .*recomputation saved Sigmoid", message), message
    assert "checkpoint(" in message and "fn" in message


@given(_matrices())
def test_changed_shape_is_reported_with_both_shapes(x):
    calls = [0]
    r, n = x.shape

    def fn(v):
        calls[0] += 1
        h = v if calls[0] == 1 else v[1:]
        return F.sum(F.tanh(h))

    y = ms.checkpoint(fn, ms.Variable(x.copy()))
    with pytest.raises(ms.CheckpointError) as info:
        y.backward()
    message = str(info.value)
    assert str((r, n)) in message and str((r - 1, n)) in message, message
    assert "Tanh" in message


@given(_matrices(), st.integers(1, 4))
def test_fewer_saves_on_recompute_is_reported(x, n):
    calls = [0]

    def fn(v):
        calls[0] += 1
        for _ in range(n if calls[0] == 1 else n - 1):
            v = F.tanh(v)
        return v + 2.0  # Add saves nothing: the tanh outputs are the only saves

    y = ms.checkpoint(fn, ms.Variable(x.copy()))
    with pytest.raises(ms.CheckpointError) as info:
        F.sum(y).backward()
    message = str(info.value)
    assert f"saved {n - 1} arrays" in message and f"forward pass saved {n}" in message, message


@given(_matrices(lo=0.1, hi=1.0))
def test_value_only_change_checked_only_by_checksum(x):
    def make():
        calls = [0]

        def fn(v):
            calls[0] += 1
            return F.tanh(v * (1.0 if calls[0] == 1 else 2.0))
        return fn

    plain = ms.Variable(x.copy())
    F.sum(make()(plain)).backward()
    for check in ("none", "metadata"):
        xv = ms.Variable(x.copy())
        F.sum(ms.checkpoint(make(), xv, determinism_check=check)).backward()  # no CheckpointError
        # ...but nothing can make it right: the recomputed (changed) values were used.
        assert not np.allclose(xv.grad, plain.grad, atol=ATOL, rtol=RTOL)
    y = ms.checkpoint(make(), ms.Variable(x.copy()), determinism_check="checksum")
    with pytest.raises(ms.CheckpointError, match="Tanh at .* recomputed different values"):
        F.sum(y).backward()


@given(_matrices())
def test_determinism_check_none_suppresses_op_check(x):
    xv = ms.Variable(x.copy())
    y = ms.checkpoint(_changing(F.square, F.sigmoid), xv, determinism_check="none")
    F.sum(y).backward()  # no CheckpointError: the check is off
    assert xv.grad is not None and xv.grad.shape == x.shape
