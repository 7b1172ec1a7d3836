"""The package's one atomic writer (bioreps._files) and one figure saver (bioreps.plots.save_figure)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from bioreps import _files, data, plots
from _datahelpers import FakeURLOpen


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_keeps_old_file_on_error_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with _files.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _listing(tmp_path) == ["a.txt"]
    with _files.atomic_path(target, ".txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.txt.tmp-") and tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _listing(tmp_path) == ["a.txt"]


def test_atomic_path_failing_commit_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    _files.write_json_atomic(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'

    def broken(*args, **kwargs):
        raise OSError("replace failed (simulated)")

    monkeypatch.setattr(_files.os, "replace", broken)
    with pytest.raises(OSError, match="simulated"):
        _files.write_json_atomic(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert _listing(tmp_path) == ["a.json"]


def test_commit_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "a"
    target.write_text("precious")
    with pytest.raises(FileExistsError, match=r"a appeared while writing; not replacing it \(overwrite=False\)"):
        with _files.atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "precious"
    assert _listing(tmp_path) == ["a"]


def _write_checkpoint(folder, monkeypatch):
    pytest.importorskip("torch")
    train = importlib.import_module("bioreps.baselines.train")  # the module, not the function

    train._atomic_torch_save({"w": [1, 2]}, folder / "run.ckpt")
    return "run.ckpt"


def _write_download(folder, monkeypatch):
    spec = dataclasses.replace(data._get_spec("mnist"), mirrors=("https://mirror.invalid/",), sha256={})
    monkeypatch.setattr(urllib.request, "urlopen", FakeURLOpen({"https://mirror.invalid/blob.gz": b"payload"}))
    assert data._download(spec, "blob.gz", folder, progress=False).read_bytes() == b"payload"
    return "blob.gz"


def _write_json(folder, monkeypatch):
    _files.write_json_atomic(folder / "x.analysis.json", {"a": 1})
    return "x.analysis.json"


def _write_idx(folder, monkeypatch):
    data.write_idx(folder / "a.idx.gz", np.arange(6, dtype=np.uint8))
    return "a.idx.gz"


def _write_figure(folder, monkeypatch):
    from matplotlib.figure import Figure

    plots.save_figure(Figure(figsize=(1, 1)), folder / "f.png")
    return "f.png"


@pytest.mark.parametrize("writer, suffix", [(_write_checkpoint, ""), (_write_download, ".part"),
                                            (_write_json, ""), (_write_idx, ""), (_write_figure, ".png")])
def test_temp_names_are_recognised_as_stale(tmp_path, monkeypatch, writer, suffix):
    made = []
    real = _files.temp_path

    def recording(path, suffix=""):
        made.append(real(path, suffix))
        return made[-1]

    monkeypatch.setattr(_files, "temp_path", recording)
    name = writer(tmp_path, monkeypatch)
    assert len(made) == 1 and made[0].parent == tmp_path
    assert made[0].name.startswith(f".{name}.tmp-") and made[0].name.endswith(suffix)
    assert _listing(tmp_path) == [name]  # the temporary is gone
    # the same name written by a process that was killed: recognised and removed ...
    mine = f"-{os.getpid()}-"
    assert mine in made[0].name
    stale = tmp_path / made[0].name.replace(mine, f"-{_dead_pid()}-")
    stale.write_bytes(b"x")
    alive = tmp_path / made[0].name.replace(_files._host(), "otherhost")
    alive.write_bytes(b"x")
    assert _files.remove_stale_temps(tmp_path, [name]) == [stale]
    # ... and by the writer itself when it writes that target again
    stale.write_bytes(b"x")
    writer(tmp_path, monkeypatch)
    assert _listing(tmp_path) == sorted([name, alive.name])


def test_an_atomic_writer_handed_a_temporary_names_its_own_for_the_final_target(tmp_path):
    """The runner and the study units export model.h5 into its temporary (the HDF5 writer is
    atomic too): the writer's temporary is one of model.h5, not a temporary of a temporary."""
    from bioreps import io

    target = tmp_path / "model.h5"
    with _files.atomic_path(target, ".h5") as tmp:
        with io.Writer(tmp, overwrite=True) as w:
            w.write_model("pixels")
            inner = w.tmp_path
            assert inner.name.startswith(".model.h5.tmp-") and inner.name.count(".tmp-") == 1, inner.name
            assert _files.temp_target(inner.name) == "model.h5"
    assert _listing(tmp_path) == ["model.h5"]
    # a temporary of somebody else's (another pid) is not renamed: not ours to interpret
    other = tmp_path / f".x.tmp-{_files._host()}-{_dead_pid()}-0a0b"
    assert _files.temp_path(other).name.startswith(f".{other.name}.tmp-")


