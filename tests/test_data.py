"""bioreps.data: IDX reading and validation, the search order, downloads, CIFAR-10 batches,
provenance and the synthetic generators. Real Fashion-MNIST tests run where the Debian package
is installed (skipped elsewhere, but failing in CI, which installs it)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bioreps import data
from bioreps.data import DataError, DatasetNotFoundError, read_idx, write_idx

from _datahelpers import (
    CIFAR_FOLDER,
    FakeURLOpen,
    MNIST_NAMES,
    cifar_batch_bytes,
    cifar_batches,
    fake_images,
    write_cifar_folder,
    write_cifar_tarball,
    write_idx_dataset,
)

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
FASHION_FILES = [name for names in MNIST_NAMES.values() for name in names]


def _forbid_network(*args, **kwargs):
    pytest.fail(f"the network was touched: urlopen{args}")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Every search location under tmp_path, empty; no $BIOREPS_DATA; the network forbidden."""
    paths = dataclasses.make_dataclass("Paths", ["data_dir", "env", "cache", "system"])(
        tmp_path / "data_dir", tmp_path / "env", tmp_path / "xdg", tmp_path / "system")
    monkeypatch.delenv("BIOREPS_DATA", raising=False)
    monkeypatch.delenv("BIOREPS_OFFLINE", raising=False)
    monkeypatch.setenv("BIOREPS_PROGRESS", "0")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(paths.cache))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [str(paths.system)])
    monkeypatch.setattr(urllib.request, "urlopen", _forbid_network)
    return paths


def _payload_size(shape, itemsize=1):
    return int(np.prod(shape)) * itemsize


# ------------------------------------------------------------------------------------------
# IDX reading and writing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((5, 3, 4)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)
    assert data.idx_header(path) == (np.dtype(dtype), (5, 3, 4))


