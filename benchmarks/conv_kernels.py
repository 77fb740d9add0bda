"""Time convolution kernel layouts on one layer of the ``cnn`` workload (NumPy/OpenBLAS).

Candidates, each for the forward (y), the input gradient (gx) and the weight gradient (gW):

    full-im2col     the previous kernels: np.pad copy, one (N, C*kh*kw, oh*ow) column matrix,
                    transposed copies for gW (workspace ~10 outputs)
    chunked-im2col  memsave's kernels: the NCHW column matrix of one chunk of samples at a
                    time, in one reused buffer, GEMMs written straight into the result
                    (workspace <= one output); gx at stride 1 is the convolution of gy with
                    the flipped filters
    chunked-scatter memsave's gx for other strides: W^T gy columns per chunk, scatter-added
    per-offset      one GEMM per kernel offset on shifted slices, accumulated into y / gx / gW
                    (workspace: a shifted copy of x and one product, ~2 outputs)
    channels-last   im2col of one sample in (oh*ow, kh*kw*C) order from an (H, W, C) copy, then
                    y[n].T = col @ W', transposed back (forward only)

Each candidate is checked against the previous kernels, then timed ``--repeats`` times; the
table gives min and median of wall time and of this thread's CPU time (run with
OPENBLAS_NUM_THREADS=1 for the CPU times to count all the work), and the peak transient bytes
(tracemalloc, result excluded).

    OPENBLAS_NUM_THREADS=1 python benchmarks/conv_kernels.py --repeats 9
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from memsave.functions._window import Window
from memsave.functions.connection import _conv, _conv_grad_w, _deconv, _deconv_scatter


def full_im2col(x, win):
    """(N, C, kh, kw, oh, ow) strided view of the padded copy of x."""
    x = np.pad(x, ((0, 0), (0, 0), (win.ph, win.ph), (win.pw, win.pw)))
    n, c, h, w = x.shape
    oh, ow = win.out_size(h - 2 * win.ph, w - 2 * win.pw)
    s0, s1, s2, s3 = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, win.kh, win.kw, oh, ow),
        (s0, s1, s2 * win.dy, s3 * win.dx, s2 * win.sy, s3 * win.sx))


def full_forward(x, W, win):
    col = full_im2col(x, win)
    n, c, kh, kw, oh, ow = col.shape
    return np.matmul(W.reshape(W.shape[0], -1), col.reshape(n, c * kh * kw, oh * ow)).reshape(
        n, -1, oh, ow)


def full_grad_x(gy, W, win, hw):
    n, o, oh, ow = gy.shape
    _, c, kh, kw = W.shape
    col = np.matmul(W.reshape(o, -1).T, gy.reshape(n, o, oh * ow)).reshape(n, c, kh, kw, oh, ow)
    img = np.zeros((n, c, hw[0] + 2 * win.ph, hw[1] + 2 * win.pw), gy.dtype)
    for ky in range(kh):
        for kx in range(kw):
            i0, j0 = ky * win.dy, kx * win.dx
            img[:, :, i0:i0 + win.sy * (oh - 1) + 1:win.sy,
                j0:j0 + win.sx * (ow - 1) + 1:win.sx] += col[:, :, ky, kx]
    return np.ascontiguousarray(img[:, :, win.ph:win.ph + hw[0], win.pw:win.pw + hw[1]])


def full_grad_w(x, gy, win):
    col = full_im2col(x, win)
    n, c, kh, kw, oh, ow = col.shape
    o, p = gy.shape[1], oh * ow
    col = col.reshape(n, c * kh * kw, p).transpose(0, 2, 1).reshape(n * p, c * kh * kw)
    gy = gy.reshape(n, o, p).transpose(1, 0, 2).reshape(o, n * p)
    return (gy @ col).reshape(o, c, kh, kw)


def per_offset_forward(x, W, win):
    n, c, h, w = x.shape
    oh, ow = win.out_size(h, w)
    y = np.zeros((n, W.shape[0], oh, ow), x.dtype)
    for off in win.offsets(h, w):
        xs = np.ascontiguousarray(x[:, :, off.inp[0], off.inp[1]])
        rows, cols = xs.shape[2:]
        prod = np.matmul(W[:, :, off.ky, off.kx], xs.reshape(n, c, rows * cols))
        y[:, :, off.out[0], off.out[1]] += prod.reshape(n, -1, rows, cols)
    return y


def per_offset_grad_x(gy, W, win, hw):
    n, o = gy.shape[:2]
    gx = np.zeros((n, W.shape[1]) + tuple(hw), gy.dtype)
    for off in win.offsets(*hw):
        g = np.ascontiguousarray(gy[:, :, off.out[0], off.out[1]])
        rows, cols = g.shape[2:]
        prod = np.matmul(W[:, :, off.ky, off.kx].T, g.reshape(n, o, rows * cols))
        gx[:, :, off.inp[0], off.inp[1]] += prod.reshape(n, -1, rows, cols)
    return gx


def per_offset_grad_w(x, gy, win):
    n, c, h, w = x.shape
    o = gy.shape[1]
    gW = np.zeros((o, c, win.kh, win.kw), x.dtype)
    for off in win.offsets(h, w):
        xs = np.ascontiguousarray(x[:, :, off.inp[0], off.inp[1]]).reshape(n, c, -1)
        g = np.ascontiguousarray(gy[:, :, off.out[0], off.out[1]]).reshape(n, o, -1)
        gW[:, :, off.ky, off.kx] = np.matmul(g, xs.transpose(0, 2, 1)).sum(axis=0)
    return gW


def channels_last_forward(x, W, win):
    n, c, h, w = x.shape
    oh, ow = win.out_size(h, w)
    o = W.shape[0]
    Wt = W.transpose(2, 3, 1, 0).reshape(-1, o).copy()
    xpad = np.zeros((h + 2 * win.ph, w + 2 * win.pw, c), x.dtype)
    col = np.empty((oh, ow, win.kh, win.kw, c), x.dtype)
    y = np.empty((n, o, oh, ow), x.dtype)
    s0, s1, s2 = xpad.strides
    view = np.lib.stride_tricks.as_strided(
        xpad, col.shape, (s0 * win.sy, s1 * win.sx, s0 * win.dy, s1 * win.dx, s2))
    for i in range(n):
        xpad[win.ph:win.ph + h, win.pw:win.pw + w] = x[i].transpose(1, 2, 0)
        col[...] = view
        y[i] = (col.reshape(oh * ow, -1) @ Wt).T.reshape(o, oh, ow)
    return y


def timed(run, repeats):
    """(wall times, CPU times, transient bytes) of ``run``."""
    run()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = run()
    transient = tracemalloc.get_traced_memory()[1] - before - result.nbytes
    del result
    tracemalloc.stop()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        run()
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    return walls, cpus, transient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--side", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, c, s = args.batch, args.channels, args.side
    x = rng.standard_normal((n, c, s, s)).astype(np.float32)
    W = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    gy = rng.standard_normal((n, c, s, s)).astype(np.float32)
    win = Window.make(3, 1, 1)
    candidates = {
        "y": {"full-im2col": lambda: full_forward(x, W, win),
              "chunked-im2col": lambda: _conv(x, W, win, 1),
              "per-offset": lambda: per_offset_forward(x, W, win),
              "channels-last": lambda: channels_last_forward(x, W, win)},
        "gx": {"full-im2col": lambda: full_grad_x(gy, W, win, (s, s)),
               "chunked-im2col": lambda: _deconv(gy, W, win, 1, (s, s)),
               "chunked-scatter": lambda: _deconv_scatter(gy, W, win, 1, (s, s)),
               "per-offset": lambda: per_offset_grad_x(gy, W, win, (s, s))},
        "gW": {"full-im2col": lambda: full_grad_w(x, gy, win),
               "chunked-im2col": lambda: _conv_grad_w(x, gy, win, 1),
               "per-offset": lambda: per_offset_grad_w(x, gy, win)},
    }
    out_mib = x.nbytes / 2**20
    print(f"x, y, gy: {x.shape} float32 ({out_mib:.1f} MiB each), W {W.shape}, pad 1; "
          f"{args.repeats} repeats")
    print("| kernel | candidate | wall min ms | wall median ms | CPU min ms | CPU median ms "
          "| transient MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kernel, runs in candidates.items():
        reference = runs["full-im2col"]()
        for name, run in runs.items():
            scale = np.abs(reference).max()
            assert np.abs(run() - reference).max() <= 1e-4 * scale, (kernel, name)
            walls, cpus, transient = timed(run, args.repeats)
            print(f"| {kernel} | {name} | {min(walls) * 1e3:.1f} | "
                  f"{statistics.median(walls) * 1e3:.1f} | {min(cpus) * 1e3:.1f} | "
                  f"{statistics.median(cpus) * 1e3:.1f} | {transient / 2**20:.2f} |")


if __name__ == "__main__":
    main()
