"""A study end to end on a small slice of Fashion-MNIST: local-learning and backprop models over
seeds, results with per-seed figures and intervals across seeds, reruns that skip finished work."""

import json

import numpy as np
import pytest

from bioreps import io
from bioreps.studies.run import ConfigError
from bioreps.studies.study import run_study

pytestmark = pytest.mark.slow


def tiny_study(tmp_path, **study):
    return {
        "study": {"name": "tiny", "seeds": [0, 1], "output": str(tmp_path / "out"), **study},
        "data": {"dataset": "fashion-mnist", "n_train": 400, "n_test": 120},
        "models": [
            {"name": "hebb", "kind": "hebbian-wta", "n_units": 24, "k": 2, "center": True, "input_norm": 2,
             "epochs": 3, "readout": {"epochs": 40, "lr": 0.01, "batch_size": 64}},
            {"name": "mlp", "kind": "mlp", "sizes": [784, 24, 10], "epochs": 3, "lr": 3e-3, "batch_size": 50,
             "regularizer": {"kind": "weight-decay", "lam": 1e-4}},
            {"name": "pix", "kind": "pixels", "readout": {"epochs": 40, "lr": 0.01, "batch_size": 64}},
        ],
        "analysis": {"attacks": {"methods": ["noise", "fgsm", "pgd"], "eps": [0.0, 0.1], "steps": 3,
                                 "n_images": 60}},
    }


def test_study_runs_models_over_seeds_and_reruns_nothing(tmp_path, fashion_mnist_available):
    logs = []
    res = run_study(tiny_study(tmp_path), progress=False, log=logs.append)
    out = tmp_path / "out"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(res["summary"]))
    assert set(res["per_seed"]) == {"hebb", "mlp", "pix"}
    for name in ("hebb", "mlp", "pix"):
        for seed in ("0", "1"):
            m = res["per_seed"][name][seed]
            assert 0.3 < m["test_accuracy"] <= 1.0, (name, seed, m)
            assert m["fgsm_accuracy@0"] == pytest.approx(m["pgd_accuracy@0"])
            assert m["pgd_accuracy@0.1"] <= m["noise_accuracy@0.1"] + 1e-9  # PGD beats random noise
        s = res["summary"][name]["test_accuracy"]
        vals = [res["per_seed"][name][k]["test_accuracy"] for k in ("0", "1")]
        assert s["n"] == 2 and s["mean"] == pytest.approx(np.mean(vals)) and s["method"] == "t"
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert "alpha" in res["summary"]["hebb"] and "alpha" in res["summary"]["mlp"]
    cka = res["cka"]["0"]
    assert cka["models"] == ["hebb", "mlp", "pix"] and np.allclose(np.diag(cka["matrix"]), 1.0)
    assert any("test_accuracy" in line for line in logs)  # the summary table was printed
    # the same seeds give the same figures; a rerun (resume) skips every unit
    logs.clear()
    again = run_study(tiny_study(tmp_path), progress=False, resume=True, log=logs.append)
    assert again["per_seed"] == res["per_seed"]
    assert sum("skipped: finished before" in line for line in logs) == 3 * 2 * 2 + 2
    # without --resume an existing study folder is refused; another study's folder too
    with pytest.raises(ConfigError, match="already holds study 'tiny'; pass --resume"):
        run_study(tiny_study(tmp_path), progress=False, log=logs.append)
    other = tiny_study(tmp_path)
    other["study"]["name"] = "other"
    with pytest.raises(ConfigError, match="holds the files of another study \\('tiny'\\)"):
        run_study(other, progress=False, resume=True, log=logs.append)


def test_a_changed_model_reruns_only_its_units(tmp_path, fashion_mnist_available):
    cfg = tiny_study(tmp_path, seeds=[0])
    cfg["analysis"]["attacks"]["methods"] = ["fgsm"]
    run_study(cfg, progress=False, log=lambda *a: None)
    cfg["models"][1]["epochs"] = 4
    logs = []
    run_study(cfg, progress=False, resume=True, log=logs.append)
    ran = [line for line in logs if " done in " in line]
    assert sorted(line.split("unit ")[1].split(")")[0] + ")" for line in ran) == sorted(
        ["('train', 'mlp', 0)", "('analyze', 'mlp', 0)", "('compare', 0)"])


