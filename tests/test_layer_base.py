"""The one layer base (``bioreps.layers.Layer``): parameters from the signature, one fitted
guard, one input check, one list of fitted fields shared by save, load and export."""

import inspect

import numpy as np
import pytest

from bioreps import io
from bioreps.layers import HebbianWTA, Pixels, RandomReLU, SoftWTA, SpikingWTA

LAYERS = {
    "pixels": lambda: Pixels(),
    "random-relu": lambda: RandomReLU(n_units=4, power=2.0, random_state=0),
    "hebbian-wta": lambda: HebbianWTA(n_units=4, k=2, power=2.0, backend="cpu", random_state=0, progress=False),
    "soft-wta": lambda: SoftWTA(n_units=4, backend="cpu", random_state=0, progress=False),
    "spiking-wta": lambda: SpikingWTA(n_neurons=3, t_present_ms=5, t_rest_ms=1, backend="cpu", random_state=0,
                                      progress=False),
}
FIT = {"hebbian-wta": {"epochs": 1}, "soft-wta": {"epochs": 1}}


def _X(n=40, d=16):
    return np.random.default_rng(0).random((n, d)).astype(np.float32)


def _fitted(kind):
    return LAYERS[kind]().fit(_X(), **FIT.get(kind, {}))


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", LAYERS)
def test_save_load_round_trip(tmp_path, kind):
    """Pixels().fit(X).save(p) and RandomReLU(...).save(p) used to raise AttributeError."""
    layer = _fitted(kind)
    path = layer.save(tmp_path / f"{kind}.h5")
    loaded = type(layer).load(path)
    drop = {"progress"}
    assert ({k: v for k, v in loaded.get_params().items() if k not in drop}
            == {k: v for k, v in layer.get_params().items() if k not in drop})
    _same(loaded.model_arrays(), layer.model_arrays())
    np.testing.assert_array_equal(loaded.transform(_X()[:4]), layer.transform(_X()[:4]))


@pytest.mark.parametrize("kind", LAYERS)
def test_unfitted_layers_refuse_alike(tmp_path, kind):
    layer = LAYERS[kind]()
    name = type(layer).__name__
    for call in (lambda: layer.transform(_X()), lambda: layer.save(tmp_path / "x.h5"), layer.model_arrays,
                 lambda: layer.export(tmp_path / "x.h5", {"test": _X()})):
        with pytest.raises(RuntimeError, match=f"^this {name} is not fitted yet; call fit\\(X\\) first$"):
            call()


@pytest.mark.parametrize("kind", LAYERS)
def test_feature_mismatch_message(kind):
    layer = LAYERS[kind]().fit(_X(d=4), **FIT.get(kind, {}))
    with pytest.raises(ValueError, match=r"^X has 3 features but the layer was fitted on 4$"):
        layer.transform(_X(d=3))


@pytest.mark.parametrize("kind", LAYERS)
def test_get_params_is_the_signature(kind):
    layer = LAYERS[kind]()
    assert set(layer.get_params()) == set(inspect.signature(type(layer)).parameters)
    hp = _fitted(kind).hyperparameters()
    assert "progress" not in hp and hp["n_features_in_"] == 16


def test_set_params_refuses_unknown_names():
    layer = RandomReLU(n_units=4)
    assert layer.set_params(power=3.0) is layer and layer.power == 3.0
    with pytest.raises(ValueError, match=r"^invalid parameter 'n_neurons' for RandomReLU; valid parameters: "
                                         r"n_units, power, random_state$"):
        layer.set_params(n_neurons=3)


@pytest.mark.parametrize("kind, description", [
    ("pixels", "input pixels"), ("random-relu", "ReLU(W x)^2, random N(0, 1) W"),
    ("hebbian-wta", "ReLU(W x)^2"), ("soft-wta", "ReLU(W x)^1"),
    ("spiking-wta", "E spike counts per presentation")])
def test_export_writes_dims_labels_index_description(tmp_path, kind, description):
    layer = _fitted(kind)
    X = _X()[:6]
    y, index = np.arange(6) % 2, np.array([5, 3, 9, 0, 1, 7])
    path = layer.export(tmp_path / "e.h5", {"test": (X, y, index), "train": X[:2]}, dataset="toy",
                        block_rows=4, provenance={"note": 1})
    with io.load(path) as f:
        assert f.model.kind == kind
        rep = f.representations["test"]
        assert rep.description == description and rep.dataset == "toy"
        np.testing.assert_array_equal(rep.labels, y)
        np.testing.assert_array_equal(rep.inputs_index, index)
        # the spiking layer's row-keyed spikes (and the pixels) in blocks of 4 rows equal one call;
        # a float32 GEMM's bits depend on the number of rows in the call (issue 11), so the GEMM
        # layers' blocks are compared with the same blocks transformed
        if kind in ("pixels", "spiking-wta"):
            np.testing.assert_array_equal(rep.to_numpy(), layer.transform(X))
        else:
            np.testing.assert_array_equal(rep.to_numpy(), np.vstack([layer.transform(X[:4]), layer.transform(X[4:])]))
        assert not f.representations["train"].has_labels
        assert f.provenance["note"] == 1 and f.provenance["dataset"] == "toy"
        if "weights" in f.model.arrays:
            assert "unit" in f.model.dims["weights"]


def test_older_control_files_load(tmp_path):
    """Runner files of earlier versions: pixels with hyperparameters {} and no arrays (the width
    only in a representation), random-relu without n_features_in_."""
    X = _X()
    io.save(tmp_path / "pix.h5", model_kind="pixels", hyperparameters={},
            representations={"test": X[:5]})
    pix = Pixels.load(tmp_path / "pix.h5")
    assert pix.n_features_in_ == pix.n_units_ == 16
    np.testing.assert_array_equal(pix.transform(X[:5]), X[:5])
    io.save(tmp_path / "none.h5", model_kind="pixels", hyperparameters={})
    with pytest.raises(ValueError, match="none.h5: a pixels model file of an older bioreps records its width "
                                         "only through its representations, and it has none"):
        Pixels.load(tmp_path / "none.h5")
    relu = RandomReLU(n_units=3, random_state=0).fit(X)
    io.save(tmp_path / "relu.h5", model_kind="random-relu", model_arrays={"weights": relu.weights_},
            hyperparameters={"n_units": 3, "power": 4.5, "random_state": 0})
    old = RandomReLU.load(tmp_path / "relu.h5")
    assert (old.n_units_, old.n_features_in_) == (3, 16)
    np.testing.assert_array_equal(old.transform(X), relu.transform(X))
