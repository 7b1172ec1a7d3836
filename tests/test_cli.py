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
