"""RecomputeNode and checkpoint(): the engine behind @checkpointed, forget and checkpoint_sequential.

Forward runs ``fn`` with the graph built as usual, under a saved-array hook that
swaps every array an op wants to keep for a numbered placeholder (a *slot*).
The first time backward unpacks a slot, ``fn`` runs again on the same inputs,
replaying the random draws it made, under a hook that fills the slots in order;
it stops as soon as every slot backward still needs is filled.  The recomputation
must save the same arrays (count, op, shape, dtype; optionally values), or a
:class:`~memsave.errors.CheckpointError` says which op differs.  A policy
(:mod:`memsave.policies`) decides per op output, once forward has finished, what is
kept instead: an op whose outputs are all kept is not re-run by the recomputation.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> x = ms.Variable(np.linspace(-1, 1, 4))
>>> y = checkpoint(lambda v: F.tanh(F.tanh(v)), x)
>>> y.sum().backward()
>>> x.grad.shape
(4,)
"""
from __future__ import annotations

import contextlib
import inspect
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from memsave import _callsite, backend, random
from memsave.config import config, using_config
from memsave.core import hooks
from memsave.core.saved import SavedArray, check_unmodified, stamp
from memsave.core.variable import Variable
from memsave.errors import CheckpointError, UselessCheckpointWarning
from memsave.remat import policies

Policy = policies.Policy
DETERMINISM_CHECKS = ("metadata", "checksum", "none")


class _StopRecompute(BaseException):
    """Raised by the fill hook once every needed slot is filled.

    A BaseException so that a user's ``except Exception`` inside ``fn`` cannot swallow it.
    """


