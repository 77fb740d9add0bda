"""Data-parallel training over MPI (mpi4py): every rank trains the same model on its own data.

1. :func:`init` starts MPI and makes an uncaught exception on any rank end every rank.
2. :class:`DataParallel` broadcasts rank 0's parameters and buffers, so all ranks start equal.
3. After ``loss.backward()``, :meth:`DataParallel.allreduce_grads` packs the gradients into a
   few flat buckets (per dtype, ``bucket_bytes`` each), starts a non-blocking all-reduce on
   each bucket as soon as it is packed, waits for all of them, and gives every parameter the
   average over ranks.  Floating-point buffers (BatchNorm's running statistics) are averaged
   in the same round, so every rank keeps identical state.
4. :func:`sharded_batches` gives each rank a disjoint slice of every global batch, from one
   permutation per epoch drawn from a shared seed.

Checkpointed layers, policies and planned schedules need nothing special: they give the
plain gradients, and the all-reduce only sees gradients.  Launch with
``mpiexec -n 2 python train.py``; a single process (``python train.py``) is a 1-rank run.

>>> import numpy as np, memsave as ms
>>> net = DataParallel(ms.nn.Linear(3, 2))
>>> net(np.ones((4, 3), dtype=np.float32)).sum().backward()
>>> stats = net.allreduce_grads(); stats.bytes   # W and b, float32, one bucket
32
"""
from __future__ import annotations

import functools
import sys
import time
import traceback
from collections.abc import Iterator
from types import ModuleType, TracebackType
from typing import Any, NamedTuple

import numpy as np

from memsave import backend
from memsave.errors import DistributedError
from memsave.nn.module import Module

__all__ = ["init", "rank", "size", "DataParallel", "CommStats", "sharded_batches",
           "DEFAULT_BUCKET_BYTES"]

DEFAULT_BUCKET_BYTES = 16 << 20   # a few large messages: ResNet-50's 100 MB of grads in 7

_comm: Any = None
_hook_installed = False


def _mpi() -> ModuleType:
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(
            "memsave.distributed needs mpi4py and an MPI library; install the extra: "
            "pip install 'memsave[mpi]' (mpi4py plus the mpich wheel, no system MPI needed)"
        ) from err
    return MPI


_FORWARD_SECONDS = 0.5  # how long a failing rank waits for its traceback to be forwarded


def init(comm: Any = None) -> Any:
    """Start MPI, choose the communicator (default: every process), and return it.

    On more than one rank, an uncaught exception on any rank prints its traceback with the
    rank number and aborts every rank (``MPI_Abort``), instead of leaving the others
    waiting forever in a collective.  Calling it again only changes the communicator.

    >>> init().Get_size() >= 1
    True
    """
    global _comm, _hook_installed
    _comm = comm if comm is not None else _mpi().COMM_WORLD
    if not _hook_installed:
        sys.excepthook = _abort_all_ranks(sys.excepthook)
        _hook_installed = True
    return _comm


def _abort_all_ranks(previous: Any) -> Any:
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        comm = _comm if _comm is not None else _mpi().COMM_WORLD
        if comm.Get_size() == 1:
            previous(kind, value, tb)
            return
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[rank {comm.Get_rank()} of {comm.Get_size()}] {text}"
                         f"memsave.distributed: rank {comm.Get_rank()} failed; aborting all "
                         f"{comm.Get_size()} ranks\n")
        sys.stderr.flush()
        # MPI_Abort tears down the launcher's output forwarding at once: give it a moment to
        # pass the traceback on, or every rank's message can be lost
        time.sleep(_FORWARD_SECONDS)
        comm.Abort(1)
    return hook


def _communicator() -> Any:
    return _comm if _comm is not None else _mpi().COMM_WORLD


def rank() -> int:
    """This process's rank, 0 to ``size() - 1`` (0 in a plain single-process run).

    >>> rank()
    0
    """
    return _communicator().Get_rank()


def size() -> int:
    """The number of ranks (1 in a plain single-process run).

    >>> size()
    1
    """
    return _communicator().Get_size()