def test_nested_stale_temporaries_are_removed_only_when_every_writer_is_gone(tmp_path):
    """``..model.h5.tmp-H-P-T.h5.tmp-H-P-T`` (a temporary of a temporary, as an older bioreps
    left it when killed mid-export) is a stale temporary of model.h5 when its pids are dead."""
    host, dead, live = _files._host(), _dead_pid(), os.getpid()

    def nested(outer_pid, inner_pid, outer_host=host, suffix=""):
        return f"..model.h5.tmp-{host}-{inner_pid}-0a1b2c3d.h5.tmp-{outer_host}-{outer_pid}-4e5f6a7b{suffix}"

    stale = [nested(dead, dead), nested(dead, dead, suffix=".h5"), f".model.h5.tmp-{host}-{dead}-00ff"]
    kept = [nested(live, dead), nested(dead, live), nested(dead, dead, outer_host="otherhost"),
            f".other.h5.tmp-{host}-{dead}-00ff", "..model.h5.tmp-legacy.tmp-x"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    removed = _files.remove_stale_temps(tmp_path, ["model.h5"])
    assert sorted(p.name for p in removed) == sorted(stale)
    assert _listing(tmp_path) == sorted(kept)
    # named by the inner temporary (as a study's cleaning walk finds it), the same rule
    (tmp_path / stale[0]).write_bytes(b"x")
    inner = f".model.h5.tmp-{host}-{dead}-0a1b2c3d.h5"
    assert [p.name for p in _files.remove_stale_temps(tmp_path, [inner])] == [stale[0]]
    assert _files.temp_target(stale[0]) == "model.h5" and _files.temp_target("model.h5") is None


class _BrokenFigure:
    """A figure whose drawing fails halfway through writing the file."""

    def savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise RuntimeError("drawing failed (simulated)")


def test_save_figure_is_atomic(tmp_path):
    target = tmp_path / "fig.png"
    with pytest.raises(RuntimeError, match="simulated"):
        plots.save_figure(_BrokenFigure(), target)
    assert _listing(tmp_path) == []
    from matplotlib.figure import Figure

    assert plots.save_figure(Figure(figsize=(1, 1)), target) == target
    before = target.read_bytes()
    assert before.startswith(b"\x89PNG\r\n")
    with pytest.raises(RuntimeError, match="simulated"):
        plots.save_figure(_BrokenFigure(), target)
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["fig.png"]


def test_save_figure_format_follows_the_extension(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    assert plots.save_figure(fig, tmp_path / "f.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert plots.save_figure(fig, tmp_path / "noext").read_bytes().startswith(b"\x89PNG\r\n")
    assert _listing(tmp_path) == ["f.svg", "noext"]


def test_receptive_fields_writes_a_png_atomically(tmp_path):
    W = np.random.default_rng(0).standard_normal((6, 16))
    path = plots.receptive_fields(W, tmp_path / "rf.png", columns=3, title="units")
    assert path.read_bytes().startswith(b"\x89PNG\r\n")
    assert _listing(tmp_path) == ["rf.png"]
