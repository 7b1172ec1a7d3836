"""CUDA twin of the Krotov-Hopfield kernel (``kernels/cuda/hebbian.py``) against the CPU kernel.

Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, and other test modules in
the same pytest process import Numba first; setting the variable here would also leak into every
later module (``backend="auto"`` would pick the slow simulator). So the CUDA runs happen in a
subprocess, this file run as a script (``python tests/test_hebbian_cuda.py sim|gpu``), with
``NUMBA_ENABLE_CUDASIM=1`` in its environment for the simulator (tiny shapes, blocks of 8 threads
and GEMM tiles of 8 and 16 so several blocks and partial tiles run) and without it for a real GPU
(``-m gpu``, a larger shape; skipped where no GPU is present). The subprocess prints its
measurements as JSON; the tests below assert on them. The subprocess and type-check scaffolding
shared with ``test_softhebb_kernels.py`` is in ``_cudasim.py``.
"""

import json
import sys

import numpy as np
import pytest

import _cudasim
from _cudasim import rel as _rel

DELTA, EPS = 0.4, 0.02


# --------------------------------------------------------------------------- the subprocess side

def _shape(mode):
    if mode == "sim":
        # K, N and the batch not multiples of the tile; 13 rows in batches of 5: 5, 5 and a short 3.
        # (The simulator runs a Python thread per CUDA thread: its cost is the number of threads.)
        return dict(K=21, N=20, n=13, B=5, block=8, configs=[(2.0, 2, 8), (3.0, 3, 8), (4.5, 2, 8)])
    return dict(K=300, N=784, n=1000, B=64, block=128, configs=[(2.0, 2, 16), (3.0, 7, 16), (4.5, 3, 16)])


