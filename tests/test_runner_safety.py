"""The experiment runner refuses early and says what it does: resume checks, output folder
checks, validation before any write, stale temporaries, the folder lock, required tables, the
skipped readout, strict data_dir, impossible fit windows and the spectrum's cliff."""

import errno
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from _datahelpers import MNIST_NAMES, write_idx_dataset
from bioreps import _files, cli, data, io
from bioreps.studies import run as experiments
from bioreps.analysis import spectrum as S
from bioreps.data import DatasetNotFoundError
from bioreps.studies.run import ConfigError, FolderLockedError, OutputError

QUIET = dict(progress=False, log=lambda *a: None)

HEBBIAN = """
[experiment]
name = "safety"
seed = {seed}
output = "{out}"
description = "{description}"
[data]
dataset = "fashion-mnist"
n_train = {n_train}
n_test = 50
[model]
kind = "hebbian-wta"
n_units = {n_units}
k = 2
batch_size = 50
lr = {lr}
epochs = 2
backend = "cpu"
power = {power}
[readout]
epochs = {readout_epochs}
[export]
receptive_fields = 0
[train]
checkpoint_every = {every}
"""
HEBB_DEFAULTS = dict(seed=0, description="first", n_train=200, n_units=20, lr=0.04, power=4.5, readout_epochs=1,
                     every=1)


def _hebbian(tmp_path, **changes):
    text = HEBBIAN.format(out=tmp_path / "out", **{**HEBB_DEFAULTS, **changes})
    (tmp_path / "exp.toml").write_text(text)
    return experiments.load_config(tmp_path / "exp.toml")


def _pixels(out, **tables):
    cfg = {"experiment": {"name": "px", "output": str(out)},
           "data": {"dataset": "fashion-mnist", "n_train": 200, "n_test": 50},
           "model": {"kind": "pixels"},
           "readout": {"epochs": 1}, "export": {"receptive_fields": 0}}
    for table, values in tables.items():
        cfg[table] = {**cfg.get(table, {}), **values}
    return cfg


@pytest.fixture
def no_data_load(monkeypatch):
    """Fail the test if the runner loads any data."""
    def forbidden(*args, **kwargs):
        raise AssertionError("data were loaded before the check that should have stopped the run")
    monkeypatch.setattr(data, "load", forbidden)


# --- 2. resume checks the configuration against the checkpoint -------------------------------

def test_resume_refuses_a_changed_model_and_names_the_keys(tmp_path, fashion_mnist_available):
    experiments.run(_hebbian(tmp_path), **QUIET)
    before = (tmp_path / "out" / "model.h5").read_bytes()
    with pytest.raises(ConfigError, match=r"cannot resume .*\[model\] n_units \(checkpoint 20, now 15\)"
                                          r".*\[model\] lr \(checkpoint 0.04, now 0.02\)"):
        experiments.run(_hebbian(tmp_path, n_units=15, lr=0.02), resume=True, **QUIET)
    with pytest.raises(ConfigError, match=r"\[data\] n_train \(checkpoint 200, now 150\)"):
        experiments.run(_hebbian(tmp_path, n_train=150), resume=True, **QUIET)
    with pytest.raises(ConfigError, match=r"\[experiment\] seed \(checkpoint 0, now 1\)"):
        experiments.run(_hebbian(tmp_path, seed=1), resume=True, **QUIET)
    assert (tmp_path / "out" / "model.h5").read_bytes() == before  # nothing was rewritten
    # keys that act after training or not on the result may change
    res = experiments.run(_hebbian(tmp_path, description="second", power=2.0, readout_epochs=2, every=2),
                          resume=True, **QUIET)
    with io.load(tmp_path / "out" / "model.h5") as f:
        assert f.provenance["config"]["model"]["power"] == 2.0
        assert f.model.hyperparameters["n_units"] == 20 and res["epochs"] == 2


def test_resume_from_a_checkpoint_without_run_config_compares_the_model(tmp_path, fashion_mnist_available):
    from bioreps.layers import HebbianWTA

    cfg = _hebbian(tmp_path)
    X, _ = data.load("fashion-mnist", "test")
    (tmp_path / "out").mkdir()
    HebbianWTA(n_units=12, k=2, batch_size=50, random_state=0, backend="cpu").fit(X[:100], epochs=1).save(
        tmp_path / "out" / "checkpoint.h5")
    lines = []
    with pytest.raises(ConfigError, match=r"\[model\] n_units \(checkpoint 12, now 20\)"):
        experiments.run(cfg, resume=True, progress=False, log=lines.append)
    assert any("records no run configuration" in line for line in lines)