class CommStats(NamedTuple):
    """One :meth:`DataParallel.allreduce_grads` call: the size in bytes of each all-reduce it
    started (the gradient-flags message first, then the buckets), the bytes of gradients and
    buffers each rank contributed, and the wall-clock seconds (pack, reduce, unpack)."""

    message_bytes: tuple[int, ...]
    bytes: int
    seconds: float
    overlapped: int = 0     # gradient messages started inside backward (overlap=True)

    @property
    def messages(self) -> int:
        """How many all-reduces were started.

        >>> CommStats((8, 32), 32, 0.0).messages
        2
        """
        return len(self.message_bytes)


def _buckets(arrays: list[Any], bucket_bytes: int) -> list[list[int]]:
    """Indices of ``arrays`` grouped by dtype and device, in order, up to ``bucket_bytes`` each
    (an array larger than that is a bucket of its own)."""
    buckets: list[list[int]] = []
    open_bucket: dict[tuple[Any, str], tuple[list[int], int]] = {}
    for i, a in enumerate(arrays):
        key = (a.dtype, backend.get_array_module(a).__name__)
        members, used = open_bucket.get(key, ([], 0))
        if members and used + a.nbytes > bucket_bytes:
            members, used = [], 0
        if not members:
            buckets.append(members)
        members.append(i)
        open_bucket[key] = (members, used + a.nbytes)
    return buckets


