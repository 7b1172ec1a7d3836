"""Tests of bioreps.baselines: models, deterministic training, checkpoint/resume, regularisers,
the spiking MLP, export/save/load and input errors. Small synthetic data only."""

import numpy as np
import pytest
import torch

from bioreps import baselines as B
from bioreps import data, io
from reference import nassar_eigen_val_regulate


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def toy():
    X, y = data.make_classes(240, 64, 4, noise=0.1, random_state=0)
    return X, y


def tiny_mlp(seed=0, **kw):
    return B.MLP((64, 24, 4), seed=seed, **kw)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- models ----------------------------------------------------------------------------------

def test_mlp_shapes_and_representation():
    m = B.MLP((64, 32, 16, 5), activation="tanh", seed=0)
    x = torch.rand(7, 64)
    assert m(x).shape == (7, 5)
    assert m.n_units == 16 and m.hidden(x).shape == (7, 16)
    assert m.representation_module is m.activations[-1]
    m0 = B.MLP((64, 32, 16, 5), representation=0, seed=0)
    assert m0.n_units == 32 and m0.hidden(x).shape == (7, 32)
    # the representation is the post-activation of the chosen layer
    expect = torch.relu(m0.net[0](x))
    torch.testing.assert_close(m0.hidden(x), expect)
    assert m.hyperparameters() == {"sizes": [64, 32, 16, 5], "activation": "tanh",
                                   "representation": -1, "seed": 0}


def test_numpy_input_and_hook_ablation():
    m = tiny_mlp()
    X = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    base = m(X)
    handle = m.representation_module.register_forward_hook(lambda mod, i, o: o * 0)
    try:
        assert torch.count_nonzero(m.hidden(X)) == 0
        ablated = m(X)
    finally:
        handle.remove()
    # with the whole representation zeroed the logits are the output bias
    torch.testing.assert_close(ablated, m.net[-1].bias.expand(5, -1))
    assert not torch.allclose(base, ablated)


def test_cnn_shapes_flat_and_image_input():
    m = B.CNN(channels=(2, 4), hidden=8, n_classes=3, seed=0)
    x = torch.rand(4, 784)
    out = m(x)
    assert out.shape == (4, 3) and m.n_units == 8
    torch.testing.assert_close(m(x.reshape(4, 1, 28, 28)), out)
    assert m.hidden(x).shape == (4, 8)
    assert m.transform(x.numpy().reshape(4, 1, 28, 28)).shape == (4, 8)


def test_same_seed_same_init_different_seed_differs():
    assert same(params_of(tiny_mlp(0)), params_of(tiny_mlp(0)))
    assert not same(params_of(tiny_mlp(0)), params_of(tiny_mlp(1)))
    state = torch.get_rng_state()
    tiny_mlp(3)
    assert torch.equal(state, torch.get_rng_state()), "init must not touch the global RNG"


# -- training --------------------------------------------------------------------------------

def test_training_reaches_high_accuracy(toy):
    X, y = toy
    m = tiny_mlp()
    hist = B.train(m, X, y, epochs=8, batch_size=32, lr=5e-3, seed=0, X_val=X, y_val=y)
    assert hist["accuracy"][-1] > 0.95 and hist["val_accuracy"][-1] > 0.95
    assert m.score(X, y) > 0.95
    assert len(hist["loss"]) == 8 and hist["loss"][-1] < hist["loss"][0]
    assert m.history_ is hist and m.training_info_["seed"] == 0


def test_same_seed_identical_weights_different_seed_differs(toy):
    X, y = toy
    runs = []
    for seed in (0, 0, 1):
        m = tiny_mlp()
        B.train(m, X, y, B.JacobianReg(0.01), epochs=2, batch_size=32, seed=seed)
        runs.append(params_of(m))
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


@pytest.mark.parametrize("make_reg", [lambda: None, lambda: B.AdversarialTraining(0.1, 2),
                                      lambda: B.SpectralReg(1.0, tau=3)])
