"""RecomputeNode and checkpoint(): the engine behind @checkpointed, forget and checkpoint_sequential.

Forward runs ``fn`` with the graph built as usual, under a saved-array hook that
swaps every array an op wants to keep for a numbered placeholder (a *slot*).
The first time backward unpacks a slot, ``fn`` runs again on the same inputs
with the RNG streams restored, under a hook that fills the slots in order; it
stops as soon as every slot backward still needs is filled.  The recomputation
must save the same arrays (count, op, shape, dtype; optionally values), or a
:class:`~memsave.errors.CheckpointError` says which op differs.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> x = ms.Variable(np.linspace(-1, 1, 4))
>>> y = checkpoint(lambda v: F.tanh(F.tanh(v)), x)
>>> y.sum().backward()
>>> x.grad.shape
(4,)
"""
from __future__ import annotations

import os
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from memsave import backend, random
from memsave.config import config, using_config
from memsave.core import hooks
from memsave.core.function import _Saved
from memsave.core.variable import Variable
from memsave.errors import CheckpointError, UselessCheckpointWarning

Policy = Callable[[Any, Any], bool]
DETERMINISM_CHECKS = ("metadata", "checksum", "none")


class _StopRecompute(BaseException):
    """Raised by the fill hook once every needed slot is filled.

    A BaseException so that a user's ``except Exception`` inside ``fn`` cannot swallow it.
    """


