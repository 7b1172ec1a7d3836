"""Numba kernels of bioreps, installed as ``bioreps.kernels``.

``cpu/<topic>.py`` holds ``@njit`` kernels and ``cuda/<topic>.py`` their Numba-CUDA twins with one
host driver per operation. Kernels take plain arrays and scalars and never import ``bioreps``
outside this package; shared compilation flags live in :mod:`bioreps.kernels._config`.
"""
