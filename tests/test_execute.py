"""The study execution engine (bioreps.studies.execute): units, their records, resuming, errors,
and the same results in this process and on Dask workers (a local cluster on loopback)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import _units
from bioreps import _files
from bioreps.studies import execute as ex
from bioreps.studies.execute import Unit, UnitError, config_hash, execute, unit_folder

MODELS = ("mA", "mB")
SEEDS = (0, 1)


def study(root, log_dir, *, scale=None, fail=None, train_func=_units.train, train_extra=()):
    """2 models x 2 seeds: train -> analyze per (model, seed), then one compare of all analyses.
    ``scale`` maps (model, seed) to a scale other than 1 (a changed configuration); ``fail`` is
    the (model, seed) whose analysis raises."""
    scale = scale or {}
    units = []
    for m in MODELS:
        for s in SEEDS:
            sc = scale.get((m, s), 1)
            units.append(Unit(("train", m, s), train_func, unit_folder(root, ("train", m, s)),
                              args=(m, s, sc, str(log_dir), *train_extra),
                              config_hash=config_hash({"model": m, "seed": s, "scale": sc})))
    for m in MODELS:
        for s in SEEDS:
            func = _units.fail if fail == (m, s) else _units.analyze
            units.append(Unit(("analyze", m, s), func, unit_folder(root, ("analyze", m, s)),
                              args=(str(log_dir),), deps=[("train", m, s)], config_hash=config_hash({})))
    units.append(Unit(("compare",), _units.compare, unit_folder(root, ("compare",)), args=(str(log_dir),),
                      deps=[("analyze", m, s) for m in MODELS for s in SEEDS], config_hash=config_hash({})))
    return units


def calls(log_dir):
    path = log_dir / "calls.log"
    return sorted(path.read_text().splitlines()) if path.exists() else []


def outputs(results):
    """{key: {output name: content}} of a study's results."""
    return {key: {name: path.read_bytes() for name, path in rec["files"].items()} for key, rec in results.items()}


def temporaries(root):
    return sorted(p.name for p in root.rglob("*") if ".tmp-" in p.name)


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "log").mkdir()
    return tmp_path / "study", tmp_path / "log"


ALL_CALLS = sorted([f"train {m} {s}" for m in MODELS for s in SEEDS]
                   + [f"analyze {m} {s}" for m in MODELS for s in SEEDS] + ["compare"])


