"""Make ``bioreps-schema-1.4.0.h5``, the frozen example of HDF5 schema 1.4.0 (as 1.3.0's file, with
the dimension scales ``class`` and ``unit`` of ``/readout``).

DO NOT REGENERATE. As for the files of schemas 1.0.0 to 1.2.0 (``make_v1_file.py``, ...): the
frozen file is the point. It was written by the first bioreps of schema 1.4.0. ``tests/test_readout_in_file.py`` reads it with the bioreps of the day and asserts
its values (hard-coded there), so a reader change that breaks 1.4.0 files fails the tests.

The script refuses to overwrite the file; pass another output path to try it out::

    python tests/data/make_v1_4_file.py /tmp/example.h5
"""

import sys
from pathlib import Path

import numpy as np

from bioreps import io

OUTPUT = Path(__file__).with_name("bioreps-schema-1.4.0.h5")

WEIGHTS = np.arange(-12, 12, dtype=np.float32).reshape(4, 6) / 8    # (unit, feature)
TRAIN = np.array([[0.0, 0.5, 1.0, 1.5],
                  [2.0, 0.0, 0.25, 0.0],
                  [0.0, 0.0, 0.0, 3.75]], dtype=np.float32)
LAYER0 = np.array([[1.0, 0.0, 0.5, 0.0, 0.25, 2.0],
                   [0.0, 0.75, 0.0, 1.5, 0.0, 0.0],
                   [3.0, 0.0, 0.0, 0.0, 0.125, 1.0]], dtype=np.float32)
# a readout of the 4 units into 3 classes: logits = ((h - mean) / scale) @ coef.T + intercept
READOUT = {
    "coef": np.array([[1.0, -0.5, 0.25, 0.0],
                      [0.0, 2.0, -1.0, 0.5],
                      [-1.5, 0.0, 0.75, 1.0]], dtype=np.float32),
    "intercept": np.array([0.125, -0.25, 0.5], dtype=np.float32),
    "mean": np.array([0.5, 0.25, 0.5, 1.5], dtype=np.float32),
    "scale": np.array([1.0, 0.5, 2.0, 1.5], dtype=np.float32),
}
READOUT_HYPERPARAMETERS = {"epochs": 20, "lr": 0.001, "batch_size": 256, "weight_decay": 0.0,
                           "standardize": True, "random_state": 7, "schedule": "constant"}

PROVENANCE = {
    "bioreps_version": "0.1.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "python_version": "3.11.7",
    "numpy_version": "2.4.6",
    "numba_version": "0.68.1",
    "torch_version": "2.13.0",
    "h5py_version": "3.16.0",
    "platform": "Linux-x86_64-frozen",
    "backend": "cpu",
    "seed": 12,
    "config": {"study": {"name": "frozen-v1.4"}, "seed": 12},
    "dataset": "fashion-mnist",
    "dataset_checksum": {"train": "sha256:dddd"},
    "created": "2026-12-01T00:00:00Z",
    "note": "frozen test file for schema 1.4.0",
}


def main(output=OUTPUT):
    with io.Writer(output, overwrite=False) as w:
        w.write_model("hebbian-wta", {"weights": WEIGHTS}, {"power": 4.5}, dims={"unit": 4, "feature": 6})
        w.write_provenance(PROVENANCE)
        # layer 0 below the split's name, the last layer (what analyses read) under it
        for split, acts, layer, what in (("test.layer0", LAYER0, 0, "ReLU(Wx)"), ("test", TRAIN, 1, "ReLU(Wx)^4.5")):
            rep = w.create_representation(split, acts.shape[0], acts.shape[1], labels=[2, 0, 1],
                                          inputs_index=[5, 1, 3], dataset="fashion-mnist",
                                          dataset_split="test", layer=layer,
                                          description=f"layer {layer}: {what}")
            rep.write_rows(0, acts)
        w.write_readout(READOUT, READOUT_HYPERPARAMETERS,
                        representation="activations of /representations/*")
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
