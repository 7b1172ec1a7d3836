"""Representation layers with a scikit-learn-like API (``fit``, ``transform``, learned state in
attributes ending in ``_``).

Control representations (no learning) live here today; the Hebbian winner-take-all and spiking
STDP layers join them.
"""

from .controls import Pixels, RandomReLU
from .hebbian import CollapseWarning, HebbianWTA, SoftWTA
from .spiking import DiehlCookParams, SpikingWTA

__all__ = ["CollapseWarning", "DiehlCookParams", "HebbianWTA", "Pixels", "RandomReLU", "SoftWTA", "SpikingWTA"]
