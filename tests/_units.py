"""Tiny unit functions for tests/test_execute.py, at module top level so they pickle to Dask
workers by name. Each appends one line to ``<log_dir>/calls.log`` when it computes, so a test
can tell which units ran."""

import json
import os
import signal

import numpy as np

from bioreps import _files
from bioreps.studies.stats import mean_ci


def _called(log_dir, *what):
    with open(os.path.join(log_dir, "calls.log"), "a", encoding="utf-8") as fh:
        fh.write(" ".join(map(str, what)) + "\n")


def train(ctx, model, seed, scale, log_dir):
    """'weights' of a toy model: four numbers from the seed and the scale; with scale 1 also an
    extra output (so a configuration change can leave a stale file behind)."""
    _called(log_dir, "train", model, seed)
    offset = {"mA": 0.0, "mB": 10.0}[model]
    w = [offset + scale * (seed + i) for i in range(4)]
    ctx.write_json("weights.json", {"w": w})
    with ctx.atomic("arrays/weights.npy", suffix=".npy") as tmp:  # np.save wants the extension
        np.save(tmp, np.array(w))
    if scale == 1:
        ctx.write_text("extra.txt", "only with scale 1\n")


def train_failing(ctx, model, seed, scale, log_dir, bad_model, bad_seed):
    """``train``, but the training of (bad_model, bad_seed) raises."""
    if (model, seed) == (bad_model, bad_seed):
        _called(log_dir, "fail", model, seed)
        raise RuntimeError("the toy training broke")
    train(ctx, model, seed, scale, log_dir)


def train_killed_once(ctx, model, seed, scale, log_dir, marker, parent_pid):
    """``train``, but the first attempt leaves a half-written temporary and kills its own process
    (the Dask worker) with SIGKILL; the marker file tells later attempts apart."""
    if os.getpid() == parent_pid:
        raise RuntimeError("train_killed_once must run in a Dask worker, not in the test process")
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        with open(_files.temp_path(ctx.path("weights.json")), "w") as fh:
            fh.write('{"w": [')  # half-written, never renamed
        os.kill(os.getpid(), signal.SIGKILL)
    train(ctx, model, seed, scale, log_dir)


def analyze(ctx, log_dir):
    """The 'score' of the one model this unit depends on: the sum of its weights."""
    (files,) = ctx.inputs.values()
    _called(log_dir, "analyze", *ctx.key[1:])
    w = json.loads(files["weights.json"].read_text())["w"]
    ctx.write_json("metrics.json", {"score": sum(w)})


def fail(ctx, log_dir):
    _called(log_dir, "fail", *ctx.key[1:])
    raise ValueError("the toy analysis broke")


def compare(ctx, log_dir):
    """Per model, mean and t interval of the score across seeds."""
    _called(log_dir, "compare")
    scores = {}
    for key, files in ctx.inputs.items():
        scores.setdefault(key[1], []).append(json.loads(files["metrics.json"].read_text())["score"])
    ctx.write_json("results.json", {model: mean_ci(v) for model, v in sorted(scores.items())})


def probe(ctx):
    """The thread settings this unit ran with, and where; ``initial``: the thread variables the
    process started with (Linux), which libraries loaded at start-up (BLAS) saw."""
    import numba
    import torch

    initial = None
    if os.path.exists("/proc/self/environ"):
        with open("/proc/self/environ", "rb") as fh:
            env = dict(item.split("=", 1) for item in fh.read().decode().split("\0") if "=" in item)
        initial = {name: env.get(name) for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

    ctx.write_json("probe.json", {"pid": os.getpid(), "threads": ctx.threads, "initial": initial,
                                  "numba": numba.get_num_threads(), "torch": torch.get_num_threads(),
                                  **{name: os.environ.get(name) for name in
                                     ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS")}})


def resumable(ctx, steps, log_dir, stop_after=None):
    """Counts to ``steps``, one step per call of ``_called``, keeping the count in a checkpoint;
    with ``stop_after`` it raises after that many steps of this attempt (as a killed attempt
    would stop), leaving the checkpoint behind. Writes the steps done by each attempt."""
    state = ctx.checkpoint_path("state.json")
    done = json.loads(state.read_text())["done"] if state.exists() else 0
    if done:
        ctx.resumed_from = f"step {done}"
    for step in range(done, steps):
        _called(log_dir, "step", *ctx.key[1:], step)
        _files.write_text_atomic(state, json.dumps({"done": step + 1}))
        if stop_after is not None and step + 1 - done >= stop_after:
            raise RuntimeError(f"stopped after step {step + 1}")
    ctx.write_json("count.json", {"steps": steps})


def step(ctx, log_dir, seconds=0.0):
    """Logs its key (``step <key...>``) and takes ``seconds``: for tests of the order units run in."""
    import time

    _called(log_dir, "step", *ctx.key)
    time.sleep(seconds)
    ctx.write_json("done.json", {"key": list(ctx.key)})
