"""Packaging: version, the kernels package mapping, the console script and ``python -m``."""

import os
import subprocess
import sys

import bioreps


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version_is_a_release_string():
    parts = bioreps.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_kernels_ship_as_bioreps_kernels_and_not_top_level(tmp_path):
    import bioreps.kernels
    from bioreps.kernels import _config

    assert bioreps.kernels.__name__ == "bioreps.kernels"
    assert "nnan" not in _config.FASTMATH and "ninf" not in _config.FASTMATH
    # From a neutral folder (not the repo root) a top-level `kernels` must not be importable.
    proc = _run("-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('kernels') is not None)",
                cwd=tmp_path)
    assert proc.returncode == 0, "a top-level `kernels` package is importable after install"


def test_python_dash_m_and_console_script_agree(tmp_path):
    proc = _run("-m", "bioreps", "--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bioreps {bioreps.__version__}"
    script = os.path.join(os.path.dirname(sys.executable), "bioreps")
    if os.path.exists(script):
        out = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == f"bioreps {bioreps.__version__}"


def test_import_bioreps_is_lazy(tmp_path):
    proc = _run("-c", "import sys, bioreps; print('torch' in sys.modules, 'numba' in sys.modules)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_every_package_folder_is_listed_in_pyproject():
    """The package list is explicit (kernels/ is mapped to bioreps.kernels): a new subpackage
    that is not listed would be missing from wheels."""
    import pathlib
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("bioreps", "bioreps"), ("kernels", "bioreps.kernels")):
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def _floors():
    """``{distribution: lowest version}`` from every ``>=`` in pyproject's dependencies and extras
    (the lowest where several lists name a distribution)."""
    import pathlib
    import re

    from packaging.version import Version

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    floors = {}
    for spec in specs:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)", spec.split(";")[0])
        if m:
            name = m.group(1).lower()
            if name not in floors or Version(m.group(3)) < Version(floors[name]):
                floors[name] = m.group(3)
    return floors


# floors CI's lowest environment does not install, each with the reason; every other floor must
# be pinned in .ci/lowest.txt
UNTESTED_FLOORS = {
    # the cuda extra's floor, for GPU machines with a CUDA 12 driver; CI has no GPU, and typing
    # kernels for the real target without a driver (tests/_cudasim.py) needs the test extra's 13.1
    "cuda-bindings": "12.9.1",
    # torch: .ci/run installs the floor's build first (checked below); tomli: Python < 3.11 only
    "torch": None, "tomli": None,
}


