"""The command line: datasets, inspect, run, and clear one-line errors with exit status 2."""

import numpy as np
import pytest

from bioreps import io
from bioreps.cli import main


def test_inspect_prints_a_summary(tmp_path, capsys):
    path = tmp_path / "m.h5"
    io.save(path, model_kind="hebbian-wta", model_arrays={"weights": np.ones((3, 4), np.float32)},
            hyperparameters={"p": 3.0, "k": 7},
            representations={"test": {"activations": np.zeros((5, 3), np.float32), "labels": np.arange(5)}})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hebbian-wta" in out and "5 x 3" in out and "weights  float32 (3, 4)" in out


def test_inspect_refuses_garbage_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.h5" in err and "Traceback" not in err


def test_run_missing_config(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_subcommand_is_refused():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_datasets_lists_fashion_mnist(capsys, fashion_mnist_available):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("fashion-mnist"))
    assert "yes" in line and "60000" in line and "10000" in line
    assert any(l.startswith("cifar10") for l in out.splitlines())


def _powerlaw_file(path, alpha, seed, n=3000, d=200, labels=True, rotate=None):
    from bioreps.data import make_powerlaw

    X = make_powerlaw(n, d, alpha=alpha, random_state=seed).astype(np.float32)
    if rotate is not None:
        X = X @ rotate
    rep = {"activations": X}
    if labels:
        rep["labels"] = np.arange(n) % 10
    io.save(path, model_kind="pixels", representations={"test": rep})
    return X


def test_analyze_recovers_the_exponent_and_writes_json_and_plots(tmp_path, capsys):
    """`bioreps analyze` fits alpha of a known power-law representation (ranks inside the
    well-estimated range) and writes JSON + PNGs beside the file."""
    import json

    _powerlaw_file(tmp_path / "pl.h5", alpha=1.0, seed=0)
    assert main(["analyze", str(tmp_path / "pl.h5"), "--ranks", "2", "40"]) == 0
    out = capsys.readouterr().out
    assert "alpha 1.0" in out or "alpha 0.9" in out
    res = json.loads((tmp_path / "pl.test.analysis.json").read_text())
    assert abs(res["spectrum"]["alpha"] - 1.0) < 0.05
    assert res["spectrum"]["ranks_used"] == [2, 40]
    assert res["n_samples"] == 3000 and res["n_units"] == 200
    # signed activity: selectivity is refused with a reason, not computed
    assert "signed" in res["selectivity"]["skipped"]
    assert (tmp_path / "pl.test.spectrum.png").stat().st_size > 1000


def test_analyze_selectivity_of_a_one_hot_code(tmp_path):
    """Units that respond to exactly one class have selectivity index 1."""
    from bioreps.studies.report import analyze_file

    y = np.arange(1000) % 10
    R = np.eye(10, dtype=np.float32)[y] * 3.0
    R = np.concatenate([R, np.random.default_rng(0).random((1000, 40), dtype=np.float32)], axis=1)
    io.save(tmp_path / "onehot.h5", model_kind="pixels",
            representations={"test": {"activations": R, "labels": y}})
    res = analyze_file(tmp_path / "onehot.h5", ranks=(2, 20), plots=False)
    sel = res["selectivity"]
    assert sel["quantiles"]["0.9"] > 0.99  # the ten one-hot units
    assert sel["n_silent_units"] == 0


def test_compare_cka_of_identical_and_rotated_representations(tmp_path, capsys):
    """Linear CKA is 1 between a representation and an orthogonal rotation of it, and the
    compare command refuses files over different samples."""
    import json

    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((200, 200)))
    _powerlaw_file(tmp_path / "a.h5", alpha=1.0, seed=3)
    _powerlaw_file(tmp_path / "b.h5", alpha=1.0, seed=3, rotate=q.astype(np.float32))
    _powerlaw_file(tmp_path / "c.h5", alpha=2.0, seed=4)
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), str(tmp_path / "c.h5"),
                 "--no-plots"]) == 0
    res = json.loads((tmp_path / "compare.json").read_text())
    M = np.array(res["cka_linear"])
    assert M.shape == (3, 3) and np.allclose(np.diag(M), 1)
    assert M[0, 1] > 0.999 and M[0, 2] < 0.5
    assert np.allclose(M, M.T)

    _powerlaw_file(tmp_path / "short.h5", alpha=1.0, seed=3, n=500)
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "short.h5")]) == 2
    assert "not over the same samples" in capsys.readouterr().err


