"""Study files: every key is checked, with its path, before anything trains; model keys and types
come from the classes' signatures (nothing retyped)."""

import copy

import pytest

from bioreps.studies.run import ConfigError
from bioreps.studies.study import is_study, load_study, validate_study

BASE = {
    "study": {"name": "s", "seeds": [0, 1]},
    "data": {"dataset": "fashion-mnist", "n_train": 200, "n_test": 100},
    "models": [
        {"name": "hebb", "kind": "hebbian-wta", "n_units": 20, "k": 2, "epochs": 2,
         "readout": {"epochs": 3, "schedule": "linear"}},
        {"name": "mlp", "kind": "mlp", "sizes": [784, 20, 10], "epochs": 2, "lr": 1e-3, "batch_size": 50,
         "regularizer": {"kind": "jacobian", "lam": 0.1}},
        {"name": "pix", "kind": "pixels"},
    ],
}


def with_(change):
    raw = copy.deepcopy(BASE)
    change(raw)
    return raw


def test_a_valid_study_gets_its_defaults():
    cfg = validate_study(copy.deepcopy(BASE))
    assert cfg["study"]["output"].endswith("s") and cfg["study"]["seeds"] == [0, 1]
    assert [m["name"] for m in cfg["models"]] == ["hebb", "mlp", "pix"]
    assert cfg["analysis"]["attacks"]["methods"] == ["fgsm", "pgd"] and cfg["analysis"]["cka"] == "linear"
    assert is_study(BASE) and not is_study({"experiment": {}})
    assert cfg["study"]["ensembles"] is True


@pytest.mark.parametrize("change, match", [
    (lambda r: r["models"][1]["regularizer"].update(lam="big"),
     r"models\[1\]\.regularizer\.lam must be int or float, got str 'big'"),
    (lambda r: r["models"][1]["regularizer"].update(gamma=1),
     r"unknown key models\[1\]\.regularizer\.gamma for regularizer 'jacobian'"),
    (lambda r: r["models"][1]["regularizer"].update(kind="dropout"),
     r"models\[1\]\.regularizer\.kind = 'dropout' is unknown; choose one of \['adversarial', 'jacobian', "
     r"'spectral', 'weight-decay'\]"),
    (lambda r: r["models"][0].update(n_units="many"), r"models\[0\]\.n_units must be int, got str 'many'"),
    (lambda r: r["models"][0].update(colour=3), r"unknown key models\[0\]\.colour for kind 'hebbian-wta'"),
    (lambda r: r["models"][2].update(kind="hopfield"), r"models\[2\]\.kind: .*'hopfield'"),
    (lambda r: r["models"][0].update(regularizer={"kind": "jacobian"}),
     r"models\[0\]\.regularizer: only backprop baselines take a \[regularizer\] table"),
    (lambda r: r["models"][1].update(readout={"epochs": 2}),
     r"models\[1\]\.readout: only local-learning models take a \[readout\] table"),
    (lambda r: r["models"][0]["readout"].update(epoch=3), r"unknown key models\[0\]\.readout\.epoch"),
    (lambda r: r["models"][2].update(name="hebb"), r"duplicate model names \['hebb'\]"),
    (lambda r: r["models"][2].update(name="a/b"), r"models\[2\]\.name = 'a/b' must be letters"),
    (lambda r: r["models"][2].pop("kind"), r"models\[2\]\.kind is required"),
    (lambda r: r["study"].update(seeds=[]), r"study\.seeds is empty"),
    (lambda r: r["study"].update(seeds=[0, 0]), r"study\.seeds has duplicates"),
    (lambda r: r["study"].update(seeds=[0, "1"]), r"study\.seeds\[1\] must be int"),
    (lambda r: r["study"].pop("seeds"), r"study\.seeds is required"),
    (lambda r: r["study"].update(ensembles="yes"), r"study\.ensembles must be bool, got str 'yes'"),
    (lambda r: r.pop("data"), r"\[data\] is required"),
    (lambda r: r.update(models=[]), r"\[\[models\]\] must be a non-empty array"),
    (lambda r: r.update(extra={}), r"unknown key .*extra"),
    (lambda r: r.update(analysis={"attacks": {"methods": ["fgsm", "cw"]}}), r"analysis\.attacks\.methods"),
    (lambda r: r.update(analysis={"attacks": {"eps": [0.1, 0.05]}}), r"analysis\.attacks\.eps must be .*increasing"),
    (lambda r: r.update(analysis={"spectrum": {"ranks": [500, 11]}}), r"analysis\.spectrum\.ranks must be"),
    (lambda r: r.update(analysis={"cka": "cosine"}), r"analysis\.cka must be one of"),
    (lambda r: r.update(analysis={"spectrum": {"window": 3}}), r"unknown key .*analysis\.spectrum\.window"),
])
def test_bad_study_names_the_key(change, match):
    with pytest.raises(ConfigError, match=match):
        validate_study(with_(change), source="s.toml")


