"""The readout is part of the model: stored in the model's file (``/readout``, schema 1.2.0) by the
study and by ``bioreps run``, and used by every analysis instead of a retrained one."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bioreps import io
from bioreps.readout import LinearReadout
from bioreps.studies import run as experiments
from bioreps.studies.report import compare_files, file_classifier

from _xarray import open_named_tree

DATA = Path(__file__).resolve().parent / "data"


def _fake_data(monkeypatch):
    """Small random data in place of Fashion-MNIST (labels 0..9), no files read."""
    from bioreps import data

    def load(name, split, data_dir=None):
        rng = np.random.default_rng(0 if split == "train" else 1)
        n = 80 if split == "train" else 30
        return rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)

    monkeypatch.setattr(data, "load", load)
    monkeypatch.setattr(data, "fingerprint", lambda *a, **k: "fake")
    return load


def _fitted_readout(seed=1, epochs=2):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(120, 7)).astype(np.float32), rng.integers(0, 4, 120)
    return LinearReadout(epochs=epochs, lr=0.01, batch_size=32, random_state=seed, progress=False).fit(
        X, y, n_classes=5), X


# ------------------------------------------------------------------------------- round trip

def test_readout_arrays_round_trip_exactly_through_a_file(tmp_path):
    readout, X = _fitted_readout()
    arrays = readout.to_arrays()
    assert sorted(arrays) == ["coef", "intercept", "mean", "scale"]
    assert all(a.dtype == np.float32 for a in arrays.values())
    path = tmp_path / "m.h5"
    with io.Writer(path) as w:
        w.write_model("hebbian-wta", {"weights": np.ones((7, 3), np.float32)})
        w.write_representation("train", X)
        w.write_readout(arrays, readout.hyperparameters())
    with io.load(path) as f:
        assert f.schema_version == io.SCHEMA_VERSION == "1.4.0"
        stored = f.readout
    assert isinstance(stored, io.ReadoutRecord)
    assert stored.n_classes == 5 and stored.representation == "activations of /representations/*"
    assert stored.hyperparameters == {"epochs": 2, "lr": 0.01, "batch_size": 32, "weight_decay": 0.0,
                                      "standardize": True, "random_state": 1, "schedule": "constant"}
    back = LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)
    assert back.n_classes_ == 5 and back.epochs == 2 and back.lr == 0.01
    np.testing.assert_array_equal(back.decision_function(X), readout.decision_function(X))
    with h5py.File(path, "r") as h5:
        assert h5["readout"].attrs["encoding-type"] == "readout"
        assert h5["readout"].attrs["encoding-version"] == "1.1.0"


def test_inconsistent_readout_arrays_are_refused(tmp_path):
    readout, _ = _fitted_readout()
    arrays = readout.to_arrays()
    arrays["mean"] = arrays["mean"][:-1]
    with io.Writer(tmp_path / "m.h5") as w:
        w.write_model("hebbian-wta")
        with pytest.raises(ValueError, match=r"readout array 'mean' must have shape \(7,\) to match coef"):
            w.write_readout(arrays, readout.hyperparameters())


def test_add_readout_to_an_older_file_then_refuses_a_second_readout(tmp_path):
    import shutil

    path = tmp_path / "m.h5"
    shutil.copyfile(DATA / "bioreps-schema-1.1.0.h5", path)   # 4 units in its train split
    arrays = {"coef": np.ones((3, 4)), "intercept": np.zeros(3), "mean": np.zeros(4), "scale": np.ones(4)}
    io.add_readout(path, arrays, {"epochs": 1})
    with io.load(path) as f:
        assert f.schema_version == io.SCHEMA_VERSION   # raised to the newest (>= 1.2.0, the first with a /readout)
        assert f.readout.n_classes == 3 and f.readout.hyperparameters == {"epochs": 1}
        assert f.representations["train"].shape == (3, 4)
    with pytest.raises(ValueError, match=r"m\.h5 already holds a /readout"):
        io.add_readout(path, arrays, {"epochs": 1})


READOUT_DIMS = {"coef": ("class", "unit"), "intercept": ("class",), "mean": ("unit",), "scale": ("unit",)}


@pytest.mark.parametrize("how", ["write_readout", "add_readout"])
def test_readout_axes_are_named_class_and_unit_in_xarray_and_the_reader(tmp_path, how):
    """/readout carries dimension scales (schema 1.4.0): xarray sees coef as (class, unit), unit
    being the representation's columns, with no phony_dim; the reader skips the scales."""
    import shutil

    path = tmp_path / "m.h5"
    arrays = {"coef": np.arange(12).reshape(3, 4), "intercept": np.zeros(3), "mean": np.zeros(4),
              "scale": np.ones(4)}
    if how == "write_readout":
        with io.Writer(path) as w:
            w.write_model("hebbian-wta", {"weights": np.ones((4, 6), np.float32)}, dims={"unit": 4, "feature": 6})
            w.write_representation("train", np.ones((5, 4), np.float32))
            w.write_readout(arrays, {"epochs": 1})
    else:
        shutil.copyfile(DATA / "bioreps-schema-1.1.0.h5", path)   # scales everywhere but /readout
        io.add_readout(path, arrays, {"epochs": 1})
    with open_named_tree(path) as tree:
        readout = tree["readout"]
        assert {name: readout[name].dims for name in READOUT_DIMS} == READOUT_DIMS
        assert dict(readout.sizes) == {"class": 3, "unit": 4}
        assert readout.sizes["unit"] == tree["representations/train"].sizes["unit"]
        np.testing.assert_array_equal(readout["coef"].values, arrays["coef"])
    with io.load(path) as f:
        assert f.schema_version == io.SCHEMA_VERSION == "1.4.0"
        assert sorted(f.readout.arrays) == sorted(io.READOUT_ARRAYS)   # the scales are not arrays
        assert f.readout.dims == READOUT_DIMS
        assert "readout: linear, 4 features -> 3 classes" in f.summary()
    with h5py.File(path, "r") as h5:
        assert h5["readout"].attrs["encoding-version"] == "1.1.0"
        assert h5["readout/class"].attrs["encoding-type"] == "dimension"


