"""Experiment configs: strict validation, and a real end-to-end run on Fashion-MNIST."""

import json
from pathlib import Path

import numpy as np
import pytest

from bioreps import io
from bioreps.studies import kinds
from bioreps.studies import run as experiments
from bioreps.studies.run import ConfigError

import _float32

# the shipped studies, found from this file (pytest may run from any folder)
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _write(tmp_path, text):
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_quickstart_study_is_valid():
    """The README's main command runs experiments/quickstart.toml: a study of a Hebbian layer, a
    backprop MLP of the same width and the pixels control."""
    from bioreps.studies.study import load_study

    cfg = load_study(EXPERIMENTS / "quickstart.toml")
    kinds_ = {m["name"]: m["kind"] for m in cfg["models"]}
    assert kinds_ == {"hebbian": "hebbian-wta", "mlp": "mlp", "pixels": "pixels"}
    hebb, mlp = cfg["models"][0], cfg["models"][1]
    assert mlp["sizes"][1] == hebb["n_units"]  # the same width
    assert cfg["study"]["output"].endswith("quickstart")
    with pytest.raises(experiments.ConfigError, match="is a study"):
        experiments.load_config(EXPERIMENTS / "quickstart.toml")


def test_single_model_quickstart_config_is_valid():
    cfg = experiments.load_config(EXPERIMENTS / "hebbian_quickstart.toml")
    assert cfg["model"]["kind"] == "hebbian-wta" and cfg["model"]["center"] is True
    assert cfg["experiment"]["output"].endswith("hebbian_quickstart")


