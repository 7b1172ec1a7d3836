"""Studies: the orchestration above the layers, baselines and analyses.

* :mod:`bioreps.studies.run`: experiment/study files (TOML), their validation and execution
  (``bioreps run FILE.toml``).
* :mod:`bioreps.studies.report`: analyses of whole bioreps files (``bioreps analyze`` /
  ``bioreps compare``): they open files, rebuild classifiers and call :mod:`bioreps.analysis`,
  whose functions take only arrays, torch modules and files.
"""

__all__ = ["report", "run"]
