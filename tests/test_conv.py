"""Convolutional SoftHebb layer (ConvSoftWTA): the CPU kernel against the slow NumPy twin
(tests/reference.py) and against the reference code's own formulas written in torch (SoftHebb's
demo.py: F.pad, F.conv2d, softmax, the anti-Hebbian sign, the yx convolution); transform against
torch's conv, triangle and pooling; the sklearn API, files and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from bioreps import io
from bioreps.kernels.cpu import conv
from bioreps.layers import ConvSoftWTA

# float32 storage and float32 GEMMs against float64: one step moves a weight by at most lr_c (the
# update is scaled to a largest entry of 1), and the difference is a few float32 roundings of it
TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    X = rng.random((9, 2, 9, 8)).astype(np.float32)
    X[:, :, 2:5, 3:6] += 0.5  # some structure: a bright blob
    return np.clip(X, 0, 1)


def _kernel_steps(W0, X, batch, k, stride, padding, t_invert, lr, adaptive=True, bn=True):
    W = W0.reshape(W0.shape[0], -1).astype(np.float32)  # a copy: the kernel updates W in place
    mean, var = (np.zeros(X.shape[1]), np.ones(X.shape[1])) if bn else (None, None)
    conv.conv_softhebb_epoch(W, X, np.arange(len(X)), batch, k, stride, padding, "reflect", t_invert, lr, 2.0, 0.5,
                             adaptive, mean, var)
    return W.reshape(W0.shape), mean, var


@pytest.mark.parametrize("k, stride, padding, bn", [(3, 1, 1, True), (3, 2, 0, False), (2, 1, 1, True)])
def test_kernel_matches_the_numpy_twin(images, k, stride, padding, bn):
    rng = np.random.default_rng(1)
    W0 = (rng.standard_normal((5, 2, k, k)) * 0.8).astype(np.float32)
    W, mean, var = _kernel_steps(W0, images, 4, k, stride, padding, 1.5, 0.05, bn=bn)
    ref, st = W0.astype(np.float64), ([np.zeros(2), np.ones(2)] if bn else None)
    for start in range(0, len(images), 4):  # batches of 4, 4, 1
        ref, st = reference.conv_softhebb_batch(ref, images[start:start + 4], k, stride, padding, 1.5, 0.05, bn=st)
    assert np.abs(W - W0).max() > 1e-3  # it learned
    np.testing.assert_allclose(W, ref, **TOL)
    if bn:
        np.testing.assert_allclose(mean, st[0], rtol=1e-6)
        np.testing.assert_allclose(var, st[1], rtol=1e-6)


def _demo_step(W, x, t_invert, lr, padding):
    """SoftHebb's demo.py SoftHebbConv2d.forward (training) and its adaptive rate, verbatim in torch."""
    x = F.pad(x, (padding,) * 4, "reflect")
    u = F.conv2d(x, W, None, 1, 0, 1, 1)
    B, OC, Ho, Wo = u.shape
    flat = u.transpose(0, 1).reshape(OC, -1)
    y = -torch.softmax(t_invert * flat, dim=0)
    win = torch.argmax(flat, dim=0)
    idx = torch.arange(flat.size(1))
    y[win, idx] = -y[win, idx]
    y = y.view(OC, B, Ho, Wo).transpose(0, 1)
    yx = F.conv2d(x.transpose(0, 1), y.transpose(0, 1), padding=0, stride=1, dilation=1, groups=1).transpose(0, 1)
    yu = torch.sum(y * u, dim=(0, 2, 3))
    delta = yx - yu.view(-1, 1, 1, 1) * W
    delta = delta / (torch.abs(delta).amax() + 1e-30)
    norm = torch.sqrt((W ** 2).sum(dim=(1, 2, 3)))
    lr_c = lr * torch.pow(torch.abs(norm - 1) + 1e-10, 0.5)
    return W + lr_c.view(-1, 1, 1, 1) * delta


