"""Diehl & Cook ensembles on the CPU: training throughput of M networks trained at once
(:class:`bioreps.layers.SpikingEnsemble`, one thread per member, the nogil Numba kernels) against
one network, in the same run.

    python benchmarks/ensemble.py [--members M] [--neurons 100] [--samples 100]

Prints network-samples/s of one network and of the ensemble and their ratio; the goal (issue 14)
is >= 0.85 x cores (>= 1.7x on 2 cores) with M = cores. Also checks member 0 equals the network
trained alone. Fashion-MNIST images when installed, else synthetic ones.
"""

import argparse
import os
import time

import numpy as np

from bioreps import data
from bioreps.layers import SpikingEnsemble, SpikingWTA


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    if data.locate("fashion-mnist") is not None:
        X = data.load("fashion-mnist", "train")[0][: args.samples].reshape(args.samples, -1).astype(np.float64)
        source = "fashion-mnist"
    else:
        X = data.make_classes(args.samples, n_features=784, n_classes=10, random_state=0)[0]
        source = "synthetic"
    kw = dict(n_neurons=args.neurons, progress=False, backend="cpu")
    SpikingWTA(random_state=0, **kw).fit(X[:2])  # compile
    t0 = time.perf_counter()
    one = SpikingWTA(random_state=0, **kw).fit(X)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    ens = SpikingEnsemble(seeds=tuple(range(args.members)), **kw).fit(X)
    t_ens = time.perf_counter() - t0
    same = bool(np.array_equal(ens.members_[0].weights_, one.weights_))
    r_one, r_ens = args.samples / t_one, args.members * args.samples / t_ens
    print(f"{source}; N={args.neurons}; {args.samples} samples; {os.cpu_count()} cores")
    print(f"one network: {r_one:.1f} samples/s; ensemble of {args.members}: {r_ens:.1f} network-samples/s "
          f"({r_ens / r_one:.2f}x one network); member 0 == the network alone: {same}")


if __name__ == "__main__":
    main()
