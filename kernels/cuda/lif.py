"""Conductance-based LIF E/I network of Diehl & Cook (2015) with STDP: Numba-CUDA twin of ``kernels/cpu/lif.py``.

The host drivers have the CPU module's names, signatures and semantics: :func:`run_presentation`
(one presentation of given CSR spike trains), :func:`fit_samples` (the layer's training protocol)
and :func:`transform_samples` (frozen network, every sample from rest), plus :class:`LIFState`
(the state on the device, with the CPU class's constructor and attribute names) and
:func:`make_constants` (the CPU function: the same packed constants).

Kernels
-------
* :func:`_train_kernel` (``fit_samples``, ``run_presentation``): ONE persistent block runs every
  presentation of a chunk of samples: for each sample and attempt, the column normalisation
  (thread j sums column j over the inputs in order, as the CPU), then all ``n_present + n_rest``
  steps, then the low-activity retry decided on the device from the block's spike count. ``W``,
  theta, the traces and the neuron state stay in global memory on the device for the whole call.
* :func:`_transform_kernel` (``transform_samples``): one block per sample (blocks stride over the
  samples), ``W`` and theta read only, each thread's neurons' state in registers (``NPT =
  ceil(N / block)`` neurons per thread, a compile-time constant), the retry inside the block.

Both draw the input spikes on the device from the counter-based generator of
:mod:`bioreps.kernels.poisson` (the functions compiled with ``cuda.jit(device=True)``), exactly the
spikes the CPU path gets from :func:`~bioreps.kernels.poisson.counter_spike_trains`;
``run_presentation`` instead takes CSR trains, turned into per-step bit masks on the host.

One time step, threads of the block (``t`` over ``nt``): input pair ``k`` (inputs 2k, 2k+1) is
owned by thread ``k mod nt``, neuron ``j`` by thread ``j mod nt``.

A. inputs: decay ``x_pre`` (learning), draw the spikes, set ``x_pre = 1`` and the input's bit in
   the shared step mask (atomic OR); neurons: decay theta and the post traces (learning), the E and
   I exponential-Euler updates of :func:`bioreps.kernels.cpu.lif.lif_step` (the same float64
   expressions, including its first-order shortcut of the exp), threshold, reset, refractory
   counters; E and I spike counts into shared counters, E spikes into a shared mask.
   -- ``syncthreads`` --
B. neuron j: ``g_e[j] += W[i, j]`` for the inputs that spiked, in increasing ``i`` (the masks'
   bit order, the CPU's order, so the float64 sums are the same), each followed by the STDP
   depression of ``W[i, j]``; E spike: ``g_i[j] += w_ei``, ``theta[j] += theta_plus``; I spikes:
   ``g_i,E[j] += w_ie * (n_I - spiked_I[j])``.
C. only on steps with E spikes while learning (block-uniform): -- sync -- input ``i``:
   potentiation ``W[i, j] += nu_post x_post2[j] x_pre[i]`` for every E spiker ``j`` -- sync --
   neuron j: ``x_post1 = x_post2 = 1`` if it spiked.

The step masks and counters are triple-buffered by step (step s writes buffer s mod 3 and clears
buffer s+1 mod 3), so steps without E spikes need a single ``syncthreads``: every element is
written by one thread (its owner) in A and B, ``W[:, j]`` in B only by thread j.

Exactness: the same float64 operations in the same order as the CPU kernel, so spike counts are
identical and W, theta and the traces agree to rounding: the CPU kernel is compiled with
fast-math flags (``contract``: fused multiply-adds, ``reassoc``) and the GPU contracts to FMA too,
so the last bits of W may differ (about 1e-16 per operation; ~1e-12 after a presentation); a spike
count could differ only if a membrane potential landed within such an error of the threshold.
Under the simulator (plain IEEE float64) the CUDA path reproduces the CPU kernel to ~1e-15.

Block size: :data:`BLOCK` when set (tests), else :data:`CUDA_BLOCK` (``$BIOREPS_CUDA_BLOCK``,
default 128). Kernels are compiled lazily per (input mask words, neurons per thread), and run in
the simulator under ``NUMBA_ENABLE_CUDASIM=1`` (where NumPy's uint64 scalars warn on the
intended wrap-around of the generator's arithmetic: this module silences that one warning there).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import config, cuda

from .. import _config
from ..cpu.lif import (CONSTANTS, DECAY_GE, DECAY_GI, DECAY_POST1, DECAY_POST2, DECAY_PRE, DECAY_THETA, DT, E_EXC,
                       E_INH_E, E_INH_I, MAX_RATE, NU_POST, NU_PRE, RATE_BOOST, REFRAC_E, REFRAC_I, TAU_E, TAU_I,
                       THETA_PLUS, V_REST_E, V_REST_I, V_RESET_E, V_RESET_I, V_THRESH_E, V_THRESH_I, W_EI, W_IE,
                       W_MAX, WEIGHT_SUM, _check_samples, make_constants)
from ..cpu.lif import LIFState as _HostState
from ..poisson import MASK32, generator_functions
from ._common import MAX_GRID, _check_block, _device_array

__all__ = ["CONSTANTS", "make_constants", "LIFState", "run_presentation", "fit_samples", "fit_samples_many",
           "transform_samples", "BLOCK", "MAX_BLOCK_TRAIN", "MAX_BLOCK_TRAIN_MANY", "MAX_BLOCK_TRANSFORM", "max_block",
           "TRAIN_CHUNK", "TRANSFORM_CHUNK"]

BLOCK = None  # threads per block; None: _config.CUDA_BLOCK (read at call time)
#: the largest block each kernel launches with: its registers per thread times the block must fit
#: one block's 64K registers, or the driver refuses the launch ("too many resources requested").
#: ptxas (sm_80 / sm_90, N = 100..6400, 784 and 1568 inputs) reports 116-126 registers for the
#: training kernel (so at most 512 threads) and up to 255 for the transform kernel, whose
#: per-thread arrays grow with ceil(N / block) (at most 256 threads: 255 registers x 256 fit
#: whatever N is). A larger requested block is lowered to these; tests/test_cuda_compile.py
#: assembles both kernels in CI and fails if a future change breaks the bound.
MAX_BLOCK_TRAIN = 512
MAX_BLOCK_TRANSFORM = 256
#: the many-network training kernel (one block per network) indexes a member axis and row slices:
#: ptxas reports 148 registers (sm_90), so at most 416 threads; blocks of at most 384
MAX_BLOCK_TRAIN_MANY = 384


def max_block(kernel) -> int:
    """The largest block the ``"train"``, ``"train_many"`` or ``"transform"`` kernel launches with."""
    limits = {"train": MAX_BLOCK_TRAIN, "train_many": MAX_BLOCK_TRAIN_MANY, "transform": MAX_BLOCK_TRANSFORM}
    if kernel not in limits:
        raise ValueError(f"kernel must be one of {sorted(limits)}, got {kernel!r}")
    return limits[kernel]
TRAIN_CHUNK = 64  # samples per launch of the training kernel (progress callback between launches)
TRANSFORM_CHUNK = 16384  # samples per launch of the transform kernel

if config.ENABLE_CUDASIM:  # NumPy uint64 scalars warn when the generator's products wrap (intended)
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)

_mix64, _stream_key, _pair_bits, _spike_threshold = generator_functions(cuda.jit(device=True))
_S32 = np.uint64(32)
_U0 = np.uint32(0)
_U1 = np.uint32(1)
_U0_64 = np.uint64(0)


# --------------------------------------------------------------------------- device functions

@cuda.jit(device=True)
def _lif(v, ge, gi, ref, theta, v_rest, v_reset, v_thresh, c, leak, e_exc, e_inh, decay_ge, decay_gi, refrac):
    """One neuron's step, the arithmetic of :func:`bioreps.kernels.cpu.lif.lif_step` (``c = dt /
    tau_m``, ``leak = exp(-c)``); returns (v, g_e, g_i, refractory steps left, spiked)."""
    x = c * (ge + gi)
    if x < 1e-8:
        f = leak * (1.0 - x)
    else:
        f = math.exp(-c * (1.0 + ge + gi))
    r = ref
    if r > 0:
        r -= 1
    v_inf = (v_rest + ge * e_exc + gi * e_inh) / (1.0 + ge + gi)
    vn = v_inf + (v - v_inf) * f
    sp = False
    if r == 0:
        if vn > v_thresh + theta:
            sp = True
            vn = v_reset
            r = refrac
    else:
        vn = v
    return vn, ge * decay_ge, gi * decay_gi, r, sp


@cuda.jit(device=True)
def _lif_e(v, ge, gi, ref, theta, c, ce, leak, refrac):
    """:func:`_lif` with the E population's constants from ``c``."""
    return _lif(v, ge, gi, ref, theta, c[V_REST_E], c[V_RESET_E], c[V_THRESH_E], ce, leak, c[E_EXC], c[E_INH_E],
                c[DECAY_GE], c[DECAY_GI], refrac)


