"""SoftHebb kernels (``kernels/cpu/softhebb.py`` and its CUDA twin) against ``reference.softhebb_*``.

CPU: the kernel against the float64 NumPy reference over 20 batches (a final short one included)
for p in {2, 3} (and 2.5), adaptive rate on and off, inverse temperatures 1 and 12; a hand-checked
single batch; bitwise determinism; an epoch split over two calls equals one call.

CUDA: Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, and other test modules
in the same pytest process import Numba first; setting the variable here would also leak into
later modules. So the CUDA runs happen in a subprocess, this file run as a script
(``python tests/test_softhebb_kernels.py sim|gpu``), with ``NUMBA_ENABLE_CUDASIM=1`` for the
simulator (K=24, N=20, batches of 5 from 13 rows: 5, 5 and a short 3; blocks of 8 threads, at most
3 blocks for the unit-strided kernels and GEMM tiles of 4, 8 and 16, so several blocks, grid-stride
loops and partial tiles run) and without it for a real GPU (``-m gpu``, a larger shape; skipped
where there is none). The subprocess prints its measurements as JSON; the tests assert on them.
The subprocess and type-check scaffolding shared with ``test_hebbian_cuda.py`` is in ``_cudasim.py``.
"""

import json
import sys

import numpy as np
import pytest

import _cudasim
from _cudasim import rel as _rel
LR, POWER_LR = 0.05, 0.5


def _problem(K, N, n, seed):
    """Inputs of both signs, unit norms spread over [0.3, 2] (so the adaptive rate differs a lot
    between units and from the plain rate), currents of order 1 (so t_invert = 12 gives a
    peaked but not one-hot softmax)."""
    rng = np.random.default_rng(seed)
    X = (0.5 * rng.standard_normal((n, N))).astype(np.float32)
    W0 = (rng.standard_normal((K, N)) * rng.uniform(0.3, 2.0, (K, 1)) / np.sqrt(N)).astype(np.float32)
    return X, W0, rng


# --------------------------------------------------------------------------- CPU


@pytest.fixture(scope="module")
def cpu():
    from bioreps.kernels.cpu import softhebb

    return softhebb


@pytest.fixture(scope="module")
def ref():
    import reference  # tests/ is on sys.path (pytest's rootdir-relative import of this module)

    return reference


K_CPU, N_CPU, B_CPU = 30, 40, 16
N_ROWS_CPU = 19 * B_CPU + 9  # 20 batches, the last one short


@pytest.mark.parametrize("t_invert", [1.0, 12.0])
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("p", [2.0, 3.0, 2.5])
def test_cpu_matches_reference(cpu, ref, p, adaptive, t_invert):
    X, W0, rng = _problem(K_CPU, N_CPU, N_ROWS_CPU, seed=7)
    order = rng.permutation(N_ROWS_CPU)
    W = W0.copy()
    nb = cpu.softhebb_epoch(W, X, order, B_CPU, t_invert, LR, p, POWER_LR, adaptive)
    assert nb == 20
    R = ref.softhebb_epoch(W0.astype(np.float64), X, order, B_CPU, t_invert, LR, p, POWER_LR, adaptive)
    assert _rel(W, R) < 1e-4
    assert _rel(W, W0) > 1e-3  # the weights really moved
    # the tolerance separates the configurations: flipping the rate rule or the temperature
    # lands far outside it
    other_ad = ref.softhebb_epoch(W0.astype(np.float64), X, order, B_CPU, t_invert, LR, p, POWER_LR, not adaptive)
    other_t = ref.softhebb_epoch(W0.astype(np.float64), X, order, B_CPU, 13.0 - t_invert, LR, p, POWER_LR, adaptive)
    assert _rel(W, other_ad) > 1e-2 and _rel(W, other_t) > 1e-3