class _Kept:
    """A saved array the checkpoint keeps for real: a segment input or one the policy saves."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array


class _Slot:
    """Placeholder for a dropped array: slot ``index`` of a RecomputeNode."""

    __slots__ = ("owner", "index")

    def __init__(self, owner: RecomputeNode, index: int) -> None:
        self.owner = owner
        self.index = index

    def __del__(self) -> None:
        # The op holding this placeholder was released: backward no longer needs the slot.
        self.owner.alive.discard(self.index)


class _SlotRecord:
    """What forward saved in one slot, to check the recomputation against."""

    __slots__ = ("op", "shape", "dtype", "fingerprint")

    def __init__(self, op: str, array: Any, checksum: bool) -> None:
        self.op = op
        self.shape = array.shape
        self.dtype = array.dtype
        self.fingerprint = _fingerprint(array) if checksum else None


def _fingerprint(array: Any) -> tuple[float, ...]:
    """Sum and about 64 evenly spaced values: a cheap summary that catches recomputed values
    drifting (a different dropout mask included)."""
    flat = array.reshape(-1)
    if flat.size == 0:
        return ()
    picks = flat[::max(1, flat.size // 64)]
    return (float(flat.sum()),) + tuple(float(v) for v in backend.to_cpu(picks))


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class RecomputeNode:
    """One checkpointed call: its function, inputs, RNG snapshot and saved-array slots."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, policy: Policy | None,
                 preserve_rng_state: bool, determinism_check: str) -> None:
        if determinism_check not in DETERMINISM_CHECKS:
            raise ValueError(f"determinism_check must be one of {DETERMINISM_CHECKS}, "
                             f"got {determinism_check!r}")
        self.fn = fn
        self.label = f"checkpoint({_fn_name(fn)})"
        self.policy = policy
        self.check = determinism_check
        self.rng_state = random.get_state() if preserve_rng_state else None
        self.records: list[_SlotRecord] = []
        self.alive: set[int] = set()
        self.filled: dict[int, Any] = {}
        self._dropped: dict[int, tuple[weakref.ref, int]] = {}
        # Inputs are kept through the hooks active *outside* this checkpoint, so that an
        # enclosing checkpoint drops them too (that is how nesting saves memory).
        self._args, self._kwargs = args, kwargs
        self._inputs: dict[Any, tuple[_Saved, bool]] = {}
        self.kept_bytes = 0  # non-leaf inputs held alive here (leaves are alive anyway)
        for key, value in _variable_arguments(args, kwargs):
            pair = None if value.creator is None else hooks.current_hooks()
            if pair is None:
                saved = _Saved(value.array, None)
                self.kept_bytes += 0 if value.creator is None else value.array.nbytes
            else:
                saved = _Saved(pair[0](value.array, self), pair[1])
            self._inputs[key] = (saved, value.requires_grad)
        self._input_ids = {id(v.array) for _, v in _variable_arguments(args, kwargs)}

    # ----- forward ----------------------------------------------------------------
    def _keeps(self, array: Any, op: Any, input_ids: set[int]) -> bool:
        return id(array) in input_ids or (self.policy is not None and self.policy(op, array))

    def pack(self, array: Any, op: Any) -> _Kept | _Slot:
        """Forward-time hook: keep inputs and policy-saved arrays, replace the rest by slots."""
        if self._keeps(array, op, self._input_ids):
            return _Kept(array)
        index = len(self.records)
        self.records.append(_SlotRecord(op.label, array, self.check == "checksum"))
        self.alive.add(index)
        owner = backend.memory_owner(array)
        self._dropped.setdefault(id(owner), (weakref.ref(owner), owner.nbytes))
        return _Slot(self, index)

    @staticmethod
    def unpack(packed: _Kept | _Slot) -> Any:
        if isinstance(packed, _Kept):
            return packed.array
        return packed.owner.take(packed.index)

    def run_forward(self) -> Any:
        with hooks.saved_array_hooks(self.pack, self.unpack):
            return self.fn(*self._args, **self._kwargs)

    def freed_bytes(self) -> int:
        """Bytes that dropping saved arrays actually freed, measured right after forward.

        An array counts only if nothing else holds it: a segment's output, for instance,
        is alive anyway.  Compare with ``kept_bytes``: the non-leaf inputs this node keeps
        alive for the recomputation (leaves such as parameters are alive anyway).
        """
        freed = sum(nbytes for ref, nbytes in self._dropped.values() if ref() is None)
        self._dropped.clear()
        return freed

    def release_arguments(self) -> None:
        """Forget the caller's Variables; recomputation uses the inputs saved in ``_inputs``."""
        self._args = tuple(None if isinstance(a, Variable) else a for a in self._args)
        self._kwargs = {k: None if isinstance(v, Variable) else v for k, v in self._kwargs.items()}
        self._input_ids = set()

    # ----- backward ---------------------------------------------------------------
    def take(self, index: int) -> Any:
        """Hand slot ``index`` to backward, recomputing first if it is not filled."""
        if index not in self.filled:
            self.recompute()
        return self.filled.pop(index)

    def _fresh_arguments(self) -> tuple[tuple, dict]:
        args, kwargs = list(self._args), dict(self._kwargs)
        for key, (saved, requires_grad) in self._inputs.items():
            v = Variable(saved.get(), requires_grad=requires_grad)
            if isinstance(key, int):
                args[key] = v
            else:
                kwargs[key] = v
        return tuple(args), kwargs

    def recompute(self) -> None:
        """Re-run ``fn`` and fill every slot that is still needed."""
        needed = self.alive - set(self.filled)
        count = 0
        args, kwargs = self._fresh_arguments()
        # The arrays passed in now, not those of the forward pass: those may be gone and
        # their ids reused.
        input_ids = {id(v.array) for _, v in _variable_arguments(args, kwargs)}

        def fill(array: Any, op: Any) -> None:
            nonlocal count
            if self._keeps(array, op, input_ids):
                return None
            index = count
            count += 1
            self._verify(index, op, array)
            if index in needed:
                self.filled[index] = array
                needed.discard(index)
                if not needed:
                    raise _StopRecompute
            return None

        outer_state = random.get_state() if self.rng_state is not None else None
        try:
            if self.rng_state is not None:
                random.set_state(self.rng_state)
            with hooks.saved_array_hooks(fill, _unreachable), \
                    using_config("enable_backprop", True), using_config("in_recompute", True):
                self.fn(*args, **kwargs)
        except _StopRecompute:
            pass
        finally:
            if outer_state is not None:
                random.set_state(outer_state)
        if needed:
            raise CheckpointError(
                f"{self.label}: the recomputation saved {count} arrays for backward, but the "
                f"forward pass saved {len(self.records)}. The function must do the same work "
                "every time it is called with the same inputs.")

    def _verify(self, index: int, op: Any, array: Any) -> None:
        if self.check == "none":
            return
        if index >= len(self.records):
            raise CheckpointError(
                f"{self.label}: the recomputation saved more arrays than the forward pass "
                f"({len(self.records)}); extra one from {op.label} with shape {array.shape}.")
        rec = self.records[index]
        if (rec.op, rec.shape, rec.dtype) != (op.label, array.shape, array.dtype):
            raise CheckpointError(
                f"{self.label}: saved array #{index} differs between forward and recomputation: "
                f"forward saved {rec.op} {rec.shape} {rec.dtype}, recomputation saved "
                f"{op.label} {array.shape} {array.dtype}. The function must be deterministic "
                "given its inputs (control flow included).")
        if rec.fingerprint is not None:
            now = _fingerprint(array)
            if any(abs(a - b) > 1e-5 * max(abs(a), abs(b), 1e-30) for a, b in zip(rec.fingerprint, now)):
                diff = max(abs(a - b) for a, b in zip(rec.fingerprint, now))
                raise CheckpointError(
                    f"{self.label}: {op.label} recomputed different values for saved array "
                    f"#{index} {array.shape}: fingerprint (sum, samples) {rec.fingerprint} vs "
                    f"{now}, largest difference {diff:.3g}. Is there randomness that does not "
                    "come from memsave.random or NumPy's global RNG, or a global that changed?")