def test_resume_is_bit_identical(toy, tmp_path, make_reg):
    X, y = toy
    bs = 60 if make_reg() is not None and make_reg().name == "spectral" else 32
    full = tiny_mlp()
    hist_full = B.train(full, X, y, make_reg(), epochs=4, batch_size=bs, seed=3)

    ckpt = tmp_path / "run.ckpt"
    part = tiny_mlp()
    B.train(part, X, y, make_reg(), epochs=2, batch_size=bs, seed=3, checkpoint=ckpt)
    resumed = tiny_mlp(seed=9)     # different init: everything must come from the checkpoint
    hist = B.train(resumed, X, y, make_reg(), epochs=4, batch_size=bs, seed=3, checkpoint=ckpt,
                   resume=True)
    assert same(params_of(full), params_of(resumed))
    assert hist["loss"] == hist_full["loss"] and hist["epoch"] == [1, 2, 3, 4]
    assert not list(tmp_path.glob(".*tmp*")), "temporary checkpoint files left behind"


CONV_BLOCKS = [{"n_channels": 3, "kernel_size": 3, "padding": 1, "pool": ["max", 2, 2, 0]},
               {"n_channels": 4, "kernel_size": 3}]


def _conv_run(X, y, global_seed, **train_kw):
    """A ConvNet (dropout 0.5) trained with seed 2 after the global torch RNG was set to ``global_seed``."""
    m = B.ConvNet(CONV_BLOCKS, input_shape=(1, 8, 8), n_classes=3, dropout=0.5, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)
        hist = B.train(m, X, y, epochs=train_kw.pop("epochs", 3), batch_size=16, lr=1e-2, seed=2, **train_kw)
    return m, hist


def test_conv_net_training_does_not_depend_on_the_global_torch_rng(tmp_path):
    """Dropout masks come from the model's generator, reseeded by train: what ran before in the
    process (here: the global RNG's state) changes nothing, a resumed run ends bit for bit where an
    uninterrupted one does, and another train seed gives other masks."""
    rng = np.random.default_rng(0)
    X, y = rng.random((48, 64)).astype(np.float32), np.arange(48) % 3
    a, hist_a = _conv_run(X, y, global_seed=1)
    b, _ = _conv_run(X, y, global_seed=2)
    assert same(params_of(a), params_of(b))
    B.train(B.ConvNet(CONV_BLOCKS, input_shape=(1, 8, 8), n_classes=3, dropout=0.5, seed=1),
            X, y, epochs=1, batch_size=16, lr=1e-2, seed=2, checkpoint=tmp_path / "c.ckpt")
    resumed, hist = _conv_run(X, y, global_seed=3, checkpoint=tmp_path / "c.ckpt", resume=True)
    assert same(params_of(resumed), params_of(a)) and hist["loss"] == hist_a["loss"]
    other = B.ConvNet(CONV_BLOCKS, input_shape=(1, 8, 8), n_classes=3, dropout=0.5, seed=1)
    B.train(other, X, y, epochs=3, batch_size=16, lr=1e-2, seed=5)
    assert not same(params_of(other), params_of(a))


def test_conv_net_dropout_drops_a_fraction_p_and_rescales_in_training_only():
    m = B.ConvNet(CONV_BLOCKS, input_shape=(1, 8, 8), n_classes=3, dropout=0.25, seed=1)
    x = torch.ones(200, 100)
    m.train()
    out = m.drop(x)
    assert set(torch.unique(out).tolist()) == {0.0, torch.tensor(1 / 0.75).item()}
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.01   # 20,000 draws: sd 0.003
    m.generator.manual_seed(7)
    first = m.drop(x)
    m.generator.manual_seed(7)
    assert torch.equal(m.drop(x), first) and not torch.equal(m.drop(x), first)
    m.eval()
    assert torch.equal(m.drop(x), x)


def test_resume_refuses_other_run(toy, tmp_path):
    X, y = toy
    ckpt = tmp_path / "run.ckpt"
    B.train(tiny_mlp(), X, y, epochs=1, batch_size=32, seed=0, checkpoint=ckpt)
    with pytest.raises(ValueError, match="lr"):
        B.train(tiny_mlp(), X, y, epochs=2, batch_size=32, lr=0.1, seed=0, checkpoint=ckpt, resume=True)


def test_callback_can_stop(toy):
    X, y = toy
    seen = []

    def cb(epoch, record, model):
        seen.append((epoch, record["accuracy"]))
        return epoch == 2

    hist = B.train(tiny_mlp(), X, y, epochs=5, batch_size=64, seed=0, callback=cb)
    assert [e for e, _ in seen] == [1, 2] and len(hist["epoch"]) == 2


