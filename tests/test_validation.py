"""The shared argument checks (bioreps._validation): one wording and one exception type for
every caller, and the callers that lost their own copies."""

from __future__ import annotations

import numpy as np
import pytest

from bioreps import data
from bioreps._validation import check_float, check_int, check_random_state


def test_check_int():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(0, "steps", 0) == 0
    with pytest.raises(ValueError, match=r"^n_units must be >= 1, got 0$"):
        check_int(np.int64(0), "n_units")
    with pytest.raises(ValueError, match=r"^k must be >= 2, got 1$"):
        check_int(1, "k", 2)
    for bad, kind in [(2.5, "float"), (True, "bool"), ("3", "str"), (None, "NoneType")]:
        with pytest.raises(TypeError, match=rf"^n must be an int, got {kind}$"):
            check_int(bad, "n")


def test_check_float():
    assert check_float(np.float32(0.5), "lr") == 0.5 and type(check_float(1, "lr")) is float
    with pytest.raises(ValueError, match=r"^noise must be a finite number >= 0, got -0\.1$"):
        check_float(-0.1, "noise")
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got 0\.0$"):
        check_float(0.0, "lr", strict=True)
    with pytest.raises(ValueError, match=r"^eps must be a finite number >= 0, got nan$"):
        check_float(float("nan"), "eps")
    with pytest.raises(ValueError, match=r"^eps must be a finite number >= 0, got inf$"):
        check_float(np.inf, "eps")
    for bad, kind in [("0.1", "str"), (True, "bool"), (None, "NoneType"), ([0.1], "list")]:
        with pytest.raises(TypeError, match=rf"^eps must be a number, got {kind}$"):
            check_float(bad, "eps")


def test_check_random_state_names_the_argument():
    g = np.random.default_rng(0)
    assert check_random_state(g) is g
    assert check_random_state(5).random() == np.random.default_rng(5).random()
    assert check_random_state(np.random.SeedSequence(5), name="seed").random() == np.random.default_rng(5).random()
    with pytest.raises(ValueError, match=r"^random_state must be a non-negative int, got -1$"):
        check_random_state(-1)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative int, got -1$"):
        check_random_state(np.int64(-1), name="seed")
    with pytest.raises(TypeError, match=r"^seed must be None, an int, a SeedSequence or a numpy Generator, "
                                        r"got str$"):
        check_random_state("0", name="seed")
    with pytest.raises(TypeError, match=r"^random_state must be None, an int, a SeedSequence or a numpy "
                                        r"Generator, got float$"):
        check_random_state(1.5)


def test_former_copies_use_the_shared_wording():
    """The callers whose own copies were removed raise the shared messages and types."""
    with pytest.raises(TypeError, match=r"^noise must be a number, got str$"):
        data.make_classes(10, 4, 2, noise="0.1")
    with pytest.raises(ValueError, match=r"^alpha must be a finite number >= 0, got -1\.0$"):
        data.make_powerlaw(10, 4, alpha=-1)
    from bioreps.layers import HebbianWTA

    X = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    with pytest.raises(TypeError, match=r"^n_units must be an int, got float$"):
        HebbianWTA(n_units=2.5).fit(X, epochs=1)
    torch = pytest.importorskip("torch")
    from bioreps.analysis import robustness

    model = torch.nn.Linear(4, 2)
    y = np.zeros(8, dtype=np.int64)
    with pytest.raises(ValueError, match=r"^n_queries must be >= 1, got 0$"):
        robustness.square_attack(model, X, y, 0.1, n_queries=0)
    with pytest.raises(TypeError, match=r"^eps must be a number, got str$"):
        robustness.fgsm(model, X, y, "0.1")
    with pytest.raises(TypeError, match=r"^seed must be None, an int, a SeedSequence or a numpy Generator"):
        robustness.square_attack(model, X, y, 0.1, n_queries=1, seed="x")
