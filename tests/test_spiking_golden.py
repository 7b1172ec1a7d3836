"""The Diehl & Cook (2015) network against golden traces taken from Brian2.

``tests/data/brian2_trace_{stdp,frozen}.npz`` hold a Brian2 2.9 simulation (runtime mode, numpy
codegen, exponential Euler, Brian2's refractoriness and schedule) of 8 inputs driven by a fixed
spike raster, 4 E and 4 I neurons, 400 steps at dt 0.5 ms (320 with input, 80 without), with
learning (adaptive threshold, trace STDP) and without; ``tests/data/make_brian2_trace.py`` made
them and documents the network. Brian2 is not needed here: both our implementations that take a
given input raster, the Numba CPU kernel (``lif.run_presentation``, one step per call) and the
NumPy reference (``reference.diehl_cook_presentation``), are driven by the stored raster and
compared step by step with the stored states.

Tolerances (float64 on both sides; Brian2 computes in volts with sympy-ordered expressions, we in
mV; the kernel with fast-math): measured differences, kernel and reference alike, are <= 1.1e-13
mV for membranes, <= 7e-16 relative for conductances, <= 4.3e-14 relative for theta, 0 for the
STDP traces and <= 1.1e-16 for weights. The checks allow 1e-11 mV for membranes, 1e-12
relative for conductances, theta and traces, 1e-12 absolute for weights: 20-1000x the rounding
noise, while changing tau_ge by 1e-6 relative, the refractory period by one step, theta_plus,
nu_post or E_inh slightly fails (tested below). Spike steps must match exactly: the smallest
distance of a non-refractory neuron from its threshold in the data (``min_threshold_margin_mv``,
0.016 mV) is 1e9 times the membrane tolerance, so no spike can flip by rounding.

No deviation between Brian2 and our model was found: the same update order (state update with
start-of-step conductances, threshold, synapses with input depression before E potentiation,
resets), the same refractory count (v held for exactly R = 10 steps at dt 0.5 ms), the same
theta timing. Weight normalisation (between presentations) is not part of the trace.
"""

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from bioreps.kernels.cpu import lif
from bioreps.layers import DiehlCookParams

from reference import diehl_cook_presentation

DATA = Path(__file__).parent / "data"
VARIANTS = ("stdp", "frozen")
IMPLEMENTATIONS = ("kernel", "reference")
# (absolute, relative) tolerance per recorded quantity; see the module docstring
TOL = {"v_e": (1e-11, 0.0), "v_i": (1e-11, 0.0), "ge_e": (1e-300, 1e-12), "gi_e": (1e-300, 1e-12),
       "ge_i": (1e-300, 1e-12), "theta": (0.0, 1e-12), "x_pre": (0.0, 1e-12), "x_post1": (0.0, 1e-12),
       "x_post2": (0.0, 1e-12), "w": (1e-12, 0.0), "w_final": (1e-12, 0.0)}
TRACES = ("v_e", "ge_e", "gi_e", "theta", "v_i", "ge_i", "x_pre", "x_post1", "x_post2")


@functools.lru_cache(maxsize=None)
def golden(variant):
    """(header dict, arrays dict) of one stored Brian2 trace."""
    path = DATA / f"brian2_trace_{variant}.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("header"))), arrays


def params_of(header, **change):
    return dataclasses.replace(DiehlCookParams(**header["params"]), **change)


def run_kernel(variant, **change):
    """The Numba CPU kernel driven by the stored raster, one step per ``run_presentation`` call;
    the states at the end of every step, as the golden file lays them out."""
    h, d = golden(variant)
    p = params_of(h, **change)
    c = lif.make_constants(h["dt_ms"], **p.to_dict())
    n_in, n = d["w0"].shape
    st = lif.LIFState(n_in, n, p.v_rest_e_mv, p.v_rest_i_mv, theta=d["theta0"])
    st.v_e[:] = d["v_e0"]
    st.v_i[:] = d["v_i0"]
    W = np.ascontiguousarray(d["w0"], np.float64).copy()
    counts = np.zeros(n, np.int64)
    rec = {k: [] for k in (*TRACES, "gi_i", "spikes_e", "spikes_i", "w")}
    for s, row in enumerate(d["input_raster"]):
        idx = np.flatnonzero(row).astype(np.int64)
        lif.run_presentation(W, np.array([0, idx.size], np.int64), idx, 0, c, h["learn"], st, counts)
        for k in (*TRACES, "gi_i"):
            rec[k].append(getattr(st, k).copy())
        rec["spikes_e"].append(st.spk_e.astype(bool))
        rec["spikes_i"].append(st.spk_i.astype(bool))
        rec["w"].append(W.copy())
    out = {k: np.array(v) for k, v in rec.items()}
    out["w_final"] = W
    return out