# ------------------------------------------------------------------------------- frozen files

def test_frozen_1_1_0_file_reads_without_a_readout():
    with io.load(DATA / "bioreps-schema-1.1.0.h5") as f:
        assert f.schema_version == "1.1.0"
        assert f.readout is None
        assert f.representations["train"].shape == (3, 4)


def test_frozen_1_2_0_file_reads_its_readout():
    with io.load(DATA / "bioreps-schema-1.2.0.h5") as f:
        assert f.schema_version == "1.2.0"
        assert f.model.kind == "hebbian-wta" and f.model.dims["weights"] == ("unit", "feature")
        H = f.representations["train"].read()
        stored = f.readout
        assert "readout: linear, 4 features -> 3 classes" in f.summary()
    assert stored.dims == {}   # /readout dimension scales came with schema 1.4.0
    assert stored.n_classes == 3 and stored.representation == "activations of /representations/*"
    assert stored.hyperparameters["epochs"] == 20 and stored.hyperparameters["random_state"] == 7
    np.testing.assert_array_equal(stored.arrays["intercept"], np.array([0.125, -0.25, 0.5], np.float32))
    np.testing.assert_array_equal(stored.arrays["scale"], np.array([1.0, 0.5, 2.0, 1.5], np.float32))
    assert stored.arrays["coef"].shape == (3, 4) and stored.arrays["coef"][1, 1] == 2.0
    # row 0 = [0, .5, 1, 1.5]: standardised [-.5, .5, .25, 0]; logits by hand
    ro = LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)
    np.testing.assert_allclose(ro.decision_function(H[:1])[0], [-0.5 - 0.25 + 0.0625 + 0.125,
                                                                 1.0 - 0.25 - 0.25,
                                                                 0.75 + 0.1875 + 0.5], rtol=1e-6)