def test_kernel_matches_the_reference_codes_formulas_in_torch(images):
    rng = np.random.default_rng(2)
    W0 = (rng.standard_normal((6, 2, 3, 3)) * 0.9).astype(np.float32)
    W, _, _ = _kernel_steps(W0, images[:8], 4, 3, 1, 1, 1.0, 0.08, bn=False)
    Wt = torch.from_numpy(W0.astype(np.float64))
    for start in (0, 4):
        Wt = _demo_step(Wt, torch.from_numpy(images[start:start + 4].astype(np.float64)), 1.0, 0.08, 1)
    np.testing.assert_allclose(W, Wt.numpy(), **TOL)


def test_transform_is_conv_triangle_pool_as_torch(images):
    layer = ConvSoftWTA(n_channels=4, kernel_size=3, padding=1, pool=("max", 4, 2, 1), power=0.7, batch_norm=True,
                        random_state=0, progress=False).fit(images, epochs=2)
    H = layer.transform(images)
    assert layer.output_shape_ == [4, 4, 4] and H.shape == (9, 64)
    x = torch.from_numpy(images.astype(np.float64))
    x = F.batch_norm(x, torch.from_numpy(layer.bn_mean_), torch.from_numpy(layer.bn_var_), training=False, eps=1e-5)
    u = F.conv2d(F.pad(x, (1,) * 4, "reflect"), torch.from_numpy(layer.weights_.astype(np.float64)).view(4, 2, 3, 3))
    a = torch.relu(u - u.mean(dim=1, keepdim=True)) ** 0.7
    ref = F.max_pool2d(a, 4, 2, 1).reshape(9, -1).numpy()
    np.testing.assert_allclose(H, ref, rtol=1e-4, atol=1e-5)
    avg = ConvSoftWTA(n_channels=4, kernel_size=3, padding=1, pool=("avg", 3, 2, 1), power=1.4, batch_norm=False,
                      random_state=0, progress=False).fit(images)
    u = F.conv2d(F.pad(torch.from_numpy(images.astype(np.float64)), (1,) * 4, "reflect"),
                 torch.from_numpy(avg.weights_.astype(np.float64)).view(4, 2, 3, 3))
    ref = F.avg_pool2d(torch.relu(u - u.mean(dim=1, keepdim=True)) ** 1.4, 3, 2, 1).reshape(9, -1).numpy()
    np.testing.assert_allclose(avg.transform(images), ref, rtol=1e-4, atol=1e-5)


def test_flat_rows_partial_fit_seeds_and_files(images, tmp_path):
    kw = dict(n_channels=3, kernel_size=3, padding=1, batch_size=3, shuffle=False, random_state=4, progress=False)
    full = ConvSoftWTA(**kw).fit(images)
    flat = images.reshape(9, -1)
    halves = ConvSoftWTA(**kw, input_shape=(2, 9, 8)).partial_fit(flat[:6]).partial_fit(flat[6:])
    np.testing.assert_array_equal(full.weights_, halves.weights_)
    np.testing.assert_array_equal(full.transform(images), halves.transform(flat))
    again = ConvSoftWTA(**kw).fit(images)
    np.testing.assert_array_equal(full.weights_, again.weights_)  # same seed, same filters
    other = ConvSoftWTA(**dict(kw, random_state=5)).fit(images)
    assert not np.array_equal(full.weights_, other.weights_)
    full.export(tmp_path / "c.h5", {"train": (images, np.arange(9) % 2)}, dataset="synthetic")
    with io.load(tmp_path / "c.h5") as f:
        np.testing.assert_array_equal(f.representations["train"].to_numpy(), full.transform(images))
        assert f.model.kind == "conv-soft-wta"
    back = ConvSoftWTA.load(tmp_path / "c.h5")
    np.testing.assert_array_equal(back.transform(images), full.transform(images))
    assert back.output_shape_ == full.output_shape_ == [3, 9, 8]


