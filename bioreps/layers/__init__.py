"""Representation layers with a scikit-learn-like API (``fit``, ``transform``, learned state in
attributes ending in ``_``).

Every layer derives from :class:`Layer` and declares its ``kind`` and capabilities as class
attributes; a new ``layers/<rule>.py`` with such a class is found by the study registry
(:mod:`bioreps.studies.kinds`) without further edits.
"""

from ._base import Layer
from .controls import Pixels, RandomReLU
from .conv import ConvCompetitiveLayer, ConvHebbianWTA, ConvSoftWTA, HebbianNet
from .hebbian import CollapseWarning, CompetitiveLayer, HebbianWTA, SoftWTA
from .spiking import DiehlCookParams, SpikingWTA
from .ensemble import SpikingEnsemble, param_grid

__all__ = ["CollapseWarning", "CompetitiveLayer", "ConvCompetitiveLayer", "ConvHebbianWTA", "ConvSoftWTA", "HebbianNet", "DiehlCookParams", "HebbianWTA", "Layer", "Pixels", "RandomReLU",
           "SoftWTA", "SpikingEnsemble", "SpikingWTA", "param_grid"]
