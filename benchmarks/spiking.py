"""Diehl & Cook (2015) spiking network: training and transform samples/s of our CPU kernel at
N=100 and N=400 (350 ms + 150 ms per sample at dt 0.5 ms, STDP on), and the float64 NumPy
reference (tests/reference.py) on the same spike trains, in the same run.

    python benchmarks/spiking.py [--samples 200] [--neurons 100 400] [--ref-samples 2]

Uses Fashion-MNIST training images when installed, else synthetic ``make_classes`` images.
Brian2 / BindsNET comparisons (issue 4) are still to be added. Model-card figures for the plain
Numba loop on a 2-core machine: ~170 samples/s (N=100), ~48 (N=400).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from reference import diehl_cook_normalize, diehl_cook_presentation  # noqa: E402

from bioreps import data  # noqa: E402
from bioreps.kernels.cpu import lif  # noqa: E402
from bioreps.kernels.poisson import poisson_spike_trains  # noqa: E402
from bioreps.layers import DiehlCookParams, SpikingWTA  # noqa: E402


def images(n):
    if data.locate("fashion-mnist") is not None:
        X, _ = data.load("fashion-mnist", "train")
        return np.asarray(X[:n], np.float64).reshape(n, -1), "fashion-mnist"
    X, _ = data.make_classes(n, n_features=784, n_classes=10, random_state=0)
    return X.astype(np.float64), "make_classes"


def time_reference(X, n_neurons, n_samples):
    p = DiehlCookParams()
    pd = p.to_dict()
    rng = np.random.default_rng(0)
    W = (rng.random((784, n_neurons)) + 0.01) * 0.3
    st = lif.LIFState(784, n_neurons, p.v_rest_e_mv, p.v_rest_i_mv)
    state = {k: getattr(st, k).copy() for k in ("v_e", "ge_e", "gi_e", "ref_e", "theta", "v_i", "ge_i", "ref_i",
                                                "x_pre", "x_post1", "x_post2")}
    t0 = time.perf_counter()
    for k in range(n_samples):
        indptr, indices = poisson_spike_trains(X[k] * p.max_rate_hz, 700, 0.5, k)
        W = diehl_cook_normalize(W, p.weight_sum)
        W, state, _ = diehl_cook_presentation(W, indptr, indices, 300, pd, 0.5, True, state)
    return n_samples / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--neurons", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--ref-samples", type=int, default=2, help="samples for the NumPy reference (0: skip)")
    args = ap.parse_args()
    X, source = images(args.samples)
    print(f"images: {source}, {args.samples} samples, 350+150 ms at dt 0.5 ms; cpu count {os.cpu_count()}")
    SpikingWTA(n_neurons=10, backend="cpu", random_state=0, progress=False).fit(X[:2])  # compile
    for n in args.neurons:
        m = SpikingWTA(n_neurons=n, backend="cpu", random_state=0, progress=False)
        t0 = time.perf_counter()
        m.fit(X)
        fit_sps = args.samples / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        C = m.transform(X)
        tr_sps = args.samples / (time.perf_counter() - t0)
        line = (f"N={n:4d}  fit {fit_sps:7.1f} samples/s  transform {tr_sps:7.1f} samples/s  "
                f"mean spikes/sample {C.sum(1).mean():.1f}  retries {m.n_retries_}")
        if args.ref_samples:
            ref_sps = time_reference(X, n, args.ref_samples)
            line += f"  reference {ref_sps:.2f} samples/s (x{fit_sps / ref_sps:.0f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