def _checks(mode):
    """Run every CUDA measurement; returns a JSON-able dict."""
    
    if mode == "sim":
        sys.setswitchinterval(1e-4)  # the simulator runs one Python thread per CUDA thread
    from numba import cuda

    from bioreps.kernels.cpu import hebbian as cpu
    from bioreps.kernels.cuda import hebbian as gpu
    from reference import krotov_hopfield_epoch

    s = _shape(mode)
    K, N, n, B, block = s["K"], s["N"], s["n"], s["B"], s["block"]
    rng = np.random.default_rng(2019)
    X = rng.random((n, N), dtype=np.float32)
    W0 = rng.standard_normal((K, N)).astype(np.float32)
    order = rng.permutation(n)
    out = {"mode": mode, "n_rows": n, "batch": B, "configs": []}

    def cpu_run(W, order, k, p, bufs=None):
        bufs = bufs or cpu.HebbianBuffers(K, N, B, k)
        seen = []
        nb = cpu.hebbian_epoch(W, X, order, B, k, DELTA, EPS, p, bufs,
                               lambda i, m: seen.append([i, m, bufs.win[:m].tolist(), bufs.kth[:m].tolist()]))
        return nb, seen

    def cuda_run(W, order, k, p, bufs, Xs=None):
        seen = []

        def cb(i, m):
            win, kth = bufs.last_winners()
            seen.append([i, m, win.tolist(), kth.tolist()])

        nb = gpu.hebbian_epoch(W, X if Xs is None else Xs, order, B, k, DELTA, EPS, p, bufs, cb)
        return nb, seen

    # 1. one epoch from the same weights and order, per (p, k, tile): CPU, CUDA, NumPy reference
    for p, k, tile in s["configs"]:
        Wc = W0.copy()
        nc, seen_c = cpu_run(Wc, order, k, p)
        Wg = W0.copy()
        gb = gpu.HebbianBuffers(K, N, B, k, block=block, tile=tile)
        ng, seen_g = cuda_run(Wg, order, k, p, gb)
        Wr = krotov_hopfield_epoch(W0.astype(np.float64), X, order, B, k, DELTA, EPS, p)
        # the persistent kernel (one cooperative launch per epoch, used when no per-batch
        # callback is asked for) against the per-batch kernels above: the same bits
        Wpe = W0.copy()
        pb = gpu.HebbianBuffers(K, N, B, k, block=block, tile=tile)
        n_pe = gpu.hebbian_epoch(Wpe, X, order, B, k, DELTA, EPS, p, pb)
        pwin, pkth = pb.last_winners()
        persistent = dict(bitwise=bool(np.array_equal(Wpe, Wg)), n=n_pe, last_rows=pb.last_rows,
                          last_winners=[pwin.tolist(), pkth.tolist()], grid=pb.grid,
                          first_reset=bool((pb.first.copy_to_host() == 2147483647).all()))
        out["configs"].append(dict(persistent=persistent,
            p=p, k=k, tile=tile, n_cpu=nc, n_cuda=ng, winners_cpu=seen_c, winners_cuda=seen_g,
            rel_cpu=_rel(Wg, Wc), rel_ref=_rel(Wg, Wr), rel_cpu_ref=_rel(Wc, Wr), moved=_rel(Wg, W0),
            bitwise_equal_cpu=bool(np.array_equal(Wg, Wc))))
        if len(out["configs"]) == 1:
            # 2. the same call again on the same buffers: bitwise identical, X not uploaded again
            Wg2 = W0.copy()
            ng2, seen_g2 = cuda_run(Wg2, order, k, p, gb)
            out["repeat"] = dict(bitwise=bool(np.array_equal(Wg, Wg2)), same_winners=seen_g2 == seen_g,
                                 n=ng2, x_uploads=gb.x_uploads)
            # a new X object (same values) is uploaded again; an empty order runs 0 batches
            Wg3 = Wg2.copy()
            n_empty = gpu.hebbian_epoch(Wg3, X.copy(), np.zeros(0, np.int64), B, k, DELTA, EPS, p, gb)
            out["new_x"] = dict(x_uploads=gb.x_uploads, n_batches=n_empty,
                                unchanged=bool(np.array_equal(Wg3, Wg2)))

    # 2b. the persistent kernel cannot be built (e.g. no cudadevrt for its grid barrier): a warning
    #     and the per-batch kernels, the same bits
    import warnings

    p0, k0, tile0 = s["configs"][0]
    W_ref = W0.copy()
    gpu.hebbian_epoch(W_ref, X, order, B, k0, DELTA, EPS, p0, gpu.HebbianBuffers(K, N, B, k0, block=block, tile=tile0,
                                                                                 persistent=False))
    real = gpu._cooperative_grid

    def broken(*a):
        raise OSError("libcudadevrt.a not found")

    gpu._cooperative_grid = broken
    try:
        Wf = W0.copy()
        fb = gpu.HebbianBuffers(K, N, B, k0, block=block, tile=tile0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gpu.hebbian_epoch(Wf, X, order, B, k0, DELTA, EPS, p0, fb)
    finally:
        gpu._cooperative_grid = real
    out["fallback"] = dict(bitwise=bool(np.array_equal(Wf, W_ref)), persistent=fb.persistent,
                           warned=[str(w.message) for w in caught if "could not be built" in str(w.message)])

    # 3. W on the device, updated in place over 2 epochs with one buffers object (X uploaded once),
    #    against the same kernel given host copies of W (uploaded and downloaded every epoch): the
    #    device-resident state must give bitwise the same weights. The CPU kernel is compared
    #    after the first epoch only: its currents come from BLAS, whose float32 summation order
    #    depends on the library (an old OpenBLAS differed here by 6e-4 after two epochs, as a
    #    near-tie winner flips), so two epochs of it are no fixed target.
    p, k, tile = s["configs"][1]
    orders = [rng.permutation(n) for _ in range(2)]
    dW = cuda.to_device(W0)
    gb = gpu.HebbianBuffers(K, N, B, k, block=block, tile=tile)
    Wh = W0.copy()
    hb = gpu.HebbianBuffers(K, N, B, k, block=block, tile=tile)
    Wc = W0.copy()
    cb = cpu.HebbianBuffers(K, N, B, k)
    ns = []
    for epoch, o in enumerate(orders):
        ns.append(gpu.hebbian_epoch(dW, X, o, B, k, DELTA, EPS, p, gb))
        gpu.hebbian_epoch(Wh, X, o, B, k, DELTA, EPS, p, hb)
        if epoch == 0:
            cpu.hebbian_epoch(Wc, X, o, B, k, DELTA, EPS, p, cb)
            rel_cpu_first = _rel(dW.copy_to_host(), Wc)
    Wd = dW.copy_to_host()
    out["device_w"] = dict(rel_cpu=rel_cpu_first, bitwise_host=bool(np.array_equal(Wd, Wh)), rel_host=_rel(Wd, Wh),
                           moved=_rel(Wd, W0), x_uploads=gb.x_uploads, n_batches=ns)

    # 4. exact ties: several units with the same weights have bitwise equal currents on the device;
    #    the lower index must win (k-th: the next equal one); also the default 16 x 16 GEMM tile
    Wt = np.abs(W0).copy()
    Wt[[2, 5, 9]] = 3.0 * np.abs(W0[0])  # far above the rest for positive inputs
    gb = gpu.HebbianBuffers(K, N, B, 3, block=block, tile=16)
    gpu.hebbian_epoch(Wt, X, order[:B], B, 3, DELTA, EPS, 3.0, gb)
    win, kth = gb.last_winners()
    out["tie_gemm"] = dict(win=win.tolist(), kth=kth.tolist())

    # 5. the top-k kernel alone on currents full of ties, NaN and -inf, against the CPU scan
    Kt, Bt = 13, 7
    I = rng.integers(0, 4, size=(Kt, Bt)).astype(np.float32)
    I[:, 1] = 2.0  # all equal
    I[3, 2] = np.nan
    I[7, 2] = np.nan
    I[:, 3] = -np.inf
    I[4, 3], I[11, 3] = 1.0, 1.0  # two finite currents only: a k-th of 3 does not exist
    I[:, 4] = -np.inf  # none at all
    I[12, 5] = 9.0  # the last unit wins
    topk = []
    for kk in (1, 2, 3):
        for bl in (4, block):
            wc, kc = np.empty(Bt, np.int64), np.empty(Bt, np.int64)
            cpu.topk_columns(I, Bt, kk, wc, kc, np.empty((Bt, kk), np.float32), np.empty((Bt, kk), np.int64),
                             np.empty(Bt, np.float32))
            dwin, dkth = cuda.device_array(Bt, np.int32), cuda.device_array(Bt, np.int32)
            gpu._topk_columns[Bt, bl](cuda.to_device(np.ascontiguousarray(I.T)), kk, dwin, dkth)
            topk.append(dict(k=kk, block=bl, cpu=[wc.tolist(), kc.tolist()],
                             cuda=[dwin.copy_to_host().tolist(), dkth.copy_to_host().tolist()]))
    out["topk"] = topk
    return out


# --------------------------------------------------------------------------- the pytest side

res = _cudasim.results_fixture(__file__)


def _tol(res):
    return 1e-5 if res["mode"] == "sim" else 1e-4


def test_signature_matches_cpu():
    from bioreps.kernels.cpu import hebbian as cpu
    from bioreps.kernels.cuda import hebbian as gpu

    _cudasim.assert_twin_signatures(cpu, gpu, "hebbian_epoch", "HebbianBuffers")


def test_cuda_module_imports_only_numba_numpy_and_config():
    imports = _cudasim.kernel_module_imports("hebbian")
    assert imports <= _cudasim.ALLOWED_KERNEL_IMPORTS, imports


@pytest.mark.parametrize("i", [0, 1, 2])
def test_epoch_matches_cpu_kernel(res, i):
    c = res["configs"][i]
    assert c["moved"] > 1e-3  # the weights really changed
    assert c["rel_cpu"] < _tol(res), c
    assert c["rel_cpu_ref"] < 1e-4 and c["rel_ref"] < 1e-4  # both near the float64 notebook rule


@pytest.mark.parametrize("i", [0, 1, 2])
def test_same_winners_every_batch(res, i):
    c = res["configs"][i]
    if res["mode"] == "sim":
        assert c["winners_cuda"] == c["winners_cpu"]
    else:  # float32 sums in another order can flip an exact-to-1-ulp near tie on a large shape
        a = np.array([w for batch in c["winners_cuda"] for w in batch[2] + batch[3]])
        b = np.array([w for batch in c["winners_cpu"] for w in batch[2] + batch[3]])
        assert a.shape == b.shape and np.mean(a == b) > 0.99


def test_final_short_batch_is_used(res):
    n, B = res["n_rows"], res["batch"]
    expected = -(-n // B)
    for c in res["configs"]:
        assert c["n_cpu"] == c["n_cuda"] == expected
        rows = [batch[1] for batch in c["winners_cuda"]]
        assert rows == [B] * (n // B) + ([n % B] if n % B else [])
        assert [batch[0] for batch in c["winners_cuda"]] == list(range(1, expected + 1))
    if res["mode"] == "sim":
        assert n % B != 0  # the tiny shape does end on a short batch


@pytest.mark.parametrize("i", [0, 1, 2])
def test_persistent_epoch_kernel_equals_the_per_batch_kernels(res, i):
    c = res["configs"][i]
    r = c["persistent"]
    assert r["bitwise"], c["p"]  # W after the epoch: the same bits as six launches per batch
    assert r["n"] == c["n_cuda"] and r["last_rows"] == c["winners_cuda"][-1][1]
    assert r["last_winners"] == c["winners_cuda"][-1][2:]  # the last batch's winners and k-th units
    assert r["first_reset"]  # the unit marks are clean for the next call
    if res["mode"] == "sim":
        assert r["grid"] == 1  # the simulator runs cooperative grids of one block
    else:
        assert r["grid"] >= 1


def test_persistent_kernel_falls_back_to_the_per_batch_kernels(res):
    r = res["fallback"]
    assert r["bitwise"] and r["persistent"] is False
    assert len(r["warned"]) == 1 and "libcudadevrt.a not found" in r["warned"][0]


def test_bitwise_reproducible_and_buffers_reused(res):
    r = res["repeat"]
    assert r["bitwise"] and r["same_winners"]
    assert r["x_uploads"] == 1  # two calls, one upload of X


def test_new_sample_array_is_uploaded_and_empty_order_runs_nothing(res):
    r = res["new_x"]
    assert r["x_uploads"] == 2 and r["n_batches"] == 0 and r["unchanged"]


def test_device_weights_updated_in_place_over_epochs(res):
    r = res["device_w"]
    assert r["moved"] > 1e-3
    # in place on the device == the same epochs through host copies, to the bit (the simulator's
    # shared-array race that once broke this is locked: test_cudasim_shared.py)
    assert r["bitwise_host"], r
    assert r["rel_cpu"] < _tol(res)  # the first epoch against the CPU kernel
    assert r["x_uploads"] == 1  # two epochs, X uploaded once
    assert r["n_batches"] == [-(-res["n_rows"] // res["batch"])] * 2


def test_equal_currents_go_to_the_lower_unit(res):
    B = res["batch"]
    assert res["tie_gemm"] == {"win": [2] * B, "kth": [9] * B}


def test_topk_kernel_matches_cpu_scan_with_ties_nan_and_inf(res):
    for case in res["topk"]:
        assert case["cuda"] == case["cpu"], case
    k3 = next(c for c in res["topk"] if c["k"] == 3)
    assert k3["cuda"][1][3] == -1 and k3["cuda"][0][4] == -1  # missing picks are -1
    assert k3["cuda"][0][1] == 0 and k3["cuda"][1][1] == 2  # all equal: units 0, 1, 2


# the kernels and argument types for _cudasim.typecheck (which binds t to numba.types)
_TYPECHECK = r"""
from bioreps.kernels.cuda import hebbian as G
f2, d2, i1, l1, d1 = t.float32[:, ::1], t.float64[:, ::1], t.int32[::1], t.int64[::1], t.float64[::1]
kernels = [
    (G._power_weights, (f2, t.float64, f2)),
    (G._gather_rows, (f2, l1, t.int64, t.int64, f2)),
    (G._currents_kernel(16), (f2, f2, t.int64, t.int64, t.int64, f2)),
    (G._currents_kernel(8), (f2, f2, t.int64, t.int64, t.int64, f2)),
    (G._topk_columns, (f2, t.int64, i1, i1)),
    (G._collect_units, (i1, i1, t.int64, i1, i1, i1, d1)),
    (G._accumulate, (f2, f2, f2, t.int64, i1, i1, t.float64, i1, i1, d2, d1)),
    (G._apply_update, (f2, f2, i1, i1, d2, d1, t.float64, t.float64)),
]
"""


@pytest.mark.slow  # compiles every kernel for the real CUDA target in a subprocess
def test_kernels_type_check_for_the_real_cuda_target():
    """The simulator runs kernels as Python and checks no types (a shared array with a computed
    shape passes there and fails to compile on a GPU): type and lower every kernel for the real
    target (to LLVM IR; no GPU, driver or NVVM needed) with the argument types the driver uses."""
    _cudasim.typecheck(_TYPECHECK)


def test_bad_arguments_raise():
    from bioreps.kernels.cuda import hebbian as gpu

    W = np.zeros((4, 3), np.float32)
    X = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="k must be"):
        gpu.hebbian_epoch(W, X, np.arange(5), 2, 5, DELTA, EPS, 3.0)
    with pytest.raises(TypeError, match="float32"):
        gpu.hebbian_epoch(W.astype(np.float64), X, np.arange(5), 2, 2, DELTA, EPS, 3.0)
    with pytest.raises(TypeError, match="float32"):
        gpu.HebbianBuffers(4, 3, 2, 2, dtype=np.float64)


if __name__ == "__main__":
    print(json.dumps(_checks(sys.argv[1])))
