"""Numba CPU kernels (``@njit``)."""