class _Kept:
    """A saved array kept for real: a NumPy scalar, or any array saved during a recomputation
    (whose graph is thrown away afterwards)."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array


class _Input:
    """A saved array that is one of the checkpoint's inputs: read back from the node's own copy,
    so that an enclosing checkpoint can drop it."""

    __slots__ = ("owner", "key")

    def __init__(self, owner: RecomputeNode, key: Any) -> None:
        self.owner = owner
        self.key = key


class _Delegated:
    """A saved array the policy keeps, stored through the hooks outside this checkpoint."""

    __slots__ = ("packed", "unpack")

    def __init__(self, packed: Any, unpack: Any) -> None:
        self.packed = packed
        self.unpack = unpack

    def get(self) -> Any:
        return self.unpack(self.packed)


class _Slot:
    """Placeholder for an array an op saved inside the checkpoint.

    While forward runs it holds the array (a ``grad()`` inside the function may read it).
    When forward ends it is resolved: either ``stored`` (the policy keeps it) or slot
    ``index`` of its RecomputeNode (dropped, refilled by the recomputation).
    """

    __slots__ = ("owner", "index", "array", "stored", "label", "site", "__weakref__")

    def __init__(self, owner: RecomputeNode, array: Any, label: str, site: str | None) -> None:
        self.owner = owner
        self.index: int | None = None
        self.array = array
        self.stored: Any = None
        self.label = label
        self.site = site

    def __del__(self) -> None:
        # The op holding this placeholder was released: backward no longer needs the slot.
        if self.index is not None:
            self.owner.alive.discard(self.index)
            self.owner.filled.pop(self.index, None)


class _OpRecord:
    """One op run by the checkpointed function (logged only under a policy)."""

    __slots__ = ("label", "op", "outputs", "refs", "decisions", "retained_in", "retain_out", "consts",
                 "stored", "site")

    def __init__(self, op: Any) -> None:
        self.label = op.label
        self.op = op
        self.outputs: tuple = ()                 # while current, or for good if kept
        self.refs: tuple = ()                    # weak references to the outputs
        self.decisions: list = []
        # What the op kept for its own backward, to redo when the recomputation skips it.
        self.retained_in: tuple[int, ...] = ()
        self.retain_out: tuple[int, ...] = ()
        self.consts: list = []                   # the packed save_for_backward arrays
        self.stored: list | None = None          # the kept outputs, if the op is not re-run
        self.site: str | None = None


class _SlotRecord:
    """What forward saved in one slot, to check the recomputation against."""

    __slots__ = ("op", "shape", "dtype", "fingerprint", "site")

    def __init__(self, op: str, array: Any, checksum: bool, site: str | None) -> None:
        self.op = op
        self.shape = array.shape
        self.dtype = array.dtype
        self.fingerprint = _fingerprint(array) if checksum else None
        self.site = site


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


def check_options(policy: Any = None, preserve_rng_state: Any = True,
                  determinism_check: Any = "metadata", early_stop: Any = True,
                  use_reentrant: Any = None) -> dict[str, Any]:
    """Validate checkpoint options (at decoration time too) and return them as keywords.

    >>> check_options(determinism_check="checksum")["determinism_check"]
    'checksum'
    >>> check_options(preserve_rng_state="yes")
    Traceback (most recent call last):
    ...
    TypeError: preserve_rng_state must be True or False, got 'yes'
    """
    if policy is not None:
        policies.check_policy(policy)
    for name, value in (("preserve_rng_state", preserve_rng_state), ("early_stop", early_stop)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if determinism_check not in DETERMINISM_CHECKS:
        raise ValueError(f"determinism_check must be one of {DETERMINISM_CHECKS}, "
                         f"got {determinism_check!r}")
    if use_reentrant is not None and use_reentrant is not False:
        raise ValueError(
            f"use_reentrant={use_reentrant!r}: memsave has only the non-reentrant checkpoint "
            "(it supports grad(), nesting and double backprop); pass use_reentrant=False or "
            "leave it out")
    return dict(policy=policy, preserve_rng_state=preserve_rng_state,
                determinism_check=determinism_check, early_stop=early_stop)


class RecomputeNode:
    """One checkpointed call: its function, inputs, recorded draws and saved-array slots."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, policy: Policy | None,
                 preserve_rng_state: bool, determinism_check: str, early_stop: bool,
                 label: str | None = None, report: bool = False) -> None:
        self.fn = fn
        self.label = label or f"checkpoint({_fn_name(fn)})"
        self.policy = policy
        self.check = determinism_check
        self.early_stop = early_stop
        self.draws: list | None = [] if preserve_rng_state else None
        self.numpy_rng: tuple | None = None   # NumPy's global state before fn, if fn drew from it
        self._numpy_unknown = False           # it moved while other threads ran: fn's draw or theirs
        self.records: list[_SlotRecord] = []
        self.alive: set[int] = set()
        self.filled: dict[int, Any] = {}
        self._pending: list[_Slot] = []             # placeholders, in the order ops saved
        self._ops: list[_OpRecord] | None = [] if policy is not None else None
        self._current: _OpRecord | None = None
        self._producers: dict[int, tuple] = {}      # id(output) -> (weakref, op record, index)
        self._want_sites = determinism_check == "checksum" or report
        self._report = report
        self.residuals: list[tuple] = []            # (op, site, array, stored) when report
        # Leaf arrays fn reads besides its arguments (parameters, captured variables), stamped
        # so that the recomputation refuses to run on values written in place since.
        self._outside: dict[int, tuple[weakref.ref, Any]] = {}
        self._dropped: dict[int, tuple[weakref.ref, int]] = {}
        self._outer = hooks.current_hooks()
        # Stack depth at creation, and the deepest nested checkpoint created inside fn: a
        # recomputation needs that many frames again, from wherever backward starts it.
        self._depth = self._deepest = _stack_depth()
        for enclosing in _running_forwards.get():
            enclosing._deepest = max(enclosing._deepest, self._depth)
        # Inputs are kept through the hooks active *outside* this checkpoint, so that an
        # enclosing checkpoint drops them too (that is how nesting saves memory).
        self._args, self._kwargs = args, kwargs
        self._inputs: dict[Any, tuple[SavedArray, bool]] = {}
        self.kept_bytes = 0  # non-leaf inputs held alive here (leaves are alive anyway)
        self.policy_kept_bytes = 0  # op outputs the policy keeps that no op saved (set by forward)
        self._input_keys: dict[int, Any] = {}
        for key, value in _variable_arguments(args, kwargs):
            if value.creator is None or self._outer is None:
                saved = SavedArray(value.array)
                self.kept_bytes += 0 if value.creator is None else value.array.nbytes
            else:
                saved = SavedArray(self._outer.pack(value.array, self), self._outer.unpack)
            self._inputs[key] = (saved, value.requires_grad)
            self._input_keys[id(value.array)] = key

    # ----- forward ----------------------------------------------------------------
    def pack(self, array: Any, op: Any) -> Any:
        """Forward-time hook: refer to inputs; anything else gets a placeholder, resolved when
        forward ends (kept by the policy, or a slot to refill)."""
        key = self._input_keys.get(id(array))
        if key is not None:
            kept = self._inputs[key][0].packed
            # An input that is itself an enclosing checkpoint's input: refer to that one
            # directly, so reading it back never climbs a chain of nested checkpoints.
            return kept if isinstance(kept, _Input) else _Input(self, key)
        if not backend.is_array(array):          # a NumPy scalar: tiny, and not weak-referable
            return _Kept(array)
        site = _callsite.user_site() if self._want_sites else None
        slot = _Slot(self, array, op.label, site)
        self._pending.append(slot)
        return slot

    def observe(self, op: Any, inputs: Sequence[Variable], forward: Callable[[], Any]) -> Any:
        """Forward-time op hook: stamp the leaf arrays an op reads that are not fn's arguments;
        under a policy, log the op and its outputs."""
        for v in inputs:
            array = v.array
            if (v.creator is None and id(array) not in self._outside
                    and id(array) not in self._input_keys and backend.is_array(array)):
                self._outside[id(array)] = (weakref.ref(array), stamp(array))
        if self._ops is None:
            return forward()
        self._settle_current()
        record = _OpRecord(op)
        record.site = _callsite.user_site() if self._want_sites else None
        self._ops.append(record)
        self._current = record
        record.outputs = forward()
        record.refs = tuple(weakref.ref(y) for y in record.outputs)
        record.retained_in = tuple(op._retained_in)
        record.retain_out = tuple(op._retain_out)
        record.consts = [saved.packed for saved in op._saved or ()]
        if isinstance(op, policies.Name):
            self._tag(inputs[0].array, op.name)
        else:
            self._decide(record, [None] * len(record.outputs))
            for j, y in enumerate(record.outputs):
                self._producers[id(y)] = (record.refs[j], record, j)
        return record.outputs

    def _decide(self, record: _OpRecord, names: list) -> None:
        """Ask the policy about each output; keep them (strongly) only if all are kept."""
        assert self.policy is not None      # ops are logged only under a policy
        record.decisions = [policies.decide(self.policy, policies.OpOutput(record.op, j, y, name))
                            for j, (y, name) in enumerate(zip(record.outputs, names))]

    def _tag(self, array: Any, name: str) -> None:
        """``checkpoint_name``: ask the policy again about the op that produced ``array``."""
        entry = self._producers.get(id(array))
        if entry is None or entry[0]() is not array:
            return
        _, record, j = entry
        outputs = tuple(ref() for ref in record.refs)
        if any(y is None for y in outputs):
            return                          # another output of that op is gone: it is re-run
        record.outputs = outputs
        names = [None] * len(outputs)
        names[j] = name
        self._decide(record, names)
        if record is not self._current and not _kept(record):
            record.outputs = ()

    def _settle_current(self) -> None:
        """The current op is done: drop what only it needed (its inputs; outputs not kept)."""
        record = self._current
        if record is not None:
            if not _kept(record):
                record.outputs = ()

    def run_forward(self) -> Any:
        """Run ``fn`` once, recording its draws; then resolve what its ops saved."""
        numpy_before = random.numpy_global_state() if self.draws is not None else None
        try:
            token = _running_forwards.set(_running_forwards.get() + (self,))
            try:
                with hooks.saved_array_hooks(self.pack, self.unpack, self.observe), \
                        _recording(self.draws):
                    outputs = self.fn(*self._args, **self._kwargs)
            finally:
                _running_forwards.reset(token)
            if numpy_before is not None and random.numpy_global_moved(numpy_before):
                if random.other_threads_running():
                    # fn, or another thread, drew from it: the recomputation will not touch it
                    # and checks the recomputed values instead (a draw by fn changes them).
                    self._numpy_unknown = True
                else:
                    self.numpy_rng = numpy_before
            self._resolve({id(v.array) for v in _variables(outputs)})
        finally:
            self._pending, self._current, self._producers = [], None, {}
        if self._ops is not None and all(r.stored is None for r in self._ops):
            self._ops = None                  # every op is re-run: nothing to replay
        return outputs

    def _resolve(self, output_ids: set[int]) -> None:
        """Decide, per logged op, whether its outputs are kept; turn every other placeholder
        into a numbered slot, in the order the arrays were saved.  ``output_ids``: the arrays
        fn returned (alive anyway, so keeping them costs nothing)."""
        kept: dict[int, Any] = {}
        saved_ids = {id(slot.array) for slot in self._pending}
        for record in self._ops or ():
            if _kept(record):
                record.stored = [self._store(y, d) for y, d in zip(record.outputs, record.decisions)]
                kept.update((id(y), st) for y, st in zip(record.outputs, record.stored))
                # Held only because the policy keeps it: a plain run would not hold it.
                self.policy_kept_bytes += sum(
                    st.nbytes for y, st in zip(record.outputs, record.stored)
                    if isinstance(st, policies.Stored) and id(y) not in saved_ids
                    and id(y) not in output_ids)
        for record in self._ops or ():
            if record.stored is not None:
                for packed in record.consts:
                    if isinstance(packed, _Slot):
                        packed.stored = self._store(packed.array, policies.SAVE)
            if record.stored is not None and self._report:   # kept though no op saved them
                self.residuals.extend((record.label, record.site, y, st)
                                      for y, st in zip(record.outputs, record.stored)
                                      if id(y) not in saved_ids)
            record.op, record.outputs, record.refs = None, (), ()
        for slot in self._pending:
            if slot.stored is None:
                slot.stored = kept.get(id(slot.array))
            if slot.stored is None:
                slot.index = len(self.records)
                self.records.append(_SlotRecord(slot.label, slot.array,
                                                self.check == "checksum" or self._numpy_unknown,
                                                slot.site))
                self.alive.add(slot.index)
                owner = backend.memory_owner(slot.array)
                self._dropped.setdefault(id(owner), (weakref.ref(owner), owner.nbytes))
            if self._report:
                self.residuals.append((slot.label, slot.site, slot.array, slot.stored))
            slot.array = None

    def _store(self, array: Any, decision: policies.Decision) -> Any:
        if decision.kind == "SAVE" and self._outer is not None:
            return _Delegated(self._outer.pack(array, self), self._outer.unpack)
        return policies.Stored(array, decision)

    def _check_outside_arrays(self) -> None:
        for ref, expected in self._outside.values():
            array = ref()
            if array is not None:
                check_unmodified(array, expected, self.label,
                                 "an array it reads besides its arguments (a parameter or a "
                                 "captured variable)")

    @staticmethod
    def unpack(packed: Any) -> Any:
        if isinstance(packed, _Slot):
            if packed.array is not None:          # forward is still running
                return packed.array
            if packed.stored is not None:
                return packed.stored.get()
            return packed.owner.take(packed.index)  # type: ignore[arg-type]
        if isinstance(packed, _Kept):
            return packed.array
        if isinstance(packed, _Input):
            return packed.owner.input_array(packed.key)
        return packed.get()

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
        self._input_keys = {}

    # ----- backward ---------------------------------------------------------------
    def input_array(self, key: Any) -> Any:
        return self._inputs[key][0].get(self.label, _argument_name(key))

    def take(self, index: int) -> Any:
        """Hand slot ``index`` to backward, recomputing first if it is not filled.  The array
        stays until its placeholder goes (a nested checkpoint may read its input twice)."""
        if index not in self.filled:
            self.recompute()
        return self.filled[index]

    def _fresh_arguments(self) -> tuple[tuple, dict]:
        args, kwargs = list(self._args), dict(self._kwargs)
        for key, (_, requires_grad) in self._inputs.items():
            v = Variable(self.input_array(key), requires_grad=requires_grad)
            if isinstance(key, int):
                args[key] = v
            else:
                kwargs[key] = v
        return tuple(args), kwargs

    def recompute(self) -> None:
        """Re-run ``fn`` and fill every slot that is still needed."""
        self._check_outside_arrays()
        needed = self.alive - set(self.filled)
        count = 0
        stopped = False
        args, kwargs = self._fresh_arguments()
        # The arrays passed in now, not those of the forward pass: those may be gone and
        # their ids reused.
        input_ids = {id(v.array) for _, v in _variable_arguments(args, kwargs)}
        replayed: list = []         # kept outputs standing in for ops not re-run (ids stay valid)
        op_index = 0

        def fill(array: Any, op: Any) -> _Kept:
            nonlocal count, stopped
            if stopped:
                raise _StopRecompute
            if (id(array) in input_ids or not backend.is_array(array)
                    or any(array is y for y in replayed)):
                return _Kept(array)
            index = count
            count += 1
            self._verify(index, op, array)
            if index in needed:
                self.filled[index] = array
                needed.discard(index)
                if not needed and self.early_stop:
                    stopped = True
                    raise _StopRecompute
            return _Kept(array)

        def replay(op: Any, inputs: Sequence[Variable], forward: Callable[[], Any]) -> Any:
            nonlocal op_index
            record = self._ops[op_index] if self._ops and op_index < len(self._ops) else None
            op_index += 1
            if record is None or record.stored is None:
                return forward()
            if record.label != op.label and self.check != "none":
                raise CheckpointError(
                    f"{self.label}: op #{op_index - 1} was {record.label} in forward but is "
                    f"{op.label} in the recomputation. The function must be deterministic given "
                    "its inputs (control flow included).")
            ys = tuple(stored.get() for stored in record.stored)
            replayed.extend(ys)
            # Redo what the op kept for its own backward (inputs in the order it retained them).
            op.retain_inputs(*record.retained_in)
            op.retain_outputs(*record.retain_out)
            if op._recording:
                op._saved.extend(SavedArray(_Kept(self.unpack(packed)), self.unpack)
                                 for packed in record.consts)
            return ys

        try:
            with _recursion_headroom(_stack_depth() + self._deepest - self._depth + _FRAMES_PER_LEVEL), \
                    hooks.saved_array_hooks(fill, self.unpack, replay), _replaying(self.draws), \
                    _numpy_replay(self.numpy_rng, self.label), \
                    using_config("enable_backprop", True), using_config("in_recompute", True):
                self.fn(*args, **kwargs)
        except _StopRecompute:
            pass
        else:
            if stopped:
                warnings.warn(
                    f"{self.label}: the function caught memsave's internal stop signal (a bare "
                    "`except:` or `except BaseException:`), so the recomputation ran to the end "
                    "instead of stopping early. Catch Exception instead.", RuntimeWarning,
                    stacklevel=2)
        if needed:
            raise CheckpointError(
                f"{self.label}: the recomputation saved {count} arrays for backward, but the "
                f"forward pass saved {len(self.records)}. The function must do the same work "
                "every time it is called with the same inputs.")
        if not self.early_stop and count != len(self.records):
            raise CheckpointError(
                f"{self.label}: the recomputation saved {count} arrays for backward, but the "
                f"forward pass saved {len(self.records)}.")

    def _verify(self, index: int, op: Any, array: Any) -> None:
        if self.check == "none" and not self._numpy_unknown:
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
            diffs = [abs(a - b) for a, b in zip(rec.fingerprint, now)]
            if any(d > 1e-5 * max(abs(a), abs(b), 1e-30) for d, a, b in zip(diffs, rec.fingerprint, now)):
                if self._numpy_unknown:
                    raise CheckpointError(
                        f"{self.label}: {op.label} at {rec.site} recomputed different values. The "
                        "function seems to draw from NumPy's global RNG (np.random.*), which other "
                        "threads share, so its draws cannot be replayed. Draw from "
                        "memsave.random.get_generator() instead: its draws replay per thread.")
                raise CheckpointError(
                    f"{self.label}: {op.label} at {rec.site} recomputed different values for "
                    f"saved array #{index} {array.shape}: largest difference {max(diffs):.3g} "
                    f"(sum {rec.fingerprint[0]:.6g} in forward, {now[0]:.6g} now). Is there "
                    "randomness that does not come from memsave.random, or a global that "
                    "changed between forward and backward?")


