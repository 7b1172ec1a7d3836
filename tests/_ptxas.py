"""Compile every CUDA kernel for real hardware (no GPU needed) and read what ``ptxas`` reports.

Run as a script in a subprocess without the simulator (``python tests/_ptxas.py``): each kernel of
``bioreps.kernels.cuda`` is compiled at the specialisations our drivers launch for realistic sizes
(N = 100, 400 and 6400 neurons; 784 and 1568 inputs; 2000 units; every GEMM tile the drivers
accept) to PTX by numba-cuda through NVVM, for compute capability 8.0 and 9.0, then assembled by
``ptxas -v`` (both from the ``nvidia-cuda-nvcc-cu12`` and ``nvidia-cuda-nvrtc-cu12`` wheels of
the test extra). It prints one JSON object: per kernel and target, the registers per thread, the
static shared memory, spill stores/loads and stack frame bytes, and the largest block that can
launch with those resources (:func:`max_threads`).

numba-cuda asks the current device for its compute capability when it types a call to a device
function; there is no device here, so that one lookup is answered with the target's capability.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# per-SM and per-block limits of compute capability 8.0 and 9.0 (CUDA C Programming Guide,
# "Technical Specifications per Compute Capability")
REGS_PER_BLOCK = 65536
MAX_THREADS = 1024
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256
STATIC_SMEM = 48 * 1024
TARGETS = ((8, 0), (9, 0))


def max_threads(regs_per_thread: int) -> int:
    """The largest block (a multiple of 32 threads) whose registers fit one block's budget."""
    if regs_per_thread <= 0:
        return MAX_THREADS
    per_warp = -(-regs_per_thread * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    return min(MAX_THREADS, (REGS_PER_BLOCK // per_warp) * 32)


def find_ptxas() -> str | None:
    try:
        import nvidia.cuda_nvcc as pkg  # the nvidia-cuda-nvcc-cu12 wheel
    except ImportError:
        pkg = None
    if pkg is not None:
        for root in list(getattr(pkg, "__path__", [])):
            cand = Path(root) / "bin" / "ptxas"
            if cand.is_file():
                return str(cand)
    from shutil import which

    return which("ptxas")


_INFO = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def assemble(ptx: str, cc, ptxas: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        # a kernel that calls external functions (cudadevrt's grid barrier) is assembled as
        # relocatable code (-c): the linker resolves them at load time
        reloc = ["-c"] if ".extern .func" in ptx else []
        proc = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", *reloc, str(src), "-o",
                               str(Path(tmp) / "k.cubin")], capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{cc[0]}{cc[1]}:\n{text[-3000:]}")
    info, frame = _INFO.findall(text), _FRAME.findall(text)
    if not info:
        raise RuntimeError(f"no register report in ptxas output:\n{text[-3000:]}")
    regs = max(int(r) for r, _ in info)
    smem = max(int(s or 0) for _, s in info)
    if reloc:  # relocatable code reports no per-kernel smem: its arrays are module-level .shared
        smem = sum(int(b) for b in re.findall(r"\.shared\s+(?:\.align\s+\d+\s+)?\.b8\s+\w+\[(\d+)\]", ptx))
    stack, spill_st, spill_ld = (max(int(f[i]) for f in frame) if frame else 0 for i in range(3))
    return {"registers": regs, "smem": smem, "stack": stack, "spill_stores": spill_st, "spill_loads": spill_ld,
            "max_threads": max_threads(regs)}


def kernels():
    """(module, name, kernel, argument types, the block sizes its driver may launch it with)."""
    from numba import types as t

    from bioreps.kernels.cuda import _common, conv as CV, hebbian as H, lif as L, softhebb as S

    f2, d1, d2, l1, i1, i2, u1 = (t.float32[:, ::1], t.float64[::1], t.float64[:, ::1], t.int64[::1],
                                  t.int32[::1], t.int32[:, ::1], t.uint8[::1])
    f8, b1, i8 = t.float64, t.boolean, t.int64
    one_d = _common.MAX_BLOCK  # the 1-D kernels accept any block up to MAX_BLOCK
    out = [
        ("_common", "_gather_rows", _common._gather_rows, (f2, l1, i8, i8, f2), one_d),
        ("softhebb", "_power_weights", S._power_weights, (f2, f8, f2), one_d),
        ("softhebb", "_row_lr", S._row_lr, (f2, f2, f8, f8, f8, b1, d1), one_d),
        ("softhebb", "_softmax_rows", S._softmax_rows, (f2, f8, f2), one_d),
        ("softhebb", "_weighted_sums", S._weighted_sums, (f2, f2, i8, d1), one_d),
        ("softhebb", "_partial_max", S._partial_max, (f2, f2, d1, d1), one_d),
        ("softhebb", "_final_max", S._final_max, (d1, i8, d1), one_d),
        ("softhebb", "_apply_update", S._apply_update, (f2, f2, f2, d1, d1, d1, f8, f8, f8, b1, b1), one_d),
        ("conv", "_im2col", CV._im2col, (t.float32[:, :, :, ::1], i8, i8, i8, b1, i8, i8, i8, f2), one_d),
        ("conv", "_anti_hebbian_rows", CV._anti_hebbian_rows, (f2, f2, i1), one_d),
        ("hebbian", "_power_weights", H._power_weights, (f2, f8, f2), one_d),
        ("hebbian", "_topk_columns", H._topk_columns, (f2, i8, i1, i1), one_d),
        ("hebbian", "_collect_units", H._collect_units, (i1, i1, i8, i1, i1, i1, d1), one_d),
        ("hebbian", "_accumulate", H._accumulate, (f2, f2, f2, i8, i1, i1, f8, i1, i1, d2, d1), one_d),
        ("hebbian", "_apply_update", H._apply_update, (f2, f2, i1, i1, d2, d1, f8, f8), one_d),
    ]
    # the GEMMs: every tile the drivers accept launches tile x tile / rows-per-thread threads
    for tile in (4, 8, 16, S.MAX_TILE):
        for at, bt in ((False, True), (True, False)):
            threads = tile * (tile // _common._rows_per_thread(tile))
            if threads <= one_d:
                out.append(("_common", f"_gemm(tile={tile}, a_trans={at}, b_trans={bt})",
                            _common._gemm_kernel(tile, at, bt), (f2, f2, i8, i8, i8, f2), threads))
    for tile in (8, 16, 32):
        out.append(("hebbian", f"_currents(tile={tile})", H._currents_kernel(tile), (f2, f2, i8, i8, i8, f2),
                    tile * tile))
        # the persistent epoch kernel (cooperative: its grid barriers call into cudadevrt)
        out.append(("hebbian", f"_epoch(tile={tile})", H._epoch_kernel(tile),
                    (f2, f2, f2, l1, i8, i8, i8, f8, f8, f8, f2, f2, i1, i1, i1, i1, i1, d2, d1),
                    tile * (tile // _common._rows_per_thread(tile))))
    # the spiking kernels, specialised by input and neuron words as lif's drivers do
    train_sig = (d2, d2, t.uint32[:, ::1], b1, t.uint64, i8, i8, i8, i8, d1, b1, b1, i8, i8, d1, d1, d1, l1, d1, d1,
                 d1, d1, l1, d1, d1, d1, u1, u1, i2, i1)
    transform_sig = (d2, d1, d2, t.uint64, i8, i8, i8, i8, d1, i8, i8, t.float32[:, ::1], i1)
    # the many-network kernel: a member axis in front; X, counts and attempts are row slices
    # of the chunk (layout "A")
    d3a, d2c = t.float64[:, :, :], t.float64[:, ::1]
    l2, u2 = t.int64[:, ::1], t.uint8[:, ::1]
    many_sig = (t.float64[:, :, ::1], d3a, i1, t.uint32[:, ::1], t.uint64[::1], i8, i8, i8, i8, d2c, i8, l1,
                d2c, d2c, d2c, l2, d2c, d2c, d2c, d2c, l2, d2c, d2c, d2c, u2, u2, t.int32[:, :, :], t.int32[:, :])
    for n_in in (784, 1568):
        for N in (100, 400, 6400):
            out.append(("lif", f"_train(n_in={n_in}, N={N})", L._train_kernel(-(-n_in // 32), -(-N // 32)),
                        train_sig, L.max_block("train")))
            out.append(("lif", f"_train_many(n_in={n_in}, N={N})",
                        L._train_many_kernel(-(-n_in // 32), -(-N // 32)), many_sig, L.max_block("train_many")))
            for block in sorted({32, 128, L.max_block("transform")}):
                out.append(("lif", f"_transform(n_in={n_in}, N={N}, block={block})",
                            L._transform_kernel(-(-n_in // 32), -(-N // block)), transform_sig, block))
    return out


def main(targets=TARGETS):
    import types

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    ptxas = find_ptxas()
    if ptxas is None:
        print(json.dumps({"error": "no ptxas (pip install nvidia-cuda-nvcc-cu12)"}))
        return 0
    results = []
    for cc in targets:
        # a device function's call is typed for "the current device": there is none, so say which
        dispatcher.get_current_device = lambda cc=cc: types.SimpleNamespace(compute_capability=cc)
        for module, name, kern, sig, block in kernels():
            ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=cc, fastmath=False)
            res = assemble(ptx, cc, ptxas)
            results.append({"module": module, "kernel": name, "cc": f"{cc[0]}.{cc[1]}", "block": block, **res})
    print(json.dumps({"ptxas": ptxas, "results": results}))
    return 0


if __name__ == "__main__":
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    # python tests/_ptxas.py [8.0 9.0 ...]: the targets (default both)
    chosen = tuple(tuple(int(x) for x in a.split(".")) for a in sys.argv[1:]) or TARGETS
    sys.exit(main(chosen))
