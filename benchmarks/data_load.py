"""Time bioreps.data.load("fashion-mnist", "train") against the plain reader everyone writes
(gzip.open + np.frombuffer + / 255) in the same run, and print the ratio.

    python benchmarks/data_load.py [--repeats 5]
"""

import argparse
import gzip
import statistics
import time

import numpy as np

from bioreps import data


def plain_reader(folder):
    with gzip.open(f"{folder}/train-images-idx3-ubyte.gz") as fh:
        X = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784) / 255.0
    with gzip.open(f"{folder}/train-labels-idx1-ubyte.gz") as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    return X.astype(np.float32), y


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    loc = data.locate("fashion-mnist", split="train")
    if loc is None:
        raise SystemExit("Fashion-MNIST not found; see `bioreps datasets`")
    folder = str(loc.path)
    X1, y1 = data.load("fashion-mnist", "train")
    X2, y2 = plain_reader(folder)
    assert np.array_equal(y1, y2) and np.allclose(X1, X2)
    ours = best_of(lambda: data.load("fashion-mnist", "train"), args.repeats)
    ref = best_of(lambda: plain_reader(folder), args.repeats)
    print(f"Fashion-MNIST train (60000 x 784) from {folder}")
    print(f"  bioreps.data.load : best {ours[0]:.3f} s, median {ours[1]:.3f} s (validating IDX reader)")
    print(f"  plain gzip+numpy  : best {ref[0]:.3f} s, median {ref[1]:.3f} s")
    print(f"  ratio plain/ours  : {ref[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