def test_in_process_study_writes_outputs_and_records(dirs):
    root, log = dirs
    results = execute(study(root, log), log=None)
    assert calls(log) == ALL_CALLS
    assert all(rec["ran"] for rec in results.values())
    assert json.loads((root / "train+mA+1" / "weights.json").read_text()) == {"w": [1, 2, 3, 4]}
    assert json.loads((root / "analyze+mB+0" / "metrics.json").read_text()) == {"score": 46}
    res = json.loads((root / "compare" / "results.json").read_text())
    assert res["mA"]["mean"] == 8 and res["mB"]["mean"] == 48 and res["mB"]["n"] == 2
    # [6, 10]: s = 2*sqrt(2), half-width t_{0.975,1} * s / sqrt(2) = 12.7062 * 2
    assert res["mA"]["ci_low"] == pytest.approx(8 - 25.4124, abs=1e-3)
    record = json.loads((root / "train+mA+0" / "unit.json").read_text())
    assert record["key"] == ["train", "mA", 0] and record["status"] == "done"
    assert record["config_hash"] == config_hash({"model": "mA", "seed": 0, "scale": 1})
    assert sorted(record["outputs"]) == ["arrays/weights.npy", "extra.txt", "weights.json"]
    assert np.load(root / "train+mA+0" / "arrays" / "weights.npy").tolist() == [0, 1, 2, 3]
    weights = (root / "train+mA+0" / "weights.json").read_bytes()
    assert record["outputs"]["weights.json"]["size"] == len(weights)
    import hashlib
    assert record["outputs"]["weights.json"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert results[("compare",)]["files"]["results.json"] == root / "compare" / "results.json"
    assert temporaries(root) == []


def test_rerun_skips_every_finished_unit(dirs):
    root, log = dirs
    first = execute(study(root, log), log=None)
    lines = []
    second = execute(study(root, log), progress=False, log=lines.append)
    assert calls(log) == ALL_CALLS  # nothing computed twice
    assert not any(rec["ran"] for rec in second.values())
    assert outputs(second) == outputs(first)
    assert sum("skipped" in line for line in lines) == len(second)


def test_changed_config_reruns_that_unit_and_its_dependents_only(dirs):
    root, log = dirs
    execute(study(root, log), log=None)
    (log / "calls.log").unlink()
    results = execute(study(root, log, scale={("mA", 1): 2}), log=None)
    assert calls(log) == ["analyze mA 1", "compare", "train mA 1"]
    assert {k for k, rec in results.items() if rec["ran"]} == {("train", "mA", 1), ("analyze", "mA", 1), ("compare",)}
    assert results[("train", "mA", 1)]["reason"] == "its configuration changed"
    # the stale output of the old configuration is gone, and not in the new record
    assert not (root / "train+mA+1" / "extra.txt").exists()
    assert (root / "train+mB+1" / "extra.txt").exists()
    assert json.loads((root / "analyze+mA+1" / "metrics.json").read_text()) == {"score": 20}
    assert json.loads((root / "compare" / "results.json").read_text())["mA"]["mean"] == 13


def test_interrupted_run_resumes_only_unfinished_units(dirs):
    root, log = dirs
    execute(study(root, log), log=None)
    (log / "calls.log").unlink()
    # as if killed: one unit before its record, one while writing an output
    (root / "analyze+mB+1" / "unit.json").unlink()
    folder = root / "train+mA+0"
    (folder / "unit.json").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".weights.json.tmp-{_files._host()}-{dead.pid}-0123abcd"
    stale.write_text('{"w": [')
    # a temporary of a file this run does not write again (e.g. an old checkpoint)
    stale_other = folder / f".old.ckpt.tmp-{_files._host()}-{dead.pid}-0123abce.pt"
    stale_other.write_text("half")
    results = execute(study(root, log), log=None)
    # rerun outputs are identical, so nothing downstream of them reruns
    assert calls(log) == ["analyze mB 1", "train mA 0"]
    assert not stale.exists() and not stale_other.exists() and temporaries(root) == []
    assert {k for k, rec in results.items() if rec["ran"]} == {("train", "mA", 0), ("analyze", "mB", 1)}


def test_modified_output_reruns_the_unit(dirs):
    root, log = dirs
    execute(study(root, log), log=None)
    (log / "calls.log").unlink()
    path = root / "analyze+mA+0" / "metrics.json"
    path.write_text(path.read_text().replace("6", "7"))  # same size, other content
    results = execute(study(root, log), log=None)
    assert results[("analyze", "mA", 0)]["reason"] == "output metrics.json changed (SHA-256)"
    assert json.loads((root / "analyze+mA+0" / "metrics.json").read_text()) == {"score": 6}
    assert calls(log) == ["analyze mA 0"]
    (log / "calls.log").unlink()
    (root / "train+mB+1" / "extra.txt").unlink()
    results = execute(study(root, log), log=None)
    assert results[("train", "mB", 1)]["reason"] == "output extra.txt is missing"
    assert calls(log) == ["train mB 1"]  # same outputs again: nothing downstream reruns


def test_failing_unit_stops_the_study_and_keeps_finished_units(dirs):
    root, log = dirs
    lines = []
    with pytest.raises(UnitError, match=r"unit \('analyze', 'mB', 0\) failed: ValueError: the toy analysis broke") as err:
        execute(study(root, log, fail=("mB", 0)), progress=False, log=lines.append)
    assert isinstance(err.value.__cause__, ValueError) and err.value.key == ("analyze", "mB", 0)
    assert any("('analyze', 'mB', 0) failed" in line for line in lines)
    finished = sorted(p.parent.name for p in root.glob("*/unit.json"))
    assert finished == ["analyze+mA+0", "analyze+mA+1", "train+mA+0", "train+mA+1", "train+mB+0", "train+mB+1"]
    assert "analyze mB 1" not in calls(log) and "compare" not in calls(log)
    # fixed, the study resumes: only the failed unit and what it blocked run
    (log / "calls.log").unlink()
    execute(study(root, log), log=None)
    assert calls(log) == ["analyze mB 0", "analyze mB 1", "compare"]


def test_progress_lines_when_bars_are_off(dirs):
    root, log = dirs
    lines = []
    execute(study(root, log), progress=False, log=lines.append)
    assert len(lines) == 2 * 9
    assert lines[0] == "[0/9] unit ('train', 'mA', 0) started"
    assert lines[-1].startswith("[9/9] unit ('compare',) done in ")


def _renamed(ctx):
    pass


_alias = _renamed
del _renamed


def test_units_are_checked_before_anything_runs(tmp_path):
    def local(ctx):
        pass

    ok = Unit(("a",), _units.probe, tmp_path / "a")
    with pytest.raises(TypeError, match=r"unit \('b',\): func must be an importable top-level function"):
        execute([ok, Unit(("b",), local, tmp_path / "b")])
    with pytest.raises(TypeError, match=r"unit \('b',\): func test_execute._renamed cannot be imported by that name"):
        execute([ok, Unit(("b",), _alias, tmp_path / "b")])
    with pytest.raises(ValueError, match=r"two units have the key \('a',\)"):
        execute([ok, Unit(("a",), _units.probe, tmp_path / "c")])
    with pytest.raises(ValueError, match=r"units \('a',\) and \('c',\) share the folder"):
        execute([ok, Unit(("c",), _units.probe, tmp_path / "a")])
    with pytest.raises(ValueError, match=r"unit \('a',\) depends on \('x',\), which is not a unit"):
        execute([Unit(("a",), _units.probe, tmp_path / "a", deps=[("x",)])])
    with pytest.raises(ValueError, match=r"cycle: \('a',\) -> \('b',\) -> \('a',\)"):
        execute([Unit(("a",), _units.probe, tmp_path / "a", deps=[("b",)]),
                 Unit(("b",), _units.probe, tmp_path / "b", deps=[("a",)])])
    assert not any(tmp_path.iterdir())


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": (1, 2), "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    with pytest.raises(ValueError, match="NaN or infinite"):
        config_hash({"lr": float("nan")})
    with pytest.raises(TypeError, match="a set .* has no canonical JSON form"):
        config_hash({"s": {1}})


def test_unit_folders_are_distinct_for_distinct_keys(tmp_path):
    assert unit_folder(tmp_path, ("train", "a+b", 0)) != unit_folder(tmp_path, ("train", "a", "b", 0))
    assert unit_folder(tmp_path, ("x", "a/b")).parent == tmp_path


# --- Dask -------------------------------------------------------------------------------------

def test_threads_are_set_around_each_unit_in_process(tmp_path):
    import numba
    import torch

    before = (numba.get_num_threads(), torch.get_num_threads())
    results = execute([Unit(("probe",), _units.probe, tmp_path / "probe")], threads_per_worker=1, log=None)
    probe = json.loads(results[("probe",)]["files"]["probe.json"].read_text())
    assert (probe["threads"], probe["numba"], probe["torch"]) == (1, 1, 1)
    assert (numba.get_num_threads(), torch.get_num_threads()) == before  # restored
    results = execute([Unit(("probe",), _units.probe, tmp_path / "all")], log=None)
    assert results[("probe",)]["threads"] == ex._cores()  # default: all cores


# --- Dask (a local cluster on loopback: a few seconds each) -----------------------------------

def test_local_cluster_gives_the_in_process_results(tmp_path):
    pytest.importorskip("distributed")
    (tmp_path / "log").mkdir()
    here = execute(study(tmp_path / "here", tmp_path / "log"), log=None)
    units = study(tmp_path / "dask", tmp_path / "log") + [Unit(("probe",), _units.probe, tmp_path / "dask" / "probe")]
    there = execute(units, workers=2, log=None)
    probe = json.loads(there.pop(("probe",))["files"]["probe.json"].read_text())
    assert outputs(there) == outputs(here)
    assert calls(tmp_path / "log") == sorted(ALL_CALLS * 2)
    # a worker process, with the cores shared between the two workers
    n = max(1, ex._cores() // 2)
    assert probe["pid"] != os.getpid()
    env = {name: str(n) for name in ex.THREAD_VARIABLES}
    assert probe == {"pid": probe["pid"], "threads": n, "numba": n, "torch": n, **env,
                     "initial": env if sys.platform.startswith("linux") else None}


def test_worker_killed_mid_unit_still_finishes_with_the_same_results(tmp_path):
    pytest.importorskip("distributed")
    (tmp_path / "log").mkdir()
    here = execute(study(tmp_path / "here", tmp_path / "log"), log=None)
    marker = tmp_path / "killed-once"
    units = study(tmp_path / "dask", tmp_path / "log", train_func=_units.train_killed_once,
                  train_extra=(str(marker), os.getpid()))
    there = execute(units, workers=2, log=None)
    assert marker.exists()
    assert outputs(there) == outputs(here)
    assert temporaries(tmp_path / "dask") == []  # the killed attempt's half-written file is gone


def test_failing_unit_on_workers_stops_the_study_with_its_key(tmp_path):
    pytest.importorskip("distributed")
    root, log = tmp_path / "study", tmp_path / "log"
    log.mkdir()
    with pytest.raises(UnitError, match=r"unit \('analyze', 'mA', 0\) failed: ValueError: the toy analysis broke") as err:
        execute(study(root, log, fail=("mA", 0)), workers=2, log=None)
    assert isinstance(err.value.__cause__, ValueError)
    assert calls(log).count("fail mA 0") == 1  # not retried
    assert not (root / "compare").exists() and not (root / "analyze+mA+0" / "unit.json").exists()
    assert (root / "train+mA+0" / "unit.json").exists()  # finished units are kept


def test_failing_training_on_workers_is_named_not_the_units_that_needed_it(tmp_path):
    """Units go to the scheduler with their inputs' futures: the analysis of a training that
    raised errs with the same error, and the study still names the training."""
    pytest.importorskip("distributed")
    root, log = tmp_path / "study", tmp_path / "log"
    log.mkdir()
    units = study(root, log, train_func=_units.train_failing, train_extra=("mB", 1))
    with pytest.raises(UnitError, match=r"unit \('train', 'mB', 1\) failed: RuntimeError: the toy training broke"):
        execute(units, workers=2, log=None)
    assert calls(log).count("fail mB 1") == 1
    assert "analyze mB 1" not in calls(log) and not (root / "analyze+mB+1" / "unit.json").exists()


def test_existing_scheduler_gives_the_in_process_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    (tmp_path / "log").mkdir()
    here = execute(study(tmp_path / "here", tmp_path / "log"), log=None)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        there = execute(study(tmp_path / "dask", tmp_path / "log"), scheduler=cluster.scheduler_address, log=None)
    assert outputs(there) == outputs(here)
    assert {rec["threads"] for rec in there.values()} == {ex._cores()}  # one worker on this host


def test_unreachable_scheduler_is_a_clear_error_and_writes_nothing(tmp_path):
    pytest.importorskip("distributed")
    root = tmp_path / "study"
    (tmp_path / "log").mkdir()
    with pytest.raises(ConnectionError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1 within 2 s"):
        execute(study(root, tmp_path / "log"), scheduler="tcp://127.0.0.1:1", connect_timeout=2)
    assert not root.exists() and calls(tmp_path / "log") == []


def _resumable_units(root, log, steps=5, stop_after=None, scale=1):
    return [Unit(("count", "m", 0), _units.resumable, unit_folder(root, ("count", "m", 0)),
                 args=(steps, str(log)), kwargs={"stop_after": stop_after},
                 config_hash=config_hash({"steps": steps, "scale": scale}))]


def test_a_unit_killed_mid_way_continues_from_its_checkpoint(dirs):
    root, log = dirs
    with pytest.raises(UnitError, match="stopped after step 2"):
        execute(_resumable_units(root, log, stop_after=2), log=None)
    folder = root / "count+m+0"
    assert not (folder / "unit.json").exists()
    assert len(list((folder / ex.CHECKPOINT_DIR).glob("*/state.json"))) == 1  # kept for the next attempt
    results = execute(_resumable_units(root, log), log=None)
    # the second attempt did steps 2, 3, 4 only, and its record says where it resumed
    assert calls(log) == sorted(f"step m 0 {i}" for i in (0, 1, 2, 3, 4))
    record = json.loads((folder / "unit.json").read_text())
    assert record["resumed_from"] == "step 2" and results[("count", "m", 0)]["ran"]
    assert not (folder / ex.CHECKPOINT_DIR).exists()  # gone once the unit finished
    assert json.loads((folder / "count.json").read_text()) == {"steps": 5}


def test_a_checkpoint_of_another_configuration_is_not_resumed(dirs):
    root, log = dirs
    with pytest.raises(UnitError):
        execute(_resumable_units(root, log, stop_after=2), log=None)
    (log / "calls.log").unlink()
    # the configuration changed (same key, other hash): its units start afresh
    execute(_resumable_units(root, log, scale=2), log=None)
    assert calls(log) == sorted(f"step m 0 {i}" for i in range(5))
    record = json.loads((root / "count+m+0" / "unit.json").read_text())
    assert "resumed_from" not in record
    assert not (root / "count+m+0" / ex.CHECKPOINT_DIR).exists()


def test_a_unit_that_starts_afresh_has_no_resumed_from(dirs):
    root, log = dirs
    execute(_resumable_units(root, log), log=None)
    record = json.loads((root / "count+m+0" / "unit.json").read_text())
    assert "resumed_from" not in record and calls(log) == sorted(f"step m 0 {i}" for i in range(5))


@pytest.mark.parametrize("saturation", [None, 1.0])
def test_on_workers_a_ready_analysis_goes_before_later_training(tmp_path, saturation):
    """Dask runs ready units in the in-process order: the analysis of a model comes before the
    training of the later ones (without priorities Dask would run every training first). Also
    under a scheduler configured to queue tasks (``worker-saturation`` 1.0; the default is 1.1)."""
    pytest.importorskip("distributed")
    import dask

    config = {} if saturation is None else {"distributed.scheduler.worker-saturation": saturation}
    log = tmp_path / "log"
    log.mkdir()
    units = []
    for i in range(5):
        units.append(Unit(("train", i), _units.step, unit_folder(tmp_path / "s", ("train", i)),
                          args=(str(log), 1.0)))
        units.append(Unit(("analyze", i), _units.step, unit_folder(tmp_path / "s", ("analyze", i)),
                          args=(str(log),), deps=[("train", i)]))
    with dask.config.set(config):  # read by the local cluster's scheduler, in this process
        execute(units, workers=1, threads_per_worker=1, log=None)
    ran = (log / "calls.log").read_text().splitlines()
    assert sorted(ran) == sorted(f"step {k} {i}" for k in ("train", "analyze") for i in range(5))
    # One worker. When training i finishes, the worker starts the next unit it holds (training
    # i+1) while the scheduler releases analysis i (milliseconds, the units take a second): that
    # analysis then outranks every later training. So analysis i starts before training i+2.
    # (Submitting units only once their inputs finished, through this process, ran trainings 0-2
    # before analysis 0; with the units as one Dask task group, which Dask queues as "root-ish"
    # when queuing is on, training 1 ran last.)
    for i in range(3):
        assert ran.index(f"step analyze {i}") < ran.index(f"step train {i + 2}"), ran