# --- 3. errors before the work, no files left behind -----------------------------------------

def test_unwritable_output_is_refused_before_loading_data(tmp_path, no_data_load):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(OutputError, match=r"\[experiment\] output .*afile/out.*cannot write there \(Not a directory\)"):
        experiments.run(_pixels(tmp_path / "afile" / "out"), **QUIET)


def test_write_probe_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, no_data_load):
    # root ignores permission bits, so make the probe itself fail as on a read-only file system
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(_files.tempfile, "mkstemp", read_only)
    out = tmp_path / "new" / "out"
    with pytest.raises(OutputError, match=r"cannot write there \(cannot write in the folder .*: Read-only file system\)"):
        experiments.run(_pixels(out), **QUIET)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("model, match", [
    ({"kind": "hebbian-wta", "lr": -1.0}, r"\[model\] lr: lr must be > 0, got -1.0"),
    ({"kind": "hebbian-wta", "n_units": 3, "k": 5}, r"\[model\] k: k=5 is larger than n_units=3"),
    ({"kind": "random-relu", "n_units": 0}, r"\[model\] n_units: n_units must be >= 1"),
    ({"kind": "spiking-wta", "dt_ms": -0.5}, r"\[model\] dt_ms: dt_ms must be a finite number > 0"),
    ({"kind": "soft-wta", "epochs": 0}, r"\[model\] epochs must be >= 1, got 0"),
])
def test_bad_values_name_table_and_key_before_anything_is_written(tmp_path, no_data_load, model, match):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=match):
        experiments.run(_pixels(out, model=model), **QUIET)
    assert not out.exists()


def test_a_failed_run_removes_the_folders_it_created(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs" / "deep" / "out"
    with pytest.raises(DatasetNotFoundError, match="does not hold dataset 'fashion-mnist'"):
        experiments.run(_pixels(out, data={"data_dir": str(empty)}), **QUIET)
    assert not (tmp_path / "runs").exists()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, fashion_mnist_available):
    out = tmp_path / "out"
    out.mkdir()
    host = _files._host()
    stale = [out / f".model.h5.tmp-{host}-{_dead_pid()}-0a1b2c3d",
             out / f".results.json.tmp-{host}-{_dead_pid()}-00ff00ff"]
    kept = [out / f".model.h5.tmp-{host}-{os.getpid()}-deadbeef",      # a live writer (this process)
            out / f".model.h5.tmp-otherhost-{_dead_pid()}-12345678",  # another host: cannot tell
            out / ".model.h5.tmp-legacy"]                             # a name we do not know
    for p in stale + kept:
        p.write_bytes(b"x" * 100)
    lines = []
    experiments.run(_pixels(out), progress=False, log=lines.append)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert sum("left by a run that was killed" in line for line in lines) == 2
    # the HDF5 writer also cleans its own target (layer checkpoints, io.save)
    orphan = tmp_path / f".m.h5.tmp-{host}-{_dead_pid()}-abcdef01"
    orphan.write_bytes(b"x")
    with io.Writer(tmp_path / "m.h5") as w:
        w.write_model("pixels")
    assert not orphan.exists() and (tmp_path / "m.h5").exists()


