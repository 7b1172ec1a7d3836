"""The simulator's shared arrays: one per block and source line, whatever the thread timing.

numba-cuda's simulator creates a block's shared array on the first thread's request with no lock
between its lookup and its store, so threads that ask at once can each get a private array (the
CI flakes of the CUDA-simulator kernel checks). ``bioreps.kernels.cuda._common`` installs a locked
version under ``NUMBA_ENABLE_CUDASIM=1``. These checks open the race window on purpose (a slow
``numpy.empty`` between lookup and store) so the unlocked code fails every time, not one run in 14.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = r"""
import json, sys, threading, time
import numpy as np
from numba import cuda
from numba.cuda.simulator import kernelapi
import bioreps.kernels.cuda._common as common

locked = kernelapi.FakeCUDAShared.array
real_empty = np.empty

def slow_empty(*a, **k):
    time.sleep(0.002)  # the window between the lookup and the store, held open
    return real_empty(*a, **k)

def distinct(method, n_threads=16):
    shared = kernelapi.FakeCUDAShared(0)
    got, start = [], threading.Barrier(n_threads)
    def ask():
        start.wait()
        got.append(id(method(shared, (8,), np.float64)))  # one source line, as a kernel's
    threads = [threading.Thread(target=ask) for _ in range(n_threads)]
    np.empty = slow_empty
    try:
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        np.empty = real_empty
    return len(set(got))

@cuda.jit
def block_sum(out):
    sh = cuda.shared.array(32, np.float64)
    t = cuda.threadIdx.x
    sh[t] = t + 1.0
    cuda.syncthreads()
    if t == 0:
        s = 0.0
        for i in range(32):
            s += sh[i]
        out[cuda.blockIdx.x] = s

np.empty = slow_empty
try:
    out = np.zeros(3)
    block_sum[3, 32](out)
finally:
    np.empty = real_empty

print(json.dumps(dict(
    installed=bool(getattr(locked, "_bioreps_locked", False)),
    simulator_as_shipped=distinct(locked._original),
    locked=distinct(locked),
    locked_again=(common._lock_simulator_shared_arrays(), kernelapi.FakeCUDAShared.array is locked)[1],
    kernel_sums=out.tolist(),
    dynamic=int(kernelapi.FakeCUDAShared(16).array(0, np.dtype(np.float32)).size),
)))
"""


@pytest.fixture(scope="module")
def res():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_lock_is_installed_under_the_simulator(res):
    assert res["installed"]
    assert res["locked_again"]  # importing or calling again does not wrap twice


def test_the_simulator_as_shipped_hands_out_private_arrays(res):
    # the race is real: with the window held open, the threads of one block disagree
    assert res["simulator_as_shipped"] > 1


def test_the_locked_version_gives_every_thread_the_same_array(res):
    assert res["locked"] == 1


def test_a_block_reduction_sees_every_thread(res):
    assert res["kernel_sums"] == [32 * 33 / 2] * 3


def test_dynamic_shared_memory_still_goes_to_the_simulator(res):
    assert res["dynamic"] == 4  # 16 bytes as float32