def test_load_study_reads_toml(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[study]\nname = "t"\nseeds = [3]\n[data]\ndataset = "fashion-mnist"\n'
                 '[[models]]\nname = "p"\nkind = "pixels"\n')
    cfg = load_study(p)
    assert cfg["study"]["seeds"] == [3] and cfg["models"] == [{"name": "p", "kind": "pixels"}]
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "missing.toml")


def test_every_regularizer_is_usable_from_a_study_file():
    """Types of a regulariser's constructor come from its __init__ annotations too (the
    adversarial regulariser's step_size: float | None was once unusable)."""
    for reg in ({"kind": "adversarial", "eps": 0.1, "steps": 7, "step_size": 0.02, "clean_weight": 0.5},
                {"kind": "spectral", "beta": 1.0, "tau": 10, "slope": 1.0}, {"kind": "weight-decay", "lam": 1e-4},
                {"kind": "jacobian", "lam": 0.01, "n_proj": 1}):
        cfg = validate_study(with_(lambda r: r["models"][1].update(regularizer=reg)))
        assert cfg["models"][1]["regularizer"] == reg
    with pytest.raises(ConfigError, match=r"models\[1\]\.regularizer\.step_size must be int or float, got str"):
        validate_study(with_(lambda r: r["models"][1].update(regularizer={"kind": "adversarial", "step_size": "x"})))


def test_the_shipped_study_files_validate():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "experiments"
    studies = [p for p in sorted(folder.glob("*.toml")) if "[study]" in p.read_text()]
    assert {p.name for p in studies} >= {"quickstart.toml", "robustness_vs_spectrum.toml"}
    for p in studies:
        load_study(p)
    cfg = load_study(folder / "robustness_vs_spectrum.toml")
    kinds = {m["kind"] for m in cfg["models"]}
    # the seed paper's rows: local rules, backprop with every regulariser, the SNN, dataset and init
    assert kinds == {"hebbian-wta", "soft-wta", "spiking-wta", "mlp", "spiking-mlp", "pixels", "random-relu"}
    assert {m["regularizer"]["kind"] for m in cfg["models"] if m.get("regularizer")} == {
        "weight-decay", "jacobian", "spectral", "adversarial"}
    assert cfg["study"]["seeds"] == [0, 1, 2] and cfg["analysis"]["spectrum"]["preactivations"]


def test_every_shipped_experiment_reads_its_readouts_against_the_pixels_control():
    """Raw pixels with the same readout are the control every readout accuracy is compared with:
    each shipped study lists a model whose representation is its input (the pixels kind), and no
    single experiment with a readout turns its pixels control off."""
    from pathlib import Path

    from bioreps.studies import kinds
    from bioreps.studies.run import load_config, read_toml

    folder = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(folder.glob("*.toml"))
    studies = [p for p in files if is_study(read_toml(p))]
    assert {p.name for p in studies} >= {"quickstart.toml", "robustness_vs_spectrum.toml", "deep_hebbian.toml"}
    missing = []
    for p in studies:
        controls = [m["name"] for m in load_study(p)["models"] if kinds.get(m["kind"]).represents_input]
        if not controls:
            missing.append(p.name)
    assert not missing, f"studies without a pixels control model (raw pixels + the same readout): {missing}"
    singles = [p for p in files if p not in studies]
    assert singles, "no single-experiment files found: has the study marker changed?"
    off = [p.name for p in singles
           if load_config(p)["readout"]["enabled"] and not load_config(p)["readout"]["pixels_control"]]
    assert not off, f"single experiments with [readout] pixels_control = false: {off}"