@pytest.mark.parametrize("kw, X, err, match", [
    (dict(), "flat", ValueError, r"give images \(n, C, H, W\), or flat rows with input_shape"),
    (dict(input_shape=(2, 9, 9)), "flat", ValueError, "input_shape \\(2, 9, 9\\) needs 162"),
    (dict(kernel_size=12), "img", ValueError, "smaller than the kernel 12 x 12"),
    (dict(padding_mode="circular"), "img", ValueError, "padding_mode must be one of"),
    (dict(pool=("median", 2, 2, 0)), "img", ValueError, "pool kind must be 'max' or 'avg'"),
    (dict(pool=("max", 2)), "img", ValueError, "pool must be None or \\(kind, kernel, stride, padding\\)"),
    (dict(temperature=0.0), "img", ValueError, "temperature must be a number > 0"),
    (dict(), "nan", ValueError, "NaN|finite"),
])
def test_bad_input_names_the_problem(images, kw, X, err, match):
    data = {"flat": images.reshape(9, -1), "img": images, "nan": np.where(images > 0.9, np.nan, images)}[X]
    with pytest.raises(err, match=match):
        ConvSoftWTA(**{"n_channels": 3, "kernel_size": 3, "padding": 1, "progress": False, **kw}).fit(data)


def test_a_fitted_layer_refuses_images_of_another_shape(images):
    layer = ConvSoftWTA(n_channels=3, kernel_size=3, padding=1, progress=False).fit(images)
    with pytest.raises(ValueError, match=r"images of shape \(2, 8, 8\); the layer was fitted on \(2, 9, 8\)"):
        layer.transform(images[:, :, :8])
    with pytest.raises(RuntimeError, match="not fitted yet"):
        ConvSoftWTA().transform(images)


NET = [{"kind": "conv-soft-wta", "n_channels": 4, "kernel_size": 3, "padding": 1, "pool": ["max", 2, 2, 0],
        "batch_size": 3},
       {"kind": "conv-soft-wta", "n_channels": 6, "kernel_size": 3, "padding": 1, "temperature": 1.5,
        "pool": ["avg", 2, 2, 0], "power": 1.0, "batch_size": 3}]


def test_a_net_trains_layer_after_layer_on_the_lower_layers_output(images, tmp_path):
    from bioreps.layers import HebbianNet

    net = HebbianNet(NET, random_state=3, block_images=4, progress=False).fit(images, epochs=2)
    assert [layer.output_shape_ for layer in net.layers_] == [[4, 4, 4], [6, 2, 2]]
    assert net.transform(images).shape == (9, 24) and net.transform(images, layer=0).shape == (9, 64)
    # by hand: layer 0 on the images, layer 1 on layer 0's output, each with the net's order and seeds
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(3).spawn(2)]
    X = images
    for li, (spec, seed) in enumerate(zip(NET, seeds)):
        kw = {k: v for k, v in spec.items() if k != "kind"}
        layer = ConvSoftWTA(**kw, random_state=seed, progress=False)
        layer._start(X)
        for e in range(2):
            order = np.random.default_rng([net.seed_, 1, li, e]).permutation(len(X))
            layer._pass(X[order], np.arange(len(X)), "")
        np.testing.assert_allclose(net.layers_[li].weights_, layer.weights_, rtol=1e-6, atol=1e-6)
        X = layer.transform(X).reshape((len(X),) + tuple(layer.output_shape_))
    np.testing.assert_allclose(net.transform(images), X.reshape(9, -1), rtol=1e-5, atol=1e-6)
    # blocks of images through the lower layers give the same net as one block
    whole = HebbianNet(NET, random_state=3, block_images=100, progress=False).fit(images, epochs=2)
    np.testing.assert_array_equal(whole.layers_[1].weights_, net.layers_[1].weights_)
    # files: one group of arrays per layer; load gives the same representation
    net.export(tmp_path / "net.h5", {"test": images}, dataset="synthetic")
    back = HebbianNet.load(tmp_path / "net.h5")
    np.testing.assert_array_equal(back.transform(images), net.transform(images))
    np.testing.assert_array_equal(back.transform(images, layer=0), net.transform(images, layer=0))
    with io.load(tmp_path / "net.h5") as f:
        assert sorted(f.model.arrays) == ["layer0", "layer1"] and f.model.kind == "hebbian-net"
        # every layer's representation, each with its layer attribute; the last under the split's name
        assert sorted(f.representations) == ["test", "test.layer0"]
        assert f.representations["test"].layer == 1 and f.representations["test.layer0"].layer == 0
        np.testing.assert_array_equal(f.representations["test.layer0"].to_numpy(), net.transform(images, layer=0))
        np.testing.assert_array_equal(f.representations["test"].to_numpy(), net.transform(images))
    # lower layers of the named splits only (a study keeps the test split's)
    net.export(tmp_path / "some.h5", {"train": images[:5], "test": images}, layer_splits=["test"])
    with io.load(tmp_path / "some.h5") as f:
        assert sorted(f.representations) == ["test", "test.layer0", "train"]
        np.testing.assert_array_equal(f.representations["train"].to_numpy(), net.transform(images[:5]))
    with pytest.raises(ValueError, match=r"layer_splits names splits not exported: \['val'\]"):
        net.export(tmp_path / "bad.h5", {"test": images}, layer_splits=["val"])