def _figures(res):
    """The per-seed figures without the timings."""
    return {name: {seed: {k: v for k, v in m.items() if k != "fit_seconds"} for seed, m in seeds.items()}
            for name, seeds in res["per_seed"].items()}


def test_a_local_dask_cluster_gives_the_in_process_results(tmp_path, fashion_mnist_available):
    cfg = tiny_study(tmp_path)
    cfg["models"] = cfg["models"][:2]
    cfg["analysis"]["attacks"]["methods"] = ["fgsm"]
    # one compute thread per unit in both runs (2 workers on 2 cores get 1 each): the same
    # summation order in every kernel
    here = run_study(cfg, threads=1, progress=False, log=lambda *a: None)
    cfg["study"]["output"] = str(tmp_path / "dask")
    there = run_study(cfg, workers=2, progress=False, log=lambda *a: None)
    assert _figures(there) == _figures(here)
    assert there["cka"] == here["cka"]


def test_bioreps_run_takes_a_study_file(tmp_path, fashion_mnist_available, capsys):
    from bioreps import cli

    study = tmp_path / "s.toml"
    study.write_text(f'''[study]
name = "cli"
seeds = [0]
output = "{tmp_path / 'out'}"
[data]
dataset = "fashion-mnist"
n_train = 300
n_test = 80
[[models]]
name = "pix"
kind = "pixels"
[models.readout]
epochs = 2
[analysis]
attacks = {{ methods = ["fgsm"], eps = [0.0, 0.05], n_images = 40 }}
''')
    assert cli.main(["run", str(study), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test_accuracy" in out and "results:" in out
    assert (tmp_path / "out" / "results.json").exists()
    assert cli.main(["run", str(study), "--seed", "3"]) == 2
    assert "--seed is for single experiments" in capsys.readouterr().err


def _fashion_slice(folder, n_train, n_test):
    """The first rows of Fashion-MNIST as an IDX folder of their own: a whole training split
    small enough for a spiking network (every seed of a study trains on all of its rows)."""
    from _datahelpers import MNIST_NAMES

    from bioreps import data as bdata

    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        X, y = bdata.load("fashion-mnist", split, flatten=False)
        bdata.write_idx(folder / MNIST_NAMES[split][0], np.round(X[:n] * 255).astype(np.uint8))
        bdata.write_idx(folder / MNIST_NAMES[split][1], y[:n].astype(np.uint8))
    return folder


def spiking_study(tmp_path, out, **study):
    return {
        "study": {"name": "snn", "seeds": [0, 1], "output": str(tmp_path / out), **study},
        "data": {"dataset": "fashion-mnist", "data_dir": str(tmp_path / "fm")},
        "models": [{"name": "dc", "kind": "spiking-wta", "n_neurons": 6, "t_present_ms": 20.0, "t_rest_ms": 5.0,
                    "backend": "cpu", "readout": {"epochs": 5, "batch_size": 16}},
                   {"name": "mlp", "kind": "mlp", "sizes": [784, 6, 10], "epochs": 2, "batch_size": 10}],
        "analysis": {"spectrum": {"enabled": False}, "attacks": {"methods": ["noise"], "eps": [0.0, 0.1],
                                                                  "n_images": 10},
                     "cka": "none", "transfer": False},
    }


def test_the_seeds_of_a_spiking_model_train_as_one_ensemble(tmp_path, fashion_mnist_available):
    from bioreps.layers import SpikingWTA
    from bioreps.studies.study import _model_seed

    _fashion_slice(tmp_path / "fm", 30, 20)
    logs = []
    res = run_study(spiking_study(tmp_path, "ens"), progress=False, log=logs.append)
    assert any("unit ('ensemble', 'dc') done" in line for line in logs), logs
    assert not any("('ensemble', 'mlp')" in line for line in logs)  # a backprop model trains per seed
    units = tmp_path / "ens" / "units"
    X = io.load(units / "train+dc+1" / "model.h5").representations["train"]
    for seed in (0, 1):
        info = json.loads((units / f"train+dc+{seed}" / "train.json").read_text())
        assert info["ensemble"]["members"] == 2 and info["ensemble"]["seeds"] == [0, 1], info
        assert info["fit_seconds"] == pytest.approx(info["ensemble"]["fit_seconds"] / 2, abs=1e-3)
    # seed 1's member is the network its seed trains alone on the same rows
    from bioreps import data as bdata

    Xtr, _ = bdata.load("fashion-mnist", "train", data_dir=tmp_path / "fm")
    alone = SpikingWTA(n_neurons=6, t_present_ms=20.0, t_rest_ms=5.0, backend="cpu", progress=False,
                       random_state=_model_seed(1, "dc")).fit(Xtr)
    member = SpikingWTA.load(units / "train+dc+1" / "model.h5")
    np.testing.assert_array_equal(member.weights_, alone.weights_)
    assert X.shape == (30, 6)
    assert "seeds 0, 1 trained together as one ensemble" in (tmp_path / "ens" / "report.html").read_text()
    # ensembles = false trains each seed alone: the same figures
    logs.clear()
    apart = run_study(spiking_study(tmp_path, "apart", ensembles=False), progress=False, log=logs.append)
    assert not any("'ensemble'" in line for line in logs)
    assert _figures(apart) == _figures(res)


def test_a_study_compares_a_hebbian_net_with_its_backprop_counterpart(tmp_path, fashion_mnist_available):
    blocks = [{"kind": "conv-soft-wta", "n_channels": 6, "kernel_size": 5, "padding": 2, "pool": ["max", 4, 2, 1]},
              {"kind": "conv-hebbian-wta", "n_channels": 8, "kernel_size": 3, "padding": 1,
               "pool": ["avg", 2, 2, 0], "power": 2.0}]
    cfg = {"study": {"name": "conv", "seeds": [0], "output": str(tmp_path / "out")},
           "data": {"dataset": "fashion-mnist", "n_train": 120, "n_test": 40},
           "models": [{"name": "hnet", "kind": "hebbian-net", "input_shape": [1, 28, 28], "layers": blocks,
                       "readout": {"epochs": 3}},
                      {"name": "cnet", "kind": "conv-net", "epochs": 2, "layers": blocks}],
           "analysis": {"attacks": {"methods": ["fgsm"], "eps": [0.0, 0.1], "n_images": 20},
                        "spectrum": {"ranks": [2, 30]}}}  # 40 test images: 39 ranks carry variance
    res = run_study(cfg, progress=False, log=lambda *a: None)
    for name in ("hnet", "cnet"):  # trained, attacked with gradients, spectrum measured
        m = res["per_seed"][name]["0"]
        assert 0.1 < m["test_accuracy"] <= 1 and "fgsm_accuracy@0.1" in m and "alpha" in m, (name, m)
    from bioreps.analysis import spectrum

    for name in ("hnet", "cnet"):
        with io.load(tmp_path / "out" / "units" / f"train+{name}+0" / "model.h5") as f:
            assert f.representations["test"].layer == 1 and f.representations["test.layer0"].layer == 0
            # the train split's last layer only: what the readout needs
            assert sorted(f.representations) == ["test", "test.layer0", "train"]
            first = spectrum.powerlaw_alpha(spectrum.eigenspectrum(f.representations["test.layer0"].to_numpy()),
                                            ranks=(2, 30)).alpha
        # alpha of every layer's test representation, also per seed in the results
        a = json.loads((tmp_path / "out" / "units" / f"analyze+{name}+0" / "analysis.json").read_text())
        assert a["layers"][0]["alpha"] == pytest.approx(first, rel=1e-6)
        assert [e["layer"] for e in a["layers"]] == [0, 1], (name, a["layers"])
        assert [e["n_units"] for e in a["layers"]] == [6 * 14 * 14, 8 * 7 * 7]
        for e in a["layers"]:
            assert np.isfinite(e["alpha"]) and np.isfinite(e["alpha_nassar"]), (name, e)
        assert a["layers"][1]["alpha"] == a["spectra"]["test"]["alpha"]  # the last layer is the representation
        m = res["per_seed"][name]["0"]
        assert m["layer0_alpha"] == a["layers"][0]["alpha"]
        assert m["layer1_alpha_nassar"] == a["layers"][1]["alpha_nassar"]
        assert "layer1_alpha" in res["summary"][name]
    assert "Alpha per layer: the power-law exponent" in (tmp_path / "out" / "report.html").read_text()


def test_a_layer_too_small_for_the_ranks_gets_no_alpha_and_the_reason(tmp_path):
    from bioreps.studies.study import _layer_spectra

    rng = np.random.default_rng(0)
    wide = rng.standard_normal((50, 40)) * np.arange(1, 41) ** -0.5  # a power-law-ish spectrum
    narrow = rng.standard_normal((50, 3))  # 3 units: too few ranks for any fit
    with io.Writer(tmp_path / "m.h5") as w:
        w.write_model("test-net", {}, {})
        for name, layer, R in (("test.layer0", 0, narrow), ("test", 1, wide), ("train", 1, wide)):
            w.create_representation(name, len(R), R.shape[1], layer=layer).write_rows(0, R.astype(np.float32))
    last = {"alpha": 0.5, "alpha_nassar": 0.6, "ranks": [2, 30], "nassar_ranks": [2, 31], "warnings": []}
    rows = _layer_spectra(tmp_path / "m.h5", [2, 30], last)
    assert [r["layer"] for r in rows] == [0, 1] and [r["n_units"] for r in rows] == [3, 40]
    assert rows[0]["alpha"] is None and rows[0]["alpha_nassar"] is None
    assert "too few ranks to fit" in rows[0]["not_measured"]
    assert rows[1]["alpha"] == 0.5 and rows[1]["alpha_nassar"] == 0.6  # the last: the "test" spectrum
    # a file without layer attributes has no per-layer alphas
    io.save(tmp_path / "one.h5", model_kind="test-net", representations={"test": wide.astype(np.float32)})
    assert _layer_spectra(tmp_path / "one.h5", [2, 30], last) == []


def test_a_killed_training_unit_resumes_from_its_checkpoint(tmp_path, fashion_mnist_available, monkeypatch):
    """A study stopped mid-fit (here: the second checkpoint write fails, as if the process died)
    continues each training unit from its last checkpoint on --resume and ends with the files of
    an uninterrupted study."""
    import importlib

    from bioreps.layers import HebbianWTA
    from bioreps.studies.execute import CHECKPOINT_DIR, UnitError

    def study(name):
        cfg = tiny_study(tmp_path, seeds=[0], output=str(tmp_path / name))
        cfg["models"] = cfg["models"][:2]  # hebb (3 epochs), mlp (3 epochs)
        cfg["analysis"] = {"attacks": {"methods": ["fgsm"], "eps": [0.0, 0.1], "steps": 1, "n_images": 20},
                           "transfer": False, "cka": "none", "spectrum": {"enabled": False}}
        return cfg

    quiet = dict(progress=False, log=lambda *a: None)
    whole = run_study(study("whole"), **quiet)

    btrain = importlib.import_module("bioreps.baselines.train")  # the module, not the function
    saves = {"hebb": 0, "mlp": 0}
    layer_save, torch_save = HebbianWTA.save, btrain._atomic_torch_save

    def dying_layer_save(self, path, **kw):
        saves["hebb"] += 1
        if saves["hebb"] == 2:  # killed while checkpointing epoch 2: epoch 1's checkpoint stays
            raise RuntimeError("killed")
        return layer_save(self, path, **kw)

    def dying_torch_save(obj, path):
        saves["mlp"] += 1
        if saves["mlp"] == 2:
            raise RuntimeError("killed")
        return torch_save(obj, path)

    monkeypatch.setattr(HebbianWTA, "save", dying_layer_save)
    monkeypatch.setattr(btrain, "_atomic_torch_save", dying_torch_save)
    with pytest.raises(UnitError, match="'hebb'"):
        run_study(study("killed"), **quiet)
    units = tmp_path / "killed" / "units"
    assert list((units / "train+hebb+0" / CHECKPOINT_DIR).glob("*/model.h5"))
    # the second attempt: hebb resumes (epochs 2 and 3 only) and finishes; mlp dies the same way
    monkeypatch.setattr(HebbianWTA, "save", layer_save)
    epochs_run = []
    run_epoch = HebbianWTA._run_epoch
    monkeypatch.setattr(HebbianWTA, "_run_epoch", lambda self, *a: (epochs_run.append(1), run_epoch(self, *a))[1])
    with pytest.raises(UnitError, match="'mlp'"):
        run_study(study("killed"), resume=True, **quiet)
    assert len(epochs_run) == 2
    assert list((units / "train+mlp+0" / CHECKPOINT_DIR).glob("*/train.pt"))

    monkeypatch.setattr(btrain, "_atomic_torch_save", torch_save)
    saves["mlp"] = 0
    counting = btrain._atomic_torch_save
    monkeypatch.setattr(btrain, "_atomic_torch_save",
                        lambda obj, path: (saves.__setitem__("mlp", saves["mlp"] + 1), counting(obj, path))[1])
    resumed = run_study(study("killed"), resume=True, **quiet)
    assert saves["mlp"] == 2  # epochs 2 and 3 only
    for name, where in (("hebb", "epoch 1"), ("mlp", "epoch 1")):
        record = json.loads((units / f"train+{name}+0" / "unit.json").read_text())
        assert record["resumed_from"] == where, record
        assert json.loads((units / f"train+{name}+0" / "train.json").read_text())["resumed_from"] == where
        assert not (units / f"train+{name}+0" / CHECKPOINT_DIR).exists()
        # the same model as the uninterrupted study: the same representations
        with io.load(units / f"train+{name}+0" / "model.h5") as a, \
                io.load(tmp_path / "whole" / "units" / f"train+{name}+0" / "model.h5") as b:
            for split in ("train", "test"):
                np.testing.assert_array_equal(a.representations[split].to_numpy(),
                                              b.representations[split].to_numpy())
    assert _figures(resumed) == _figures(whole)
    assert "(resumed from epoch 1)" in (tmp_path / "killed" / "report.html").read_text()


@pytest.mark.parametrize("ensembles", [True, False])
def test_a_killed_spiking_unit_resumes_from_its_checkpoints(tmp_path, fashion_mnist_available, monkeypatch,
                                                            ensembles):
    """The same for a spiking layer, which checkpoints by samples (every tenth of its rows),
    trained as one ensemble of its seeds or seed by seed."""
    from bioreps.layers import SpikingWTA
    from bioreps.studies.execute import CHECKPOINT_DIR, UnitError

    _fashion_slice(tmp_path / "fm", 30, 20)
    quiet = dict(progress=False, log=lambda *a: None)
    whole = run_study(spiking_study(tmp_path, "whole", ensembles=ensembles), **quiet)
    calls = {"save": 0, "rows": 0}
    save, present = SpikingWTA.save, SpikingWTA._present_request

    def dying_save(self, path, **kw):
        calls["save"] += 1
        if calls["save"] == 3:
            raise RuntimeError("killed")
        return save(self, path, **kw)

    monkeypatch.setattr(SpikingWTA, "save", dying_save)
    with pytest.raises(UnitError, match="'dc'"):
        run_study(spiking_study(tmp_path, "killed", ensembles=ensembles), **quiet)
    unit = "ensemble+dc" if ensembles else "train+dc+0"
    units = tmp_path / "killed" / "units"
    assert list((units / unit / CHECKPOINT_DIR).rglob("*.h5"))
    monkeypatch.setattr(SpikingWTA, "save", save)

    def counting(self, request, *a, **kw):
        calls["rows"] += len(request["X"])
        return present(self, request, *a, **kw)

    monkeypatch.setattr(SpikingWTA, "_present_request", counting)
    resumed = run_study(spiking_study(tmp_path, "killed", ensembles=ensembles), resume=True, **quiet)
    assert 0 < calls["rows"] < 60  # less than both seeds' 30 rows again: training continued
    record = json.loads((units / unit / "unit.json").read_text())
    assert "resumed_from" in record and not (units / unit / CHECKPOINT_DIR).exists()
    assert _figures(resumed) == _figures(whole)
    for seed in (0, 1):
        a = SpikingWTA.load(units / f"train+dc+{seed}" / "model.h5")
        b = SpikingWTA.load(tmp_path / "whole" / "units" / f"train+dc+{seed}" / "model.h5")
        np.testing.assert_array_equal(a.weights_, b.weights_)
