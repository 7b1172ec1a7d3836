"""Everything a GPU should measure, in one command: the real-GPU tests, the CUDA kernels' agreement
with the CPU kernels on real data, and the CUDA benchmarks, as one table (printed) and one JSON
file.

    python benchmarks/gpu.py [--out gpu_results.json] [--skip-tests] [--budget-s 420]
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --smoke   # tiny sizes in the simulator (CI)

On a machine with a GPU and torch, numba, numba-cuda, h5py and scipy installed (nothing else:
``pip install --no-deps -e .``), it runs, within ``--budget-s`` seconds (each step is skipped,
with a line saying so, once the budget is spent):

1. ``pytest -m gpu`` (the real-GPU variants of the CUDA tests);
2. agreement checks on real data (Fashion-MNIST when installed, else synthetic): one epoch of the
   Krotov-Hopfield rule (persistent kernel, per-batch kernels, CPU kernel), one epoch of the
   SoftHebb rule (CUDA vs CPU), convolutional SoftHebb and Krotov-Hopfield epochs (CUDA vs CPU,
   images/s of both), the Diehl & Cook transform (CUDA vs CPU spike counts) and a
   spiking ensemble trained in one launch (a member equals the network trained alone);
3. the benchmarks in the same run: ``benchmarks/hebbian_cuda.py`` (ms per epoch of both GPU
   paths and the CPU, the projection to the paper's 1000 epochs) and
   ``benchmarks/spiking_cuda.py`` (training and transform samples/s at N=100 and 400, and an
   ensemble of one network per multiprocessor: network-samples/s against one network's);
   ``benchmarks/conv_softhebb.py --device cuda`` (our convolutional SoftHebb kernel against the
   reference code's layer on the same GPU, images/s of both) when the reference is staged in
   ``benchmarks/peers/_softhebb/`` (``benchmarks/peers/stage_softhebb.py``) or ``$SOFTHEBB_DIR``.

Each step's figures go into the table and the JSON (``--out``), with the GPU named: record them in
``benchmarks/RESULTS.md``. ``--smoke`` runs steps 2 and the table/JSON writing at tiny sizes
under the CUDA simulator (no timings, only that every path still runs and agrees), which CI does
through ``tests/test_gpu_script.py`` so the script never rots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _device():
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return "CUDA simulator"
    if not cuda.is_available():
        return None
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def _images(n, n_features=784, seed=0):
    from bioreps import data

    if data.locate("fashion-mnist") is not None:
        X = data.load("fashion-mnist", "train")[0].reshape(60000, -1)[:n].astype(np.float32)
        return X, "fashion-mnist"
    rng = np.random.default_rng(seed)
    return rng.random((n, n_features), dtype=np.float32), "synthetic"


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check_hebbian(smoke):
    """One Krotov-Hopfield epoch: the persistent kernel, the per-batch kernels, the CPU kernel."""
    from bioreps.kernels.cpu import hebbian as cpu
    from bioreps.kernels.cuda import hebbian as gpu

    K, n, B, tile = (12, 9, 4, 8) if smoke else (2000, 6000, 100, 32)
    X, source = _images(n)
    if smoke:
        X = X[:, :20].copy()
    X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-12
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((K, X.shape[1])).astype(np.float32)
    order = rng.permutation(n)
    args = (2, 0.4, 0.02, 3.0)
    Wp, Wb, Wc = W0.copy(), W0.copy(), W0.copy()
    t0 = time.perf_counter()
    gpu.hebbian_epoch(Wp, X, order, B, *args, gpu.HebbianBuffers(K, X.shape[1], B, 2, tile=tile))
    t_pers = time.perf_counter() - t0
    gpu.hebbian_epoch(Wb, X, order, B, *args, gpu.HebbianBuffers(K, X.shape[1], B, 2, tile=tile, persistent=False))
    cpu.hebbian_epoch(Wc, X, order, B, *args, cpu.HebbianBuffers(K, X.shape[1], B, 2))
    return {"check": "hebbian epoch", "data": source, "shape": [K, X.shape[1], n, B],
            "persistent_equals_per_batch": bool(np.array_equal(Wp, Wb)), "rel_vs_cpu": _rel(Wp, Wc),
            "seconds_first_call": round(t_pers, 3), "ok": bool(np.array_equal(Wp, Wb)) and _rel(Wp, Wc) < 1e-3}


def check_softhebb(smoke):
    """One SoftHebb epoch, CUDA vs CPU."""
    from bioreps.kernels.cpu import softhebb as cpu
    from bioreps.kernels.cuda import softhebb as gpu

    K, n, B, tile = (10, 9, 4, 8) if smoke else (2000, 6000, 100, 32)
    X, source = _images(n)
    if smoke:
        X = X[:, :20].copy()
    rng = np.random.default_rng(2)
    W0 = (0.1 * rng.standard_normal((K, X.shape[1]))).astype(np.float32)
    order = rng.permutation(n)
    args = (12.0, 0.01, 2.0, 0.5, True)
    Wg, Wc = W0.copy(), W0.copy()
    gpu.softhebb_epoch(Wg, X, order, B, *args, gpu.SoftHebbBuffers(K, X.shape[1], B, block=32 if smoke else None,
                                                                   tile=tile))
    cpu.softhebb_epoch(Wc, X, order, B, *args, cpu.SoftHebbBuffers(K, X.shape[1], B))
    rel = _rel(Wg, Wc)
    return {"check": "softhebb epoch", "data": source, "shape": [K, X.shape[1], n, B], "rel_vs_cpu": rel,
            "ok": rel < 1e-3}


def check_conv(smoke):
    """Convolutional SoftHebb and Krotov-Hopfield epochs (SoftHebb's first layer), CUDA vs CPU,
    with both sides timed after a warm-up."""
    from bioreps.kernels.cpu import conv as cpu
    from bioreps.kernels.cuda import conv as gpu

    X, source = _images(24 if smoke else 2000)
    X = X.reshape(-1, 1, 28, 28)
    if smoke:
        X = np.ascontiguousarray(X[:3, :, 10:16, 10:15])
    K, k, pad, B = (4, 3, 1, 2) if smoke else (96, 5, 2, 10)
    rng = np.random.default_rng(3)
    W0 = (rng.standard_normal((K, k * k)) * (0.8 if smoke else 5.0)).astype(np.float32)
    order = rng.permutation(len(X))
    out = {"check": "conv epochs", "data": source, "shape": [K, k, len(X), B]}
    rows = B * X.shape[2] * X.shape[3]  # stride 1, "same" padding
    small = dict(block=16, tile=4) if smoke else {}
    for name, fc, fg, args, bufs in (
            ("softhebb", cpu.conv_softhebb_epoch, gpu.conv_softhebb_epoch, (1.0, 0.08, 2.0, 0.5, True),
             lambda: gpu.ConvBuffers(K, k * k, rows, (B,) + X.shape[1:], **small)),
            ("hebbian", cpu.conv_hebbian_epoch, gpu.conv_hebbian_epoch, (2, 0.4, 0.04, 3.0),
             lambda: gpu.ConvHebbianBuffers(K, k * k, rows, 2, (B,) + X.shape[1:], **small))):
        Wc, Wg = W0.copy(), W0.copy()
        if not smoke:  # compile both (untimed)
            fc(W0.copy(), X[:B], order[:B] % B, B, k, 1, pad, "reflect", *args)
            fg(W0.copy(), X[:B], order[:B] % B, B, k, 1, pad, "reflect", *args)
        t0 = time.perf_counter()
        fc(Wc, X, order, B, k, 1, pad, "reflect", *args)
        tc = time.perf_counter() - t0
        t0 = time.perf_counter()
        fg(Wg, X, order, B, k, 1, pad, "reflect", *args, buffers=bufs())
        tg = time.perf_counter() - t0
        out[f"{name}_rel_vs_cpu"] = _rel(Wg, Wc)
        if not smoke:
            out[f"{name}_images_per_s"] = {"cpu": round(len(X) / tc, 1), "cuda": round(len(X) / tg, 1)}
    out["ok"] = out["softhebb_rel_vs_cpu"] < 1e-3 and out["hebbian_rel_vs_cpu"] < 1e-3
    return out


def check_spiking(smoke):
    """The Diehl & Cook transform of frozen weights: CUDA vs CPU spike counts."""
    from bioreps.layers import SpikingWTA

    N, n = (6, 1) if smoke else (400, 200)
    X, source = _images(n)
    X = X.astype(np.float64)
    kw = dict(n_neurons=N, random_state=0, progress=False)
    if smoke:
        kw.update(t_present_ms=5.0, t_rest_ms=2.0)
    import tempfile

    m = SpikingWTA(backend="cpu", **kw).fit(X[:1])
    Cc = m.transform(X)
    with tempfile.TemporaryDirectory() as tmp:  # the same fitted network, loaded on the GPU backend
        m.save(Path(tmp) / "dc.h5")
        Cg = SpikingWTA.load(Path(tmp) / "dc.h5", backend="cuda").transform(X)
    same = float(np.mean(np.all(Cc == Cg, axis=1)))
    # an ensemble trained in one launch (one block per member) equals each member trained alone
    from bioreps.layers import SpikingEnsemble

    seeds = (0, 1) if smoke else (0, 1, 2, 3)
    k = 1 if smoke else 8
    ekw = {a: b for a, b in kw.items() if a != "random_state"}
    ens = SpikingEnsemble(seeds=seeds, backend="cuda", **ekw).fit(X[:k])
    alone = SpikingWTA(backend="cuda", **dict(kw, random_state=seeds[-1])).fit(X[:k])
    ens_same = bool(np.array_equal(ens.members_[-1].weights_, alone.weights_))
    return {"check": "spiking transform, ensemble", "data": source, "N": N, "samples": n,
            "identical_count_rows": same, "ensemble_member_equals_alone": ens_same,
            "ok": same >= (1.0 if smoke else 0.99) and ens_same}


def run_tests(budget):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], capture_output=True, text=True, timeout=max(60, budget))
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return {"step": "pytest -m gpu", "returncode": proc.returncode, "summary": tail, "ok": proc.returncode == 0}


def run_benchmark(script, args, budget, env=None):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=max(60, budget), env=env)
    return {"step": f"benchmarks/{script} {' '.join(args)}", "returncode": proc.returncode,
            "output": proc.stdout.strip().splitlines()[-12:], "ok": proc.returncode == 0}


def softhebb_reference(budget):
    """Our convolutional SoftHebb kernel against the reference layer, both on the GPU."""
    ref = Path(os.environ.get("SOFTHEBB_DIR") or ROOT / "benchmarks" / "peers" / "_softhebb")
    step = "conv_softhebb.py --device cuda"
    if not (ref / "hebbconv.py").is_file():
        return {"step": step, "ok": None, "skipped": f"no SoftHebb reference at {ref} (stage it with "
                                                     "benchmarks/peers/stage_softhebb.py, or set $SOFTHEBB_DIR)"}
    if budget <= 60:
        return {"step": step, "ok": None, "skipped": "budget spent"}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ref), os.environ.get("PYTHONPATH")])))
    return run_benchmark("conv_softhebb.py", ["--device", "cuda", "--softhebb", str(ref), "--images", "2000"],
                         budget, env=env)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes under the CUDA simulator, no tests, no timings")
    ap.add_argument("--out", default="gpu_results.json", help="the JSON file written (default gpu_results.json)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget; later steps are skipped")
    args = ap.parse_args(argv)
    os.environ.setdefault("BIOREPS_PROGRESS", "0")  # a table, not progress bars
    device = _device()
    if device is None:
        sys.exit("no CUDA GPU here (for a dry run: NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --smoke)")
    if args.smoke and device != "CUDA simulator":
        sys.exit("--smoke is for the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    if not args.smoke and device == "CUDA simulator":
        sys.exit("the simulator is far too slow for real sizes: pass --smoke")
    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    steps = []
    if not args.smoke and not args.skip_tests:
        steps.append(run_tests(left()))
    for check in (check_hebbian, check_softhebb, check_conv, check_spiking):
        if left() <= 0:
            steps.append({"check": check.__name__, "ok": None, "skipped": "budget spent"})
            continue
        try:
            steps.append(check(args.smoke))
        except Exception as exc:  # a failing check is a row of the table, not the end of the run
            steps.append({"check": check.__name__, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    if not args.smoke:
        for script, sargs in (("hebbian_cuda.py", ["--cuda", "--epochs", "2"]),
                              ("spiking_cuda.py", ["--cuda", "--fit-samples", "100", "--transform-samples", "20000"])):
            if left() <= 60:
                steps.append({"step": script, "ok": None, "skipped": "budget spent"})
                continue
            steps.append(run_benchmark(script, sargs, left()))
        steps.append(softhebb_reference(left()))
    result = {"device": device, "smoke": args.smoke, "python": platform.python_version(),
              "seconds": round(time.perf_counter() - start, 1), "steps": steps}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {device}; {result['seconds']} s")
    for s in steps:
        name = s.get("check") or s.get("step")
        status = "skipped" if s.get("ok") is None else ("ok" if s["ok"] else "FAILED")
        extra = {k: v for k, v in s.items() if k not in ("check", "step", "ok", "output")}
        print(f"  {status:8s} {name}: {json.dumps(extra)}")
        for line in s.get("output", []):
            print(f"           {line}")
    print(f"written: {args.out}")
    return 0 if all(s.get("ok") is not False for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
