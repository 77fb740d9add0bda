"""checkpoint_sequential: checkpoint a chain of layers in segments, or by a planner schedule.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> layers = [F.tanh] * 9
>>> y = checkpoint_sequential(layers, ms.Variable(np.ones(4)), segments=3)
>>> y.shape
(4,)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from memsave import backend
from memsave.core.variable import Variable
from memsave.remat.planner import Checkpoint, Schedule, Step, plan
from memsave.remat.recompute import check_options, run_checkpointed


def segment_bounds(n_layers: int, segments: int | str) -> list[tuple[int, int]]:
    """Split ``n_layers`` into contiguous ``(start, stop)`` ranges of near-equal length.

    ``segments="sqrt"`` uses round(sqrt(n_layers)) segments, the classic memory optimum
    for equal layers.

    >>> segment_bounds(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    >>> len(segment_bounds(64, "sqrt"))
    8
    """
    if segments == "sqrt":
        segments = max(1, round(math.sqrt(n_layers)))
    if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
        raise ValueError(f"segments must be a positive int or 'sqrt', got {segments!r}")
    if n_layers == 0:
        return []
    segments = min(segments, n_layers)
    size, extra = divmod(n_layers, segments)
    bounds, start = [], 0
    for k in range(segments):
        stop = start + size + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _run_layers(layers: Sequence[Callable], x: Any) -> Any:
    for layer in layers:
        x = layer(x)
    return x


def _run_steps(steps: Sequence[Step], layers: Sequence[Callable], x: Any, options: dict) -> Any:
    """Run a planner schedule: taped layers plainly, each Checkpoint as a (nested) checkpoint."""
    for step in steps:
        if isinstance(step, Checkpoint):
            x = run_checkpointed(_run_steps, (step.steps, layers, x, options), {}, **options,
                                 label=f"checkpoint_sequential(layers[{step.start}:{step.stop}])")
        else:
            x = layers[step](x)
    return x


def _check_arguments(n_layers: int, segments: Any, budget: Any, schedule: Any) -> None:
    if backend.is_array(segments) or isinstance(segments, Variable):
        raise TypeError(
            "checkpoint_sequential(layers, x, segments) takes one input x; its third argument is "
            f"segments (a positive int or 'sqrt'), got an array of shape {segments.shape}. "
            "Chains have a single input: pass other arrays to the layers (closures) or use "
            "memsave.checkpoint for a block with several inputs.")
    given = [name for name, value in (("segments", segments), ("budget", budget),
                                      ("schedule", schedule)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"checkpoint_sequential takes one of segments, budget or schedule, got "
                         f"{' and '.join(given)}; pass only one")
    if schedule is not None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a memsave.planner.Schedule, got {type(schedule).__name__}")
        if schedule.n_layers != n_layers:
            raise ValueError(f"schedule is for {schedule.n_layers} layers but {n_layers} were given; "
                             "plan for this chain (memsave.planner.revolve / plan)")


def checkpoint_sequential(layers: Sequence[Callable], x: Any, segments: int | str | None = None, *,
                          budget: int | str | None = None, schedule: Schedule | None = None,
                          gradients: str = "kept", preserve_rng_state: bool = True,
                          **options: Any) -> Any:
    """Run ``layers`` one after another on ``x``, recomputing instead of storing.

    Give one of: ``segments`` (default ``"sqrt"``): equal segments, each keeping only its
    input, every one but the last checkpointed (the last runs plainly, since backward
    needs its intermediates straight away); ``budget`` (bytes or ``"300MiB"``): profile
    the layers on ``x`` and run the fastest schedule whose predicted peak fits
    (:func:`memsave.planner.plan`; profiling runs every layer three more times forward and
    twice backward, so in a loop plan once and pass ``schedule``; what the loss after the
    chain allocates is not in that budget: give it to ``planner.plan(..., loss=)``);
    ``schedule``: a
    :class:`memsave.planner.Schedule` (e.g. ``planner.revolve(len(layers), slots)``),
    run with nested checkpoints.  With ``budget``, ``gradients="freed"`` leaves parameter
    gradients out of the budget, for an optimizer applied inside backward
    (``optimizer.step_in_backward()``).  ``options`` (``policy``, ``determinism_check``) go to
    :func:`memsave.checkpoint`.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> checkpoint_sequential([F.relu, F.tanh], np.ones(2), segments=1).array.round(3)
    array([0.762, 0.762])
    >>> checkpoint_sequential([F.tanh] * 4, np.ones(2), budget="1MiB").shape
    (2,)
    """
    layers = list(layers)
    _check_arguments(len(layers), segments, budget, schedule)
    options = check_options(preserve_rng_state=preserve_rng_state, **options)
    if budget is not None:
        schedule = plan(layers, x, budget, gradients=gradients)
    if schedule is not None:
        if not (isinstance(x, Variable) or backend.is_array(x)):
            raise TypeError(f"x must be a Variable or an array, got {type(x).__name__}")
        x = x if isinstance(x, Variable) else Variable(x, requires_grad=False)
        return _run_steps(schedule.steps, layers, x, options)
    bounds = segment_bounds(len(layers), "sqrt" if segments is None else segments)
    for start, stop in bounds[:-1]:
        x = run_checkpointed(_run_layers, (layers[start:stop], x), {}, **options,
                             label=f"checkpoint_sequential(layers[{start}:{stop}])")
    if bounds:
        start, stop = bounds[-1]
        x = _run_layers(layers[start:stop], x)
    return x
