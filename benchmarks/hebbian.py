"""One epoch of the Krotov-Hopfield rule on Fashion-MNIST: the float64 NumPy reference (the
notebook's code, tests/reference.py) against our CPU kernel, in the same run, same batch order.

    python benchmarks/hebbian.py [--units 2000] [--p 3] [--k 7] [--batch 100] [--ref-batches 600]
                                 [--epochs 2] [--cuda]

The reference can be timed on a prefix of the epoch (--ref-batches) and scaled to a full epoch;
the default times the whole epoch. Prints seconds per epoch and the speed ratio.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from reference import krotov_hopfield_epoch, softhebb_epoch  # noqa: E402

from bioreps import data  # noqa: E402
from bioreps.kernels.cpu import hebbian as cpu  # noqa: E402
from bioreps.kernels.cpu import softhebb as soft_cpu  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--p", type=float, default=3.0)
    ap.add_argument("--k", type=int, default=7)
    ap.add_argument("--delta", type=float, default=0.4)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--ref-batches", type=int, default=None, help="time the reference on this many batches")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of our kernel to time (best is reported)")
    ap.add_argument("--cuda", action="store_true", help="also time the CUDA kernels")
    ap.add_argument("--no-soft", action="store_true", help="skip the SoftHebb (SoftWTA) kernel")
    args = ap.parse_args()

    X, _ = data.load("fashion-mnist", "train")
    n = X.shape[0]
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((args.units, X.shape[1])).astype(np.float32)
    order = rng.permutation(n).astype(np.int64)
    n_batches = -(-n // args.batch)
    print(f"Fashion-MNIST train {X.shape}, {args.units} units, p={args.p}, k={args.k}, batch {args.batch}")

    # ours: warm up (compile), then time full epochs
    W = W0.copy()
    buffers = cpu.HebbianBuffers(args.units, X.shape[1], args.batch, args.k)
    cpu.hebbian_epoch(W, X, order[: 2 * args.batch], args.batch, args.k, args.delta, 0.02, args.p, buffers)
    ours = []
    for _ in range(args.epochs):
        W = W0.copy()
        t = time.perf_counter()
        cpu.hebbian_epoch(W, X, order, args.batch, args.k, args.delta, 0.02, args.p, buffers)
        ours.append(time.perf_counter() - t)
    t_ours = min(ours)

    nb = args.ref_batches or n_batches
    t = time.perf_counter()
    R = krotov_hopfield_epoch(W0.astype(np.float64), X, order[: nb * args.batch], args.batch, args.k, args.delta,
                              0.02, args.p)
    t_ref = (time.perf_counter() - t) * n_batches / nb
    Wc = W0.copy()
    cpu.hebbian_epoch(Wc, X, order[: nb * args.batch], args.batch, args.k, args.delta, 0.02, args.p, buffers)
    err = np.linalg.norm(Wc - R) / np.linalg.norm(R)

    print(f"  reference NumPy float64 : {t_ref:7.2f} s/epoch" + (f" (from {nb} batches)" if nb != n_batches else ""))
    print(f"  bioreps CPU kernel      : {t_ours:7.2f} s/epoch (best of {len(ours)}: {', '.join(f'{x:.2f}' for x in ours)})")
    print(f"  speed ratio             : {t_ref / t_ours:7.1f}x")
    print(f"  rel. Frobenius error vs reference after {nb} batches: {err:.1e}")

    if args.cuda:
        from bioreps.kernels.cuda import hebbian as gpu
        gbuf = gpu.HebbianBuffers(args.units, X.shape[1], args.batch, args.k)
        Wg = W0.copy()
        gpu.hebbian_epoch(Wg, X, order[: 2 * args.batch], args.batch, args.k, args.delta, 0.02, args.p, gbuf)
        times = []
        for _ in range(max(3, args.epochs)):
            Wg = W0.copy()
            t = time.perf_counter()
            gpu.hebbian_epoch(Wg, X, order, args.batch, args.k, args.delta, 0.02, args.p, gbuf)
            times.append(time.perf_counter() - t)
        err = np.linalg.norm(Wg - W) / np.linalg.norm(W)
        print(f"  bioreps CUDA kernel     : {min(times):7.3f} s/epoch; 1000 epochs ~ {1000 * min(times) / 60:.1f} min; "
              f"vs CPU {t_ours / min(times):.1f}x; rel. error vs CPU {err:.1e}")
    if not args.no_soft:
        soft(args, X, W0, order, n_batches)


def soft(args, X, W0, order, n_batches):
    """SoftHebb epoch: float64 NumPy reference vs our CPU kernel (p=2, T=1/12, adaptive lr)."""
    Ws = (W0 / np.sqrt(X.shape[1])).astype(np.float32)  # SoftHebb-scale start: unit-ish norms
    bufs = soft_cpu.SoftHebbBuffers(args.units, X.shape[1], args.batch)
    W = Ws.copy()
    soft_cpu.softhebb_epoch(W, X, order[: 2 * args.batch], args.batch, 12.0, 0.01, 2.0, 0.5, True, bufs)
    times = []
    for _ in range(args.epochs):
        W = Ws.copy()
        t = time.perf_counter()
        soft_cpu.softhebb_epoch(W, X, order, args.batch, 12.0, 0.01, 2.0, 0.5, True, bufs)
        times.append(time.perf_counter() - t)
    nb = min(args.ref_batches or 60, n_batches)
    t = time.perf_counter()
    R = softhebb_epoch(Ws.astype(np.float64), X, order[: nb * args.batch], args.batch, 12.0, 0.01, 2.0, 0.5, True)
    t_ref = (time.perf_counter() - t) * n_batches / nb
    Wc = Ws.copy()
    soft_cpu.softhebb_epoch(Wc, X, order[: nb * args.batch], args.batch, 12.0, 0.01, 2.0, 0.5, True, bufs)
    err = np.linalg.norm(Wc - R) / np.linalg.norm(R)
    print(f"SoftHebb (SoftWTA), p=2, T=1/12, adaptive lr, {args.units} units, batch {args.batch}")
    print(f"  reference NumPy float64 : {t_ref:7.2f} s/epoch (from {nb} batches)")
    print(f"  bioreps CPU kernel      : {min(times):7.2f} s/epoch (best of {len(times)})")
    print(f"  speed ratio             : {t_ref / min(times):7.1f}x; rel. error vs reference after {nb} batches: {err:.1e}")
    if args.cuda:
        from bioreps.kernels.cuda import softhebb as soft_gpu
        gb = soft_gpu.SoftHebbBuffers(args.units, X.shape[1], args.batch)
        Wg = Ws.copy()
        soft_gpu.softhebb_epoch(Wg, X, order[: 2 * args.batch], args.batch, 12.0, 0.01, 2.0, 0.5, True, gb)
        gt = []
        for _ in range(3):
            Wg = Ws.copy()
            t = time.perf_counter()
            soft_gpu.softhebb_epoch(Wg, X, order, args.batch, 12.0, 0.01, 2.0, 0.5, True, gb)
            gt.append(time.perf_counter() - t)
        print(f"  bioreps CUDA kernel     : {min(gt):7.3f} s/epoch; vs CPU {min(times) / min(gt):.1f}x; "
              f"rel. error vs CPU {np.linalg.norm(Wg - W) / np.linalg.norm(W):.1e}")


if __name__ == "__main__":
    main()