@pytest.mark.parametrize("adaptive, expected", [(True, 0.1 * np.sqrt(0.5 + 1e-10)), (False, 0.1)])
def test_cpu_single_batch_by_hand(cpu, ref, adaptive, expected):
    # unit 0 = e0 (norm 1) sees x = e0 exactly: u = (1, 0), y = softmax(u), ds_0 = y0 (x - 1 e0) = 0;
    # unit 1 = 0.5 e1: ds_1 = y1 (x - 0 w1) = y1 e0, the largest entry, so ds/max = e0 for unit 1.
    # Adaptive: lr_1 = 0.1 * sqrt(|0.5 - 1| + 1e-10) from the norm before the update (after it,
    # the norm is 0.505 and the rate would be 0.1 * sqrt(0.495)); unit 0 gets lr * 1e-5 * 0 = 0.
    W = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)
    X = np.array([[1.0, 0.0]], np.float32)
    nb = cpu.softhebb_epoch(W, X, np.zeros(1, np.int64), 1, 1.0, 0.1, 2.0, 0.5, adaptive)
    assert nb == 1
    np.testing.assert_allclose(W, [[1.0, 0.0], [expected, 0.5]], rtol=1e-6, atol=1e-7)
    R = ref.softhebb_batch(np.array([[1.0, 0.0], [0.0, 0.5]]), X, 1.0, 0.1, 2.0, 0.5, adaptive)
    np.testing.assert_allclose(R, [[1.0, 0.0], [expected, 0.5]], rtol=1e-12, atol=1e-15)


def test_cpu_final_short_batch_and_callback(cpu, ref):
    X, W0, rng = _problem(24, 20, 13, seed=3)
    order = rng.permutation(13)
    seen = []
    W = W0.copy()
    nb = cpu.softhebb_epoch(W, X, order, 5, 12.0, LR, 2.0, POWER_LR, True,
                            callback=lambda i, m: seen.append((i, m)))
    assert nb == 3 and seen == [(1, 5), (2, 5), (3, 3)]
    R = ref.softhebb_epoch(W0.astype(np.float64), X, order, 5, 12.0, LR, 2.0, POWER_LR, True)
    R10 = ref.softhebb_epoch(W0.astype(np.float64), X, order[:10], 5, 12.0, LR, 2.0, POWER_LR, True)
    assert _rel(W, R) < 1e-5 and _rel(W, R10) > 1e-3  # the short batch was applied
    W2 = W.copy()
    assert cpu.softhebb_epoch(W2, X, np.zeros(0, np.int64), 5, 12.0, LR, 2.0, POWER_LR, True) == 0
    assert np.array_equal(W2, W)


@pytest.mark.parametrize("p", [2.0, 3.0, 2.5])
def test_cpu_bitwise_deterministic_and_split_epoch(cpu, p):
    X, W0, rng = _problem(K_CPU, N_CPU, N_ROWS_CPU, seed=11)
    order = rng.permutation(N_ROWS_CPU)
    W1, W2, W3 = W0.copy(), W0.copy(), W0.copy()
    cpu.softhebb_epoch(W1, X, order, B_CPU, 12.0, LR, p, POWER_LR, True)
    bufs = cpu.SoftHebbBuffers(K_CPU, N_CPU, B_CPU)
    cpu.softhebb_epoch(W2, X, order, B_CPU, 12.0, LR, p, POWER_LR, True, bufs)
    assert np.array_equal(W1, W2)
    # two calls split at a batch boundary (Wp and the rates are recomputed from the stored W at
    # the start of a call, as the previous call's last update left them): the same bits
    cut = 7 * B_CPU
    cpu.softhebb_epoch(W3, X, order[:cut], B_CPU, 12.0, LR, p, POWER_LR, True, bufs)
    cpu.softhebb_epoch(W3, X, order[cut:], B_CPU, 12.0, LR, p, POWER_LR, True, bufs)
    assert np.array_equal(W1, W3)


