"""Diehl & Cook (2015) spiking network on a GPU: training and transform samples/s of the CUDA
kernels (``kernels/cuda/lif.py``) at N=100 and N=400 (350 ms + 150 ms per sample at dt 0.5 ms),
with the CPU kernel on a few samples in the same run, and a check that both give the same counts.

    python benchmarks/spiking_cuda.py --cuda [--fit-samples 200] [--transform-samples 20000]
                                      [--neurons 100 400] [--cpu-samples 50] [--block 256]

* fit: ``SpikingWTA(backend="cuda").fit`` (one persistent block runs every presentation, retries
  and normalisation on the device); samples/s over ``--fit-samples`` images after a warm-up
  (compilation) on 2 images.
* transform: ``transform`` of ``--transform-samples`` images (one block per sample, all in
  parallel); the goal on an H100 is >= 10,000 samples/s at N=100.
* ensemble: ``SpikingEnsemble(seeds=range(M), backend="cuda").fit`` of M networks on the same
  ``--fit-samples`` images, one block per network in one launch (``--ensemble M``; 0: one per
  multiprocessor, the default); total network-samples/s and the ratio to one network's (the
  issue's goal: >= 60x with 132 networks on an H100).
* cpu: the same fit/transform with ``backend="cpu"`` on ``--cpu-samples`` images (0: skip), and
  the fraction of rows whose transform counts are identical on both backends (expected: 1.0).

Uses Fashion-MNIST training images when installed (repeated to the requested count), else
synthetic ``make_classes`` images. Needs a real GPU (the CUDA simulator is far too slow here).
"""

import argparse
import os
import sys
import time

import numpy as np

from bioreps import data
from bioreps.layers import SpikingEnsemble, SpikingWTA


def images(n):
    if data.locate("fashion-mnist") is not None:
        X, _ = data.load("fashion-mnist", "train")
        X = np.asarray(X, np.float64).reshape(len(X), -1)
        source = "fashion-mnist"
    else:
        X, _ = data.make_classes(min(n, 5000), n_features=784, n_classes=10, random_state=0)
        X = X.astype(np.float64)
        source = "make_classes"
    reps = -(-n // X.shape[0])
    return np.ascontiguousarray(np.tile(X, (reps, 1))[:n]), source


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuda", action="store_true", help="time the CUDA kernels (required; the CPU-only timings "
                                                        "are in benchmarks/spiking.py)")
    ap.add_argument("--fit-samples", type=int, default=200)
    ap.add_argument("--transform-samples", type=int, default=20000)
    ap.add_argument("--neurons", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--cpu-samples", type=int, default=50, help="samples for the CPU comparison (0: skip)")
    ap.add_argument("--ensemble", type=int, default=0,
                    help="networks trained at once by SpikingEnsemble (0: one per multiprocessor; -1: skip)")
    ap.add_argument("--block", type=int, default=None, help="threads per block (default $BIOREPS_CUDA_BLOCK or 128)")
    args = ap.parse_args()
    if not args.cuda:
        ap.error("pass --cuda (this script times the GPU path)")
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.exit("the CUDA simulator is far too slow for a benchmark; run on a GPU")
    from numba import cuda

    from bioreps.kernels.cuda import lif as gpu

    if args.block:
        gpu.BLOCK = args.block
    n_max = max(args.fit_samples, args.transform_samples, args.cpu_samples)
    X, source = images(n_max)
    dev = cuda.get_current_device()
    name = dev.name
    n_ens = dev.MULTIPROCESSOR_COUNT if args.ensemble == 0 else args.ensemble
    name = name.decode() if isinstance(name, bytes) else name
    print(f"images: {source}; 350+150 ms at dt 0.5 ms; GPU {name}; block {gpu._block('train')} (train), {gpu._block('transform')} (transform); cpu count {os.cpu_count()}")
    for n in args.neurons:
        kw = dict(n_neurons=n, random_state=0, progress=False)
        SpikingWTA(backend="cuda", **kw).fit(X[:2]).transform(X[:2])  # compile
        m = SpikingWTA(backend="cuda", **kw)
        t0 = time.perf_counter()
        m.fit(X[:args.fit_samples])
        fit_sps = args.fit_samples / (time.perf_counter() - t0)
        Xt = X[:args.transform_samples]
        t0 = time.perf_counter()
        C = m.transform(Xt)
        tr_sps = Xt.shape[0] / (time.perf_counter() - t0)
        line = (f"N={n:4d}  cuda fit {fit_sps:8.1f} samples/s  transform {tr_sps:9.1f} samples/s "
                f"({Xt.shape[0]} samples)  mean spikes/sample {C.sum(1).mean():.1f}  retries {m.n_retries_}")
        if n_ens > 0:
            ekw = {k: v for k, v in kw.items() if k != "random_state"}
            SpikingEnsemble(seeds=range(2), backend="cuda", **ekw).fit(X[:2])  # compile
            ens = SpikingEnsemble(seeds=range(n_ens), backend="cuda", **ekw)
            t0 = time.perf_counter()
            ens.fit(X[:args.fit_samples])
            ens_sps = n_ens * args.fit_samples / (time.perf_counter() - t0)
            same = bool(np.array_equal(ens.members_[0].weights_, m.weights_))
            line += (f"\n        ensemble of {n_ens}: fit {ens_sps:9.1f} network-samples/s = "
                     f"{ens_sps / fit_sps:.1f}x one network; member 0 == the network alone: {same}")
        if args.cpu_samples:
            k = args.cpu_samples
            c = SpikingWTA(backend="cpu", **kw)
            t0 = time.perf_counter()
            c.fit(X[:k])
            cfit = k / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            Cc = c.transform(X[:k])
            ctr = k / (time.perf_counter() - t0)
            g = SpikingWTA(backend="cuda", **kw).fit(X[:k])
            Cg = g.transform(X[:k])
            same = float(np.mean(np.all(Cc == Cg, axis=1)))
            wdiff = float(np.abs(c.weights_ - g.weights_).max())
            line += (f"\n        cpu fit {cfit:8.1f} samples/s  transform {ctr:9.1f} samples/s ({k} samples); "
                     f"identical count rows {same:.3f}; max |W_cpu - W_cuda| {wdiff:.2e}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
