"""Adversarial robustness: FGSM, PGD, the Square attack, robust-accuracy curves, transfer matrices.

Every function takes a ``torch.nn.Module`` returning logits ``(n, n_classes)`` and inputs ``X``
with values in [0, 1]: flat rows ``(n, 784)`` or images ``(n, h, w)`` / ``(n, c, h, w)``. The
model always receives slices of ``X`` in the shape the user gave (never reshaped here). ``X`` may
be a NumPy array (the result is a float32 NumPy array) or a tensor (the result is a tensor of the
same dtype and device); ``y`` holds integer labels (array or tensor).

Attacks
-------
- :func:`fgsm`: Goodfellow, Shlens & Szegedy (2015), one signed-gradient step of the
  cross-entropy, L-inf.
- :func:`pgd`: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), projected gradient ascent on the
  cross-entropy from a random start, L-inf or L2. Returns per sample the strongest point it
  visited, FGSM's included, so it is never weaker than FGSM; with ``keep_best=False`` it returns
  the last iterate and matches ``torchattacks.PGD`` / ``PGDL2`` step for step (our tests check
  the robust accuracies agree). :func:`pgd_batch` is its torch-level loop, shared with
  adversarial training (:mod:`bioreps.baselines`).
- :func:`square_attack`: Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a
  query-efficient black-box adversarial attack via random search" (ECCV), L-inf version. Needs
  only logits, so it also attacks models whose gradients vanish (quantisation, saturation) or that
  are not differentiable at all (:class:`bioreps.torch_views.NumpyModule`, e.g. a spiking layer).

Gradient attacks run the model in eval mode (each submodule's training flag is restored
afterwards) and take gradients with respect to the input only (``torch.autograd.grad``), so no
``.grad`` is left on the model's parameters.

Analyses
--------
- :func:`robust_accuracy_curve`: accuracy under each attack over a list of eps, the worst case
  over attacks per sample, and built-in sanity checks (eps = 0 reproduces the clean accuracy;
  warnings, :class:`GradientMaskingWarning`, for the signs of gradient masking listed by Athalye,
  Carlini & Wagner 2018 and Carlini et al. 2019 "On evaluating adversarial robustness").
- :func:`transfer_matrix`: accuracy of every model on adversarial examples crafted on every other
  one (the transfer finding of Szegedy et al. 2013).
- :func:`critical_perturbation`: per correctly classified image, the first eps of a grid at which
  an attack (FGSM, PGD, Square or random noise) flips it and the L2 norm of that critical
  perturbation; its relative-accuracy curve and :func:`eps_at_level`, the eps where such a curve
  falls to 50% (the protocol of Holzhausen et al. 2024, arXiv:2405.00679).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._progress import progress_bar
from .._validation import check_array, check_float, check_int, check_labels, check_random_state
from ..plots import save_figure

__all__ = ["AttackWarning", "GradientMaskingWarning", "RobustnessCurve", "TransferResult", "accuracy", "fgsm",
           "pgd", "pgd_batch", "square_attack", "robust_accuracy_curve", "plot_robust_accuracy",
           "transfer_matrix", "CriticalPerturbation", "critical_perturbation", "eps_at_level"]

_NORMS = ("linf", "l2")
_DEFAULT_BATCH = 256


class AttackWarning(UserWarning):
    """An attack in a robustness evaluation is weaker than it should be (e.g. PGD leaves more
    samples correct than one FGSM step): the robust accuracies are likely too optimistic.
    Base class of :class:`GradientMaskingWarning`."""


class GradientMaskingWarning(AttackWarning):
    """A robustness evaluation shows a sign that gradient attacks under-estimate the attacker
    (gradient masking / obfuscation): the numbers are likely too optimistic."""


# ---------------------------------------------------------------------------- input handling
def _check_model(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    return model


def _differentiable(model):
    return bool(getattr(model, "differentiable", True))


def _require_differentiable(model, attack):
    if not _differentiable(model):
        raise TypeError(f"{attack} needs input gradients but {type(model).__name__} is marked "
                        "differentiable = False; use the gradient-free square_attack instead")


def _model_device_dtype(model):
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, (t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32)
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device, torch.float32
    return torch.device("cpu"), torch.float32


def _check_norm(norm):
    key = str(norm).lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(key, key)
    if key not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return key


def _prepare(model, X, y, *, name="X"):
    """Validate; return (X as a float tensor on the model's device, labels int64 tensor there,
    a function turning a result tensor back into the caller's type)."""
    _check_model(model)
    device, dtype = _model_device_dtype(model)
    if isinstance(X, torch.Tensor):
        if not X.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {X.dtype}")
        arr = X.detach().to("cpu", torch.float64).numpy()
        check_array(arr, name=name, ndim=None, dtype=np.float64, unit_interval=True)
        out_dtype, out_device = X.dtype, X.device
        Xt = X.detach().to(device=device, dtype=dtype).clone()

        def back(t):
            return t.detach().to(device=out_device, dtype=out_dtype)
    else:
        arr = check_array(X, name=name, ndim=None, dtype=np.float32, unit_interval=True)
        Xt = torch.from_numpy(arr.copy()).to(device=device, dtype=dtype)

        def back(t):
            return t.detach().to("cpu", torch.float32).numpy()
    if Xt.ndim < 2:
        raise ValueError(f"{name} must have a batch axis and features, got shape {tuple(Xt.shape)}")
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = check_labels(y, n=Xt.shape[0])
    return Xt, torch.from_numpy(y).to(device), back


@contextlib.contextmanager
def _eval_mode(model):
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _logits(model, x):
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return logits of shape (batch, n_classes); for a batch of "
                         f"{x.shape[0]} it returned {shape}")
    return out


def _check_label_range(logits, t):
    if t.numel() and int(t.max()) >= logits.shape[1]:
        raise ValueError(f"y holds label {int(t.max())} but the model has only {logits.shape[1]} outputs")


def _input_grad(model, x, t, return_logits=False):
    """Gradient of the summed cross-entropy with respect to ``x`` only (and, with
    ``return_logits``, the detached logits at ``x``)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = _logits(model, x)
        _check_label_range(logits, t)
        loss = F.cross_entropy(logits, t, reduction="sum")
        try:
            (grad,) = torch.autograd.grad(loss, x)
        except RuntimeError as err:
            raise RuntimeError(f"cannot differentiate the model's logits with respect to its input "
                               f"({err}); for a non-differentiable model use square_attack") from err
    return (grad.detach(), logits.detach()) if return_logits else grad.detach()


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _torch_generator(seed):
    """A CPU ``torch.Generator`` from None (fresh entropy), an int, a SeedSequence or a Generator."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None and not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise TypeError(f"seed must be None, an int, a SeedSequence or a torch.Generator, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1)))


def _predict(model, Xt, batch_size):
    out = torch.empty(Xt.shape[0], dtype=torch.int64, device=Xt.device)
    with _eval_mode(model), torch.no_grad():
        for sl in _batches(Xt.shape[0], batch_size):
            out[sl] = _logits(model, Xt[sl]).argmax(dim=1).to(Xt.device)
    return out