def run_reference(variant, **change):
    """The NumPy reference driven likewise; a neuron spiked in a step iff its refractory count
    was set to the full period in it (the reference keeps no spike flags)."""
    h, d = golden(variant)
    p = params_of(h, **change)
    dt = h["dt_ms"]
    n_in, n = d["w0"].shape
    state = dict(v_e=d["v_e0"].copy(), ge_e=np.zeros(n), gi_e=np.zeros(n), ref_e=np.zeros(n, np.int64),
                 theta=d["theta0"].copy(), v_i=d["v_i0"].copy(), ge_i=np.zeros(n), ref_i=np.zeros(n, np.int64),
                 x_pre=np.zeros(n_in), x_post1=np.zeros(n), x_post2=np.zeros(n))
    re, ri = lif.refractory_steps(p.refrac_e_ms, dt), lif.refractory_steps(p.refrac_i_ms, dt)
    W = d["w0"].copy()
    rec = {k: [] for k in (*TRACES, "spikes_e", "spikes_i", "w")}
    for row in d["input_raster"]:
        idx = np.flatnonzero(row)
        W, state, _ = diehl_cook_presentation(W, np.array([0, idx.size]), idx, 0, p.to_dict(), dt, h["learn"], state)
        for k in TRACES:
            rec[k].append(state[k].copy())
        rec["spikes_e"].append(state["ref_e"] == re)
        rec["spikes_i"].append(state["ref_i"] == ri)
        rec["w"].append(W.copy())
    out = {k: np.array(v) for k, v in rec.items()}
    out["gi_i"] = np.zeros_like(out["ge_i"])  # the reference's I neurons have no inhibitory conductance
    out["w_final"] = W
    return out


RUN = {"kernel": run_kernel, "reference": run_reference}


@functools.lru_cache(maxsize=None)
def simulated(impl, variant):
    return RUN[impl](variant)


def compare(ours, variant):
    """Assert ``ours`` equals the golden trace: spike steps exactly, every state within TOL,
    reporting the first step and neuron that differ."""
    h, d = golden(variant)
    for k in ("spikes_e", "spikes_i"):
        bad = np.argwhere(ours[k] != d[k])
        if bad.size:
            s, j = (int(i) for i in bad[0])
            raise AssertionError(f"{variant}: {k} differ from Brian2 first at step {s}, neuron {j} (ours "
                                 f"{bool(ours[k][s, j])}); (step, neuron) ours {np.argwhere(ours[k]).tolist()[:8]}..., "
                                 f"Brian2 {np.argwhere(d[k]).tolist()[:8]}...")
    assert not d["gi_i"].any() and not ours["gi_i"].any(), "I neurons have no inhibitory input in this model"
    names = [k for k in TRACES if k in d]
    if "w" in d:
        ours = dict(ours, w=ours["w"][d["w_steps"]])
        names.append("w")
    for k in (*names, "w_final"):
        atol, rtol = TOL[k]
        a, b = ours[k], d[k]
        bad = np.argwhere(~(np.abs(a - b) <= atol + rtol * np.abs(b)))
        if bad.size:
            at = tuple(int(i) for i in bad[0])
            where = ("final" if k == "w_final" else
                     f"step {int(d['w_steps'][at[0]]) if k == 'w' else at[0]}, index {at[1:]}")
            raise AssertionError(f"{variant}: {k} differs from Brian2 at {where}: ours {a[at]!r}, Brian2 {b[at]!r} "
                                 f"(|diff| {abs(a[at] - b[at]):.3g} > atol {atol:g} + rtol {rtol:g} * |Brian2|)")