def _kept(record: _OpRecord) -> bool:
    """Whether the policy keeps every output of this op (so the recomputation skips it)."""
    return (bool(record.decisions) and bool(record.outputs)
            and all(d != policies.RECOMPUTE for d in record.decisions))


def _stack_depth() -> int:
    depth = 0
    frame: Any = sys._getframe(1)
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


_FRAMES_PER_LEVEL = 100           # what one block's ops and memsave's own calls may add
_running_forwards: ContextVar[tuple[RecomputeNode, ...]] = ContextVar(
    "memsave.running_forwards", default=())
_limit_lock = threading.Lock()
_limit_requests: list[int] = []   # recursion limits wanted by recomputations running now
_limit_before = 0


@contextlib.contextmanager
def _recursion_headroom(needed: int) -> Any:
    """Let a recomputation of deeply nested checkpoints go as deep as its forward went, plus
    the frames backward adds.  The limit is process-wide: it is raised while any such
    recomputation runs (in any thread) and put back when the last one ends."""
    global _limit_before
    if needed <= sys.getrecursionlimit():
        yield
        return
    with _limit_lock:
        if not _limit_requests:
            _limit_before = sys.getrecursionlimit()
        _limit_requests.append(needed)
        sys.setrecursionlimit(max(_limit_before, *_limit_requests))
    try:
        yield
    finally:
        with _limit_lock:
            _limit_requests.remove(needed)
            sys.setrecursionlimit(max([_limit_before, *_limit_requests]))


