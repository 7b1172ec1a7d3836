"""CUDA twin of the convolutional SoftHebb kernel (``kernels/cuda/conv.py``) against the CPU
kernel: run as a script in a subprocess (``python tests/test_conv_cuda.py sim|gpu``, see
``tests/_cudasim.py``), the simulator with tiny shapes (2 channels of 6 x 5 images, 4 units,
blocks of 8 threads, GEMM tile 4), a real GPU with SoftHebb's first layer on Fashion-MNIST-sized
images. The GEMMs sum in another order than BLAS: the weights agree to float32 rounding."""

import json
import os
import sys

import numpy as np
import pytest

import _cudasim


def _checks(mode):
    if mode == "sim":
        sys.setswitchinterval(1e-4)
        os.environ["BIOREPS_CUDA_BLOCK"] = "8"  # read when bioreps.kernels._config is imported
    from bioreps.kernels.cpu import conv as cpu
    from bioreps.kernels.cuda import conv as gpu
    from bioreps.kernels.cuda import softhebb

    if mode == "sim":
        softhebb.TILE = 4  # the layer's buffers: GEMM blocks of 4 x 4 threads in the simulator

    rng = np.random.default_rng(5)
    if mode == "sim":
        n, C, H, W, K, k, B, block, tile = 5, 2, 6, 5, 4, 3, 2, 8, 4
    else:
        n, C, H, W, K, k, B, block, tile = 200, 1, 28, 28, 96, 5, 10, None, None
    X = rng.random((n, C, H, W)).astype(np.float32)
    X[:, :, 1:4, 1:3] += 0.6
    X = np.clip(X, 0, 1)
    out = {"mode": mode, "cases": []}
    for padding, mode_pad, bn, stride in ((1, "reflect", True, 1), (0, "zeros", False, 2)):
        W0 = (rng.standard_normal((K, C * k * k)) * 0.7).astype(np.float32)
        Wc, Wg = W0.copy(), W0.copy()
        mc, vc = (np.zeros(C), np.ones(C)) if bn else (None, None)
        mg, vg = (np.zeros(C), np.ones(C)) if bn else (None, None)
        order = rng.permutation(n)
        cpu.conv_softhebb_epoch(Wc, X, order, B, k, stride, padding, mode_pad, 1.5, 0.05, 2.0, 0.5, True, mc, vc)
        Ho, Wo = cpu.out_size(H, k, stride, padding), cpu.out_size(W, k, stride, padding)
        bf = gpu.ConvBuffers(K, C * k * k, B * Ho * Wo, (B, C, H, W), block=block, tile=tile,
                             grid=3 if mode == "sim" else None)
        calls = []
        gpu.conv_softhebb_epoch(Wg, X, order, B, k, stride, padding, mode_pad, 1.5, 0.05, 2.0, 0.5, True, mg, vg,
                                buffers=bf, callback=lambda i, m: calls.append(m))
        # the patch matrix of the last batch as the device built it, against the CPU's
        last = X[order[(len(order) - 1) // B * B:]]
        if bn:  # normalised by its own statistics, as the driver did (running stats thrown away)
            last = cpu.batch_norm_train(last, np.zeros(C), np.ones(C))
        Vref = cpu.patches(cpu.pad(last, padding, mode_pad), k, stride)
        Vdev = bf.V.copy_to_host()[:Vref.shape[0]]
        out["cases"].append(dict(
            padding=padding, mode=mode_pad, bn=bn, stride=stride, calls=calls,
            moved=float(np.abs(Wc - W0).max()),
            rel=float(np.linalg.norm(Wg - Wc) / np.linalg.norm(Wc)),
            bn_equal=bool(mc is None or (np.array_equal(mc, mg) and np.array_equal(vc, vg))),
            patches=float(np.abs(Vdev - Vref).max())))
    # the Krotov-Hopfield rule on patches: the GPU driver against the CPU kernel
    out["kh"] = []
    for padding, mode_pad in ((1, "zeros"), (1, "reflect")):
        W0 = rng.standard_normal((K, C * k * k)).astype(np.float32)
        Wc, Wg = W0.copy(), W0.copy()
        order = rng.permutation(n)
        cpu.conv_hebbian_epoch(Wc, X, order, B, k, 1, padding, mode_pad, 2, 0.4, 0.05, 3.0)
        Ho, Wo = cpu.out_size(H, k, 1, padding), cpu.out_size(W, k, 1, padding)
        bf = gpu.ConvHebbianBuffers(K, C * k * k, B * Ho * Wo, 2, (B, C, H, W), block=block, tile=tile)
        gpu.conv_hebbian_epoch(Wg, X, order, B, k, 1, padding, mode_pad, 2, 0.4, 0.05, 3.0, buffers=bf)
        out["kh"].append(dict(mode=mode_pad, moved=float(np.abs(Wc - W0).max()),
                              rel=float(np.linalg.norm(Wg - Wc) / np.linalg.norm(Wc))))
    # the layer: backend "cuda" trains as "cpu" does (to float32 rounding)
    from bioreps.layers import ConvSoftWTA

    kw = dict(n_channels=K, kernel_size=k, padding=1, pool=("max", 2, 2, 0), batch_size=B, random_state=0,
              progress=False)
    from bioreps.layers import ConvHebbianWTA

    lc = ConvSoftWTA(backend="cpu", **kw).fit(X)
    lg = ConvSoftWTA(backend="cuda", **kw).fit(X)
    out["layer"] = dict(backend=lg.backend_, rel=float(np.linalg.norm(lg.weights_ - lc.weights_)
                                                       / np.linalg.norm(lc.weights_)))
    hc = ConvHebbianWTA(backend="cpu", k=2, **kw).fit(X)
    hg = ConvHebbianWTA(backend="cuda", k=2, **kw).fit(X)
    out["layer_kh"] = dict(backend=hg.backend_, rel=float(np.linalg.norm(hg.weights_ - hc.weights_)
                                                          / np.linalg.norm(hc.weights_)))
    # a net training all its layers at once: every minibatch's step on the GPU, as on the CPU
    from bioreps.layers import HebbianNet

    net = [{"kind": "conv-soft-wta", "n_channels": K, "kernel_size": k, "padding": 1, "pool": ["max", 2, 2, 0],
            "batch_size": B, "backend": backend}
           for backend in ("cpu", "cuda")]
    top = {"kind": "conv-hebbian-wta", "n_channels": 3, "kernel_size": 2, "k": 2, "batch_size": B}
    nc = HebbianNet([net[0], {**top, "backend": "cpu"}], training="simultaneous", random_state=1, progress=False).fit(X)
    ng = HebbianNet([net[1], {**top, "backend": "cuda"}], training="simultaneous", random_state=1, progress=False).fit(X)
    out["net"] = dict(backends=[layer.backend_ for layer in ng.layers_],
                      rel=[float(np.linalg.norm(a.weights_ - b.weights_) / np.linalg.norm(a.weights_))
                           for a, b in zip(nc.layers_, ng.layers_)])
    return out


res = _cudasim.results_fixture(__file__)


def test_cuda_epoch_matches_the_cpu_kernel(res):
    for case in res["cases"]:
        assert case["moved"] > 1e-3, case  # it learned
        assert case["rel"] < 2e-5, case  # float32 rounding of other summation orders
        assert case["bn_equal"], case  # the same host-side normalisation
        assert case["patches"] < 1e-5, case  # the device's im2col (padding by index) == the CPU's


def test_cuda_krotov_hopfield_on_patches_matches_the_cpu_kernel(res):
    for case in res["kh"]:
        assert case["moved"] > 1e-3 and case["rel"] < 1e-5, case


def test_layer_cuda_backend_trains_as_the_cpu_one(res):
    for key in ("layer", "layer_kh"):
        assert res[key]["backend"] == "cuda" and res[key]["rel"] < 1e-4, res[key]


def test_a_net_training_all_layers_at_once_on_the_gpu_trains_as_on_the_cpu(res):
    assert res["net"]["backends"] == ["cuda", "cuda"] and max(res["net"]["rel"]) < 1e-4, res["net"]


def test_cuda_calls_back_per_minibatch_of_images(res):
    n, B = (5, 2) if res["mode"] == "sim" else (200, 10)
    assert res["cases"][0]["calls"] == [B] * (n // B) + ([n % B] if n % B else [])


if __name__ == "__main__":
    print(json.dumps(_checks(sys.argv[1])))


def test_cuda_module_imports_only_what_kernels_may():
    imports = _cudasim.kernel_module_imports("conv")
    assert imports <= _cudasim.ALLOWED_KERNEL_IMPORTS | {"..cpu.conv", ".softhebb", ".hebbian"}, imports