def test_nan_loss_stops_and_keeps_checkpoint(toy, tmp_path):
    X, y = toy
    ckpt = tmp_path / "run.ckpt"
    m = tiny_mlp()
    B.train(m, X, y, epochs=1, batch_size=32, seed=0, checkpoint=ckpt)
    before = ckpt.read_bytes()

    class Explode(B.Regularizer):
        name = "explode"

        def loss(self, model, xb, yb, logits, ce, *, hidden=None, generator=None):
            return ce * float("nan"), ce.detach()

    m2 = tiny_mlp()
    with pytest.raises(B.NonFiniteLossError, match=r"epoch 1, batch 1/8"):
        B.train(m2, X, y, Explode(), epochs=2, batch_size=32, seed=0, checkpoint=ckpt)
    assert ckpt.read_bytes() == before
    assert same(params_of(m2), params_of(tiny_mlp())), "no update after the non-finite loss"


# -- regularisers ----------------------------------------------------------------------------

def test_weight_decay_value_exact():
    m = tiny_mlp()
    reg = B.WeightDecay(0.3)
    ce = torch.tensor(1.25)
    total, value = reg.loss(m, None, None, None, ce)
    w2 = sum(float((p.detach().double() ** 2).sum()) for n, p in m.named_parameters()
             if n.endswith("weight"))
    assert float(value) == pytest.approx(0.15 * w2, rel=1e-6)
    assert float(total.detach()) == pytest.approx(1.25 + 0.15 * w2, rel=1e-6)
    with_bias = B.WeightDecay(0.3, include_bias=True).loss(m, None, None, None, ce)[1]
    all2 = sum(float((p.detach().double() ** 2).sum()) for p in m.parameters())
    assert float(with_bias) == pytest.approx(0.15 * all2, rel=1e-6)
    assert reg.to_dict() == {"name": "weight_decay", "lam": 0.3, "include_bias": False}


def exact_jacobian_sq(model, X):
    """mean_i ||d logits / d x_i||_F^2 via torch.autograd.functional.jacobian, one row at a time."""
    vals = []
    for x in torch.as_tensor(X):
        J = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x.double())
        vals.append(float((J ** 2).sum()))
    return float(np.mean(vals))


def test_jacobian_frobenius_exact(toy):
    X, _ = toy
    m = tiny_mlp().double()
    m.eval()
    ref = exact_jacobian_sq(m, X[:20])
    m = tiny_mlp()
    assert B.jacobian_frobenius(m, X[:20], squared=True) == pytest.approx(ref, rel=1e-4)
    assert B.jacobian_frobenius(m, X[:20]) == pytest.approx(np.sqrt(ref), rel=1e-4)


def test_jacobian_estimate_matches_exact(toy):
    X, y = toy
    m = tiny_mlp()
    x = torch.from_numpy(X[:10]).requires_grad_(True)
    logits = m(x)
    exact = B.JacobianReg(n_proj=-1).estimate(x, logits, create_graph=False)
    gen = torch.Generator().manual_seed(0)
    est = B.JacobianReg(n_proj=2000).estimate(x, logits, generator=gen, create_graph=False)
    torch.testing.assert_close(est, exact, rtol=0.1, atol=0)
    reg = B.JacobianReg(lam=0.5, n_proj=1)
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[:10]))
    ests = [float(reg.loss(m, x, None, logits, ce, generator=gen)[1]) for _ in range(400)]
    assert np.mean(ests) == pytest.approx(float(exact.mean()), rel=0.1)
    total, value = reg.loss(m, x, None, logits, ce, generator=torch.Generator().manual_seed(1))
    assert float(total.detach()) == pytest.approx(float(ce.detach()) + 0.25 * float(value), rel=1e-6)
    assert total.requires_grad   # double backprop: the penalty has a gradient


# A fixed float64 net 3-4-2 (tanh) and batch: the authors' JacobianReg (Hoffman, Roberts & Yaida
# 2019, github.com/facebookresearch/jacobian_regularizer, jacobian/jacobian.py, commit 45655cc;
# the same class is in josuenassar/power_law, ModelDefs/utils.py) with n=-1 (exact: the C unit
# vectors) returns R = (1/2) mean_batch ||J||_F^2 on it, and its README's loss is CE + lambda * R.
JACOBIAN_X = [[0.2, -0.5, 0.9], [1.0, 0.3, -0.7], [-0.4, 0.8, 0.1]]
HOFFMAN_R = 1.486958880076752


