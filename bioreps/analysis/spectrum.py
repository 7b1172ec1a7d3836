"""PCA eigenspectra and their power-law exponent.

Stringer, Pachitariu, Steinmetz, Carandini & Harris (2019), "High-dimensional geometry of
population responses in visual cortex", Nature 571: the variance of the n-th principal component
of mouse V1 responses to natural images decays as ``lambda_n ~ n ** -alpha`` with alpha close
to 1. This module estimates such spectra and exponents:

- :func:`eigenspectrum`: PCA eigenvalues of a representation (blocked, float64, lazy on files);
- :func:`cvpca`: cross-validated PCA over two repeats of the same stimuli (unbiased by noise);
- :func:`powerlaw_alpha`: the exponent, under either convention below;
- :func:`alpha_ci`: a bootstrap interval for the exponent;
- :func:`plot_spectrum`: a log-log figure with the fit.

Two fitting conventions
-----------------------
Published exponents depend on the fitting convention, so both are available and every result
records which one produced it (:class:`PowerLawFit` ``.method`` and ``.ranks``).

``method="stringer"`` (default)
    Stringer et al. 2019, reference code ``python/utils.py`` function ``get_powerlaw`` and
    ``powerlaws/get_powerlaw.m`` in github.com/MouseLand/stringer-pachitariu-et-al-2018b:
    weighted least squares of ``log(lambda_n)`` on ``[-log(n), 1]`` with weights ``1 / n``
    (``n`` the 1-based rank). ``ranks=(first, last)`` are 1-based and **inclusive**; the default
    ``(11, 500)`` is the MATLAB call ``get_powerlaw(ss, 11:min(500, numel(ss) - 2))``
    (``powerlaws/statsShuffledPCA.m``), so ``last`` is clipped to ``len(eigs) - 2``. (The
    repository's Python notebook passes the 0-based ``np.arange(11, 500)``, i.e. ranks 12..500;
    we follow the MATLAB code that produced the paper's figures.)

``method="nassar"``
    Nassar, Sokol, Chung, Harris & Park (2020), "On 1/n neural representation and robustness"
    (NeurIPS; github.com/josuenassar/power_law): the spectrum divided by ``lambda_1``, then plain
    (unweighted) least squares of ``log(lambda_n / lambda_1)`` on ``log(n)`` (as their
    ``ModelDefs/utils.py`` ``estimate_slope``, ``np.linalg.lstsq`` on ``[log x, 1]``) over the
    1-based ranks ``[first, stop)``, **half-open**, default ``(10, 500)``; ``stop`` is clipped
    to ``len(eigs) + 1`` (every eigenvalue may be used). The intercept is then that of the
    normalised spectrum.

With ``ranks=None`` each method uses its own default window. On an exact power law both
conventions return the same alpha; on real spectra they differ through the weights and window.

The cliff, and fits to distrust
-------------------------------
The spectrum of a finite layer ends in a cliff: past some rank the eigenvalues fall far faster
than any power law (units that almost never respond, the end of the sample spectrum, numerical
zeros). The default window 11..500 runs into it on a layer of a few hundred units: the
400-unit quickstart layer has a local exponent of ~2 up to rank ~250, then 4..40 down to rank
398 (eigenvalues from 1e-4 to 1e-8 of lambda_1), and the fit over 11..398 gave alpha 2.65 with a
residual of 1.09; cut at its cliff (rank 275), alpha 2.07, residual 0.25. :func:`find_cliff`
defines the cliff; :func:`powerlaw_alpha` ends its window there (``cliff=True``, the default),
records the rank in :attr:`PowerLawFit.cliff` and issues a :class:`SpectrumFitWarning`. It also
warns when the fit's residual exceeds :data:`BAD_RESIDUAL` (the spectrum is not a power law
over the window). :func:`plot_spectrum` shades the ranks used and marks the cliff.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_random_state
from ..plots import save_figure
from ._common import open_rows

__all__ = [
    "AlphaCI",
    "BAD_RESIDUAL",
    "PowerLawFit",
    "SpectrumFitWarning",
    "alpha_ci",
    "cvpca",
    "eigenspectrum",
    "find_cliff",
    "fit_window",
    "plot_spectrum",
    "powerlaw_alpha",
]

_METHODS = ("stringer", "nassar")
_DEFAULT_RANKS = {"stringer": (11, 500), "nassar": (10, 500)}
_MIN_RANKS = 3
BAD_RESIDUAL = 0.5      # RMS log residual above which a fit is flagged (values off by ~e^0.5 = 1.65x)
_CLIFF_DROP = 10.0      # a fall by more than this factor between consecutive ranks is a cliff
_CLIFF_STEEP = 2.0      # ... and so is an octave whose local exponent exceeds this multiple of the fit's
_CLIFF_MIN_OCTAVE = 20  # octaves are judged from rank 20 on (10 ranks or more: not noise-dominated)


class SpectrumFitWarning(UserWarning):
    """A power-law fit to look at: its window was cut at the spectrum's cliff, or its residual
    is above :data:`BAD_RESIDUAL`."""


# --------------------------------------------------------------------------------------------
# Eigenspectrum
# --------------------------------------------------------------------------------------------

def _covariance(rows, block_rows=None, weights=None) -> tuple[np.ndarray, int]:
    """Unnormalised centred scatter matrix ``sum (x - mean)(x - mean)^T`` (float64) and n.

    One pass with a shifted mean: the first block's mean ``K`` is subtracted from every row,
    ``S1 = sum (x - K)`` and ``S2 = sum (x - K)(x - K)^T`` are accumulated, and the scatter is
    ``S2 - S1 S1^T / n``. With ``K`` close to the mean this loses no precision to cancellation,
    and a file is read only once.
    """
    d = rows.n_units
    shift = None
    s1 = np.zeros(d)
    s2 = np.zeros((d, d))
    n = 0
    for start, block in rows.iter_blocks(block_rows):
        block = np.asarray(block, dtype=np.float64)
        if shift is None:
            shift = block.mean(axis=0)
        z = block - shift
        if weights is not None:
            w = weights[start:start + len(block)]
            s1 += w @ z
            s2 += z.T @ (z * w[:, None])
        else:
            s1 += z.sum(axis=0)
            s2 += z.T @ z
        n += len(block)
    n_eff = n if weights is None else float(weights.sum())
    scatter = s2 - np.outer(s1, s1) / n_eff
    return (scatter + scatter.T) / 2, n


#: largest float64 copy of the rows (bytes) :func:`eigenspectrum` makes to use the Gram matrix
GRAM_BYTES = 4 * 2**30


def _gram(rows, block_rows=None) -> np.ndarray:
    """``Z Z^T`` (n x n, float64) of the rows centred by their mean (read once into float64)."""
    Z = np.empty((rows.n_samples, rows.n_units))
    for start, block in rows.iter_blocks(block_rows):
        Z[start:start + len(block)] = block
    Z -= Z.mean(axis=0)
    G = Z @ Z.T
    return (G + G.T) / 2


def eigenspectrum(R, block_rows=None, *, split=None, normalize=True) -> np.ndarray:
    """PCA eigenvalues of ``R`` (n samples x d units), in descending order.

    The covariance of the centred rows is accumulated in float64 block by block (one pass with a
    shifted mean, see ``_covariance``), so memory is ``O(d**2 + block_rows * d)`` whatever n;
    a :class:`bioreps.io.Representation` (or file + ``split``) is read lazily with its blocks.
    With fewer samples than units (and the rows' float64 copy under :data:`GRAM_BYTES`), the
    eigenvalues come from the n x n Gram matrix of the centred rows instead: the same nonzero
    eigenvalues, the remaining ``d - n`` are 0.

    Parameters
    ----------
    R : array (n, d), torch tensor, Representation, BiorepsFile or path
    block_rows : int, optional
        Rows per block (default: about 16 MiB of float64 rows).
    split : str, optional
        The representation to read when ``R`` is a file or path.
    normalize : bool
        Divide by the sum so the eigenvalues sum to 1 (default). With ``False`` the
        eigenvalues are the unbiased covariance's (``/ (n - 1)``).

    Returns
    -------
    ndarray of float64, shape (d,)
        Descending; negative round-off (eigenvalues of a covariance are >= 0 in exact
        arithmetic) is clipped to 0 before normalising.

    Raises
    ------
    ValueError
        Fewer than 2 samples, NaN/inf, or no variance at all (all rows equal).
    """
    with open_rows(R, name="R", split=split) as rows:
        if rows.n_samples < 2:
            raise ValueError(f"R needs at least 2 samples for a covariance, got {rows.n_samples}")
        n, d = rows.n_samples, rows.n_units
        if n < d and n * d * 8 <= GRAM_BYTES:
            # fewer samples than units (a convolutional layer: 10,000 images x 18,816 units): the
            # n x n Gram matrix of the centred rows has the covariance's nonzero eigenvalues (the
            # others are 0) at a fraction of the memory and time of the d x d covariance
            eigs = np.zeros(d)
            eigs[:n] = np.linalg.eigvalsh(_gram(rows, block_rows))[::-1]
        else:
            scatter, n = _covariance(rows, block_rows)
            eigs = np.linalg.eigvalsh(scatter)[::-1]
    eigs = np.clip(eigs, 0.0, None)
    total = eigs.sum()
    if not total > 0:
        raise ValueError("R has no variance (every row is the same); its spectrum is undefined")
    return eigs / total if normalize else eigs / (n - 1)


# --------------------------------------------------------------------------------------------
# Power-law fit
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PowerLawFit:
    """The fit ``lambda_n ~ scale * exp(intercept) * n ** -alpha`` of a spectrum.

    Attributes
    ----------
    alpha : float
        The exponent (positive for a decaying spectrum). ``float(fit)`` gives it.
    intercept : float
        The fitted ``log`` value at rank 1 (of ``lambda / lambda_1`` for ``"nassar"``).
    residual : float
        Root-mean-square of the log residuals over the window, weighted by ``1 / n`` for
        ``"stringer"`` (``sqrt(sum w r**2 / sum w)``), unweighted for ``"nassar"``.
    ranks : tuple of int
        ``(first, last)``: the 1-based, inclusive ranks actually used (after clipping).
    method : str
        ``"stringer"`` or ``"nassar"``.
    n_used : int
        Number of eigenvalues in the fit, ``last - first + 1``.
    scale : float
        1 for ``"stringer"``; ``lambda_1`` for ``"nassar"`` (the fit is of ``lambda /
        lambda_1``).
    cliff : int or None
        The last rank before the spectrum's cliff (:func:`find_cliff`) when it cut the window
        short (then ``ranks[1] == cliff``); None when the window did not reach a cliff.
    """

    alpha: float
    intercept: float
    residual: float
    ranks: tuple
    method: str
    n_used: int
    scale: float = 1.0
    cliff: int | None = None

    def __float__(self) -> float:
        return float(self.alpha)

    def predict(self, n) -> np.ndarray:
        """The fitted eigenvalue at 1-based rank(s) ``n``, in the units of the input."""
        n = np.asarray(n, dtype=np.float64)
        return self.scale * np.exp(self.intercept) * n ** -self.alpha


def _check_eigs(eigs) -> np.ndarray:
    arr = np.asarray(eigs)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"eigs must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"eigs must be 1-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("eigs is empty")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr)) + 1
        raise ValueError(f"eigs contains NaN or inf (ranks {bad[:10].tolist()}"
                         f"{' ...' if len(bad) > 10 else ''})")
    return arr


def _check_ranks(ranks, method):
    if ranks is None:
        return _DEFAULT_RANKS[method]
    try:
        first, last = ranks
    except (TypeError, ValueError):
        raise TypeError(f"ranks must be a pair (first, last) of ints, got {ranks!r}") from None
    for v in (first, last):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"ranks must be a pair of ints, got {ranks!r}")
    if first < 1:
        raise ValueError(f"ranks are 1-based: the first rank must be >= 1, got {first}")
    if first >= last:
        raise ValueError(f"ranks ({first}, {last}): the first rank must be below the last")
    return int(first), int(last)


def fit_window(n_eigs, ranks=None, method="stringer") -> tuple[int, int]:
    """The 1-based, inclusive ranks ``(first, last)`` that :func:`powerlaw_alpha` fits on a
    spectrum of ``n_eigs`` eigenvalues (before any cut at a cliff).

    Raises ``ValueError`` for an impossible window: ``first < 1``, ``first >= last``, or fewer
    than 3 ranks left once ``last`` is clipped to the spectrum (``n_eigs - 2`` for
    ``"stringer"``, ``n_eigs`` for ``"nassar"``), e.g. a window that starts beyond it. Cheap: a
    command line can check a window before reading anything.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    first, bound = _check_ranks(ranks, method)
    size = int(n_eigs)
    last = min(bound, size - 2) if method == "stringer" else min(bound, size + 1) - 1
    n_used = last - first + 1
    if n_used < _MIN_RANKS:
        beyond = (f"; it starts beyond the {last} ranks the {method} fit can use"
                  if first > last else "")
        raise ValueError(f"too few ranks to fit: the window {ranks or _DEFAULT_RANKS[method]} "
                         f"({method} convention) holds {max(n_used, 0)} of {size} eigenvalues "
                         f"after clipping{beyond}; at least {_MIN_RANKS} are needed")
    return first, last


def find_cliff(eigs, first=1, last=None) -> int | None:
    """The last rank (1-based) before the spectrum falls off a cliff inside ``[first, last]``,
    or None.

    Scanning ranks ``m`` upwards, the cliff is at the first ``m`` where either

    - the eigenvalue falls by more than a factor 10 from the rank before
      (``lambda_m < lambda_{m-1} / 10``; ``m > first``), which no power law with a plausible
      exponent does past the first ranks (numerical zeros, dead units), or
    - the octave ending at ``m`` is more than twice as steep as the fit so far: the local
      exponent ``log(lambda_h / lambda_m) / log(m / h)``, ``h = ceil(m / 2)``, exceeds
      ``2 * max(alpha, 0.5)``, where ``alpha`` is the (Stringer-weighted) fit over
      ``[first, m]`` (``m >= max(2 * first, 20)``, so an octave spans at least 10 ranks);

    - the eigenvalues from ``m`` to ``last`` are all non-positive (directions without variance:
      dead units, or fewer samples than units; numerically they may come out as tiny negative
      numbers);

    the window then ends at ``m - 1``. An exact power law never has a cliff. (A non-positive
    eigenvalue followed by positive ones is no cliff but a malformed spectrum:
    :func:`powerlaw_alpha` refuses it, naming the ranks.)
    """
    return _cliff(_check_eigs(eigs), first, last)[0]


def _cliff(eigs, first, last):
    """``(rank, reason)`` of :func:`find_cliff` (``(None, "")`` when there is none)."""
    last = eigs.size if last is None else min(int(last), eigs.size)
    first = max(int(first), 1)
    if last - first < 1:
        return None, ""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(eigs > 0, np.log(np.where(eigs > 0, eigs, 1.0)), np.nan)
    ranks = np.arange(1, eigs.size + 1, dtype=np.float64)
    x, w = -np.log(ranks), 1.0 / ranks
    win = slice(first - 1, last)
    sw, sx, sxx = (np.cumsum(v[win]) for v in (w, w * x, w * x * x))
    sy, sxy = np.cumsum((w * logs)[win]), np.cumsum((w * x * logs)[win])
    positive = eigs[:last] > 0
    # ranks from which every eigenvalue up to `last` is non-positive: a tail without variance
    dead_from = last + 1 - int(np.argmax(positive[::-1])) if positive.any() else 1
    for m in range(first + 1, last + 1):
        if m >= dead_from:
            return m - 1, f"rank {m} has no variance (eigenvalue {eigs[m - 1]:.3g}: dead units, or fewer samples than units)"
        if logs[m - 1] < logs[m - 2] - np.log(_CLIFF_DROP):
            return m - 1, f"the eigenvalue falls {np.exp(logs[m - 2] - logs[m - 1]):.3g}x from rank {m - 1} to {m}"
        if m < max(2 * first, _CLIFF_MIN_OCTAVE):
            continue
        k = m - first
        den = sw[k] * sxx[k] - sx[k] ** 2
        alpha = (sw[k] * sxy[k] - sx[k] * sy[k]) / den if den > 0 else np.nan
        h = -(-m // 2)
        local = (logs[h - 1] - logs[m - 1]) / np.log(m / h)
        if local > _CLIFF_STEEP * max(alpha, 0.5):
            return m - 1, (f"the local exponent over ranks {h}..{m} is {local:.2f}, more than "
                           f"{_CLIFF_STEEP:g}x the fit's {alpha:.2f} over [{first}, {m}]")
    return None, ""


def powerlaw_alpha(eigs, ranks=None, method="stringer", *, cliff=True) -> PowerLawFit:
    """Fit ``lambda_n ~ n ** -alpha`` to a descending spectrum.

    See the module docstring for the two conventions. ``"stringer"`` reproduces
    ``get_powerlaw`` of github.com/MouseLand/stringer-pachitariu-et-al-2018b
    (``python/utils.py``; ``powerlaws/get_powerlaw.m``): normal equations
    ``b = solve(X^T W X, X^T W y)`` with ``X = [-log n, 1]``, ``y = log lambda_n`` and
    ``W = diag(1 / n)``; ``alpha = b[0]``, ``intercept = b[1]``. Two deliberate differences:
    the weights are float64 (the reference rounds ``1 / n`` to float32, which moves alpha by
    ~1e-8), and non-positive eigenvalues in the window raise instead of being passed through
    ``log(abs(.))``.

    Parameters
    ----------
    eigs : 1-D array
        The spectrum in descending order (any scale; alpha does not depend on it).
    ranks : (int, int), optional
        1-based window: inclusive ``(first, last)`` for ``"stringer"`` (default ``(11, 500)``,
        ``last`` clipped to ``len(eigs) - 2``), half-open ``[first, stop)`` for ``"nassar"``
        (default ``(10, 500)``, ``stop`` clipped to ``len(eigs) + 1``).
    method : {"stringer", "nassar"}
    cliff : bool
        End the window at the spectrum's cliff (:func:`find_cliff`) when it reaches one, with a
        :class:`SpectrumFitWarning` (default). ``False`` fits the clipped window as asked.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    ValueError
        NaN/inf, an impossible window (:func:`fit_window`), fewer than 3 ranks before the
        cliff, or a non-positive eigenvalue in the window (the ranks are named).

    Warns
    -----
    SpectrumFitWarning
        The window was cut at a cliff, or the fit's residual exceeds :data:`BAD_RESIDUAL`.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    eigs = _check_eigs(eigs)
    first, last = fit_window(eigs.size, ranks, method)
    cut, why = _cliff(eigs, first, last) if cliff else (None, "")
    if cut is not None:
        if cut - first + 1 < _MIN_RANKS:
            raise ValueError(f"too few ranks to fit: the spectrum falls off a cliff after rank {cut}, "
                             f"{cut - first + 1} rank(s) into the window [{first}, {last}]; at least "
                             f"{_MIN_RANKS} are needed (choose an earlier window, or cliff=False)")
        warnings.warn(f"the fit window [{first}, {last}] was cut to [{first}, {cut}]: the spectrum falls "
                      f"off a cliff after rank {cut} ({why}; see find_cliff)", SpectrumFitWarning, stacklevel=2)
        last = cut
    n_used = last - first + 1
    scale = 1.0
    if method == "nassar":
        scale = float(eigs[0])
        if not scale > 0:
            raise ValueError(f"the nassar convention divides by lambda_1, which is {scale:g}; "
                             f"it must be positive")
    window = eigs[first - 1:last] / scale
    if np.any(window <= 0):
        bad = np.flatnonzero(window <= 0) + first
        raise ValueError(f"eigs has non-positive values at ranks {bad[:10].tolist()}"
                         f"{' ...' if len(bad) > 10 else ''} inside the fit window "
                         f"[{first}, {last}]; a power law needs positive eigenvalues (choose a "
                         f"narrower window)")
    n = np.arange(first, last + 1, dtype=np.float64)
    y = np.log(window)
    if method == "stringer":
        X = np.column_stack([-np.log(n), np.ones_like(n)])
        w = 1.0 / n
        b = np.linalg.solve(X.T @ (X * w[:, None]), (w[:, None] * X).T @ y)
        alpha, intercept = float(b[0]), float(b[1])
        r = y - X @ b
        residual = float(np.sqrt(np.sum(w * r * r) / np.sum(w)))
    else:
        X = np.column_stack([np.log(n), np.ones_like(n)])
        b = np.linalg.lstsq(X, y, rcond=None)[0]
        alpha, intercept = float(-b[0]), float(b[1])
        r = y - X @ b
        residual = float(np.sqrt(np.mean(r * r)))
    if residual > BAD_RESIDUAL:
        warnings.warn(f"the power-law fit over ranks [{first}, {last}] is poor: residual {residual:.3f} "
                      f"(RMS of log residuals; above {BAD_RESIDUAL}): the spectrum is not a power law "
                      "there, so alpha describes it badly", SpectrumFitWarning, stacklevel=2)
    return PowerLawFit(alpha=alpha, intercept=intercept, residual=residual, ranks=(first, last),
                       method=method, n_used=int(n_used), scale=scale, cliff=cut)


# --------------------------------------------------------------------------------------------
# Cross-validated PCA
# --------------------------------------------------------------------------------------------

def _cvpca_once(X0: np.ndarray, X1: np.ndarray, n_components: int) -> np.ndarray:
    # principal axes (unit vectors in unit space) of repeat 1 only
    _, _, vt = np.linalg.svd(X0, full_matrices=False)
    u = vt[:n_components].T
    p0 = X0 @ u
    p1 = X1 @ u
    return np.einsum("ij,ij->j", p0, p1) / X0.shape[0]


def cvpca(R1, R2, n_shuffles=10, seed=None, *, n_components=None, split=None) -> np.ndarray:
    """Cross-validated PCA spectrum of two repeats of the same stimuli (Stringer et al. 2019).

    Principal axes ``u_k`` are estimated from repeat 1 only; the "cross-validated" variance
    along each is ``sum_s (x1_s . u_k)(x2_s . u_k) / n`` over stimuli ``s``. Noise independent
    between repeats averages out of this product, so the result estimates the *signal*
    (stimulus-related) variance: unbiased where plain PCA of one repeat adds the noise variance
    to every eigenvalue. Values can be negative where the signal is weaker than the noise.

    Matches ``cvPCA`` / ``shuff_cvPCA`` in github.com/MouseLand/stringer-pachitariu-et-al-2018b
    (``python/utils.py``): for each shuffle the two repeats are swapped for a random half of the
    stimuli (``flip = rng.random(n) > 0.5``, one draw per shuffle, in order, from
    ``numpy.random.default_rng(seed)``), and the spectra are averaged over shuffles. Before
    that, every unit is centred once with its mean over both repeats (the reference expects
    centred responses: its notebook does ``resp -= resp.mean(axis=0)``). Differences: the
    reference returns the sum over stimuli (``n`` times ours), keeps at most 1024 components and
    fits its PCA with scikit-learn, which centres each stimulus across units; on data that are
    also centred across units (and at most 1024 components) the two agree exactly.

    Parameters
    ----------
    R1, R2 : arrays (n_stimuli, n_units) (or tensors/Representations), same shape
        Responses to the same stimuli, in the same order, on two repeats.
    n_shuffles : int
        Number of random swaps to average (>= 1); 0 computes one unswapped pass.
    seed : int, Generator or None
    n_components : int, optional
        Default ``min(n_stimuli, n_units)``.
    split : str, optional
        The representation to read when R1/R2 are files or paths.

    Returns
    -------
    ndarray of float64, shape (n_components,)
        In units of variance (not normalised; divide by the sum for a fraction, as Stringer et
        al. do before fitting). In the order of repeat 1's PCs, i.e. roughly descending.
    """
    with open_rows(R1, name="R1", split=split) as a, open_rows(R2, name="R2", split=split) as b:
        X1 = np.array(a.to_numpy(), dtype=np.float64)
        X2 = np.array(b.to_numpy(), dtype=np.float64)
    if X1.shape != X2.shape:
        raise ValueError(f"R1 and R2 must have the same shape (the same stimuli and units), got "
                         f"{X1.shape} and {X2.shape}")
    n, d = X1.shape
    if n < 2:
        raise ValueError(f"R1 needs at least 2 stimuli, got {n}")
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, (int, np.integer)) or n_shuffles < 0:
        raise ValueError(f"n_shuffles must be an int >= 0, got {n_shuffles!r}")
    kmax = min(n, d)
    if n_components is None:
        n_components = kmax
    elif not 1 <= int(n_components) <= kmax:
        raise ValueError(f"n_components must be in 1..{kmax}, got {n_components}")
    n_components = int(n_components)
    mean = (X1.sum(axis=0) + X2.sum(axis=0)) / (2 * n)
    X1 -= mean
    X2 -= mean
    if n_shuffles == 0:
        return _cvpca_once(X1, X2, n_components)
    rng = check_random_state(seed, name="seed")
    ss = np.zeros(n_components)
    for _ in range(int(n_shuffles)):
        flip = rng.random(n) > 0.5
        A = X1.copy()
        B = X2.copy()
        A[flip] = X2[flip]
        B[flip] = X1[flip]
        ss += _cvpca_once(A, B, n_components)
    return ss / n_shuffles


# --------------------------------------------------------------------------------------------
# Bootstrap interval
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlphaCI:
    """A bootstrap percentile interval for the power-law exponent.

    Attributes
    ----------
    alpha : float
        The exponent of the full data.
    low, high : float
        The interval's bounds (percentiles ``(1 - ci) / 2`` and ``(1 + ci) / 2`` of ``boots``).
    ci : float
    boots : ndarray of float64, shape (n_boot,)
        The exponent of each bootstrap resample.
    fit : PowerLawFit
        The fit of the full data.
    bias : float
        ``mean(boots) - alpha``: how far resampling moves the estimate. Resamples repeat rows
        (about 37% of rows are left out of each), which steepens the tail of a sample spectrum;
        when ``|bias|`` is comparable to the interval's width the exponent still depends on the
        number of samples, and :func:`alpha_ci` warns.
    """

    alpha: float
    low: float
    high: float
    ci: float
    boots: np.ndarray = field(repr=False)
    fit: PowerLawFit = field(repr=False)
    bias: float = 0.0

    def __float__(self) -> float:
        return float(self.alpha)


def alpha_ci(R, ranks=None, n_boot=200, ci=0.95, seed=None, method="stringer", *,
             split=None) -> AlphaCI:
    """Bootstrap (over samples) percentile interval of the power-law exponent of ``R``.

    Each resample draws n rows with replacement; its spectrum is the weighted covariance of the
    original rows with the multinomial counts as weights (the same as stacking the drawn rows),
    and is fitted with :func:`powerlaw_alpha` (``ranks``, ``method``). ``R`` is read into memory
    once. Cost per resample: the scatter of the rows drawn at least once (~63% of them) and one
    symmetric eigendecomposition; at 10,000 x 2000 about a second on 2 cores
    (benchmarks/alpha_bootstrap.py), so 200 resamples take minutes.
    In a study the primary intervals are across seeds; this one is the spread of one model's
    estimate over its test images.

    Note that the interval describes sampling variability of the *estimate*: resampled spectra
    share the estimator's finite-sample bias (tail eigenvalues of a sample covariance are
    distorted when ``n`` is not much larger than ``d``), so choose ``ranks`` inside the
    well-estimated part of the spectrum.

    Returns
    -------
    AlphaCI
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    with open_rows(R, name="R", split=split) as rows:
        X = np.array(rows.to_numpy(), dtype=np.float64)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"R needs at least 2 samples, got {n}")
    X -= X.mean(axis=0)
    full = powerlaw_alpha(eigenspectrum(X), ranks=ranks, method=method)
    # every resample is fitted over the full data's window (cut at its cliff, if any)
    first, last = full.ranks
    boot_ranks = (first, last) if method == "stringer" else (first, last + 1)
    rng = check_random_state(seed, name="seed")
    boots = np.empty(int(n_boot))
    for i in range(int(n_boot)):
        counts = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
        drawn = np.flatnonzero(counts)  # ~37% of the rows are never drawn: they add nothing
        w = counts[drawn]
        Z = X[drawn] - (w @ X[drawn]) / n
        Z *= np.sqrt(w)[:, None]
        scatter = Z.T @ Z  # = sum_r counts_r (x_r - mean)(x_r - mean)^T
        eigs = np.clip(np.linalg.eigvalsh((scatter + scatter.T) / 2)[::-1], 0.0, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpectrumFitWarning)
            boots[i] = powerlaw_alpha(eigs / eigs.sum(), ranks=boot_ranks, method=method, cliff=False).alpha
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
    bias = float(boots.mean() - full.alpha)
    if not lo <= full.alpha <= hi:
        warnings.warn(f"the full-data exponent {full.alpha:.4f} lies outside its bootstrap interval "
                      f"[{lo:.4f}, {hi:.4f}] (bootstrap bias {bias:+.4f}): resampled spectra (with repeated "
                      "rows) are biased, so the exponent still depends on the number of samples at "
                      "these ranks; use more samples or lower ranks, and read the interval as spread only",
                      UserWarning, stacklevel=2)
    return AlphaCI(alpha=full.alpha, low=float(lo), high=float(hi), ci=float(ci), boots=boots,
                   fit=full, bias=bias)


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------

