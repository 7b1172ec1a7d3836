"""Conductance-based LIF excitatory/inhibitory network of Diehl & Cook (2015): Numba CPU kernels.

Model (``docs/models/diehl_cook_2015.md``): ``tau_m dV/dt = (E_rest - V) + g_e (E_exc - V)
+ g_i (E_inh - V)`` with conductances in units of the leak conductance. One time step ``s`` runs
in Brian2's schedule order:

1. state update (every neuron): a neuron that is not refractory integrates ``V`` by exponential
   Euler with the conductances held at their start-of-step values (Brian2's
   ``exponential_euler``): ``V_inf = (E_rest + g_e E_exc + g_i E_inh) / (1 + g_e + g_i)``,
   ``V = V_inf + (V - V_inf) exp(-dt (1 + g_e + g_i) / tau_m)``; conductances decay by
   ``exp(-dt / tau_g)``; when learning, theta and the STDP traces decay by their exact factors;
2. threshold: ``V > v_thresh (+ theta for E)`` among non-refractory neurons; spikers are reset
   to ``v_reset`` and become refractory for ``R = floor(refractory / dt + 1e-3)`` steps: a neuron that
   spikes at step t integrates again at step t + R exactly, as in Brian2; E spikers gain
   ``theta_plus`` when learning;
3. synapses, in this order: input spikes of step s (``g_e[j] += W[i, j]`` for every spiking
   input i; then STDP depression), E spikes (``g_e`` of the partner I neuron ``+= w_ei``; then
   STDP potentiation), I spikes (``g_i`` of every E neuron but the partner ``+= w_ie``).

Input (spike trains in CSR form, from :func:`bioreps.kernels.poisson.counter_spike_trains` or
:func:`~bioreps.kernels.poisson.poisson_spike_trains`) is given for the presentation steps; the rest steps get none, and nothing is reset in between (the
state decays freely). The I population has no inhibitory input in this model, so its ``g_i``
stays 0 (``e_inh_i_mv`` is kept for completeness). All arrays are preallocated
(:class:`LIFState`); nothing is allocated per step.

Speed: :func:`fit_samples` and :func:`transform_samples` run each row (every attempt, the column
normalisation, the key) in one compiled call and draw the input spikes inside the step loop from
the counter-based generator (the spikes :func:`~bioreps.kernels.poisson.counter_spike_trains`
would list, in the same order, as the CUDA kernels draw them): no CSR trains, no per-sample
Python work beyond the call. Traces and conductances that decay below ``stdp.TINY`` (2**-1000)
are flushed to 0 rather than left to sink into the subnormal range, where they stuck (the
smallest subnormal times a decay factor >= 0.5 rounds back to itself) and made every operation
on them a ~100-cycle micro-code assist; such values can change nothing else (``stdp.TINY``), so
spikes, weights and thresholds are bit for bit those of the plain per-step decay.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._config import njit_options
from ..poisson import _S32, MASK32, _pair_bits, _spike_probabilities, _spike_threshold, _stream_key, stream_key
from .stdp import TINY, decay, decay_flush, normalize_columns, propagate_pre, stdp_post

__all__ = ["CONSTANTS", "make_constants", "LIFState", "lif_step", "present", "run_presentation", "fit_samples",
           "transform_samples"]

# names of the packed float64 constants array ``c`` the kernels take, in order
CONSTANTS = ("dt_ms", "v_rest_e_mv", "v_reset_e_mv", "v_thresh_e_mv", "tau_mem_e_ms", "e_exc_mv",
             "e_inh_e_mv", "v_rest_i_mv", "v_reset_i_mv", "v_thresh_i_mv", "tau_mem_i_ms", "e_inh_i_mv",
             "decay_ge", "decay_gi", "theta_plus_mv", "decay_theta", "w_ei", "w_ie", "nu_pre", "nu_post",
             "decay_pre", "decay_post1", "decay_post2", "w_max", "refrac_e_steps", "refrac_i_steps",
             "max_rate_hz", "rate_boost_hz", "weight_sum")
(DT, V_REST_E, V_RESET_E, V_THRESH_E, TAU_E, E_EXC, E_INH_E, V_REST_I, V_RESET_I, V_THRESH_I, TAU_I,
 E_INH_I, DECAY_GE, DECAY_GI, THETA_PLUS, DECAY_THETA, W_EI, W_IE, NU_PRE, NU_POST, DECAY_PRE,
 DECAY_POST1, DECAY_POST2, W_MAX, REFRAC_E, REFRAC_I, MAX_RATE, RATE_BOOST, WEIGHT_SUM) = range(len(CONSTANTS))


def refractory_steps(refrac_ms, dt_ms):
    """Steps R after which a neuron that spiked integrates again, as Brian2 counts them:
    ``not_refractory = timestep(t - lastspike, dt) >= timestep(refractory, dt)`` with
    ``timestep(x, dt) = int((x + 1e-3 dt) / dt)``, so ``R = floor(refractory / dt + 1e-3)``
    (10 for 5 ms at dt 0.5 ms; 16 for 5 ms at dt 0.3 ms)."""
    return int(math.floor(refrac_ms / dt_ms + 1e-3))


def make_constants(dt_ms, **p):
    """The packed constants array from ``dt_ms`` and the model's named constants (the field
    names of ``bioreps.layers.DiehlCookParams``)."""
    dt = float(dt_ms)
    vals = dict(
        dt_ms=dt, v_rest_e_mv=p["v_rest_e_mv"], v_reset_e_mv=p["v_reset_e_mv"], v_thresh_e_mv=p["v_thresh_e_mv"],
        tau_mem_e_ms=p["tau_mem_e_ms"], e_exc_mv=p["e_exc_mv"], e_inh_e_mv=p["e_inh_e_mv"],
        v_rest_i_mv=p["v_rest_i_mv"], v_reset_i_mv=p["v_reset_i_mv"], v_thresh_i_mv=p["v_thresh_i_mv"],
        tau_mem_i_ms=p["tau_mem_i_ms"], e_inh_i_mv=p["e_inh_i_mv"],
        decay_ge=math.exp(-dt / p["tau_ge_ms"]), decay_gi=math.exp(-dt / p["tau_gi_ms"]),
        theta_plus_mv=p["theta_plus_mv"], decay_theta=math.exp(-dt / p["tau_theta_ms"]),
        w_ei=p["w_ei"], w_ie=p["w_ie"], nu_pre=p["nu_pre"], nu_post=p["nu_post"],
        decay_pre=math.exp(-dt / p["tau_pre_ms"]), decay_post1=math.exp(-dt / p["tau_post1_ms"]),
        decay_post2=math.exp(-dt / p["tau_post2_ms"]), w_max=p["w_max"],
        refrac_e_steps=refractory_steps(p["refrac_e_ms"], dt), refrac_i_steps=refractory_steps(p["refrac_i_ms"], dt),
        # the input protocol (fit_samples / transform_samples); model defaults when not given
        max_rate_hz=p.get("max_rate_hz", 63.75), rate_boost_hz=p.get("rate_boost_hz", 32.0),
        weight_sum=p.get("weight_sum", 78.0))
    return np.array([float(vals[k]) for k in CONSTANTS], np.float64)


class LIFState:
    """Every state array of the E/I network (float64; refractory counters int64), at rest.

    ``v_e, ge_e, gi_e, ref_e, theta, x_post1, x_post2, spk_e`` have n_neurons entries (E),
    ``v_i, ge_i, gi_i, ref_i, zeros_i, spk_i`` n_neurons (I), ``x_pre`` n_inputs; ``f_e``, ``f_i``
    are scratch. ``ref_*`` is the
    number of refractory steps left; ``spk_*`` are the spike flags of the last step.
    """

    def __init__(self, n_inputs, n_neurons, v_rest_e, v_rest_i, theta=None):
        n = int(n_neurons)
        self.v_e = np.full(n, float(v_rest_e))
        self.ge_e = np.zeros(n)
        self.gi_e = np.zeros(n)
        self.ref_e = np.zeros(n, np.int64)
        self.theta = np.zeros(n) if theta is None else np.array(theta, np.float64)
        self.v_i = np.full(n, float(v_rest_i))
        self.ge_i = np.zeros(n)
        self.gi_i = np.zeros(n)
        self.ref_i = np.zeros(n, np.int64)
        self.zeros_i = np.zeros(n)
        self.x_pre = np.zeros(int(n_inputs))
        self.x_post1 = np.zeros(n)
        self.x_post2 = np.zeros(n)
        self.spk_e = np.zeros(n, np.uint8)
        self.spk_i = np.zeros(n, np.uint8)
        self.f_e = np.zeros(n)
        self.f_i = np.zeros(n)

    def reset(self, v_rest_e, v_rest_i):
        """Back to rest (theta kept)."""
        self.v_e[:] = v_rest_e
        self.v_i[:] = v_rest_i
        for a in (self.ge_e, self.gi_e, self.ge_i, self.gi_i, self.x_pre, self.x_post1, self.x_post2):
            a[:] = 0.0
        self.ref_e[:] = 0
        self.ref_i[:] = 0


@njit(**njit_options())
def lif_step(v, ge, gi, ref, theta, v_rest, v_reset, v_thresh, tau_m, e_exc, e_inh, dt, decay_ge, decay_gi,
             refrac_steps, spiked, f):
    """One step of a population of conductance-based LIF neurons, in place; returns the number
    of spikes (flags in ``spiked``). ``f`` (n,) float64 is scratch.

    Refractory neurons (``ref > 0`` after the countdown) neither integrate nor spike; conductances
    decay for every neuron. The threshold is ``v_thresh + theta[j]``.

    Conductances that decay below ``stdp.TINY`` (2**-1000) are set to 0: they could not change
    anything any more, but as subnormals they would slow every step down (see ``stdp.TINY``).

    Three passes keep the arithmetic vectorisable: (1) the exponential-Euler factor
    ``exp(-dt (1 + g_e + g_i) / tau_m)`` is taken to first order in ``x = dt (g_e + g_i) / tau_m``
    where ``x < 1e-8`` (exact to double rounding: the neglected x^2/2 < 5e-17), else marked;
    (2) the marked factors get their exp call; (3) the branch-free update of V, threshold, reset,
    refractory counters and conductance decay.
    """
    n = v.shape[0]
    c = dt / tau_m
    leak = math.exp(-c)
    for j in range(n):
        x = c * (ge[j] + gi[j])
        f[j] = leak * (1.0 - x) if x < 1e-8 else -1.0
    for j in range(n):
        if f[j] < 0.0:
            f[j] = math.exp(-c * (1.0 + ge[j] + gi[j]))
    n_spk = 0
    for j in range(n):
        r = ref[j]
        r = r - 1 if r > 0 else r
        g_e = ge[j]
        g_i = gi[j]
        v_inf = (v_rest + g_e * e_exc + g_i * e_inh) / (1.0 + g_e + g_i)
        vo = v[j]
        vn = v_inf + (vo - v_inf) * f[j]
        vn = vn if r == 0 else vo
        sp = (r == 0) & (vn > v_thresh + theta[j])
        v[j] = v_reset if sp else vn
        ref[j] = refrac_steps if sp else r
        spiked[j] = np.uint8(1) if sp else np.uint8(0)
        n_spk += 1 if sp else 0
        g_e = g_e * decay_ge
        g_i = g_i * decay_gi
        ge[j] = g_e if abs(g_e) >= TINY else 0.0  # no parking in the subnormals (stdp.TINY)
        gi[j] = g_i if abs(g_i) >= TINY else 0.0
    return n_spk


@njit(**njit_options())
def _present(W, indptr, indices, thr, active, pthr, pmask, n_active, key, n_present, n_rest, c, learn, v_e, ge_e, gi_e, ref_e,
             theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e, spk_i, f_e, f_i, counts):
    """The step loop of :func:`present`. Input spikes of the ``n_present`` input steps come from the
    CSR trains ``indptr, indices`` when ``n_active < 0``, else straight from the counter-based
    generator (:mod:`bioreps.kernels.poisson`) keyed ``key``: the ``n_active`` input pairs
    ``active`` with a non-zero threshold in ``thr`` (uint64, even length), in increasing order, so
    the inputs of a step are taken in increasing index order, as the CSR trains list them;
    ``pthr`` (2, n_pairs) uint64 holds the active pairs' two thresholds, ``pmask`` (n_pairs,)
    uint8 is scratch."""
    n = v_e.shape[0]
    n_pairs = thr.shape[0] // 2
    dt = c[DT]
    re = np.int64(c[REFRAC_E])
    ri = np.int64(c[REFRAC_I])
    w_ie = c[W_IE]
    w_ei = c[W_EI]
    nu_pre = c[NU_PRE]
    w_max = c[W_MAX]
    for j in range(n):
        counts[j] = 0
    total = 0
    for s in range(n_present + n_rest):
        if learn:
            decay(theta, c[DECAY_THETA])
            decay_flush(x_pre, c[DECAY_PRE])
            decay_flush(x_post1, c[DECAY_POST1])
            decay_flush(x_post2, c[DECAY_POST2])
        ne = lif_step(v_e, ge_e, gi_e, ref_e, theta, c[V_REST_E], c[V_RESET_E], c[V_THRESH_E], c[TAU_E], c[E_EXC],
                      c[E_INH_E], dt, c[DECAY_GE], c[DECAY_GI], re, spk_e, f_e)
        ni = lif_step(v_i, ge_i, gi_i, ref_i, zeros_i, c[V_REST_I], c[V_RESET_I], c[V_THRESH_I], c[TAU_I], c[E_EXC],
                      c[E_INH_I], dt, c[DECAY_GE], c[DECAY_GI], ri, spk_i, f_i)
        # input spikes: propagate, then depress
        if s < n_present:
            if n_active < 0:
                for k in range(indptr[s], indptr[s + 1]):
                    i = indices[k]
                    if learn:
                        propagate_pre(W, i, ge_e, x_pre, x_post1, nu_pre, w_max)
                    else:
                        for j in range(n):
                            ge_e[j] += W[i, j]
            else:
                # draw every active pair's two spikes (branch-free: vectorises), then propagate them
                for a in range(n_active):
                    h = _pair_bits(key, s, active[a], n_pairs)
                    pmask[a] = np.uint8((h & MASK32) < pthr[0, a]) | (np.uint8((h >> _S32) < pthr[1, a]) << 1)
                for a in range(n_active):
                    if pmask[a] != 0:
                        k = active[a]
                        for i in range(2):
                            if (pmask[a] >> i) & 1:
                                if learn:
                                    propagate_pre(W, 2 * k + i, ge_e, x_pre, x_post1, nu_pre, w_max)
                                else:
                                    for j in range(n):
                                        ge_e[j] += W[2 * k + i, j]
        # E spikes: excite the partner I neuron, adapt theta, potentiate
        if ne > 0:
            for j in range(n):
                if spk_e[j]:
                    ge_i[j] += w_ei
                    if s < n_present:
                        counts[j] += 1
                        total += 1
                    if learn:
                        theta[j] += c[THETA_PLUS]
                        stdp_post(W, j, x_pre, x_post1, x_post2, c[NU_POST], w_max)
        # I spikes: inhibit every E neuron but the partner
        if ni > 0:
            for j in range(n):
                gi_e[j] += w_ie * (ni - spk_i[j])
    return total


_NO_THR = np.zeros(2, np.uint64)
_NO_ACTIVE = np.zeros(1, np.int64)
_NO_PTHR = np.zeros((2, 1), np.uint64)


@njit(**njit_options())
def present(W, indptr, indices, n_rest, c, learn, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, zeros_i,
            x_pre, x_post1, x_post2, spk_e, spk_i, f_e, f_i, counts):
    """One presentation: ``len(indptr) - 1`` steps with the given input spikes, then ``n_rest``
    steps without input. ``W`` (n_inputs, n_neurons) float64 learns in place when ``learn``
    (STDP, theta); otherwise W, theta and the traces are left alone. ``counts`` (n_neurons,) int64
    receives the E spikes of the presentation steps (rest excluded). Returns their total."""
    return _present(W, indptr, indices, _NO_THR, _NO_ACTIVE, _NO_PTHR, np.zeros(1, np.uint8), -1, np.uint64(0), indptr.shape[0] - 1, n_rest, c,
                    learn, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2,
                    spk_e, spk_i, f_e, f_i, counts)


@njit(**njit_options(fastmath=False))
def _row_thresholds(x, c, attempt, thr, active, pthr):
    """The generator's thresholds of one row at ``attempt`` (rates ``x * (max_rate_hz + attempt *
    rate_boost_hz)`` Hz), as :func:`bioreps.kernels.poisson.spike_thresholds` computes them (plain
    IEEE arithmetic, no fast-math: the same bits), into ``thr`` (even length), and the pairs with a
    non-zero threshold into ``active`` (their two thresholds into ``pthr``); returns their number, or -1 if a probability is not in
    [0, 1] (or NaN)."""
    rate = c[MAX_RATE] + attempt * c[RATE_BOOST]
    dt_s = c[DT] / 1000.0
    n_in = x.shape[0]
    bad = False
    for i in range(n_in):
        p = (x[i] * rate) * dt_s
        if not (p >= 0.0 and p <= 1.0):
            bad = True
        thr[i] = _spike_threshold(p)
    for i in range(n_in, thr.shape[0]):
        thr[i] = 0
    if bad:
        return -1
    n_active = 0
    for k in range(thr.shape[0] // 2):
        if thr[2 * k] != 0 or thr[2 * k + 1] != 0:
            active[n_active] = k
            pthr[0, n_active] = thr[2 * k]
            pthr[1, n_active] = thr[2 * k + 1]
            n_active += 1
    return n_active


@njit(**njit_options())
def _fit_row(W, x, seed, phase, index, n_present, n_rest, c, min_spikes, max_retries, v_e, ge_e, gi_e, ref_e,
             theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e, spk_i, f_e, f_i, cnt, colsum,
             thr, active, pthr, pmask, out):
    """One row of :func:`fit_samples`, every attempt; ``out`` (2,) int64 receives (attempts, E
    spikes of the last attempt). Returns False if a spike probability left [0, 1]."""
    total = 0
    attempt = 0
    for attempt in range(max_retries + 1):
        n_active = _row_thresholds(x, c, attempt, thr, active, pthr)
        if n_active < 0:
            return False
        key = _stream_key(seed, phase, index, attempt)
        normalize_columns(W, c[WEIGHT_SUM], colsum)
        total = _present(W, _NO_ACTIVE, _NO_ACTIVE, thr, active, pthr, pmask, n_active, key, n_present, n_rest, c, True, v_e,
                         ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e,
                         spk_i, f_e, f_i, cnt)
        if total >= min_spikes:
            break
    out[0] = attempt + 1
    out[1] = total
    return True


@njit(**njit_options())
def _transform_row(W, x, seed, phase, index, n_present, n_rest, c, min_spikes, max_retries, v_e, ge_e, gi_e, ref_e,
                   theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e, spk_i, f_e, f_i, cnt,
                   thr, active, pthr, pmask, out):
    """One row of :func:`transform_samples` from the state the caller reset; as :func:`_fit_row`."""
    total = 0
    attempt = 0
    for attempt in range(max_retries + 1):
        if attempt:  # the previous attempt's rest
            _present(W, _NO_ACTIVE, _NO_ACTIVE, thr, active, pthr, pmask, 0, np.uint64(0), 0, n_rest, c, False, v_e, ge_e, gi_e,
                     ref_e, theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e, spk_i, f_e, f_i,
                     cnt)
        n_active = _row_thresholds(x, c, attempt, thr, active, pthr)
        if n_active < 0:
            return False
        key = _stream_key(seed, phase, index, attempt)
        total = _present(W, _NO_ACTIVE, _NO_ACTIVE, thr, active, pthr, pmask, n_active, key, n_present, 0, c, False, v_e, ge_e,
                         gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, zeros_i, x_pre, x_post1, x_post2, spk_e, spk_i,
                         f_e, f_i, cnt)
        if total >= min_spikes:
            break
    out[0] = attempt + 1
    out[1] = total
    return True


def run_presentation(W, indptr, indices, n_rest, constants, learn, state, counts):
    """Host driver: :func:`present` on a :class:`LIFState`; the CUDA twin shares this
    signature. ``W`` must be a C-contiguous float64 (n_inputs, n_neurons) array (updated in place
    when ``learn``); ``counts`` an int64 (n_neurons,) array (overwritten). Returns the number of
    E spikes during the presentation steps."""
    st = state
    if W.dtype != np.float64 or W.ndim != 2 or not W.flags.c_contiguous:
        raise ValueError("W must be a C-contiguous 2-D float64 array")
    if W.shape != (st.x_pre.shape[0], st.v_e.shape[0]) or counts.shape != st.v_e.shape:
        raise ValueError(f"W {W.shape}, counts {counts.shape} and the state ({st.x_pre.shape[0]} inputs, "
                         f"{st.v_e.shape[0]} neurons) disagree")
    if indptr.ndim != 1 or indptr.shape[0] < 1 or (indices.size and (indices.min() < 0 or indices.max() >= W.shape[0])):
        raise ValueError("indptr/indices are not spike trains of this network's inputs")
    return present(W, indptr, indices, int(n_rest), constants, bool(learn), st.v_e, st.ge_e, st.gi_e, st.ref_e,
                   st.theta, st.v_i, st.ge_i, st.gi_i, st.ref_i, st.zeros_i, st.x_pre, st.x_post1, st.x_post2,
                   st.spk_e, st.spk_i, st.f_e, st.f_i, counts)


def _check_samples(W, X, counts, n_present, n_rest, constants, min_spikes, max_retries):
    """Shared checks of the sample drivers (both backends): shapes, dtypes, counts."""
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (n_inputs, n_neurons), got shape {W.shape}")
    X = np.asarray(X)
    if X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(f"X must be a 2-D float64 array with {W.shape[0]} columns, got {X.dtype} {X.shape}")
    if not isinstance(counts, np.ndarray) or counts.dtype != np.float32 or counts.shape != (X.shape[0], W.shape[1]):
        raise ValueError(f"counts must be a float32 array of shape {(X.shape[0], W.shape[1])}")
    if int(n_present) < 1 or int(n_rest) < 0 or int(min_spikes) < 0 or int(max_retries) < 0:
        raise ValueError("n_present must be >= 1; n_rest, min_spikes and max_retries >= 0")
    if np.asarray(constants).shape != (len(CONSTANTS),):
        raise ValueError(f"constants must be the {len(CONSTANTS)} values of make_constants()")
    return np.ascontiguousarray(X)


def _attempt_rates(x, c, attempt):
    return x * (c[MAX_RATE] + attempt * c[RATE_BOOST])


def _check_keys(seed, phase, first_index, n):
    """The generator's key fields as ints, checked as :func:`~bioreps.kernels.poisson.stream_key`
    checks them (every row's index included)."""
    stream_key(seed, phase, first_index, 0)
    if n:
        stream_key(seed, phase, int(first_index) + n - 1, 0)
    return int(seed), int(phase), int(first_index)


def _check_state(W, st):
    if W.shape != (st.x_pre.shape[0], st.v_e.shape[0]):
        raise ValueError(f"W {W.shape} and the state ({st.x_pre.shape[0]} inputs, {st.v_e.shape[0]} neurons) disagree")


def _bad_rates(x, c):
    """Raise the error of :func:`~bioreps.kernels.poisson.counter_spike_trains` for a row whose
    spike probabilities left [0, 1] at some attempt."""
    for attempt in range(1 << 20):
        _spike_probabilities(_attempt_rates(x, c, attempt), c[DT])
    raise ValueError("input rates out of range")  # pragma: no cover


def _check_driver_args(W, X, seed, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries,
                       counts):
    """Checks shared by :func:`fit_samples` and :func:`transform_samples`; returns the checked
    ``(X, constants, seed, phase, first_index)``."""
    if W.dtype != np.float64 or not W.flags.c_contiguous:
        raise ValueError("W must be a C-contiguous 2-D float64 array")
    X = _check_samples(W, X, counts, n_present, n_rest, constants, min_spikes, max_retries)
    seed, phase, first_index = _check_keys(seed, phase, first_index, X.shape[0])
    return X, np.ascontiguousarray(constants, np.float64), seed, phase, first_index


def _row_scratch(n_inputs):
    """Scratch of the per-row drivers, allocated once per call: per-input spike thresholds (padded
    to whole pairs), the active pairs, their thresholds, the pair spike mask and the
    ``[presentations, spikes]`` result of a row."""
    thr = np.zeros(n_inputs + (n_inputs & 1), np.uint64)
    n_pairs = thr.shape[0] // 2
    return (thr, np.zeros(n_pairs, np.int64), np.zeros((2, n_pairs), np.uint64), np.zeros(n_pairs, np.uint8),
            np.zeros(2, np.int64))


def _drive_rows(X, c, counts, cnt, out, callback, run_row):
    """The per-row loop of both drivers: ``run_row(r)`` runs row r's presentations (False: its
    rates left [0, 1], raised here); then the row's counts, presentations and callback."""
    attempts = np.zeros(X.shape[0], np.int64)
    for r in range(X.shape[0]):
        if not run_row(r):
            _bad_rates(X[r], c)
        counts[r] = cnt
        attempts[r] = out[0]
        if callback is not None:
            callback(r + 1, int(out[1]))
    return attempts


def fit_samples(W, X, seed, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries, state,
                counts, callback=None):
    """Train on the rows of ``X`` in order (the layer's protocol); the CUDA twin has this signature.

    Row ``r``, attempt ``a``: inputs fire at ``X[r] * (max_rate_hz + a * rate_boost_hz)`` Hz with
    spikes from :func:`~bioreps.kernels.poisson.counter_spike_trains` keyed ``stream_key(seed,
    phase, first_index + r, a)``; ``W``'s columns are renormalised to ``weight_sum`` before every
    presentation, which then runs ``n_present`` input steps and ``n_rest`` rest steps with STDP and
    theta on; a presentation with fewer than ``min_spikes`` E spikes is repeated at the next rate,
    at most ``max_retries`` times. The state carries over between presentations.

    ``W`` (n_inputs, n_neurons) float64 C-contiguous and ``state`` (:class:`LIFState`; its
    ``theta`` learns) are updated in place; ``counts`` (n, n_neurons) float32 receives each row's E
    spikes of its last attempt. ``callback(rows_done, spikes_of_the_last_row)`` is called after
    each row (None: no call). Returns the presentations per row, (n,) int64 (1 = no retry).
    """
    X, c, seed, phase, first_index = _check_driver_args(W, X, seed, phase, first_index, n_present, n_rest,
                                                         constants, min_spikes, max_retries, counts)
    N = W.shape[1]
    cnt = np.zeros(N, np.int64)
    colsum = np.zeros(N, np.float64)
    thr, active, pthr, pmask, out = _row_scratch(W.shape[0])
    st = state
    _check_state(W, st)

    def run_row(r):
        return _fit_row(W, X[r], seed, phase, first_index + r, int(n_present), int(n_rest), c, int(min_spikes),
                        int(max_retries), st.v_e, st.ge_e, st.gi_e, st.ref_e, st.theta, st.v_i, st.ge_i, st.gi_i,
                        st.ref_i, st.zeros_i, st.x_pre, st.x_post1, st.x_post2, st.spk_e, st.spk_i, st.f_e, st.f_i,
                        cnt, colsum, thr, active, pthr, pmask, out)

    return _drive_rows(X, c, counts, cnt, out, callback, run_row)


def transform_samples(W, theta, X, seed, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries,
                      counts, callback=None, continuous=False):
    """E spike counts of every row of ``X`` with learning and theta frozen. Spikes, rates and the
    low-activity retry as in :func:`fit_samples` (a retry follows the previous attempt's rest
    steps). ``W`` and ``theta`` are read only; ``counts`` (n, n_neurons) float32 receives the
    counts. Returns the presentations per row.

    Two protocols. ``continuous=False`` (default): every row starts from rest, so rows are
    independent (and run in parallel on a GPU); the rest steps after a row's last attempt change
    nothing and are skipped. ``continuous=True``: the released Diehl & Cook code's test protocol,
    the images run back to back, each followed by its ``n_rest`` rest steps in which the state
    decays (no reset); the first row starts from rest. Row ``r``'s counts then depend on the rows
    before it."""
    X, c, seed, phase, first_index = _check_driver_args(W, X, seed, phase, first_index, n_present, n_rest,
                                                         constants, min_spikes, max_retries, counts)
    N = W.shape[1]
    st = LIFState(W.shape[0], N, c[V_REST_E], c[V_REST_I], theta=theta)
    cnt = np.zeros(N, np.int64)
    thr, active, pthr, pmask, out = _row_scratch(W.shape[0])

    rest_cnt = np.zeros(N, np.int64)  # spikes during the rest after a row: not the row's counts

    def run_row(r):
        if not continuous or r == 0:
            st.reset(c[V_REST_E], c[V_REST_I])  # the reset protocol: every row starts from rest
        ok = _transform_row(W, X[r], seed, phase, first_index + r, int(n_present), int(n_rest), c, int(min_spikes),
                            int(max_retries), st.v_e, st.ge_e, st.gi_e, st.ref_e, st.theta, st.v_i, st.ge_i,
                            st.gi_i, st.ref_i, st.zeros_i, st.x_pre, st.x_post1, st.x_post2, st.spk_e, st.spk_i,
                            st.f_e, st.f_i, cnt, thr, active, pthr, pmask, out)
        if ok and continuous and int(n_rest) > 0:  # the row's rest: the next image starts from what decays
            _present(W, _NO_ACTIVE, _NO_ACTIVE, thr, active, pthr, pmask, 0, np.uint64(0), 0, int(n_rest), c, False,
                     st.v_e, st.ge_e, st.gi_e, st.ref_e, st.theta, st.v_i, st.ge_i, st.gi_i, st.ref_i, st.zeros_i,
                     st.x_pre, st.x_post1, st.x_post2, st.spk_e, st.spk_i, st.f_e, st.f_i, rest_cnt)
        return ok

    return _drive_rows(X, c, counts, cnt, out, callback, run_row)