def _fixed_jacobian_net():
    def f64(values):
        return torch.tensor(values, dtype=torch.float64)

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(f64([[0.5, -1.0, 0.3], [0.8, 0.2, -0.6], [-0.7, 0.4, 1.1], [0.1, 0.9, -0.2]]))
        net[0].bias.copy_(f64([0.1, -0.2, 0.05, 0.3]))
        net[2].weight.copy_(f64([[1.2, -0.4, 0.7, 0.5], [-0.3, 0.9, -1.1, 0.6]]))
        net[2].bias.copy_(f64([0.0, 0.2]))
    return net


def test_jacobian_reg_matches_the_authors_values():
    net = _fixed_jacobian_net()
    x = torch.tensor(JACOBIAN_X, dtype=torch.float64, requires_grad=True)
    logits = net(x)
    ce = torch.tensor(0.25, dtype=torch.float64)
    total, value = B.JacobianReg(lam=0.3, n_proj=-1).loss(net, x, None, logits, ce)
    assert float(total.detach()) == pytest.approx(0.25 + 0.3 * HOFFMAN_R, rel=1e-12)
    assert float(value) == pytest.approx(2 * HOFFMAN_R, rel=1e-12)  # logged: mean ||J||_F^2
    # jacobian_frobenius (float32 input): the same mean ||J||_F^2
    assert B.jacobian_frobenius(net.float(), JACOBIAN_X, squared=True) == pytest.approx(2 * HOFFMAN_R, rel=1e-5)


def test_jacobian_reg_lowers_jacobian_norm(toy):
    X, y = toy
    vanilla, reg = tiny_mlp(), tiny_mlp()
    B.train(vanilla, X, y, epochs=6, batch_size=32, lr=5e-3, seed=0)
    B.train(reg, X, y, B.JacobianReg(lam=0.5), epochs=6, batch_size=32, lr=5e-3, seed=0)
    j_van, j_reg = B.jacobian_frobenius(vanilla, X), B.jacobian_frobenius(reg, X)
    assert j_reg < 0.7 * j_van
    assert reg.score(X, y) > 0.9


# B.spectral_penalty(eigs, tau, slope) on fixed spectra, the values of the authors' own function
# (Nassar et al. 2020, github.com/josuenassar/power_law, ModelDefs/utils.py, eigen_val_regulate,
# commit 13f8f36f; ported verbatim as tests/reference.py:nassar_eigen_val_regulate) called with
# eigT=eigs, start=tau - 1 (their 0-based anchor index) and x of shape (2, len(eigs)), under
# torch.set_default_dtype(torch.float64) so that their accumulator is float64.
NASSAR_VALUES = [
    ([5.0, 3.0, 2.5, 1.0, 0.9, 0.5, 0.4, 0.2, 0.1, 0.05], 3, 1.0, 0.3394844444444445),
    ([0.3, 2.0, 0.05, 1.2, 0.6, 4.0, 0.45, 0.02, 0.9, 0.15, 0.25, 0.08], 2, 1.5, 0.2042803754059128),
    ([1.0, 0.6, 0.2, 0.3, 0.21, 0.15, 0.2, 0.11, 0.1, 0.12], 4, 0.8, 0.07093845107990082),
]


@pytest.mark.parametrize("eigs,tau,slope,expect", NASSAR_VALUES)
def test_spectral_penalty_matches_the_authors_values(eigs, tau, slope, expect):
    value = B.spectral_penalty(torch.tensor(eigs, dtype=torch.float64), tau=tau, slope=slope)
    assert float(value) == pytest.approx(expect, rel=1e-12)