# ---------------------------------------------------------------------------- accuracy
def accuracy(model, X, y, batch_size=_DEFAULT_BATCH):
    """Fraction of rows of ``X`` whose argmax logit equals ``y`` (eval mode, no gradients)."""
    batch_size = check_int(batch_size, "batch_size", 1)
    Xt, yt, _ = _prepare(model, X, y)
    with _eval_mode(model), torch.no_grad():
        correct = 0
        for sl in _batches(Xt.shape[0], batch_size):
            logits = _logits(model, Xt[sl])
            _check_label_range(logits, yt[sl])
            correct += int((logits.argmax(dim=1).to(yt.device) == yt[sl]).sum())
    return correct / Xt.shape[0]


# ---------------------------------------------------------------------------- FGSM
def fgsm(model, X, y, eps, *, batch_size=_DEFAULT_BATCH):
    """Fast gradient sign method (Goodfellow et al. 2015), untargeted, L-inf.

    ``X_adv = clip(X + eps * sign(grad_X CE(model(X), y)), 0, 1)``.

    Parameters
    ----------
    model : torch.nn.Module returning logits (must be differentiable)
    X : array or tensor (n, ...) with values in [0, 1]
    y : integer labels (n,)
    eps : float >= 0
        L-inf radius.
    batch_size : int

    Returns
    -------
    Adversarial ``X`` of the same type (and, for tensors, dtype and device) as ``X``.
    """
    eps = check_float(eps, "eps")
    batch_size = check_int(batch_size, "batch_size", 1)
    Xt, yt, back = _prepare(model, X, y)
    _require_differentiable(model, "fgsm")
    out = torch.empty_like(Xt)
    with _eval_mode(model):
        for sl in _batches(Xt.shape[0], batch_size):
            x = Xt[sl]
            grad = _input_grad(model, x, yt[sl])
            out[sl] = torch.clamp(x + eps * grad.sign(), 0.0, 1.0)
    return back(out)


# ---------------------------------------------------------------------------- PGD
def _flat_norm(t):
    return t.reshape(t.shape[0], -1).norm(p=2, dim=1).reshape(-1, *([1] * (t.ndim - 1)))


def _random_start(x0, eps, norm, generator):
    """A random point of the eps-ball around ``x0``, clipped to [0, 1] (see :func:`pgd`)."""
    if norm == "linf":
        noise = (torch.rand(x0.shape, generator=generator, dtype=torch.float64) * 2 - 1) * eps
    else:
        z = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        d = z[0].numel()
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        radius = (eps * u.pow(1.0 / d)).reshape(-1, *([1] * (z.ndim - 1)))
        noise = z / _flat_norm(z).clamp_min(1e-30) * radius
    return torch.clamp(x0 + noise.to(device=x0.device, dtype=x0.dtype), 0.0, 1.0)


def _pgd_step(x, x0, grad, eps, norm, step_size):
    """One ascent step of ``step_size`` from ``x``, projected onto the eps-ball around ``x0`` and [0, 1]."""
    if norm == "linf":
        delta = torch.clamp(x + step_size * grad.sign() - x0, -eps, eps)
    else:
        delta = x + step_size * grad / (_flat_norm(grad) + 1e-10) - x0
        dn = _flat_norm(delta)
        delta = delta * torch.where(dn > eps, eps / dn.clamp_min(1e-30), torch.ones_like(dn))
    return torch.clamp(x0 + delta, 0.0, 1.0)


def pgd_batch(model, x0, t, eps, *, norm="linf", steps=40, step_size=None, random_start=True,
              generator=None, keep_best=False):
    """The PGD loop on one batch of tensors: the torch-level core of :func:`pgd`, also the attack
    of adversarial training (:func:`bioreps.baselines.pgd_attack`).

    ``x0`` is a float tensor ``(b, ...)`` with values in [0, 1] on the model's device and ``t``
    its int64 labels there; they are not validated or converted (use :func:`pgd` for arrays).
    The model runs in eval mode (each submodule's flag restored afterwards); gradients are taken
    with respect to the input only. ``generator`` (a CPU ``torch.Generator``) draws the random
    start; ``None`` draws it from the global torch RNG. ``step_size=None`` means
    ``2.5 * eps / steps``. ``keep_best`` as in :func:`pgd` (off here: adversarial training uses
    Madry's last iterate). Returns the adversarial batch, detached, of ``x0``'s dtype.
    """
    eps = check_float(eps, "eps")
    norm = _check_norm(norm)
    steps = check_int(steps, "steps", 0)
    if step_size is None:
        step_size = 2.5 * eps / steps if steps else 0.0
    else:
        step_size = check_float(step_size, "step_size")
    x0 = x0.detach()
    with _eval_mode(model):
        x = _random_start(x0, eps, norm, generator) if random_start and eps > 0 else x0.clone()
        if keep_best:
            best = x0.clone()
            best_wrong = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
            best_loss = torch.full((x0.shape[0],), -math.inf, dtype=torch.float64, device=x0.device)

            def consider(xc, logits):
                # misclassified beats correct; then the higher cross-entropy; ties keep the earlier
                logits = logits.to(x0.device)
                loss = F.cross_entropy(logits, t, reduction="none").to(torch.float64)
                wrong = logits.argmax(dim=1) != t
                better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
                best[better] = xc[better]
                best_loss[better] = loss[better]
                best_wrong[better] = wrong[better]
        grad0 = None  # the gradient at x0, for the one-step candidate
        for k in range(steps):
            grad, logits = _input_grad(model, x, t, return_logits=True)
            if keep_best:
                consider(x, logits)
                if k == 0 and not (random_start and eps > 0):
                    grad0 = grad
            x = _pgd_step(x, x0, grad, eps, norm, step_size)
        if not keep_best:
            return x.detach()
        with torch.no_grad():
            consider(x, _logits(model, x))
        if grad0 is None:
            grad0 = _input_grad(model, x0, t)
        one_step = _pgd_step(x0, x0, grad0, eps, norm, eps)  # FGSM (L-inf) / the fast gradient method (L2)
        with torch.no_grad():
            consider(one_step, _logits(model, one_step))
    return best


