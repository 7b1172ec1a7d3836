"""Make ``brian2_trace_stdp.npz`` and ``brian2_trace_frozen.npz``: golden traces of the Diehl &
Cook (2015) E/I network (the model card ``docs/models/diehl_cook_2015.md``) simulated by
Brian2, read by ``tests/test_spiking_golden.py`` (which does not need Brian2).

Run by hand, in an environment with Brian2 (it is not a bioreps dependency; Brian2 2.9.0 does not
import under NumPy >= 2.4, so use a separate venv with ``numpy<2.4``)::

    python tests/data/make_brian2_trace.py            # writes both files next to this script
    python tests/data/make_brian2_trace.py /tmp/out   # or into another folder

The network: 8 inputs driven by a FIXED spike raster (a ``SpikeGeneratorGroup``; the raster is
stored, so no random generator has to match), 4 excitatory (E) and 4 inhibitory (I)
conductance-based LIF neurons, E -> I one-to-one (``w_ei``), I -> every other E (``w_ie``), dense
input -> E weights, the model card's constants (``PARAMS``, the names of
``bioreps.layers.DiehlCookParams``), dt = 0.5 ms, ``N_INPUT_STEPS`` steps with input then
``N_REST_STEPS`` without. Brian2 runtime mode, codegen target ``numpy``, ``exponential_euler``,
``refractory=`` with ``(unless refractory)`` on v, default schedule (state update, thresholds,
synapses with every ``pre`` pathway before every ``post`` one, resets). The two variants:

* ``stdp``: learning on: adaptive threshold (``dtheta/dt = -theta / tau_theta``, ``theta +=
  theta_plus`` on reset) and the released code's trace STDP with Brian2's per-synapse
  event-driven traces (the formulation of ``benchmarks/peers/brian2_dc.py``, default
  ``--traces synapse``): ``on_pre: ge += w; pre = 1; w = clip(w - nu_pre * post1, 0, w_max)``,
  ``on_post: w = clip(w + nu_post * pre * post2, 0, w_max); post1 = post2 = 1``. The per-input
  and per-E-neuron traces are also kept, for recording only, by two mirror groups (exact decay,
  set to 1 by a spike through a one-to-one ``Synapses``); they do not feed back.
* ``frozen``: learning off (bioreps' ``learn=False``): theta a constant, no STDP.

Every recorded row ``s`` is the state at the END of step ``s`` (``StateMonitor(when="end")``):
after the state update, the threshold, the synaptic events of the step and the resets. Units:
mV for potentials and theta, conductances and weights in units of the leak conductance.
Weight normalisation (between presentations) is not part of the trace.

The chosen raster, initial weights, potentials and thresholds make every E neuron spike, the I
neurons spike and inhibit, several inputs spike in the same step as an E neuron, and weights hit
both clip bounds. ``min_threshold_margin_mv`` (stored) is the smallest ``|v - threshold|`` over
every non-refractory neuron and step before the resets: the spike steps cannot flip under
rounding-level differences.
"""

import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

PARAMS = dict(
    tau_mem_e_ms=100.0, tau_mem_i_ms=10.0, v_rest_e_mv=-65.0, v_reset_e_mv=-65.0, v_thresh_e_mv=-52.0,
    v_rest_i_mv=-60.0, v_reset_i_mv=-45.0, v_thresh_i_mv=-40.0, e_exc_mv=0.0, e_inh_e_mv=-100.0,
    e_inh_i_mv=-85.0, refrac_e_ms=5.0, refrac_i_ms=2.0, tau_ge_ms=1.0, tau_gi_ms=2.0, theta_plus_mv=0.05,
    tau_theta_ms=1e7, w_ei=10.4, w_ie=17.0, nu_pre=1e-4, nu_post=1e-2, tau_pre_ms=20.0, tau_post1_ms=20.0,
    tau_post2_ms=40.0, w_max=1.0,
)
DT_MS = 0.5
N_INPUTS, N_NEURONS = 8, 4
N_INPUT_STEPS, N_REST_STEPS = 320, 80
RASTER_SEED = 20150901
# spike probability per step of each input (250-500 Hz at dt 0.5 ms: 8 inputs drive like many)
INPUT_P = np.array([0.25, 0.2, 0.15, 0.225, 0.125, 0.175, 0.25, 0.2])
# initial input -> E weights (n_inputs, n_neurons): exact 0 and 1 entries (clip bounds), one just
# below w_max (potentiation clips)
W0 = np.array([[1.00, 0.10, 0.50, 0.90],
               [0.90, 0.20, 0.00, 0.70],
               [0.80, 0.95, 0.40, 0.10],
               [0.90, 0.90, 0.60, 0.00],
               [0.30, 0.85, 0.99995, 0.30],
               [0.40, 0.00, 0.80, 0.60],
               [0.00, 0.60, 0.70, 0.90],
               [0.40, 0.50, 0.30, 0.80]])