def test_spectral_reg_loss_matches_the_authors_function(toy):
    X, y = toy
    m = tiny_mlp()
    reg = B.SpectralReg(beta=2.0, tau=3, slope=1.0)
    reg.on_epoch_start(m, torch.from_numpy(X))
    Hall = m.hidden(X).detach().double().numpy()
    cov = np.cov(Hall.T)
    # the eigenvectors are those of the training-set covariance, by descending eigenvalue
    # (compared through V^T cov V: dead units make some eigenvalues degenerate)
    Vt = reg.eigvecs_.double().numpy()
    D = Vt.T @ cov @ Vt
    vals = np.linalg.eigvalsh(cov)[::-1]
    np.testing.assert_allclose(np.diag(D), vals, atol=1e-5 * vals[0])
    np.testing.assert_allclose(D - np.diag(np.diag(D)), 0.0, atol=1e-5 * vals[0])
    xb = X[:50]
    h = m.hidden(xb)
    logits = m(xb)
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[:50]))
    total, value = reg.loss(m, xb, None, logits, ce, hidden=h)
    # the authors' function on the same batch and eigenvectors (their 0-based anchor: tau - 1).
    # One difference: they skip eigenvalues <= 0 (here: directions of dead ReLU units, zero
    # variance); we count each as (0 / gamma - 1)^2 = 1, a constant 1 / N without gradient.
    eigs, theirs = nassar_eigen_val_regulate(h.detach().double(), torch.from_numpy(Vt), start=3 - 1, slope=1.0)
    n_skipped = int((eigs[3:] <= 0).sum())
    assert n_skipped > 0  # this small ReLU net has dead units
    expect = 2.0 * (float(theirs[0]) + n_skipped / 24)
    assert float(value) == pytest.approx(expect, rel=1e-4)
    tanh = tiny_mlp(activation="tanh")  # no dead units: the same value
    reg.on_epoch_start(tanh, torch.from_numpy(X))
    ht = tanh.hidden(xb)
    eigs, theirs_t = nassar_eigen_val_regulate(ht.detach().double(), reg.eigvecs_.double(), start=3 - 1, slope=1.0)
    assert float(eigs.min()) > 0
    assert float(reg.loss(tanh, xb, None, None, ce, hidden=ht)[1]) == pytest.approx(2.0 * float(theirs_t[0]), rel=1e-4)
    assert float(total.detach()) == pytest.approx(float(ce.detach()) + expect, rel=1e-4)
    # a perfect 1/n spectrum costs nothing; excess power above the line costs more than deficit
    eig = torch.tensor(1.0 / np.arange(1, 21))
    assert float(B.spectral_penalty(eig, tau=5)) == pytest.approx(0.0, abs=1e-12)
    up, down = eig.clone(), eig.clone()
    up[10] *= 1.5
    down[10] *= 0.5
    assert float(B.spectral_penalty(up, tau=5)) > float(B.spectral_penalty(down, tau=5)) > 0


def test_spectral_reg_needs_large_batch(toy):
    X, y = toy
    m = tiny_mlp()
    before = params_of(m)
    with pytest.raises(ValueError, match=r"batch_size > the width of the representation \(24 units\)"):
        B.train(m, X, y, B.SpectralReg(), epochs=1, batch_size=24, seed=0)
    assert same(before, params_of(m))
    with pytest.raises(ValueError, match="tau"):
        B.train(m, X, y, B.SpectralReg(tau=30), epochs=1, batch_size=60, seed=0)


def test_spectral_reg_pulls_spectrum_toward_power_law():
    # noisier data than `toy`: the penalty can only raise the variance of directions that
    # vary at all (its gradient vanishes along a direction of zero variance)
    X, y = data.make_classes(300, 64, 4, noise=0.2, random_state=0)
    reg = B.SpectralReg(beta=5.0, tau=3)
    van, spec = tiny_mlp(activation="tanh"), tiny_mlp(activation="tanh")
    B.train(van, X, y, epochs=6, batch_size=60, lr=5e-3, seed=0)
    B.train(spec, X, y, reg, epochs=6, batch_size=60, lr=5e-3, seed=0)
    Xt = torch.from_numpy(X)

    def penalty(model):
        reg.on_epoch_start(model, Xt)
        return float(reg.penalty(model.hidden(X)).detach())

    assert penalty(spec) < 0.3 * penalty(van)
    assert spec.score(X, y) > 0.9


def test_pgd_stays_in_ball_and_raises_loss(toy):
    X, y = toy
    m = tiny_mlp()
    B.train(m, X, y, epochs=4, batch_size=32, lr=5e-3, seed=0)
    m.train()
    x, t = torch.from_numpy(X[:64]), torch.from_numpy(y[:64])
    gen = torch.Generator().manual_seed(0)
    x_adv = B.pgd_attack(m, x, t, eps=0.1, steps=10, step_size=0.025, generator=gen)
    assert m.training, "the model's mode is restored after the attack"
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(m(x_adv), t)) > float(ce(m(x), t)) + 0.1
        noise = (x + 0.1 * torch.sign(torch.randn(x.shape, generator=gen))).clamp(0, 1)
        assert float(ce(m(x_adv), t)) > float(ce(m(noise), t))
    reg = B.AdversarialTraining(eps=0.1, steps=5)
    assert reg.step_size == pytest.approx(0.05)
    total, value = reg.loss(m, x, t, m(x), ce(m(x), t), generator=gen)
    with torch.no_grad():
        assert float(value) > float(ce(m(x), t))


