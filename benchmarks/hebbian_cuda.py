"""Krotov-Hopfield learning rule on a GPU: seconds per epoch of the persistent CUDA epoch kernel
(one cooperative launch per epoch), of the six per-batch kernels, and of the CPU kernel, in the
same run, with a check that the GPU paths agree.

    python benchmarks/hebbian_cuda.py --cuda [--units 2000] [--batch 100 1000] [--epochs 3]
                                      [--cpu-epochs 1] [--tile 32]

The goal (issue 17): the paper's schedule, 1000 epochs of 60,000 Fashion-MNIST/MNIST images,
2000 units, batch 100, in <= 2 minutes on one H100/H200, i.e. <= 120 ms per epoch.

Cost model of the persistent kernel per batch (B = 100, K = 2000 units, N = 784 features; H100
SXM: 132 SMs, ~67 TFLOP/s float32, ~1.98 GHz; grid = resident blocks of 256 threads, ~264):

=====================  ===================================================  =============
phase                  work                                                 estimate
=====================  ===================================================  =============
gather                 B x N floats copied (314 KB)                          ~2 us
currents GEMM          2 B K N = 314 MFLOP, 252 tiles of 32 x 32, one wave  ~10-20 us
                       (SIMT float32 at ~25% of peak)
top-k                  k arg-max passes per sample, 8-step block tree each  ~3-5 us
unit collection        2B entries: atomic min + block prefix sum (block 0)  ~3-5 us
ds, xx                 <= 2B units x N features x B samples (float64)        ~5-10 us
update                 <= 2B rows of N: W and Wp                              ~1-2 us
grid barriers          6 per batch at ~1.5-3 us                             ~9-18 us
=====================  ===================================================  =============

so ~35-60 us per batch, 600 batches: ~21-36 ms per epoch, 21-36 s for 1000 epochs (batch 1000:
60 batches of a 10x larger GEMM, ~15-25 ms per epoch). Per epoch on top: one launch (~0.1 ms),
the copies of W in and out when W is a host array (6.3 MB each way, ~1 ms over PCIe), and what
the layer does between epochs: ``HebbianWTA.fit`` computes its diagnostics (a 2000 x 784 x 2000
matmul on the host, ~50-100 ms) every ``diagnostics_every`` epochs; with 1 (the default) that
alone would be 50-100 s over 1000 epochs, so the 2-minute schedule needs diagnostics_every >= 10.
The per-batch path pays six launches per batch (~150 us): ~90 s per 1000 epochs before any work.
The first GPU run of this script tells at once whether the model holds: it prints the measured
ms per epoch next to these estimates.

Needs a real GPU (the CUDA simulator is far too slow for timings).
"""

import argparse
import os
import sys
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuda", action="store_true", help="time the CUDA kernels (required)")
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--epochs", type=int, default=3, help="timed GPU epochs per configuration (after a warm-up)")
    ap.add_argument("--cpu-epochs", type=int, default=1, help="timed CPU epochs (0: skip)")
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--samples", type=int, default=60000)
    args = ap.parse_args()
    if not args.cuda:
        ap.error("pass --cuda (this script times the GPU path)")
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.exit("the CUDA simulator is far too slow for a benchmark; run on a GPU")
    from numba import cuda

    from bioreps import data
    from bioreps.kernels.cpu import hebbian as cpu
    from bioreps.kernels.cuda import hebbian as gpu

    if not cuda.is_available():
        sys.exit("no CUDA GPU here")
    if data.locate("fashion-mnist") is not None:
        X = data.load("fashion-mnist", "train")[0].reshape(60000, -1).astype(np.float32)
    else:
        X = np.random.default_rng(0).random((args.samples, 784), dtype=np.float32)
    X = np.ascontiguousarray(np.resize(X, (args.samples, X.shape[1])))
    X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-12
    K, N, p, k, delta, eps = args.units, X.shape[1], 3.0, 2, 0.4, 0.02
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((K, N)).astype(np.float32)
    name = cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    print(f"GPU {name}; K={K}, N={N}, {args.samples} samples, p={p}, k={k}, tile {args.tile}")
    for B in args.batch:
        order = rng.permutation(args.samples)
        row = {}
        for label, persistent in (("persistent", True), ("per-batch", False)):
            bufs = gpu.HebbianBuffers(K, N, B, k, tile=args.tile, persistent=persistent)
            dW = cuda.to_device(W0)
            gpu.hebbian_epoch(dW, X, order[: 10 * B], B, k, delta, eps, p, bufs)  # compile, upload X
            cuda.synchronize()
            dW = cuda.to_device(W0)
            t0 = time.perf_counter()
            for _ in range(args.epochs):
                gpu.hebbian_epoch(dW, X, order, B, k, delta, eps, p, bufs)
            cuda.synchronize()
            row[label] = (time.perf_counter() - t0) / args.epochs
            row[label + "_W"] = dW.copy_to_host()
            if persistent:
                row["grid"] = bufs.grid
        agree = float(np.abs(row["persistent_W"] - row["per-batch_W"]).max())
        line = (f"batch {B}: persistent {1e3 * row['persistent']:.1f} ms/epoch (grid {row['grid']}), per-batch "
                f"{1e3 * row['per-batch']:.1f} ms/epoch ({row['per-batch'] / row['persistent']:.1f}x); "
                f"1000 epochs: {row['persistent'] * 1000:.0f} s; max |W diff| between the paths {agree:.1e}")
        if args.cpu_epochs:
            Wc = W0.copy()
            cb = cpu.HebbianBuffers(K, N, B, k)
            t0 = time.perf_counter()
            for _ in range(args.cpu_epochs):
                cpu.hebbian_epoch(Wc, X, order, B, k, delta, eps, p, cb)
            tc = (time.perf_counter() - t0) / args.cpu_epochs
            line += f"; CPU {1e3 * tc:.0f} ms/epoch ({tc / row['persistent']:.0f}x the persistent kernel)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