V_E0 = np.array([-60.0, -65.0, -57.0, -62.0])   # mV
V_I0 = np.full(N_NEURONS, -60.0)
THETA0 = np.array([1.5, 0.0, 0.5, 0.8])         # mV


def input_raster():
    """(steps, inputs) bool: input spikes of the input steps, none in the rest steps."""
    rng = np.random.default_rng(RASTER_SEED)
    r = np.zeros((N_INPUT_STEPS + N_REST_STEPS, N_INPUTS), bool)
    r[:N_INPUT_STEPS] = rng.random((N_INPUT_STEPS, N_INPUTS)) < INPUT_P
    return r


def simulate(learn, raster):
    import brian2 as b2
    from brian2 import mV, ms

    b2.prefs.codegen.target = "numpy"
    b2.prefs.logging.file_log = False
    b2.prefs.logging.console_log_level = "WARNING"
    b2.start_scope()
    b2.defaultclock.dt = DT_MS * ms
    p = PARAMS
    ns = dict(
        v_rest_e=p["v_rest_e_mv"] * mV, v_reset_e=p["v_reset_e_mv"] * mV, v_thresh_e=p["v_thresh_e_mv"] * mV,
        v_rest_i=p["v_rest_i_mv"] * mV, v_reset_i=p["v_reset_i_mv"] * mV, v_thresh_i=p["v_thresh_i_mv"] * mV,
        e_exc=p["e_exc_mv"] * mV, e_inh_e=p["e_inh_e_mv"] * mV, e_inh_i=p["e_inh_i_mv"] * mV,
        tau_e=p["tau_mem_e_ms"] * ms, tau_i=p["tau_mem_i_ms"] * ms, tau_ge=p["tau_ge_ms"] * ms,
        tau_gi=p["tau_gi_ms"] * ms, theta_plus=p["theta_plus_mv"] * mV, tau_theta=p["tau_theta_ms"] * ms,
        tau_pre=p["tau_pre_ms"] * ms, tau_post1=p["tau_post1_ms"] * ms, tau_post2=p["tau_post2_ms"] * ms,
        nu_pre=p["nu_pre"], nu_post=p["nu_post"], w_max=p["w_max"], w_ei=p["w_ei"], w_ie=p["w_ie"],
    )
    steps, idx = np.nonzero(raster)
    P = b2.SpikeGeneratorGroup(N_INPUTS, idx, steps * DT_MS * ms, name="inputs")
    theta_eq = "dtheta/dt = -theta / tau_theta : volt" if learn else "theta : volt (constant)"
    eqs_e = f"""
    dv/dt = ((v_rest_e - v) + ge * (e_exc - v) + gi * (e_inh_e - v)) / tau_e : volt (unless refractory)
    dge/dt = -ge / tau_ge : 1
    dgi/dt = -gi / tau_gi : 1
    {theta_eq}
    """
    eqs_i = """
    dv/dt = ((v_rest_i - v) + ge * (e_exc - v) + gi * (e_inh_i - v)) / tau_i : volt (unless refractory)
    dge/dt = -ge / tau_ge : 1
    dgi/dt = -gi / tau_gi : 1
    """
    E = b2.NeuronGroup(N_NEURONS, eqs_e, threshold="v > v_thresh_e + theta",
                       reset="v = v_reset_e" + ("; theta += theta_plus" if learn else ""),
                       refractory=p["refrac_e_ms"] * ms, method="exponential_euler", namespace=ns, name="exc")
    I = b2.NeuronGroup(N_NEURONS, eqs_i, threshold="v > v_thresh_i", reset="v = v_reset_i",
                       refractory=p["refrac_i_ms"] * ms, method="exponential_euler", namespace=ns, name="inh")
    E.v = V_E0 * mV
    E.theta = THETA0 * mV
    I.v = V_I0 * mV
    if learn:
        S = b2.Synapses(P, E, model="""
            w : 1
            dpre/dt = -pre / tau_pre : 1 (event-driven)
            dpost1/dt = -post1 / tau_post1 : 1 (event-driven)
            dpost2/dt = -post2 / tau_post2 : 1 (event-driven)
            """,
                        on_pre="ge_post += w; pre = 1.0; w = clip(w - nu_pre * post1, 0, w_max)",
                        on_post="w = clip(w + nu_post * pre * post2, 0, w_max); post1 = 1.0; post2 = 1.0",
                        namespace=ns, name="input_exc")
    else:
        S = b2.Synapses(P, E, model="w : 1", on_pre="ge_post += w", namespace=ns, name="input_exc")
    S.connect()
    si, sj = np.asarray(S.i[:]), np.asarray(S.j[:])
    S.w = W0[si, sj]
    EI = b2.Synapses(E, I, on_pre="ge_post += w_ei", namespace=ns, name="exc_inh")
    EI.connect(j="i")
    IE = b2.Synapses(I, E, on_pre="gi_post += w_ie", namespace=ns, name="inh_exc")
    IE.connect(condition="i != j")
    mons = dict(
        e=b2.StateMonitor(E, ["v", "ge", "gi", "theta"], record=True, when="end", name="mon_e"),
        i=b2.StateMonitor(I, ["v", "ge", "gi"], record=True, when="end", name="mon_i"),
        # before the resets: for the threshold margins
        e_pre=b2.StateMonitor(E, ["v", "theta", "not_refractory"], record=True, when="after_thresholds",
                              name="mon_e_pre"),
        i_pre=b2.StateMonitor(I, ["v", "not_refractory"], record=True, when="after_thresholds", name="mon_i_pre"),
        se=b2.SpikeMonitor(E, name="spk_e"), si=b2.SpikeMonitor(I, name="spk_i"),
    )
    objects = [P, E, I, S, EI, IE, *mons.values()]
    if learn:
        # mirrors of the STDP traces, one per input / E neuron, for recording only
        PT = b2.NeuronGroup(N_INPUTS, "dx/dt = -x / tau_pre : 1", method="exact", namespace=ns, name="pre_trace")
        QT = b2.NeuronGroup(N_NEURONS, "dx1/dt = -x1 / tau_post1 : 1\ndx2/dt = -x2 / tau_post2 : 1",
                            method="exact", namespace=ns, name="post_trace")
        SP = b2.Synapses(P, PT, on_pre="x_post = 1.0", name="pre_trace_set")
        SP.connect(j="i")
        SQ = b2.Synapses(E, QT, on_pre="x1_post = 1.0; x2_post = 1.0", name="post_trace_set")
        SQ.connect(j="i")
        mons["pt"] = b2.StateMonitor(PT, "x", record=True, when="end", name="mon_pt")
        mons["qt"] = b2.StateMonitor(QT, ["x1", "x2"], record=True, when="end", name="mon_qt")
        mons["w"] = b2.StateMonitor(S, "w", record=True, when="end", name="mon_w")
        objects += [PT, QT, SP, SQ, mons["pt"], mons["qt"], mons["w"]]
    net = b2.Network(*objects)
    n_steps = raster.shape[0]
    net.run(n_steps * DT_MS * ms, namespace=ns)
    schedule = str(net.scheduling_summary())

    def spikes(mon):
        st = np.rint(np.asarray(mon.t / ms) / DT_MS).astype(np.int64)
        out = np.zeros((n_steps, N_NEURONS), bool)
        out[st, np.asarray(mon.i[:])] = True
        assert out.sum() == st.size  # at most one spike per neuron and step
        return out

    def rows(mon, name, scale=1.0):
        a = np.asarray(getattr(mon, name + "_")).T * scale  # (steps, neurons), SI values
        assert a.shape[0] == n_steps
        return np.ascontiguousarray(a, np.float64)

    out = dict(
        v_e=rows(mons["e"], "v", 1e3), ge_e=rows(mons["e"], "ge"), gi_e=rows(mons["e"], "gi"),
        theta=rows(mons["e"], "theta", 1e3),
        v_i=rows(mons["i"], "v", 1e3), ge_i=rows(mons["i"], "ge"), gi_i=rows(mons["i"], "gi"),
        spikes_e=spikes(mons["se"]), spikes_i=spikes(mons["si"]),
    )
    # threshold margins of the non-refractory neurons, before the resets
    free_e = np.asarray(mons["e_pre"].not_refractory).T | out["spikes_e"]  # spikers were just set refractory
    marg_e = np.abs(rows(mons["e_pre"], "v", 1e3) - (p["v_thresh_e_mv"] + rows(mons["e_pre"], "theta", 1e3)))
    free_i = np.asarray(mons["i_pre"].not_refractory).T | out["spikes_i"]
    marg_i = np.abs(rows(mons["i_pre"], "v", 1e3) - p["v_thresh_i_mv"])
    margin = float(min(marg_e[free_e].min(), marg_i[free_i].min()))
    W = np.zeros((N_INPUTS, N_NEURONS))
    W[si, sj] = np.asarray(S.w[:])
    out["w_final"] = W
    if learn:
        out["x_pre"] = rows(mons["pt"], "x")
        out["x_post1"] = rows(mons["qt"], "x1")
        out["x_post2"] = rows(mons["qt"], "x2")
        wt = np.asarray(mons["w"].w_).T  # (steps, synapses)
        Wt = np.zeros((n_steps, N_INPUTS, N_NEURONS))
        Wt[:, si, sj] = wt
        out["w"] = Wt
    return out, margin, schedule