PIXELS = """
[experiment]
name = "killed"
output = "{out}"
[data]
dataset = "fashion-mnist"
n_train = 200
n_test = 50
[model]
kind = "pixels"
[readout]
epochs = 1
[export]
receptive_fields = 0
block_rows = 100
"""
KILLED_EXPORT = r"""
import os, secrets, sys
from pathlib import Path
from bioreps import _files, io
from bioreps.studies import run as experiments

real = io.RepresentationWriter.write_rows

def write_rows(self, start, block):  # the first block of the export written, then wait to be killed
    real(self, start, block)
    print("mid-export", flush=True)
    sys.stdin.read()

io.RepresentationWriter.write_rows = write_rows
if sys.argv[2] == "nested":  # name temporaries as bioreps did before: a temporary of a temporary
    _files.temp_path = lambda path, suffix="": Path(path).with_name(
        f".{Path(path).name}.tmp-{_files._host()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
experiments.run(sys.argv[1], progress=False, log=lambda *a: None)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="no SIGKILL on this platform")
@pytest.mark.parametrize("naming", ["current", "nested"])
def test_a_run_killed_mid_export_leaves_a_temporary_the_next_run_removes(tmp_path, fashion_mnist_available, naming):
    """SIGKILL while model.h5 is being exported (into its temporary, which the HDF5 writer writes
    through a temporary of its own): the next run removes what the dead run left, nested names
    of an older bioreps included, and completes."""
    import signal

    out = tmp_path / "out"
    (tmp_path / "exp.toml").write_text(PIXELS.format(out=out))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "exp.toml"), naming],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the export is under way (or the run died)
        assert line.strip() == "mid-export", proc.stderr.read() if proc.poll() is not None else line
        temps = sorted(p.name for p in out.iterdir() if ".tmp-" in p.name)
        assert temps and all(f"-{proc.pid}-" in t and _files.temp_target(t) == "model.h5" for t in temps), temps
        if naming == "current":  # no temporary of a temporary
            assert all(t.startswith(".model.h5.tmp-") and t.count(".tmp-") == 1 for t in temps), temps
        else:
            assert any(t.startswith("..model.h5.tmp-") for t in temps), temps
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # reaped: its pid no longer exists
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.h5").exists() and any(".tmp-" in p.name for p in out.iterdir())
    lines = []
    results = experiments.run(experiments.load_config(tmp_path / "exp.toml"), progress=False, log=lines.append)
    assert sorted(p.name for p in out.iterdir() if ".tmp-" in p.name) == []
    assert any("left by a run that was killed" in line for line in lines)
    with io.load(out / "model.h5") as f:
        assert f.representations["train"].to_numpy().shape == (200, 784)
        assert f.representations["test"].to_numpy().shape == (50, 784) and f.readout is not None
    assert json.loads((out / "results.json").read_text())["readout_test_accuracy"] == results["readout_test_accuracy"]


HOLDER = """
import sys
from bioreps._files import FolderLock
lock = FolderLock(sys.argv[1], config="first.toml").acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, fashion_mnist_available):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError,
                           match=rf"in use by another bioreps run \(pid {holder.pid} on .*, started 20.*config first.toml\)"):
            experiments.run(_pixels(out), **QUIET)
        assert not (out / "results.json").exists()
    finally:
        holder.kill()  # SIGKILL: the system releases the lock of a dead process
        holder.wait()
    experiments.run(_pixels(out), **QUIET)
    assert (out / "results.json").exists() and not (out / _files.LOCK_NAME).exists()


def test_the_lock_is_held_for_the_whole_run(tmp_path, monkeypatch, fashion_mnist_available):
    from bioreps.layers import Pixels

    out = tmp_path / "out"
    seen = []
    original = Pixels.fit

    def fit_and_try_the_lock(self, X, y=None):
        with pytest.raises(FolderLockedError, match=rf"pid {os.getpid()} .*config <config>"):
            _files.FolderLock(out).acquire()
        seen.append(True)
        return original(self, X, y)

    monkeypatch.setattr(Pixels, "fit", fit_and_try_the_lock)
    experiments.run(_pixels(out), **QUIET)
    assert seen == [True]


# --- 4. no silent defaults or skips ------------------------------------------------------------

@pytest.mark.parametrize("drop, match", [
    ("model", r"the \[model\] table is required"),
    ("data", r"the \[data\] table is required"),
])
def test_model_and_data_tables_are_required(tmp_path, drop, match):
    cfg = _pixels(tmp_path / "out")
    del cfg[drop]
    with pytest.raises(ConfigError, match=match):
        experiments.validate_config(cfg)


@pytest.mark.parametrize("table, match", [
    ({"model": {"n_units": 3}}, r"\[model\] kind is required"),
    ({"data": {"n_train": 3}}, r"\[data\] dataset is required"),
])
def test_model_kind_and_dataset_are_required(table, match):
    cfg = {"experiment": {"name": "x"}, "data": {"dataset": "mnist"}, "model": {"kind": "pixels"}, **table}
    with pytest.raises(ConfigError, match=match):
        experiments.validate_config(cfg)


