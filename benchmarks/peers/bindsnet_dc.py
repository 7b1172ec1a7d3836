"""BindsNET peer of the Diehl & Cook (2015) benchmark: BindsNET's own ``DiehlAndCook2015`` model,
trained on the same images with the same presentation protocol.

    python benchmarks/peers/bindsnet_dc.py --neurons 100 --samples 20 --images X.npy

This is BindsNET's VARIANT, not the model card's network (``docs/models/diehl_cook_2015.md``):
current-based LIF nodes (input adds to v directly, no conductances or reversal potentials), E
reset -60 mV, E -> I weight 22.5, I -> E weight -17.5, pair-based ``PostPre`` STDP
(nu 1e-4 / 1e-2) with per-run weight normalisation to 78.4 (BindsNET normalises after every
``Network.run`` call, i.e. after each sample, not before it), initial weights 0.3 * U(0, 1), state
reset between samples (BindsNET's examples' ``reset_state_variables``). Only the workload is
matched: 784 Poisson inputs at rate = pixel * 63.75 Hz (BindsNET's ``poisson`` encoder), N E + N I
neurons, 350 ms of input + 150 ms of silence per sample (one ``run`` of 1000 steps) at dt 0.5 ms,
learning on, E spikes recorded by a ``Monitor``. Timed from the first sample to the last,
encoding included; a one-sample warm-up is run first and not timed. Torch threads: 1 unless
``--threads`` (our CPU kernel is single-threaded too).

Import note: ``import bindsnet`` runs ``bindsnet/__init__.py``, which imports every subpackage,
among them ``bindsnet.analysis`` and ``bindsnet.datasets`` (torchvision, pandas, tensorboardX,
opencv) and ``bindsnet.environment`` (gymnasium, ale-py). The modules this benchmark uses
(``bindsnet.network``, ``bindsnet.models``, ``bindsnet.encoding``, ``bindsnet.learning``) need
only torch, numpy and scipy, so this script registers the ``bindsnet`` package without running
its ``__init__`` and imports those submodules, unchanged, from the installed package. Nothing is
stubbed; torchvision is not installed.

Prints one JSON line.
"""

import argparse
import importlib.util
import json
import sys
import time
import types

import numpy as np

PRESENT_MS, REST_MS, DT_MS = 350.0, 150.0, 0.5


def import_bindsnet():
    """(DiehlAndCook2015, poisson, Monitor, version) from the installed bindsnet, without its
    package ``__init__`` (see the module docstring)."""
    spec = importlib.util.find_spec("bindsnet")
    if spec is None:
        raise ImportError("No module named 'bindsnet'")
    if "bindsnet" not in sys.modules:
        pkg = types.ModuleType("bindsnet")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        pkg.__file__ = spec.origin
        sys.modules["bindsnet"] = pkg
    import bindsnet.network  # noqa: F401  (first: the package's own import order avoids a cycle)
    from bindsnet.encoding import poisson
    from bindsnet.models import DiehlAndCook2015
    from bindsnet.network.monitors import Monitor
    try:
        from importlib.metadata import version
        ver = version("bindsnet")
    except Exception:  # pragma: no cover
        ver = "unknown"
    return DiehlAndCook2015, poisson, Monitor, ver


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--images", help=".npy (n, 784) values in [0, 1]; default: uniform random images")
    ap.add_argument("--max-rate-hz", type=float, default=63.75)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        DiehlAndCook2015, poisson, Monitor, ver = import_bindsnet()
    except ImportError as e:
        print(json.dumps({"error": f"not installed ({e})"}))
        return 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.images:
        X = np.load(args.images)[:args.samples]
    else:
        X = np.random.default_rng(args.seed).random((args.samples, 784))
    n = X.shape[0]
    steps_on, steps = int(PRESENT_MS / DT_MS), int((PRESENT_MS + REST_MS) / DT_MS)

    net = DiehlAndCook2015(n_inpt=784, n_neurons=args.neurons, dt=DT_MS, inpt_shape=(1, 28, 28))
    net.train(True)
    mon = Monitor(net.layers["Ae"], state_vars=["s"], time=steps)
    net.add_monitor(mon, name="Ae_spikes")
    rates = torch.as_tensor(X * args.max_rate_hz, dtype=torch.float32).view(n, 1, 28, 28)

    def present(k):
        spikes = torch.zeros(steps, 1, 1, 28, 28, dtype=torch.uint8)
        spikes[:steps_on, 0] = poisson(datum=rates[k], time=PRESENT_MS, dt=DT_MS)
        net.run(inputs={"X": spikes}, time=PRESENT_MS + REST_MS)
        count = int(mon.get("s").sum())
        net.reset_state_variables()
        return count

    t0 = time.perf_counter()
    present(0)  # warm-up, not timed
    warm_s = time.perf_counter() - t0
    counts = []
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(n):
        counts.append(present(k))
    run_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps(dict(target=f"bindsnet {ver}, torch {torch.__version__}, {args.threads} thread(s)",
                          samples=n, neurons=args.neurons, samples_per_s=n / run_s, sim_s=run_s, cpu_s=cpu_s,
                          compile_s=warm_s, mean_spikes=float(np.mean(counts)))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