def _recording(draws: list | None) -> Any:
    return contextlib.nullcontext() if draws is None else random.recording(draws)


def _replaying(draws: list | None) -> Any:
    return contextlib.nullcontext() if draws is None else random.replaying(draws)


def _numpy_replay(state: tuple | None, label: str) -> Any:
    return contextlib.nullcontext() if state is None else random.numpy_global_replay(state, label)


def _argument_name(key: Any) -> str:
    return f"its argument {key}" if isinstance(key, int) else f"its argument {key!r}"


def _variable_arguments(args: Sequence, kwargs: dict) -> list[tuple[Any, Variable]]:
    found: list[tuple[Any, Variable]] = [(i, a) for i, a in enumerate(args) if isinstance(a, Variable)]
    found += [(k, v) for k, v in kwargs.items() if isinstance(v, Variable)]
    return found


def wrap_arguments(args: Sequence, kwargs: dict) -> tuple[tuple, dict]:
    """``fn``'s arguments with ndarrays made constant Variables (so the call joins the graph)."""
    def wrap(v: Any) -> Any:
        return Variable(v, requires_grad=False) if backend.is_array(v) else v
    return tuple(wrap(a) for a in args), {k: wrap(v) for k, v in kwargs.items()}


def _variables(out: Any) -> Iterator[Variable]:
    """The Variables in a function's result (nested in tuples, lists and dicts)."""
    if isinstance(out, Variable):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _variables(v)
    elif isinstance(out, (tuple, list)):
        for v in out:
            yield from _variables(v)


