"""memsave.distributed: 2 ranks under mpiexec train exactly like 1 rank on the concatenated batch.

The multi-rank cases launch ``mpiexec -n 2 python tests/distributed/ddp_worker.py ...`` (the
MPI comes from the ``mpich`` wheel of the test extra); the rest run in this process as a
1-rank world.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import memsave as ms
import memsave.distributed as dist
from memsave import nn

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed" / "ddp_worker.py"
TIMEOUT_S = 120


def mpiexec() -> str:
    """The mpiexec next to this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    assert found, ("no mpiexec: install the test extra, pip install -e '.[test]' (it brings "
                   "mpi4py and the mpich wheel)")
    return found


def launch(ranks: int | None, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the worker on ``ranks`` MPI processes (None: plain python, a 1-rank singleton)."""
    command = [sys.executable, str(WORKER), *args]
    if ranks is not None:
        command = [mpiexec(), "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def train(tmp_path: Path, ranks: int | None, *args: str) -> list[dict[str, np.ndarray]]:
    out = tmp_path / f"run{ranks}{''.join(args)}"
    mode = "simulate" if "--ranks" in args else "train"
    proc = launch(ranks, mode, str(out), *args)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return [dict(np.load(f"{out}.rank{r}.npz")) for r in range(ranks or 1)]


def assert_same_state(got: dict, expected: dict, rtol: float, atol: float) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=atol, err_msg=name)


# ----- 2 ranks vs 1 rank ------------------------------------------------------------------
@pytest.mark.parametrize("checkpoint", ["none", "checkpointed", "sequential"])
def test_two_ranks_train_like_one_rank_on_the_concatenated_batch(tmp_path, checkpoint):
    one, = train(tmp_path, None, "--checkpoint", checkpoint)
    rank0, rank1 = train(tmp_path, 2, "--checkpoint", checkpoint)
    for name in rank0:                     # the ranks hold bit-identical models
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    assert_same_state(rank0, one, rtol=1e-12, atol=1e-14)


def test_checkpointing_does_not_change_two_rank_training(tmp_path):
    plain = train(tmp_path, 2, "--checkpoint", "none")[0]
    assert_same_state(train(tmp_path, 2, "--checkpoint", "checkpointed")[0], plain, 1e-13, 1e-15)


def test_batchnorm_statistics_are_averaged_and_identical_on_every_rank(tmp_path):
    # Reference: one process runs each rank's shard from the same state and averages the
    # gradients and running statistics (per-rank batch statistics: no synchronised BatchNorm).
    reference, = train(tmp_path, None, "--ranks", "2", "--batchnorm")
    rank0, rank1 = train(tmp_path, 2, "--batchnorm", "--checkpoint", "sequential")
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    assert_same_state(rank0, reference, rtol=1e-12, atol=1e-14)
    assert not np.allclose(rank0["0.W"], train(tmp_path, None, "--batchnorm")[0]["0.W"], atol=1e-6), \
        "per-rank batch statistics should differ from whole-batch statistics"


# ----- failures end every rank -------------------------------------------------------------
def test_a_failure_on_one_rank_ends_every_rank_with_its_error():
    start = time.monotonic()
    proc = launch(2, "fail", timeout=60)     # a hang would raise TimeoutExpired here
    assert proc.returncode != 0
    assert "ValueError: deliberate failure on rank 1" in proc.stderr
    assert "[rank 1 of 2]" in proc.stderr and "rank 1 failed; aborting all 2 ranks" in proc.stderr
    assert time.monotonic() - start < 60


def test_ranks_with_different_models_are_refused():
    proc = launch(2, "mismatch", timeout=60)
    assert proc.returncode != 0
    assert "DistributedError" in proc.stderr
    assert ("rank 1 has ('W', (4, 2), 'float32') where rank 0 has ('W', (3, 2), 'float32')"
            in proc.stderr), proc.stderr


def test_example_quick_run_on_two_ranks():
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(ROOT / "examples" / "ddp_train.py"),
                           "--quick"], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranks agree: max |diff| = 0" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("epoch") == 2, proc.stdout


# ----- one rank, in this process -----------------------------------------------------------
def test_one_rank_world():
    assert dist.init().Get_size() == dist.size() == 1 and dist.rank() == 0


def test_allreduce_on_one_rank_keeps_gradients_and_reports_messages():
    layer = nn.Linear(3, 2)
    net = dist.DataParallel(layer, bucket_bytes=24)     # W (24 bytes) and b (8) do not fit one
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    net(x).sum().backward()
    expected = layer.W.grad.copy(), layer.b.grad.copy()
    stats = net.allreduce_grads()
    assert stats.message_bytes == (12, 8, 24) and stats.bytes == 32 and stats.seconds >= 0  # flags: 2 + 1
    np.testing.assert_array_equal(layer.W.grad, expected[0])
    np.testing.assert_array_equal(layer.b.grad, expected[1])


def test_buckets_hold_one_dtype_each():
    a, b = nn.Linear(2, 2, dtype=np.float32), nn.Linear(2, 2, dtype=np.float64)
    net = dist.DataParallel(nn.Sequential(a, b))
    x = np.ones((1, 2), dtype=np.float32)
    (b(a(x).array.astype(np.float64)).sum() + a(x).sum()).backward()
    stats = net.allreduce_grads()
    assert stats.message_bytes == (20, 6 * 8, 6 * 4)      # flags (4 + 1), float64, float32 buckets
    assert a.W.grad.dtype == np.float32 and b.W.grad.dtype == np.float64


def test_strided_parameters_are_broadcast_through_a_contiguous_copy():
    module = nn.Module()
    module.w = ms.Parameter(np.arange(12.0)[::2])       # MPI refuses non-contiguous buffers
    dist.DataParallel(module)
    np.testing.assert_array_equal(module.w.array, np.arange(12.0)[::2])


def test_parameters_without_gradient_keep_none():
    used, unused = nn.Linear(2, 2), nn.Linear(2, 2)
    net = dist.DataParallel(nn.Sequential(used, unused))
    used(np.ones((1, 2), dtype=np.float32)).sum().backward()
    net.allreduce_grads()
    assert used.W.grad is not None and unused.W.grad is None and unused.b.grad is None


def test_buffers_are_averaged_in_place():
    bn = nn.BatchNorm(3)
    net = dist.DataParallel(bn)
    running = bn.running_mean
    net.train()(np.arange(6, dtype=np.float32).reshape(2, 3)).sum().backward()
    before = running.copy()
    assert net.allreduce_grads().bytes == 4 * (3 + 3 + 3 + 3)
    assert bn.running_mean is running
    np.testing.assert_array_equal(running, before)


@pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")
def test_works_with_a_checkpointed_module():
    inner = nn.Sequential(nn.Linear(4, 4, dtype=np.float64), ms.functions.tanh)
    net = dist.DataParallel(nn.Sequential(ms.checkpointed(inner)))
    assert [n for n, _ in net.named_parameters()] == ["module.0.0.W", "module.0.0.b"]
    x = np.random.default_rng(1).standard_normal((3, 4))
    (inner(x) ** 2).sum().backward()                       # plain
    plain = inner[0].W.grad.copy()
    net.zero_grad()
    (net(x) ** 2).sum().backward()                         # checkpointed, through the wrapper
    net.allreduce_grads()
    np.testing.assert_allclose(inner[0].W.grad, plain, rtol=1e-14)


def test_wraps_only_modules_and_positive_buckets():
    with pytest.raises(TypeError, match="DataParallel wraps a memsave.nn.Module, got function"):
        dist.DataParallel(ms.functions.tanh)
    with pytest.raises(ValueError, match="bucket_bytes must be positive, got 0"):
        dist.DataParallel(nn.Linear(2, 2), bucket_bytes=0)


# ----- sharded batches ---------------------------------------------------------------------
def test_shards_are_disjoint_and_cover_every_full_global_batch():
    shards = [dist.sharded_batches(50, 4, epoch=3, seed=1, rank=r, size=3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]              # 50 // 12 global batches
    every = np.concatenate([np.concatenate(s) for s in shards])
    assert len(every) == len(set(every.tolist())) == 48
    whole = dist.sharded_batches(50, 12, epoch=3, seed=1, rank=0, size=1)
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[step] for s in shards]), batch)


def test_shards_reshuffle_per_epoch_and_repeat_per_seed():
    def order(epoch, seed):
        return np.concatenate(dist.sharded_batches(20, 5, epoch=epoch, seed=seed, rank=0, size=1))

    np.testing.assert_array_equal(order(0, 1), order(0, 1))
    assert not np.array_equal(order(0, 1), order(1, 1))
    assert not np.array_equal(order(0, 1), order(0, 2))
    assert sorted(order(1, 1).tolist()) == list(range(20))


def test_shards_default_to_this_world():
    assert len(dist.sharded_batches(8, 4, epoch=0)) == 2


def test_shard_errors_say_what_to_change():
    with pytest.raises(ValueError, match=r"10 samples do not fill one global batch of 4 x 3 ranks = 12"):
        dist.sharded_batches(10, 4, epoch=0, rank=0, size=3)
    with pytest.raises(ValueError, match="need batch_size > 0 and 0 <= rank < size, got batch_size=2, "
                                         "rank=2, size=2"):
        dist.sharded_batches(10, 2, epoch=0, rank=2, size=2)


def test_buckets_start_inside_backward_and_accumulation_still_works():
    rng = np.random.default_rng(3)
    model = nn.Sequential(*[nn.Linear(8, 8, dtype=np.float64) for _ in range(4)])
    net = dist.DataParallel(model, bucket_bytes=600)          # about one layer a bucket
    x = rng.standard_normal((2, 8))
    (net(x) ** 2).sum().backward()
    stats = net.allreduce_grads()
    assert stats.overlapped == stats.messages - 1 >= 4           # every gradient bucket early
    reference = [p.grad.copy() for p in model.parameters()]
    net.zero_grad()
    (net(x) ** 2).sum().backward()                               # accumulate two backward calls
    (net(x) ** 2).sum().backward()
    net.allreduce_grads()
    for p, g in zip(model.parameters(), reference):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-13)
    plain = dist.DataParallel(model, overlap=False)
    (plain(x) ** 2).sum().backward()
    assert plain.allreduce_grads().overlapped == 0
