"""The hooks of tests/conftest.py: under CI a skipped test fails (naming the reason) unless it is
marked ``gpu``; elsewhere skips stay skips; Hypothesis is derandomized and writes nothing into the
current folder. Run on a tiny inner test suite that uses a copy of our conftest, in a subprocess
(the conftest reads ``CI`` when imported)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

INNER_TESTS = '''
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("needs the frobnicator")

@pytest.mark.gpu
def test_gpu_skips():
    pytest.skip("no CUDA GPU here")

@pytest.mark.parametrize("mode", ["sim", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_modes(mode):
    if mode == "gpu":
        pytest.skip("no CUDA GPU here")
'''

INNER_MODULE_SKIP = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed_anywhere")

def test_never_collected():
    pass
'''


@pytest.fixture
def inner(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a real GPU\n")
    pytester.makepyfile(test_inner=INNER_TESTS, test_inner_optional=INNER_MODULE_SKIP)
    return pytester


def test_skips_fail_under_ci_unless_marked_gpu(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    # a module skipped at collection becomes a collection error, which stops the session: go on
    # here to see the other outcomes too
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors")
    result.assert_outcomes(passed=2, failed=1, skipped=2, errors=1)
    result.stdout.fnmatch_lines([
        "*test_inner.py::test_skips was skipped under CI*only tests marked gpu may skip*needs the frobnicator*",
    ])
    result.stdout.re_match_lines([r".*test_inner_optional\.py.*skipped under CI.*a_module_that_is_not_installed"])
    assert result.ret != 0


def test_skips_stay_skips_outside_ci(inner, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=2, skipped=4)
    assert result.ret == 0


INNER_HYPOTHESIS = '''
from hypothesis import given, strategies as st

@given(st.integers(0, 10**9))
def test_draws(x):
    print("drawn", x)
'''


def test_hypothesis_is_derandomized_and_writes_nothing_into_the_current_folder(pytester, monkeypatch):
    """Two runs of a Hypothesis test without its own settings draw the same examples, and the
    folder pytest runs in (the inner suite's) holds only its own files afterwards (no
    ``.hypothesis/``)."""
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner_hypothesis=INNER_HYPOTHESIS)
    before = {p.name for p in pytester.path.iterdir()}
    runs = []
    for _ in range(2):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
        result.assert_outcomes(passed=1)
        runs.append([line for line in result.outlines if line.startswith("drawn ")])
    assert len(runs[0]) > 10 and runs[0] == runs[1]
    # pytester's own files (the runs' output and base temporaries) aside, nothing new
    new = {p.name for p in pytester.path.iterdir()} - before - {"__pycache__", "stdout", "stderr"}
    assert {n for n in new if not n.startswith("runpytest-")} == set()


def test_not_slow_leaves_out_the_simulator_and_end_to_end_tests(tmp_path):
    """``-m "not slow"`` (the README's quick loop) deselects the CUDA-simulator results (the
    ``res`` fixture of tests/_cudasim.py) and the end-to-end runs on Fashion-MNIST, and keeps the
    fast tests of the same modules (issue 16: the marker was declared and never used)."""
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "-m", "not slow", str(here / "test_spiking_cuda.py"), str(here / "test_experiments.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert proc.returncode == 0 and ids, proc.stdout[-3000:] + proc.stderr[-3000:]
    slow = [i for i in ids if i.endswith(("[sim]", "[gpu]")) or "end_to_end" in i or "interrupted_and_resumed" in i]
    assert not slow, slow


def test_a_test_that_leaves_torch_threads_changed_fails(pytester):
    """tests/conftest.py fails a test that changes torch's thread count without restoring it
    (issue 16: test_cli set the threads and never restored them), and restores the count."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_threads="""
        import torch

        N = torch.get_num_threads()

        def test_leaks():
            torch.set_num_threads(N + 1)

        def test_restores():
            old = torch.get_num_threads()
            torch.set_num_threads(N + 1)
            torch.set_num_threads(old)

        def test_after_a_leak_the_count_is_back():
            assert torch.get_num_threads() == N
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_leaks left torch's thread count at *"])