# sha256 of the frozen files as committed (tests/data/make_v1_3_file.py, make_v1_4_file.py): a
# mismatch means one was regenerated or damaged; they must not change
FROZEN_SHA256 = {
    "1.3.0": "ffcddee2930da66e31cfaf18e3e3b4138bab9aa61526f544f340fb787fcd1fa6",
    "1.4.0": "ef46bb659345a2e5e7fc6bfa027b7a1ab07e0b0274b6568944318f028b0fbda8",
}


@pytest.mark.parametrize("version", ["1.3.0", "1.4.0"])
def test_frozen_1_3_and_1_4_files_read_their_layers_and_readout(version):
    """Schema 1.3.0 (written by the bioreps of that schema): representations of a two-layer model
    with their ``layer``; 1.4.0: the same, its readout with dimension scales."""
    path = DATA / f"bioreps-schema-{version}.h5"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == FROZEN_SHA256[version], f"{path} changed"
    with io.load(path) as f:
        assert f.schema_version == version
        reps = f.representations
        assert (reps["test.layer0"].layer, reps["test"].layer) == (0, 1)
        assert reps["test.layer0"].shape == (3, 6) and reps["test"].shape == (3, 4)
        assert reps["test.layer0"].read()[2, 0] == 3.0 and reps["test"].read()[2, 3] == 3.75
        np.testing.assert_array_equal(reps["test"].labels, [2, 0, 1])
        stored = f.readout
    want = {} if version == "1.3.0" else READOUT_DIMS
    assert stored.dims == want
    assert sorted(stored.arrays) == ["coef", "intercept", "mean", "scale"]  # the scales are not arrays
    assert stored.n_classes == 3 and stored.arrays["coef"][1, 1] == 2.0


def test_every_schema_version_has_its_frozen_file():
    major, minor, _ = (int(x) for x in io.SCHEMA_VERSION.split("."))
    missing = [v for v in (f"{major}.{m}.0" for m in range(minor + 1))
               if not (DATA / f"bioreps-schema-{v}.h5").is_file()]
    assert not missing, f"no frozen file in tests/data for schema {missing} (see docs/hdf5-schema.md)"


def test_frozen_1_4_0_readout_has_named_dimensions_in_xarray():
    with open_named_tree(DATA / "bioreps-schema-1.4.0.h5") as tree:
        readout = tree["readout"]
        assert readout["coef"].dims == ("class", "unit") and readout["intercept"].dims == ("class",)
        assert dict(readout.sizes) == {"class": 3, "unit": 4}


# ------------------------------------------------------------------------------- runner, study, analyses

def _run_hebbian(tmp_path, name="hebb", epochs=3):
    cfg = {"experiment": {"name": name, "seed": 4, "output": str(tmp_path / name)},
           "data": {"dataset": "fashion-mnist"},
           "model": {"kind": "hebbian-wta", "n_units": 12, "k": 2, "epochs": 1, "backend": "cpu"},
           "readout": {"epochs": epochs, "lr": 0.01, "batch_size": 16, "pixels_control": False},
           "export": {"receptive_fields": 0}}
    results = experiments.run(cfg, progress=False, log=lambda *a: None)
    return tmp_path / name / "model.h5", results