def test_a_skipped_readout_is_said(tmp_path, fashion_mnist_available):
    lines = []
    results = experiments.run(_pixels(tmp_path / "out", export={"splits": ["test"]}), progress=False,
                              log=lines.append)
    why = "skipped: no train split exported ([export] splits)"
    assert results["readout"] == why and "readout_test_accuracy" not in results
    assert json.loads((tmp_path / "out" / "results.json").read_text())["readout"] == why
    assert f"| readout | {why} |" in (tmp_path / "out" / "report.md").read_text()
    assert f"readout: {why}" in lines


def test_an_explicit_data_dir_without_the_dataset_is_an_error(tmp_path, monkeypatch):
    # a complete copy elsewhere ($BIOREPS_DATA) is not used in place of the folder asked for
    write_idx_dataset(tmp_path / "elsewhere" / "fashion-mnist")
    monkeypatch.setenv("BIOREPS_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [])
    assert data.load("fashion-mnist", "test")[0].shape == (6, 784)
    mine = tmp_path / "mine"
    write_idx_dataset(mine, splits=("test",))          # incomplete: no train split
    assert data.load("fashion-mnist", "test", data_dir=mine)[0].shape == (6, 784)
    img, lbl = MNIST_NAMES["train"]
    with pytest.raises(DatasetNotFoundError, match=rf"data_dir '{mine}' does not hold dataset 'fashion-mnist' "
                                                    rf"\(split 'train'\):\n  - {mine}: missing {img}, {lbl}\n"
                                                    rf"  - {mine}/fashion-mnist: no such folder"):
        data.load("fashion-mnist", "train", data_dir=mine)
    with pytest.raises(DatasetNotFoundError, match=rf"data_dir '{tmp_path / 'typo'}' does not hold"):
        data.fingerprint("fashion-mnist", "test", data_dir=tmp_path / "typo")


# --- analyze: impossible windows, the cliff ----------------------------------------------------

def _rep_file(path, n_units=40, n_samples=200):
    rng = np.random.default_rng(0)
    R = (rng.standard_normal((n_samples, n_units)) * np.arange(1, n_units + 1) ** -0.5).astype(np.float32)
    io.save(path, model_kind="pixels", representations={"test": {"activations": R}})
    return path


@pytest.mark.parametrize("ranks, match", [
    (("500", "11"), r"--ranks 500 11: ranks \(500, 11\): the first rank must be below the last"),
    (("0", "10"), r"--ranks 0 10: ranks are 1-based"),
    (("45", "60"), r"--ranks 45 60 does not fit the spectrum of .*r.h5 \[test, 40 units\]: too few ranks"),
])
def test_analyze_refuses_impossible_windows_before_writing(tmp_path, capsys, ranks, match):
    f = _rep_file(tmp_path / "r.h5")
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(f), "--out", str(out), "--no-plots"]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(["analyze", str(f), "--out", str(out), "--ranks", *ranks]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioreps analyze: error: ")
    import re
    assert re.search(match, err), err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # nothing overwritten or added


def _cliffed(kind):
    n = np.arange(1, 401, dtype=np.float64)
    eigs = 2.0 * n ** -1.0
    if kind == "step":         # numerical zeros / dead units: a drop of 9 decades after rank 300
        eigs[300:] *= 1e-9
    else:                      # a bend: exponent 15 past rank 250 (the quickstart's tail: 4..40 past ~250)
        eigs[250:] = eigs[249] * (n[250:] / 250.0) ** -15.0
    return eigs


def test_the_fit_window_ends_at_the_cliff_with_a_warning():
    eigs = _cliffed("step")
    assert S.find_cliff(eigs, 11) == 300
    with pytest.warns(S.SpectrumFitWarning, match=r"window \[11, 398\] was cut to \[11, 300\].*falls 1e\+09x"):
        fit = S.powerlaw_alpha(eigs)
    assert fit.ranks == (11, 300) and fit.cliff == 300 and fit.alpha == pytest.approx(1.0, abs=1e-8)
    bend = _cliffed("bend")
    with pytest.warns(S.SpectrumFitWarning, match=r"cut to \[11, 2[5-7]\d\].*local exponent"):
        fit = S.powerlaw_alpha(bend)
    assert 250 <= fit.cliff <= 280 and fit.alpha == pytest.approx(1.0, abs=0.02)
    with pytest.warns(S.SpectrumFitWarning, match=r"poor: residual"):  # without the cut: a bad fit, said
        uncut = S.powerlaw_alpha(bend, cliff=False)
    assert uncut.ranks == (11, 398) and uncut.alpha > 1.5 and uncut.cliff is None
    # the nassar convention is cut at the same place
    with pytest.warns(S.SpectrumFitWarning, match=r"cut to \[10, 300\]"):
        assert S.powerlaw_alpha(eigs, method="nassar").ranks == (10, 300)


def test_directions_without_variance_end_the_window():
    """Dead units (or fewer samples than units) give zero, or numerically slightly negative,
    eigenvalues: the window ends before them (a study of a small ReLU net hit this)."""
    eigs = np.arange(1, 31.0) ** -1.0
    eigs[25:] = [0.0, -1e-17, 0.0, -3e-18, 0.0]
    assert S.find_cliff(eigs, 11) == 25
    with pytest.warns(S.SpectrumFitWarning, match=r"cut to \[11, 25\].*rank 26 has no variance"):
        fit = S.powerlaw_alpha(eigs)
    assert fit.ranks == (11, 25) and fit.alpha == pytest.approx(1.0, abs=1e-8)
    with pytest.raises(ValueError, match=r"non-positive values at ranks \[26, 27, 28\] inside the fit window \[11, 28\]"):
        S.powerlaw_alpha(eigs, cliff=False)  # asked not to cut: refused, naming the ranks


def test_no_cliff_on_power_laws_and_sample_spectra(rng):
    for alpha in (0.5, 1.0, 2.0, 3.0):
        assert S.find_cliff(np.arange(1, 1001.0) ** -alpha, 1) is None
    noisy = np.sort(np.arange(1, 701.0) ** -1.1 * np.exp(0.2 * rng.standard_normal(700)))[::-1]
    assert S.find_cliff(noisy, 11, 500) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", S.SpectrumFitWarning)
        S.powerlaw_alpha(np.arange(1, 1001.0) ** -1.0)


def test_the_spectrum_plot_marks_the_cliff(tmp_path):
    eigs = _cliffed("step")
    with pytest.warns(S.SpectrumFitWarning):
        fit = S.powerlaw_alpha(eigs)
    fig = S.plot_spectrum(eigs, fit=fit, path=tmp_path / "s.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "fit window 11..300" in labels and "cliff after rank 300" in labels


# --- a study's output folder: one line naming it, as the single experiment's ------------------

STUDY = """
[study]
name = "s"
seeds = [0]
output = "{out}"
[data]
dataset = "fashion-mnist"
[[models]]
name = "p"
kind = "pixels"
"""


def _mkdir_denied(self, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", str(self))


@pytest.mark.parametrize("blocked, reason", [("file", "Not a directory"), ("mkdir", "Permission denied")])
def test_a_study_into_an_unwritable_output_says_so_in_one_line(tmp_path, monkeypatch, capsys, no_data_load,
                                                                blocked, reason):
    from pathlib import Path

    from bioreps.studies.study import run_study

    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "out" if blocked == "file" else tmp_path / "new" / "out"
    if blocked == "mkdir":  # as root, permission bits stop nothing: the refusal itself, as a user gets it
        monkeypatch.setattr(Path, "mkdir", _mkdir_denied)
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(out=out))
    with pytest.raises(OutputError, match=rf"^study\.output '{re.escape(str(out))}': cannot write there \({reason}\)$"):
        run_study(study, log=lambda *a: None)
    assert cli.main(["run", str(study), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"bioreps run: error: study.output '{out}': cannot write there ({reason})\n"


def test_a_study_whose_write_probe_fails_says_so_and_leaves_nothing(tmp_path, monkeypatch, no_data_load):
    from bioreps.studies.study import run_study

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(_files.tempfile, "mkstemp", read_only)
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(out=tmp_path / "unused"))
    out = tmp_path / "new" / "out"
    with pytest.raises(OutputError, match=r"^the study's output folder '.*new/out': cannot write there "
                                          r"\(cannot write in the folder .*: Read-only file system\)$"):
        run_study(study, output=out, log=lambda *a: None)
    assert not (tmp_path / "new").exists() and not (tmp_path / "unused").exists()