def _unreachable(packed: Any) -> Any:
    raise CheckpointError("an array saved during recomputation was read back; this is a memsave bug")


def _variable_arguments(args: Sequence, kwargs: dict) -> list[tuple[Any, Variable]]:
    found: list[tuple[Any, Variable]] = [(i, a) for i, a in enumerate(args) if isinstance(a, Variable)]
    found += [(k, v) for k, v in kwargs.items() if isinstance(v, Variable)]
    return found


def _wrap_arrays(values: Sequence) -> tuple:
    return tuple(Variable(v, requires_grad=False) if backend.is_array(v) else v for v in values)


_warned_sites: set[tuple[str, int]] = set()


def _warn_once_per_call_site(message: str) -> None:
    """Warn at the first frame outside memsave and wrapt (the user's call site), once per site."""
    package_dir = os.path.dirname(os.path.dirname(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(package_dir)
                                 or "wrapt" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    site = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else ("", 0)
    if site not in _warned_sites:
        _warned_sites.add(site)
        warnings.warn(message, UselessCheckpointWarning, stacklevel=level + 1)


def run_checkpointed(fn: Callable, args: Sequence, kwargs: dict, *, policy: Policy | None = None,
                     preserve_rng_state: bool = True, determinism_check: str = "metadata") -> Any:
    """:func:`checkpoint` with the function's own arguments kept apart from the options."""
    args = _wrap_arrays(args)
    kwargs = dict(zip(kwargs, _wrap_arrays(tuple(kwargs.values()))))
    if not (config.checkpointing_enabled and config.enable_backprop):
        return fn(*args, **kwargs)
    node = RecomputeNode(fn, args, kwargs, policy, preserve_rng_state, determinism_check)
    outputs = node.run_forward()
    node.release_arguments()
    if node.records:
        freed, kept = node.freed_bytes(), node.kept_bytes
        if freed <= kept:
            _warn_once_per_call_site(
                f"{node.label} frees {freed} bytes but keeps {kept} bytes of inputs alive for "
                "recomputation: it costs time and saves no memory. Checkpoint larger blocks "
                "(several layers) instead.")
    return outputs


def checkpoint(fn: Callable, *args: Any, policy: Policy | None = None,
               preserve_rng_state: bool = True, determinism_check: str = "metadata",
               **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` keeping none of its intermediates; recompute them in backward.

    ndarray arguments become Variables; other arguments pass through; the result
    has whatever structure ``fn`` returns.  ``policy(op, array) -> bool`` may keep
    some arrays for real (memory only: the recomputation still runs until every
    dropped array it needs is refilled).
    ``preserve_rng_state`` replays dropout and other draws exactly.
    ``determinism_check``: ``"metadata"`` (op, shape, dtype of every saved array),
    ``"checksum"`` (also a value fingerprint) or ``"none"``.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> W = ms.Parameter(np.eye(3))
    >>> y = checkpoint(lambda x: F.tanh(F.tanh(x @ W)), np.ones((2, 3)))
    >>> y.shape
    (2, 3)
    """
    return run_checkpointed(fn, args, kwargs, policy=policy, preserve_rng_state=preserve_rng_state,
                            determinism_check=determinism_check)
