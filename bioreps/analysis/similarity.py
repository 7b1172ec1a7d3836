"""Similarity of representations: CKA (linear/RBF, debiased, minibatch) and RSA.

Centered kernel alignment
-------------------------
Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of neural network representations
revisited" (ICML). For two representations of the same ``n`` inputs, ``X`` (n, d1) and
``Y`` (n, d2), with Gram matrices ``K`` and ``L`` and ``H = I - 11^T / n``::

    CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)

:func:`cka` reproduces the reference functions of github.com/google-research/google-research,
``representation_similarity/Demo.ipynb`` (``gram_linear``, ``gram_rbf``, ``center_gram``,
``cka``, ``feature_space_linear_cka``):

- linear kernel: computed in feature space, ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on
  column-centred data, when ``d1 + d2 < n`` (cheaper), else from the Gram matrices;
- RBF kernel ``exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma = sigma_frac * median
  distance``, where, as in ``gram_rbf(x, threshold)``, the median is taken over all ``n**2``
  entries of the squared-distance matrix (zero diagonal included) and ``sigma**2 =
  sigma_frac**2 * median(squared distances)``; the default ``sigma_frac=0.5`` is the paper's;
- ``debiased=True`` replaces all three HSIC values (numerator and both normalisers) by the
  unbiased estimator of Song et al. (2012) (``center_gram(unbiased=True)`` in Gram space,
  ``_debiased_dot_product_similarity_helper`` in feature space). Debiased CKA is close to 0 for
  independent representations even when units greatly outnumber samples, where biased CKA is
  not; it may be slightly negative.

Minibatch CKA
-------------
Nguyen, Raghu & Kornblith (2021), "Do wide and deep networks learn the same things?" (ICLR):
for minibatches ``i`` with Gram matrices ``K_i``, ``L_i``::

    CKA_mb = sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) * sum_i HSIC_1(L_i, L_i))

with ``HSIC_1`` the unbiased estimator (Song et al. 2012), ``HSIC_1(K, L) = [tr(K~ L~) +
1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3))`` (``K~``: K with its
diagonal set to 0). Averaging unbiased estimates keeps the estimate unbiased, so memory is one
minibatch's, whatever ``n``. Use :func:`minibatch_cka` on an iterable of ``(X_i, Y_i)`` batches,
or ``cka(X, Y, batch_size=...)``. With one batch it equals the full debiased CKA.

RSA
---
Kriegeskorte, Mur & Bandettini (2008), "Representational similarity analysis": the correlation
of the two representational dissimilarity matrices' upper triangles (:func:`rsa`).
:func:`rsa_matrix` compares several representations, computing each one's RDM once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from .._validation import check_random_state
from ..plots import save_figure
from ._common import as_matrix, open_rows

__all__ = ["cka", "cka_matrix", "minibatch_cka", "plot_cka_matrix", "rsa", "rsa_matrix"]

_KERNELS = ("linear", "rbf")


# --------------------------------------------------------------------------------------------
# Kernels and HSIC
# --------------------------------------------------------------------------------------------

def _gram_linear(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def _gram_rbf(x: np.ndarray, sigma_frac: float, name: str) -> np.ndarray:
    dots = x @ x.T
    sq_norms = np.diag(dots)
    sq_dist = -2 * dots + sq_norms[:, None] + sq_norms[None, :]
    sq_median = np.median(sq_dist)
    if not sq_median > 0:
        raise ValueError(f"{name}: the median pairwise distance is 0 (most rows are identical), "
                         f"so the RBF bandwidth is undefined")
    return np.exp(-sq_dist / (2 * sigma_frac ** 2 * sq_median))


def _center_gram(gram: np.ndarray, unbiased: bool) -> np.ndarray:
    """Kornblith's ``center_gram``: H K H, or the U-centred matrix (Szekely & Rizzo 2014)."""
    gram = np.array(gram, dtype=np.float64)
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = gram.mean(axis=0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _debiased_dot(xty, ssr_x, ssr_y, sqn_x, sqn_y, n):
    """Unbiased linear HSIC times n(n-3), from feature-space quantities (Kornblith's helper)."""
    return xty - n / (n - 2.0) * ssr_x.dot(ssr_y) + sqn_x * sqn_y / ((n - 1) * (n - 2))


def _linear_xy(x: np.ndarray, y: np.ndarray, unbiased: bool) -> float:
    """Scaled linear HSIC term between column-centred x and y (feature or Gram space)."""
    n, d1 = x.shape
    if d1 + y.shape[1] < n:
        xy = np.sum((x.T @ y) ** 2)
        if unbiased:
            ssr_x = np.einsum("ij,ij->i", x, x)
            ssr_y = np.einsum("ij,ij->i", y, y)
            xy = _debiased_dot(xy, ssr_x, ssr_y, ssr_x.sum(), ssr_y.sum(), n)
        return float(xy)
    return float(np.sum(_center_gram(_gram_linear(x), unbiased)
                        * _center_gram(_gram_linear(y), unbiased)))


def _linear_terms(x: np.ndarray, y: np.ndarray, unbiased: bool):
    """(xy, xx, yy) scaled HSIC terms of a linear kernel; x, y already column-centred."""
    n, d1 = x.shape
    d2 = y.shape[1]
    if d1 + d2 < n:
        return (_linear_xy(x, y, unbiased), _linear_xy(x, x, unbiased),
                _linear_xy(y, y, unbiased))
    return _gram_terms(_gram_linear(x), _gram_linear(y), unbiased)


def _gram_terms(kx: np.ndarray, ky: np.ndarray, unbiased: bool):
    cx = _center_gram(kx, unbiased)
    cy = _center_gram(ky, unbiased)
    return np.sum(cx * cy), np.sum(cx * cx), np.sum(cy * cy)


def _terms(x, y, kernel, unbiased, sigma_frac, names=("X", "Y")):
    if kernel == "linear":
        x = x - x.mean(axis=0)
        y = y - y.mean(axis=0)
        return _linear_terms(x, y, unbiased)
    return _gram_terms(_gram_rbf(x, sigma_frac, names[0]), _gram_rbf(y, sigma_frac, names[1]),
                       unbiased)


def _ratio(xy, xx, yy, names=("X", "Y")) -> float:
    for value, name in ((xx, names[0]), (yy, names[1])):
        if value == 0:
            raise ValueError(f"{name} has no variance under this kernel (all rows equal?); "
                             f"CKA is undefined")
    if xx < 0 or yy < 0:
        warnings.warn("an unbiased HSIC(X, X) or HSIC(Y, Y) estimate is negative (too few "
                      "samples?); debiased CKA is undefined and returned as NaN",
                      RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(xy / np.sqrt(xx * yy))


# --------------------------------------------------------------------------------------------
# Public CKA
# --------------------------------------------------------------------------------------------

def _check_kernel(kernel, sigma_frac):
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    if kernel == "rbf" and not (np.isfinite(sigma_frac) and sigma_frac > 0):
        raise ValueError(f"sigma_frac must be a positive number, got {sigma_frac!r}")


def _check_pair(a, b, names=("X", "Y")):
    if a.n_samples != b.n_samples:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of samples "
                         f"(rows), got {a.n_samples} and {b.n_samples}")


def cka(X, Y, kernel="linear", debiased=False, sigma_frac=0.5, *, batch_size=None,
        shuffle=False, seed=None, split=None) -> float:
    """Centered kernel alignment of two representations of the same inputs.

    Parameters
    ----------
    X : array (n, d1), torch tensor, Representation, BiorepsFile or path
    Y : array (n, d2), same forms; the rows must be the same inputs in the same order
    kernel : {"linear", "rbf"}
    debiased : bool
        Use the unbiased HSIC estimator in numerator and denominator (needs n >= 4).
    sigma_frac : float
        RBF bandwidth as a fraction of the median pairwise distance (module docstring).
    batch_size : int, optional
        Minibatch CKA (Nguyen et al. 2021) over consecutive batches of at most ``batch_size``
        rows (the rows are split into ``ceil(n / batch_size)`` nearly equal batches, each of at
        least 4 rows). Minibatch CKA always uses the unbiased HSIC_1, so ``debiased`` is
        ignored; with the RBF kernel each batch uses its own median bandwidth. Representations
        on disk are then read one batch at a time.
    shuffle : bool
        With ``batch_size``, assign rows to batches at random (``seed``) instead of in order.
    seed : int, Generator or None
    split : str, optional
        The representation to read when X/Y are files or paths.

    Returns
    -------
    float
        In [0, 1] for the biased estimator (1 for identical representations); the debiased
        and minibatch estimates can be slightly negative.
    """
    _check_kernel(kernel, sigma_frac)
    with open_rows(X, name="X", split=split) as a, open_rows(Y, name="Y", split=split) as b:
        _check_pair(a, b)
        n = a.n_samples
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
                raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
            k = -(-n // int(batch_size)) if batch_size >= 1 else 0
            if batch_size < 4 or n // max(k, 1) < 4:
                raise ValueError(f"batch_size must give batches of at least 4 rows for the "
                                 f"unbiased HSIC; got batch_size={batch_size} for n={n}")
            if shuffle:
                order = check_random_state(seed, name="seed").permutation(n)
                xa, ya = a.to_numpy(), b.to_numpy()
                batches = ((xa[idx], ya[idx]) for idx in np.array_split(order, k))
            else:
                bounds = np.linspace(0, n, k + 1).round().astype(int)
                batches = ((a.read(lo, hi), b.read(lo, hi))
                           for lo, hi in zip(bounds[:-1], bounds[1:]))
            return minibatch_cka(batches, kernel=kernel, sigma_frac=sigma_frac)
        if n < (4 if debiased else 2):
            raise ValueError(f"X has {n} samples; CKA needs at least {4 if debiased else 2}"
                             f"{' for the debiased estimator' if debiased else ''}")
        x, y = a.to_numpy(), b.to_numpy()
    return _ratio(*_terms(x, y, kernel, debiased, sigma_frac))


def minibatch_cka(batches: Iterable, kernel="linear", sigma_frac=0.5) -> float:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021) from an iterable of ``(X_i, Y_i)``.

    Each batch contributes its unbiased ``HSIC_1`` (module docstring) to three running sums, so
    the batches can be streamed (e.g. computed from a data loader) without ever holding all
    rows. Batch ``i`` needs at least 4 rows; batches may differ in size (each HSIC_1 is
    normalised by its own ``n_i (n_i - 3)``).

    Returns
    -------
    float
    """
    _check_kernel(kernel, sigma_frac)
    sxy = sxx = syy = 0.0
    count = 0
    for i, pair in enumerate(batches):
        try:
            xb, yb = pair
        except (TypeError, ValueError):
            raise TypeError(f"batch {i} must be a pair (X_i, Y_i)") from None
        xb = as_matrix(xb, name=f"X (batch {i})")
        yb = as_matrix(yb, name=f"Y (batch {i})")
        if xb.shape[0] != yb.shape[0]:
            raise ValueError(f"batch {i}: X and Y must have the same number of rows, got "
                             f"{xb.shape[0]} and {yb.shape[0]}")
        m = xb.shape[0]
        if m < 4:
            raise ValueError(f"batch {i} has {m} rows; the unbiased HSIC needs at least 4")
        xy, xx, yy = _terms(xb, yb, kernel, True, sigma_frac,
                            names=(f"X (batch {i})", f"Y (batch {i})"))
        scale = m * (m - 3.0)
        sxy += xy / scale
        sxx += xx / scale
        syy += yy / scale
        count += 1
    if count == 0:
        raise ValueError("batches is empty")
    return _ratio(sxy, sxx, syy)


def cka_matrix(reps, kernel="linear", debiased=False, sigma_frac=0.5, *, batch_size=None,
               split=None) -> np.ndarray:
    """CKA between every pair of representations (e.g. the layers of one or two models).

    Parameters
    ----------
    reps : list or dict name -> representation (array, tensor, Representation)
        All with the same samples (rows) in the same order; the matrix follows the list/dict
        order.
    kernel, debiased, sigma_frac, batch_size : see :func:`cka`

    Returns
    -------
    ndarray of float64, shape (k, k)
        Symmetric, with exactly 1 on the diagonal.
    """
    items = list(reps.values()) if isinstance(reps, Mapping) else list(reps)
    names = [str(k) for k in reps] if isinstance(reps, Mapping) else [f"reps[{i}]"
                                                                      for i in range(len(items))]
    if not items:
        raise ValueError("reps is empty")
    _check_kernel(kernel, sigma_frac)
    k = len(items)
    M = np.eye(k)
    if batch_size is not None:
        for i in range(k):
            for j in range(i + 1, k):
                M[i, j] = M[j, i] = cka(items[i], items[j], kernel=kernel, sigma_frac=sigma_frac,
                                        batch_size=batch_size, split=split)
        return M
    # in memory: centre (linear) or build the centred Gram matrix (rbf) once per representation
    prepared = []
    n = None
    for item, name in zip(items, names):
        x = as_matrix(item, name=name, split=split)
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise ValueError(f"{name} has {x.shape[0]} samples but {names[0]} has {n}; every "
                             f"representation must have the same rows")
        if kernel == "linear":
            prepared.append(x - x.mean(axis=0))
        else:
            prepared.append(_center_gram(_gram_rbf(x, sigma_frac, name), debiased))
    if n < (4 if debiased else 2):
        raise ValueError(f"reps have {n} samples; CKA needs at least {4 if debiased else 2}")
    self_terms = []
    for p, name in zip(prepared, names):
        if kernel == "linear":
            xx = _linear_xy(p, p, debiased)
        else:
            xx = np.sum(p * p)
        self_terms.append(xx)
    for i in range(k):
        for j in range(i + 1, k):
            if kernel == "linear":
                xy = _linear_xy(prepared[i], prepared[j], debiased)
            else:
                xy = np.sum(prepared[i] * prepared[j])
            M[i, j] = M[j, i] = _ratio(xy, self_terms[i], self_terms[j], (names[i], names[j]))
    return M


def plot_cka_matrix(M, names=None, path=None, *, ax=None, title=None, annotate=None):
    """Heatmap of a CKA matrix (colour scale 0..1), optionally written to a PNG.

    Parameters
    ----------
    M : (k, k) array
    names : list of str, optional
        Tick labels (default 0..k-1).
    path : str or PathLike, optional
    ax : matplotlib Axes, optional
    annotate : bool, optional
        Print the values in the cells (default when k <= 12).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.size == 0:
        raise ValueError(f"M must be a non-empty square matrix, got shape {M.shape}")
    k = M.shape[0]
    names = [str(i) for i in range(k)] if names is None else [str(s) for s in names]
    if len(names) != k:
        raise ValueError(f"names has {len(names)} entries for a {k} x {k} matrix")
    if ax is None:
        side = max(3.0, 0.45 * k + 1.5)
        fig = Figure(figsize=(side + 0.8, side))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    im = ax.imshow(M, vmin=0, vmax=1, cmap="magma", origin="upper")
    ax.set_xticks(range(k), names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    if annotate is None:
        annotate = k <= 12
    if annotate:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if M[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="CKA")
    if title:
        ax.set_title(title)
    if path is not None:
        fig.tight_layout()
        save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------------------------
# RSA
# --------------------------------------------------------------------------------------------

_RSA_METRICS = ("correlation", "euclidean", "cosine")
_RSA_COMPARE = ("spearman", "pearson")


def rsa(X, Y, metric="correlation", compare="spearman", *, split=None) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008).

    The representational dissimilarity matrices of ``X`` and ``Y`` (``scipy.spatial.distance.
    pdist`` with ``metric``, i.e. their upper triangles) are compared with Spearman's rank or
    Pearson's correlation.

    Parameters
    ----------
    X : array (n, d1) (or tensor, Representation); Y : array (n, d2); n >= 3
    metric : {"correlation", "euclidean", "cosine"}
        Dissimilarity between two inputs' activity patterns (correlation distance is
        ``1 - Pearson r`` across units, the usual choice).
    compare : {"spearman", "pearson"}

    Returns
    -------
    float
        In [-1, 1]; 1 for identical representations.
    """
    from scipy.stats import pearsonr, spearmanr

    if metric not in _RSA_METRICS:
        raise ValueError(f"metric must be one of {_RSA_METRICS}, got {metric!r}")
    if compare not in _RSA_COMPARE:
        raise ValueError(f"compare must be one of {_RSA_COMPARE}, got {compare!r}")
    x = as_matrix(X, name="X", split=split)
    y = as_matrix(Y, name="Y", split=split)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must have the same number of samples (rows), got "
                         f"{x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 3:
        raise ValueError(f"RSA needs at least 3 samples (3 dissimilarities), got {x.shape[0]}")
    rdms = [_rdm(x, metric, "X"), _rdm(y, metric, "Y")]
    stat = spearmanr(rdms[0], rdms[1]) if compare == "spearman" else pearsonr(rdms[0], rdms[1])
    return float(stat[0])


def _rdm(arr: np.ndarray, metric: str, name: str) -> np.ndarray:
    """Upper triangle of ``arr``'s dissimilarity matrix (``pdist``), checked usable for RSA."""
    from scipy.spatial.distance import pdist

    with np.errstate(invalid="ignore", divide="ignore"):
        rdm = pdist(arr, metric=metric)
    if not np.isfinite(rdm).all():
        raise ValueError(f"{name}'s {metric} dissimilarities are undefined for some pairs "
                         f"(constant or all-zero rows?)")
    if np.ptp(rdm) == 0:
        raise ValueError(f"{name}'s dissimilarities are all equal; their correlation with "
                         f"another RDM is undefined")
    return rdm


