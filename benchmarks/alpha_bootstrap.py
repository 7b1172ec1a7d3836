"""Seconds per bootstrap resample of ``bioreps.analysis.spectrum.alpha_ci`` against the plain
weighted-covariance loop it replaced (every row in the scatter, every eigenvalue), in one run.

    python benchmarks/alpha_bootstrap.py [--rows 10000] [--units 2000] [--boot 3]

Both draw the same resamples and give the same exponents to rounding (printed).
"""

import argparse
import time

import numpy as np

from bioreps.analysis import spectrum as S


def plain(X, n_boot, seed, ranks):
    """The previous loop: scatter of all rows weighted by their counts, all eigenvalues."""
    X = X - X.mean(axis=0)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        counts = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
        Z = X - counts @ X / n
        scatter = Z.T @ (Z * counts[:, None])
        eigs = np.clip(np.linalg.eigvalsh((scatter + scatter.T) / 2)[::-1], 0.0, None)
        out.append(S.powerlaw_alpha(eigs / eigs.sum(), ranks=ranks, cliff=False).alpha)
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--boot", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.units)) * (np.arange(1, args.units + 1) ** -0.5)
    full = S.powerlaw_alpha(S.eigenspectrum(X), ranks=(11, 500))
    t0 = time.perf_counter()
    old = plain(X, args.boot, 1, full.ranks)
    t_old = (time.perf_counter() - t0) / args.boot
    t0 = time.perf_counter()
    new = S.alpha_ci(X, ranks=(11, 500), n_boot=args.boot, seed=1).boots
    t_new = (time.perf_counter() - t0) / args.boot  # includes the full fit once
    print(f"{args.rows} x {args.units}: plain loop {t_old:.2f} s/resample, alpha_ci {t_new:.2f} s/resample "
          f"({t_old / t_new:.1f}x); 200 resamples: {200 * t_new / 60:.1f} min; "
          f"max |alpha difference| {np.abs(old - new).max():.1e}")


if __name__ == "__main__":
    main()