# ---------------------------------------------------------------------- the golden data itself
@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_trace_is_brian2_on_the_model_cards_constants(variant):
    h, d = golden(variant)
    assert h["script"] == "tests/data/make_brian2_trace.py" and h["brian2"].startswith("2.")
    assert h["codegen_target"] == "numpy" and h["method"] == "exponential_euler" and h["dt_ms"] == 0.5
    assert h["learn"] == (variant == "stdp")
    defaults = DiehlCookParams().to_dict()
    assert {k: defaults[k] for k in h["params"]} == h["params"]  # our default model is what Brian2 ran
    steps = h["n_input_steps"] + h["n_rest_steps"]
    assert d["input_raster"].shape == (steps, h["n_inputs"]) and not d["input_raster"][h["n_input_steps"]:].any()
    for k in (*[t for t in TRACES if t in d], "gi_i", "spikes_e", "spikes_i"):
        assert d[k].shape[0] == steps and np.isfinite(d[k]).all(), k


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_trace_exercises_spikes_inhibition_and_refractoriness(variant):
    h, d = golden(variant)
    se, si = d["spikes_e"], d["spikes_i"]
    assert (se.sum(0) >= 1).all() and se.sum() >= 10, "every E neuron spikes, several times in all"
    assert si.sum() >= 10 and d["gi_e"].max() >= h["params"]["w_ie"] / 2, "I neurons spike and inhibit E"
    assert (se.sum(1) >= 2).any(), "two E neurons spike in one step (inhibition of all but the partner)"
    assert h["min_threshold_margin_mv"] > 1e3 * TOL["v_e"][0], "a spike could flip by rounding"
    # v is held for exactly R steps after a spike (Brian2's count): steps t+1 .. t+R-1 keep v_reset
    R = lif.refractory_steps(h["params"]["refrac_e_ms"], h["dt_ms"])
    for t, j in np.argwhere(se[:-R]):
        held = d["v_e"][t:t + R, j]
        assert (held == h["params"]["v_reset_e_mv"]).all() and d["v_e"][t + R, j] != held[0], (
            f"E neuron {j} spiking at step {t} is not held at v_reset for exactly {R} steps")


def test_golden_stdp_trace_exercises_same_step_pre_post_and_both_clip_bounds():
    h, d = golden("stdp")
    se, raster = d["spikes_e"], d["input_raster"]
    # an input spike in the step of an E spike whose neuron spiked before (x_post2 > 0): the order
    # of depression and potentiation within a step matters there
    x2_before = np.vstack([np.zeros((1, se.shape[1])), d["x_post2"][:-1]])
    assert ((se & (x2_before > 0)).any(1) & raster.any(1)).sum() >= 3
    # upper clip: a weight below w_max reaches it exactly
    assert ((d["w"] == h["params"]["w_max"]) & (d["w0"] < h["params"]["w_max"])).any()
    # lower clip: a zero weight is depressed (its input spikes with x_post1 > 0) before it can be
    # potentiated (not at its neuron's first spike, where x_post2 was 0; from its second on)
    clipped = 0
    for i, j in np.argwhere(d["w0"] == 0.0):
        t = np.flatnonzero(se[:, j])
        clipped += t.size >= 2 and raster[t[0] + 1:t[1] + 1, i].any()
    assert clipped >= 2
    assert np.abs(d["w_final"] - d["w0"]).max() > 1e-2, "STDP moved the weights"
    assert (d["theta"][-1] > d["theta0"] + 0.04).all(), "every neuron's threshold adapted"


# ---------------------------------------------------------------------- ours against Brian2
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_brian2_step_by_step(impl, variant):
    compare(simulated(impl, variant), variant)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("change", [dict(tau_ge_ms=1.0 + 1e-6), dict(refrac_e_ms=4.5), dict(theta_plus_mv=0.0501),
                                    dict(nu_post=1.0001e-2), dict(e_inh_e_mv=-100.0001)])
def test_a_small_change_of_a_constant_is_detected(impl, change):
    variant = "stdp"
    with pytest.raises(AssertionError, match="differ"):
        compare(RUN[impl](variant, **change), variant)
