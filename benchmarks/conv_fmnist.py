"""Fashion-MNIST accuracy of a convolutional SoftHebb network trained without labels
(:class:`bioreps.layers.HebbianNet`) with a linear softmax readout on its last layer.

    python benchmarks/conv_fmnist.py [--layers 2] [--n-train 60000] [--epochs 1] [--readout-epochs 30]
                                     [--backprop-epochs N [--backprop-only]]

The architecture is SoftHebb's CIFAR-10 preset ``4SoftHebbCnnCIFAR`` (Journé et al. 2023;
NeuromorphicComputing/SoftHebb ``presets.json``) on 1-channel 28 x 28 images, its first
``--layers`` blocks: 96 channels k5 p2, t_invert 1, lr 0.08, triangle 0.7, max-pool 4/2/1;
384 channels k3 p1, t_invert 0.65, lr 0.005, triangle 1.4, max-pool 4/2/1; 1536 channels k3 p1,
t_invert 0.25, lr 0.01, triangle 1.0, avg-pool 2/2/0; batch 10, one epoch per layer, greedy.
The readout: :class:`bioreps.readout.LinearReadout` (Adam on standardised features, learning
rate decaying linearly to 0). ``--backprop-epochs N`` also trains ``baselines.ConvNet`` of the
same blocks end to end (ReLU, Adam, batch 64) in the same run, for context; ``--backprop-only``
trains only that network (its figure beside an earlier Hebbian run of the same settings). Prints
per-layer wall times, the test accuracy and the settings, for benchmarks/RESULTS.md.
"""

import argparse
import os
import time

import numpy as np

from bioreps import data
from bioreps.layers import HebbianNet
from bioreps.readout import LinearReadout

BLOCKS = [
    {"kind": "conv-soft-wta", "n_channels": 96, "kernel_size": 5, "padding": 2, "temperature": 1.0, "lr": 0.08,
     "power": 0.7, "pool": ["max", 4, 2, 1]},
    {"kind": "conv-soft-wta", "n_channels": 384, "kernel_size": 3, "padding": 1, "temperature": 1 / 0.65,
     "lr": 0.005, "power": 1.4, "pool": ["max", 4, 2, 1]},
    {"kind": "conv-soft-wta", "n_channels": 1536, "kernel_size": 3, "padding": 1, "temperature": 1 / 0.25,
     "lr": 0.01, "power": 1.0, "pool": ["avg", 2, 2, 0]},
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=1, help="unsupervised epochs per layer")
    ap.add_argument("--readout-epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backprop-epochs", type=int, default=0,
                    help="also train baselines.ConvNet of the same blocks by backprop for this many epochs (0: no)")
    ap.add_argument("--backprop-only", action="store_true",
                    help="train only the backprop ConvNet (needs --backprop-epochs), not the Hebbian network")
    args = ap.parse_args()
    if args.backprop_only and not args.backprop_epochs:
        ap.error("--backprop-only needs --backprop-epochs N (N >= 1)")
    Xtr, ytr = data.load("fashion-mnist", "train", flatten=False)
    Xte, yte = data.load("fashion-mnist", "test", flatten=False)
    Xtr, ytr = Xtr[:args.n_train, None], ytr[:args.n_train]
    Xte = Xte[:, None]
    print(f"cores {os.cpu_count()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{len(Xtr)} training images, {len(Xte)} test; {args.layers} layers", flush=True)
    if not args.backprop_only:
        hebbian(args, Xtr, ytr, Xte, yte)
    if args.backprop_epochs:
        from bioreps import baselines

        bp = baselines.ConvNet(BLOCKS[:args.layers], input_shape=(1, 28, 28), seed=args.seed)
        t0 = time.perf_counter()
        # the test images as validation data: the test accuracy after each epoch (not used to train)
        baselines.train(bp, Xtr.reshape(len(Xtr), -1), ytr, None, epochs=args.backprop_epochs, batch_size=64,
                        lr=1e-3, seed=args.seed, progress=False, X_val=Xte.reshape(len(Xte), -1), y_val=yte,
                        callback=lambda epoch, rec, model: print(f"  backprop epoch {epoch}: {rec}", flush=True))
        bp_s = time.perf_counter() - t0
        print(f"backprop ConvNet of the same blocks: test accuracy {float(bp.score(Xte.reshape(len(Xte), -1), yte)):.4f}"
              f" after {args.backprop_epochs} epochs ({bp_s:.0f} s, per-epoch test evaluation included)", flush=True)


def hebbian(args, Xtr, ytr, Xte, yte):
    t0 = time.perf_counter()
    net = HebbianNet(BLOCKS[:args.layers], random_state=args.seed, progress=False)
    net.fit(Xtr, epochs=args.epochs,
            callback=lambda n, r: print(f"  layer {r['layer'] + 1}: {r['seconds']:.0f} s, mean filter norm "
                                        f"{r['mean_norm']:.3f}, converged {r['converged']:.2f}", flush=True))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    Htr, Hte = net.transform(Xtr), net.transform(Xte)
    tr_s = time.perf_counter() - t0
    print(f"representation: {Htr.shape[1]} features {net.output_shape_}; transform {tr_s:.0f} s", flush=True)
    t0 = time.perf_counter()
    ro = LinearReadout(epochs=args.readout_epochs, lr=1e-3, batch_size=256, schedule="linear",
                       random_state=args.seed, progress=False).fit(Htr, ytr)
    ro_s = time.perf_counter() - t0
    acc = float(ro.score(Hte, yte))
    print(f"test accuracy {acc:.4f} (train {float(ro.score(Htr, ytr)):.4f}); unsupervised fit {fit_s:.0f} s, "
          f"transform {tr_s:.0f} s, readout {ro_s:.0f} s ({args.readout_epochs} epochs)", flush=True)


if __name__ == "__main__":
    main()
