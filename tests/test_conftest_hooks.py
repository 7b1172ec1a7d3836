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


_COLLECTED = """
import inspect, json, os

def pytest_collection_finish(session):
    items = []
    for item in session.items:
        try:
            src = inspect.getsource(item.function)
        except (OSError, TypeError):
            src = ""
        items.append({"id": item.nodeid, "file": item.path.name, "fixtures": list(item.fixturenames), "src": src,
                      "slow": item.get_closest_marker("slow") is not None})
    with open(os.environ["COLLECTED_JSON"], "w") as f:
        json.dump(items, f)
"""


def _slow_by_what_it_does(item):
    """Why a collected test belongs outside the quick loop, from what it uses, not its name:
    the CUDA simulator or a real GPU (the ``res`` fixture of tests/_cudasim.py), the real CUDA
    compilers (``_cudasim.typecheck``, ``_ptxas``), headless Chromium (the ``chromium``
    fixture), or in tests/test_experiments.py (the pipeline's end-to-end tests) a whole experiment
    on real Fashion-MNIST that is expected to finish. (The runner-safety and usability tests also
    run small experiments on real images, in 1-5 s each: they stay in the quick loop.)"""
    if {"res", "chromium"} & set(item["fixtures"]):
        return "simulator, GPU or browser"
    if "_cudasim.typecheck(" in item["src"] or "_ptxas." in item["src"]:
        return "real CUDA compilers"
    lines = item["src"].splitlines()
    finishing = [i for i, line in enumerate(lines)   # a run not inside ``with pytest.raises(...)``
                 if "experiments.run(" in line and not (i and "pytest.raises" in lines[i - 1])]
    if item["file"] == "test_experiments.py" and "fashion_mnist_available" in item["fixtures"] and finishing:
        return "end to end on Fashion-MNIST"
    return None


def test_not_slow_leaves_out_the_simulator_and_end_to_end_tests(tmp_path):
    """``-m "not slow"`` (the README's quick loop) deselects every test of the whole suite that
    runs the CUDA simulator, a real GPU, the CUDA compilers or a browser, or an experiment end to
    end on Fashion-MNIST, and keeps the fast tests of the same modules (issue 16: the marker was
    declared and never used; a check by test names let an unmarked end-to-end run through)."""
    import json
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    (tmp_path / "collected_plugin.py").write_text(_COLLECTED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
               COLLECTED_JSON=str(tmp_path / "collected.json"))
    # one collection of the whole suite; '-m "not slow"' deselects exactly the items marked slow
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "collected_plugin",
                           "--collect-only", "-q", str(here)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    everything = json.loads((tmp_path / "collected.json").read_text())
    quick = [i for i in everything if not i["slow"]]
    slow = [(i["id"], why) for i in quick if (why := _slow_by_what_it_does(i))]
    assert not slow, slow
    # the rule finds what it is meant to find in the whole suite, and the quick loop keeps the
    # fast tests of the modules that hold slow ones
    found = {_slow_by_what_it_does(i) for i in everything} - {None}
    assert found == {"simulator, GPU or browser", "real CUDA compilers", "end to end on Fashion-MNIST"}, found
    kept = {i["file"] for i in quick}
    assert {"test_spiking_cuda.py", "test_experiments.py", "test_hebbian_cuda.py"} <= kept, kept


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


def test_a_test_that_writes_into_the_current_folder_fails(pytester):
    """tests/conftest.py fails a test that leaves a new file or folder in the folder pytest runs
    from (issue 16: an export to a relative path did; before, only CI's empty-folder run could see
    it), and lets tests write under tmp_path or into a folder they changed to."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_writes="""
        import pathlib

        def test_exports_to_a_relative_path():
            pathlib.Path("model.h5").write_bytes(b"x")

        def test_writes_under_tmp_path(tmp_path):
            (tmp_path / "model.h5").write_bytes(b"x")

        def test_writes_where_it_changed_to(tmp_path, monkeypatch):
            monkeypatch.chdir(tmp_path)
            pathlib.Path("runs").mkdir()
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_exports_to_a_relative_path wrote ?'model.h5'? into the folder pytest runs from*"])


@pytest.mark.slow  # imports numba-cuda's real target in a subprocess
def test_a_moved_numba_cuda_api_skips_the_real_target_check(monkeypatch):
    """tests/_cudasim.typecheck turns numba-cuda's moved internals into a skip, which
    tests/conftest.py fails under CI (test_skips_fail_under_ci_unless_marked_gpu): without the
    skip a moved API would pass silently. Here the private compiler entry point is renamed."""
    import _cudasim

    head = _cudasim._TYPECHECK_HEAD.replace("import _compile_pyfunc_with_fixup", "import _compile_pyfunc_moved_away")
    assert head != _cudasim._TYPECHECK_HEAD
    monkeypatch.setattr(_cudasim, "_TYPECHECK_HEAD", head)
    with pytest.raises(pytest.skip.Exception, match="numba-cuda internals changed.*_compile_pyfunc_moved_away"):
        _cudasim.typecheck("kernels = []\n")
