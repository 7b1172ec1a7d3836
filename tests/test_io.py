"""Tests of bioreps.io: the HDF5 file format, its reader, its atomic writer and its refusals."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bioreps import _files, io
from bioreps._version import __version__

DATA = Path(__file__).parent / "data"
FROZEN_V1 = DATA / "bioreps-schema-1.0.0.h5"
# sha256 of the frozen file as committed; a mismatch means it was regenerated or damaged.
FROZEN_V1_SHA256 = "bfa0feb136fce62e6350e6c6414cc09fbd0458871ed0750d68f528c26ec85ad1"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _activations(n, units, seed=0):
    return np.random.default_rng(seed).standard_normal((n, units)).astype(np.float32)


def _save_simple(path, n=12, units=5, **kwargs):
    acts = _activations(n, units)
    labels = np.arange(n) % 3
    kwargs.setdefault("overwrite", True)
    io.save(path, model_kind="pixels", model_arrays={"w": np.eye(3)},
            representations={"test": {"activations": acts, "labels": labels,
                                      "dataset": "toy", "dataset_split": "test"}}, **kwargs)
    return acts, labels


def _listing(folder):
    return sorted(os.listdir(folder))


def _bitwise_equal(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _set_attr(path, h5path, name, value):
    with h5py.File(path, "r+") as f:
        f[h5path].attrs[name] = value


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny chunks (4 rows of 4 units) and blocks (2 chunks) so a few rows span many chunks."""
    monkeypatch.setattr(io, "ACTIVATION_CHUNK_BYTES", 4 * 4 * 4)
    monkeypatch.setattr(io, "DEFAULT_BLOCK_BYTES", 2 * 4 * 4 * 4)


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------

def test_model_arrays_and_hyperparameters_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "weights": rng.standard_normal((20, 30)).astype(np.float32),
        "theta": rng.standard_normal(20),
        "labels_": rng.integers(0, 10, 20).astype(np.int8),
        "counts": np.arange(7, dtype=np.uint16),
        "mask": np.array([True, False, True]),
        "phase": np.array([1 + 2j, -3j], dtype=np.complex64),
        "scalar": np.float64(2.5),
        "python_int": 7,
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big": rng.standard_normal((200, 100)),          # > 64 KiB: stored compressed
        "state": {"n_seen": np.int64(120), "inner": {"v": np.ones((2, 2), np.float16)}},
    }
    hyper = {"n_hidden": np.int64(4), "power": np.float32(4.5), "lr": 0.02, "norm": "l3",
             "shape": (3, 4), "grid": np.arange(3), "nested": {"a": [1, {"b": None}]},
             "flag": True}
    path = tmp_path / "m.h5"
    io.save(path, model_kind="hebbian-wta", model_arrays=arrays, hyperparameters=hyper)
    with io.load(path) as f:
        assert f.schema_version == io.SCHEMA_VERSION == "1.4.0"
        assert isinstance(f.model, io.ModelRecord)
        assert f.model.kind == "hebbian-wta"
        assert f.model.hyperparameters == {"n_hidden": 4, "power": 4.5, "lr": 0.02,
                                           "norm": "l3", "shape": [3, 4], "grid": [0, 1, 2],
                                           "nested": {"a": [1, {"b": None}]}, "flag": True}
        got = f.model.arrays
        assert set(got) == set(arrays)
        for name in ("weights", "theta", "labels_", "counts", "mask", "phase", "empty", "big"):
            assert got[name].dtype == arrays[name].dtype, name
            np.testing.assert_array_equal(got[name], arrays[name])
        assert got["scalar"].shape == () and got["scalar"] == 2.5
        assert got["python_int"].shape == () and got["python_int"] == 7
        assert got["state"]["n_seen"] == 120
        assert got["state"]["inner"]["v"].dtype == np.float16
        np.testing.assert_array_equal(got["state"]["inner"]["v"], np.ones((2, 2)))
        assert f.representations == {}


def test_provenance_present_and_decoded(tmp_path):
    path = tmp_path / "m.h5"
    config = {"experiment": {"name": "x", "seed": 3}, "model": {"sizes": [1, 2]}}
    io.save(path, model_kind="mlp",
            provenance={"seed": np.int64(3), "backend": "cpu", "config": config,
                        "dataset": "mnist", "dataset_checksum": {"test": "sha256:ab"},
                        "run_id": "r1", "tags": ["a", "b"], "score": 0.5, "ok": True,
                        "nothing": None, "huge": 2**70})
    with io.load(path) as f:
        p = f.provenance
    expected_keys = ["bioreps_version", "git_commit", "python_version", "numpy_version",
                     "numba_version", "torch_version", "h5py_version", "platform", "backend",
                     "seed", "config", "dataset", "dataset_checksum", "created"]
    assert list(p)[:len(expected_keys)] == expected_keys
    assert p["bioreps_version"] == __version__
    assert p["seed"] == 3 and p["backend"] == "cpu" and p["dataset"] == "mnist"
    assert p["config"] == config
    assert p["dataset_checksum"] == {"test": "sha256:ab"}
    assert p["run_id"] == "r1" and p["tags"] == ["a", "b"] and p["score"] == 0.5
    assert p["ok"] is True and p["nothing"] is None and p["huge"] == 2**70
    assert p["h5py_version"] == h5py.__version__
    assert p["created"].endswith("Z") and "T" in p["created"]
    assert p["git_commit"] == "unknown" or len(p["git_commit"]) in (40, 64)


