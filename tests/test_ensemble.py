"""SpikingEnsemble: M Diehl & Cook networks on the same images, each exactly the network trained
alone with its seed and parameters, trained in parallel; files one per member."""

import json

import numpy as np
import pytest

from bioreps import io
from bioreps.data import make_classes
from bioreps.layers import DiehlCookParams, SpikingEnsemble, SpikingWTA, param_grid

OPTS = dict(t_present_ms=30.0, t_rest_ms=10.0, progress=False, backend="cpu")


@pytest.fixture(scope="module")
def X():
    return make_classes(8, n_features=64, n_classes=2, random_state=1)[0]


def test_each_member_is_the_network_trained_alone(X):
    ens = SpikingEnsemble(n_neurons=5, seeds=(0, 3, 7), n_jobs=2, **OPTS).fit(X, epochs=2)
    counts = ens.transform(X)
    assert counts.shape == (3, 8, 5) and counts.dtype == np.float32
    for i, seed in enumerate((0, 3, 7)):
        alone = SpikingWTA(n_neurons=5, random_state=seed, **OPTS).fit(X, epochs=2)
        np.testing.assert_array_equal(ens.members_[i].weights_, alone.weights_)
        np.testing.assert_array_equal(ens.members_[i].theta_, alone.theta_)
        np.testing.assert_array_equal(counts[i], alone.transform(X))
    assert not np.array_equal(ens.members_[0].weights_, ens.members_[1].weights_)  # seeds differ


def test_parameter_grid_members_and_thread_count_do_not_change_results(X):
    grid = param_grid(theta_plus_mv=[0.05, 0.2], w_ie=[17.0, 10.0])
    assert len(grid) == 4 and [(g.theta_plus_mv, g.w_ie) for g in grid] == [
        (0.05, 17.0), (0.05, 10.0), (0.2, 17.0), (0.2, 10.0)]
    one = SpikingEnsemble(n_neurons=4, seeds=5, params=grid, n_jobs=1, **OPTS).fit(X)
    two = SpikingEnsemble(n_neurons=4, seeds=5, params=grid, n_jobs=2, **OPTS).fit(X)
    for a, b in zip(one.members_, two.members_):
        np.testing.assert_array_equal(a.weights_, b.weights_)
    alone = SpikingWTA(n_neurons=4, random_state=5, params=grid[3], **OPTS).fit(X)
    np.testing.assert_array_equal(one.members_[3].weights_, alone.weights_)
    assert one.members_[1].params.w_ie == 10.0


def test_export_writes_one_ordinary_file_per_member(X, tmp_path):
    ens = SpikingEnsemble(n_neurons=3, seeds=(1, 2), **OPTS).fit(X)
    ens.export(tmp_path / "ens", {"train": (X, np.zeros(len(X), np.int64))}, dataset="synthetic")
    index = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["file"] for m in index["members"]] == ["member_000.h5", "member_001.h5"]
    assert [m["seed"] for m in index["members"]] == [1, 2]
    for i, m in enumerate(index["members"]):
        with io.load(tmp_path / "ens" / m["file"]) as f:
            np.testing.assert_array_equal(f.representations["train"].to_numpy(), ens.members_[i].transform(X))


def test_checkpoint_and_resume_per_member(X, tmp_path):
    full = SpikingEnsemble(n_neurons=3, seeds=(4, 9), **OPTS).fit(X, epochs=2)
    part = SpikingEnsemble(n_neurons=3, seeds=(4, 9), **OPTS)
    part.fit(X, epochs=2, checkpoint=tmp_path / "ck", checkpoint_every=5)
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.h5")) == ["member_000.h5", "member_001.h5"]
    back = SpikingEnsemble.load(tmp_path / "ck", backend="cpu")
    for a, b in zip(full.members_, back.members_):
        np.testing.assert_array_equal(a.weights_, b.weights_)
    again = SpikingEnsemble(n_neurons=3, seeds=(4, 9), **OPTS).fit(X, epochs=2, checkpoint=tmp_path / "ck",
                                                                   resume=True)
    for a, b in zip(full.members_, again.members_):  # resuming a finished fit changes nothing
        np.testing.assert_array_equal(a.weights_, b.weights_)


def test_partial_fit_in_halves_equals_fit(X):
    full = SpikingEnsemble(n_neurons=3, seeds=(2, 6), **OPTS).fit(X)
    part = SpikingEnsemble(n_neurons=3, seeds=(2, 6), **OPTS).partial_fit(X[:5]).partial_fit(X[5:])
    for a, b in zip(full.members_, part.members_):
        np.testing.assert_array_equal(a.weights_, b.weights_)
        assert b.n_samples_seen_ == len(X)


def test_a_plan_is_the_fit(X):
    """fit drives the layer's plan (the generator the GPU ensemble runs in lockstep): driving the
    plan by hand, block by block, gives the fitted layer."""
    from bioreps.layers.spiking import _drive

    ref = SpikingWTA(n_neurons=4, random_state=1, **OPTS).fit(X, epochs=2)
    layer = SpikingWTA(n_neurons=4, random_state=1, **OPTS)
    firsts = []

    def present(req):
        firsts.append((req["first"], req["X"].shape[0]))
        return layer._present_request(req)

    _drive(layer._fit_plan(X, 2), present)
    np.testing.assert_array_equal(layer.weights_, ref.weights_)
    assert firsts == [(0, 8), (8, 8)]  # one block per epoch without checkpoints


def test_bad_ensembles_are_refused(X, tmp_path):
    with pytest.raises(ValueError, match="at least one member"):
        SpikingEnsemble(n_neurons=3, seeds=(), **OPTS).fit(X)
    with pytest.raises(ValueError, match="2 seeds and 3 parameter sets"):
        SpikingEnsemble(n_neurons=3, seeds=(0, 1), params=[DiehlCookParams()] * 3, **OPTS).fit(X)
    with pytest.raises(TypeError, match="not random_state"):
        SpikingEnsemble(n_neurons=3, random_state=0)
    with pytest.raises(TypeError, match="params must be DiehlCookParams"):
        SpikingEnsemble(n_neurons=3, params=[{"w_ie": 1.0}], **OPTS).fit(X)
    with pytest.raises(ValueError, match="seeds must be non-negative ints"):
        SpikingEnsemble(n_neurons=3, seeds=(-1,), **OPTS).fit(X)
    with pytest.raises(ValueError, match="unknown DiehlCookParams fields"):
        param_grid(nope=[1])
    with pytest.raises(RuntimeError, match="not fitted yet"):
        SpikingEnsemble(n_neurons=3, **OPTS).transform(X)
    with pytest.raises(FileNotFoundError, match="no member_"):
        SpikingEnsemble.load(tmp_path)