@pytest.mark.parametrize("clean_weight", [0.0, 0.3])
def test_adversarial_training_loss_mixes_clean_and_adversarial(toy, clean_weight):
    """total = (1 - clean_weight) * CE(adv) + clean_weight * CE(clean), the adversarial batch being
    pgd_attack's with the same generator seed; the logged value is CE(adv)."""
    X, y = toy
    m = tiny_mlp()
    B.train(m, X, y, epochs=2, batch_size=32, lr=5e-3, seed=0)
    x, t = torch.from_numpy(X[:64]), torch.from_numpy(y[:64])
    ce = torch.nn.functional.cross_entropy
    reg = B.AdversarialTraining(eps=0.1, steps=3, step_size=0.05, clean_weight=clean_weight)
    clean = ce(m(x), t)
    total, value = reg.loss(m, x, t, m(x), clean, generator=torch.Generator().manual_seed(7))
    x_adv = B.pgd_attack(m, x, t, 0.1, 3, 0.05, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        adv, c = float(ce(m(x_adv), t)), float(clean)
    assert adv > c + 0.05  # the two terms differ, so a wrong mix shows
    assert float(value) == pytest.approx(adv, rel=1e-6)
    assert float(total.detach()) == pytest.approx((1 - clean_weight) * adv + clean_weight * c, rel=1e-6)
    assert total.requires_grad


def test_pgd_attack_is_the_analysis_pgd(toy):
    """Adversarial training and the analyses run one PGD: pgd_attack equals
    bioreps.analysis.robustness.pgd returning the last iterate, with and without random start
    (same generator seed)."""
    from bioreps.analysis import robustness as R

    X, y = toy
    m = tiny_mlp()
    B.train(m, X, y, epochs=2, batch_size=32, lr=5e-3, seed=0)
    x, t = torch.from_numpy(X[:50]), torch.from_numpy(y[:50])
    for random_start in (False, True):
        ours = B.pgd_attack(m, x, t, 0.1, 4, 0.03, generator=torch.Generator().manual_seed(2),
                            random_start=random_start)
        theirs = R.pgd(m, x, t, 0.1, steps=4, step_size=0.03, random_start=random_start,
                       seed=torch.Generator().manual_seed(2), keep_best=False)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert not torch.equal(ours, B.pgd_attack(m, x, t, 0.1, 4, 0.03, random_start=False))


# -- spiking MLP -----------------------------------------------------------------------------

def test_lif_golden_trace():
    from bioreps.baselines.snn import LIFParameters, lif_step

    p = LIFParameters(tau_mem_ms=100.0, dt_ms=1.0)
    d = np.exp(-0.01)
    v = torch.zeros(1)
    trace, spikes = [], []
    for _ in range(4):
        s, v = lif_step(torch.full((1,), 0.4), v, p)
        trace.append(float(v))
        spikes.append(float(s))
    v2 = 0.4 * d + 0.4
    v3 = v2 * d + 0.4              # 1.19... >= 1: spike and reset to 0
    assert spikes == [0, 0, 1, 0]
    np.testing.assert_allclose(trace, [0.4, v2, 0.0, 0.4], rtol=1e-6)
    assert v3 >= 1
    # fast-sigmoid surrogate derivative 1 / (1 + slope |v - 1|)^2
    x = torch.tensor([0.5, 1.0, 1.5], requires_grad=True)
    B.snn.fast_sigmoid_spike(x - 1.0, 10.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1 / 36, 1.0, 1 / 36], rtol=1e-6)


def test_spiking_mlp_trains_and_counts(toy):
    X, y = toy
    m = B.SpikingMLP((64, 32, 4), n_steps=8, seed=0)
    h = m.hidden(X[:5]).detach()
    assert h.shape == (5, 32) and m.n_units == 32
    assert torch.all(h == h.round()) and float(h.min()) >= 0 and float(h.max()) <= 8
    hist = B.train(m, X, y, epochs=6, batch_size=32, lr=5e-3, seed=0)
    assert hist["accuracy"][-1] > 0.9
    m2 = B.SpikingMLP((64, 32, 4), n_steps=8, seed=0)
    B.train(m2, X, y, epochs=6, batch_size=32, lr=5e-3, seed=0)
    assert same(params_of(m), params_of(m2)), "same seeds, same spikes, same weights"


# -- export / save / load ---------------------------------------------------------------------

