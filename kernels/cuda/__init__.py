"""Numba-CUDA kernels and their host drivers. Importing a topic module needs ``numba-cuda``."""
