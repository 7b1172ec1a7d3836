"""Shared fixtures. Progress bars are off in tests; CUDA tests use the simulator unless ``-m gpu``.

Hypothesis runs derandomized and without its example database, so a run is repeatable and writes
nothing into the current folder (no ``.hypothesis/``). A test that changes torch's thread count and
does not restore it fails. Under CI (``CI=true``) a skipped test fails,
naming the skip's reason, unless it is marked ``gpu`` (real-GPU variants): CI installs every
optional test dependency and the dataset, so a skip there means a check silently did not run.
"""

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("BIOREPS_PROGRESS", "0")

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

settings.register_profile("bioreps", derandomize=True, database=None)
settings.load_profile("bioreps")


_HYPOTHESIS_HOME = []


def pytest_configure(config):
    # Hypothesis caches more than its database (e.g. ``constants/``, written while collecting)
    # under ``./.hypothesis``: give it a temporary folder instead, unless the user chose one
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        from hypothesis.configuration import set_hypothesis_home_dir

        _HYPOTHESIS_HOME.append(tempfile.mkdtemp(prefix="bioreps-tests-hypothesis-"))
        set_hypothesis_home_dir(_HYPOTHESIS_HOME[-1])


def pytest_unconfigure(config):
    while _HYPOTHESIS_HOME:
        shutil.rmtree(_HYPOTHESIS_HOME.pop(), ignore_errors=True)


def _skip_reason(longrepr):
    # a skip's longrepr is (path, line, "Skipped: reason")
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_skip_in_ci(report, what):
    report.outcome = "failed"
    report.longrepr = (f"{what} was skipped under CI (CI={os.environ.get('CI')!r}), where every test must run "
                       f"(only tests marked gpu may skip): {_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (IN_CI and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        _fail_skip_in_ci(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # a module-level pytest.importorskip skips while the module is collected
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        _fail_skip_in_ci(report, report.nodeid)


@pytest.fixture(autouse=True)
def _torch_threads_restored(request):
    """A test that sets torch's thread count (a process-wide setting) must restore it: every later
    test would run with it (issue 16). Checked when torch was already imported before the test."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        after = torch.get_num_threads()
        torch.set_num_threads(before)  # so one leak does not fail every later test
        pytest.fail(f"{request.node.nodeid} left torch's thread count at {after} (was {before}): "
                    "restore it (torch.set_num_threads) when the test ends", pytrace=False)


@pytest.fixture(autouse=True)
def _nothing_written_into_the_current_folder(request):
    """A test writes under its ``tmp_path``, never into the folder pytest runs from (issue 16:
    an export to a relative path left a file in the current folder, and the README's command runs
    from the repository root). Names new at the top of that folder fail the test, naming them."""
    import os

    here = os.getcwd()
    before = set(os.listdir(here))
    yield
    new = sorted(set(os.listdir(here)) - before - {".pytest_cache", "__pycache__"})
    if new:
        pytest.fail(f"{request.node.nodeid} wrote {new} into the folder pytest runs from ({here}): "
                    "write under tmp_path instead", pytrace=False)


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
