"""Initialisers: new arrays drawn from memsave's RNG, so ``memsave.random.seed(n)`` fixes them.

Every initialiser takes a shape and returns a fresh NumPy array of ``dtype``
(draws are made in float64 on the CPU and cast, so a float32 and a float64 model
built after the same seed hold the same numbers up to rounding).  To
re-initialise a parameter in place: ``p.array[...] = init.xavier_uniform(p.shape)``.

>>> import memsave
>>> memsave.random.seed(0); a = kaiming_uniform((4, 3))
>>> memsave.random.seed(0); b = kaiming_uniform((4, 3))
>>> bool((a == b).all()), a.dtype
(True, dtype('float32'))
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from memsave import random

__all__ = ["calculate_gain", "fan_in_and_fan_out", "zeros", "ones", "uniform", "normal",
           "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal"]

Shape = Sequence[int]


def calculate_gain(nonlinearity: str = "leaky_relu", param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    ``param`` is leaky_relu's negative slope (default 0.01).

    >>> calculate_gain("relu") == 2 ** 0.5
    True
    """
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected one of linear, sigmoid, "
                     "tanh, relu, leaky_relu, selu")


def fan_in_and_fan_out(shape: Shape) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of ``shape`` = ``(out, in, *kernel)``.

    >>> fan_in_and_fan_out((16, 3, 3, 3))
    (27, 144)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight of rank >= 2, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: Shape, mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def _rng() -> Any:
    return random.get_generator(np)


def zeros(shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """An array of zeros (biases, BatchNorm/LayerNorm beta).

    >>> zeros((2,))
    array([0., 0.], dtype=float32)
    """
    return np.zeros(tuple(shape), dtype=dtype)


def ones(shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """An array of ones (norm gammas).

    >>> ones((2,), dtype=np.float64)
    array([1., 1.])
    """
    return np.ones(tuple(shape), dtype=dtype)


def uniform(shape: Shape, low: float = 0.0, high: float = 1.0, dtype: Any = np.float32
            ) -> np.ndarray:
    """U(low, high) samples.

    >>> bool(((u := uniform((100,), -1, 1)) >= -1).all() and (u < 1).all())
    True
    """
    return _rng().uniform(low, high, size=tuple(shape)).astype(dtype)


def normal(shape: Shape, mean: float = 0.0, std: float = 1.0, dtype: Any = np.float32
           ) -> np.ndarray:
    """N(mean, std**2) samples (embeddings).

    >>> normal((3, 2), std=0.02).shape
    (3, 2)
    """
    return (_rng().standard_normal(tuple(shape)) * std + mean).astype(dtype)


def kaiming_uniform(shape: Shape, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", dtype: Any = np.float32) -> np.ndarray:
    """He et al. (2015) uniform: U(-b, b) with b = gain * sqrt(3 / fan).

    ``a=math.sqrt(5)`` gives PyTorch's default for Linear and Conv weights, b = 1/sqrt(fan_in).

    >>> w = kaiming_uniform((64, 100), a=math.sqrt(5))
    >>> bool(abs(w).max() <= 0.1)
    True
    """
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(shape, -bound, bound, dtype)


def kaiming_normal(shape: Shape, a: float = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu", dtype: Any = np.float32) -> np.ndarray:
    """He et al. (2015) normal: N(0, (gain / sqrt(fan))**2).

    >>> kaiming_normal((8, 4), nonlinearity="relu").shape
    (8, 4)
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return normal(shape, 0.0, std, dtype)


def xavier_uniform(shape: Shape, gain: float = 1.0, dtype: Any = np.float32) -> np.ndarray:
    """Glorot & Bengio (2010) uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).

    >>> bool(abs(xavier_uniform((3, 3))).max() <= 1.0)
    True
    """
    fan_in, fan_out = fan_in_and_fan_out(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, dtype)


def xavier_normal(shape: Shape, gain: float = 1.0, dtype: Any = np.float32) -> np.ndarray:
    """Glorot & Bengio (2010) normal: N(0, gain**2 * 2 / (fan_in + fan_out)).

    >>> xavier_normal((3, 5)).dtype
    dtype('float32')
    """
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return normal(shape, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), dtype)