def rsa_matrix(reps, metric="correlation", compare="spearman", *, split=None) -> np.ndarray:
    """:func:`rsa` between every pair of representations, each one's RDM computed once.

    Every RDM is computed (and, for ``compare="spearman"``, ranked) once, then standardised, so
    each pair costs one dot product. Memory: ``k`` vectors of ``n (n - 1) / 2`` float64 values
    for ``k`` representations of ``n`` samples (plus one RDM's temporaries while it is made):
    about 16 MB each at ``n = 2000``; pass a row subset for larger ``n``.

    Parameters
    ----------
    reps : list or dict name -> representation (array, tensor, Representation)
        All with the same samples (rows) in the same order, at least 3.
    metric, compare : see :func:`rsa`

    Returns
    -------
    ndarray of float64, shape (k, k)
        Symmetric, 1 on the diagonal; equal to pairwise :func:`rsa` up to rounding.
    """
    from scipy.stats import rankdata

    if metric not in _RSA_METRICS:
        raise ValueError(f"metric must be one of {_RSA_METRICS}, got {metric!r}")
    if compare not in _RSA_COMPARE:
        raise ValueError(f"compare must be one of {_RSA_COMPARE}, got {compare!r}")
    items = list(reps.values()) if isinstance(reps, Mapping) else list(reps)
    names = [str(k) for k in reps] if isinstance(reps, Mapping) else [f"reps[{i}]"
                                                                      for i in range(len(items))]
    if not items:
        raise ValueError("reps is empty")
    vectors, n = [], None
    for item, name in zip(items, names):
        x = as_matrix(item, name=name, split=split)
        if n is None:
            n = x.shape[0]
            if n < 3:
                raise ValueError(f"RSA needs at least 3 samples (3 dissimilarities), {name} has {n}")
        elif x.shape[0] != n:
            raise ValueError(f"{name} has {x.shape[0]} samples but {names[0]} has {n}; every "
                             f"representation must have the same rows")
        v = _rdm(x, metric, name)
        if compare == "spearman":
            v = rankdata(v)  # Spearman's rho is Pearson's r of the ranks (ties averaged)
        v = v - v.mean()
        v /= np.linalg.norm(v)
        vectors.append(v)
    k = len(vectors)
    M = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            M[i, j] = M[j, i] = float(np.clip(vectors[i] @ vectors[j], -1.0, 1.0))
    return M
