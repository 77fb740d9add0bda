"""Containers: Sequential (a list of layers run in order) and MLP.

>>> import numpy as np, memsave.functions as F
>>> from memsave.nn import Linear
>>> net = Sequential(Linear(3, 4), F.relu, Linear(4, 1))
>>> net(np.ones((2, 3), dtype=np.float32)).shape, len(net), len(net[:2])
((2, 1), 3, 2)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

import memsave.functions as F
from memsave.nn.linear import Linear
from memsave.nn.module import Module, _indent

__all__ = ["Sequential", "MLP"]

Layer = Callable[..., Any]


def _callable_name(layer: Layer) -> str:
    return getattr(layer, "__name__", None) or type(layer).__name__


class Sequential(Module):
    """Layers applied in order; also a list of callables (for ``checkpoint_sequential``).

    Layers may be Modules (registered under their index, so names read ``"0.W"``) or
    plain functions such as ``F.relu``.  Indexing with a slice gives a Sequential that
    shares the layers.

    >>> import memsave.functions as F
    >>> from memsave.nn import Linear
    >>> net = Sequential(Linear(2, 3), F.tanh)
    >>> net.append(Linear(3, 1))
    >>> [n for n, _ in net.named_parameters()]
    ['0.W', '0.b', '2.W', '2.b']
    >>> [type(layer).__name__ for layer in net[::2]]
    ['Linear', 'Linear']
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        self._layers: list[Layer] = []
        for layer in layers:
            self.append(layer)

    def append(self, layer: Layer) -> None:
        """Add ``layer`` at the end.

        >>> from memsave.nn import Linear
        >>> net = Sequential(); net.append(Linear(2, 2)); len(net)
        1
        """
        if not callable(layer):
            raise TypeError(f"Sequential layers must be callable, got {type(layer).__name__}")
        if isinstance(layer, Module):
            self.add_module(str(len(self._layers)), layer)
        self._layers.append(layer)

    def extend(self, layers: Iterable[Layer]) -> None:
        """Append each of ``layers``.

        >>> import memsave.functions as F
        >>> net = Sequential(); net.extend([F.relu, F.tanh]); len(net)
        2
        """
        for layer in layers:
            self.append(layer)

    @overload
    def __getitem__(self, index: int) -> Layer: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Layer | Sequential:
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._layers)

    def forward(self, x: Any) -> Any:
        for layer in self._layers:
            x = layer(x)
        return x

    def __repr__(self) -> str:
        if not self._layers:
            return f"{type(self).__name__}()"
        lines = [f"({i}): " + (repr(layer) if isinstance(layer, Module) else _callable_name(layer))
                 for i, layer in enumerate(self._layers)]
        return type(self).__name__ + "(\n  " + "\n  ".join(_indent(s, 2) for s in lines) + "\n)"


class MLP(Sequential):
    """Linear layers of widths ``sizes`` with ``activation`` between them (and, optionally, after).

    ``MLP([4, 16, 16, 2])`` is Linear(4, 16), relu, Linear(16, 16), relu, Linear(16, 2):
    a Sequential, so it slices and checkpoints like one.

    >>> import numpy as np
    >>> mlp = MLP([4, 8, 2], final_activation=F.sigmoid)
    >>> len(mlp), mlp(np.zeros((3, 4), dtype=np.float32)).shape
    (4, (3, 2))
    """

    def __init__(self, sizes: Sequence[int], activation: Layer = F.relu,
                 final_activation: Layer | None = None, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        super().__init__()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.append(Linear(n_in, n_out, bias=bias, dtype=dtype))
            last = i == len(sizes) - 2
            if not last:
                self.append(activation)
            elif final_activation is not None:
                self.append(final_activation)
        self.sizes = sizes