@pytest.mark.parametrize("layers, match", [
    ([], "non-empty list of layer tables"),
    ([{"kind": "hebbian-wta"}], r"layers\[0\]\.kind must be one of \['conv-hebbian-wta', 'conv-soft-wta'\]"),
    ([{"kind": "conv-soft-wta", "n_units": 3}], r"layers\[0\] has keys its kind does not take from a net: \['n_units'\]"),
    ([{"kind": "conv-soft-wta", "random_state": 3}], r"layers\[0\] has keys .*\['random_state'\]"),
    ([{"kind": "conv-soft-wta", "padding_mode": "wrap"}], "padding_mode must be one of"),
])
def test_a_bad_net_is_refused_before_training(images, layers, match):
    from bioreps.layers import HebbianNet

    with pytest.raises(ValueError, match=match):
        HebbianNet(layers, progress=False).fit(images)
    with pytest.raises(ValueError, match="layer must be < 2"):
        HebbianNet(NET, progress=False).fit(images).transform(images, layer=2)


def _patch_rows(X, k, stride, padding, mode):
    """Every patch as a row, by plain loops (image, y, x; features c, ky, kx)."""
    width = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    Xp = np.pad(X, width, mode="reflect" if mode == "reflect" else "constant") if padding else X
    B, C, H, W = Xp.shape
    rows = []
    for b in range(B):
        for i in range(0, H - k + 1, stride):
            for j in range(0, W - k + 1, stride):
                rows.append(Xp[b, :, i:i + k, j:j + k].reshape(-1))
    return np.array(rows, np.float64)


@pytest.mark.parametrize("k, stride, padding, mode", [(3, 1, 1, "zeros"), (2, 2, 0, "zeros"), (3, 1, 1, "reflect")])
def test_krotov_hopfield_on_patches_matches_the_dense_twin(images, k, stride, padding, mode):
    rng = np.random.default_rng(3)
    W0 = rng.standard_normal((5, 2 * k * k)).astype(np.float32)
    W = W0.copy()
    conv.conv_hebbian_epoch(W, images, np.arange(9), 4, k, stride, padding, mode, 2, 0.4, 0.05, 3.0)
    ref = W0.astype(np.float64)
    for start in range(0, 9, 4):  # every patch of a batch of images is a sample of one update
        ref = reference.krotov_hopfield_batch(ref, _patch_rows(images[start:start + 4], k, stride, padding, mode),
                                              2, 0.4, 0.05, 3.0)
    assert np.abs(W - W0).max() > 1e-3
    np.testing.assert_allclose(W, ref, **TOL)


