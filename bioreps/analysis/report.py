"""Deprecated alias of :mod:`bioreps.studies.report` (file-level analyses moved there:
:mod:`bioreps.analysis` keeps only functions of arrays, torch modules and files).

``bioreps.analysis.report`` keeps working for one release and warns; import
``bioreps.studies.report`` instead.
"""

import warnings

from ..studies import report as _report
from ..studies.report import *  # noqa: F401,F403

warnings.warn("bioreps.analysis.report moved to bioreps.studies.report; import it from there",
              DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_report, name)
