"""Convolutional SoftHebb training step: our CPU kernel (``kernels/cpu/conv.py``, what
``ConvSoftWTA.fit`` runs) against the reference code's layer (NeuromorphicComputing/SoftHebb,
``hebbconv.HebbSoftKrotovConv2d`` with the ``BatchNorm2d(affine=False)`` its blocks put before
it, PyTorch on the CPU), on the same layer, the same initial weights and the same images, in
the same run.

    python benchmarks/conv_softhebb.py --softhebb /path/to/SoftHebb [--images 1000] [--layer 1 2] [--device cuda]

``--device cuda``: both on the GPU, our CUDA kernel (``kernels/cuda/conv.py``, what
``ConvSoftWTA(backend="cuda")`` runs; the images cross from the host per call, as a fit) against
the reference layer moved to the GPU with the images already there (the reference's own loop
moves each batch; this is kinder to it), synchronised before each clock reading.
``benchmarks/peers/stage_softhebb.py`` puts the reference and its imports in
``benchmarks/peers/_softhebb/`` for a machine without network (``benchmarks/gpu.py`` finds it).

``--softhebb``: a checkout of the reference repository (the folder holding ``hebbconv.py``; it
imports ``einops`` and ``tabulate``: ``pip install einops tabulate``). Layers (the reference's
CIFAR-10 preset ``4SoftHebbCnnCIFAR`` on Fashion-MNIST's 28 x 28 images, batch 10 as there):

* 1: 1 -> 96 channels, kernel 5, padding 2, t_invert 1, lr 0.08, on the images;
* 2: 96 -> 384 channels, kernel 3, padding 1, t_invert 0.65, lr 0.005, on 96 x 14 x 14 inputs
  (layer 1's pooled output shape; random non-negative values, what a triangle activation gives).

Prints images/s of both and the ratio, and how far the weights are apart after the first 10
batches (float32 on both sides: a few 1e-6 relative) so the two are known to run the same rule.
Both use every core (torch threads = cores, BLAS threads = cores).
"""

import argparse
import os
import sys
import time

import numpy as np

from bioreps import data
from bioreps.kernels.cpu import conv

LAYERS = {1: dict(c_in=1, c_out=96, k=5, pad=2, t_invert=1.0, lr=0.08, shape=(28, 28)),
          2: dict(c_in=96, c_out=384, k=3, pad=1, t_invert=0.65, lr=0.005, shape=(14, 14))}


def images(spec, n, seed=0):
    if spec["c_in"] == 1:
        try:
            X, _ = data.load("fashion-mnist", "train", flatten=False, download=False)
            return np.ascontiguousarray(X[:n, None]), "Fashion-MNIST"
        except Exception:  # noqa: BLE001 - synthetic images instead
            pass
    rng = np.random.default_rng(seed)
    H, W = spec["shape"]
    return np.maximum(rng.standard_normal((n, spec["c_in"], H, W)), 0).astype(np.float32) ** 0.7, "synthetic"


def reference_layer(spec, W0):
    import torch
    from torch import nn
    from hebbconv import HebbSoftKrotovConv2d

    c_in, k = spec["c_in"], spec["k"]
    layer = HebbSoftKrotovConv2d(
        c_in, spec["c_out"], lebesgue_p=2, kernel_size=k, weight_distribution="normal",
        weight_range=25 / (c_in * k * k) ** 0.5, pre_triangle=False, mask_thsd=0,
        lr_scheduler={"lr": spec["lr"], "adaptive": True, "nb_epochs": 1, "ratio": 10 / 50000, "speed": 7,
                      "div": 96, "decay": "linear", "power_lr": 0.5},
        stride=1, padding=spec["pad"], dilation=1, groups=1, padding_mode="reflect", bias=False, ranking_param=3,
        delta=2, activation_fn="exp", t_invert=spec["t_invert"], nb_train=None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W0.reshape(layer.weight.shape)))
        layer.update_lr()  # the adaptive rate from these weights, as after an update
    bn = nn.BatchNorm2d(c_in, affine=False)
    layer.train(True)
    bn.train(True)
    return layer, bn


def run_reference(layer, bn, X, batch, device="cpu"):
    import torch

    Xt = torch.from_numpy(X).to(device)
    with torch.no_grad():
        for start in range(0, len(X), batch):
            layer(bn(Xt[start:start + batch]))
            layer.update()
    if device == "cuda":
        torch.cuda.synchronize()


def run_ours(W, X, spec, batch, device="cpu"):
    mean, var = np.zeros(spec["c_in"]), np.ones(spec["c_in"])
    if device == "cuda":
        from bioreps.kernels.cuda import conv as kernel
    else:
        kernel = conv
    kernel.conv_softhebb_epoch(W, X, np.arange(len(X)), batch, spec["k"], 1, spec["pad"], "reflect",
                               spec["t_invert"], spec["lr"], 2.0, 0.5, True, mean, var)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--softhebb", default=os.environ.get("SOFTHEBB_DIR"),
                    help="the folder of the reference code (hebbconv.py); default $SOFTHEBB_DIR")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--layer", type=int, nargs="+", default=[1, 2], choices=sorted(LAYERS))
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where both run (cuda: our CUDA kernel against the reference on the GPU)")
    args = ap.parse_args()
    if not args.softhebb or not os.path.exists(os.path.join(args.softhebb, "hebbconv.py")):
        ap.error("--softhebb must name a checkout of NeuromorphicComputing/SoftHebb (the folder with hebbconv.py)")
    sys.path.insert(0, args.softhebb)
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU")
    where = torch.cuda.get_device_name(0) if dev == "cuda" else f"{cores} CPU cores"
    print(f"device {where}; torch {torch.__version__} threads {torch.get_num_threads()}; batch {args.batch}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for li in args.layer:
        spec = LAYERS[li]
        n = args.images if li == 1 else max(args.batch, args.images // 10)
        X, source = images(spec, n + 20)
        rng = np.random.default_rng(li)
        W0 = (25 / np.sqrt(spec["c_in"] * spec["k"] ** 2)
              * rng.standard_normal((spec["c_out"], spec["c_in"] * spec["k"] ** 2))).astype(np.float32)
        # the same rule: 10 batches from the same weights, then compare
        W = W0.copy()
        run_ours(W, X[:10 * args.batch], spec, args.batch, dev)
        ref, bn = reference_layer(spec, W0)
        ref.to(dev)
        bn.to(dev)
        run_reference(ref, bn, X[:10 * args.batch], args.batch, dev)
        Wr = ref.weight.detach().cpu().numpy().reshape(W.shape)
        agree = float(np.linalg.norm(W - Wr) / np.linalg.norm(Wr))
        # timings (both warmed above)
        W = W0.copy()
        t0 = time.perf_counter()
        run_ours(W, X[20:20 + n], spec, args.batch, dev)
        ours = n / (time.perf_counter() - t0)
        ref, bn = reference_layer(spec, W0)
        ref.to(dev)
        bn.to(dev)
        t0 = time.perf_counter()
        run_reference(ref, bn, X[20:20 + n], args.batch, dev)
        theirs = n / (time.perf_counter() - t0)
        print(f"layer {li} ({spec['c_in']}->{spec['c_out']}, k{spec['k']}, {source} {X.shape[2]}x{X.shape[3]}, "
              f"{n} images): bioreps {ours:8.1f} images/s, SoftHebb reference {theirs:8.1f} images/s ({dev}), "
              f"ratio {ours / theirs:.2f}x; weights after 10 batches: relative difference {agree:.1e}", flush=True)


if __name__ == "__main__":
    main()
