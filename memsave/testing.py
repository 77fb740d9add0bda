"""Test helpers for users' own suites: checkpoint equivalence and hypothesis strategies.

>>> import numpy as np, memsave.functions as F
>>> assert_checkpoint_equivalent(lambda x: F.tanh(F.tanh(x)), np.linspace(-1, 1, 6))
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memsave import backend, random
from memsave.core.backprop import grad
from memsave.core.variable import Variable
from memsave.remat.recompute import run_checkpointed


def _leaves(out: Any) -> list[Variable]:
    """Every Variable in a nested structure of tuples, lists and dicts, in order."""
    if isinstance(out, Variable):
        return [out]
    if isinstance(out, dict):
        return [v for value in out.values() for v in _leaves(value)]
    if isinstance(out, (tuple, list)):
        return [v for item in out for v in _leaves(item)]
    return []


def _run(fn: Callable, inputs: Sequence[Any], checkpointed: bool, options: dict,
         second_order: bool, seed: int) -> tuple[list, list, list, tuple]:
    random.seed(seed)
    arrays = [backend.asarray(a).copy() for a in inputs]
    xs = [Variable(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = run_checkpointed(fn, xs, {}, **options) if checkpointed else fn(*xs)
    ys = _leaves(out)
    rng = np.random.default_rng(seed + 1)

    def random_like(v: Variable) -> Variable:
        # Drawn on the host, then put where ``v`` lives (NumPy or CuPy).
        draw = rng.standard_normal(v.shape).astype(v.dtype)
        return Variable(backend.asarray(draw, v.xp), requires_grad=False)

    gys = [random_like(y) for y in ys]
    wrt = [x for x in xs if x.requires_grad]
    firsts = grad(ys, wrt, gys, create_graph=second_order, allow_unused=True)
    seconds: list = []
    if second_order:
        used = [(g, x) for g, x in zip(firsts, wrt) if g is not None]
        vs = [random_like(x) for _, x in used]
        if used:
            total = sum((g * v).sum() for (g, _), v in zip(used, vs))
            seconds = list(grad([total], wrt, allow_unused=True))
    after = (float(random.get_generator().random()), float(np.random.random()))
    return ys, list(firsts), seconds, after


def _arrays(vs: Sequence[Variable | None]) -> list[Any]:
    return [None if v is None else backend.to_cpu(v.array) for v in vs]


def assert_checkpoint_equivalent(fn: Callable[..., Any], *inputs: Any, second_order: bool = False,
                                 atol: float = 1e-10, rtol: float = 1e-10, seed: int = 0,
                                 **options: Any) -> None:
    """Assert that checkpointing ``fn`` changes nothing: outputs, gradients, RNG streams after.

    Runs ``fn`` plainly and through :func:`memsave.checkpoint` (``options`` go there) from
    the same seed, and compares outputs, first derivatives (and second ones with
    ``second_order=True``) and the next draw of the RNG streams.  Use float64 inputs.

    >>> import numpy as np, memsave.functions as F
    >>> assert_checkpoint_equivalent(lambda a, b: F.tanh(F.tanh(a * b)), np.ones(3), np.ones(3),
    ...                              second_order=True)
    """
    plain = _run(fn, inputs, False, options, second_order, seed)
    ckpt = _run(fn, inputs, True, options, second_order, seed)
    for what, p, c in (("output", plain[0], ckpt[0]), ("first derivative", plain[1], ckpt[1]),
                       ("second derivative", plain[2], ckpt[2])):
        if len(p) != len(c):
            raise AssertionError(f"checkpointed call gives {len(c)} {what}s, plain gives {len(p)}")
        for i, (a, b) in enumerate(zip(_arrays(p), _arrays(c))):
            if (a is None) != (b is None):
                raise AssertionError(f"{what} {i}: plain is {a is None and 'None'}, "
                                     f"checkpointed is {b is None and 'None'}")
            if a is not None:
                np.testing.assert_allclose(b, a, atol=atol, rtol=rtol,
                                           err_msg=f"{what} {i} differs with checkpointing")
    if plain[3] != ckpt[3]:
        raise AssertionError(f"RNG streams diverge after the call: plain draws {plain[3]}, "
                             f"checkpointed draws {ckpt[3]}")


def float_arrays(max_dims: int = 3, max_side: int = 4, dtype: Any = np.float64,
                 bound: float = 2.0) -> Any:
    """Hypothesis strategy: small finite float arrays (needs the ``test`` extra).

    >>> from hypothesis import given
    >>> @given(float_arrays())
    ... def check(a):
    ...     assert np.isfinite(a).all()
    >>> check()
    """
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    return hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=max_dims, max_side=max_side),
                      elements=st.floats(-bound, bound, allow_nan=False, width=np.dtype(dtype).itemsize * 8))
