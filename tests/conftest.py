"""Shared fixtures. Progress bars are off in tests; CUDA tests use the simulator unless ``-m gpu``."""

import os

import numpy as np
import pytest

os.environ.setdefault("BIOREPS_PROGRESS", "0")

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_fashion_mnist():
    """Skip when Fashion-MNIST is absent locally, but fail in CI (which installs it)."""
    from bioreps import data

    if data.locate("fashion-mnist") is None:
        if IN_CI:
            pytest.fail("Fashion-MNIST is missing in CI: .ci/run must install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not found (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def fashion_mnist_available():
    require_fashion_mnist()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