def pgd(model, X, y, eps, norm="linf", steps=40, step_size=None, random_start=True, seed=None,
        batch_size=_DEFAULT_BATCH, keep_best=True):
    """Projected gradient descent (Madry et al. 2018), untargeted, on the cross-entropy.

    From ``x_0`` (``X`` or a random start), ``steps`` times: ``x <- x + step_size * d`` with
    ``d = sign(g)`` (L-inf) or ``d = g / ||g||_2`` (L2), ``g`` the gradient of the cross-entropy
    with respect to the input, then project ``x - X`` onto the eps-ball (clip to [-eps, eps] for
    L-inf; rescale to norm eps if longer for L2) and clip ``x`` to [0, 1], so every iterate lies
    in the eps-ball around ``X`` and in [0, 1].

    Which point is returned (``keep_best``): Madry et al. and ``torchattacks.PGD``/``PGDL2``
    return the last iterate (``keep_best=False``; our tests check that we then agree with
    torchattacks). But ascent on the cross-entropy is not ascent on the error: the last iterate
    may be classified correctly although an earlier one was not, and from a random start with
    steps of ``2.5 eps / steps`` PGD may miss a sample that the single full step of FGSM fools
    (on a small Fashion-MNIST MLP PGD-20 left more samples correct than FGSM). So by default
    (``keep_best=True``) every sample gets the strongest of the points the attack visited -- a
    misclassified one if any, else the one of highest cross-entropy (ties: the earliest) -- among
    the start, every iterate and the one-step attack from ``X`` with step eps
    (``clip(X + eps sign(g_X), 0, 1)``, i.e. :func:`fgsm`, for L-inf; ``X + eps g_X / ||g_X||``
    clipped to [0, 1] for L2). A sample FGSM fools is then fooled by PGD too, so PGD is never
    weaker than FGSM (AutoAttack keeps its best point likewise, Croce & Hein 2020). Cost per
    batch: two more forward passes and, with a random start, one more gradient.

    Parameters
    ----------
    model : torch.nn.Module returning logits (must be differentiable)
    X : array or tensor (n, ...) with values in [0, 1]
    y : integer labels (n,)
    eps : float >= 0
        Radius of the L-inf or L2 ball.
    norm : {"linf", "l2"}
    steps : int >= 0
    step_size : float > 0 or None
        Default ``2.5 * eps / steps``, Madry et al.'s rule: enough for ``steps`` steps to cross
        the ball (diameter ``2 eps``) with some margin, whatever the start. With
        ``steps * step_size < eps`` the iterates cannot reach the corners FGSM reaches in one step.
    random_start : bool
        Start from a random point of the ball, clipped to [0, 1]. L-inf: each coordinate uniform
        in [-eps, eps]. L2: uniform in the ball: direction ``z / ||z||`` with ``z`` standard normal,
        radius ``eps * u**(1/d)`` with ``u`` uniform in [0, 1] and ``d`` the number of features
        (``torchattacks.PGDL2`` instead draws the radius as ``eps * u``, which is not uniform in
        the ball; in high dimension our radius is close to eps).
    seed : None, int, SeedSequence or torch.Generator
        Seeds the random start (a private CPU ``torch.Generator``; the global torch RNG is not
        touched). Batches draw in order, so results depend on ``batch_size`` too.
    batch_size : int
    keep_best : bool
        Return per sample the strongest visited point (default) instead of the last iterate.

    Returns
    -------
    Adversarial ``X`` of the same type as ``X``.
    """
    eps = check_float(eps, "eps")
    norm = _check_norm(norm)
    steps = check_int(steps, "steps", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    if step_size is not None:
        step_size = check_float(step_size, "step_size")
    Xt, yt, back = _prepare(model, X, y)
    _require_differentiable(model, "pgd")
    gen = _torch_generator(seed)
    out = torch.empty_like(Xt)
    with _eval_mode(model):
        for sl in _batches(Xt.shape[0], batch_size):
            out[sl] = pgd_batch(model, Xt[sl], yt[sl], eps, norm=norm, steps=steps, step_size=step_size,
                                random_start=random_start, generator=gen, keep_best=bool(keep_best))
    return back(out)


# ---------------------------------------------------------------------------- Square attack
def _p_selection(p_init, it, n_iters):
    """The Square attack's piecewise-constant schedule of the fraction of pixels changed per
    iteration: ``p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of
    a 10000-iteration run, rescaled to ``n_iters`` (authors' ``p_selection``)."""
    it = int(it / n_iters * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init


def _image_shape(X_shape, image_shape):
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if len(shape) != 3 or min(shape) < 1 or int(np.prod(shape)) != int(np.prod(X_shape[1:])):
            raise ValueError(f"image_shape must be (h, w) or (c, h, w) with as many values as one row "
                             f"of X {tuple(X_shape[1:])}, got {image_shape!r}")
        return shape
    rest = tuple(X_shape[1:])
    if len(rest) == 1:
        side = math.isqrt(rest[0])
        if side * side == rest[0]:
            return (1, side, side)
        raise ValueError(f"cannot infer the image shape of rows of {rest[0]} features; pass "
                         "image_shape=(c, h, w)")
    if len(rest) == 2:
        return (1,) + rest
    if len(rest) == 3:
        return rest
    raise ValueError(f"cannot infer the image shape of X with shape {tuple(X_shape)}; pass image_shape")


def _margin(logits, t):
    """``logit_y - max_{j != y} logit_j`` (> 0 while correctly classified)."""
    correct = logits.gather(1, t[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, t[:, None], float("-inf"))
    return correct - other.max(dim=1).values


def square_attack(model, X, y, eps, n_queries=5000, p_init=0.8, seed=None, batch_size=1000, *,
                  image_shape=None, return_n_queries=False, progress=None):
    """The Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L-inf, untargeted.

    A score-based black-box random search that needs only the logits (it runs under
    ``torch.no_grad``), so it is unaffected by gradient masking and attacks non-differentiable
    models (:class:`~bioreps.torch_views.NumpyModule`). It follows the authors' reference
    implementation, ``square_attack_linf`` and ``p_selection`` in ``attack.py`` of
    https://github.com/max-andr/square-attack:

    - only correctly classified samples are attacked (one clean query per sample decides which);
    - initialisation with vertical stripes: every column of every channel moved by +eps or -eps
      at random (one query);
    - then, per iteration and per sample still classified correctly, a square window of side
      ``s = round(sqrt(p * h * w))`` (between 1 and ``min(h, w) - 1``) at a random position gets a
      new perturbation of +-eps per channel, redrawn until it changes the image; the candidate is
      kept if it lowers the margin loss ``logit_y - max_{j != y} logit_j``;
    - ``p`` follows the paper's schedule (:func:`_p_selection`): ``p_init`` halved at iterations
      10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, scaled by ``n_queries / 10000``;
    - a sample stops as soon as it is misclassified (margin <= 0) or its budget is spent.

    Differences from the reference: the per-sample loop is vectorised; randomness comes from a
    private NumPy Generator (``seed``) instead of the global ``np.random.seed(0)``; the redraw of
    an unchanged window is capped at 100 tries (the reference loops until success).

    Parameters
    ----------
    model : torch.nn.Module returning logits (gradients never used)
    X : array or tensor (n, ...) with values in [0, 1]
        Rows of ``c*h*w`` features (a perfect square is read as a 1 x h x h image) or images.
    y : integer labels (n,)
    eps : float >= 0
        L-inf radius.
    n_queries : int >= 1
        Model evaluations per sample (the initialisation counts as one), besides the clean one.
    p_init : float in (0, 1]
        Initial fraction of pixels changed. Default 0.8: the value of the authors' MNIST
        experiments (their result on Madry's MNIST challenge used p = 0.8) and of AutoAttack's
        standard L-inf Square attack; the paper's default for ImageNet models is 0.05.
    seed : None, int, SeedSequence or numpy Generator
    batch_size : int
        Samples attacked together (each batch runs the whole search).
    image_shape : (c, h, w) or (h, w), optional
        Spatial layout of one sample when it cannot be inferred.
    return_n_queries : bool
        Also return the number of queries used per sample (int64 (n,), 0 for the samples
        misclassified to begin with; the clean query not counted).
    progress : bool or None

    Returns
    -------
    Adversarial ``X`` (same type as ``X``); with ``return_n_queries`` a tuple ``(X_adv, n_queries)``.
    Samples misclassified from the start are returned unchanged.
    """
    eps = check_float(eps, "eps")
    n_queries = check_int(n_queries, "n_queries", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    try:
        p_init = float(p_init)
    except (TypeError, ValueError):
        raise TypeError(f"p_init must be a number, got {type(p_init).__name__}") from None
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
    Xt, yt, back = _prepare(model, X, y)
    c, h, w = _image_shape(Xt.shape, image_shape)
    if min(h, w) < 2:
        raise ValueError(f"square_attack needs images at least 2 x 2, got image shape {(c, h, w)}")
    rng = check_random_state(seed, name="seed")
    n = Xt.shape[0]
    out = Xt.clone()
    used = np.zeros(n, np.int64)
    if eps == 0:
        return (back(out), used) if return_n_queries else back(out)
    user_shape = tuple(Xt.shape[1:])
    offs = torch.arange(max(h, w), device=Xt.device)

    def query(x4):
        logits = _logits(model, x4.reshape((x4.shape[0],) + user_shape))
        return logits.to(device=Xt.device, dtype=torch.float64)

    with _eval_mode(model), torch.no_grad():
        bar = progress_bar(list(_batches(n, batch_size)), progress=progress, desc="square attack", unit="batch")
        for sl in bar:
            x_all = Xt[sl].reshape(-1, c, h, w)
            t_all = yt[sl]
            logits = query(x_all)
            _check_label_range(logits, t_all)
            ids = torch.nonzero(_margin(logits, t_all) > 0).flatten()  # attack the correct ones only
            if ids.numel() == 0:
                continue
            best = x_all.clone()  # the result of this batch
            n_used = torch.zeros(x_all.shape[0], dtype=torch.int64, device=x_all.device)
            # the samples still classified correctly, compacted: clean x, best x, label, margin
            xa, ta = x_all[ids], t_all[ids]
            # vertical stripes initialisation: each column of each channel moved by +-eps
            stripes = rng.choice([-eps, eps], size=(xa.shape[0], c, 1, w))
            xb = torch.clamp(xa + torch.as_tensor(stripes, dtype=xa.dtype, device=xa.device), 0.0, 1.0)
            ma = _margin(query(xb), ta)
            n_used[ids] += 1
            for i_iter in range(n_queries - 1):
                done = ma <= 0
                if bool(done.any()):
                    best[ids[done]] = xb[done]
                    keep = ~done
                    xa, xb, ta, ma, ids = xa[keep], xb[keep], ta[keep], ma[keep], ids[keep]
                k = xa.shape[0]
                if k == 0:
                    break
                p = _p_selection(p_init, i_iter, n_queries)
                s = int(round(math.sqrt(p * h * w)))
                s = min(max(s, 1), min(h, w) - 1)
                top = torch.as_tensor(rng.integers(0, h - s, size=k), device=xa.device)
                left = torch.as_tensor(rng.integers(0, w - s, size=k), device=xa.device)
                # flat pixel indices of each sample's s x s window, for every channel: (k, c, s*s)
                win = ((top[:, None, None] + offs[None, :s, None]) * w
                       + (left[:, None, None] + offs[None, None, :s])).reshape(k, 1, s * s).expand(k, c, s * s)
                xa_win = xa.reshape(k, c, h * w).gather(2, win)
                xb_win = xb.reshape(k, c, h * w).gather(2, win)
                # a new +-eps per channel on the window, redrawn while it leaves the image unchanged
                # (drawn 8 at a time: the first draw that changes the image is used, which has the
                # distribution of the reference's one-by-one redraws)
                cand = xb_win.clone()
                pending = torch.arange(k, device=xa.device)
                for _ in range(13):
                    signs = torch.as_tensor(rng.choice([-eps, eps], size=(pending.numel(), 8, c, 1)),
                                            dtype=xa.dtype, device=xa.device)
                    trial = torch.clamp(xa_win[pending, None] + signs, 0.0, 1.0)  # (m, 8, c, s*s)
                    changes = ((trial - xb_win[pending, None]).abs() >= 1e-7).flatten(2).any(dim=2)
                    found = changes.any(dim=1)
                    first = changes.to(torch.int8).argmax(dim=1)
                    cand[pending] = trial[torch.arange(pending.numel(), device=xa.device), first]
                    pending = pending[~found]
                    if pending.numel() == 0:
                        break
                x_new = xb.reshape(k, c, h * w).scatter(2, win, cand).reshape(k, c, h, w)
                margin = _margin(query(x_new), ta)
                n_used[ids] += 1
                improved = margin < ma
                ma = torch.where(improved, margin, ma)
                xb = torch.where(improved[:, None, None, None], x_new, xb)
            # the rest: the best point found (lowest margin, inside the ball), fooling or not
            best[ids] = xb
            out[sl] = best.reshape(Xt[sl].shape)
            used[sl] = n_used.cpu().numpy()
            bar.set_postfix(still_correct=f"{ids.numel()}")
    adv = back(out)
    return (adv, used) if return_n_queries else adv


# ---------------------------------------------------------------------------- curves
_ATTACKS = {"fgsm": fgsm, "pgd": pgd, "square": square_attack}
_GRADIENT_ATTACKS = ("fgsm", "pgd")


@dataclass
class RobustnessCurve:
    """Result of :func:`robust_accuracy_curve`.

    Attributes
    ----------
    eps : ndarray (n_eps,)
        The radii, ascending.
    clean_accuracy : float
    accuracy : dict attack name -> ndarray (n_eps,)
        Accuracy of the model on each attack's adversarial examples.
    worst_case : ndarray (n_eps,)
        Fraction of samples classified correctly clean and under every attack.
    norm : str
    attacks : tuple of str
        The attacks run.
    skipped : tuple of str
        Requested attacks not run (gradient attacks on a non-differentiable model).
    n_samples : int
    warnings : list of str
        Every warning raised during the evaluation (sanity checks failing).
    """

    eps: np.ndarray
    clean_accuracy: float
    accuracy: dict
    worst_case: np.ndarray
    norm: str
    attacks: tuple
    skipped: tuple = ()
    n_samples: int = 0
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return {"eps": self.eps.tolist(), "clean_accuracy": self.clean_accuracy,
                "accuracy": {k: v.tolist() for k, v in self.accuracy.items()},
                "worst_case": self.worst_case.tolist(), "norm": self.norm, "attacks": list(self.attacks),
                "skipped": list(self.skipped), "n_samples": self.n_samples, "warnings": list(self.warnings)}


def _check_attack_names(attacks, name="attacks"):
    if isinstance(attacks, str):
        attacks = (attacks,)
    try:
        attacks = tuple(str(a).lower() for a in attacks)
    except TypeError:
        raise TypeError(f"{name} must be a name or a sequence of names from {tuple(_ATTACKS)}") from None
    if not attacks:
        raise ValueError(f"{name} is empty")
    for a in attacks:
        if a not in _ATTACKS:
            raise ValueError(f"unknown attack {a!r} in {name}; choose from {tuple(_ATTACKS)}")
    return tuple(dict.fromkeys(attacks))


def _route_kwargs(attacks, norm, attack_kwargs):
    """Per-attack keyword arguments: ``name={...}`` goes to that attack; any other keyword goes to
    every attack accepting it (and must be accepted by at least one)."""
    per = {a: {} for a in attacks}
    shared = {}
    for key, value in attack_kwargs.items():
        if key in _ATTACKS:
            if not isinstance(value, dict):
                raise TypeError(f"{key}= must be a dict of keyword arguments for {key}, got {type(value).__name__}")
            if key in per:
                per[key].update(value)
        else:
            shared[key] = value
    for key, value in shared.items():
        takers = [a for a in attacks if key in inspect.signature(_ATTACKS[a]).parameters]
        if not takers:
            raise TypeError(f"no attack among {attacks} takes the keyword argument {key!r}")
        for a in takers:
            per[a].setdefault(key, value)
    for a in attacks:
        for bad in ("model", "X", "y", "eps", "seed", "norm", "progress"):
            if bad in per[a]:
                raise TypeError(f"{bad!r} is set by robust_accuracy_curve itself; do not pass it for {a}")
        if a == "pgd":
            per[a]["norm"] = norm
    return per


def _attack_call_kwargs(a, kwargs, seed, progress):
    params = inspect.signature(_ATTACKS[a]).parameters
    out = dict(kwargs)
    if "seed" in params:
        out["seed"] = seed
    if "progress" in params:
        out.setdefault("progress", progress)
    return out


def _curve_warnings(eps_arr, acc, worst, norm, n_features, majority):
    """The sanity checks of :func:`robust_accuracy_curve`: a list of (message, warning class)."""
    out = []
    grads = [a for a in acc if a in _GRADIENT_ATTACKS]
    for i, e in enumerate(eps_arr):
        if e == 0:
            continue
        if "square" in acc and grads:
            best_grad = min(acc[a][i] for a in grads)
            if acc["square"][i] < best_grad - 0.05:
                out.append((f"at eps={e:g} the gradient-free Square attack leaves {acc['square'][i]:.1%} accuracy "
                            f"but the best gradient attack leaves {best_grad:.1%}: the gradients are likely masked "
                            "(vanishing, quantised or obfuscated); do not trust the gradient attacks' numbers",
                            GradientMaskingWarning))
        if "fgsm" in acc and "pgd" in acc and acc["pgd"][i] > acc["fgsm"][i]:
            # PGD (keep_best, the default) is never weaker than FGSM: only weak PGD settings or masking do this
            large = acc["pgd"][i] > acc["fgsm"][i] + 0.05
            out.append((f"at eps={e:g} PGD leaves {acc['pgd'][i]:.1%} accuracy but one-step FGSM leaves "
                        f"{acc['fgsm'][i]:.1%}: PGD is weaker than a single FGSM step (too small a step size or "
                        f"too few steps, keep_best=False{', or gradient masking' if large else ''})",
                        GradientMaskingWarning if large else AttackWarning))
    for name, curve in dict(acc, **{"worst case": worst}).items():
        for i in np.flatnonzero(np.diff(curve) > 0.02):
            out.append((f"{name} accuracy rises from {curve[i]:.1%} at eps={eps_arr[i]:g} to {curve[i + 1]:.1%} "
                        f"at eps={eps_arr[i + 1]:g}: a stronger attacker should never do worse; the attack is "
                        "failing (gradient masking, too few steps/queries)", GradientMaskingWarning))
    grey_eps = 0.5 if norm == "linf" else 0.5 * math.sqrt(n_features)
    big = np.flatnonzero(eps_arr >= grey_eps)
    if big.size and worst[big[-1]] > majority + 0.05:
        out.append((f"at eps={eps_arr[big[-1]]:g} every input can be moved to the uniform grey image, so no "
                    f"model can beat the majority-class rate {majority:.1%}, yet {worst[big[-1]]:.1%} of the "
                    "samples survive: the attacks are failing (gradient masking)", GradientMaskingWarning))
    return out


def robust_accuracy_curve(model, X, y, eps_list, attacks=("fgsm", "pgd"), norm="linf", seed=None, *,
                          progress=None, **attack_kwargs):
    """Accuracy under attack as a function of the radius eps, with built-in sanity checks.

    Parameters
    ----------
    model : torch.nn.Module returning logits
    X, y : inputs in [0, 1] and integer labels
    eps_list : sequence of float >= 0
        Radii (sorted ascending, duplicates dropped).
    attacks : sequence of {"fgsm", "pgd", "square"}
        "fgsm" and "square" are L-inf attacks. Gradient attacks are skipped, with a warning, for
        a model marked ``differentiable = False``.
    norm : {"linf", "l2"}
    seed : None or int
        Passed unchanged to every attack call, so any point can be reproduced by calling the
        attack itself with the same seed.
    progress : bool or None
    **attack_kwargs
        ``pgd={"steps": 100}``, ``square={"n_queries": 1000}`` go to one attack; any other keyword
        (``batch_size=512``) goes to every attack that accepts it.

    Returns
    -------
    RobustnessCurve

    Sanity checks
    -------------
    - Every attack is run at eps = 0 (whether or not 0 is in ``eps_list``) and must give exactly
      the clean accuracy; otherwise ``RuntimeError`` (the model is not deterministic in eval
      mode, or an attack moves points it should not).
    - :class:`AttackWarning` (also listed in ``result.warnings``) when, at some eps, PGD leaves a
      higher accuracy than one-step FGSM: the default PGD (``keep_best``) is never weaker than
      FGSM, so this means weak PGD settings (``pgd={"step_size": ...}`` too small for ``steps``,
      ``keep_best=False``) or, when the gap exceeds 5 points, gradient masking
      (:class:`GradientMaskingWarning`, a subclass).
    - :class:`GradientMaskingWarning` (also listed in ``result.warnings``) when, at some eps,
      the gradient-free Square attack beats the best gradient attack by more than 5 points;
      when a curve rises with eps by more than 2 points; and when, at an eps large enough to
      move every input to the uniform grey image (L-inf eps >= 0.5, L2 eps >= 0.5 sqrt(d)), the
      worst-case accuracy stays more than 5 points above the majority-class rate.
    """
    norm = _check_norm(norm)
    attacks = _check_attack_names(attacks)
    eps_arr = np.asarray(eps_list, dtype=np.float64).reshape(-1) if not np.isscalar(eps_list) else \
        np.asarray([eps_list], dtype=np.float64)
    if eps_arr.size == 0:
        raise ValueError("eps_list is empty")
    if not np.all(np.isfinite(eps_arr)) or np.any(eps_arr < 0):
        raise ValueError(f"eps_list must hold finite numbers >= 0, got {eps_arr.tolist()}")
    eps_arr = np.unique(eps_arr)
    if norm == "l2":
        linf_only = [a for a in attacks if a in ("fgsm", "square")]
        if linf_only:
            raise ValueError(f"attacks {linf_only} are L-inf attacks; with norm='l2' use attacks=('pgd',)")
    Xt, yt, _ = _prepare(model, X, y)
    messages = []

    def warn(msg, category=GradientMaskingWarning):
        messages.append(msg)
        warnings.warn(msg, category, stacklevel=3)

    skipped = ()
    if not _differentiable(model):
        skipped = tuple(a for a in attacks if a in _GRADIENT_ATTACKS)
        attacks = tuple(a for a in attacks if a not in _GRADIENT_ATTACKS)
        if skipped:
            if not attacks:
                raise ValueError(f"{type(model).__name__} is not differentiable, so none of the requested "
                                 f"attacks {skipped} can run; use attacks=('square',)")
            warn(f"{type(model).__name__} is not differentiable: skipping the gradient attacks {skipped}",
                 UserWarning)
    kwargs = _route_kwargs(attacks, norm, attack_kwargs)
    kwargs = {a: _attack_call_kwargs(a, kw, seed, progress) for a, kw in kwargs.items()}
    batch_size = attack_kwargs.get("batch_size", _DEFAULT_BATCH)
    batch_size = check_int(batch_size, "batch_size", 1)

    clean_correct = (_predict(model, Xt, batch_size) == yt).cpu().numpy()
    n = Xt.shape[0]
    clean_acc = float(clean_correct.mean())
    acc = {a: np.zeros(eps_arr.size) for a in attacks}
    worst = np.zeros(eps_arr.size)
    grid = [0.0] + [float(e) for e in eps_arr if e > 0]
    bar = progress_bar(total=len(grid) * len(attacks), progress=progress, desc="robust accuracy")
    for e in grid:
        survive = clean_correct.copy()
        per_attack = {}
        for a in attacks:
            X_adv = _ATTACKS[a](model, Xt, yt, e, **kwargs[a])
            if isinstance(X_adv, tuple):
                X_adv = X_adv[0]
            ok = (_predict(model, X_adv, batch_size) == yt).cpu().numpy()
            per_attack[a] = float(ok.mean())
            survive &= ok
            bar.update(1)
        if e == 0.0:
            for a, v in per_attack.items():
                if v != clean_acc:
                    raise RuntimeError(f"{a} at eps = 0 gives accuracy {v:.4f} but the clean accuracy is "
                                       f"{clean_acc:.4f}: the model is not deterministic in eval mode "
                                       "(or the attack moved points at eps = 0)")
        hits = np.flatnonzero(eps_arr == e)
        if hits.size:
            for a, v in per_attack.items():
                acc[a][hits[0]] = v
            worst[hits[0]] = float(survive.mean())
    bar.close()

    majority = float(np.bincount(yt.cpu().numpy()).max() / n)
    for msg, category in _curve_warnings(eps_arr, acc, worst, norm, int(np.prod(Xt.shape[1:])), majority):
        warn(msg, category)

    return RobustnessCurve(eps=eps_arr, clean_accuracy=clean_acc, accuracy=acc, worst_case=worst, norm=norm,
                           attacks=attacks, skipped=skipped, n_samples=n, warnings=messages)


def plot_robust_accuracy(result, path=None, *, title=None):
    """Plot a :class:`RobustnessCurve`: one line per attack, the worst case in bold, the clean
    accuracy dashed. Returns the matplotlib ``Figure`` (Agg canvas; saved to ``path`` if given)."""
    if not isinstance(result, RobustnessCurve):
        raise TypeError(f"result must be a RobustnessCurve, got {type(result).__name__}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in result.accuracy.items():
        ax.plot(result.eps, curve, marker="o", ms=3, lw=1.2, label=name.upper() if name != "square" else "Square")
    ax.plot(result.eps, result.worst_case, color="k", lw=2.2, label="worst case")
    ax.axhline(result.clean_accuracy, color="grey", ls="--", lw=1, label="clean")
    ax.set_xlabel(f"eps ({'L-inf' if result.norm == 'linf' else 'L2'})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"robust accuracy ({result.n_samples} samples)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


# ---------------------------------------------------------------------------- transfer
@dataclass
class TransferResult:
    """Result of :func:`transfer_matrix`.

    ``matrix[i, j]`` is the accuracy of model ``names[j]`` on adversarial examples crafted on
    model ``names[i]`` (the diagonal is white-box accuracy; a row is NaN when its source model
    could not be attacked, e.g. a gradient attack on a non-differentiable model).
    """

    names: list
    matrix: np.ndarray
    clean_accuracy: np.ndarray
    eps: float
    attack: str


def transfer_matrix(models, X, y, eps, attack="pgd", seed=None, *, batch_size=_DEFAULT_BATCH, progress=None,
                    **kw):
    """Transfer of adversarial examples between models (Szegedy et al. 2013).

    Parameters
    ----------
    models : dict name -> torch.nn.Module, or a sequence of modules (named "model0", ...)
    X, y : inputs in [0, 1] and integer labels
    eps : float >= 0
    attack : {"pgd", "fgsm", "square"}
    seed : None or int
        Passed to the attack on every source model (so the diagonal equals
        ``accuracy(m, attack(m, X, y, eps, seed=seed))``).
    batch_size : int
    **kw
        More arguments of the attack (``norm``, ``steps``, ``n_queries``, ...).

    Returns
    -------
    TransferResult
    """
    if isinstance(models, dict):
        names, mods = [str(k) for k in models], list(models.values())
    elif isinstance(models, torch.nn.Module):
        raise TypeError("models must be a dict name -> module or a sequence of modules, not one module")
    else:
        try:
            mods = list(models)
        except TypeError:
            raise TypeError(f"models must be a dict name -> module or a sequence of modules, "
                            f"got {type(models).__name__}") from None
        names = [f"model{i}" for i in range(len(mods))]
    if not mods:
        raise ValueError("models is empty")
    for name, m in zip(names, mods):
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"models[{name!r}] must be a torch.nn.Module, got {type(m).__name__}")
    (attack,) = _check_attack_names(attack, name="attack")
    eps = check_float(eps, "eps")
    fn = _ATTACKS[attack]
    for key in kw:
        if key not in inspect.signature(fn).parameters or key in ("model", "X", "y", "eps", "seed", "progress"):
            raise TypeError(f"{attack} does not take the keyword argument {key!r}")
    clean = np.array([accuracy(m, X, y, batch_size) for m in mods])
    k = len(mods)
    matrix = np.full((k, k), np.nan)
    for i, src in enumerate(progress_bar(mods, desc="transfer", progress=progress)):
        if attack in _GRADIENT_ATTACKS and not _differentiable(src):
            warnings.warn(f"model {names[i]!r} is not differentiable: no {attack} examples crafted on it "
                          "(its row is NaN); use attack='square'", UserWarning, stacklevel=2)
            continue
        extra = {"seed": seed} if "seed" in inspect.signature(fn).parameters else {}
        if "progress" in inspect.signature(fn).parameters:
            extra["progress"] = progress
        X_adv = fn(src, X, y, eps, batch_size=batch_size, **extra, **kw)
        for j, dst in enumerate(mods):
            matrix[i, j] = accuracy(dst, X_adv, y, batch_size)
    return TransferResult(names=names, matrix=matrix, clean_accuracy=clean, eps=eps, attack=attack)


# ---------------------------------------------------------------------------- critical perturbations
_CRITICAL_ATTACKS = ("fgsm", "pgd", "square", "noise")


def _noise(model, X, y, eps, *, seed=None, batch_size=_DEFAULT_BATCH):
    """The random-noise baseline of :func:`critical_perturbation`: every feature moved by +eps or
    -eps (a fair coin per feature), then clipped to [0, 1]. ``X`` is a float tensor on the model's
    device; signs come from a private CPU ``torch.Generator`` (``seed``), drawn batch by batch."""
    gen = _torch_generator(seed)
    out = torch.empty_like(X)
    for sl in _batches(X.shape[0], batch_size):
        signs = torch.randint(0, 2, X[sl].shape, generator=gen).to(device=X.device, dtype=X.dtype) * 2 - 1
        out[sl] = torch.clamp(X[sl] + eps * signs, 0.0, 1.0)
    return out


def _critical_grid(eps_list, name="eps_list"):
    """``eps_list`` as a float64 array: non-empty, finite, >= 0, strictly ascending, with at
    least one eps > 0 (ValueError naming the offending value otherwise)."""
    try:
        arr = np.asarray(eps_list, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(eps_list).__name__}") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    values = arr.tolist()
    for i, e in enumerate(values):
        if not math.isfinite(e) or e < 0:
            raise ValueError(f"{name} must hold finite numbers >= 0; {name}[{i}] is {e!r}")
        if i and e <= values[i - 1]:
            what = "a duplicate" if e == values[i - 1] else "smaller than the one before it"
            raise ValueError(f"{name} must be strictly ascending; {name}[{i}] = {e!r} is {what} "
                             f"({name}[{i - 1}] = {values[i - 1]!r})")
    return arr


def _jsonable(a):
    """A list of floats for JSON: inf as the string "inf" (or "-inf"), NaN as None."""
    return [None if math.isnan(v) else (("inf" if v > 0 else "-inf") if math.isinf(v) else float(v))
            for v in np.asarray(a, dtype=np.float64).tolist()]


@dataclass
class CriticalPerturbation:
    """Result of :func:`critical_perturbation`: the smallest flipping eps of each image.

    Attributes
    ----------
    eps : ndarray (n_eps,)
        The grid as given (strictly ascending; an eps of 0 is kept here but never attacked).
    attack : str
        "fgsm", "pgd", "square" or "noise".
    norm : str
        The norm of the eps-balls ("linf" or "l2"; only PGD runs in L2).
    indices : ndarray int64 (n_kept,)
        Rows of ``X`` that were attacked: the correctly classified ones (with ``only_correct``),
        else all rows.
    critical_eps : ndarray float64 (n_kept,)
        Per kept image, the first grid eps at which the attack misclassified it; ``inf`` if no
        grid eps did; ``0`` for an image misclassified clean (only with ``only_correct=False``).
    l2 : ndarray float64 (n_kept,)
        ``||x_adv - x||_2`` over all features of the flipping adversarial example (the critical
        perturbation); ``inf`` where ``critical_eps`` is inf, ``0`` where it is 0.
    n_images : int
        Rows of ``X`` before filtering.
    clean_accuracy : float
        Accuracy on all ``n_images`` rows.
    """

    eps: np.ndarray
    attack: str
    norm: str
    indices: np.ndarray
    critical_eps: np.ndarray
    l2: np.ndarray
    n_images: int
    clean_accuracy: float

    def relative_accuracy(self):
        """Per eps of the grid, the fraction of kept images with ``critical_eps > eps``.

        An image counts as flipped from its first flipping eps on, so this is the accuracy under
        the strongest of the attacks run at radii up to eps (the best attack within each budget),
        non-increasing in eps. With ``only_correct`` (the paper's relative accuracy) it is 1.0 at
        eps 0; with ``only_correct=False`` it is the plain robust accuracy (the clean accuracy at
        eps 0). NaN everywhere when no image was kept.
        """
        if self.critical_eps.size == 0:
            return np.full(self.eps.shape, np.nan)
        return (self.critical_eps[None, :] > self.eps[:, None]).mean(axis=1)

    def median_l2(self):
        """Median of ``l2`` over the kept images: ``inf`` when at least half of them were never
        flipped on the grid; NaN when no image was kept."""
        return float(np.median(self.l2)) if self.l2.size else math.nan

    def eps_at_level(self, level=0.5):
        """:func:`eps_at_level` of :meth:`relative_accuracy` over :attr:`eps` (the paper's summary:
        the eps where the relative accuracy falls to 50%)."""
        return eps_at_level(self.eps, self.relative_accuracy(), level)

    def to_dict(self):
        """A JSON-able dict of every field plus ``relative_accuracy`` and ``median_l2``. Infinite
        values (never-flipped images) are written as the string ``"inf"`` (``float("inf")`` reads
        it back), NaN as ``None``; the result passes ``json.dumps(..., allow_nan=False)``."""
        median = self.median_l2()
        return {"eps": _jsonable(self.eps), "attack": self.attack, "norm": self.norm,
                "indices": [int(i) for i in self.indices], "critical_eps": _jsonable(self.critical_eps),
                "l2": _jsonable(self.l2), "n_images": int(self.n_images),
                "clean_accuracy": float(self.clean_accuracy),
                "relative_accuracy": _jsonable(self.relative_accuracy()), "median_l2": _jsonable([median])[0]}


def critical_perturbation(model, X, y, eps_list, attack="pgd", *, norm="linf", seed=None, steps=20,
                          batch_size=_DEFAULT_BATCH, n_queries=1000, only_correct=True, image_shape=None,
                          progress=None):
    """Per image, the smallest eps of a grid at which an attack flips it, and the L2 norm of that
    critical perturbation (the protocol of Holzhausen et al. 2024, arXiv:2405.00679).

    Only the images the model classifies correctly are attacked (``only_correct``; their rows are
    :attr:`CriticalPerturbation.indices`), so the curve :meth:`CriticalPerturbation.relative_accuracy`
    starts at 1.0. For each eps > 0 of the ascending grid, the attack runs on the kept images not
    flipped yet; those it misclassifies get ``critical_eps = eps`` and ``l2 = ||x_adv - x||_2``
    (float64, over all features; for L-inf attacks at most ``eps * sqrt(d)``). Images never
    flipped get ``inf`` for both. Since an image counts as flipped from its first flipping eps
    on, ``relative_accuracy()[i]`` (fraction with ``critical_eps > eps[i]``) is the accuracy under
    the best attack within each budget, non-increasing in eps, even where a single attack run at
    a larger eps would miss an image a smaller one fooled (a random start, the noise baseline).

    Parameters
    ----------
    model : torch.nn.Module returning logits
    X, y : inputs in [0, 1] and integer labels
    eps_list : sequence of float >= 0
        Strictly ascending radii (ValueError naming an unsorted, duplicate, negative or non-finite
        value; unlike :func:`robust_accuracy_curve` the grid is not sorted for you, since the
        order defines "first"). An eps of 0 may be listed (its relative accuracy is 1.0) but is
        not attacked; at least one eps must be > 0.
    attack : {"pgd", "fgsm", "square", "noise"}
        "pgd": :func:`pgd` with ``steps`` and its other defaults (``keep_best``, random start),
        so never weaker than FGSM. "fgsm": :func:`fgsm`. "square": the gradient-free
        :func:`square_attack` with ``n_queries``, for models marked ``differentiable = False``.
        "noise": the random-noise baseline, every feature moved by +eps or -eps with a fair
        coin, clipped to [0, 1] (no model gradients; applies to any model). Gradient attacks on a
        non-differentiable model raise the ``TypeError`` of :func:`fgsm` / :func:`pgd`.
    norm : {"linf", "l2"}
        "l2" only for "pgd"; the other attacks are L-inf.
    seed : None, int or SeedSequence
        The attack at grid position ``i`` gets child ``i`` of ``SeedSequence(seed).spawn(len(eps))``
        (PGD's random start, the Square attack's search, the noise signs), so a fixed seed gives
        identical results (a SeedSequence is not advanced: passing it again repeats the run);
        they also depend on the grid and ``batch_size``. "fgsm" uses no seed.
    steps : int >= 0
        PGD iterations (the paper uses 20).
    batch_size : int
        Samples per forward/backward pass (and per Square-attack search).
    n_queries : int >= 1
        Square-attack queries per image and eps.
    only_correct : bool
        Attack only the correctly classified images (default, the paper's relative accuracy).
        With False every row is kept; those misclassified clean get ``critical_eps = l2 = 0``.
    image_shape : (c, h, w) or (h, w), optional
        For "square" when the image shape cannot be inferred from ``X``.
    progress : bool or None

    Returns
    -------
    CriticalPerturbation
    """
    attack_name = str(attack).lower()
    if attack_name not in _CRITICAL_ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {_CRITICAL_ATTACKS}")
    norm = _check_norm(norm)
    if norm == "l2" and attack_name != "pgd":
        raise ValueError(f"attack {attack_name!r} is an L-inf attack; with norm='l2' use attack='pgd'")
    eps_arr = _critical_grid(eps_list)
    if not np.any(eps_arr > 0):
        raise ValueError(f"eps_list has no eps > 0 to attack with: {eps_arr.tolist()}")
    steps = check_int(steps, "steps", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    n_queries = check_int(n_queries, "n_queries", 1)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {int(seed)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence))):
        raise TypeError(f"seed must be None, an int or a SeedSequence, got {type(seed).__name__}")
    Xt, yt, _ = _prepare(model, X, y)
    if attack_name in _GRADIENT_ATTACKS:
        _require_differentiable(model, attack_name)
    # the children of `seed` without spawning from it (spawn would change a caller's SeedSequence)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    children = [np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (i,),
                                       pool_size=root.pool_size) for i in range(eps_arr.size)]

    n = Xt.shape[0]
    pred = torch.empty(n, dtype=torch.int64, device=Xt.device)
    with _eval_mode(model), torch.no_grad():
        for sl in _batches(n, batch_size):
            logits = _logits(model, Xt[sl])
            _check_label_range(logits, yt[sl])
            pred[sl] = logits.argmax(dim=1).to(Xt.device)
    correct = (pred == yt).cpu().numpy()
    indices = np.flatnonzero(correct) if only_correct else np.arange(n)
    crit = np.where(correct[indices], math.inf, 0.0)
    l2 = crit.copy()

    def run(Xs, ys, e, child):
        if attack_name == "noise":
            return _noise(model, Xs, ys, e, seed=child, batch_size=batch_size)
        if attack_name == "fgsm":
            return fgsm(model, Xs, ys, e, batch_size=batch_size)
        if attack_name == "pgd":
            return pgd(model, Xs, ys, e, norm=norm, steps=steps, seed=child, batch_size=batch_size)
        return square_attack(model, Xs, ys, e, n_queries=n_queries, seed=child, batch_size=batch_size,
                             image_shape=image_shape, progress=progress)

    positions = [i for i, e in enumerate(eps_arr) if e > 0]
    bar = progress_bar(positions, progress=progress, desc=f"critical eps ({attack_name})")
    for i in bar:
        alive = np.flatnonzero(np.isinf(crit))  # positions in `indices` not flipped yet
        if alive.size == 0:
            break
        rows = torch.as_tensor(indices[alive], device=Xt.device)
        Xs, ys = Xt[rows], yt[rows]
        X_adv = run(Xs, ys, float(eps_arr[i]), children[i])
        flipped = (_predict(model, X_adv, batch_size) != ys).cpu().numpy()
        if flipped.any():
            hit = torch.as_tensor(np.flatnonzero(flipped), device=Xt.device)
            delta = (X_adv[hit].to(torch.float64) - Xs[hit].to(torch.float64)).reshape(hit.numel(), -1)
            crit[alive[flipped]] = eps_arr[i]
            l2[alive[flipped]] = delta.norm(dim=1).cpu().numpy()
        bar.set_postfix(unflipped=int(np.isinf(crit).sum()))
    bar.close()
    return CriticalPerturbation(eps=eps_arr, attack=attack_name, norm=norm, indices=indices.astype(np.int64),
                                critical_eps=crit, l2=l2, n_images=n, clean_accuracy=float(correct.mean()))


def eps_at_level(eps, accuracy, level=0.5):
    """The eps at which an accuracy curve first falls to ``level`` or below, with its bracket.

    Let ``i`` be the first grid point with ``accuracy[i] <= level``. Between the bracketing grid
    points ``lo = eps[i-1]`` (accuracy above ``level``) and ``hi = eps[i]`` the crossing is
    interpolated linearly in ``log(eps)`` (the grids of robustness curves are roughly geometric),
    or linearly in eps when ``lo`` is 0. A curve that rises again after falling is judged by its
    first crossing.

    Returns
    -------
    dict with
        ``eps``: the interpolated crossing (float; ``inf`` when censored "above");
        ``lo``, ``hi``: the grid points bracketing the crossing (the resolution of ``eps``);
        ``censored``: ``None`` when two grid points > 0 bracket the crossing; ``"below"`` when the
        first grid point > 0 is already at or below ``level`` (the crossing lies in
        ``[0, hi]``, ``lo = 0``, which a log-scale grid cannot resolve; ``eps`` is then the linear
        interpolation from an eps-0 point above ``level`` if the grid has one, else ``hi``; if
        the curve is at or below ``level`` at eps 0 itself, ``eps = lo = hi = 0``); ``"above"``
        when no grid point reaches ``level`` (``eps = hi = inf``, ``lo = eps[-1]``).

    Raises ``ValueError`` for curves of different lengths, an eps grid that is empty, negative,
    non-finite or not strictly ascending, non-finite accuracies, or ``level`` outside (0, 1).
    """
    eps_arr = _critical_grid(eps, name="eps")
    try:
        acc = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"accuracy must be a sequence of numbers, got {type(accuracy).__name__}") from None
    if acc.size != eps_arr.size:
        raise ValueError(f"accuracy has {acc.size} values but eps has {eps_arr.size}")
    bad = np.flatnonzero(~np.isfinite(acc))
    if bad.size:
        raise ValueError(f"accuracy must be finite; accuracy[{bad[0]}] is {float(acc[bad[0]])!r}")
    level = check_float(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    below = np.flatnonzero(acc <= level)
    if below.size == 0:
        return {"eps": math.inf, "lo": float(eps_arr[-1]), "hi": math.inf, "censored": "above"}
    i = int(below[0])
    hi = float(eps_arr[i])
    if i == 0:
        return {"eps": hi, "lo": 0.0, "hi": hi, "censored": "below"}
    lo = float(eps_arr[i - 1])
    t = (acc[i - 1] - level) / (acc[i - 1] - acc[i])  # in (0, 1]: acc[i-1] > level >= acc[i]
    if lo == 0:
        return {"eps": float(t * hi), "lo": 0.0, "hi": hi, "censored": "below"}
    return {"eps": float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))), "lo": lo, "hi": hi,
            "censored": None}