@cuda.jit(device=True)
def _lif_i(v, ge, gi, ref, c, ci, leak, refrac):
    """:func:`_lif` with the I population's constants from ``c`` (no adaptive threshold)."""
    return _lif(v, ge, gi, ref, 0.0, c[V_REST_I], c[V_RESET_I], c[V_THRESH_I], ci, leak, c[E_EXC], c[E_INH_I],
                c[DECAY_GE], c[DECAY_GI], refrac)


@cuda.jit(device=True)
def _set_bit(mask, b, i):
    cuda.atomic.or_(mask, (b, i >> 5), _U1 << np.uint32(i & 31))


@cuda.jit(device=True)
def _step_constants(c):
    """Per-step constants both kernels derive from ``c``: (dt, dt in s, dt / tau_e, E leak,
    dt / tau_i, I leak, E and I refractory steps, w_ei, w_ie)."""
    dt = c[DT]
    ce = dt / c[TAU_E]
    ci = dt / c[TAU_I]
    return (dt, dt / 1000.0, ce, math.exp(-ce), ci, math.exp(-ci), np.int64(c[REFRAC_E]), np.int64(c[REFRAC_I]),
            c[W_EI], c[W_IE])


@cuda.jit(device=True)
def _pair_spikes(X, r, k, n_in, rate, dt_s, key, s, n_pairs):
    """Spikes of inputs 2k and 2k+1 of row r at step s (the counter-based generator)."""
    i0 = 2 * k
    th0 = _spike_threshold((X[r, i0] * rate) * dt_s)
    th1 = _U0_64
    if i0 + 1 < n_in:
        th1 = _spike_threshold((X[r, i0 + 1] * rate) * dt_s)
    sp0 = False
    sp1 = False
    if th0 != _U0_64 or th1 != _U0_64:
        h = _pair_bits(key, s, k, n_pairs)
        sp0 = (h & MASK32) < th0
        sp1 = (h >> _S32) < th1
    return sp0, sp1


# --------------------------------------------------------------------------- kernels

_train_cache: dict = {}
_transform_cache: dict = {}