@pytest.mark.parametrize("text, message", [
    ('[experiment]\nname="x"\n[modle]\nkind="pixels"\n', "unknown table"),
    ('[experiment]\nname="x"\nsede=1\n', "unknown key 'sede' in \\[experiment\\]"),
    ('[experiment]\nname="x"\n[model]\nkind="hopfield"\n', "kind = 'hopfield' is unknown"),
    ('[experiment]\nname="x"\n[model]\nkind="pixels"\nn_units=3\n', "unknown key 'n_units' in \\[model\\]"),
    ('[experiment]\nname="x"\n[model]\nkind="random-relu"\nn_units="many"\n', "n_units must be int"),
    ('[experiment]\nname="x"\n[data]\nn_train=0\n', "n_train must be >= 1"),
    ('[experiment]\nname="x"\n[export]\nsplits=["val"]\n', "splits must be"),
    ('[experiment]\nseed=1\n', "name is required"),
    ('[experiment\nname="x"\n', "not valid TOML"),
])
def test_bad_configs_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        experiments.load_config(_write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        experiments.load_config(tmp_path / "nope.toml")


@pytest.mark.slow  # end to end: real Fashion-MNIST through the whole pipeline
def test_run_end_to_end_on_fashion_mnist(tmp_path, fashion_mnist_available):
    cfg = experiments.load_config(_write(tmp_path, f"""
[experiment]
name = "tiny"
seed = 3
output = "{tmp_path / 'out'}"
[data]
dataset = "fashion-mnist"
n_train = 2000
n_test = 500
[model]
kind = "random-relu"
n_units = 256
power = 1.0
[readout]
epochs = 10
lr = 0.01
[export]
block_rows = 300
"""))
    results = experiments.run(cfg, progress=False, log=lambda *a: None)
    assert results["n_train"] == 2000 and results["n_test"] == 500
    assert 0.7 < results["readout_test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk == results
    with io.load(tmp_path / "out" / "model.h5") as f:
        assert f.model.kind == "random-relu"
        assert f.model.arrays["weights"].shape == (256, 784)
        test = f.representations["test"]
        assert test.shape == (500, 256)
        assert f.provenance["seed"] == 3 and f.provenance["config"]["model"]["n_units"] == 256
        # the exported rows are the layer's transform of the indexed dataset rows
        from bioreps import data
        from bioreps.layers import RandomReLU
        X, y = data.load("fashion-mnist", "test")
        idx = test.inputs_index
        np.testing.assert_array_equal(test.labels, y[idx])
        layer = RandomReLU(n_units=256, power=f.model.hyperparameters["power"])
        layer.weights_, layer.n_features_in_, layer.n_units_ = f.model.arrays["weights"], 784, 256
        # exported in blocks of 300 rows, compared with a transform of 50: the float32 products
        # may sum in another order (BLAS blocking depends on the row count), so they agree within
        # the float32 rounding bound, not to a relative tolerance (see _float32)
        _float32.assert_relu_power_close(test.read(0, 50), layer.transform(X[idx[:50]]), X[idx[:50]],
                                         layer.weights_, layer.power)
    # same seed, same result
    again = experiments.run(dict(cfg, experiment=dict(cfg["experiment"], output=str(tmp_path / "again"))),
                            progress=False, log=lambda *a: None)
    assert again["readout_test_accuracy"] == results["readout_test_accuracy"]


HEBBIAN_TOML = """
[experiment]
name = "hebb"
seed = 5
output = "{out}"
[data]
dataset = "fashion-mnist"
n_train = 1500
n_test = 300
[model]
kind = "hebbian-wta"
n_units = 40
k = 2
batch_size = 50
lr = 0.04
epochs = 4
backend = "cpu"
power = 4.5
[readout]
epochs = 2
[export]
receptive_fields = 16
[train]
checkpoint_every = 1
"""


@pytest.mark.slow  # end to end: real Fashion-MNIST through the whole pipeline
def test_hebbian_train_interrupted_and_resumed_equals_uninterrupted(tmp_path, fashion_mnist_available, monkeypatch):
    from bioreps.layers import HebbianWTA

    quiet = dict(progress=False, log=lambda *a: None)
    whole = experiments.run(experiments.load_config(_write(tmp_path, HEBBIAN_TOML.format(out=tmp_path / "a"))), **quiet)
    assert whole["epochs"] == 4 and (tmp_path / "a" / "receptive_fields.png").stat().st_size > 1000

    cfg = experiments.load_config(_write(tmp_path, HEBBIAN_TOML.format(out=tmp_path / "b")))
    original = HebbianWTA._diagnostics

    def crash_at_epoch_3(self, V):
        if self.epochs_done_ == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(self, V)

    monkeypatch.setattr(HebbianWTA, "_diagnostics", crash_at_epoch_3)
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        experiments.run(cfg, **quiet)
    monkeypatch.setattr(HebbianWTA, "_diagnostics", original)
    assert not (tmp_path / "b" / "model.h5").exists()
    assert HebbianWTA.load(tmp_path / "b" / "checkpoint.h5").epochs_done_ == 2
    resumed = experiments.run(cfg, resume=True, **quiet)
    with io.load(tmp_path / "a" / "model.h5") as fa, io.load(tmp_path / "b" / "model.h5") as fb:
        np.testing.assert_array_equal(fa.model.arrays["weights"], fb.model.arrays["weights"])
        np.testing.assert_array_equal(fa.representations["test"].read(), fb.representations["test"].read())
    assert resumed["readout_test_accuracy"] == whole["readout_test_accuracy"]


def test_resume_without_checkpoint_is_refused(tmp_path, fashion_mnist_available):
    cfg = experiments.load_config(_write(tmp_path, HEBBIAN_TOML.format(out=tmp_path / "c")))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        experiments.run(cfg, resume=True, progress=False, log=lambda *a: None)


@pytest.mark.parametrize("name", ["hebbian_quickstart", "hebbian_fmnist", "softhebb_fmnist", "spiking_fmnist"])
def test_shipped_experiments_are_valid(name):
    cfg = experiments.load_config(EXPERIMENTS / f"{name}.toml")
    assert cfg["model"]["kind"] in kinds.names() and cfg["model"]["epochs"] >= 1


@pytest.mark.slow  # end to end: real Fashion-MNIST through the whole pipeline
def test_spiking_experiment_runs_with_vote_and_receptive_fields(tmp_path, fashion_mnist_available):
    cfg = experiments.load_config(_write(tmp_path, f"""
[experiment]
name = "snn"
seed = 1
output = "{tmp_path / 's'}"
[data]
dataset = "fashion-mnist"
n_train = 60
n_test = 30
[model]
kind = "spiking-wta"
n_neurons = 12
t_present_ms = 100.0
t_rest_ms = 50.0
epochs = 1
[model.params]
theta_plus_mv = 0.1
[readout]
epochs = 2
[export]
block_rows = 7
receptive_fields = 12
"""))
    results = experiments.run(cfg, progress=False, log=lambda *a: None)
    assert 0.0 <= results["vote_test_accuracy"] <= 1.0 and "readout_test_accuracy" in results
    assert (tmp_path / "s" / "receptive_fields.png").exists()
    with io.load(tmp_path / "s" / "model.h5") as f:
        assert f.model.kind == "spiking-wta" and f.model.arrays["weights"].shape == (784, 12)
        assert f.model.hyperparameters["params"]["theta_plus_mv"] == 0.1
        counts = f.representations["test"].read()
        # exported in blocks of 7, yet equal to one transform call (per-sample seeds)
        from bioreps.layers import SpikingWTA
        from bioreps import data
        layer = SpikingWTA.load(tmp_path / "s" / "model.h5")
        Xt, _ = data.load("fashion-mnist", "test")
        np.testing.assert_array_equal(counts, layer.transform(Xt[f.representations["test"].inputs_index]))
    bad = dict(cfg, model=dict(cfg["model"], params={"tau_nonsense_ms": 1.0}))
    with pytest.raises(ValueError, match=r"unknown DiehlCookParams fields: \['tau_nonsense_ms'\]"):
        experiments.run(bad, progress=False, log=lambda *a: None)


SPIKING_RESUME_TOML = """
[experiment]
name = "snn-resume"
seed = 2
output = "{out}"
[data]
dataset = "fashion-mnist"
n_train = 24
n_test = 10
[model]
kind = "spiking-wta"
n_neurons = 6
t_present_ms = 40.0
t_rest_ms = 20.0
epochs = 2
backend = "cpu"
encoding = "on-off"
[model.params]
weight_sum = 156.8
input_sum = 150.0
[readout]
epochs = 2
[export]
receptive_fields = 0
[train]
checkpoint_every_samples = 10
"""


@pytest.mark.slow  # end to end: real Fashion-MNIST through the whole pipeline
def test_spiking_train_interrupted_and_resumed_equals_uninterrupted(tmp_path, fashion_mnist_available, monkeypatch):
    """`bioreps train --resume` of a spiking study ends with the weights, thresholds and spike
    counts of an uninterrupted run (checkpoints by samples, mid-epoch)."""
    from bioreps.layers import SpikingWTA

    quiet = dict(progress=False, log=lambda *a: None)
    whole = experiments.run(experiments.load_config(_write(tmp_path, SPIKING_RESUME_TOML.format(out=tmp_path / "a"))),
                            **quiet)
    cfg = experiments.load_config(_write(tmp_path, SPIKING_RESUME_TOML.format(out=tmp_path / "b")))
    original = SpikingWTA._present_rows

    def crash_after_30(self, X, *args, **kwargs):
        if self.n_samples_seen_ >= 30:
            raise KeyboardInterrupt("simulated crash")
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(SpikingWTA, "_present_rows", crash_after_30)
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        experiments.run(cfg, **quiet)
    monkeypatch.setattr(SpikingWTA, "_present_rows", original)
    assert not (tmp_path / "b" / "model.h5").exists()
    assert SpikingWTA.load(tmp_path / "b" / "checkpoint.h5").n_samples_seen_ == 30  # mid second epoch
    resumed = experiments.run(cfg, resume=True, **quiet)
    with io.load(tmp_path / "a" / "model.h5") as fa, io.load(tmp_path / "b" / "model.h5") as fb:
        np.testing.assert_array_equal(fa.model.arrays["weights"], fb.model.arrays["weights"])
        np.testing.assert_array_equal(fa.model.arrays["theta"], fb.model.arrays["theta"])
        np.testing.assert_array_equal(fa.model.arrays["input_mean"], fb.model.arrays["input_mean"])
        assert fa.model.arrays["weights"].shape == (2 * 784, 6)  # the ON/OFF encoding
        np.testing.assert_array_equal(fa.representations["test"].read(), fb.representations["test"].read())
    assert resumed["vote_test_accuracy"] == whole["vote_test_accuracy"]


def test_checkpoint_every_samples_is_for_spiking_only(tmp_path):
    cfg = experiments.load_config(_write(tmp_path, HEBBIAN_TOML.format(out=tmp_path / "h")
                                         + "checkpoint_every_samples = 5\n"))
    with pytest.raises(experiments.ConfigError, match="spiking"):
        experiments.run(cfg, progress=False, log=lambda *a: None)


def _fake_data(monkeypatch):
    """Small random data in place of Fashion-MNIST (labels 0..9), no files read."""
    from bioreps import data

    def load(name, split, data_dir=None):
        rng = np.random.default_rng(0 if split == "train" else 1)
        n = 60 if split == "train" else 20
        return rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)

    monkeypatch.setattr(data, "load", load)
    monkeypatch.setattr(data, "fingerprint", lambda *a, **k: "fake")


def _twelve_classes(monkeypatch):
    import dataclasses

    from bioreps import data

    real = data.spec
    monkeypatch.setattr(data, "spec", lambda name: dataclasses.replace(real(name), n_classes=12))


def test_readout_n_classes_comes_from_the_dataset_spec(tmp_path, monkeypatch):
    from bioreps.readout import LinearReadout

    _fake_data(monkeypatch)
    _twelve_classes(monkeypatch)
    seen, fit = [], LinearReadout.fit

    def recording_fit(self, X, y, *args, n_classes=None, **kw):
        seen.append(n_classes)
        return fit(self, X, y, *args, n_classes=n_classes, **kw)

    monkeypatch.setattr(LinearReadout, "fit", recording_fit)
    cfg = {"experiment": {"name": "px", "output": str(tmp_path / "o")},
           "data": {"dataset": "fashion-mnist"}, "model": {"kind": "random-relu", "n_units": 8},
           "readout": {"epochs": 1}, "export": {"receptive_fields": 0}}
    experiments.run(cfg, progress=False, log=lambda *a: None)
    assert seen == [12, 12]  # the layer's readout and the pixels control


def test_file_classifier_n_classes_comes_from_the_dataset_spec(tmp_path, monkeypatch):
    from bioreps.layers import HebbianWTA
    from bioreps.studies.report import file_classifier

    _twelve_classes(monkeypatch)
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 16)).astype(np.float32), rng.integers(0, 3, 40)
    layer = HebbianWTA(n_units=5, k=2, backend="cpu", random_state=0, progress=False).fit(X, epochs=1)
    layer.export(tmp_path / "h.h5", {"train": (X, y)}, dataset="fashion-mnist")
    module, _ = file_classifier(tmp_path / "h.h5", readout_epochs=1)
    import torch

    assert module(torch.from_numpy(X[:4])).shape == (4, 12)


def test_supervised_kind_refused_in_single_model_runner(tmp_path):
    raw = {"experiment": {"name": "b"}, "data": {"dataset": "fashion-mnist"},
           "model": {"kind": "mlp", "sizes": [784, 10, 10]}}
    with pytest.raises(ConfigError, match=r"^<config>: \[model\] kind = 'mlp' is a supervised baseline; "):
        experiments.validate_config(raw)