def test_idx_is_big_endian_on_disk(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.array([1, 256], dtype=np.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + b"\0\0\0\x01" + b"\0\0\x01\0"


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    src = write_idx(tmp_path / "a.gz", arr)
    disguised = tmp_path / "plain-name"
    disguised.write_bytes(src.read_bytes())
    np.testing.assert_array_equal(read_idx(disguised), arr)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(gzip.decompress(src.read_bytes()))
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)


def test_write_idx_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="dtype int64"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "a", np.float32(1.0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("head, fault", [
    (b"\x01\x00\x08\x01", "bad magic"),
    (b"\x00\x00\x0A\x01", "unknown data type code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00", "truncated header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
])
def test_bad_headers(tmp_path, head, fault):
    path = tmp_path / "bad.idx"
    path.write_bytes(head)
    with pytest.raises(DataError, match=fault) as exc:
        read_idx(path)
    assert str(path) in str(exc.value)
    assert exc.value.path == str(path)


def test_wrong_ndim(tmp_path):
    labels = write_idx(tmp_path / "labels.idx", np.arange(7, dtype=np.uint8))
    with pytest.raises(DataError, match=r"wrong dimensions: expected a 3-dimensional.*found 1") as exc:
        read_idx(labels, expect_ndim=3)
    assert str(labels) in str(exc.value)
    assert read_idx(labels, expect_ndim=1).shape == (7,)


def test_labels_file_given_as_images_is_refused_by_load(env):
    write_idx_dataset(env.data_dir)
    img, lbl = MNIST_NAMES["test"]
    (env.data_dir / img).write_bytes((env.data_dir / lbl).read_bytes())
    with pytest.raises(DataError, match="wrong dimensions") as exc:
        data.load("fashion-mnist", "test", env.data_dir, download=False)
    assert img in str(exc.value)


def test_truncated_raw_payload(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros((4, 5, 5), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated: expected 100 bytes of payload, found 93") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)
    with pytest.raises(DataError, match="truncated"):
        data.idx_header(path)


def test_truncated_gzip_stream(tmp_path):
    rng = np.random.default_rng(1)
    path = write_idx(tmp_path / "a.idx.gz", rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated gzip stream") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_gzip_of_truncated_payload(tmp_path):
    full = write_idx(tmp_path / "full.idx", np.zeros((3, 4), dtype=np.int16)).read_bytes()
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(full[:-2]))
    with pytest.raises(DataError, match="truncated: expected 24 bytes of payload, found 22"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros((2, 3), dtype=np.float32))
    path.write_bytes(path.read_bytes() + b"\x00\x01\x02")
    with pytest.raises(DataError, match="expected 24 bytes of payload, found 27"):
        read_idx(path)
    gz = tmp_path / "a.idx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(DataError, match="trailing data"):
        read_idx(gz)


def test_garbage_after_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "a.idx.gz", np.zeros(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(DataError, match="trailing garbage"):
        read_idx(path)


def test_multi_member_gzip_and_zero_padding(tmp_path):
    raw = write_idx(tmp_path / "a.idx", np.arange(10, dtype=np.uint8)).read_bytes()
    path = tmp_path / "b.idx.gz"
    path.write_bytes(gzip.compress(raw[:5]) + gzip.compress(raw[5:]) + b"\0" * 8)
    np.testing.assert_array_equal(read_idx(path), np.arange(10))


def test_corrupt_gzip(tmp_path):
    rng = np.random.default_rng(2)
    path = write_idx(tmp_path / "a.idx.gz", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(64)  # damage the deflate stream (or at least its CRC)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="gzip") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_corrupt_gzip_header(tmp_path):
    path = tmp_path / "a.idx.gz"
    path.write_bytes(b"\x1f\x8b" + b"\xff" * 30)
    with pytest.raises(DataError, match="corrupt gzip stream"):
        read_idx(path)


# ------------------------------------------------------------------------------------------
# Loading a split from a folder
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dataset(env, gz):
    truth = write_idx_dataset(env.data_dir, n_train=12, n_test=6, gz=gz)
    for split, (images, labels) in truth.items():
        X, y = data.load("fashion-mnist", split, env.data_dir, download=False)
        assert X.dtype == np.float32 and X.shape == (len(labels), 784) and X.flags.c_contiguous
        assert y.dtype == np.int64
        np.testing.assert_array_equal(X, images.reshape(len(labels), -1) / np.float32(255))
        np.testing.assert_array_equal(y, labels)
        assert X.min() >= 0 and X.max() == 1
    X, _ = data.load("fashion-mnist", "test", env.data_dir, flatten=False, download=False)
    assert X.shape == (6, 28, 28) and X.flags.c_contiguous


def test_label_count_mismatch(env):
    write_idx_dataset(env.data_dir, n_test=6, splits=("test",))
    img, lbl = MNIST_NAMES["test"]
    write_idx(env.data_dir / lbl, np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="count mismatch") as exc:
        data.load("fashion-mnist", "test", env.data_dir, download=False)
    msg = str(exc.value)
    assert str(env.data_dir / img) in msg and str(env.data_dir / lbl) in msg
    assert "6 images" in msg and "5 labels" in msg


def test_labels_out_of_range_and_wrong_image_shape(env):
    write_idx_dataset(env.data_dir, splits=("test",))
    img, lbl = MNIST_NAMES["test"]
    write_idx(env.data_dir / lbl, np.full(6, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.9"):
        data.load("fashion-mnist", "test", env.data_dir, download=False)
    write_idx(env.data_dir / lbl, np.zeros(6, dtype=np.uint8))
    write_idx(env.data_dir / img, np.zeros((6, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="wrong image shape"):
        data.load("fashion-mnist", "test", env.data_dir, download=False)


@pytest.mark.parametrize("alias", ["fashion-mnist", "Fashion_MNIST", "fashionmnist", "FashionMNIST"])
def test_name_aliases(env, alias):
    write_idx_dataset(env.data_dir / "fashion-mnist", splits=("test",))
    X, _ = data.load(alias, "TEST", env.data_dir, download=False)
    assert X.shape == (6, 784)


def test_unknown_name_and_split(env):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*fashion-mnist, mnist, cifar10"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, test"):
        data.load("mnist", "valid")
    with pytest.raises(ValueError, match="unknown split"):
        data.locate("mnist", split="dev")


# ------------------------------------------------------------------------------------------
# Search order, offline errors, downloads
# ------------------------------------------------------------------------------------------


def test_search_order(env, monkeypatch):
    monkeypatch.setenv("BIOREPS_DATA", str(env.env))
    places = [  # (folder, n_test marking it, expected source)
        (env.data_dir, 3, "data_dir"),
        (env.env / "fashion-mnist", 4, "$BIOREPS_DATA"),
        (env.cache / "bioreps" / "fashion-mnist", 5, "user cache"),
        (env.system / "fashion-mnist", 6, "system"),
    ]
    for folder, n, _ in places:
        write_idx_dataset(folder, n_test=n, splits=("test",))
    for folder, n, source in places:
        loc = data.locate("fashion-mnist", env.data_dir)
        assert (loc.path, loc.source, loc.splits) == (folder, source, ("test",))
        # an explicit data_dir is the only place load() looks (test_runner_safety); the search is without it
        X, _ = data.load("fashion-mnist", "test", env.data_dir if source == "data_dir" else None, download=False)
        assert X.shape[0] == n
        for f in folder.iterdir():
            f.unlink()
    assert data.locate("fashion-mnist", env.data_dir) is None


def test_search_forms_and_partial_folders(env, monkeypatch):
    # $BIOREPS_DATA itself (not only $BIOREPS_DATA/<name>) and data_dir/<name>
    write_idx_dataset(env.env, n_test=4, splits=("test",))
    monkeypatch.setenv("BIOREPS_DATA", str(env.env))
    assert data.locate("fashion-mnist").path == env.env
    write_idx_dataset(env.data_dir / "fashion-mnist", n_test=3, splits=("test",))
    assert data.locate("fashion-mnist", env.data_dir).path == env.data_dir / "fashion-mnist"
    # a folder missing one file of the split does not count
    (env.data_dir / "fashion-mnist" / MNIST_NAMES["test"][1]).unlink()
    assert data.locate("fashion-mnist", env.data_dir).path == env.env
    # a folder with only the test split is skipped when asking for train
    write_idx_dataset(env.system / "fashion-mnist", n_train=7, splits=("train",))
    loc = data.locate("fashion-mnist", env.data_dir, split="train")
    assert loc.source == "system" and loc.splits == ("train",)
    assert data.load("fashion-mnist", "train", download=False)[0].shape == (7, 784)


def test_xdg_cache_default(env, monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir("Fashion_MNIST") == tmp_path / "home" / ".cache" / "bioreps" / "fashion-mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.cache))
    assert data.cache_dir("mnist") == env.cache / "bioreps" / "mnist"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_not_found_lists_every_place(env, monkeypatch, how):
    monkeypatch.setenv("BIOREPS_DATA", str(env.env))
    write_idx_dataset(env.system / "fashion-mnist", splits=("test",))  # train is asked for
    kwargs = {"download": False}
    if how == "environment":
        monkeypatch.setenv("BIOREPS_OFFLINE", "1")
        kwargs = {}
    with pytest.raises(DatasetNotFoundError) as exc:
        data.load("fashion-mnist", "train", **kwargs)  # an explicit data_dir is searched alone
    assert isinstance(exc.value, DataError) and isinstance(exc.value, FileNotFoundError)
    msg = str(exc.value)
    for _, folder in data.search_paths("fashion-mnist"):
        assert str(folder) in msg
    for folder in (env.env / "fashion-mnist",
                   env.cache / "bioreps" / "fashion-mnist", env.system / "fashion-mnist"):
        assert str(folder) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "$BIOREPS_DATA/fashion-mnist" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert "disabled" in msg


def test_network_failure_is_not_found(env, monkeypatch):
    fake = FakeURLOpen({})
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    with pytest.raises(DatasetNotFoundError, match="Downloading failed") as exc:
        data.load("mnist", "test")
    spec = data.DATASETS["mnist"]
    assert fake.calls == [m + "t10k-images-idx3-ubyte.gz" for m in spec.mirrors]
    assert spec.mirrors[0] in str(exc.value)
    assert "apt-get" not in str(exc.value)  # no Debian package for MNIST
    assert not (env.cache / "bioreps" / "mnist").exists()  # no files, not even an empty folder


def _serve_fake(monkeypatch, tmp_path, name="fashion-mnist", split="test", *, corrupt=False):
    """Patch DATASETS[name] to two mirrors (the first down) serving tiny files; return the truth."""
    src = tmp_path / "served"
    truth = write_idx_dataset(src, n_test=6, n_train=8, splits=(split,))
    spec = data.DATASETS[name]
    mirrors = ("https://down.example/", "https://up.example/data/")
    routes, sha = {}, dict(spec.sha256)
    for fname in MNIST_NAMES[split]:
        payload = (src / fname).read_bytes()
        sha[fname] = hashlib.sha256(payload).hexdigest()
        routes[mirrors[1] + fname] = payload + (b"x" if corrupt else b"")
    monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(spec, mirrors=mirrors, sha256=sha))
    fake = FakeURLOpen(routes)
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return truth[split], fake, sha


def test_simulated_download(env, monkeypatch, tmp_path):
    (images, labels), fake, sha = _serve_fake(monkeypatch, tmp_path)
    X, y = data.load("fashion-mnist", "test")
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(X, images.reshape(6, -1) / np.float32(255))
    cache = env.cache / "bioreps" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(MNIST_NAMES["test"])  # no temp files
    for fname in MNIST_NAMES["test"]:
        assert hashlib.sha256((cache / fname).read_bytes()).hexdigest() == sha[fname]
    assert fake.calls[0].startswith("https://down.example/")
    # now found in the cache: no further network use
    monkeypatch.setattr(urllib.request, "urlopen", _forbid_network)
    assert data.locate("fashion-mnist", split="test").source == "user cache"
    assert data.load("fashion-mnist", "test")[0].shape == (6, 784)


def test_download_checksum_mismatch_leaves_nothing(env, monkeypatch, tmp_path):
    _, _, sha = _serve_fake(monkeypatch, tmp_path, corrupt=True)
    with pytest.raises(DataError, match="checksum mismatch") as exc:
        data.load("fashion-mnist", "test")
    assert not isinstance(exc.value, DatasetNotFoundError)
    fname = MNIST_NAMES["test"][0]
    assert sha[fname] in str(exc.value)
    payload = (tmp_path / "served" / fname).read_bytes() + b"x"
    assert hashlib.sha256(payload).hexdigest() in str(exc.value)
    assert not (env.cache / "bioreps" / "fashion-mnist").exists()


# ------------------------------------------------------------------------------------------
# CIFAR-10
# ------------------------------------------------------------------------------------------


def _cifar_truth(batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    X = np.concatenate([batches[n][1] for n in names]) / np.float32(255)
    y = np.concatenate([batches[n][2] for n in names])
    return X.astype(np.float32), y


@pytest.mark.parametrize("layout", ["tarball", "folder"])
def test_cifar10(env, layout):
    batches = cifar_batches(n_per_batch=4, protocol=2)
    blobs = {name: b[0] for name, b in batches.items()}
    folder = env.data_dir / "cifar10"
    if layout == "tarball":
        write_cifar_tarball(folder / "cifar-10-python.tar.gz", blobs)
    else:
        write_cifar_folder(folder, blobs)
    for split, n in (("train", 20), ("test", 4)):
        X, y = data.load("CIFAR-10", split, env.data_dir, download=False)
        X_true, y_true = _cifar_truth(batches, split)
        assert X.shape == (n, 3072) and X.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(X, X_true)
        np.testing.assert_array_equal(y, y_true)
    X4, _ = data.load("cifar10", "test", env.data_dir, flatten=False, download=False)
    assert X4.shape == (4, 3, 32, 32)
    raw = batches["test_batch"][1]
    assert X4[1, 2, 0, 5] == np.float32(raw[1, 2 * 1024 + 5]) / np.float32(255)  # channel-first
    row = {r["name"]: r for r in data.info(env.data_dir)}["cifar10"]
    assert row["found"] and row["path"] == str(folder) and set(row["splits"]) == {"train", "test"}
    fp = data.fingerprint("cifar10", "test", env.data_dir)
    assert fp["n_samples"] == 4 and fp["source"] == str(folder)
    expected_name = "cifar-10-python.tar.gz" if layout == "tarball" else f"{CIFAR_FOLDER}/test_batch"
    assert list(fp["files"]) == [expected_name]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_protocols(env, protocol):
    blobs = {name: b[0] for name, b in cifar_batches(n_per_batch=2, protocol=protocol).items()}
    write_cifar_folder(env.data_dir, blobs)
    assert data.load("cifar10", "test", env.data_dir, download=False)[0].shape == (2, 3072)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_malicious_pickle_refused(env, tmp_path):
    target = tmp_path / "pwned"
    blobs = {name: b[0] for name, b in cifar_batches(n_per_batch=2).items()}
    blobs["test_batch"] = pickle.dumps({b"data": _Evil(str(target)), b"labels": [0, 1]}, protocol=2)
    write_cifar_tarball(env.data_dir / "cifar-10-python.tar.gz", blobs)
    with pytest.raises(DataError, match="refusing to load global") as exc:
        data.load("cifar10", "test", env.data_dir, download=False)
    assert "cifar-10-python.tar.gz" in str(exc.value)
    assert not target.exists()


def test_cifar_bad_batches(env):
    blobs = {name: b[0] for name, b in cifar_batches(n_per_batch=2).items()}
    write_cifar_folder(env.data_dir, blobs)
    sub = env.data_dir / CIFAR_FOLDER
    bad = np.zeros((2, 3000), dtype=np.uint8)
    (sub / "test_batch").write_bytes(pickle.dumps({b"data": bad, b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"uint8 array of shape \(n, 3072\)"):
        data.load("cifar10", "test", env.data_dir, download=False)
    good = np.zeros((2, 3072), dtype=np.uint8)
    (sub / "test_batch").write_bytes(pickle.dumps({b"data": good, b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="2 images but labels of shape"):
        data.load("cifar10", "test", env.data_dir, download=False)
    (sub / "test_batch").write_bytes(pickle.dumps([good], protocol=2))
    with pytest.raises(DataError, match="pickled dict"):
        data.load("cifar10", "test", env.data_dir, download=False)
    (sub / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=str(sub / "test_batch")):
        data.load("cifar10", "test", env.data_dir, download=False)


def test_cifar_tarball_missing_member_and_corrupt(env):
    blobs = {name: b[0] for name, b in cifar_batches(n_per_batch=2).items()}
    del blobs["data_batch_3"]
    tarball = write_cifar_tarball(env.data_dir / "cifar-10-python.tar.gz", blobs)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_3"):
        data.load("cifar10", "train", env.data_dir, download=False)
    tarball.write_bytes(tarball.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        data.load("cifar10", "test", env.data_dir, download=False)


def test_cifar_download_uses_archive(env, monkeypatch, tmp_path):
    blob, raw, labels = cifar_batch_bytes(3, seed=5)
    blobs = {name: b[0] for name, b in cifar_batches(n_per_batch=2).items()} | {"test_batch": blob}
    payload = write_cifar_tarball(tmp_path / "served.tar.gz", blobs).read_bytes()
    spec = data.DATASETS["cifar10"]
    monkeypatch.setitem(data.DATASETS, "cifar10", dataclasses.replace(
        spec, sha256={spec.archive: hashlib.sha256(payload).hexdigest()}))
    monkeypatch.setattr(urllib.request, "urlopen", FakeURLOpen({spec.mirrors[0] + spec.archive: payload}))
    X, y = data.load("cifar10", "test")
    np.testing.assert_array_equal(y, labels)
    assert X.shape == (3, 3072)
    assert [p.name for p in (env.cache / "bioreps" / "cifar10").iterdir()] == [spec.archive]


# ------------------------------------------------------------------------------------------
# info and fingerprint
# ------------------------------------------------------------------------------------------


def test_info(env):
    write_idx_dataset(env.data_dir / "mnist", n_train=9, n_test=5, gz=False)
    write_idx_dataset(env.system / "fashion-mnist", n_test=7, splits=("test",))
    rows = {r["name"]: r for r in data.info(env.data_dir)}
    assert list(rows) == ["fashion-mnist", "mnist", "cifar10"]
    assert rows["mnist"]["found"] and rows["mnist"]["path"] == str(env.data_dir / "mnist")
    assert rows["mnist"]["splits"] == {"train": 9, "test": 5} and rows["mnist"]["how_to_get"] is None
    fm = rows["fashion-mnist"]
    assert fm["splits"] == {"test": 7} and fm["source"] == "system"
    assert "apt-get install dataset-fashion-mnist" in fm["how_to_get"]
    assert fm["image_shape"] == (28, 28) and fm["n_classes"] == 10
    assert rows["cifar10"] == {**rows["cifar10"], "found": False, "path": None, "splits": {}}
    assert rows["cifar10"]["how_to_get"]


def test_info_reports_malformed_header(env):
    write_idx_dataset(env.data_dir, splits=("test",))
    (env.data_dir / MNIST_NAMES["test"][0]).write_bytes(b"\x00\x00\x08")
    row = data.info(env.data_dir)[0]
    assert row["found"] and "truncated header" in row["error"]


def test_fingerprint(env):
    write_idx_dataset(env.data_dir, n_test=6, splits=("test",))
    fp = data.fingerprint("fashion_mnist", "test", env.data_dir)
    assert fp["name"] == "fashion-mnist" and fp["split"] == "test" and fp["n_samples"] == 6
    assert fp["source"] == str(env.data_dir)
    for fname in MNIST_NAMES["test"]:
        assert fp["files"][fname] == hashlib.sha256((env.data_dir / fname).read_bytes()).hexdigest()
    # the hash is cached by (path, mtime, size) and recomputed when the file changes
    path = env.data_dir / MNIST_NAMES["test"][1]
    key = data._stat_key(path)
    assert data._HASHES[key] == fp["files"][path.name]
    write_idx(path, np.arange(6, dtype=np.uint8)[::-1].copy())
    os.utime(path, ns=(key[1] + 10**9, key[1] + 10**9))
    assert data.fingerprint("fashion-mnist", "test", env.data_dir)["files"][path.name] != fp["files"][path.name]
    with pytest.raises(DatasetNotFoundError, match="does not download"):
        data.fingerprint("fashion-mnist", "train")  # with data_dir: only that folder (test_runner_safety)


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------


def test_make_classes():
    X, y = data.make_classes(103, 50, 4, noise=0.1, random_state=7)
    assert X.shape == (103, 50) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() >= 0 and X.max() <= 1
    assert sorted(np.bincount(y)) == [25, 26, 26, 26]
    X2, y2 = data.make_classes(103, 50, 4, noise=0.1, random_state=7)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, data.make_classes(103, 50, 4, random_state=8)[0])
    # class structure: every sample is nearest to its own class mean
    means = np.stack([X[y == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((X[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.95
    X0, y0 = data.make_classes(20, 30, 2, noise=0.0, random_state=0)
    assert len(np.unique(X0, axis=0)) == 2  # no noise: exactly the prototypes


@pytest.mark.parametrize("kwargs, err, match", [
    ({"n_samples": 0}, ValueError, "n_samples must be >= 1, got 0"),
    ({"n_features": 0}, ValueError, "n_features must be >= 1, got 0"),
    ({"n_classes": 0}, ValueError, "n_classes must be >= 1, got 0"),
    ({"noise": -0.1}, ValueError, "noise must be a finite number >= 0, got -0.1"),
    ({"noise": float("nan")}, ValueError, "noise must be a finite number >= 0, got nan"),
    ({"n_samples": 2.5}, TypeError, "n_samples must be an int, got float"),
])
def test_make_classes_validates(kwargs, err, match):
    with pytest.raises(err, match=match):
        data.make_classes(**kwargs)


def test_make_powerlaw():
    X = data.make_powerlaw(40000, 8, alpha=1.5, random_state=3)
    assert X.shape == (40000, 8) and X.dtype == np.float64
    np.testing.assert_array_equal(X, data.make_powerlaw(40000, 8, alpha=1.5, random_state=3))
    eig = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1]
    np.testing.assert_allclose(eig, np.arange(1, 9) ** -1.5, rtol=0.05)
    cov = np.cov(X, rowvar=False)
    assert np.abs(cov - np.diag(np.diag(cov))).max() > 0.05  # rotated: not axis-aligned
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1.0"):
        data.make_powerlaw(10, 5, alpha=-1)
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        data.make_powerlaw(0, 5)


# ------------------------------------------------------------------------------------------
# The real Fashion-MNIST (Debian's dataset-fashion-mnist, or anywhere on the search path)
# ------------------------------------------------------------------------------------------


def _skip_or_fail(msg):
    if IN_CI:
        pytest.fail(f"{msg}; CI installs dataset-fashion-mnist, so it must be there")
    pytest.skip(msg)


@pytest.fixture
def real_fashion(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _forbid_network)
    loc = data.locate("fashion-mnist")
    if loc is None or set(loc.splits) != {"train", "test"}:
        _skip_or_fail("Fashion-MNIST not found locally (apt-get install dataset-fashion-mnist)")
    return loc


def test_real_fashion_mnist_test(real_fashion):
    X, y = data.load("fashion-mnist", "test", download=False)
    assert X.shape == (10000, 784) and X.dtype == np.float32 and X.flags.c_contiguous
    assert X.min() == 0 and X.max() == 1
    assert y.dtype == np.int64 and y.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 1000))
    X3, y3 = data.load("fashion-mnist", "test", flatten=False, download=False)
    assert X3.shape == (10000, 28, 28)
    np.testing.assert_array_equal(X3.reshape(10000, -1), X)


def test_real_fashion_mnist_train(real_fashion):
    X, y = data.load("fashion-mnist", "train", download=False)
    assert X.shape == (60000, 784) and X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 6000))


def test_real_info_finds_system_copy(env, monkeypatch):
    system = Path("/usr/share/datasets")
    if not all((system / "fashion-mnist" / f).is_file() for f in FASHION_FILES):
        _skip_or_fail(f"{system / 'fashion-mnist'} lacks the Fashion-MNIST files")
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [str(system)])
    row = data.info()[0]
    assert row["name"] == "fashion-mnist" and row["found"] and row["source"] == "system"
    assert row["path"] == str(system / "fashion-mnist")
    assert row["splits"] == {"train": 60000, "test": 10000}
    fp = data.fingerprint("fashion-mnist", "test")
    assert fp["n_samples"] == 10000 and set(fp["files"]) == set(MNIST_NAMES["test"])