def test_automatic_provenance_when_never_written(tmp_path):
    path = tmp_path / "m.h5"
    with io.Writer(path) as w:
        w.write_model("pixels")
    with io.load(path) as f:
        assert f.provenance["seed"] == "none"
        assert f.provenance["config"] == {}
        assert f.provenance["dataset_checksum"] == "unknown"
        assert f.provenance["numpy_version"] == np.__version__


def test_collect_provenance_overrides_and_does_not_import_torch():
    p = io.collect_provenance(seed=None, backend="cuda", extra=1)
    assert p["seed"] == "none" and p["backend"] == "cuda" and p["extra"] == 1
    code = ("import sys, bioreps.io as io; p = io.collect_provenance(); "
            "print('torch' in sys.modules, p['torch_version'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == "False"
    assert out[1]   # a version string or "not installed"


@pytest.mark.parametrize("failure", [FileNotFoundError("no git"),
                                     subprocess.TimeoutExpired("git", 2.0)])
def test_git_commit_falls_back_to_unknown(monkeypatch, failure):
    def broken(*args, **kwargs):
        raise failure
    monkeypatch.setattr(io.subprocess, "run", broken)
    assert io.collect_provenance()["git_commit"] == "unknown"


def test_activations_labels_and_index_round_trip_exactly(tmp_path):
    acts = _activations(50, 7)
    acts[0, 0] = -0.0
    acts[1, 1] = np.float32(1e-45)                          # subnormal
    acts[2, 2] = np.finfo(np.float32).max
    labels = np.arange(50) % 10
    index = np.arange(50)[::-1] * 2
    path = tmp_path / "m.h5"
    io.save(path, model_kind="hebbian-wta",
            representations={"test": dict(activations=acts, labels=labels, inputs_index=index,
                                          dataset="fashion-mnist", dataset_split="test",
                                          description="ReLU(Wx)^4.5"),
                             "train": dict(activations=acts[:10].astype(np.float64))})
    with io.load(path) as f:
        rep = f.representations["test"]
        assert isinstance(rep, io.Representation)
        assert rep.shape == (50, 7) and len(rep) == 50
        assert rep.n_samples == 50 and rep.n_units == 7 and rep.dtype == np.float32
        assert _bitwise_equal(rep.to_numpy(), acts)
        assert _bitwise_equal(np.asarray(rep), acts)
        assert rep.labels.dtype == np.int64
        np.testing.assert_array_equal(rep.labels, labels)
        np.testing.assert_array_equal(rep.inputs_index, index)
        assert rep.attrs["dataset"] == "fashion-mnist" and rep.dataset == "fashion-mnist"
        assert rep.attrs["dataset_split"] == "test" and rep.dataset_split == "test"
        assert rep.attrs["description"] == "ReLU(Wx)^4.5"
        assert rep.attrs["n_samples"] == 50 and rep.attrs["n_units"] == 7
        train = f.representations["train"]
        assert train.labels is None
        np.testing.assert_array_equal(train.inputs_index, np.arange(10))
        assert _bitwise_equal(train.read(), acts[:10])
        assert train.dataset == "unknown"


def test_streaming_writer_write_rows_and_append(tmp_path, small_chunks):
    acts = _activations(30, 4)
    path = tmp_path / "m.h5"
    with io.Writer(path) as w:
        w.write_model("pixels", {}, {})
        rep = w.create_representation("test", 30, 4, labels=np.zeros(30, int))
        assert rep.chunk_rows == 4
        rep.write_rows(20, acts[20:30])            # out of order
        rep.write_rows(0, acts[0:3].astype(np.float64))
        rep.append(acts[3:11])                     # continues after the last block written
        rep.append(acts[11:20])
        assert rep.complete and rep.rows_written == 30
        rep.write_rows(5, acts[5:6])               # rewriting a row is allowed
    with io.load(path) as f:
        assert _bitwise_equal(f.representations["test"].read(), acts)


def test_write_representation_from_a_lazy_source(tmp_path, small_chunks):
    acts = _activations(37, 4)
    src, dst = tmp_path / "src.h5", tmp_path / "dst.h5"
    io.save(src, model_kind="pixels", representations={"test": acts})
    with io.load(src) as f, io.Writer(dst) as w:
        w.write_model("pixels")
        w.write_representation("copy", f.representations["test"], dataset="toy")
    with io.load(dst) as g:
        assert _bitwise_equal(g.representations["copy"].read(), acts)


def test_empty_representation(tmp_path):
    path = tmp_path / "m.h5"
    io.save(path, model_kind="pixels",
            representations={"none": {"activations": np.zeros((0, 3), np.float32),
                                      "labels": np.zeros(0, int)}})
    with io.load(path) as f:
        rep = f.representations["none"]
        assert rep.shape == (0, 3)
        assert rep.read().shape == (0, 3)
        assert list(rep.iter_blocks()) == []
        assert rep[[]].shape == (0, 3)
        assert rep.labels.shape == (0,)


# --------------------------------------------------------------------------------------------
# lazy reading
# --------------------------------------------------------------------------------------------

@pytest.fixture
def chunked_file(tmp_path, small_chunks):
    acts = _activations(43, 4, seed=5)
    path = tmp_path / "m.h5"
    io.save(path, model_kind="pixels", representations={"test": acts})
    return path, acts


def test_read_ranges(chunked_file):
    path, acts = chunked_file
    with io.load(path) as f:
        rep = f.representations["test"]
        assert rep.chunk_rows == 4
        assert _bitwise_equal(rep.read(5, 17), acts[5:17])
        assert _bitwise_equal(rep.read(40), acts[40:])
        assert _bitwise_equal(rep.read(-3), acts[-3:])
        assert _bitwise_equal(rep.read(10, 1000), acts[10:])
        assert rep.read(9, 9).shape == (0, 4)
        assert rep.read(0, 5).dtype == np.float32


@pytest.mark.parametrize("block_rows", [None, 1, 5, 8, 42, 43, 100])
def test_iter_blocks_covers_every_row_once(chunked_file, block_rows):
    path, acts = chunked_file
    with io.load(path) as f:
        rep = f.representations["test"]
        seen = np.zeros(len(acts), dtype=int)
        starts = []
        for start, block in rep.iter_blocks(block_rows):
            starts.append(start)
            assert _bitwise_equal(block, acts[start:start + len(block)])
            seen[start:start + len(block)] += 1
        assert (seen == 1).all()
        assert starts == sorted(starts)
        if block_rows is None:   # default: whole chunks (2 chunks of 4 rows under small_chunks)
            assert all(s % rep.chunk_rows == 0 for s in starts)
            assert starts[:2] == [0, 8]


def test_fancy_indexing(chunked_file):
    path, acts = chunked_file
    with io.load(path) as f:
        rep = f.representations["test"]
        idx = [41, 3, 17, 3, 0, -1, 22, 21]                   # unsorted, duplicates, negative
        assert _bitwise_equal(rep[idx], acts[idx])
        assert _bitwise_equal(rep[np.array(idx)], acts[idx])
        grid = np.array([[5, 1], [40, 39]])
        assert _bitwise_equal(rep[grid], acts[grid])
        mask = np.arange(43) % 5 == 2
        assert _bitwise_equal(rep[mask], acts[mask])
        assert _bitwise_equal(rep[7], acts[7])
        assert _bitwise_equal(rep[-43], acts[0])
        assert _bitwise_equal(rep[3:30], acts[3:30])
        assert _bitwise_equal(rep[::7], acts[::7])
        assert _bitwise_equal(rep[::-3], acts[::-3])
        assert _bitwise_equal(rep[30:3], acts[30:3])
        assert _bitwise_equal(rep[10:20, 1:3], acts[10:20, 1:3])
        assert _bitwise_equal(rep[[4, 2], 0], acts[[4, 2], 0])
        assert _bitwise_equal(rep[6, 2], acts[6, 2])
        assert _bitwise_equal(rep[...], acts)
        for bad in (43, -44, [0, 43]):
            with pytest.raises(IndexError):
                rep[bad]
        with pytest.raises(IndexError):
            rep[np.array([0.5])]
        with pytest.raises(IndexError):
            rep[np.ones(3, bool)]


def test_fancy_indexing_reads_only_the_chunks_it_needs(chunked_file, monkeypatch):
    path, acts = chunked_file
    with io.load(path) as f:
        rep = f.representations["test"]
        reads = []
        original = rep._read_slice

        def spy(start, stop):
            reads.append((start, stop))
            return original(start, stop)

        monkeypatch.setattr(rep, "_read_slice", spy)
        assert _bitwise_equal(rep[[41, 1, 2]], acts[[41, 1, 2]])
        assert reads == [(1, 3), (41, 42)]


def test_reading_after_close_raises(chunked_file):
    path, _ = chunked_file
    f = io.load(path)
    rep = f.representations["test"]
    f.close()
    assert f.closed
    assert rep.shape == (43, 4)                            # metadata stays available
    for action in (rep.read, rep.to_numpy, lambda: rep[0], lambda: rep[[1, 2]],
                   lambda: next(rep.iter_blocks()), lambda: rep.inputs_index):
        with pytest.raises(ValueError, match="closed"):
            action()
    f.close()                                              # idempotent


# --------------------------------------------------------------------------------------------
# the layout, as seen by plain h5py
# --------------------------------------------------------------------------------------------

def test_plain_h5py_sees_the_documented_layout(tmp_path):
    path = tmp_path / "m.h5"
    big = np.random.default_rng(0).standard_normal((100, 200))       # 160 KB: compressed
    acts = _activations(3000, 300)                                   # 3.6 MB: several chunks
    io.save(path, model_kind="hebbian-wta",
            model_arrays={"weights": big, "theta": np.zeros(5), "n": 3, "sub": {"x": [1, 2]}},
            hyperparameters={"power": 4.5},
            representations={"test": dict(activations=acts, labels=np.zeros(3000, int),
                                          dataset="d", dataset_split="test")})
    seen = []
    with h5py.File(path, "r") as f:
        assert f.attrs["encoding-type"] == "bioreps-file"
        assert f.attrs["encoding-version"] == "1.4.0"

        def check(name, obj):
            seen.append(name)
            assert isinstance(obj.attrs["encoding-type"], str), name
            assert isinstance(obj.attrs["encoding-version"], str), name

        f.visititems(check)
        assert {"model", "model/weights", "model/sub", "model/sub/x", "provenance",
                "representations", "representations/test", "representations/test/activations",
                "representations/test/labels", "representations/test/inputs_index"} <= set(seen)
        assert f["model"].attrs["kind"] == "hebbian-wta"
        assert json.loads(f["model"].attrs["hyperparameters"]) == {"power": 4.5}
        assert f["model/sub"].attrs["encoding-type"] == "dict"
        assert f["model/weights"].compression == "gzip" and f["model/weights"].shuffle
        assert f["model/theta"].compression is None and f["model/theta"].chunks is None
        assert f["model/n"].shape == () and f["model/n"].compression is None

        group = f["representations/test"]
        assert group.attrs["encoding-type"] == "representation"
        assert group.attrs["n_samples"] == 3000 and group.attrs["n_units"] == 300
        assert group.attrs["dataset"] == "d" and group.attrs["dataset_split"] == "test"
        dset = group["activations"]
        assert dset.attrs["encoding-type"] == "activations"
        assert dset.dtype == np.float32 and dset.shape == (3000, 300)
        rows, units = dset.chunks
        assert units == 300 and rows == (1 << 20) // (4 * 300)       # ~1 MiB chunks of rows
        assert dset.compression == "gzip" and dset.compression_opts == 4 and dset.shuffle
        assert _bitwise_equal(dset[()], acts)
        assert group["labels"].dtype == np.int64
        assert group["labels"].attrs["encoding-type"] == "labels"
        assert group["inputs_index"].attrs["encoding-type"] == "index"

        prov = f["provenance"]
        assert prov.attrs["encoding-type"] == "provenance"
        assert json.loads(prov.attrs["config"]) == {}
        assert json.loads(prov.attrs["json-fields"]) == ["config", "dataset_checksum"]


# --------------------------------------------------------------------------------------------
# refusals: versions, encodings, broken files
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.0.0", "1.5.0"])
def test_newer_schema_is_refused(tmp_path, version):
    path = tmp_path / "m.h5"
    _save_simple(path)
    _set_attr(path, "/", "encoding-version", version)
    with pytest.raises(io.SchemaError, match=rf"newer bioreps \(schema {version}\).*upgrade"):
        io.load(path)


def test_newer_patch_version_is_read(tmp_path):
    path = tmp_path / "m.h5"
    acts, _ = _save_simple(path)
    _set_attr(path, "/", "encoding-version", "1.0.9")
    _set_attr(path, "/representations/test/activations", "encoding-version", "1.0.3")
    with io.load(path) as f:
        assert f.schema_version == "1.0.9"
        assert _bitwise_equal(f.representations["test"].read(), acts)


@pytest.mark.parametrize("version", ["0.9.0", "one", ""])
def test_unsupported_or_malformed_version_is_refused(tmp_path, version):
    path = tmp_path / "m.h5"
    _save_simple(path)
    _set_attr(path, "/", "encoding-version", version)
    with pytest.raises(io.SchemaError, match="schema"):
        io.load(path)


@pytest.mark.parametrize("h5path", ["/model", "/model/w", "/provenance", "/representations",
                                    "/representations/test", "/representations/test/activations",
                                    "/representations/test/labels",
                                    "/representations/test/inputs_index"])
def test_newer_element_version_is_refused_naming_the_path(tmp_path, h5path):
    path = tmp_path / "m.h5"
    _save_simple(path)
    _set_attr(path, h5path, "encoding-version", "1.9.0")
    with pytest.raises(io.SchemaError, match=rf"{h5path} .*1\.9\.0.*upgrade"):
        io.load(path)


@pytest.mark.parametrize("h5path", ["/model/w", "/representations/test/activations",
                                    "/representations/test"])
def test_unknown_encoding_type_is_refused_naming_the_path(tmp_path, h5path):
    path = tmp_path / "m.h5"
    _save_simple(path)
    _set_attr(path, h5path, "encoding-type", "sparse-csr")
    with pytest.raises(io.SchemaError, match=rf"{h5path} has unknown encoding-type 'sparse-csr'"):
        io.load(path)


def test_missing_encoding_attribute_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    _save_simple(path)
    with h5py.File(path, "r+") as f:
        del f["/representations/test/labels"].attrs["encoding-version"]
    with pytest.raises(io.SchemaError, match="/representations/test/labels has no"):
        io.load(path)


def test_other_hdf5_files_are_not_bioreps_files(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(io.SchemaError, match="not a bioreps file"):
        io.load(plain)
    other = tmp_path / "anndata.h5"
    with h5py.File(other, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    with pytest.raises(io.SchemaError, match="not a bioreps file.*'anndata'"):
        io.load(other)


def test_missing_required_group_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    _save_simple(path)
    with h5py.File(path, "r+") as f:
        del f["provenance"]
    with pytest.raises(io.SchemaError, match="missing /provenance"):
        io.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    _save_simple(path, n=2000, units=64)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(io.SchemaError, match="not a readable HDF5 file .truncated or corrupt"):
        io.load(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\x89HDF\r\n\x1a\n" + b"\0" * 50])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "junk.h5"
    path.write_bytes(content)
    with pytest.raises(io.SchemaError, match=str(path.name)):
        io.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "absent.h5")


# --------------------------------------------------------------------------------------------
# refusals at write time; atomic writes
# --------------------------------------------------------------------------------------------

def test_nonfinite_activations_are_refused_and_leave_no_file(tmp_path):
    acts = _activations(40, 3)
    acts[3, 1] = np.nan
    acts[17, 0] = np.inf
    acts[39, 2] = -np.inf
    path = tmp_path / "m.h5"
    with pytest.raises(io.NonFiniteError, match=r"'test'.*3 rows.*\[3, 17, 39\]") as info:
        io.save(path, model_kind="pixels", representations={"test": acts})
    assert info.value.split == "test" and info.value.count == 3
    np.testing.assert_array_equal(info.value.rows, [3, 17, 39])
    assert _listing(tmp_path) == []


def test_nonfinite_rows_are_named_by_absolute_index(tmp_path):
    path = tmp_path / "m.h5"
    with pytest.raises(io.NonFiniteError) as info:
        with io.Writer(path) as w:
            w.write_model("pixels")
            rep = w.create_representation("train", 100, 2)
            rep.write_rows(0, np.zeros((50, 2)))
            block = np.zeros((50, 2))
            block[np.arange(0, 50, 2)] = np.nan                       # 25 bad rows
            rep.write_rows(50, block)
    err = info.value
    assert err.count == 25 and err.rows[0] == 50 and err.rows[-1] == 98
    assert "50, 52, 54, 56, 58, 60, 62, 64, 66, 68, ..." in str(err)
    assert "25 rows" in str(err)
    assert _listing(tmp_path) == []
    assert pickle.loads(pickle.dumps(err)).rows.tolist() == err.rows.tolist()


def test_float64_overflow_counts_as_nonfinite(tmp_path):
    acts = np.ones((4, 2))
    acts[2, 0] = 1e300                                          # inf once cast to float32
    with pytest.raises(io.NonFiniteError, match=r"\[2\]"):
        io.save(tmp_path / "m.h5", model_kind="pixels", representations={"x": acts})
    assert _listing(tmp_path) == []


def test_nonfinite_whole_matrix_keeps_the_writer_usable(tmp_path):
    path = tmp_path / "m.h5"
    bad = np.full((3, 2), np.nan)
    with io.Writer(path) as w:
        w.write_model("pixels")
        with pytest.raises(io.NonFiniteError):
            w.write_representation("test", bad)
        w.write_representation("test", np.zeros((3, 2)))       # the split was removed again
    with io.load(path) as f:
        assert list(f.representations) == ["test"]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [_Boom, KeyboardInterrupt])
def test_crash_inside_writer_keeps_the_old_file(tmp_path, exc):
    path = tmp_path / "m.h5"
    _save_simple(path)
    before = path.read_bytes()
    with pytest.raises(exc):
        with io.Writer(path, overwrite=True) as w:
            w.write_model("pixels")
            rep = w.create_representation("test", 10, 3)
            rep.write_rows(0, np.ones((4, 3)))
            assert w.tmp_path.exists() and w.tmp_path.parent == path.parent
            assert w.tmp_path.name.startswith(".m.h5.tmp-")
            raise exc()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.h5"]


def test_failure_inside_hdf5_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    _save_simple(path)
    before = path.read_bytes()
    original = h5py.Dataset.__setitem__
    calls = []

    def flaky(self, key, value):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", flaky)
    monkeypatch.setattr(io, "DEFAULT_BLOCK_BYTES", 1)          # one chunk per write
    with pytest.raises(OSError, match="simulated"):
        io.save(path, model_kind="pixels",
                representations={"test": _activations(5000, 300)}, overwrite=True)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.h5"]


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failure_while_committing_keeps_the_old_file(tmp_path, monkeypatch, target):
    path = tmp_path / "m.h5"
    _save_simple(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(f"{target} failed (simulated)")

    if target == "replace":
        monkeypatch.setattr(io.os, "replace", broken)
    else:
        monkeypatch.setattr(_files, "fsync", broken)
    with pytest.raises(OSError, match="simulated"):
        _save_simple(path, n=30)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.h5"]


def test_overwrite_false_refuses_before_any_work(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        io.Writer(path)
    with pytest.raises(FileExistsError):
        _save_simple(path, overwrite=False)
    assert path.read_bytes() == b"precious"
    assert _listing(tmp_path) == ["m.h5"]


def test_overwrite_true_replaces(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"old")
    acts, _ = _save_simple(path, overwrite=True)
    with io.load(path) as f:
        assert _bitwise_equal(f.representations["test"].read(), acts)
    assert _listing(tmp_path) == ["m.h5"]


def test_incomplete_representation_is_refused_at_close(tmp_path):
    path = tmp_path / "m.h5"
    match = r"'test' is incomplete: 7 of 10 rows.*first missing row 3"
    with pytest.raises(ValueError, match=match):
        with io.Writer(path) as w:
            w.write_model("pixels")
            rep = w.create_representation("test", 10, 2)
            rep.write_rows(0, np.zeros((3, 2)))
            rep.write_rows(6, np.zeros((4, 2)))
    assert _listing(tmp_path) == []


def test_model_is_required(tmp_path):
    with pytest.raises(ValueError, match="write_model"):
        with io.Writer(tmp_path / "m.h5"):
            pass
    assert _listing(tmp_path) == []


def test_writer_is_closed_after_close(tmp_path):
    w = io.Writer(tmp_path / "m.h5")
    w.write_model("pixels")
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.write_provenance({"a": 1})
    w.close()                                                   # idempotent


def test_abandoned_writer_leaves_no_temp_file(tmp_path):
    w = io.Writer(tmp_path / "m.h5")
    w.write_model("pixels")
    del w
    import gc
    gc.collect()
    assert _listing(tmp_path) == []


_KILLED_WRITER = r"""
import sys
import numpy as np
from bioreps import io
w = io.Writer(sys.argv[1], overwrite=True)
w.write_model("pixels")
rep = w.create_representation("train", 200_000, 64)
block = np.random.default_rng(0).standard_normal((20_000, 64)).astype(np.float32)
for start in range(0, 100_000, 20_000):  # half of a 51 MB matrix, flushed to the temporary file
    rep.write_rows(start, block)
w._h5.flush()
print("mid-write", flush=True)
sys.stdin.read()  # wait here, file open and incomplete, until killed
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="no SIGKILL on this platform")
def test_writer_killed_mid_write_leaves_the_old_file_and_the_next_write_clears_its_temp(tmp_path):
    """No exception handler runs on SIGKILL: the old file must survive because the new one was
    never renamed into place; the dead writer's temporary file stays until the next writer of
    the same target deletes it (its pid no longer exists)."""
    import signal

    target = tmp_path / "model.h5"
    old_acts, _ = _save_simple(target)
    old_bytes = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the writer is mid-write (or has died)
        assert line.strip() == "mid-write", proc.stderr.read() if proc.poll() is not None else line
        temps = [p for p in _listing(tmp_path) if p.startswith(".model.h5.tmp-")]
        assert len(temps) == 1 and f"-{proc.pid}-" in temps[0], _listing(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # reaped: its pid no longer exists
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == old_bytes  # the old file is intact
    with io.load(target) as f:
        assert _bitwise_equal(f.representations["test"].read(), old_acts)
    assert _listing(tmp_path) == sorted(["model.h5", temps[0]])  # the dead writer's leftover
    assert (tmp_path / temps[0]).stat().st_size > 1_000_000  # it had written data
    new_acts, _ = _save_simple(target, n=7)  # the next write of the same target removes it
    assert _listing(tmp_path) == ["model.h5"]
    with io.load(target) as f:
        assert _bitwise_equal(f.representations["test"].read(), new_acts)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"model_kind": ""}, ValueError, "model kind"),
    ({"model_kind": 3}, ValueError, "model kind"),
    ({"model_arrays": {"w": np.array([object()])}}, TypeError, "/model/w"),
    ({"model_arrays": {"w": np.array(["text"])}}, TypeError, "/model/w"),
    ({"model_arrays": {"a/b": np.zeros(2)}}, ValueError, "'a/b'"),
    ({"model_arrays": {"": np.zeros(2)}}, ValueError, "valid name"),
    ({"model_arrays": {"sub": {"bad/name": 1}}}, ValueError, "bad/name"),
    ({"model_arrays": [1, 2]}, TypeError, "dict"),
    ({"hyperparameters": {"when": object()}}, TypeError, "hyperparameter 'when'"),
    ({"hyperparameters": {"opt": {"betas": [0.9, {1, 2}]}}}, TypeError,
     r"hyperparameter 'opt.betas\[1\]'"),
    ({"hyperparameters": {"m": {1: 2}}}, TypeError, "non-string key"),
    ({"hyperparameters": [1]}, TypeError, "dict"),
    ({"provenance": {"config": {"path": Path("/x")}}}, TypeError, "'config.path'"),
    ({"provenance": {"encoding-type": "x"}}, ValueError, "reserved"),
    ({"representations": {"a/b": np.zeros((2, 2))}}, ValueError, "split name"),
    ({"representations": {"": np.zeros((2, 2))}}, ValueError, "split name"),
    ({"representations": {"t": np.zeros(4)}}, ValueError, "2-dimensional"),
    ({"representations": {"t": np.zeros((2, 0))}}, ValueError, "n_units"),
    ({"representations": {"t": np.zeros((2, 2), complex)}}, TypeError, "float32"),
    ({"representations": {"t": np.array([["a", "b"]])}}, TypeError, "float32"),
    ({"representations": {"t": {"activations": np.zeros((2, 2)), "labels": [1]}}},
     ValueError, r"labels .*\(2,\)"),
    ({"representations": {"t": {"activations": np.zeros((2, 2)), "labels": [0.5, 1]}}},
     ValueError, "integers"),
    ({"representations": {"t": {"activations": np.zeros((2, 2)), "inputs_index": [0, -1]}}},
     ValueError, "negative"),
    ({"representations": {"t": {"activations": np.zeros((2, 2)), "colour": 1}}},
     TypeError, "colour"),
    ({"representations": {"t": {"activations": np.zeros((2, 2)), "dataset": 5}}},
     TypeError, "dataset"),
])
def test_invalid_input_is_refused_with_a_clear_error(tmp_path, kwargs, exc, match):
    kwargs = {"model_kind": "pixels", **kwargs}
    with pytest.raises(exc, match=match):
        io.save(tmp_path / "m.h5", **kwargs)
    assert _listing(tmp_path) == []


def test_representation_writer_validation(tmp_path):
    with io.Writer(tmp_path / "m.h5") as w:
        w.write_model("pixels")
        with pytest.raises(ValueError, match="n_samples"):
            w.create_representation("a", -1, 2)
        with pytest.raises(ValueError, match="n_units"):
            w.create_representation("a", 3, 0)
        with pytest.raises(TypeError, match="n_samples"):
            w.create_representation("a", 2.0, 2)
        rep = w.create_representation("a", 3, 2)
        with pytest.raises(ValueError, match="already exists"):
            w.create_representation("a", 3, 2)
        with pytest.raises(ValueError, match=r"shape \(rows, 2\)"):
            rep.write_rows(0, np.zeros((1, 3)))
        with pytest.raises(ValueError, match=r"shape \(rows, 2\)"):
            rep.write_rows(0, np.zeros(2))
        with pytest.raises(ValueError, match="outside"):
            rep.write_rows(2, np.zeros((2, 2)))
        with pytest.raises(ValueError, match="start"):
            rep.write_rows(-1, np.zeros((1, 2)))
        with pytest.raises(ValueError, match="already called"):
            w.write_model("pixels")
        rep.write_rows(0, np.zeros((3, 2), dtype=np.int32))
    with io.load(tmp_path / "m.h5") as f:
        assert f.representations["a"].read().sum() == 0


# --------------------------------------------------------------------------------------------
# the frozen schema 1.0.0 file
# --------------------------------------------------------------------------------------------

def test_frozen_v1_file_is_unchanged():
    digest = hashlib.sha256(FROZEN_V1.read_bytes()).hexdigest()
    assert digest == FROZEN_V1_SHA256, (
        f"{FROZEN_V1} changed; it is a frozen example of schema 1.0.0 and must not be "
        f"regenerated (restore it from version control)")


def test_frozen_v1_file_reads_back_exactly():
    with io.load(FROZEN_V1) as f:
        assert f.schema_version == "1.0.0"
        assert f.model.kind == "hebbian-wta"
        assert f.model.hyperparameters == {"n_hidden": 4, "power": 4.5, "lr": 0.02, "k": 2,
                                           "norm": "l3", "steps": [1, 2]}
        arrays = f.model.arrays
        assert sorted(arrays) == ["labels_", "state", "theta", "weights"]
        assert arrays["weights"].dtype == np.float32 and arrays["weights"].shape == (4, 6)
        np.testing.assert_array_equal(arrays["weights"], [
            [-1.25, -1.125, -1.0, -0.875, -0.75, -0.625],
            [-0.5, -0.375, -0.25, -0.125, 0.0, 0.125],
            [0.25, 0.375, 0.5, 0.625, 0.75, 0.875],
            [1.0, 1.125, 1.25, 1.375, 1.5, 1.625]])
        assert arrays["theta"].dtype == np.float64
        np.testing.assert_array_equal(arrays["theta"], [0.5, -1.0, 2.25, 0.0])
        assert arrays["labels_"].dtype == np.int64
        np.testing.assert_array_equal(arrays["labels_"], [3, 1, 4, 1])
        assert arrays["state"]["n_samples_seen"] == 120

        assert sorted(f.representations) == ["test", "train"]
        train = f.representations["train"]
        assert train.shape == (5, 4)
        np.testing.assert_array_equal(train.read(), [[0.0, 0.5, 1.0, 1.5],
                                                     [2.0, 0.0, 0.25, 0.0],
                                                     [0.0, 0.0, 0.0, 3.75],
                                                     [1.0, 1.0, 1.0, 1.0],
                                                     [0.125, 0.0, 6.5, 0.0]])
        np.testing.assert_array_equal(train.labels, [0, 1, 2, 1, 0])
        np.testing.assert_array_equal(train.inputs_index, [0, 2, 4, 6, 8])
        assert train.dataset == "fashion-mnist" and train.dataset_split == "train"
        assert train.description == "ReLU(Wx)^4.5"
        test = f.representations["test"]
        np.testing.assert_array_equal(test[[4, 0]], [[-0.5, 0.75, -1.0, 1.25],
                                                     [4.0, 0.0, 0.0, 0.0]])
        np.testing.assert_array_equal(test.read(1, 4), 4 * np.eye(4)[1:4])
        assert test.labels is None
        np.testing.assert_array_equal(test.inputs_index, [9, 7, 5, 3, 1])
        assert test.description == "no labels stored"

        assert f.provenance == {
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


def test_summary_names_the_key_facts():
    with io.load(FROZEN_V1) as f:
        text = f.summary()
    for fact in ("schema 1.0.0", "model: hebbian-wta", "power = 4.5", "weights",
                 "float32 (4, 6)", "train: 5 x 4 float32", "5 labels (3 classes)",
                 "test: 5 x 4 float32, no labels", "2024-01-01T00:00:00Z", "seed 1234",
                 "dataset fashion-mnist", "backend cpu", "0123456789abcdef"):
        assert fact in text, fact


# --------------------------------------------------------------------------------------------
# property: any float32 matrix written in any blocks reads back bit for bit
# --------------------------------------------------------------------------------------------

@st.composite
def matrices_and_blocks(draw):
    n = draw(st.integers(0, 40))
    units = draw(st.integers(1, 6))
    matrix = draw(hnp.arrays(np.float32, (n, units),
                             elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
    sizes, left = [], n
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    order = draw(st.permutations(range(len(sizes))))
    return matrix, sizes, order


@settings(max_examples=30, deadline=None, derandomize=True, database=None)  # repeatable; no .hypothesis/
@given(matrices_and_blocks(), st.integers(1, 64))
def test_property_blockwise_writes_round_trip(case, chunk_bytes):
    matrix, sizes, order = case
    n, units = matrix.shape
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    old = io.ACTIVATION_CHUNK_BYTES
    io.ACTIVATION_CHUNK_BYTES = chunk_bytes * 4                 # 1..64 floats per chunk
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "p.h5"
            with io.Writer(path) as w:
                w.write_model("pixels")
                rep = w.create_representation("s", n, units)
                for i in order:
                    rep.write_rows(int(starts[i]), matrix[starts[i]:starts[i] + sizes[i]])
            with io.load(path) as f:
                r = f.representations["s"]
                assert _bitwise_equal(r.read(), matrix)
                rebuilt = np.concatenate([b for _, b in r.iter_blocks(3)] or
                                         [np.zeros((0, units), np.float32)])
                assert _bitwise_equal(rebuilt, matrix)
                if n:
                    perm = np.random.default_rng(n).permutation(n)
                    assert _bitwise_equal(r[perm], matrix[perm])
            assert os.listdir(folder) == ["p.h5"]
    finally:
        io.ACTIVATION_CHUNK_BYTES = old


def test_a_representation_may_say_its_layer(tmp_path):
    path = tmp_path / "layers.h5"
    with io.Writer(path) as w:
        w.write_model("hebbian-wta", {"w": np.ones((2, 3))}, {})
        w.create_representation("test.layer0", 2, 3, layer=0).write_rows(0, np.ones((2, 3), np.float32))
        w.create_representation("test", 2, 4).write_rows(0, np.ones((2, 4), np.float32))
        with pytest.raises(ValueError, match="layer must be >= 0"):
            w.create_representation("bad", 2, 3, layer=-1)
    with io.load(path) as f:
        assert f.representations["test.layer0"].layer == 0 and f.representations["test"].layer is None
    _set_attr(path, "/representations/test.layer0", "layer", "first")
    with pytest.raises(io.SchemaError, match=r"/representations/test.layer0 attribute layer='first' must be an int"):
        io.load(path).representations["test.layer0"]