def plot_spectrum(eigs, fit=None, ax=None, path=None, *, label=None, title=None):
    """Log-log plot of a spectrum, with the fitted power law and its window shaded.

    Parameters
    ----------
    eigs : 1-D array
        Descending spectrum; non-positive values are left out of the log plot.
    fit : PowerLawFit, optional
        Drawn as a dashed line over its ranks, the window (the ranks used) shaded, alpha in the
        legend; where the window was cut at the spectrum's cliff, a dotted line marks it.
    ax : matplotlib Axes, optional
        Draw into it; otherwise a new Figure is made (without pyplot, so nothing global is
        left open).
    path : str or PathLike, optional
        Write a PNG there (atomically).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    eigs = _check_eigs(eigs)
    if ax is None:
        fig = Figure(figsize=(4.5, 3.5))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    n = np.arange(1, eigs.size + 1)
    pos = eigs > 0
    ax.loglog(n[pos], eigs[pos], lw=1.5, label=label or "spectrum")
    if fit is not None:
        first, last = fit.ranks
        ax.axvspan(first, last, color="0.85", zorder=0, label=f"fit window {first}..{last}")
        if fit.cliff is not None:
            ax.axvline(fit.cliff, color="tab:red", ls=":", lw=1.2, label=f"cliff after rank {fit.cliff}")
        grid = np.arange(first, last + 1)
        ax.loglog(grid, fit.predict(grid), "k--", lw=1.2,
                  label=f"alpha = {fit.alpha:.3f} ({fit.method})")
    ax.set_xlabel("PC rank n")
    ax.set_ylabel("variance")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    if path is not None:
        fig.tight_layout()
        save_figure(fig, path)
    return fig
