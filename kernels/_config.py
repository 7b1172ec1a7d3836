"""Compilation flags shared by every kernel, kept in one place.

* ``FASTMATH``: LLVM fast-math flags for CPU kernels. ``nnan``/``ninf`` are left out on purpose:
  several kernels use ``-inf`` as a sentinel (top-k scans) and NaN checks must stay honest.
* ``CACHE``: Numba's on-disk cache is opt-in with ``BIOREPS_NUMBA_CACHE=1`` (a stale cache after
  an upgrade is a silent hazard; compile time is a few seconds).
* ``CUDA_BLOCK``: default threads per block for CUDA drivers; tests shrink it (via the
  ``BIOREPS_CUDA_BLOCK`` variable or the drivers' ``block`` argument) so several blocks run
  even on tiny shapes.
"""

from __future__ import annotations

import os

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("BIOREPS_NUMBA_CACHE", "0").strip().lower() in ("1", "true", "yes", "on")
CUDA_BLOCK = int(os.environ.get("BIOREPS_CUDA_BLOCK", "128"))

__all__ = ["FASTMATH", "CACHE", "CUDA_BLOCK", "njit_options"]


def njit_options(parallel: bool = False, fastmath: bool = True) -> dict:
    """Keyword arguments for ``numba.njit`` with the project's defaults."""
    return {"cache": CACHE, "parallel": parallel, "fastmath": set(FASTMATH) if fastmath else False,
            "nogil": True, "error_model": "numpy"}