def main(folder):
    import brian2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raster = input_raster()
    for variant, learn in (("stdp", True), ("frozen", False)):
        data, margin, schedule = simulate(learn, raster)
        header = dict(
            description=f"Brian2 golden trace of the Diehl & Cook (2015) E/I network, variant {variant!r} "
                        f"(learning {'on' if learn else 'off'}); row s of every trace = state at the END of step s",
            script="tests/data/make_brian2_trace.py", brian2=brian2.__version__, numpy=np.__version__,
            python=platform.python_version(), codegen_target="numpy", method="exponential_euler",
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            learn=learn, dt_ms=DT_MS, n_inputs=N_INPUTS, n_neurons=N_NEURONS, n_input_steps=N_INPUT_STEPS,
            n_rest_steps=N_REST_STEPS, raster_seed=RASTER_SEED, params=PARAMS,
            min_threshold_margin_mv=margin,
            units="v_*, theta: mV; ge_*, gi_*, w: leak-conductance units; traces: 1",
            arrays={"input_raster": "(steps, inputs) bool", "w0": "(inputs, neurons) initial weights",
                    "v_e0, v_i0, theta0": "initial state (mV)", "v_e, ge_e, gi_e, theta, v_i, ge_i, gi_i":
                    "(steps, neurons)", "spikes_e, spikes_i": "(steps, neurons) bool",
                    "w_final": "(inputs, neurons)", "x_pre": "(steps, inputs), stdp only",
                    "x_post1, x_post2": "(steps, neurons), stdp only",
                    "w, w_steps": "(len(w_steps), inputs, neurons) weights at the end of the steps w_steps "
                                  "(every 10th and the last), stdp only"},
            schedule=schedule,
        )
        if learn:
            w_every = 10  # every 10th step (and the last) keeps the file small
            keep = np.r_[np.arange(0, raster.shape[0], w_every), raster.shape[0] - 1]
            data["w_steps"] = keep
            data["w"] = data["w"][keep]
        path = folder / f"brian2_trace_{variant}.npz"
        np.savez_compressed(path, header=np.array(json.dumps(header)), input_raster=raster, w0=W0,
                            v_e0=V_E0, v_i0=V_I0, theta0=THETA0, **data)
        print(f"{path}: {path.stat().st_size} bytes; E spikes per neuron {data['spikes_e'].sum(0)}, "
              f"I spikes {data['spikes_i'].sum(0)}, margin {margin:.3g} mV, "
              f"max |dW| {np.abs(data['w_final'] - W0).max():.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
