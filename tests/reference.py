"""Slow, obvious NumPy versions of every kernel (float64), the ground truth the kernels are tested against."""

from __future__ import annotations

import numpy as np


def krotov_hopfield_batch(W, V, k, delta, eps, p, prec=1e-30):
    """One minibatch of the Krotov-Hopfield rule, written as the reference notebook
    (DimaKrotov/Biological_Learning, Unsupervised_learning_algorithm_MNIST.ipynb) writes it.

    W : (K, N) float64 synapses (returned updated, not modified in place)
    V : (B, N) the minibatch, one sample per row (the notebook's ``inputs`` is V.T)
    """
    W = np.array(W, dtype=np.float64)
    inputs = np.asarray(V, dtype=np.float64).T
    hid, Num = W.shape[0], inputs.shape[1]
    sig = np.sign(W)
    tot_input = np.dot(sig * np.absolute(W) ** (p - 1), inputs)
    y = np.argsort(tot_input, axis=0)
    yl = np.zeros((hid, Num))
    yl[y[hid - 1, :], np.arange(Num)] = 1.0
    yl[y[hid - k], np.arange(Num)] = -delta
    xx = np.sum(np.multiply(yl, tot_input), 1)
    ds = np.dot(yl, np.transpose(inputs)) - np.multiply(np.tile(xx.reshape(xx.shape[0], 1), (1, W.shape[1])), W)
    nc = np.amax(np.absolute(ds))
    if nc < prec:
        nc = prec
    return W + eps * np.true_divide(ds, nc)


def krotov_hopfield_epoch(W, X, order, batch_size, k, delta, eps, p):
    """Batches of ``X[order]`` in sequence (a final short batch included)."""
    for start in range(0, len(order), batch_size):
        W = krotov_hopfield_batch(W, X[order[start:start + batch_size]], k, delta, eps, p)
    return W


def softhebb_batch(W, V, t_invert, lr, p=2.0, power_lr=0.5, adaptive=True):
    """One minibatch of the SoftHebb rule (Journe et al., ICLR 2023; NeuromorphicComputing/SoftHebb,
    hebblinear.py ``HebbSoftLinear``: ``get_pre_activations``, ``activation(..., normalize=True)``,
    ``delta_weight``, ``update_lr``), in float64.

    W : (K, N) synapses (returned updated, not modified in place)
    V : (B, N) the minibatch, one sample per row
    """
    W = np.array(W, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    u = V @ (np.sign(W) * np.abs(W) ** (p - 1)).T  # (B, K) currents
    a = t_invert * u
    a = a - a.max(axis=1, keepdims=True)
    y = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)  # softmax over the units, per sample
    yu = np.sum(y * u, axis=0)  # (K,)
    ds = y.T @ V - yu[:, None] * W
    ds = ds / (np.abs(ds).max() + 1e-30)
    if adaptive:
        norm = np.sum(np.abs(W) ** p, axis=1) ** (1.0 / p)  # from W before this update
        lr_i = lr * (np.abs(norm - 1.0) + 1e-10) ** power_lr
    else:
        lr_i = np.full(W.shape[0], float(lr))
    return W + lr_i[:, None] * ds


def softhebb_epoch(W, X, order, batch_size, t_invert, lr, p, power_lr, adaptive):
    """Batches of ``X[order]`` in sequence (a final short batch included)."""
    for start in range(0, len(order), batch_size):
        W = softhebb_batch(W, X[order[start:start + batch_size]], t_invert, lr, p, power_lr, adaptive)
    return W


