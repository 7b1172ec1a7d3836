"""A study of 4 models x 3 seeds run in this process and on a local Dask cluster, in one run:
wall times, their ratio, and whether both give the same figures. Then the same study killed
(SIGKILL) mid-run and resumed: the resumed results.json must equal the uninterrupted one.

    python benchmarks/study_workers.py [--workers 2] [--n-train 6000] [--n-test 1000]

Both runs use one compute thread per unit (Numba, torch, BLAS), so their figures can be
compared exactly; in-process units run one after another, the cluster runs ``--workers`` at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def study(out, n_train, n_test):
    return {
        "study": {"name": "bench", "seeds": [0, 1, 2], "output": str(out)},
        "data": {"dataset": "fashion-mnist", "n_train": n_train, "n_test": n_test},
        "models": [
            {"name": "hebbian", "kind": "hebbian-wta", "n_units": 200, "k": 2, "center": True, "input_norm": 2,
             "epochs": 10, "readout": {"epochs": 10, "schedule": "linear"}},
            {"name": "softhebb", "kind": "soft-wta", "n_units": 200, "epochs": 5, "readout": {"epochs": 10}},
            {"name": "mlp", "kind": "mlp", "sizes": [784, 200, 10], "epochs": 5, "lr": 1e-3, "batch_size": 128},
            {"name": "mlp-wd", "kind": "mlp", "sizes": [784, 200, 10], "epochs": 5, "lr": 1e-3, "batch_size": 128,
             "regularizer": {"kind": "weight-decay", "lam": 1e-3}},
        ],
        "analysis": {"attacks": {"methods": ["fgsm", "pgd"], "eps": [0.0, 0.05, 0.1], "steps": 10,
                                 "n_images": 300}},
    }


def figures(res):
    return {n: {s: {k: v for k, v in m.items() if k != "fit_seconds"} for s, m in seeds.items()}
            for n, seeds in res["per_seed"].items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=1000)
    args = ap.parse_args(argv)
    from bioreps.studies.study import run_study

    root = Path(tempfile.mkdtemp(prefix="bioreps-study-bench-"))
    quiet = lambda *a: None  # noqa: E731
    t0 = time.perf_counter()
    here = run_study(study(root / "here", args.n_train, args.n_test), threads=1, progress=False, log=quiet)
    t_here = time.perf_counter() - t0
    t0 = time.perf_counter()
    there = run_study(study(root / "dask", args.n_train, args.n_test), workers=args.workers, progress=False,
                      log=quiet)
    t_dask = time.perf_counter() - t0
    same = figures(here) == figures(there) and here["cka"] == there["cka"]
    print(f"| run | wall s |\n|---|---|\n| in-process (1 thread per unit) | {t_here:.1f} |\n"
          f"| LocalCluster, {args.workers} workers | {t_dask:.1f} |")
    print(f"ratio in-process / cluster: {t_here / t_dask:.2f}x; identical figures: {same}")

    # kill -9 mid-study, then resume
    cfg_path = root / "kill.json"
    cfg_path.write_text(json.dumps(study(root / "kill", args.n_train, args.n_test)))
    code = ("import json, sys; from bioreps.studies.study import run_study; "
            f"run_study(json.load(open({str(cfg_path)!r})), threads=1, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(max(5.0, t_here / 3))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((root / "kill" / "units").glob("*/unit.json")))
    resumed = run_study(json.loads(cfg_path.read_text()), threads=1, resume=True, progress=False, log=quiet)
    print(f"killed after {done} finished units; resumed results equal the uninterrupted run's: "
          f"{figures(resumed) == figures(here) and resumed['cka'] == here['cka']}")


if __name__ == "__main__":
    main()
