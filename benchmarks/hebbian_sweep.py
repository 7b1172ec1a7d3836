"""Sweep HebbianWTA settings on Fashion-MNIST for convergence, collapse and readout accuracy.

For each setting: train 2000 units for --epochs, logging after every --log-every epochs the
fraction of units at unit p-norm, the distinct winners on the 10k test images and (at the end)
the test accuracy of a softmax readout on ReLU(W x)^4.5. One JSON line per setting goes to
--out (appended), so a long sweep can be watched and resumed.

    python benchmarks/hebbian_sweep.py --epochs 100 --out sweep.jsonl \
        --setting k=2,delta=0.4,batch=100,lr=0.04,norm=2 --setting k=7,delta=0.4,batch=100,lr=0.04
"""

import argparse
import json
import time
import warnings

import numpy as np

from bioreps import data
from bioreps.layers import HebbianWTA
from bioreps.readout import LinearReadout


def parse_setting(text):
    out = {"p": 3.0, "k": 7, "delta": 0.4, "batch": 100, "lr": 0.02, "norm": None, "center": 0}
    for part in text.split(","):
        key, value = part.split("=")
        out[key] = None if value == "none" else (int(value) if key in ("k", "batch", "center") else float(value))
    return out


def readout_accuracy(layer, X, y, Xt, yt, epochs=8, seed=0):
    H, Ht = layer.transform(X), layer.transform(Xt)
    r = LinearReadout(epochs=epochs, lr=1e-3, batch_size=256, random_state=seed, progress=False).fit(H, y)
    return r.score(Ht, yt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", action="append", required=True)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readout-epochs", type=int, default=8)
    ap.add_argument("--out", default="hebbian_sweep.jsonl")
    ap.add_argument("--save-dir", default=None, help="save each trained layer there (bioreps HDF5)")
    args = ap.parse_args()
    X, y = data.load("fashion-mnist", "train")
    Xt, yt = data.load("fashion-mnist", "test")
    for text in args.setting:
        s = parse_setting(text)
        layer = HebbianWTA(n_units=args.units, p=s["p"], k=s["k"], delta=s["delta"], lr=s["lr"],
                           batch_size=s["batch"], center=bool(s["center"]), input_norm=s["norm"], backend="cpu",
                           random_state=args.seed, progress=False)
        log = []

        def cb(l, rec):
            if rec["epoch"] % args.log_every == 0 or rec["epoch"] == args.epochs:
                winners = int(np.unique(l.winners(Xt)).size)
                log.append({"epoch": rec["epoch"], "converged": round(rec["converged"], 4), "test_winners": winners})
                print(text, log[-1], flush=True)

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.fit(X, epochs=args.epochs, X_val=Xt, callback=cb)
        train_s = time.perf_counter() - t0
        if args.save_dir:
            import os
            os.makedirs(args.save_dir, exist_ok=True)
            layer.save(os.path.join(args.save_dir, text.replace(",", "_").replace("=", "") + f"_e{args.epochs}.h5"))
        acc = readout_accuracy(layer, X, y, Xt, yt, epochs=args.readout_epochs)
        result = {"setting": s, "epochs": args.epochs, "units": args.units, "train_seconds": round(train_s, 1),
                  "log": log, "test_accuracy": acc, "readout_epochs": args.readout_epochs}
        print(json.dumps(result), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