def test_analyze_unknown_split_is_a_one_line_error(tmp_path, capsys):
    _powerlaw_file(tmp_path / "pl.h5", alpha=1.0, seed=0, n=300)
    assert main(["analyze", str(tmp_path / "pl.h5"), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "no representation 'train'" in err and "test" in err


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (tiny models on a shared machine); the caller's count is
    restored afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_compare_with_robustness_attacks_the_files_models(tmp_path, capsys, fashion_mnist_available,
                                                          one_torch_thread):
    """`bioreps compare --robustness` rebuilds the classifiers the files hold, attacks them
    (eps 0 equals clean accuracy; PGD lowers accuracy) and fills a transfer matrix whose diagonal
    is the white-box accuracy; files without a classifier are listed as skipped."""
    import json

    from bioreps import baselines, data

    X, y = data.load("fashion-mnist", "train")
    Xt, yt = data.load("fashion-mnist", "test")
    for seed in (0, 1):
        net = baselines.MLP(sizes=(784, 32, 10), seed=seed)
        baselines.train(net, X[:3000], y[:3000], epochs=2, batch_size=100, lr=3e-3, seed=seed, progress=False)
        net.export(tmp_path / f"mlp{seed}.h5", {"test": (Xt[:200], yt[:200])}, dataset="fashion-mnist")
    io.save(tmp_path / "pix.h5", model_kind="pixels",
            representations={"test": {"activations": Xt[:200], "labels": yt[:200]}})
    files = [str(tmp_path / n) for n in ("mlp0.h5", "mlp1.h5", "pix.h5")]
    assert main(["compare", *files, "--robustness", "--eps", "0.1", "--n-attack", "100", "--no-plots",
                 "--threads", "1"]) == 0  # the command sets its own count (default: all cores)
    out = capsys.readouterr().out
    assert "transfer" in out and "skipped" in out
    rob = json.loads((tmp_path / "compare.json").read_text())["robustness"]
    assert rob["n_samples"] == 100 and set(rob["curves"]) == {"mlp0", "mlp1"} and "pix" in rob["skipped"]
    for curve in rob["curves"].values():
        assert curve["accuracy"]["pgd"][0] == curve["clean_accuracy"] > 0.5
        assert curve["worst_case"][1] < curve["clean_accuracy"] - 0.2
    M = np.array(rob["transfer"]["matrix"])
    assert M.shape == (2, 2)
    for i, label in enumerate(rob["transfer"]["names"]):
        assert abs(M[i, i] - rob["curves"][label]["accuracy"]["pgd"][1]) < 1e-9
    assert M[0, 1] > M[0, 0] and M[1, 0] > M[1, 1]  # transferred examples are weaker than white-box


def test_file_classifier_of_a_hebbian_file_is_differentiable(tmp_path, fashion_mnist_available):
    """A Hebbian layer file becomes layer + softmax readout (trained on its train split) as one
    torch module that gradient attacks can use."""
    import torch

    from bioreps import data
    from bioreps.studies.report import file_classifier
    from bioreps.layers import HebbianWTA

    X, y = data.load("fashion-mnist", "train")
    layer = HebbianWTA(n_units=30, k=2, center=True, input_norm=2, backend="cpu", random_state=0,
                       progress=False).fit(X[:1000], epochs=2)
    layer.export(tmp_path / "h.h5", {"train": (X[:1000], y[:1000])}, dataset="fashion-mnist")
    module, how = file_classifier(tmp_path / "h.h5")
    assert "readout" in how
    xb = torch.from_numpy(X[1000:1200]).requires_grad_(True)
    logits = module(xb)
    assert logits.shape == (200, 10)
    # the same readout (same seed) on the layer's own transform gives the same predictions
    from bioreps.readout import LinearReadout

    direct = LinearReadout(epochs=20, random_state=0, progress=False).fit(layer.transform(X[:1000]), y[:1000],
                                                                       n_classes=10)
    pred = direct.predict(layer.transform(X[1000:1200]))
    assert (logits.argmax(1).numpy() == pred).mean() > 0.99
    assert (pred == y[1000:1200]).mean() > 0.15  # better than chance (a tiny 2-epoch layer)
    logits.sum().backward()
    assert xb.grad is not None and torch.isfinite(xb.grad).all() and xb.grad.abs().sum() > 0
    io.save(tmp_path / "p.h5", model_kind="pixels", representations={"test": X[:10]})
    assert file_classifier(tmp_path / "p.h5")[0] is None


def test_analyze_and_compare_runner_files_from_two_folders(tmp_path):
    """Two runs' `model.h5` files analysed into one folder keep separate outputs (named by their
    folders), and RSA leaves out rows that are constant (silent) in some representation."""
    import json

    from bioreps.studies.report import analyze_file, compare_files

    rng = np.random.default_rng(0)
    y = np.arange(400) % 10
    for name in ("run_a", "run_b"):
        (tmp_path / name).mkdir()
        R = rng.random((400, 30)).astype(np.float32)
        R[:3] = 0.0  # three silent samples
        io.save(tmp_path / name / "model.h5", model_kind="pixels",
                representations={"test": {"activations": R, "labels": y}})
    out = tmp_path / "out"
    a = analyze_file(tmp_path / "run_a" / "model.h5", ranks=(2, 20), out_dir=out, plots=False)
    b = analyze_file(tmp_path / "run_b" / "model.h5", ranks=(2, 20), out_dir=out, plots=False)
    assert a["files"]["json"] != b["files"]["json"]
    assert {p.name for p in out.iterdir()} == {"run_a.test.analysis.json", "run_b.test.analysis.json"}
    res = compare_files([tmp_path / "run_a" / "model.h5", tmp_path / "run_b" / "model.h5"], out_dir=out,
                        plots=False)
    assert res["names"] == ["run_a", "run_b"]
    assert res["rsa_samples"] == 397 and res["rsa_rows_left_out_constant"] == 3
    assert json.loads((out / "compare.json").read_text())["rsa_spearman_correlation"][0][0] == 1.0