_warned_sites: set[tuple[str, int]] = set()


def _warn_once_per_call_site(message: str) -> None:
    """Warn at the first frame outside memsave and wrapt (the user's call site), once per site."""
    frame, level = _callsite.user_frame(2)
    site = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else ("", 0)
    if site not in _warned_sites:
        _warned_sites.add(site)
        warnings.warn(message, UselessCheckpointWarning, stacklevel=level)


def run_checkpointed(fn: Callable, args: Sequence, kwargs: dict, *, policy: Policy | None = None,
                     preserve_rng_state: bool = True, determinism_check: str = "metadata",
                     early_stop: bool = True, label: str | None = None) -> Any:
    """:func:`checkpoint` with the function's own arguments kept apart from the (checked) options."""
    if not callable(fn):
        raise TypeError(f"checkpoint needs a callable, got {type(fn).__name__}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"cannot checkpoint {_fn_name(fn)}: it is a generator or coroutine function, whose "
            "body runs later, outside the checkpoint. Checkpoint a function that computes its "
            "result when called.")
    args, kwargs = wrap_arguments(args, kwargs)
    if not (config.checkpointing_enabled and config.enable_backprop):
        return fn(*args, **kwargs)
    node = RecomputeNode(fn, args, kwargs, policy, preserve_rng_state, determinism_check,
                         early_stop, label)
    outputs = node.run_forward()
    node.release_arguments()
    if next(_variables(outputs), None) is None:
        raise TypeError(
            f"{node.label} returned {type(outputs).__name__}, which holds no Variable: nothing "
            "can be differentiated through it. Return the Variables the function computes "
            "(not their .array).")
    if node.records:
        _warn_if_useless(node)
    return outputs