def conv_softhebb_batch(W, X, k, stride, padding, t_invert, lr, power_lr=0.5, adaptive=True, bn=None):
    """One minibatch of SoftHebb's convolutional rule (Journe et al., ICLR 2023;
    NeuromorphicComputing/SoftHebb, demo.py ``SoftHebbConv2d.forward`` and hebbconv.py
    ``HebbSoftKrotovConv2d``, mode 0; lebesgue p = 2, reflect padding), in float64, position by
    position.

    W : (K, C, k, k) filters (returned updated); X : (B, C, H, W) the images
    bn : None, or [running_mean, running_var] (C,) lists updated as BatchNorm2d(affine=False)
        in training mode (momentum 0.1, eps 1e-5), the batch normalised by its own statistics
    Returns (W, bn).
    """
    W = np.array(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if bn is not None:
        mean = X.mean(axis=(0, 2, 3))
        var = X.var(axis=(0, 2, 3))
        n = X.shape[0] * X.shape[2] * X.shape[3]
        bn = [0.9 * np.asarray(bn[0]) + 0.1 * mean, 0.9 * np.asarray(bn[1]) + 0.1 * var * n / (n - 1)]
        X = (X - mean[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    if padding:
        X = np.pad(X, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode="reflect")
    B, C, H, Wd = X.shape
    K = W.shape[0]
    Ho, Wo = (H - k) // stride + 1, (Wd - k) // stride + 1
    yx = np.zeros_like(W)
    yu = np.zeros(K)
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                x = X[b, :, i * stride:i * stride + k, j * stride:j * stride + k]
                u = np.array([np.sum(W[c] * x) for c in range(K)])
                e = np.exp(t_invert * (u - u.max()))
                y = -e / e.sum()  # soft anti-Hebbian: every channel but the winner negated
                y[np.argmax(u)] *= -1
                for c in range(K):
                    yx[c] += y[c] * x
                    yu[c] += y[c] * u[c]
    delta = yx - yu[:, None, None, None] * W
    delta = delta / (np.abs(delta).max() + 1e-30)
    if adaptive:
        norm = np.sqrt(np.sum(W ** 2, axis=(1, 2, 3)))
        lr_c = lr * (np.abs(norm - 1.0) + 1e-10) ** power_lr
    else:
        lr_c = np.full(K, float(lr))
    return W + lr_c[:, None, None, None] * delta, bn


def diehl_cook_presentation(W, indptr, indices, n_rest, p, dt, learn, state):
    """One presentation of the Diehl & Cook (2015) E/I network, time-stepped in float64 NumPy.

    W : (n_inputs, n_neurons) weights (returned updated, not modified in place)
    indptr, indices : the input spikes of the presentation steps (CSR by step)
    n_rest : steps without input after them
    p : dict of the model constants (``DiehlCookParams.to_dict()``); dt in ms
    state : dict of arrays v_e, ge_e, gi_e, ref_e, theta, v_i, ge_i, ref_i, x_pre, x_post1,
        x_post2 (a modified copy is returned)

    Returns (W, state, counts): counts = E spikes of each neuron during the presentation steps.
    """
    W = np.array(W, dtype=np.float64)
    st = {k: np.array(v, dtype=np.int64 if k.startswith("ref") else np.float64) for k, v in state.items()}
    n_present = len(indptr) - 1
    n = W.shape[1]
    # Brian2: not_refractory = timestep(t - lastspike, dt) >= timestep(refractory, dt)
    ref_e_steps = int((p["refrac_e_ms"] + 1e-3 * dt) / dt)
    ref_i_steps = int((p["refrac_i_ms"] + 1e-3 * dt) / dt)
    counts = np.zeros(n, np.int64)
    for s in range(n_present + n_rest):
        if learn:
            st["theta"] = st["theta"] * np.exp(-dt / p["tau_theta_ms"])
            st["x_pre"] = st["x_pre"] * np.exp(-dt / p["tau_pre_ms"])
            st["x_post1"] = st["x_post1"] * np.exp(-dt / p["tau_post1_ms"])
            st["x_post2"] = st["x_post2"] * np.exp(-dt / p["tau_post2_ms"])
        # E neurons: refractory countdown, exponential Euler, threshold, reset
        st["ref_e"] = np.maximum(st["ref_e"] - 1, 0)
        free = st["ref_e"] == 0
        ge, gi = st["ge_e"], st["gi_e"]
        v_inf = (p["v_rest_e_mv"] + ge * p["e_exc_mv"] + gi * p["e_inh_e_mv"]) / (1 + ge + gi)
        v_new = v_inf + (st["v_e"] - v_inf) * np.exp(-dt * (1 + ge + gi) / p["tau_mem_e_ms"])
        st["v_e"] = np.where(free, v_new, st["v_e"])
        st["ge_e"] = ge * np.exp(-dt / p["tau_ge_ms"])
        st["gi_e"] = gi * np.exp(-dt / p["tau_gi_ms"])
        spk_e = free & (st["v_e"] > p["v_thresh_e_mv"] + st["theta"])
        st["v_e"][spk_e] = p["v_reset_e_mv"]
        st["ref_e"][spk_e] = ref_e_steps
        # I neurons (no inhibitory input)
        st["ref_i"] = np.maximum(st["ref_i"] - 1, 0)
        free = st["ref_i"] == 0
        ge = st["ge_i"]
        v_inf = (p["v_rest_i_mv"] + ge * p["e_exc_mv"]) / (1 + ge)
        v_new = v_inf + (st["v_i"] - v_inf) * np.exp(-dt * (1 + ge) / p["tau_mem_i_ms"])
        st["v_i"] = np.where(free, v_new, st["v_i"])
        st["ge_i"] = ge * np.exp(-dt / p["tau_ge_ms"])
        spk_i = free & (st["v_i"] > p["v_thresh_i_mv"])
        st["v_i"][spk_i] = p["v_reset_i_mv"]
        st["ref_i"][spk_i] = ref_i_steps
        # input spikes: g_e += W row, then pre-synaptic STDP
        if s < n_present:
            for i in indices[indptr[s]:indptr[s + 1]]:
                st["ge_e"] = st["ge_e"] + W[i]
                if learn:
                    st["x_pre"][i] = 1.0
                    W[i] = np.clip(W[i] - p["nu_pre"] * st["x_post1"], 0.0, p["w_max"])
        # E spikes
        for j in np.flatnonzero(spk_e):
            st["ge_i"][j] += p["w_ei"]
            if s < n_present:
                counts[j] += 1
            if learn:
                st["theta"][j] += p["theta_plus_mv"]
                W[:, j] = np.clip(W[:, j] + p["nu_post"] * st["x_pre"] * st["x_post2"][j], 0.0, p["w_max"])
                st["x_post1"][j] = 1.0
                st["x_post2"][j] = 1.0
        # I spikes: every E neuron but the partner
        n_i = int(spk_i.sum())
        if n_i:
            st["gi_e"] = st["gi_e"] + p["w_ie"] * (n_i - spk_i.astype(np.float64))
    return W, st, counts


def diehl_cook_normalize(W, weight_sum):
    """Each column (a neuron's input weights) rescaled to sum to ``weight_sum``."""
    W = np.array(W, dtype=np.float64)
    return W * (weight_sum / W.sum(axis=0))[None, :]


# --------------------------------------------------------------------------- counter-based Poisson generator
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def splitmix64_mix(z):
    """The SplitMix64 finaliser on Python ints (mod 2**64), written out."""
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def counter_stream_key(seed, phase, index, attempt):
    """The key of one presentation (``bioreps.kernels.poisson.stream_key``) on Python ints."""
    k = splitmix64_mix(seed + _GOLDEN)
    for v in (phase, index, attempt):
        k = splitmix64_mix((k ^ v) + _GOLDEN)
    return k


def counter_pair_bits(key, step, pair, n_pairs):
    """The 64 bits of input pair ``pair`` at ``step``, on Python ints."""
    return splitmix64_mix(key + (step * n_pairs + pair + 1) * _GOLDEN)


def counter_spike_raster(rates_hz, n_steps, dt_ms, key):
    """(n_steps, n_inputs) bool raster of the counter-based generator, every (step, input) drawn
    with Python ints: input 2k uses the low 32 bits of pair k's word, 2k + 1 the high 32 bits, and
    spikes iff they are below floor(p * 2**32) (2**32 for p >= 1), p = rate * dt_ms / 1000."""
    rates = np.asarray(rates_hz, np.float64)
    n_in = rates.size
    n_pairs = (n_in + 1) // 2
    prob = rates * (float(dt_ms) / 1000.0)
    thr = [(1 << 32) if p >= 1.0 else int(np.floor(p * 4294967296.0)) for p in prob]
    out = np.zeros((n_steps, n_in), bool)
    for s in range(n_steps):
        for i in range(n_in):
            if thr[i]:
                h = counter_pair_bits(key, s, i // 2, n_pairs)
                out[s, i] = ((h >> 32) if i % 2 else (h & 0xFFFFFFFF)) < thr[i]
    return out


def nassar_eigen_val_regulate(x, v, eigT=None, start=10, device='cpu', slope=1):
    """The 1/n spectral penalty of Nassar et al. (NeurIPS 2020), ported verbatim from the authors'
    code: github.com/josuenassar/power_law, ModelDefs/utils.py, ``eigen_val_regulate``, commit
    13f8f36f9cbe57a22fd5a5f7f2c7a73c1f322671 (identical in cleanedup/ModelDefs/utils.py). Only
    the docstring is shortened and ``torch`` imported here. Sorts descending, anchors at the
    0-based index ``start`` (our 1-based ``tau = start + 1``), skips non-positive eigenvalues and
    divides by ``x.shape[1]`` (the number of units). With ``eigT`` given, ``x`` only supplies that
    number. Returns ``(sorted eigenvalues, penalty of shape (1,))``."""
    import torch

    if eigT is None:
        xt = x - torch.mean(x, 0)  # demean the data
        cov = xt.transpose(1, 0) @ xt / (x.shape[0] - 1)  # compute covariance matrix
        cov = (cov + cov.transpose(1, 0)) / 2
        eig = torch.diag(v.transpose(1, 0) @ cov @ v).to(device)

    else:
        eig = eigT

    eigs = torch.sort(eig, descending=True)[0]
    regul = torch.zeros(1, device=device)
    # slope = -1
    with torch.no_grad():
        beta = eigs[start] * (start + 1) ** slope

    for n in range(start + 1, eigs.shape[0]):
        if eigs[n] > 0:  # don't use negative eigenvalues
            gamma = beta / ((n + 1) ** slope)
            regul += (eigs[n] / gamma - 1) ** 2 + torch.relu(eigs[n] / gamma - 1)
    return eigs, regul / x.shape[1]
