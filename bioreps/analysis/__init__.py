"""Analyses that compare representations and models.

- :mod:`bioreps.analysis.spectrum`: PCA eigenspectra, the Stringer et al. (2019) power-law fit,
  cross-validated PCA and a bootstrap interval for the exponent.
- :mod:`bioreps.analysis.robustness`: FGSM, PGD, the Square attack, robust-accuracy curves,
  transfer matrices and per-image critical perturbations.
- :mod:`bioreps.analysis.similarity`: CKA (linear/RBF, debiased, minibatch) and RSA.
- :mod:`bioreps.analysis.selectivity`: class selectivity and ablation curves.

Submodules load lazily (``robustness`` imports torch).
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("spectrum", "robustness", "similarity", "selectivity")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bioreps.analysis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
