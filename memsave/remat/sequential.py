"""checkpoint_sequential: checkpoint a chain of layers in segments.

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

from memsave.remat.recompute import run_checkpointed


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


def checkpoint_sequential(layers: Sequence[Callable], x: Any, segments: int | str = "sqrt",
                          preserve_rng_state: bool = True, **options: Any) -> Any:
    """Run ``layers`` one after another on ``x``, keeping only each segment's input.

    Every segment but the last is checkpointed; the last runs plainly, since backward
    needs its intermediates straight away (recomputing them would only cost time).
    ``options`` (``policy``, ``determinism_check``) go to :func:`memsave.checkpoint`.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> checkpoint_sequential([F.relu, F.tanh], np.ones(2), segments=1).array.round(3)
    array([0.762, 0.762])
    """
    layers = list(layers)
    bounds = segment_bounds(len(layers), segments)
    for start, stop in bounds[:-1]:
        x = run_checkpointed(_run_layers, (layers[start:stop], x), {},
                             preserve_rng_state=preserve_rng_state, **options)
    if bounds:
        start, stop = bounds[-1]
        x = _run_layers(layers[start:stop], x)
    return x