def test_export_and_load(toy, tmp_path):
    X, y = toy
    m = tiny_mlp()
    B.train(m, X, y, B.WeightDecay(1e-3), epochs=2, batch_size=32, seed=5)
    path = tmp_path / "mlp.h5"
    B.export(m, path, {"train": (X, y), "test": X[:30]}, dataset="toy")
    with io.load(path) as f:
        assert f.model.kind == "mlp"
        assert f.representations["train"].shape == (240, 24)
        np.testing.assert_array_equal(f.representations["train"].labels, y)
        assert f.representations["test"].shape == (30, 24)
        np.testing.assert_allclose(f.representations["test"].to_numpy(), m.transform(X[:30]),
                                   rtol=1e-6)
        # a one-representation model: one representation per split, no layer attribute
        assert sorted(f.representations) == ["test", "train"]
        assert f.representations["test"].layer is None and "layer" not in f.representations["test"].attrs
        assert f.model.hyperparameters["regularizer"] == {"name": "weight_decay", "lam": 1e-3,
                                                           "include_bias": False}
        assert f.model.arrays["net.0.weight"].shape == (24, 64)
        assert f.provenance["seed"] == 5 and f.provenance["dataset"] == "toy"
        assert f.provenance["regularizer"]["name"] == "weight_decay"
        assert f.provenance["history_summary"]["epochs"] == 2
    back = B.MLP.load(path)
    assert same(params_of(back), params_of(m))
    assert back.history_["loss"] == m.history_["loss"]


@pytest.mark.parametrize("make", [lambda: B.CNN(channels=(2, 3), hidden=5, seed=1),
                                  lambda: B.SpikingMLP((784, 6, 10), n_steps=3, seed=2)])
def test_save_load_roundtrip_other_models(tmp_path, make):
    m = make()
    m.save(tmp_path / "m.h5")
    back = B.load(tmp_path / "m.h5")
    assert type(back) is type(m) and back.hyperparameters() == m.hyperparameters()
    assert same(params_of(back), params_of(m))
    with pytest.raises(ValueError, match="not a MLP"):
        B.MLP.load(tmp_path / "m.h5")


