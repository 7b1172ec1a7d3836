"""Make ``bioreps-schema-1.1.0.h5``, the frozen example of HDF5 schema 1.1.0 (dimension scales).

DO NOT REGENERATE. As for ``bioreps-schema-1.0.0.h5`` (``make_v1_file.py``): the frozen file is
the point. ``tests/test_usability.py`` reads the file written by the bioreps of the day and asserts
its values and its named dimensions (hard-coded there, not imported from here), so a reader
change that breaks 1.1.0 files fails the tests.

The script refuses to overwrite the file; pass another output path to try it out::

    python tests/data/make_v1_1_file.py /tmp/example.h5
"""

import sys
from pathlib import Path

import numpy as np

from bioreps import io

OUTPUT = Path(__file__).with_name("bioreps-schema-1.1.0.h5")

WEIGHTS = np.arange(-12, 12, dtype=np.float32).reshape(4, 6) / 8    # (unit, feature)
MEAN = np.array([0.0, 0.125, 0.25, 0.375, 0.5, 0.625], dtype=np.float32)   # (feature,)
CLASSES = np.array([0, 1, 2], dtype=np.int64)                            # neither: classes_dim0
TRAIN = np.array([[0.0, 0.5, 1.0, 1.5],
                  [2.0, 0.0, 0.25, 0.0],
                  [0.0, 0.0, 0.0, 3.75]], dtype=np.float32)

PROVENANCE = {
    "bioreps_version": "0.1.0",
    "git_commit": "fedcba9876543210fedcba9876543210fedcba98",
    "python_version": "3.11.7",
    "numpy_version": "2.4.6",
    "numba_version": "0.68.1",
    "torch_version": "not installed",
    "h5py_version": "3.16.0",
    "platform": "Linux-x86_64-frozen",
    "backend": "cpu",
    "seed": 11,
    "config": {"experiment": {"name": "frozen-v1.1", "seed": 11}},
    "dataset": "fashion-mnist",
    "dataset_checksum": {"train": "sha256:cccc"},
    "created": "2026-01-01T00:00:00Z",
    "note": "frozen test file for schema 1.1.0",
}


def main(output=OUTPUT):
    io.save(output, model_kind="hebbian-wta",
            model_arrays={"weights": WEIGHTS, "mean": MEAN, "classes": CLASSES,
                          "state": {"n_samples_seen": np.int64(30), "v": np.ones((4, 2), np.float32)}},
            model_dims={"unit": 4, "feature": 6},
            hyperparameters={"power": 4.5, "history_": [{"epoch": 1, "converged": 0.5},
                                                        {"epoch": 2, "converged": 0.75}]},
            representations={
                "train": {"activations": TRAIN, "labels": [2, 0, 1], "inputs_index": [5, 1, 3],
                          "dataset": "fashion-mnist", "dataset_split": "train",
                          "description": "ReLU(Wx)^4.5"},
                "empty": {"activations": np.zeros((0, 4), np.float32)},
            },
            provenance=PROVENANCE, overwrite=False)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
