"""Subprocess scaffolding shared by the CUDA kernel tests (``test_hebbian_cuda.py``,
``test_softhebb_kernels.py``).

Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, and other test modules in the
same pytest process import Numba first; setting the variable in a test module would also leak into
every later module (``backend="auto"`` would pick the slow simulator). So a CUDA test module runs
itself as a script in a subprocess (``python tests/test_x.py sim|gpu``), with
``NUMBA_ENABLE_CUDASIM=1`` for the simulator and without it for a real GPU; the script prints its
measurements as JSON on its last line, and :func:`results_fixture` hands them to the tests.
:func:`typecheck` types and lowers kernels for the real CUDA target (no GPU needed) in another
subprocess without the simulator.

Import from a test module as ``import _cudasim`` (pytest puts ``tests/`` on the path, and a test
file run as a script has its own folder on the path).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# what a module of kernels/cuda/ may import (checked on its source text by the tests)
ALLOWED_KERNEL_IMPORTS = {"__future__", "math", "numpy", "numba", ".._config", "._common"}


def rel(a, ref):
    """Relative Frobenius distance ``||a - ref|| / ||ref||`` in float64."""
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64) - ref) / np.linalg.norm(ref))


def kernel_module_imports(name):
    """The modules that ``kernels/cuda/<name>.py`` imports, read from its source text."""
    with open(os.path.join(HERE, os.pardir, "kernels", "cuda", name + ".py")) as f:
        src = f.read()
    return {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}


def assert_twin_signatures(cpu, gpu, epoch, buffers):
    """The CUDA module ``gpu`` has the CPU module's driver ``epoch`` signature, and its ``buffers``
    class takes the CPU class's parameters first (in order)."""
    assert inspect.signature(getattr(gpu, epoch)) == inspect.signature(getattr(cpu, epoch))
    cpu_buf = list(inspect.signature(getattr(cpu, buffers)).parameters)
    assert list(inspect.signature(getattr(gpu, buffers)).parameters)[:len(cpu_buf)] == cpu_buf


def _env_without_sim():
    return {key: v for key, v in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}


def gpu_present():
    """Whether a real CUDA GPU answers (asked in a subprocess without the simulator)."""
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        return False
    probe = subprocess.run([sys.executable, "-c", "from numba import cuda; print(int(cuda.is_available()))"],
                           env=_env_without_sim(), capture_output=True, text=True, timeout=120)
    return probe.returncode == 0 and probe.stdout.strip().endswith("1")


def run_checks(script, mode):
    """Run ``python script mode`` (``mode`` "sim": with ``NUMBA_ENABLE_CUDASIM=1``; "gpu": without)
    in ``tests/``; fail the test when it fails, else return the JSON of its last output line."""
    env = dict(os.environ)
    if mode == "sim":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, os.path.abspath(script), mode], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"the {mode} CUDA checks failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def results_fixture(script):
    """A module-scoped fixture ``res``, parametrized over "sim" and "gpu" (marked ``gpu``; skipped
    where there is no GPU), holding :func:`run_checks` of ``script`` in that mode. Assign it in the
    test module: ``res = _cudasim.results_fixture(__file__)``. Both modes take minutes: every
    test using ``res`` is marked ``slow`` (``-m "not slow"`` leaves them out)."""

    @pytest.fixture(scope="module", name="res",
                    params=[pytest.param("sim", marks=pytest.mark.slow),
                            pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.slow])])
    def res(request):
        if request.param == "gpu" and not gpu_present():
            pytest.skip("no CUDA GPU here")
        return run_checks(script, request.param)

    return res


_TYPECHECK_HEAD = r"""
import sys, types
try:
    import numba.cuda.dispatcher as dispatcher
    from numba import types as t
    from numba.cuda.compiler import _compile_pyfunc_with_fixup
except ImportError as exc:  # numba-cuda's internals moved: nothing to check with
    print("SKIP", exc)
    sys.exit(0)
# device functions ask the current device for its compute capability; there may be no device
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
"""

_TYPECHECK_TAIL = r"""
for kern, sig in kernels:
    try:
        lib, _ = _compile_pyfunc_with_fixup(kern.py_func, t.void(*sig), device=False, cc=(9, 0), opt=True,
                                            abi="numba")
    except TypeError as exc:  # the private signature changed
        print("SKIP", exc)
        sys.exit(0)
    assert "define" in lib.get_llvm_str()
print("OK", len(kernels))
"""


def typecheck(kernels_src):
    """Type and lower kernels for the real CUDA target (to LLVM IR; no GPU, driver or NVVM needed)
    in a subprocess without the simulator. ``kernels_src`` is Python that, with ``t`` bound to
    ``numba.types``, imports the kernels and sets ``kernels`` to a list of ``(kernel, argument
    types)``. Asserts that every one compiles; skips when numba-cuda's internals changed."""
    proc = subprocess.run([sys.executable, "-c", _TYPECHECK_HEAD + kernels_src + _TYPECHECK_TAIL],
                          env=_env_without_sim(), cwd=HERE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    if proc.stdout.startswith("SKIP"):
        pytest.skip(f"numba-cuda internals changed: {proc.stdout.strip()}")
    assert proc.stdout.startswith("OK")