def test_ci_lowest_environment_pins_the_declared_floors():
    """``.ci/lowest.txt`` (CI's lowest environment) installs, for every floor in pyproject.toml
    (the lowest where several lists name one; ``UNTESTED_FLOORS`` aside, each with its reason), a
    release of that floor's series: the floors in pyproject.toml are the versions CI tests."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    pins = {}
    for line in (root / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    floors = _floors()
    for name, floor in floors.items():
        if name in UNTESTED_FLOORS:
            assert UNTESTED_FLOORS[name] in (None, floor), (
                f"UNTESTED_FLOORS names {name} {UNTESTED_FLOORS[name]}, pyproject's floor is {floor}")
            continue
        assert name in pins, f".ci/lowest.txt does not pin {name} (pyproject's floor {floor})"
        assert pins[name].split(".")[:len(floor.split("."))] == floor.split("."), (
            f"{name}: pyproject's floor is {floor} but CI's lowest environment installs {pins[name]}")
    # torch's floor is the build .ci/run installs first
    ci = (root / ".ci" / "run").read_text()
    assert f"torch=={floors['torch']}.0" in ci


def test_ci_runs_the_suite_where_blas_rows_differ_and_from_another_folder():
    """``.ci/run`` runs the newest environment's suite with OpenBLAS's Haswell kernels, whose
    float32 products depend on the number of rows multiplied at once (issue 11: tests comparing
    such results at rtol=1e-6 failed on users' machines, never on CI's), and the lowest
    environment's from an empty folder outside the repository, failing when anything is written
    there (issue 16)."""
    import pathlib

    ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    calls = [line.strip() for line in ci.splitlines() if "run_suite " in line and not line.lstrip().startswith(("#", "run_suite()"))]
    assert any(c.startswith("OPENBLAS_CORETYPE=Haswell run_suite newest ") for c in calls), calls
    assert any(c.startswith('run_suite lowest .venv-lowest "$away"') for c in calls), calls
    assert 'cd "$away"' in ci and 'ls -A "$away"' in ci  # runs there, and fails on what it wrote
    # the newest environment is what the README's command resolves: no constraints, no pins
    # (issue 11: a suite passing only on CI's pins failed on a fresh install); the lowest is pinned
    envs = [line.strip() for line in ci.splitlines() if line.strip().startswith("make_env ")]
    assert "make_env .venv" in envs, envs
    assert "make_env .venv-lowest -c .ci/lowest.txt" in envs, envs
    # and make_env itself pins nothing beyond the CPU torch: the constraints reach it only as
    # "$@" from the lowest environment's call
    body = ci[ci.index("make_env() {"):ci.index("\n}\n", ci.index("make_env() {"))]
    installs = sorted(line.split("-m pip install", 1)[1].split() for line in body.splitlines()
                      if "-m pip install" in line)
    assert installs == sorted([["-q", "--upgrade", "pip"], ["-q", "torch==2.13.0"],
                               ["-q", '"$@"', "-e", '".[test]"'],
                               ["-q", "--no-deps", "-r", "tests/requirements-references.txt"]]), installs


def test_moved_modules_keep_their_old_names_and_warn(tmp_path):
    """The runner moved to bioreps.studies.run and the file-level analyses to
    bioreps.studies.report; the old module names still import (one release) and warn."""
    code = ("import warnings\n"
            "warnings.simplefilter('error', DeprecationWarning)\n"
            "for old in ('bioreps.experiments', 'bioreps.analysis.report'):\n"
            "    try:\n"
            "        __import__(old)\n"
            "    except DeprecationWarning as w:\n"
            "        print(old, 'warns:', w)\n"
            "    else:\n"
            "        raise SystemExit(old + ' imported without a DeprecationWarning')\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "import bioreps.experiments as e, bioreps.studies.run as r\n"
            "import bioreps.analysis.report as a, bioreps.studies.report as s\n"
            "assert e.run is r.run and e.ConfigError is r.ConfigError and e._report is r._report\n"
            "assert a.analyze_file is s.analyze_file and a.file_classifier is s.file_classifier\n")
    proc = _run("-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bioreps.studies.run" in proc.stdout and "bioreps.studies.report" in proc.stdout


def test_ci_run_suite_fails_when_the_suite_writes_into_the_folder_it_ran_from(tmp_path):
    """``.ci/run``'s ``run_suite`` itself, run with a stand-in environment: from FOLDER it runs
    pytest there and fails when the suite left anything in it; a suite that writes nothing passes
    (the text checks above cannot tell whether that check still runs)."""
    import pathlib
    import subprocess

    ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    start = ci.index("run_suite() {")
    func = ci[start:ci.index("\n}\n", start) + 3]
    venv, away = tmp_path / "venv", tmp_path / "away"
    (venv / "bin").mkdir(parents=True)
    away.mkdir()

    def run_suite(python_body):
        (venv / "bin" / "activate").write_text(f"bioreps() {{ :; }}\npython() {{ {python_body}; }}\n")
        script = f'set -euo pipefail\n{func}\nrun_suite lowest "{venv}" "{away}"\n'
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    proc = run_suite("touch left-behind")
    assert proc.returncode != 0, proc
    assert "wrote into the folder it ran from" in proc.stderr and "left-behind" in proc.stderr, proc.stderr
    (away / "left-behind").unlink()
    proc = run_suite("[ \"$(pwd)\" = " + f'"{away}" ]')  # runs pytest from FOLDER, writes nothing
    assert proc.returncode == 0, proc
