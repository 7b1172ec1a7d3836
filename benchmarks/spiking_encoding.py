"""Input encodings of the Diehl & Cook (2015) layer on Fashion-MNIST: vote accuracy per setting.

The paper has only MNIST; how to encode another dataset's images as Poisson rates is the one thing
it leaves open. This script trains one layer per setting (one process per setting, in parallel)
on the first ``--n-train`` training images, assigns neuron labels on them and reports the
paper's vote on the first ``--n-test`` test images, with the activity figures that explain it.
The full protocol (60k / 10k, N = 400) is ``bioreps train experiments/spiking_fmnist.toml``.

    python benchmarks/spiking_encoding.py                       # proxy: N=400, 10k / 5k, ~5 min on 2 cores
    python benchmarks/spiking_encoding.py --settings pixels onoff-182 --n-train 2000 --n-test 1000

Settings: ``pixels`` (the paper), ``pixels-R`` (max rate R Hz), ``gain-S`` (``input_sum=S``),
``onoff-S`` (``encoding="on-off"``, ``weight_sum=156.8``, ``input_sum=S``).
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def build(setting, n_neurons, seed):
    from bioreps.layers import DiehlCookParams, SpikingWTA

    kind, _, value = setting.partition("-")
    kw, params = {}, {}
    if kind == "pixels":
        if value:
            params["max_rate_hz"] = float(value)
    elif kind == "gain":
        params["input_sum"] = float(value)
    elif kind == "onoff":
        kw["encoding"] = "on-off"
        params.update(weight_sum=156.8, input_sum=float(value or 182.0))
    else:
        raise ValueError(f"unknown setting {setting!r} (pixels[-R], gain-S, onoff-S)")
    return SpikingWTA(n_neurons=n_neurons, params=DiehlCookParams(**params), backend="cpu", random_state=seed,
                      progress=False, **kw)


def run(setting, n_neurons, n_train, n_test, seed):
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from bioreps import data

    X, y = data.load("fashion-mnist", "train")
    Xt, yt = data.load("fashion-mnist", "test")
    X, y, Xt, yt = X[:n_train], y[:n_train], Xt[:n_test], yt[:n_test]
    layer = build(setting, n_neurons, seed)
    t0 = time.perf_counter()
    layer.fit(X)
    fit_s = time.perf_counter() - t0
    C = layer.transform(X)
    layer.assign_labels(None, y, counts=C)
    Ct = layer.transform(Xt)
    vote = float((layer.predict(None, counts=Ct) == yt).mean())
    return dict(setting=setting, vote=round(vote, 4), spikes_per_train_image=round(float(C.sum(1).mean()), 2),
                active_per_test_image=round(float((Ct > 0).sum(1).mean()), 2),
                top_neuron_share=round(float((Ct.max(1) / np.maximum(Ct.sum(1), 1)).mean()), 3),
                neurons_per_class=np.bincount(layer.labels_, minlength=10).tolist(), retries=layer.n_retries_,
                fit_seconds=round(fit_s, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["pixels", "gain-224", "onoff-182"])
    ap.add_argument("--n-neurons", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    for s in a.settings:
        build(s, 1, 0)  # unknown settings fail before any work
    print(f"N={a.n_neurons}, {a.n_train} training / {a.n_test} test images, seed {a.seed}", flush=True)
    with ProcessPoolExecutor(a.workers) as pool:
        futures = [pool.submit(run, s, a.n_neurons, a.n_train, a.n_test, a.seed) for s in a.settings]
        rows = [f.result() for f in futures]
    for r in rows:
        print(json.dumps(r), flush=True)
    base = next((r["vote"] for r in rows if r["setting"] == "pixels"), None)
    print(f"\n{'setting':<12} {'vote':>7} {'vs pixels':>10} {'spikes':>7} {'active':>7}")
    for r in rows:
        d = f"{100 * (r['vote'] - base):+.2f}" if base is not None else "-"
        print(f"{r['setting']:<12} {100 * r['vote']:6.2f}% {d:>10} {r['spikes_per_train_image']:7.1f} "
              f"{r['active_per_test_image']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
