"""Every CUDA kernel compiled for real hardware in CI, without a GPU: NVVM to PTX, then ``ptxas
-v`` for compute capability 8.0 and 9.0 (tests/_ptxas.py), at the sizes our drivers launch.
The simulator cannot see launch limits: a block whose threads need more registers than a block
has is refused by the driver ("too many resources requested"). Here every block size the code
accepts is checked against the registers and shared memory ptxas reports."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import _ptxas

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(cc):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_ptxas.py"), f"{cc[0]}.{cc[1]}"], env=env,
                          cwd=HERE, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report():
    if _ptxas.find_ptxas() is None:
        pytest.skip("no ptxas: pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12 (the test extra has them)")
    with ThreadPoolExecutor(len(_ptxas.TARGETS)) as pool:  # one process per target, in parallel
        parts = list(pool.map(_run, _ptxas.TARGETS))
    return [r for part in parts for r in part["results"]]


def test_every_kernel_compiles_for_both_targets(report):
    names = {(r["module"], r["kernel"]) for r in report}
    assert {r["cc"] for r in report} == {"8.0", "9.0"}
    assert sum(1 for r in report if r["cc"] == "9.0") == len(names)  # each one for each target
    for module in ("softhebb", "hebbian", "lif", "_common", "conv"):
        assert any(m == module for m, _ in names)
    assert all(r["registers"] > 0 for r in report)


def test_every_accepted_block_fits_the_registers_and_shared_memory(report):
    over = [f"{r['module']}.{r['kernel']} sm_{r['cc']}: block {r['block']} > {r['max_threads']} threads "
            f"({r['registers']} registers each)" for r in report if r["block"] > r["max_threads"]]
    assert over == []
    big = [f"{r['module']}.{r['kernel']}: {r['smem']} bytes" for r in report if r["smem"] > _ptxas.STATIC_SMEM]
    assert big == []


def test_the_block_limits_are_the_ones_the_drivers_use():
    from bioreps.kernels.cuda import _common, lif, softhebb

    assert lif.max_block("train") == lif.MAX_BLOCK_TRAIN == 512
    assert lif.max_block("train_many") == lif.MAX_BLOCK_TRAIN_MANY == 384
    assert lif.max_block("transform") == lif.MAX_BLOCK_TRANSFORM == 256
    # 255 registers (the most a thread can have) x 256 threads fit a block: the transform bound
    # holds for every N, whatever ceil(N / block) does to its per-thread arrays
    assert _ptxas.max_threads(255) == 256 and _ptxas.max_threads(128) == 512 and _ptxas.max_threads(72) == 896
    old = lif.BLOCK
    try:
        lif.BLOCK = 1024
        assert lif._block("train") == 512 and lif._block("train_many") == 384 and lif._block("transform") == 256
        lif.BLOCK = 64
        assert lif._block("train") == 64 and lif._block("transform") == 64
    finally:
        lif.BLOCK = old
    with pytest.raises(ValueError, match="kernel must be one of"):
        lif.max_block("fit")
    assert softhebb.MAX_TILE == 32 and softhebb.MAX_TILE * softhebb.MAX_TILE // _common._rows_per_thread(32) == 256
