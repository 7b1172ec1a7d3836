"""Make ``bioreps-schema-1.0.0.h5``, the frozen example of HDF5 schema 1.0.0.

DO NOT REGENERATE. The frozen file is the point: ``tests/test_io.py`` reads the file that was
written by the bioreps of the day and asserts its values (hard-coded there, not imported from
here), so a reader change that breaks old files fails the tests. A new schema version gets a
new script and a new file next to this one; this one stays.

The script is kept to document how the file was made. It refuses to overwrite the file; pass
another output path to try it out::

    python tests/data/make_v1_file.py /tmp/example.h5
"""

import sys
from pathlib import Path

import numpy as np

from bioreps import io

OUTPUT = Path(__file__).with_name("bioreps-schema-1.0.0.h5")

WEIGHTS = np.array([[-1.25, -1.125, -1.0, -0.875, -0.75, -0.625],
                    [-0.5, -0.375, -0.25, -0.125, 0.0, 0.125],
                    [0.25, 0.375, 0.5, 0.625, 0.75, 0.875],
                    [1.0, 1.125, 1.25, 1.375, 1.5, 1.625]], dtype=np.float32)
THETA = np.array([0.5, -1.0, 2.25, 0.0], dtype=np.float64)
UNIT_LABELS = np.array([3, 1, 4, 1], dtype=np.int64)

TRAIN = np.array([[0.0, 0.5, 1.0, 1.5],
                  [2.0, 0.0, 0.25, 0.0],
                  [0.0, 0.0, 0.0, 3.75],
                  [1.0, 1.0, 1.0, 1.0],
                  [0.125, 0.0, 6.5, 0.0]], dtype=np.float32)
TEST = np.array([[4.0, 0.0, 0.0, 0.0],
                 [0.0, 4.0, 0.0, 0.0],
                 [0.0, 0.0, 4.0, 0.0],
                 [0.0, 0.0, 0.0, 4.0],
                 [-0.5, 0.75, -1.0, 1.25]], dtype=np.float32)

PROVENANCE = {
    "bioreps_version": "0.1.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "python_version": "3.11.7",
    "numpy_version": "2.4.6",
    "numba_version": "0.68.1",
    "torch_version": "not installed",
    "h5py_version": "3.16.0",
    "platform": "Linux-x86_64-frozen",
    "backend": "cpu",
    "seed": 1234,
    "config": {"experiment": {"name": "frozen-v1", "seed": 1234},
               "model": {"kind": "hebbian-wta", "n_hidden": 4}},
    "dataset": "fashion-mnist",
    "dataset_checksum": {"train": "sha256:aaaa", "test": "sha256:bbbb"},
    "created": "2024-01-01T00:00:00Z",
    "note": "frozen test file for schema 1.0.0",
}


def main(output=OUTPUT):
    io.save(output, model_kind="hebbian-wta",
            model_arrays={"weights": WEIGHTS, "theta": THETA, "labels_": UNIT_LABELS,
                          "state": {"n_samples_seen": np.int64(120)}},
            hyperparameters={"n_hidden": 4, "power": 4.5, "lr": 0.02, "k": 2,
                             "norm": "l3", "steps": [1, 2]},
            representations={
                "train": {"activations": TRAIN, "labels": [0, 1, 2, 1, 0],
                          "inputs_index": [0, 2, 4, 6, 8], "dataset": "fashion-mnist",
                          "dataset_split": "train", "description": "ReLU(Wx)^4.5"},
                "test": {"activations": TEST, "inputs_index": [9, 7, 5, 3, 1],
                         "dataset": "fashion-mnist", "dataset_split": "test",
                         "description": "no labels stored"},
            },
            provenance=PROVENANCE, overwrite=False)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