def _warn_if_useless(node: RecomputeNode) -> None:
    """Warn (once per call site) when a checkpoint frees no more than it keeps alive: its
    non-leaf inputs, and op outputs its policy keeps that a plain run would not hold."""
    freed, inputs, policy = node.freed_bytes(), node.kept_bytes, node.policy_kept_bytes
    if freed == 0:
        _warn_once_per_call_site(
            f"{node.label} saves no memory: every array it drops for backward is alive "
            "anyway (its output, for instance), so checkpointing it only costs time. "
            "Checkpoint larger blocks (several layers) instead.")
    elif freed <= inputs + policy:
        kept = f"{inputs} bytes of inputs alive for recomputation"
        if policy:
            kept += (f" and {policy} bytes of op outputs that its policy keeps and a plain run "
                     "would not")
        _warn_once_per_call_site(
            f"{node.label} frees {freed} bytes of intermediates but keeps {kept}"
            ": it costs time and saves no memory. Checkpoint larger blocks (several layers) instead"
            + (", or use a policy that keeps less." if policy else "."))


def checkpoint(fn: Callable, /, *args: Any, policy: Policy | None = None,
               preserve_rng_state: bool = True, determinism_check: str = "metadata",
               early_stop: bool = True, use_reentrant: bool | None = None, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` keeping none of its intermediates; recompute them in backward.

    ndarray arguments become Variables; other arguments pass through; the result
    has whatever structure ``fn`` returns (it must hold at least one Variable).
    ``policy(op, array) -> bool`` may keep some arrays for real.
    ``preserve_rng_state`` replays dropout and other draws exactly.
    ``determinism_check``: ``"metadata"`` (op, shape, dtype of every saved array),
    ``"checksum"`` (also a value fingerprint) or ``"none"``.
    ``early_stop=False`` recomputes the whole block and checks every saved array (debugging).
    ``use_reentrant`` is accepted for PyTorch code: memsave is always non-reentrant.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> W = ms.Parameter(np.eye(3))
    >>> y = checkpoint(lambda x: F.tanh(F.tanh(x @ W)), np.ones((2, 3)))
    >>> y.shape
    (2, 3)
    """
    options = check_options(policy, preserve_rng_state, determinism_check, early_stop, use_reentrant)
    _reject_option_collisions(fn, options)
    return run_checkpointed(fn, args, kwargs, **options)


_OPTION_DEFAULTS = check_options()


def _reject_option_collisions(fn: Callable, options: dict[str, Any]) -> None:
    """An option given to checkpoint that is also a parameter of ``fn`` is ambiguous: say so."""
    given = [name for name, value in options.items() if value != _OPTION_DEFAULTS[name]]
    if not given:
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    clashes = [name for name in given if name in parameters]
    if clashes:
        raise TypeError(
            f"checkpoint got {clashes[0]}=..., which is both checkpoint's own option and a "
            f"parameter of {_fn_name(fn)}; checkpoint takes it as its option. To pass it to the "
            f"function, bind it first: checkpoint(functools.partial(fn, {clashes[0]}=...), ...)")