def test_conv_hebbian_layer_transform_and_a_mixed_net(images, tmp_path):
    from bioreps.layers import ConvHebbianWTA, HebbianNet

    layer = ConvHebbianWTA(n_channels=5, kernel_size=3, padding=1, pool=("max", 2, 2, 0), power=3.0, k=2,
                           random_state=1, progress=False).fit(images, epochs=2)
    W = layer.weights_.astype(np.float64)
    Wp = torch.from_numpy(np.sign(W) * np.abs(W) ** 2).view(5, 2, 3, 3)
    u = F.conv2d(F.pad(torch.from_numpy(images.astype(np.float64)), (1,) * 4), Wp)
    ref = F.max_pool2d(torch.relu(u) ** 3.0, 2, 2, 0).reshape(9, -1).numpy()
    np.testing.assert_allclose(layer.transform(images), ref, rtol=1e-4, atol=1e-4)
    net = HebbianNet([{"kind": "conv-hebbian-wta", "n_channels": 4, "kernel_size": 3, "padding": 1,
                       "pool": ["max", 2, 2, 0], "power": 2.0}, NET[1]], random_state=0, progress=False).fit(images)
    assert [type(m).__name__ for m in net.layers_] == ["ConvHebbianWTA", "ConvSoftWTA"]
    net.save(tmp_path / "mixed.h5")
    np.testing.assert_array_equal(HebbianNet.load(tmp_path / "mixed.h5").transform(images), net.transform(images))
    with pytest.raises(ValueError, match="k = 7 must be at most n_channels = 5"):
        ConvHebbianWTA(n_channels=5, k=7, kernel_size=3, progress=False).fit(images)


def test_the_backprop_counterpart_has_the_nets_shape_and_trains(images, tmp_path):
    from bioreps import baselines
    from bioreps.layers import HebbianNet

    net = HebbianNet(NET, random_state=0, progress=False).fit(images)
    bp = baselines.ConvNet(NET, input_shape=(2, 9, 8), n_classes=2, seed=0)
    assert bp.output_shape_ == net.output_shape_ and bp.n_units == net.n_units_
    for i in range(2):
        assert bp.block_output(images, i).shape == net.transform(images, layer=i).shape
    y = (images[:, 0, 3:5, 4:6].mean(axis=(1, 2)) > np.median(images[:, 0, 3:5, 4:6].mean(axis=(1, 2)))).astype(np.int64)
    X = np.concatenate([images] * 8)
    Y = np.concatenate([y] * 8)
    before = [p.detach().clone() for p in bp.parameters()]
    baselines.train(bp, X.reshape(len(X), -1), Y, None, epochs=3, batch_size=8, lr=3e-3, seed=0, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, bp.parameters()))  # it learned
    bp.export(tmp_path / "bp.h5", {"train": (images.reshape(9, -1), y)}, dataset="synthetic")
    back = baselines.load(tmp_path / "bp.h5")
    np.testing.assert_array_equal(back.transform(images.reshape(9, -1)), bp.transform(images.reshape(9, -1)))
    assert back.transform(images.reshape(9, -1)).shape == (9, net.n_units_)
    with pytest.raises(ValueError, match="non-empty list of layer tables"):
        baselines.ConvNet([], input_shape=(2, 9, 8))
    with pytest.raises(ValueError, match="too small"):
        baselines.ConvNet([{"n_channels": 2, "kernel_size": 9}], input_shape=(2, 9, 8))


def test_checkpoint_and_resume_end_where_an_uninterrupted_fit_does(images, tmp_path):
    from bioreps.layers import ConvHebbianWTA

    for cls in (ConvSoftWTA, ConvHebbianWTA):
        kw = dict(n_channels=3, kernel_size=3, padding=1, batch_size=4, random_state=2, progress=False)
        full = cls(**kw).fit(images, epochs=3)
        cls(**kw).fit(images, epochs=3, checkpoint=tmp_path / "ck.h5", callback=lambda layer, rec: rec["epoch"] < 1)
        part = cls.load(tmp_path / "ck.h5")
        assert part.epochs_done_ == 1 and part.checkpoint_progress() == "epoch 1"
        ran = []
        part.fit(images, epochs=3, resume=True, callback=lambda layer, rec: ran.append(rec["epoch"]))
        assert ran == [2, 3]  # only the epochs left
        np.testing.assert_array_equal(part.weights_, full.weights_)
        if part.bn_mean_ is not None:
            np.testing.assert_array_equal(part.bn_var_, full.bn_var_)
        with pytest.raises(ValueError, match="cannot resume: the checkpoint is of a fit of 3 epochs over 9 images"):
            cls.load(tmp_path / "ck.h5").fit(images, epochs=4, resume=True)