def test_conv_net_export_writes_every_block_as_hebbian_net_does(tmp_path):
    """Block i's rows are ``block_output(X, i)``; the last block's under the split's own name."""
    layers = [{"n_channels": 3, "kernel_size": 3, "padding": 1, "pool": ["max", 2, 2, 0]},
              {"n_channels": 4, "kernel_size": 3, "padding": 1},
              {"n_channels": 2, "kernel_size": 3, "pool": ["avg", 2, 2, 0]}]
    m = B.ConvNet(layers, input_shape=(1, 10, 10), n_classes=3, seed=3)
    X = np.random.default_rng(0).random((11, 100)).astype(np.float32)
    y = np.arange(11) % 3
    with torch.no_grad():  # BatchNorm's running statistics away from 0/1: eval mode must use them
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.fill_(0.3)
                mod.running_var.fill_(2.0)
    m.train()
    m.export(tmp_path / "c.h5", {"test": (X, y)}, block_rows=4)  # several row blocks, the last short
    assert m.training  # the mode is restored
    with io.load(tmp_path / "c.h5") as f:
        assert sorted(f.representations) == ["test", "test.layer0", "test.layer1"]
        for i, name in enumerate(["test.layer0", "test.layer1", "test"]):
            rep = f.representations[name]
            assert rep.layer == i and rep.shape == (11, int(np.prod(m.block_shapes_[i])))
            assert rep.attrs["description"].startswith(f"block {i}")
            np.testing.assert_array_equal(rep.labels, y)
            np.testing.assert_allclose(rep.to_numpy(), m.block_output(X, i), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(f.representations["test"].to_numpy(), m.transform(X), rtol=1e-6, atol=1e-7)
    assert m.block_shapes_ == [[3, 5, 5], [4, 5, 5], [2, 1, 1]]
    # lower layers of the named splits only (a study keeps the test split's)
    m.export(tmp_path / "some.h5", {"train": (X[:5], y[:5]), "test": (X, y)}, layer_splits=["test"])
    with io.load(tmp_path / "some.h5") as f:
        assert sorted(f.representations) == ["test", "test.layer0", "test.layer1", "train"]
        np.testing.assert_allclose(f.representations["train"].to_numpy(), m.transform(X[:5]), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"layer_splits names splits not exported: \['val'\]"):
        m.export(tmp_path / "bad.h5", {"test": X}, layer_splits=["val"])
    assert not (tmp_path / "bad.h5").exists()


# -- bad input -------------------------------------------------------------------------------

def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        B.MLP((4, 3, 2), activation="sigmoid")
    with pytest.raises(ValueError, match="at least 3 entries"):
        B.MLP((4, 2))
    with pytest.raises(ValueError, match=r"sizes\[1\] must be >= 1"):
        B.MLP((4, 0, 2))
    with pytest.raises(TypeError, match="sizes"):
        B.MLP(784)
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int"):
        B.MLP((4, 2.5, 2))
    with pytest.raises(ValueError, match="representation=1 is out of range"):
        B.MLP((4, 3, 2), representation=1)
    with pytest.raises(ValueError, match="input must have shape"):
        tiny_mlp()(torch.rand(3, 10))
    with pytest.raises(ValueError, match="n_steps"):
        B.SpikingMLP(n_steps=0)


def test_bad_training_input(toy, tmp_path):
    X, y = toy
    m = tiny_mlp()
    with pytest.raises(ValueError, match="239 labels but X has 240 rows"):
        B.train(m, X, y[:-1], epochs=1)
    bad = y.copy()
    bad[3] = 4
    with pytest.raises(ValueError, match="label 4 outside 0..3"):
        B.train(m, X, bad, epochs=1)
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(rows \[.*7\)?\]"):
        B.train(m, Xn, y, epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        B.train(m, X * 3, y, epochs=1)
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        B.train(m, X[:, :10], y, epochs=1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        B.train(m, X, y, epochs=1, batch_size=0)
    with pytest.raises(TypeError, match="regularizer"):
        B.train(m, X, y, regularizer="jacobian")
    with pytest.raises(ValueError, match="resume=True needs a checkpoint"):
        B.train(m, X, y, resume=True)
    with pytest.raises(ValueError, match="X_val and y_val"):
        B.train(m, X, y, X_val=X)
    with pytest.raises(ValueError, match="eps"):
        B.AdversarialTraining(eps=-0.1)
    with pytest.raises(ValueError, match=r"labels of split 'a'"):
        m.export(tmp_path / "unused.h5", {"a": (X, bad)})
    assert not (tmp_path / "unused.h5").exists()


def test_regularizers_roundtrip_and_other_models_train():
    for reg in (B.WeightDecay(0.1), B.JacobianReg(0.2, n_proj=3), B.SpectralReg(2.0, tau=4),
                B.AdversarialTraining(0.05, 2, 0.03)):
        back = B.from_dict(reg.to_dict())
        assert type(back) is type(reg) and back.params() == reg.params()
    assert B.from_dict({"name": "none"}) is None
    with pytest.raises(ValueError, match="unknown regularizer"):
        B.from_dict({"name": "dropout"})
    # double backprop through the conv net and through the spiking surrogate
    Xc, yc = data.make_classes(40, 784, 3, random_state=1)
    cnn = B.CNN(channels=(2, 3), hidden=6, n_classes=3, seed=0)
    hist = B.train(cnn, Xc, yc, B.JacobianReg(0.1), epochs=1, batch_size=20, seed=0)
    assert np.isfinite(hist["loss"][0]) and hist["regularizer"][0] > 0
    X, y = data.make_classes(40, 16, 3, random_state=2)
    snn = B.SpikingMLP((16, 8, 3), n_steps=4, seed=0)
    before = params_of(snn)
    hist = B.train(snn, X, y, B.JacobianReg(0.1), epochs=1, batch_size=20, seed=0)
    assert hist["regularizer"][0] > 0 and not same(before, params_of(snn))
    hist = B.train(snn, X, y, B.AdversarialTraining(0.1, 2), epochs=1, batch_size=20, seed=0)
    assert np.isfinite(hist["loss"][0])


def test_subnormals_are_flushed_during_training_and_restored_after(toy):
    """train() flushes subnormal floats to zero while it runs (Adam states of weights moved only
    by weight decay underflow there and slow every step) and leaves the global setting off."""
    X, y = toy
    seen = []

    def probe(epoch, record, model):
        seen.append(float(torch.tensor(1e-40, dtype=torch.float32) * 1.0))

    B.train(tiny_mlp(), X, y, epochs=1, batch_size=32, seed=0, progress=False,
            callback=probe)
    assert seen == [0.0]
    assert float(torch.tensor(1e-40, dtype=torch.float32) * 1.0) > 0.0
