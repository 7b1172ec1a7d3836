"""Poisson input spike trains shared by every backend.

Two generators, both Bernoulli per step (the discrete-time Poisson process of Brian2's
``PoissonGroup``: every input spikes at each step independently with probability
``p = rate * dt_ms / 1000``), both giving CSR trains by step:

* :func:`counter_spike_trains` (what :class:`bioreps.layers.SpikingWTA` uses): a **counter-based**
  generator, a pure function of ``(key, step, input)`` written once as plain uint64 arithmetic
  (:func:`generator_functions`) and compiled for ``numba.njit`` and for ``numba.cuda`` device code
  alike, so the CPU kernel, the CUDA kernels (which draw their spikes on the device, on the fly)
  and the NumPy reference see identical spikes. The layout:

  - ``key = stream_key(seed, phase, index, attempt)``: four rounds of the SplitMix64 finaliser
    ``mix64`` (``k = mix64((k ^ v) + GOLDEN)`` for each field, starting from ``mix64(seed +
    GOLDEN)``), one key per presentation;
  - inputs are taken in pairs ``(2k, 2k + 1)``; the pair ``k`` at step ``s`` draws one 64-bit word
    ``h = mix64(key + (s * n_pairs + k + 1) * GOLDEN)`` (SplitMix64 at counter ``s * n_pairs + k``,
    ``n_pairs = ceil(n_inputs / 2)``); input ``2k`` uses the low 32 bits, ``2k + 1`` the high 32;
  - input ``i`` spikes iff its 32 bits are ``< thr_i = floor(p_i * 2**32)`` (``2**32`` when
    ``p_i >= 1``), i.e. with probability ``thr_i / 2**32``, within ``2.3e-10`` of ``p_i``;
    pairs whose two thresholds are 0 (blank pixels) are never hashed.

  All operations are exact (integer arithmetic mod 2**64, a multiplication by ``2**32`` and a
  truncation), so every backend agrees bit for bit; ``p_i`` is ``rates_hz[i] * (dt_ms / 1000)``.
* :func:`poisson_spike_trains`: drawn on the host from a ``numpy.random.Generator`` through
  geometric inter-spike gaps (about one draw per spike); kept for tests and callers that bring
  their own generator.

Layout: compressed rows per time step (CSR). The inputs that spike at step ``s`` are
``indices[indptr[s]:indptr[s + 1]]``, in increasing order; ``indptr`` has ``n_steps + 1``
entries. Kernels then touch only the inputs that spiked (event-driven propagation).

:func:`poisson_spike_trains` in detail: the inputs with a non-zero rate, in increasing index order,
draw a block ``rng.geometric(p, size=(n_active, m))`` (m covers the expected count plus two
standard deviations), and the rows that have not yet passed ``n_steps`` draw further blocks until
they have (measured: 0.1-0.2 ms instead of 1.3 ms per Fashion-MNIST image).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._config import njit_options

__all__ = ["poisson_spike_trains", "counter_spike_trains", "stream_key", "spike_thresholds", "generator_functions",
           "GOLDEN"]


def poisson_spike_trains(rates_hz, n_steps, dt_ms, rng):
    """Bernoulli-per-step (Poisson) spike trains as CSR arrays.

    Parameters
    ----------
    rates_hz : (n_inputs,) array of float
        Firing rate of every input in Hz, >= 0 (and ``rate * dt_ms / 1000 <= 1``).
    n_steps : int
        Number of time steps.
    dt_ms : float
        Time step in ms; the spike probability per step is ``rate * dt_ms / 1000``.
    rng : numpy.random.Generator, int or None
        The generator (or a seed for ``numpy.random.default_rng``).

    Returns
    -------
    indptr : (n_steps + 1,) int64
    indices : (n_spikes,) int64, input index of every spike, grouped by step
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    rates = np.asarray(rates_hz, dtype=np.float64).ravel()
    n_steps = int(n_steps)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not np.all(np.isfinite(rates)) or (rates.size and rates.min() < 0):
        raise ValueError("rates_hz must be finite and >= 0")
    prob = rates * (float(dt_ms) / 1000.0)
    if prob.size and prob.max() > 1:
        raise ValueError(f"rate * dt is {prob.max():g} > 1 spike per step; lower the rate or dt")
    active = np.flatnonzero(prob > 0)
    if active.size == 0 or n_steps == 0:
        return np.zeros(n_steps + 1, np.int64), np.zeros(0, np.int64)
    pa = prob[active][:, None]
    mean = n_steps * float(pa.max())
    m = int(math.ceil(mean + 2.0 * math.sqrt(mean) + 2.0))
    times = np.cumsum(rng.geometric(pa, size=(active.size, m)), axis=1) - 1  # 0-based spike steps
    rows = [np.broadcast_to(active[:, None], times.shape)[times < n_steps]]
    steps = [times[times < n_steps]]
    last = times[:, -1].copy()
    while True:
        short = np.flatnonzero(last < n_steps)
        if short.size == 0:
            break
        more = last[short, None] + np.cumsum(rng.geometric(pa[short], size=(short.size, m)), axis=1)
        keep = more < n_steps
        rows.append(np.broadcast_to(active[short, None], more.shape)[keep])
        steps.append(more[keep])
        last[short] = more[:, -1]
    step = np.concatenate(steps).astype(np.int64)
    inp = np.concatenate(rows).astype(np.int64)
    n_in = rates.size
    keys = np.sort(step * n_in + inp)  # grouped by step, inputs ascending
    indptr = np.zeros(n_steps + 1, np.int64)
    np.cumsum(np.bincount(keys // n_in, minlength=n_steps), out=indptr[1:])
    return indptr, keys % n_in


# --------------------------------------------------------------------------- counter-based generator

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (2**64 / golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
MASK32 = np.uint64(0xFFFFFFFF)
TWO32 = 4294967296.0
TWO32_U = np.uint64(1 << 32)


def generator_functions(jit):
    """The counter-based generator's functions compiled with the decorator ``jit`` (e.g.
    ``numba.njit(inline="always")`` or ``numba.cuda.jit(device=True)``); returns
    ``(mix64, stream_key, pair_bits, spike_threshold)``:

    * ``mix64(z)``: the SplitMix64 finaliser of a uint64;
    * ``stream_key(seed, phase, index, attempt)``: the key of one presentation (integers >= 0);
    * ``pair_bits(key, step, pair, n_pairs)``: the 64 random bits of input pair ``pair`` at ``step``
      (low 32 bits: input ``2 * pair``, high 32: ``2 * pair + 1``);
    * ``spike_threshold(p)``: ``floor(p * 2**32)`` as uint64 for ``0 <= p < 1``, ``2**32`` for
      ``p >= 1``, 0 for ``p <= 0``; an input spikes iff its 32 bits are below it.

    Every operation is on uint64 (constants included: mixing uint64 and int64 would make Numba
    compute in float64), so ``njit``, CUDA and the CUDA simulator (NumPy uint64 scalars, which wrap
    and warn on overflow) give the same bits.
    """

    @jit
    def mix64(z):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)

    @jit
    def stream_key(seed, phase, index, attempt):
        k = mix64(np.uint64(seed) + GOLDEN)
        k = mix64((k ^ np.uint64(phase)) + GOLDEN)
        k = mix64((k ^ np.uint64(index)) + GOLDEN)
        return mix64((k ^ np.uint64(attempt)) + GOLDEN)

    @jit
    def pair_bits(key, step, pair, n_pairs):
        return mix64(key + (np.uint64(step * n_pairs + pair) + _ONE) * GOLDEN)

    @jit
    def spike_threshold(p):
        if p >= 1.0:
            return TWO32_U
        if p > 0.0:
            return np.uint64(p * TWO32)  # exact product, truncated: floor
        return _ZERO

    return mix64, stream_key, pair_bits, spike_threshold


_mix64, _stream_key, _pair_bits, _spike_threshold = generator_functions(njit(inline="always", **njit_options()))


@njit(**njit_options())
def _stream_key_host(seed, phase, index, attempt):
    return _stream_key(seed, phase, index, attempt)


def stream_key(seed, phase, index, attempt):
    """The uint64 key of one presentation from integers ``seed, phase, index, attempt`` (each in
    ``[0, 2**63)``), as a Python int. The layer uses ``(seed_, phase, sample index, attempt)``,
    phase 1 = fit, 2 = transform."""
    for name, v in (("seed", seed), ("phase", phase), ("index", index), ("attempt", attempt)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < 2**63:
            raise ValueError(f"{name} must be an integer in [0, 2**63), got {v!r}")
    return int(_stream_key_host(np.int64(seed), np.int64(phase), np.int64(index), np.int64(attempt)))


def _spike_probabilities(rates_hz, dt_ms):
    rates = np.asarray(rates_hz, dtype=np.float64).ravel()
    if not np.all(np.isfinite(rates)) or (rates.size and rates.min() < 0):
        raise ValueError("rates_hz must be finite and >= 0")
    prob = rates * (float(dt_ms) / 1000.0)
    if prob.size and prob.max() > 1:
        raise ValueError(f"rate * dt is {prob.max():g} > 1 spike per step; lower the rate or dt")
    return prob


def spike_thresholds(rates_hz, dt_ms):
    """uint64 thresholds ``floor(p * 2**32)`` (``2**32`` where ``p == 1``) of the counter-based
    generator, ``p = rates_hz * (dt_ms / 1000)``, padded with a 0 to an even length."""
    prob = _spike_probabilities(rates_hz, dt_ms)
    thr = np.zeros(prob.size + (prob.size & 1), np.uint64)
    thr[:prob.size] = np.where(prob >= 1.0, float(TWO32_U), np.floor(prob * TWO32)).astype(np.uint64)
    return thr


@njit(**njit_options())
def _counter_trains(thr, n_steps, key, cap):
    n_pairs = thr.shape[0] // 2
    active = np.empty(n_pairs, np.int64)
    n_active = 0
    for k in range(n_pairs):
        if thr[2 * k] != _ZERO or thr[2 * k + 1] != _ZERO:
            active[n_active] = k
            n_active += 1
    indptr = np.zeros(n_steps + 1, np.int64)
    indices = np.empty(max(cap, 16), np.int64)
    n = 0
    for s in range(n_steps):
        if n + 2 * n_active > indices.shape[0]:  # room for every active input at this step
            grown = np.empty(2 * indices.shape[0] + 2 * n_active, np.int64)
            grown[:n] = indices[:n]
            indices = grown
        for a in range(n_active):
            k = active[a]
            h = _pair_bits(key, s, k, n_pairs)
            if (h & MASK32) < thr[2 * k]:
                indices[n] = 2 * k
                n += 1
            if (h >> _S32) < thr[2 * k + 1]:
                indices[n] = 2 * k + 1
                n += 1
        indptr[s + 1] = n
    return indptr, indices[:n].copy()


def counter_spike_trains(rates_hz, n_steps, dt_ms, key):
    """Bernoulli-per-step (Poisson) spike trains as CSR arrays from the counter-based generator
    (module docstring): the same spikes as the CUDA kernels draw on the device.

    Parameters
    ----------
    rates_hz : (n_inputs,) array of float, >= 0 (and ``rate * dt_ms / 1000 <= 1``)
    n_steps : int
    dt_ms : float
    key : int
        The presentation's key, :func:`stream_key` (an integer in ``[0, 2**64)``).

    Returns
    -------
    indptr : (n_steps + 1,) int64
    indices : (n_spikes,) int64, input index of every spike, grouped by step, increasing
    """
    n_steps = int(n_steps)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**64:
        raise ValueError(f"key must be an integer in [0, 2**64), got {key!r}")
    thr = spike_thresholds(rates_hz, dt_ms)
    mean = float(thr.astype(np.float64).sum()) / TWO32 * n_steps
    cap = int(mean + 6.0 * math.sqrt(mean) + 64)
    return _counter_trains(thr, n_steps, np.uint64(int(key)), cap)
