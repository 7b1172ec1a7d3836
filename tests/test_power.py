"""``power``, the exponent of the Hebbian layers' representation ``ReLU(W x)^power``, is a
constructor parameter stored with the model: whatever rebuilds a layer from its file (load,
the classifier that attacks use, a resumed run) computes the representation that was exported."""

import h5py
import numpy as np
import pytest
import torch

from bioreps import data, io
from bioreps.layers import HebbianWTA, SoftWTA



def _small(cls, **kw):
    rng = np.random.default_rng(0)
    X = rng.random((300, 16)).astype(np.float32)
    extra = {"k": 2} if cls is HebbianWTA else {}
    return cls(n_units=6, backend="cpu", random_state=0, progress=False, **extra, **kw).fit(X, epochs=2), X


@pytest.mark.parametrize("cls, default", [(HebbianWTA, 4.5), (SoftWTA, 1.0)])
def test_power_is_a_parameter_with_the_rule_default(cls, default):
    assert cls().power == default and cls().get_params()["power"] == default
    layer, X = _small(cls, power=2.0)
    H1 = layer.transform(X, power=1.0)
    # same rows, same GEMM: only the float32 power differs in how it is computed (numpy 1.x
    # squares through a fast path), so a few ulp
    np.testing.assert_allclose(layer.transform(X), np.power(H1, np.float32(2.0)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(layer.transform(X, power=3.0), np.power(H1, np.float32(3.0)), rtol=1e-6, atol=0)
    assert not np.allclose(layer.transform(X), H1, rtol=1e-3)  # the stored power is applied
    assert layer.to_torch().power == 2.0


@pytest.mark.parametrize("cls", [HebbianWTA, SoftWTA])
def test_power_is_validated(cls):
    layer = cls(power=-1.0)
    with pytest.raises(ValueError, match=r"^power must be > 0, got -1\.0$"):
        layer._validate_params()
    with pytest.raises(TypeError, match="power must be a number"):
        cls(power="4.5")._validate_params()


@pytest.mark.parametrize("how", ["save", "export"])
def test_loaded_layer_keeps_its_power(tmp_path, how):
    layer, X = _small(HebbianWTA, power=2.0)
    path = tmp_path / "h.h5"
    if how == "save":
        layer.save(path)
    else:
        layer.export(path, {"test": X[:20]})
        with io.load(path) as f:
            assert f.representations["test"].description == "ReLU(W x)^2"
    loaded = HebbianWTA.load(path)
    assert loaded.power == 2.0
    np.testing.assert_array_equal(loaded.transform(X[:20]), layer.transform(X[:20]))


def _strip_power(path, description=None, config=None):
    """Make ``path`` look like a file of an older bioreps: no ``power`` in the hyperparameters
    (and optionally another representation description or run configuration)."""
    import json

    with h5py.File(path, "r+") as f:
        hp = json.loads(f["model"].attrs["hyperparameters"])
        hp.pop("power")
        f["model"].attrs["hyperparameters"] = json.dumps(hp)
        if description is not None:
            f["representations/test"].attrs["description"] = description
        if config is not None:
            f["provenance"].attrs["config"] = json.dumps(config)


def test_files_of_older_versions_get_the_power_they_were_made_with(tmp_path):
    layer, X = _small(HebbianWTA, power=3.0)
    # export-style file: the representation says ReLU(W x)^3
    layer.export(tmp_path / "e.h5", {"test": X[:10]})
    _strip_power(tmp_path / "e.h5")
    assert HebbianWTA.load(tmp_path / "e.h5").power == 3.0
    # runner-style file: the description names the kind, the run configuration has [model] power
    layer.export(tmp_path / "r.h5", {"test": X[:10]})
    _strip_power(tmp_path / "r.h5", description="hebbian-wta representation",
                 config={"model": {"kind": "hebbian-wta", "power": 2.5}})
    assert HebbianWTA.load(tmp_path / "r.h5").power == 2.5
    # neither: the class default, as the older versions used
    layer.export(tmp_path / "n.h5", {"test": X[:10]})
    _strip_power(tmp_path / "n.h5", description="hebbian-wta representation", config={})
    assert HebbianWTA.load(tmp_path / "n.h5").power == 4.5


def test_file_classifier_uses_the_exported_power(tmp_path, fashion_mnist_available):
    """The classifier rebuilt from a file for attacks computes the exported representation
    (before power was stored it was rebuilt at the default 4.5 whatever was exported)."""
    from bioreps.readout import LinearReadout
    from bioreps.studies.report import file_classifier

    X, y = data.load("fashion-mnist", "train")
    layer = HebbianWTA(n_units=30, k=2, center=True, input_norm=2, power=2.0, backend="cpu", random_state=0,
                       progress=False).fit(X[:1000], epochs=2)
    layer.export(tmp_path / "h.h5", {"train": (X[:1000], y[:1000])}, dataset="fashion-mnist")
    module, _ = file_classifier(tmp_path / "h.h5")
    assert module[0].power == 2.0
    direct = LinearReadout(epochs=20, random_state=0, progress=False).fit(layer.transform(X[:1000]), y[:1000],
                                                                       n_classes=10)
    with torch.no_grad():
        logits = module(torch.from_numpy(X[1000:1400]))
    agree = (logits.argmax(1).numpy() == direct.predict(layer.transform(X[1000:1400]))).mean()
    assert agree > 0.99