def test_cpu_bad_arguments_raise(cpu):
    X = np.zeros((5, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        cpu.softhebb_epoch(np.zeros((4, 3)), X, np.arange(5), 2, 1.0, LR, 2.0, POWER_LR, True)
    with pytest.raises(ValueError, match="features"):
        cpu.softhebb_epoch(np.zeros((4, 2), np.float32), X, np.arange(5), 2, 1.0, LR, 2.0, POWER_LR, True)


# --------------------------------------------------------------------------- the subprocess side


def _shape(mode):
    if mode == "sim":
        # configs: (p, adaptive, t_invert, tile); the first also runs two epochs, twice
        return dict(K=24, N=20, n=13, B=5, block=8, grid=3,
                    configs=[(2.0, True, 12.0, 8), (3.0, False, 1.0, 16), (2.5, True, 4.0, 4)])
    return dict(K=300, N=784, n=1000, B=64, block=128, grid=None,
                configs=[(2.0, True, 12.0, 32), (3.0, False, 1.0, 16), (2.5, True, 4.0, 32)])


def _checks(mode):
    """Run every CUDA measurement; returns a JSON-able dict."""
    
    if mode == "sim":
        sys.setswitchinterval(1e-4)  # the simulator runs one Python thread per CUDA thread
    from numba import cuda

    from bioreps.kernels.cpu import softhebb as cpu
    from bioreps.kernels.cuda import softhebb as gpu

    s = _shape(mode)
    K, N, n, B = s["K"], s["N"], s["n"], s["B"]
    X, W0, rng = _problem(K, N, n, seed=2023)
    orders = [rng.permutation(n) for _ in range(2)]
    out = {"mode": mode, "n_rows": n, "batch": B, "configs": []}

    def bufs(tile):
        return gpu.SoftHebbBuffers(K, N, B, block=s["block"], tile=tile, grid=s["grid"])

    for c, (p, adaptive, t_invert, tile) in enumerate(s["configs"]):
        args = (t_invert, LR, p, POWER_LR, adaptive)
        gb = bufs(tile)
        Wg, Wc = W0.copy(), W0.copy()
        rows = []
        ng = gpu.softhebb_epoch(Wg, X, orders[0], B, *args, gb, lambda i, m: rows.append([i, m]))
        nc = cpu.softhebb_epoch(Wc, X, orders[0], B, *args)
        res = dict(p=p, adaptive=adaptive, t_invert=t_invert, tile=tile, n_cuda=ng, n_cpu=nc, rows=rows,
                   rel_cpu=_rel(Wg, Wc), moved=_rel(Wg, W0),
                   y_rows_sum_to_1=bool(np.allclose(gb.last_activations().sum(axis=1), 1.0, atol=1e-5)))
        if c == 0:
            # a second epoch on the same buffers (X not uploaded again), against the CPU kernel
            gpu.softhebb_epoch(Wg, X, orders[1], B, *args, gb)
            cpu.softhebb_epoch(Wc, X, orders[1], B, *args)
            res["two_epochs"] = dict(rel_cpu=_rel(Wg, Wc), x_uploads=gb.x_uploads)
            # the same two epochs again with W on the device, updated in place: the same bits
            dW = cuda.to_device(W0)
            ns = [gpu.softhebb_epoch(dW, X, o, B, *args, gb) for o in orders]
            res["device_w"] = dict(bitwise=bool(np.array_equal(dW.copy_to_host(), Wg)), n_batches=ns,
                                   x_uploads=gb.x_uploads)
            # a new X object is uploaded again; an empty order runs no batch and leaves W alone
            W3 = Wg.copy()
            n_empty = gpu.softhebb_epoch(W3, X.copy(), np.zeros(0, np.int64), B, *args, gb)
            res["new_x"] = dict(x_uploads=gb.x_uploads, n_batches=n_empty, unchanged=bool(np.array_equal(W3, Wg)))
        out["configs"].append(res)
    return out


# --------------------------------------------------------------------------- the pytest side (CUDA)


res = _cudasim.results_fixture(__file__)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_cuda_epoch_matches_cpu_kernel(res, i):
    c = res["configs"][i]
    assert c["moved"] > 1e-3  # the weights really changed
    assert c["rel_cpu"] < 1e-4, c
    assert c["y_rows_sum_to_1"]


def test_cuda_final_short_batch_is_used(res):
    n, B = res["n_rows"], res["batch"]
    expected = -(-n // B)
    for c in res["configs"]:
        assert c["n_cpu"] == c["n_cuda"] == expected
        assert c["rows"] == [[i + 1, min(B, n - i * B)] for i in range(expected)]
    if res["mode"] == "sim":
        assert n % B != 0  # the tiny shape does end on a short batch


def test_cuda_two_epochs_upload_x_once(res):
    r = res["configs"][0]["two_epochs"]
    assert r["rel_cpu"] < 1e-4
    assert r["x_uploads"] == 1


def test_cuda_bitwise_repeatable_with_device_weights(res):
    r = res["configs"][0]["device_w"]
    assert r["bitwise"]  # host W and device W, same buffers: identical bits
    assert r["x_uploads"] == 1  # four epochs, one upload
    assert r["n_batches"] == [-(-res["n_rows"] // res["batch"])] * 2


def test_cuda_new_sample_array_is_uploaded_and_empty_order_runs_nothing(res):
    r = res["configs"][0]["new_x"]
    assert r["x_uploads"] == 2 and r["n_batches"] == 0 and r["unchanged"]


# the kernels and argument types for _cudasim.typecheck (which binds t to numba.types)
_TYPECHECK = r"""
from bioreps.kernels.cuda import softhebb as S
f2, d1, l1, f8, b1, i8 = t.float32[:, ::1], t.float64[::1], t.int64[::1], t.float64, t.boolean, t.int64
kernels = [
    (S._power_weights, (f2, f8, f2)),
    (S._row_lr, (f2, f2, f8, f8, f8, b1, d1)),
    (S._gather_rows, (f2, l1, i8, i8, f2)),
    (S._gemm_kernel(S.TILE, False, True), (f2, f2, i8, i8, i8, f2)),
    (S._gemm_kernel(S.TILE, True, False), (f2, f2, i8, i8, i8, f2)),
    (S._gemm_kernel(6, False, True), (f2, f2, i8, i8, i8, f2)),
    (S._softmax_rows, (f2, f8, f2)),
    (S._weighted_sums, (f2, f2, i8, d1)),
    (S._partial_max, (f2, f2, d1, d1)),
    (S._final_max, (d1, i8, d1)),
    (S._apply_update, (f2, f2, f2, d1, d1, d1, f8, f8, f8, b1, b1)),
]
"""


@pytest.mark.slow  # compiles every kernel for the real CUDA target in a subprocess
def test_cuda_kernels_type_check_for_the_real_target():
    """The simulator runs kernels as Python and checks no types: type and lower every kernel for
    the real target (to LLVM IR; no GPU, driver or NVVM needed) with the driver's argument types."""
    _cudasim.typecheck(_TYPECHECK)


def test_signatures_match_cpu():
    from bioreps.kernels.cpu import softhebb as cpu
    from bioreps.kernels.cuda import softhebb as gpu  # no simulator, maybe no GPU: must import

    _cudasim.assert_twin_signatures(cpu, gpu, "softhebb_epoch", "SoftHebbBuffers")


def test_cuda_module_imports_only_numba_numpy_and_config():
    imports = _cudasim.kernel_module_imports("softhebb")
    assert imports <= _cudasim.ALLOWED_KERNEL_IMPORTS, imports


def test_cuda_bad_arguments_raise():
    from bioreps.kernels.cuda import softhebb as gpu

    X = np.zeros((5, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        gpu.softhebb_epoch(np.zeros((4, 3)), X, np.arange(5), 2, 1.0, LR, 2.0, POWER_LR, True)
    with pytest.raises(TypeError, match="float32"):
        gpu.SoftHebbBuffers(4, 3, 2, dtype=np.float64)


if __name__ == "__main__":
    print(json.dumps(_checks(sys.argv[1])))
