"""Diehl & Cook (2015) spiking network: training and transform samples/s of our CPU kernel at
N=100 and N=400 (350 ms + 150 ms per sample at dt 0.5 ms, STDP on), the float64 NumPy reference
(tests/reference.py) on the same spike trains, and the peers Brian2 (C++ standalone and runtime)
and BindsNET on the same workload, all in the same run, with the ratios ours / peer.

    python benchmarks/spiking.py [--samples 200] [--neurons 100 400] [--ref-samples 2]
        [--peers brian2-cpp,brian2-cpp-nt,brian2-runtime,bindsnet] [--cpp-samples 50] [--runtime-samples 5]
        [--bindsnet-samples 20] [--peer-python PYTHON]

Uses Fashion-MNIST training images when installed, else synthetic ``make_classes`` images; the
peers get the first images of the same set (through a temporary .npy file).

Peers (``benchmarks/peers/``) run in subprocesses of ``--peer-python`` (default: this
interpreter), so a peer that is not installed there prints "not installed" and the rest still
runs (``--peers none`` skips them):

* ``brian2-cpp``: the model card's network in Brian2 ``cpp_standalone``, all samples in one
  ``device.build``; compilation is excluded from samples/s and reported apart. STDP traces per
  synapse, event-driven (the formulation of the Brian2 ports of the released code).
* ``brian2-cpp-nt``: the same with the STDP traces on the neurons (one per input, two per E
  neuron), which spares Brian2 the per-synapse trace updates: the faster Brian2 formulation.
* ``brian2-runtime``: the same network in Brian2 runtime mode (Cython codegen; its first,
  compiling run is a one-step warm-up, excluded).
* ``bindsnet``: BindsNET's own ``DiehlAndCook2015`` (a different variant of the model: current
  LIF, pair STDP), 350 ms of input + 150 ms silence per sample, learning on, 1 torch thread.

Samples/s are wall-clock; the "CPU" columns divide by the process's CPU seconds instead, which
is steadier on a machine shared with other work (ours, BindsNET and Brian2 are single-threaded).
Ours includes the low-activity retries (the peers show every sample once).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(n_samples):
        indptr, indices = poisson_spike_trains(X[k] * p.max_rate_hz, 700, 0.5, k)
        W = diehl_cook_normalize(W, p.weight_sum)
        W, state, _ = diehl_cook_presentation(W, indptr, indices, 300, pd, 0.5, True, state)
    return n_samples / (time.perf_counter() - t0), n_samples / (time.process_time() - c0)


PEERS = {
    # name: (script, extra arguments, label)
    "brian2-cpp": ("brian2_dc.py", ["--mode", "cpp"], "Brian2 cpp_standalone (per-synapse traces)"),
    "brian2-cpp-nt": ("brian2_dc.py", ["--mode", "cpp", "--traces", "neuron"],
                      "Brian2 cpp_standalone (per-neuron traces)"),
    "brian2-runtime": ("brian2_dc.py", ["--mode", "runtime"], "Brian2 runtime"),
    "bindsnet": ("bindsnet_dc.py", [], "BindsNET DiehlAndCook2015 (its own variant)"),
}


def run_peer(name, python, n_neurons, n_samples, images_path, timeout):
    """Run one peer in a subprocess; returns its JSON dict, or {"error": ...}."""
    script, extra, _ = PEERS[name]
    cmd = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", script), *extra,
           "--neurons", str(n_neurons), "--samples", str(n_samples), "--images", images_path]
    if script == "brian2_dc.py":
        cmd += ["--params", json.dumps(DiehlCookParams().to_dict())]
    else:
        cmd += ["--max-rate-hz", str(DiehlCookParams().max_rate_hz)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return {"error": f"not installed (no interpreter {python})"}
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"failed (exit {r.returncode}): {tail[0][:200]}"}


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def table(n, rows):
    """Markdown table: one row per implementation, ratios ours(fit)/peer."""
    ours_wall, ours_cpu = rows[0]["sps"], rows[0]["cpu_sps"]
    out = [f"N={n} E neurons (+{n} I), 350+150 ms per sample at dt 0.5 ms, STDP on unless stated",
           "",
           "| implementation | samples | samples/s | samples/s per CPU s | ours/peer | ours/peer (CPU) "
           "| compile s | E spikes/sample | notes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['label']} | - | {r['error']} | | | | | | |")
            continue
        ratio = f"{ours_wall / r['sps']:.1f}x" if r.get("peer") else ""
        ratio_cpu = f"{ours_cpu / r['cpu_sps']:.1f}x" if r.get("peer") and r.get("cpu_sps") else ""
        out.append(f"| {r['label']} | {r['samples']} | {fmt(r['sps'], 2 if r['sps'] < 10 else 1)} | "
                   f"{fmt(r.get('cpu_sps'), 2 if (r.get('cpu_sps') or 99) < 10 else 1)} | {ratio} | {ratio_cpu} | "
                   f"{fmt(r.get('compile_s'))} | {fmt(r.get('spikes'))} | {r.get('notes', '')} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200, help="samples for our kernel (fit and transform)")
    ap.add_argument("--neurons", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--ref-samples", type=int, default=2, help="samples for the NumPy reference (0: skip)")
    ap.add_argument("--peers", default="brian2-cpp,brian2-cpp-nt,brian2-runtime,bindsnet",
                    help="comma-separated subset of " + ",".join(PEERS) + ", or 'none'")
    ap.add_argument("--cpp-samples", type=int, default=50, help="samples for Brian2 cpp_standalone")
    ap.add_argument("--runtime-samples", type=int, default=5, help="samples for Brian2 runtime (slow)")
    ap.add_argument("--bindsnet-samples", type=int, default=20, help="samples for BindsNET (slow)")
    ap.add_argument("--peer-python", default=sys.executable,
                    help="interpreter that has brian2 / bindsnet (default: this one)")
    ap.add_argument("--peer-timeout", type=float, default=900, help="seconds per peer run")
    args = ap.parse_args()
    peers = [] if args.peers.strip().lower() in ("", "none") else [p.strip() for p in args.peers.split(",")]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {list(PEERS)}")
    peer_samples = {"brian2-cpp": args.cpp_samples, "brian2-cpp-nt": args.cpp_samples,
                    "brian2-runtime": args.runtime_samples,
                    "bindsnet": args.bindsnet_samples}
    n_img = max([args.samples] + [peer_samples[p] for p in peers])
    X, source = images(n_img)
    print(f"images: {source}, 350+150 ms at dt 0.5 ms; cpu count {os.cpu_count()}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; peers run by {args.peer_python}",
          flush=True)
    # compile every kernel timed below (fit AND transform: a transform timed cold would include
    # its JIT compile, 10x the run time at N=100)
    SpikingWTA(n_neurons=10, backend="cpu", random_state=0, progress=False).fit(X[:2]).transform(X[:2])
    tmpdir = tempfile.mkdtemp(prefix="bioreps_spiking_bench_")
    images_path = os.path.join(tmpdir, "images.npy")
    np.save(images_path, X[:max([0] + [peer_samples[p] for p in peers])])
    tables = []
    try:
        for n in args.neurons:
            Xo = X[:args.samples]
            m = SpikingWTA(n_neurons=n, backend="cpu", random_state=0, progress=False)
            t0, c0 = time.perf_counter(), time.process_time()
            m.fit(Xo)
            fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            C = m.transform(Xo)
            tr_s, tr_cpu = time.perf_counter() - t0, time.process_time() - c0
            rows = [dict(label="**bioreps CPU kernel, fit**", samples=args.samples, sps=args.samples / fit_s,
                         cpu_sps=args.samples / fit_cpu, spikes=None,
                         notes=f"Numba, 1 thread; {m.n_retries_} low-activity retries"),
                    dict(label="bioreps CPU kernel, transform (STDP off)", samples=args.samples,
                         sps=args.samples / tr_s, cpu_sps=args.samples / tr_cpu, spikes=float(C.sum(1).mean()),
                         notes="")]
            if args.ref_samples:
                ref_sps, ref_cpu = time_reference(X, n, args.ref_samples)
                rows.append(dict(label="NumPy float64 reference (tests/reference.py)", samples=args.ref_samples,
                                 sps=ref_sps, cpu_sps=ref_cpu, peer=True, notes=""))
            print(f"N={n}: ours fit {rows[0]['sps']:.1f} samples/s, transform {rows[1]['sps']:.1f}", flush=True)
            for name in peers:
                label = PEERS[name][2]
                res = run_peer(name, args.peer_python, n, peer_samples[name], images_path, args.peer_timeout)
                if "error" in res:
                    rows.append(dict(label=label, error=res["error"]))
                    print(f"N={n}: {name}: {res['error']}", flush=True)
                    continue
                notes = ""
                if name.startswith("brian2-cpp"):
                    notes = (f"samples/s from the simulation loop ({res['sim_s']:.2f} s); binary wall "
                             f"{res['run_wall_s']:.2f} s; brian2 {res['brian2']}")
                elif name == "brian2-runtime":
                    label = f"{label} ({res['target']})"
                    notes = f"compile s = cached-or-fresh warm-up run; brian2 {res['brian2']}"
                else:
                    notes = res["target"] + "; 'compile s' = untimed warm-up sample"
                rows.append(dict(label=label, samples=res["samples"], sps=res["samples_per_s"],
                                 cpu_sps=res["samples"] / res["cpu_s"] if res.get("cpu_s") else None,
                                 compile_s=res.get("compile_s"), spikes=res.get("mean_spikes"), peer=True, notes=notes))
                print(f"N={n}: {name}: {res['samples_per_s']:.2f} samples/s", flush=True)
            tables.append(table(n, rows))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print()
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
