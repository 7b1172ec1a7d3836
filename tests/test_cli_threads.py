"""``--threads N`` for ``bioreps analyze`` and ``bioreps compare``: numba, torch and BLAS limits
active inside the command, restored afterwards."""

import numpy as np
import pytest

from bioreps import io
from bioreps.cli import build_parser, main


def _blas_threads():
    from threadpoolctl import threadpool_info

    return tuple(sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}))


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_threads_limits_are_active_inside_the_command(tmp_path, monkeypatch, command):
    import numba
    import torch

    from bioreps.studies import report
    from bioreps.studies.execute import _cores, threads

    seen = []

    def record(*args, **kw):
        seen.append((numba.get_num_threads(), torch.get_num_threads(), _blas_threads()))
        return {"spectrum": {"alpha": None}, "split": "test", "n_samples": 1, "n_units": 1, "selectivity": {},
                "files": {"json": "x.json"}, "names": ["a", "b"], "n_samples_used": 1,
                "cka_linear": [[1.0, 0.5], [0.5, 1.0]], "outputs": {"json": "x.json"}}

    monkeypatch.setattr(report, "analyze_file", record)
    monkeypatch.setattr(report, "compare_files", record)
    files = []
    for name in ("a.h5", "b.h5"):
        files.append(str(tmp_path / name))
        io.save(files[-1], model_kind="pixels",
                representations={"test": {"activations": np.ones((40, 30), np.float32),
                                          "labels": np.arange(40) % 4}})
    np.ones((64, 64)) @ np.ones((64, 64))       # BLAS loaded, so threadpoolctl sees it
    with threads(1):                            # outside: 1 thread everywhere; the command asks for 2
        before = (numba.get_num_threads(), torch.get_num_threads(), _blas_threads())
        assert before == (1, 1, (1,))
        assert main([command, *files, "--threads", "2", "--no-plots"]) == 0
        assert seen and set(seen) == {(min(2, numba.config.NUMBA_NUM_THREADS), 2, (2,))}
        assert (numba.get_num_threads(), torch.get_num_threads(), _blas_threads()) == before


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_threads_option_parses_and_defaults_to_all_cores(command):
    parser = build_parser()
    assert parser.parse_args([command, "f.h5", "g.h5", "--threads", "3"]).threads == 3
    assert parser.parse_args([command, "f.h5", "g.h5"]).threads is None     # threads(None): all cores


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_threads_must_be_a_positive_whole_number(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "a.h5", "b.h5", "--threads", bad])
    assert exc.value.code == 2
    assert f"--threads: must be a whole number >= 1, got '{bad}'" in capsys.readouterr().err


def test_threads_none_means_all_cores():
    import torch

    from bioreps.studies.execute import _cores, threads

    old = torch.get_num_threads()
    with threads(1):
        with threads(None):
            assert torch.get_num_threads() == _cores()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