def test_torch_views_compute_the_transform_and_carry_gradients(images):
    from bioreps.layers import ConvHebbianWTA, HebbianNet

    mixed = [{"kind": "conv-hebbian-wta", "n_channels": 4, "kernel_size": 3, "padding": 1, "pool": ["max", 2, 2, 0],
              "power": 2.0}, NET[1]]
    models = [ConvSoftWTA(n_channels=4, kernel_size=3, padding=1, pool=("max", 4, 2, 1), random_state=0,
                          progress=False).fit(images),
              ConvHebbianWTA(n_channels=4, kernel_size=3, padding=1, stride=2, pool=("avg", 2, 1, 0), power=3.0,
                             random_state=0, progress=False).fit(images),
              HebbianNet(mixed, random_state=0, progress=False).fit(images)]
    for m in models:
        x = torch.from_numpy(images.reshape(9, -1)).requires_grad_(True)
        out = m.to_torch()(x)
        np.testing.assert_allclose(out.detach().numpy(), m.transform(images), rtol=2e-4, atol=1e-4)
        out.sum().backward()
        assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_each_epoch_records_convergence_and_distinct_winners(images):
    from bioreps.layers import ConvHebbianWTA, HebbianNet

    layer = ConvHebbianWTA(n_channels=5, kernel_size=3, padding=1, p=3.0, random_state=0, progress=False)
    layer.fit(images, epochs=2)
    rec = layer.history_[-1]
    norms = np.sum(np.abs(layer.weights_.astype(np.float64)) ** 3, axis=1) ** (1 / 3)  # the rule's p-norm
    assert rec["mean_norm"] == pytest.approx(norms.mean())
    assert rec["winners"] == np.unique(layer.currents(images).argmax(axis=1)).size
    assert [r["epoch"] for r in layer.history_] == [1, 2]  # one record per epoch
    net = HebbianNet(NET, random_state=0, progress=False)
    seen = []
    net.fit(images, callback=lambda n, r: seen.append((r["layer"], r["winners"])))
    assert [s[0] for s in seen] == [0, 1]
    # each layer's count is taken on its own input (the lower layer's output), after its epoch
    inputs = [images, net.transform(images, layer=0).reshape((9,) + tuple(net.layers_[0].output_shape_))]
    for (li, winners), X in zip(seen, inputs):
        assert winners == np.unique(net.layers_[li].currents(X).argmax(axis=1)).size, li


def _torch_training_output(layer, H):
    """SoftHebb's block in training mode, written with torch: BatchNorm2d(affine=False) on the
    minibatch's statistics, reflect padding, conv2d, the triangle activation, pooling."""
    x = torch.from_numpy(H)
    x = F.batch_norm(x, None, None, training=True, eps=1e-5)
    p = int(layer.padding)
    x = F.pad(x, (p, p, p, p), mode="reflect")
    k = int(layer.kernel_size)
    u = F.conv2d(x, torch.from_numpy(layer.weights_.reshape(-1, H.shape[1], k, k)), stride=int(layer.stride))
    a = torch.relu(u - u.mean(dim=1, keepdim=True)) ** float(layer.power)
    kind, pk, ps, pp = layer.pool
    a = (F.max_pool2d if kind == "max" else F.avg_pool2d)(a, pk, ps, pp)
    return np.ascontiguousarray(a.numpy())


