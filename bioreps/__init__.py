"""bioreps: biologically inspired local-learning layers and the analyses that compare them.

Submodules are imported lazily so that ``import bioreps`` stays cheap (no torch, no numba
compilation) until a feature is used::

    import bioreps
    X, y = bioreps.data.load("fashion-mnist", "test")
    with bioreps.io.load("model.h5") as f:
        f.representations["test"].read(0, 100)
"""

from __future__ import annotations

import importlib

from ._version import __version__

_SUBMODULES = ("backend", "data", "io", "cli", "experiments", "kernels", "layers", "baselines",
               "analysis")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bioreps' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
