"""Choosing the compute backend: ``"auto" | "cpu" | "cuda"``.

Every layer takes ``backend=`` and records the one it used in ``backend_``. The environment
variable ``BIOREPS_BACKEND`` overrides the argument ``"auto"`` (and only ``"auto"``: an explicit
argument in code always wins), so a whole script can be moved to the CPU without edits.

* ``"cpu"``: Numba CPU kernels; always available.
* ``"cuda"``: Numba-CUDA kernels. Needs ``numba-cuda`` (``pip install bioreps[cuda]``) and a
  usable GPU, or the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, for tests). Asking for it where
  neither exists raises :class:`BackendError` with the reason.
* ``"auto"``: CUDA when usable, else CPU; the fallback is announced once per process with a
  :class:`BackendWarning`.
"""

from __future__ import annotations

import functools
import os
import warnings

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendWarning",
    "cuda_available",
    "cuda_status",
    "resolve",
]

BACKENDS = ("auto", "cpu", "cuda")
ENV_VAR = "BIOREPS_BACKEND"


class BackendError(RuntimeError):
    """The requested backend is unknown or cannot be used on this machine."""


class BackendWarning(UserWarning):
    """Emitted once when ``backend="auto"`` falls back to the CPU."""


_fallback_announced = False


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """Return ``(usable, reason)`` for the CUDA backend; the result is cached per process."""
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    try:
        from numba import cuda  # numba-cuda provides the real target; numba's own is deprecated
    except Exception as exc:  # pragma: no cover - depends on the installation
        return False, f"numba.cuda cannot be imported ({exc}); install with `pip install bioreps[cuda]`"
    if simulator:
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return True, f"GPU: {cuda.get_current_device().name}"
        return False, "no CUDA-capable GPU or driver was found"
    except Exception as exc:  # pragma: no cover - depends on the driver
        return False, f"CUDA initialisation failed ({exc})"


def cuda_available() -> bool:
    """True when the CUDA backend (a real GPU or the simulator) can run kernels."""
    return cuda_status()[0]


def resolve(backend: str | None = "auto") -> str:
    """Resolve a backend request to ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda"} or None
        ``None`` means ``"auto"``. With ``"auto"``, ``$BIOREPS_BACKEND`` is consulted first.

    Raises
    ------
    BackendError
        For an unknown name, or ``"cuda"`` (explicit or from the environment) without a usable GPU.
    """
    global _fallback_announced
    requested = "auto" if backend is None else backend
    source = "argument"
    if not isinstance(requested, str) or requested.lower() not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    requested = requested.lower()
    if requested == "auto" and os.environ.get(ENV_VAR):
        env = os.environ[ENV_VAR].strip().lower()
        if env not in BACKENDS:
            raise BackendError(f"${ENV_VAR}={os.environ[ENV_VAR]!r} is not a backend; choose one of {', '.join(BACKENDS)}")
        requested, source = env, f"${ENV_VAR}"
    if requested == "cpu":
        return "cpu"
    usable, reason = cuda_status()
    if requested == "cuda":
        if not usable:
            raise BackendError(f"backend 'cuda' was requested ({source}) but cannot be used: {reason}. "
                               "Use backend='cpu' or 'auto'.")
        return "cuda"
    if usable:
        return "cuda"
    if not _fallback_announced:
        _fallback_announced = True
        warnings.warn(f"backend='auto': CUDA is not usable ({reason}); using the CPU kernels",
                      BackendWarning, stacklevel=2)
    return "cpu"
