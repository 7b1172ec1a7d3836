"""The registry of model kinds (``bioreps.studies.kinds``): found from the classes' own ``kind``,
parameters from their signatures, capabilities from their class attributes."""

import gc
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from bioreps.layers import DiehlCookParams, Layer
from bioreps.studies import kinds
from bioreps.studies import run as study
from bioreps.studies.run import ConfigError

ALL = ["cnn", "conv-hebbian-wta", "conv-net", "conv-soft-wta", "hebbian-net", "hebbian-wta", "mlp", "pixels", "random-relu", "soft-wta", "spiking-mlp", "spiking-wta"]


def test_names():
    assert kinds.names() == ALL
    for name in ALL:
        assert kinds.get(name).kind == name


def test_unknown_kind_message():
    with pytest.raises(ValueError, match=r"^unknown model kind 'hopfield'; known kinds: cnn, conv-hebbian-wta, conv-net, conv-soft-wta, hebbian-net, hebbian-wta, mlp, "
                                         r"pixels, random-relu, soft-wta, spiking-mlp, spiking-wta$"):
        kinds.get("hopfield")


def test_params_come_from_signatures():
    hebb = kinds.params("hebbian-wta")
    assert hebb["power"].types == (int, float) and hebb["power"].default == 4.5
    assert hebb["center"].types == (bool,)
    assert hebb["input_norm"].types == (int, float)  # from the annotation (default None)
    assert kinds.params("spiking-wta")["params"].nested is DiehlCookParams
    assert kinds.params("mlp")["sizes"].types == (list,)
    assert list(kinds.fit_params("soft-wta")) == ["epochs"] and kinds.fit_params("soft-wta")["epochs"].types == (int,)
    for name in ALL:
        signature = set(inspect.signature(kinds.get(name)).parameters)
        assert set(kinds.params(name)) == signature - set(kinds.RUNTIME)


def test_every_param_has_a_type():
    for name in ALL:
        for p in kinds.params(name).values():
            assert p.types and all(isinstance(t, type) for t in p.types), (name, p)


def test_capability_matrix():
    cols = ("checkpoint_unit", "indexed_transform", "has_vote_readout", "torch_view", "gradient_attacks",
            "supervised", "represents_input", "config_fit_params", "has_preactivations", "prunable")
    expected = {
        "pixels":      (None, False, False, False, False, False, True, (), True, False),
        "random-relu": (None, False, False, True, True, False, False, (), True, False),
        "hebbian-wta": ("epochs", False, False, True, True, False, False, ("epochs",), True, True),
        "soft-wta":    ("epochs", False, False, True, True, False, False, ("epochs",), True, True),
        "conv-hebbian-wta": ("epochs", False, False, True, True, False, False, ("epochs",), False, False),
        "conv-net":    ("epochs", False, False, True, True, True, False, (), False, False),
        "conv-soft-wta": ("epochs", False, False, True, True, False, False, ("epochs",), False, False),
        "hebbian-net": ("epochs", False, False, True, True, False, False, ("epochs",), False, False),
        "spiking-wta": ("samples", True, True, False, False, False, False, ("epochs",), False, False),
        "mlp":         ("epochs", False, False, True, True, True, False, (), True, False),
        "cnn":         ("epochs", False, False, True, True, True, False, (), True, False),
        "spiking-mlp": ("epochs", False, False, True, True, True, False, (), False, False),
    }
    got = {name: tuple(getattr(kinds.get(name), c) for c in cols) for name in ALL}
    assert got == expected
    assert {name for name in ALL if kinds.get(name).layered} == {"hebbian-net", "conv-net"}
    assert set(kinds.get("random-relu").neutral_params) == {"backend", "progress", "power"}
    assert set(kinds.get("hebbian-wta").neutral_params) == {"backend", "progress", "power", "diagnostics_every"}
    assert set(kinds.get("spiking-wta").neutral_params) == {"backend", "progress"}


def test_build_merges_nested_tables_and_seeds():
    layer = kinds.build("spiking-wta", {"n_neurons": 3, "params": {"w_ei": 5.0}}, seed=7, progress=False)
    assert layer.params == DiehlCookParams(w_ei=5.0) and layer.random_state == 7 and layer.progress is False
    with pytest.raises(ValueError, match=r"unknown DiehlCookParams fields: \['nope'\]"):
        kinds.build("spiking-wta", {"params": {"nope": 1}}, seed=0)
    assert kinds.build("pixels", {}, seed=3).get_params() == {}


def test_a_new_layer_needs_only_its_class(tmp_path):
    class Toy(Layer):
        kind = "toy"

        def __init__(self, n_units: int = 3, random_state=None):
            self.n_units = n_units
            self.random_state = random_state

    try:
        assert "toy" in kinds.names() and kinds.get("toy") is Toy
        raw = {"experiment": {"name": "t", "output": str(tmp_path / "o")}, "data": {"dataset": "fashion-mnist"},
               "model": {"kind": "toy", "n_units": 4}}
        cfg = study.validate_config(raw)
        plan = study._plan(cfg, np.random.SeedSequence(0).spawn(3), "<t>")
        assert isinstance(plan.model, Toy) and plan.model.n_units == 4 and plan.model.random_state is not None
        del plan
        raw["model"]["n_units"] = "many"
        with pytest.raises(ConfigError, match=r"\[model\] n_units must be int, got str 'many'"):
            study.validate_config(raw)
    finally:
        del Toy
        gc.collect()
    assert "toy" not in kinds.names()


def test_duplicate_kind_is_an_error():
    class Twin(Layer):
        kind = "pixels"

    try:
        with pytest.raises(RuntimeError, match=r"model kind 'pixels' is declared twice: by .*(Pixels|Twin) and by "
                                               r".*(Pixels|Twin)"):
            kinds.names()
    finally:
        del Twin
        gc.collect()
    assert kinds.names() == ALL


def test_readme_names_every_kind():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Experiments"):]
    section = section[:section.index("\n## ", 1)]
    missing = [k for k in kinds.names() if not re.search(rf"`{re.escape(k)}`", section)]
    assert not missing, f"README 'Experiments' does not name the kinds {missing}"