class DataParallel(Module):
    """Wrap ``module`` for data-parallel training; call :meth:`allreduce_grads` after backward.

    On construction every rank checks that its model has the same parameter and buffer
    names, shapes and dtypes as rank 0's (:class:`~memsave.errors.DistributedError` on every rank
    otherwise) and receives rank 0's values.  Calling it runs ``module``.

    With ``overlap=True`` (the default) each bucket of gradients starts its all-reduce inside
    backward, as soon as backward has completed all of its gradients, while backward goes
    on with earlier layers; :meth:`allreduce_grads` then starts what is left and waits.
    Several backward calls between two :meth:`allreduce_grads` (gradient accumulation) still
    work: the early messages are then sent again with the final gradients.

    BatchNorm normalises with each rank's own batch statistics (no synchronised
    BatchNorm); its running statistics are averaged over ranks at every
    :meth:`allreduce_grads`, so all ranks keep the same buffers.

    CuPy arrays are sent through host copies unless ``cuda_aware=True`` says the MPI
    library reads device memory itself (e.g. Open MPI built with CUDA); the ``mpich`` wheel
    is not CUDA-aware.

    >>> import numpy as np, memsave as ms
    >>> net = DataParallel(ms.nn.Sequential(ms.nn.Linear(3, 4), ms.nn.BatchNorm(4)))
    >>> [name for name, _ in net.named_parameters()][:2]
    ['module.0.W', 'module.0.b']
    """

    def __init__(self, module: Module, comm: Any = None, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 cuda_aware: bool = False, overlap: bool = True) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel wraps a memsave.nn.Module, got {type(module).__name__}")
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self.module = module
        self.comm = comm if comm is not None else _communicator()
        self.bucket_bytes = int(bucket_bytes)
        self.cuda_aware = bool(cuda_aware)
        self._check_same_model()
        self._broadcast_from_rank0()
        self._params = list(self.module.parameters())[::-1]   # roughly the order backward ends in
        self._grad_buckets = _buckets([p.array for p in self._params], self.bucket_bytes)
        self._hooks = []
        if overlap:
            bucket_of = {i: b for b, bucket in enumerate(self._grad_buckets) for i in bucket}
            self._hooks = [p.register_post_accumulate_grad_hook(
                functools.partial(self._gradient_ready, i, bucket_of[i]))
                for i, p in enumerate(self._params)]
        self._reset_step()

    def _reset_step(self) -> None:
        self._ready = [False] * len(self._params)
        self._waiting = [len(bucket) for bucket in self._grad_buckets]
        self._requests: list[Any] = []
        self._started: list[tuple[list[int], Any, Any]] = []
        self._stale = False

    def _gradient_ready(self, i: int, bucket: int, param: Any) -> None:
        """Backward hook: parameter ``i``'s gradient is complete.  Buckets start their
        all-reduce as soon as all their gradients are, always in bucket order (every rank
        must start the same collectives in the same order)."""
        if self._ready[i]:     # a second backward since the last allreduce_grads()
            self._stale = True
            return
        self._ready[i] = True
        self._waiting[bucket] -= 1
        while len(self._started) < len(self._grad_buckets) and self._waiting[len(self._started)] == 0:
            self._start_bucket(len(self._started))

    def _start_bucket(self, b: int) -> None:
        bucket = self._grad_buckets[b]
        members = [self._params[i] for i in bucket]
        flat, wire = self._start(self._requests, [p.grad for p in members], [p.array for p in members])
        self._started.append((bucket, flat, wire))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    # ----- start: one model on every rank -----------------------------------------
    def _state(self) -> list[tuple[str, Any]]:
        return ([(name, p.array) for name, p in self.module.named_parameters()]
                + list(self.module.named_buffers()))

    def _check_same_model(self) -> None:
        mine = [(name, tuple(a.shape), str(a.dtype)) for name, a in self._state()]
        root = self.comm.bcast(mine, root=0)
        diff = next(((m, r) for m, r in zip(mine, root) if m != r), None)
        if diff is None and len(mine) != len(root):
            diff = (f"{len(mine)} arrays", f"{len(root)} arrays")
        diffs = self.comm.allgather(diff)       # every rank raises, with the same message
        bad = [(r, d) for r, d in enumerate(diffs) if d is not None]
        if bad:
            where = "; ".join(f"rank {r} has {d[0]} where rank 0 has {d[1]}" for r, d in bad)
            raise DistributedError(
                f"DataParallel: every rank must build the same model (parameter and buffer "
                f"names, shapes, dtypes): {where}. Build the model the same way on every rank "
                f"(the values are broadcast from rank 0).")

    def _broadcast_from_rank0(self) -> None:
        for _, array in self._state():
            wire = self._wire(array)
            self.comm.Bcast(wire, root=0)
            self._unwire(array, wire)

    # ----- every step: average gradients and buffers ------------------------------
    def allreduce_grads(self) -> CommStats:
        """Average every parameter's gradient, and every floating-point buffer, over ranks.

        A parameter without a gradient counts as zeros; one without a gradient on every
        rank keeps ``grad = None``.  Returns what was communicated.

        >>> import numpy as np, memsave as ms
        >>> net = DataParallel(ms.nn.Linear(2, 1))
        >>> net(np.ones((1, 2), dtype=np.float32)).sum().backward()
        >>> net.allreduce_grads().messages     # one bucket, one message for the grad flags
        2
        """
        MPI = _mpi()
        start = time.perf_counter()
        params = self._params
        overlapped = len(self._started)
        while len(self._started) < len(self._grad_buckets):   # those backward did not start
            self._start_bucket(len(self._started))
        requests, grad_flats = self._requests, self._started
        # One flag per parameter (has a gradient), and a last one: some rank ran more than one
        # backward since the last call, so buckets sent early may be stale.
        has_grad = np.array([p.grad is not None for p in params] + [self._stale], dtype=np.int32)
        requests.append(self.comm.Iallreduce(MPI.IN_PLACE, has_grad, op=MPI.SUM))
        sizes = [has_grad.nbytes]
        buffers = [a for _, a in self.module.named_buffers() if a.dtype.kind == "f"]
        buffer_flats = []
        for bucket in _buckets(buffers, self.bucket_bytes):
            members = [buffers[i] for i in bucket]
            buffer_flats.append((members, *self._start(requests, members, members)))
        MPI.Request.Waitall(requests)
        if has_grad[-1]:          # every rank takes this branch: resend the final gradients
            for bucket, flat, wire in grad_flats:
                self._pack(flat, [params[i].grad for i in bucket], [params[i].array for i in bucket])
                wire[...] = self._wire(flat)
                self.comm.Allreduce(MPI.IN_PLACE, wire, op=MPI.SUM)

        n = self.comm.Get_size()
        for bucket, flat, wire in grad_flats:
            self._unwire(flat, wire)
            flat /= n
            for i, view in zip(bucket, self._views(flat, [params[i].array for i in bucket])):
                params[i].grad = view if has_grad[i] else None
        for members, flat, wire in buffer_flats:
            self._unwire(flat, wire)
            flat /= n
            for array, view in zip(members, self._views(flat, members)):
                array[...] = view
        sizes += [w.nbytes for _, _, w in grad_flats] + [w.nbytes for _, _, w in buffer_flats]
        self._reset_step()
        return CommStats(tuple(sizes), sum(sizes[1:]), time.perf_counter() - start, overlapped)

    def _start(self, requests: list[Any], values: list[Any], likes: list[Any]) -> tuple[Any, Any]:
        """Pack ``values`` (None: zeros) into one flat array and start its all-reduce."""
        xp = backend.get_array_module(likes[0])
        flat = xp.empty(sum(a.size for a in likes), dtype=likes[0].dtype)
        self._pack(flat, values, likes)
        wire = self._wire(flat)
        MPI = _mpi()
        requests.append(self.comm.Iallreduce(MPI.IN_PLACE, wire, op=MPI.SUM))
        return flat, wire

    @staticmethod
    def _pack(flat: Any, values: list[Any], likes: list[Any]) -> None:
        offset = 0
        for value, like in zip(values, likes):
            flat[offset:offset + like.size] = 0 if value is None else value.reshape(-1)
            offset += like.size

    @staticmethod
    def _views(flat: Any, likes: list[Any]) -> Iterator[Any]:
        offset = 0
        for like in likes:
            yield flat[offset:offset + like.size].reshape(like.shape)
            offset += like.size

    def _wire(self, array: Any) -> Any:
        """The contiguous buffer MPI reads and writes for ``array``: itself when it is a
        contiguous host array, or a device array with a CUDA-aware MPI (once the device has
        finished writing it); else a contiguous host copy."""
        xp = backend.get_array_module(array)
        if xp is np:
            return np.ascontiguousarray(array)
        if self.cuda_aware:
            wire = xp.ascontiguousarray(array)
            backend.synchronize(wire)
            return wire
        return np.ascontiguousarray(backend.to_cpu(array))

    @staticmethod
    def _unwire(array: Any, wire: Any) -> None:
        if wire is not array:
            array[...] = backend.asarray(wire, backend.get_array_module(array))

    def extra_repr(self) -> str:
        return f"ranks={self.comm.Get_size()}, bucket_bytes={self.bucket_bytes}"


