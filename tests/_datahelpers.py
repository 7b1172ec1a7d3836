"""Tiny fake datasets for tests: IDX folders laid out like MNIST, CIFAR-10 batches and tarballs,
and a stand-in for ``urllib.request.urlopen`` that serves bytes from memory.

Import from a test module as ``from _datahelpers import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np

from bioreps.data import write_idx

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def fake_images(n, shape=(28, 28), n_classes=10, seed=0):
    """``(images uint8 of shape (n, *shape), labels uint8 of shape (n,))``, every class present
    when ``n >= n_classes``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = 255  # so X.max() == 1 exactly
    labels = (np.arange(n) % n_classes).astype(np.uint8)
    return images, labels


def write_idx_dataset(folder, *, n_train=12, n_test=6, gz=True, splits=("train", "test"), seed=0):
    """Write an MNIST-style IDX dataset into ``folder`` (created); return ``{split: (images, labels)}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in splits:
        n = n_train if split == "train" else n_test
        images, labels = fake_images(n, seed=seed + (split == "test"))
        img_name, lbl_name = MNIST_NAMES[split]
        if not gz:
            img_name, lbl_name = img_name[:-3], lbl_name[:-3]
        write_idx(folder / img_name, images)
        write_idx(folder / lbl_name, labels)
        out[split] = (images, labels)
    return out


def cifar_batch_bytes(n, seed=0, protocol=2, labels_as_list=True):
    """A pickled CIFAR-10 batch dict with ``n`` images; returns ``(bytes, data, labels)``."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    batch = {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in labels] if labels_as_list else labels.astype(np.int64),
        b"data": data,
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(batch, protocol=protocol), data, labels


def cifar_batches(n_per_batch=4, seed=0, protocol=2):
    """``{batch name: (bytes, data, labels)}`` for the five train batches and the test batch."""
    names = (*CIFAR_TRAIN, "test_batch")
    return {name: cifar_batch_bytes(n_per_batch, seed=seed + i, protocol=protocol)
            for i, name in enumerate(names)}


def write_cifar_tarball(path, batches, extra_members=None):
    """Write ``cifar-10-python.tar.gz``-style archive holding ``batches`` ({name: bytes})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {f"{CIFAR_FOLDER}/{name}": blob for name, blob in batches.items()}
    members[f"{CIFAR_FOLDER}/batches.meta"] = pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2)
    members.update(extra_members or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def write_cifar_folder(folder, batches):
    """Write the batches ({name: bytes}) as an extracted ``cifar-10-batches-py/`` folder."""
    sub = Path(folder) / CIFAR_FOLDER
    sub.mkdir(parents=True, exist_ok=True)
    for name, blob in batches.items():
        (sub / name).write_bytes(blob)
    return sub


class _Response(io.BytesIO):
    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


class FakeURLOpen:
    """Replacement for ``urllib.request.urlopen`` serving ``routes`` ({url: bytes}).

    A URL not in ``routes`` raises ``URLError`` like an unreachable host. ``calls`` records
    every URL asked for.
    """

    def __init__(self, routes):
        self.routes = dict(routes)
        self.calls = []

    def __call__(self, request, timeout=None, **kwargs):
        url = request.full_url if hasattr(request, "full_url") else str(request)
        self.calls.append(url)
        if url not in self.routes:
            raise urllib.error.URLError(f"unreachable in tests: {url}")
        return _Response(self.routes[url])