def test_a_net_can_train_all_its_layers_at_once(images):
    from bioreps.layers import HebbianNet

    net = HebbianNet(NET, training="simultaneous", random_state=3, progress=False).fit(images, epochs=2)
    assert net.epochs_done_ == 2 and [layer.epochs_done_ for layer in net.layers_] == [2, 2]
    # by hand: each minibatch through layer 0 in training mode (its weights before the minibatch's
    # update), written in torch, is what layer 1 learns from at that minibatch
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(3).spawn(2)]
    hand = [ConvSoftWTA(**{k: v for k, v in spec.items() if k != "kind"}, random_state=seed, progress=False)
            for spec, seed in zip(NET, seeds)]
    hand[0]._start(images)
    hand[1]._start(np.empty((0, 4, 4, 4), np.float32))
    for e in range(2):
        order = np.random.default_rng([net.seed_, 1, 0, e]).permutation(len(images))
        for start in range(0, len(images), 3):
            H = images[order[start:start + 3]]
            below = _torch_training_output(hand[0], H)
            hand[0]._pass(H, np.arange(len(H)), "")
            hand[1]._pass(below, np.arange(len(H)), "")
    for mine, theirs in zip(net.layers_, hand):
        np.testing.assert_allclose(mine.weights_, theirs.weights_, **TOL)
        np.testing.assert_allclose(mine.bn_var_, theirs.bn_var_, rtol=1e-5)
    # not what greedy training learns (layer 1 sees a moving layer 0), but the first layer is
    greedy = HebbianNet(NET, random_state=3, progress=False).fit(images, epochs=2)
    np.testing.assert_array_equal(greedy.layers_[0].weights_, net.layers_[0].weights_)
    assert np.abs(greedy.layers_[1].weights_ - net.layers_[1].weights_).max() > 1e-3
    # partial_fit: the same step, in order; parts ending on whole minibatches equal one pass
    halves = HebbianNet(NET, training="simultaneous", random_state=3, progress=False)
    halves.partial_fit(images[:6]).partial_fit(images[6:])
    whole = HebbianNet(NET, training="simultaneous", random_state=3, progress=False).partial_fit(images)
    for a, b in zip(halves.layers_, whole.layers_):
        np.testing.assert_array_equal(a.weights_, b.weights_)
        np.testing.assert_array_equal(a.bn_var_, b.bn_var_)
    assert np.abs(whole.layers_[1].weights_ - HebbianNet(NET, training="simultaneous", random_state=3, progress=False)
                  .partial_fit(images[:3]).layers_[1].weights_).max() > 1e-3  # more images, more learning
    with pytest.raises(ValueError, match="partial_fit trains every layer at once: it needs training='simultaneous'"):
        HebbianNet(NET, progress=False).partial_fit(images)
    with pytest.raises(ValueError, match=r"training='simultaneous' needs one batch_size for every layer .* \[3, 5\]"):
        HebbianNet([NET[0], {**NET[1], "batch_size": 5}], training="simultaneous", progress=False).fit(images)
    with pytest.raises(ValueError, match=r"training must be one of \['greedy', 'simultaneous'\], got 'joint'"):
        HebbianNet(NET, training="joint", progress=False).fit(images)


@pytest.mark.parametrize("training, stop_after, where", [("greedy", 3, "layer 2 of 2, epoch 1"),
                                                         ("simultaneous", 1, "epoch 1")])
def test_a_net_resumes_from_its_checkpoint_where_an_uninterrupted_fit_ends(images, tmp_path, training, stop_after,
                                                                           where):
    from bioreps.layers import HebbianNet

    kw = dict(training=training, random_state=5, progress=False)
    full = HebbianNet(NET, **kw).fit(images, epochs=2)
    steps = []
    HebbianNet(NET, **kw).fit(images, epochs=2, checkpoint=tmp_path / "net.h5",
                              callback=lambda net, rec: steps.append(net.epochs_done_) or net.epochs_done_ < stop_after)
    part = HebbianNet.load(tmp_path / "net.h5")
    assert part.epochs_done_ == stop_after and part.checkpoint_progress() == where
    ran = []
    part.fit(images, epochs=2, resume=True, callback=lambda net, rec: ran.append((rec["layer"], rec["epoch"])))
    assert ran == ([(1, 2)] if training == "greedy" else [(0, 2), (1, 2)])  # only what was left
    for a, b in zip(part.layers_, full.layers_):
        np.testing.assert_array_equal(a.weights_, b.weights_)
        np.testing.assert_array_equal(a.bn_mean_, b.bn_mean_)
    np.testing.assert_array_equal(part.transform(images), full.transform(images))
    with pytest.raises(ValueError, match="cannot resume: the checkpoint is of a fit of 2 epochs over 9 images"):
        HebbianNet.load(tmp_path / "net.h5").fit(images, epochs=3, resume=True)