def sharded_batches(n_samples: int, batch_size: int, *, epoch: int, seed: int = 0,
                    rank: int | None = None, size: int | None = None) -> list[np.ndarray]:
    """This rank's sample indices for one epoch: a list of ``batch_size``-long index arrays.

    Every rank draws the same permutation of ``range(n_samples)`` from ``(seed, epoch)``
    (a new order each epoch).  Global batch ``b`` is the permutation's ``b``-th run of
    ``batch_size * size`` indices and rank ``r`` takes the ``r``-th ``batch_size`` of them:
    the ranks' slices are disjoint, and concatenated in rank order they are exactly the
    batch one process with batch size ``batch_size * size`` gets.  The last, partial global
    batch is dropped, so every rank runs the same number of steps.

    >>> a = sharded_batches(10, 2, epoch=0, rank=0, size=2)
    >>> b = sharded_batches(10, 2, epoch=0, rank=1, size=2)
    >>> whole = sharded_batches(10, 4, epoch=0, rank=0, size=1)
    >>> len(a), all((np.concatenate([x, y]) == w).all() for x, y, w in zip(a, b, whole))
    (2, True)
    """
    rank = _communicator().Get_rank() if rank is None else rank
    size = _communicator().Get_size() if size is None else size
    global_batch = batch_size * size
    if batch_size <= 0 or not 0 <= rank < size:
        raise ValueError(f"sharded_batches: need batch_size > 0 and 0 <= rank < size, got "
                         f"batch_size={batch_size}, rank={rank}, size={size}")
    if n_samples < global_batch:
        raise ValueError(f"sharded_batches: {n_samples} samples do not fill one global batch of "
                         f"{batch_size} x {size} ranks = {global_batch}; lower batch_size")
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    return [order[start + rank * batch_size:start + (rank + 1) * batch_size]
            for start in range(0, n_samples - global_batch + 1, global_batch)]