def test_what_a_regulariser_needs_of_training_is_checked_before_anything_trains():
    spectral = {"kind": "spectral", "beta": 1.0}
    # the spectral penalty needs a batch (and a training set) larger than the representation
    with pytest.raises(ConfigError, match=r"models\[1\] \(mlp\): SpectralReg needs batch_size > the width of the "
                                          r"representation \(20 units\) .* got batch_size=20"):
        validate_study(with_(lambda r: r["models"][1].update(regularizer=spectral, batch_size=20)))
    with pytest.raises(ConfigError, match=r"models\[1\] \(mlp\): SpectralReg needs batch_size > .* got batch_size=128"):
        validate_study(with_(lambda r: (r["models"][1].update(regularizer=spectral, sizes=[784, 200, 10]),
                                        r["models"][1].pop("batch_size"))))  # train's default batch
    with pytest.raises(ConfigError, match=r"models\[1\] \(mlp\): SpectralReg needs more training samples \(15\)"):
        validate_study(with_(lambda r: (r["models"][1].update(regularizer=spectral, batch_size=21),
                                        r["data"].update(n_train=15))))
    # the whole training split when no n_train is given; a regulariser's own bad value, by name
    validate_study(with_(lambda r: (r["models"][1].update(regularizer=spectral, batch_size=21),
                                    r["data"].pop("n_train"))))
    with pytest.raises(ConfigError, match=r"models\[1\] \(mlp\): .*tau"):
        validate_study(with_(lambda r: r["models"][1].update(regularizer={"kind": "spectral", "tau": 0},
                                                              batch_size=21)))


@pytest.mark.parametrize("change, match", [
    (lambda r: r["models"][0].update(lr=-1), r"models\[0\]\.lr must be > 0, got -1$"),
    (lambda r: r["models"][0].update(n_units=0), r"models\[0\]\.n_units must be >= 1, got 0$"),
    (lambda r: r["models"][0].update(k=50), r"models\[0\]\.k: k=50 is larger than n_units=20$"),
    (lambda r: r["models"][0].update(epochs=0), r"models\[0\]\.epochs must be >= 1, got 0$"),
    (lambda r: r["models"][0].update(backend="gpu"), r"models\[0\]\.backend: unknown backend 'gpu'"),
    (lambda r: r["models"][0]["readout"].update(lr=-1.0), r"models\[0\]\.readout\.lr must be a finite number > 0"),
    (lambda r: r["models"][0]["readout"].update(batch_size=0), r"models\[0\]\.readout\.batch_size must be >= 1"),
    (lambda r: r["models"][0]["readout"].update(epochs=0), r"models\[0\]\.readout\.epochs must be >= 1, got 0$"),
    (lambda r: r["models"][0]["readout"].update(weight_decay=-0.1),
     r"models\[0\]\.readout\.weight_decay must be a finite number >= 0"),
    (lambda r: r["models"][1].update(lr=0.0), r"models\[1\]\.lr must be a finite number > 0, got 0\.0$"),
    (lambda r: r["models"][1].update(epochs=0), r"models\[1\]\.epochs must be >= 1, got 0$"),
    (lambda r: r["models"][1].update(batch_size=0), r"models\[1\]\.batch_size must be >= 1, got 0$"),
    (lambda r: r["models"][1].update(sizes=[784, 10]), r"models\[1\]\.sizes needs at least 3 entries"),
    (lambda r: r["models"][2].update(kind="random-relu", n_units=0), r"models\[2\]\.n_units must be >= 1, got 0$"),
])
def test_bad_values_are_refused_before_anything_runs_naming_the_key(change, match):
    """Values a unit would refuse (the model's own checks, train's, the readout's) are refused
    by the validation, as a ValueError naming the key."""
    with pytest.raises(ValueError, match=r"^s\.toml: " + match):
        validate_study(with_(change), source="s.toml")


def test_values_are_checked_without_a_gpu():
    """A study that asks for CUDA validates anywhere (its units may run on other machines); the
    unit says whether the backend is usable."""
    cfg = validate_study(with_(lambda r: r["models"][0].update(backend="cuda")))
    assert cfg["models"][0]["backend"] == "cuda"


def test_run_with_a_bad_value_writes_nothing(tmp_path, monkeypatch, capsys):
    from bioreps import cli, data

    def forbidden(*args, **kwargs):
        raise AssertionError("data were loaded before the check that should have stopped the run")

    monkeypatch.setattr(data, "load", forbidden)
    out = tmp_path / "runs" / "s"
    study = tmp_path / "s.toml"
    study.write_text(f'[study]\nname = "s"\nseeds = [0]\noutput = "{out}"\n[data]\ndataset = "fashion-mnist"\n'
                     '[[models]]\nname = "p"\nkind = "pixels"\n'
                     '[[models]]\nname = "hebb"\nkind = "hebbian-wta"\nn_units = 20\nlr = -1\n')
    assert cli.main(["run", str(study)]) == 2
    assert not (tmp_path / "runs").exists()   # no study.json, report, summary or units/
    assert "models[1].lr must be > 0, got -1" in capsys.readouterr().err