_body_cache: dict = {}


def _train_body(wi, wn):
    """The device function one training block runs: every presentation of the rows of ``X`` (or
    of ``masks``) for ONE network, its arrays as :func:`_train_kernel` takes them, then the
    block's shared scratch ``imask`` (3, wi), ``emask`` (3, wn), ``cnt`` (3, 2), ``tot`` (1,).
    :func:`_train_kernel` (one network, one block) and :func:`_train_many_kernel` (block m:
    network m) both call it, so an ensemble member runs exactly the solo network's code."""
    key = (int(wi), int(wn))
    dev = _body_cache.get(key)
    if dev is not None:
        return dev
    WI, WN = key

    @cuda.jit(device=True)
    def body(W, X, masks, use_masks, seed, phase, first_index, n_present, n_rest, c, learn, normalize, min_spikes,
             max_retries, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1, x_post2, spk_e,
             spk_i, counts, attempts, imask, emask, cnt, tot):
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n_in = W.shape[0]
        N = W.shape[1]
        n_pairs = (n_in + 1) // 2
        dt, dt_s, ce, leak_e, ci, leak_i, re, ri, w_ei, w_ie = _step_constants(c)
        nu_pre = c[NU_PRE]
        nu_post = c[NU_POST]
        w_max = c[W_MAX]
        d_pre = c[DECAY_PRE]
        for r in range(counts.shape[0]):
            n_att = 0
            for attempt in range(max_retries + 1):
                cuda.syncthreads()  # everyone has read tot (and finished with W) of the last attempt
                if normalize:
                    target = c[WEIGHT_SUM]
                    for j in range(t, N, nt):
                        cs = 0.0
                        for i in range(n_in):
                            cs += W[i, j]
                        sc = 1.0
                        if cs > 0.0:
                            sc = target / cs
                        for i in range(n_in):
                            W[i, j] *= sc
                for w in range(t, 3 * WI, nt):
                    imask[w // WI, w % WI] = _U0
                for w in range(t, 3 * WN, nt):
                    emask[w // WN, w % WN] = _U0
                if t == 0:
                    tot[0] = 0
                    for q in range(3):
                        cnt[q, 0] = 0
                        cnt[q, 1] = 0
                for j in range(t, N, nt):
                    counts[r, j] = 0
                rate = c[MAX_RATE] + attempt * c[RATE_BOOST]
                key = _stream_key(seed, phase, first_index + r, attempt)
                cuda.syncthreads()
                for s in range(n_present + n_rest):
                    b = s % 3
                    bn = (s + 1) % 3
                    # ---- A: clear the next buffers; inputs; neurons
                    for w in range(t, WI, nt):
                        imask[bn, w] = _U0
                    for w in range(t, WN, nt):
                        emask[bn, w] = _U0
                    if t == 0:
                        cnt[bn, 0] = 0
                        cnt[bn, 1] = 0
                    for k in range(t, n_pairs, nt):
                        i0 = 2 * k
                        i1 = i0 + 1
                        if learn:
                            x_pre[i0] *= d_pre
                            if i1 < n_in:
                                x_pre[i1] *= d_pre
                        if s < n_present:
                            if use_masks:
                                sp0 = ((masks[s, i0 >> 5] >> np.uint32(i0 & 31)) & _U1) != _U0
                                sp1 = False
                                if i1 < n_in:
                                    sp1 = ((masks[s, i1 >> 5] >> np.uint32(i1 & 31)) & _U1) != _U0
                            else:
                                sp0, sp1 = _pair_spikes(X, r, k, n_in, rate, dt_s, key, s, n_pairs)
                            if sp0:
                                if learn:
                                    x_pre[i0] = 1.0
                                _set_bit(imask, b, i0)
                            if sp1:
                                if learn:
                                    x_pre[i1] = 1.0
                                _set_bit(imask, b, i1)
                    for j in range(t, N, nt):
                        if learn:
                            theta[j] *= c[DECAY_THETA]
                            x_post1[j] *= c[DECAY_POST1]
                            x_post2[j] *= c[DECAY_POST2]
                        ve, ge, gi, rr, sp = _lif_e(v_e[j], ge_e[j], gi_e[j], ref_e[j], theta[j], c, ce, leak_e, re)
                        v_e[j] = ve
                        ge_e[j] = ge
                        gi_e[j] = gi
                        ref_e[j] = rr
                        spk_e[j] = np.uint8(1) if sp else np.uint8(0)
                        if sp:
                            cuda.atomic.add(cnt, (b, 1), 1)
                            _set_bit(emask, b, j)
                            if s < n_present:
                                counts[r, j] += 1
                                cuda.atomic.add(tot, 0, 1)
                        ve, ge, gi, rr, sp = _lif_i(v_i[j], ge_i[j], gi_i[j], ref_i[j], c, ci, leak_i, ri)
                        v_i[j] = ve
                        ge_i[j] = ge
                        gi_i[j] = gi
                        ref_i[j] = rr
                        spk_i[j] = np.uint8(1) if sp else np.uint8(0)
                        if sp:
                            cuda.atomic.add(cnt, (b, 0), 1)
                    cuda.syncthreads()
                    # ---- B: input spikes (in increasing input order) and depression; E and I spikes
                    ni = cnt[b, 0]
                    ne = cnt[b, 1]
                    for j in range(t, N, nt):
                        if s < n_present:
                            g = ge_e[j]
                            x1 = x_post1[j]
                            for w in range(WI):
                                m = imask[b, w]
                                while m != _U0:
                                    i = w * 32 + (cuda.ffs(m) - 1)
                                    m = m & (m - _U1)
                                    wv = W[i, j]
                                    g += wv
                                    if learn:
                                        wv -= nu_pre * x1
                                        if wv < 0.0:
                                            wv = 0.0
                                        if wv > w_max:
                                            wv = w_max
                                        W[i, j] = wv
                            ge_e[j] = g
                        if spk_e[j] != 0:
                            ge_i[j] += w_ei
                            if learn:
                                theta[j] += c[THETA_PLUS]
                        if ni > 0:
                            gi_e[j] += w_ie * (ni - spk_i[j])
                    # ---- C: potentiation of the E spikers' columns, then their post traces
                    if learn and ne > 0:
                        cuda.syncthreads()
                        for k in range(t, n_pairs, nt):
                            for i in range(2 * k, min(2 * k + 2, n_in)):
                                xp = x_pre[i]
                                for w in range(WN):
                                    m = emask[b, w]
                                    while m != _U0:
                                        j = w * 32 + (cuda.ffs(m) - 1)
                                        m = m & (m - _U1)
                                        a = nu_post * x_post2[j]
                                        wv = W[i, j] + a * xp
                                        if wv < 0.0:
                                            wv = 0.0
                                        elif wv > w_max:
                                            wv = w_max
                                        W[i, j] = wv
                        cuda.syncthreads()
                        for j in range(t, N, nt):
                            if spk_e[j] != 0:
                                x_post1[j] = 1.0
                                x_post2[j] = 1.0
                cuda.syncthreads()
                n_att = attempt + 1
                if tot[0] >= min_spikes or attempt == max_retries:
                    break
            if t == 0:
                attempts[r] = n_att

    _body_cache[key] = body
    return body


def _train_kernel(wi, wn):
    """The persistent training kernel for ``wi = ceil(n_inputs / 32)`` input mask words and ``wn =
    ceil(n_neurons / 32)`` neuron mask words (shared-array shapes are compile-time constants).
    Launch with ONE block:
    ``(W, X, masks, use_masks, seed, phase, first_index, n_present, n_rest, c, learn, normalize,
    min_spikes, max_retries, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1,
    x_post2, spk_e, spk_i, counts, attempts)``; ``counts`` (n, N) int32 (n = samples), ``attempts``
    (n,) int32. Inputs come from the generator (rows of ``X``), or from ``masks`` (n_present, wi)
    uint32 bit masks when ``use_masks`` (then n must be 1)."""
    key = (int(wi), int(wn))
    kern = _train_cache.get(key)
    if kern is not None:
        return kern
    WI, WN = key
    body = _train_body(WI, WN)

    @cuda.jit
    def train(W, X, masks, use_masks, seed, phase, first_index, n_present, n_rest, c, learn, normalize, min_spikes,
              max_retries, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1, x_post2, spk_e,
              spk_i, counts, attempts):
        imask = cuda.shared.array((3, WI), np.uint32)
        emask = cuda.shared.array((3, WN), np.uint32)
        cnt = cuda.shared.array((3, 2), np.int32)  # per step buffer: [I spikes, E spikes]
        tot = cuda.shared.array(1, np.int32)  # E spikes of the presentation steps
        body(W, X, masks, use_masks, seed, phase, first_index, n_present, n_rest, c, learn, normalize, min_spikes,
             max_retries, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1, x_post2, spk_e,
             spk_i, counts, attempts, imask, emask, cnt, tot)

    _train_cache[key] = train
    return train


_many_cache: dict = {}


def _train_many_kernel(wi, wn):
    """M networks at once, block m trains network m (:func:`_train_body`) on the rows of
    ``X[xidx[m]]``: ``(W, X, xidx, masks, seed, phase, first_index, n_present, n_rest, c,
    min_spikes, max_retries, v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1, x_post2,
    spk_e, spk_i, counts, attempts)`` with a leading member axis on ``W`` (M, n_in, N), ``seed``,
    ``c``, ``max_retries`` (M,), every state field and ``counts`` (M, n, N) / ``attempts`` (M, n);
    ``X`` (G, n, n_in) holds the G distinct encodings of the images. Learning and normalisation
    on (the training protocol); ``masks`` is a placeholder (1, 1) uint32 array. Launch with M
    blocks."""
    key = (int(wi), int(wn))
    kern = _many_cache.get(key)
    if kern is not None:
        return kern
    WI, WN = key
    body = _train_body(WI, WN)

    @cuda.jit
    def train_many(W, X, xidx, masks, seed, phase, first_index, n_present, n_rest, c, min_spikes, max_retries, v_e,
                   ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i, x_pre, x_post1, x_post2, spk_e, spk_i, counts,
                   attempts):
        imask = cuda.shared.array((3, WI), np.uint32)
        emask = cuda.shared.array((3, WN), np.uint32)
        cnt = cuda.shared.array((3, 2), np.int32)
        tot = cuda.shared.array(1, np.int32)
        m = cuda.blockIdx.x
        body(W[m], X[xidx[m]], masks, False, seed[m], phase, first_index, n_present, n_rest, c[m], True, True,
             min_spikes, max_retries[m], v_e[m], ge_e[m], gi_e[m], ref_e[m], theta[m], v_i[m], ge_i[m], gi_i[m],
             ref_i[m], x_pre[m], x_post1[m], x_post2[m], spk_e[m], spk_i[m], counts[m], attempts[m], imask, emask,
             cnt, tot)

    _many_cache[key] = train_many
    return train_many


def _transform_kernel(wi, npt):
    """The transform kernel for ``wi`` input mask words and ``npt`` neurons per thread. Launch with
    blocks that stride over the samples: ``(W, theta, X, seed, phase, first_index, n_present,
    n_rest, c, min_spikes, max_retries, counts, attempts)``; ``counts`` (n, N) float32, ``attempts``
    (n,) int32. Needs ``N <= npt * blockDim``."""
    key = (int(wi), int(npt))
    kern = _transform_cache.get(key)
    if kern is not None:
        return kern
    WI, NPT = key

    @cuda.jit
    def transform(W, theta, X, seed, phase, first_index, n_present, n_rest, c, min_spikes, max_retries, counts,
                  attempts):
        imask = cuda.shared.array((3, WI), np.uint32)
        cnt = cuda.shared.array(3, np.int32)  # I spikes per step buffer
        tot = cuda.shared.array(1, np.int32)
        v_e = cuda.local.array(NPT, np.float64)
        ge_e = cuda.local.array(NPT, np.float64)
        gi_e = cuda.local.array(NPT, np.float64)
        ref_e = cuda.local.array(NPT, np.int64)
        th = cuda.local.array(NPT, np.float64)
        v_i = cuda.local.array(NPT, np.float64)
        ge_i = cuda.local.array(NPT, np.float64)
        gi_i = cuda.local.array(NPT, np.float64)
        ref_i = cuda.local.array(NPT, np.int64)
        spk_e = cuda.local.array(NPT, np.int32)
        spk_i = cuda.local.array(NPT, np.int32)
        cj = cuda.local.array(NPT, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n_in = W.shape[0]
        N = W.shape[1]
        n_pairs = (n_in + 1) // 2
        dt, dt_s, ce, leak_e, ci, leak_i, re, ri, w_ei, w_ie = _step_constants(c)
        for r in range(cuda.blockIdx.x, counts.shape[0], cuda.gridDim.x):
            for q in range(NPT):
                j = t + q * nt
                v_e[q] = c[V_REST_E]
                ge_e[q] = 0.0
                gi_e[q] = 0.0
                ref_e[q] = 0
                v_i[q] = c[V_REST_I]
                ge_i[q] = 0.0
                gi_i[q] = 0.0
                ref_i[q] = 0
                th[q] = theta[j] if j < N else 0.0
            n_att = 0
            for attempt in range(max_retries + 1):
                cuda.syncthreads()
                for w in range(t, 3 * WI, nt):
                    imask[w // WI, w % WI] = _U0
                if t == 0:
                    tot[0] = 0
                    for q in range(3):
                        cnt[q] = 0
                for q in range(NPT):
                    cj[q] = 0
                rate = c[MAX_RATE] + attempt * c[RATE_BOOST]
                key = _stream_key(seed, phase, first_index + r, attempt)
                pre = n_rest if attempt > 0 else 0  # a retry follows the previous attempt's rest
                cuda.syncthreads()
                for s2 in range(pre + n_present):
                    s = s2 - pre
                    b = s2 % 3
                    bn = (s2 + 1) % 3
                    for w in range(t, WI, nt):
                        imask[bn, w] = _U0
                    if t == 0:
                        cnt[bn] = 0
                    if s >= 0:
                        for k in range(t, n_pairs, nt):
                            sp0, sp1 = _pair_spikes(X, r, k, n_in, rate, dt_s, key, s, n_pairs)
                            if sp0:
                                _set_bit(imask, b, 2 * k)
                            if sp1:
                                _set_bit(imask, b, 2 * k + 1)
                    for q in range(NPT):
                        if t + q * nt < N:
                            ve, ge, gi, rr, sp = _lif_e(v_e[q], ge_e[q], gi_e[q], ref_e[q], th[q], c, ce, leak_e, re)
                            v_e[q] = ve
                            ge_e[q] = ge
                            gi_e[q] = gi
                            ref_e[q] = rr
                            spk_e[q] = 1 if sp else 0
                            if sp and s >= 0:
                                cj[q] += 1
                                cuda.atomic.add(tot, 0, 1)
                            ve, ge, gi, rr, sp = _lif_i(v_i[q], ge_i[q], gi_i[q], ref_i[q], c, ci, leak_i, ri)
                            v_i[q] = ve
                            ge_i[q] = ge
                            gi_i[q] = gi
                            ref_i[q] = rr
                            spk_i[q] = 1 if sp else 0
                            if sp:
                                cuda.atomic.add(cnt, b, 1)
                    cuda.syncthreads()
                    ni = cnt[b]
                    for q in range(NPT):
                        j = t + q * nt
                        if j < N:
                            if s >= 0:
                                g = ge_e[q]
                                for w in range(WI):
                                    m = imask[b, w]
                                    while m != _U0:
                                        i = w * 32 + (cuda.ffs(m) - 1)
                                        m = m & (m - _U1)
                                        g += W[i, j]
                                ge_e[q] = g
                            if spk_e[q] != 0:
                                ge_i[q] += w_ei
                            if ni > 0:
                                gi_e[q] += w_ie * (ni - spk_i[q])
                cuda.syncthreads()
                n_att = attempt + 1
                if tot[0] >= min_spikes or attempt == max_retries:
                    break
            for q in range(NPT):
                j = t + q * nt
                if j < N:
                    counts[r, j] = np.float32(cj[q])
            if t == 0:
                attempts[r] = n_att

    _transform_cache[key] = transform
    return transform


# --------------------------------------------------------------------------- host side

def _block(kernel):
    """Threads per block for ``kernel`` ("train", "train_many" or "transform"): :data:`BLOCK`, else
    ``CUDA_BLOCK``, lowered to the kernel's :func:`max_block`."""
    return min(_check_block(_config.CUDA_BLOCK if BLOCK is None else BLOCK), max_block(kernel))


_FIELDS = ("v_e", "ge_e", "gi_e", "ref_e", "theta", "v_i", "ge_i", "gi_i", "ref_i", "x_pre", "x_post1", "x_post2",
           "spk_e", "spk_i")


class LIFState:
    """The network state on the device: the CPU :class:`bioreps.kernels.cpu.lif.LIFState`'s
    constructor and attribute names (``v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, gi_i, ref_i,
    x_pre, x_post1, x_post2, spk_e, spk_i``); reading an attribute copies it to the host, assigning
    one copies it to the device (same shape; cast to the field's dtype). ``device[name]`` is the
    device array itself."""

    def __init__(self, n_inputs, n_neurons, v_rest_e, v_rest_i, theta=None):
        host = _HostState(n_inputs, n_neurons, v_rest_e, v_rest_i, theta=theta)
        self.device = {name: cuda.to_device(np.ascontiguousarray(getattr(host, name))) for name in _FIELDS}
        self.n_inputs = int(n_inputs)
        self.n_neurons = int(n_neurons)

    @classmethod
    def from_host(cls, state):
        """A device copy of a host state (any object with the attributes above)."""
        self = cls.__new__(cls)
        self.device = {name: cuda.to_device(np.ascontiguousarray(getattr(state, name))) for name in _FIELDS}
        self.n_inputs = self.device["x_pre"].shape[0]
        self.n_neurons = self.device["v_e"].shape[0]
        return self

    def copy_to(self, state):
        """Write every field into the arrays of a host state, in place."""
        for name in _FIELDS:
            getattr(state, name)[...] = self.device[name].copy_to_host()

    def reset(self, v_rest_e, v_rest_i):
        """Back to rest (theta kept)."""
        n = self.n_neurons
        for name in ("ge_e", "gi_e", "ge_i", "gi_i", "x_post1", "x_post2"):
            self.device[name].copy_to_device(np.zeros(n))
        self.device["x_pre"].copy_to_device(np.zeros(self.n_inputs))
        self.device["v_e"].copy_to_device(np.full(n, float(v_rest_e)))
        self.device["v_i"].copy_to_device(np.full(n, float(v_rest_i)))
        for name in ("ref_e", "ref_i"):
            self.device[name].copy_to_device(np.zeros(n, np.int64))
        for name in ("spk_e", "spk_i"):
            self.device[name].copy_to_device(np.zeros(n, np.uint8))


def _field(name):
    def get(self):
        return self.device[name].copy_to_host()

    def set(self, value):
        d = self.device[name]
        a = np.ascontiguousarray(value, dtype=d.dtype)
        if a.shape != d.shape:
            raise ValueError(f"{name} must have shape {d.shape}, got {a.shape}")
        d.copy_to_device(a)

    return property(get, set, doc=f"``{name}`` (a host copy; assigning uploads)")


for _name in _FIELDS:
    setattr(LIFState, _name, _field(_name))
del _name


def _device_state(state, n_inputs, n_neurons):
    """``(device state, host state to write back or None)``."""
    if isinstance(state, LIFState):
        dev, host = state, None
    else:
        missing = [name for name in _FIELDS if not hasattr(state, name)]
        if missing:
            raise TypeError(f"state must be a LIFState (CPU or CUDA); missing {missing}")
        dev, host = LIFState.from_host(state), state
    if (dev.n_inputs, dev.n_neurons) != (n_inputs, n_neurons):
        raise ValueError(f"the state ({dev.n_inputs} inputs, {dev.n_neurons} neurons) and W "
                         f"({n_inputs}, {n_neurons}) disagree")
    return dev, host


def _weights(W):
    """``(device W, host W to copy back or None)``: a host W must be C-contiguous float64."""
    dW = _device_array(W)
    if dW is None:
        if not isinstance(W, np.ndarray) or W.dtype != np.float64 or W.ndim != 2 or not W.flags.c_contiguous:
            raise ValueError("W must be a C-contiguous 2-D float64 array")
        return cuda.to_device(W), W
    if dW.dtype != np.float64 or dW.ndim != 2:
        raise ValueError("W on the device must be a 2-D float64 array")
    return dW, None


def _dummy_masks():
    return cuda.to_device(np.zeros((1, 1), np.uint32))


def _launch_train(dW, dX, masks, use_masks, seed, phase, first_index, n_present, n_rest, dc, learn, normalize,
                  min_spikes, max_retries, st, dcounts, dattempts):
    n_in, N = dW.shape
    kern = _train_kernel(-(-n_in // 32), -(-N // 32))
    d = st.device
    kern[1, _block("train")](dW, dX, masks, bool(use_masks), np.uint64(seed), int(phase), int(first_index), int(n_present),
                      int(n_rest), dc, bool(learn), bool(normalize), int(min_spikes), int(max_retries), d["v_e"],
                      d["ge_e"], d["gi_e"], d["ref_e"], d["theta"], d["v_i"], d["ge_i"], d["gi_i"], d["ref_i"],
                      d["x_pre"], d["x_post1"], d["x_post2"], d["spk_e"], d["spk_i"], dcounts, dattempts)


def run_presentation(W, indptr, indices, n_rest, constants, learn, state, counts):
    """One presentation of CSR spike trains on the device: the CPU ``run_presentation``'s
    signature and semantics (``len(indptr) - 1`` input steps, then ``n_rest`` rest steps; W learns
    in place when ``learn``; ``counts`` int64 (n_neurons,) overwritten; returns the E spikes of
    the input steps). ``W``: a host float64 C-contiguous array (copied in and back) or a device
    array (updated in place); ``state``: a CUDA :class:`LIFState` (updated on the device) or a CPU
    one (copied in and written back). The inputs of a step must be strictly increasing (as the
    generators give them)."""
    dW, hW = _weights(W)
    n_in, N = dW.shape
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if indptr.ndim != 1 or indptr.shape[0] < 1 or indices.ndim != 1 or indptr[0] != 0 \
            or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError("indptr/indices are not CSR spike trains (indptr from 0 to len(indices), non-decreasing)")
    if indices.size and (indices.min() < 0 or indices.max() >= n_in):
        raise ValueError("indptr/indices are not spike trains of this network's inputs")
    if not isinstance(counts, np.ndarray) or counts.shape != (N,) or counts.dtype != np.int64:
        raise ValueError(f"counts must be an int64 array of shape ({N},)")
    n_present = indptr.shape[0] - 1
    steps = np.repeat(np.arange(n_present), np.diff(indptr))
    if indices.size > 1 and np.any((np.diff(indices) <= 0) & (np.diff(steps) == 0)):
        raise ValueError("the inputs of a step must be strictly increasing")
    masks = np.zeros((max(n_present, 1), -(-n_in // 32)), np.uint32)
    np.bitwise_or.at(masks, (steps, indices >> 5), (np.uint32(1) << (indices & 31).astype(np.uint32)))
    st, host = _device_state(state, n_in, N)
    dcounts = cuda.device_array((1, N), np.int32)
    dattempts = cuda.device_array(1, np.int32)
    dX = cuda.to_device(np.zeros((1, 1)))
    _launch_train(dW, dX, cuda.to_device(masks), True, 0, 0, 0, n_present, n_rest,
                  cuda.to_device(np.asarray(constants, np.float64)), learn, False, 0, 0, st, dcounts, dattempts)
    counts[:] = dcounts.copy_to_host()[0]
    if hW is not None and learn:
        dW.copy_to_host(hW)
    if host is not None:
        st.copy_to(host)
    return int(counts.sum())


def fit_samples(W, X, seed, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries, state,
                counts, callback=None):
    """Train on the rows of ``X`` in order on the device: the CPU ``fit_samples``'s signature and
    semantics (normalisation before every presentation, the retry, the state carried over).
    The persistent kernel runs :data:`TRAIN_CHUNK` samples per launch, all their attempts
    included; ``callback(rows_done, spikes_of_the_last_row)`` is called after each launch.
    ``W``: host float64 C-contiguous (copied to the device once, back at the end) or a device
    array (updated in place); ``state``: a CUDA :class:`LIFState` (or a CPU one, copied in and
    written back). Returns the presentations per row, (n,) int64."""
    dW, hW = _weights(W)
    n_in, N = dW.shape
    X = _check_samples(dW, X, counts, n_present, n_rest, constants, min_spikes, max_retries)
    st, host = _device_state(state, n_in, N)
    n = X.shape[0]
    attempts = np.zeros(n, np.int64)
    if n:
        dX = cuda.to_device(X)
        dc = cuda.to_device(np.asarray(constants, np.float64))
        masks = _dummy_masks()
        chunk = max(1, int(TRAIN_CHUNK))
        dcounts = cuda.device_array((min(chunk, n), N), np.int32)
        dattempts = cuda.device_array(min(chunk, n), np.int32)
        for r0 in range(0, n, chunk):
            m = min(chunk, n - r0)
            _launch_train(dW, dX[r0:r0 + m], masks, False, seed, phase, first_index + r0, n_present, n_rest, dc,
                          True, True, min_spikes, max_retries, st, dcounts[:m], dattempts[:m])
            c_host = dcounts[:m].copy_to_host()
            counts[r0:r0 + m] = c_host
            attempts[r0:r0 + m] = dattempts[:m].copy_to_host()
            if callback is not None:
                callback(r0 + m, int(c_host[-1].sum()))
    if hW is not None:
        dW.copy_to_host(hW)
    if host is not None:
        st.copy_to(host)
    return attempts


def fit_samples_many(Ws, Xs, xidx, seeds, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries,
                     states, counts, callback=None):
    """:func:`fit_samples` for M networks at once, one block each (:func:`_train_many_kernel`):
    network m trains on the rows of ``Xs[xidx[m]]`` with ``seeds[m]``, ``constants[m]``,
    ``max_retries[m]`` and its own weights ``Ws[m]`` (host float64 (n_inputs, N), updated in
    place) and state ``states[m]`` (a CPU or CUDA :class:`LIFState`, updated); ``counts[m]``
    (n, N) float32 receives its counts. Every network must have the same shape and see the same
    number of rows (``Xs``: the distinct encodings of the same images). Each network's result is
    the one :func:`fit_samples` gives it alone, bit for bit: its block runs the same device code.
    ``callback(rows_done)`` after each launch of :data:`TRAIN_CHUNK` rows. Returns the
    presentations per row, (M, n) int64."""
    M = len(Ws)
    if M < 1:
        raise ValueError("fit_samples_many needs at least one network")
    if not (len(seeds) == len(constants) == len(max_retries) == len(states) == len(counts) == len(xidx) == M):
        raise ValueError(f"Ws, seeds, constants, max_retries, states, counts and xidx need one entry per network ({M})")
    xidx = np.asarray(xidx, np.int32)
    if xidx.min() < 0 or xidx.max() >= len(Xs):
        raise ValueError(f"xidx must index the {len(Xs)} encodings in Xs, got {xidx.tolist()}")
    shape = np.shape(Ws[0])
    for m in range(M):
        W = Ws[m]
        if not isinstance(W, np.ndarray) or W.dtype != np.float64 or W.shape != shape or not W.flags.c_contiguous:
            raise ValueError(f"Ws[{m}] must be a C-contiguous float64 array of shape {shape} (every network the same)")
    for m in range(M):
        _check_samples(Ws[m], Xs[xidx[m]], counts[m], n_present, n_rest, constants[m], min_spikes, max_retries[m])
    if len({np.shape(X) for X in Xs}) != 1:
        raise ValueError(f"every encoding in Xs must have the same shape, got {[np.shape(X) for X in Xs]}")
    X3 = np.stack([np.ascontiguousarray(X, np.float64) for X in Xs])
    n = X3.shape[1]
    n_in, N = shape
    dev = [_device_state(st, n_in, N) for st in states]
    attempts = np.zeros((M, n), np.int64)
    if n:
        dW = cuda.to_device(np.stack(Ws))
        dX = cuda.to_device(X3)
        dstate = {name: cuda.to_device(np.stack([d.device[name].copy_to_host() for d, _ in dev])) for name in _FIELDS}
        dc = cuda.to_device(np.stack([np.asarray(c, np.float64) for c in constants]))
        dseeds = cuda.to_device(np.asarray([np.uint64(s) for s in seeds], np.uint64))
        dretries = cuda.to_device(np.asarray(max_retries, np.int64))
        dxidx = cuda.to_device(xidx)
        chunk = max(1, int(TRAIN_CHUNK))
        dcounts = cuda.device_array((M, min(chunk, n), N), np.int32)
        dattempts = cuda.device_array((M, min(chunk, n)), np.int32)
        kern = _train_many_kernel(-(-n_in // 32), -(-N // 32))
        masks = _dummy_masks()
        d = dstate
        for r0 in range(0, n, chunk):
            k = min(chunk, n - r0)
            kern[M, _block("train_many")](dW, dX[:, r0:r0 + k], dxidx, masks, dseeds, int(phase), int(first_index + r0),
                                     int(n_present), int(n_rest), dc, int(min_spikes), dretries, d["v_e"], d["ge_e"],
                                     d["gi_e"], d["ref_e"], d["theta"], d["v_i"], d["ge_i"], d["gi_i"], d["ref_i"],
                                     d["x_pre"], d["x_post1"], d["x_post2"], d["spk_e"], d["spk_i"],
                                     dcounts[:, :k], dattempts[:, :k])
            c_host = dcounts[:, :k].copy_to_host()
            a_host = dattempts[:, :k].copy_to_host()
            for m in range(M):
                counts[m][r0:r0 + k] = c_host[m]
            attempts[:, r0:r0 + k] = a_host
            if callback is not None:
                callback(r0 + k)
        W_host = dW.copy_to_host()
        for m in range(M):
            Ws[m][...] = W_host[m]
        for name in _FIELDS:
            host = dstate[name].copy_to_host()
            for m, (st, _) in enumerate(dev):
                st.device[name].copy_to_device(np.ascontiguousarray(host[m]))
    for st, host in dev:
        if host is not None:
            st.copy_to(host)
    return attempts


def transform_samples(W, theta, X, seed, phase, first_index, n_present, n_rest, constants, min_spikes, max_retries,
                      counts, callback=None, continuous=False):
    """E spike counts of every row of ``X`` with the network frozen, every row from rest: the CPU
    ``transform_samples``'s signature and semantics, one block per row (blocks stride over up to
    :data:`TRANSFORM_CHUNK` rows per launch; ``callback`` after each launch). ``W`` (host float64
    or device) and ``theta`` are read only."""
    if continuous:
        raise NotImplementedError("continuous=True (images back to back, state carried over) is sequential by "
                                  "nature and runs on the CPU kernel: SpikingWTA.transform(protocol='continuous') "
                                  "uses it whatever the backend")
    dW, _ = _weights(W)
    n_in, N = dW.shape
    X = _check_samples(dW, X, counts, n_present, n_rest, constants, min_spikes, max_retries)
    theta = np.ascontiguousarray(theta, np.float64)
    if theta.shape != (N,):
        raise ValueError(f"theta must have shape ({N},), got {theta.shape}")
    n = X.shape[0]
    attempts = np.zeros(n, np.int64)
    if n == 0:
        return attempts
    block = _block("transform")
    kern = _transform_kernel(-(-n_in // 32), -(-N // block))
    dtheta = cuda.to_device(theta)
    dc = cuda.to_device(np.asarray(constants, np.float64))
    chunk = max(1, int(TRANSFORM_CHUNK))
    for r0 in range(0, n, chunk):
        m = min(chunk, n - r0)
        dX = cuda.to_device(X[r0:r0 + m])
        dcounts = cuda.device_array((m, N), np.float32)
        dattempts = cuda.device_array(m, np.int32)
        kern[min(m, MAX_GRID), block](dW, dtheta, dX, np.uint64(seed), int(phase), int(first_index + r0),
                                      int(n_present), int(n_rest), dc, int(min_spikes), int(max_retries), dcounts,
                                      dattempts)
        counts[r0:r0 + m] = dcounts.copy_to_host()
        attempts[r0:r0 + m] = dattempts.copy_to_host()
        if callback is not None:
            callback(r0 + m, int(counts[r0 + m - 1].sum()))
    return attempts
