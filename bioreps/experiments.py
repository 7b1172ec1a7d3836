"""Deprecated alias of :mod:`bioreps.studies.run` (the experiment runner moved there).

``import bioreps.experiments`` keeps working for one release and warns; import
``bioreps.studies.run`` instead.
"""

import warnings

from .studies import run as _run
from .studies.run import *  # noqa: F401,F403
from .studies.run import __all__  # noqa: F401

warnings.warn("bioreps.experiments moved to bioreps.studies.run; import it from there",
              DeprecationWarning, stacklevel=2)


def __getattr__(name):  # private names too, for code that reached into the old module
    return getattr(_run, name)