def test_runner_stores_its_readout_and_file_classifier_attacks_that_one(tmp_path, monkeypatch):
    load = _fake_data(monkeypatch)
    path, results = _run_hebbian(tmp_path)
    with io.load(path) as f:
        assert f.schema_version == io.SCHEMA_VERSION
        stored = f.readout
        Hte, yte = f.representations["test"].to_numpy(), f.representations["test"].labels
    assert stored is not None and stored.hyperparameters["epochs"] == 3
    readout = LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)
    # the readout the run reported is the one in the file
    assert results["readout_test_accuracy"] == readout.score(Hte, yte)

    module, how = file_classifier(path)
    assert how == "hebbian-wta layer + the file's readout"
    from bioreps.studies import kinds

    layer = kinds.get("hebbian-wta").load(path)
    X = load("fashion-mnist", "test")[0][:20]
    with torch.no_grad():
        logits = module(torch.from_numpy(X)).numpy()
    expected = readout.decision_function(layer.transform(X))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    # a retrained 20-epoch readout (what compare used to attack) gives other logits
    with io.load(path) as f:
        Htr, ytr = f.representations["train"].to_numpy(), f.representations["train"].labels
    retrained = LinearReadout(epochs=20, random_state=0, progress=False).fit(Htr, ytr, n_classes=10)
    assert np.abs(retrained.decision_function(layer.transform(X)) - expected).max() > 1e-2


def test_a_file_without_readout_is_retrained_and_compare_says_so(tmp_path, monkeypatch):
    _fake_data(monkeypatch)
    stored_path, _ = _run_hebbian(tmp_path, "stored")
    # the same model without /readout: an older file
    old = tmp_path / "old.h5"
    with io.load(stored_path) as f:
        reps = {s: {"activations": r.to_numpy(), "labels": r.labels, "inputs_index": r.inputs_index,
                    "dataset": r.dataset, "dataset_split": r.dataset_split}
                for s, r in f.representations.items()}
        io.save(old, model_kind=f.model.kind, model_arrays=f.model.arrays,
                hyperparameters=f.model.hyperparameters, representations=reps)
    module, how = file_classifier(old, readout_epochs=2)
    assert module is not None
    assert how == ("hebbian-wta layer + no readout stored in the file: retrained a 2-epoch readout "
                   "on its train split")
    res = compare_files([stored_path, old], split="test", out_dir=tmp_path / "cmp", plots=False,
                        robustness=True, eps=(0.05,), n_attack=10, pgd_steps=1)
    rob = res["robustness"]
    assert list(rob["retrained"]) == ["old"]
    assert "retrained" in rob["retrained"]["old"]
    assert rob["curves"]["stored"]["model"] == "hebbian-wta layer + the file's readout"
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["robustness"]["retrained"] == rob["retrained"]


def test_study_stores_the_readout_in_model_h5_and_attacks_it(tmp_path, monkeypatch):
    from bioreps.studies import kinds
    from bioreps.studies.study import _classifier, run_study

    load = _fake_data(monkeypatch)
    study = {"study": {"name": "tiny", "seeds": [0], "output": str(tmp_path / "out")},
             "data": {"dataset": "fashion-mnist"},
             "models": [{"name": "hebb", "kind": "hebbian-wta", "n_units": 12, "k": 2, "epochs": 1,
                         "backend": "cpu", "readout": {"epochs": 3, "lr": 0.01, "batch_size": 16}}],
             "analysis": {"spectrum": {"enabled": False},
                          "attacks": {"methods": ["fgsm"], "eps": [0.0, 0.1], "steps": 1, "n_images": 10}}}
    run_study(study, progress=False, log=lambda *a: None)
    out = tmp_path / "out"
    assert not list(out.rglob("readout.npz"))
    (path,) = list(out.rglob("model.h5"))
    with io.load(path) as f:
        stored = f.readout
        Hte, yte = f.representations["test"].to_numpy(), f.representations["test"].labels
    assert stored is not None and stored.hyperparameters["epochs"] == 3
    readout = LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)
    (train_json,) = list(out.rglob("train.json"))
    assert json.loads(train_json.read_text())["test_accuracy"] == readout.score(Hte, yte)
    cls = kinds.get("hebbian-wta")
    module, how = _classifier(cls, path)
    assert how == "layer + the file's readout (differentiable)"
    X = load("fashion-mnist", "test")[0][:10]
    with torch.no_grad():
        logits = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(logits, readout.decision_function(cls.load(path).transform(X)),
                               rtol=1e-4, atol=1e-4)
