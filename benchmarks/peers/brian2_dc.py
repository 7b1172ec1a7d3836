"""Brian2 peer of the Diehl & Cook (2015) benchmark: the model card's network
(``docs/models/diehl_cook_2015.md``, the released Brian-1 code's model), written in Brian2.

    python benchmarks/peers/brian2_dc.py --mode cpp --neurons 100 --samples 50 --images X.npy

784 Poisson inputs (rate = pixel * max_rate_hz, pixel in [0, 1]), N conductance-based LIF
excitatory neurons with adaptive theta, N inhibitory ones (E -> I one-to-one, I -> every other
E), dense plastic input -> E synapses learning by the released code's trace STDP (event-driven
traces per synapse, the Brian2 ports' formulation), each E neuron's input weights rescaled to sum
``weight_sum`` before every sample, 350 ms presentation + 150 ms rest at dt 0.5 ms, exponential
Euler, Brian2's refractoriness (``unless refractory``). No input delays, no low-activity retry
(every sample is shown once). All samples run in ONE Brian2 run: the rates are a TimedArray with
one row per 50 ms (7 rows of image, 3 of silence per sample), the normalisation fires every
500 ms in the ``start`` slot.

STDP traces (``--traces``): ``synapse`` (default) keeps ``pre``, ``post1``, ``post2`` per
synapse, event-driven, as the Brian2 ports of the released code do (every synaptic event updates
three traces); ``neuron`` keeps one trace per input and two per E neuron, decayed every step and
set to 1 by the resets (which Brian2 runs after the synapses, so a post spike in the same step as
a pre spike sees the pre trace before that spike; the per-synapse form sees it after). The
weight updates are otherwise the same; ``neuron`` is the faster Brian2 formulation.

Modes:

* ``cpp``: ``set_device('cpp_standalone', build_on_run=False)``, one ``device.build`` (compile)
  then one ``device.run`` of all samples. The normalisation is two synapse ``run_regularly``
  operations calling a small user C++ function (column sums kept in a buffer shared by the
  generated files through ``dc_norm.h``): standalone mode has no ``network_operation``.
  Reported: compile seconds (excluded from samples/s), the simulation loop's own time
  (``device._last_run_time``, used for samples/s), the binary's wall time and its CPU time
  (``cpu_s``, whole binary: start-up, loading and writing arrays included).
* ``runtime``: runtime mode, codegen target ``cython`` (``--target numpy`` to change); the
  normalisation is a ``network_operation`` (NumPy) every 500 ms. The first (compiling) run is a
  one-step warm-up, restored before the timed run; its time is reported as compile seconds.

Prints one JSON line: samples/s, compile/run seconds, CPU seconds of the timed part, mean E spikes per sample, versions.
Single-threaded (Brian2's default: no OpenMP).
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

# The model card's constants; the same names as bioreps.layers.DiehlCookParams (the benchmark
# passes that dataclass's values with --params so both always run the same model).
PARAMS = dict(
    tau_mem_e_ms=100.0, tau_mem_i_ms=10.0, v_rest_e_mv=-65.0, v_reset_e_mv=-65.0, v_thresh_e_mv=-52.0,
    v_rest_i_mv=-60.0, v_reset_i_mv=-45.0, v_thresh_i_mv=-40.0, e_exc_mv=0.0, e_inh_e_mv=-100.0,
    e_inh_i_mv=-85.0, refrac_e_ms=5.0, refrac_i_ms=2.0, tau_ge_ms=1.0, tau_gi_ms=2.0, theta_plus_mv=0.05,
    tau_theta_ms=1e7, w_ei=10.4, w_ie=17.0, w_init_scale=0.3, w_init_offset=0.01, weight_sum=78.0,
    nu_pre=1e-4, nu_post=1e-2, tau_pre_ms=20.0, tau_post1_ms=20.0, tau_post2_ms=40.0, w_max=1.0,
    max_rate_hz=63.75,
)

PRESENT_MS, REST_MS, DT_MS, SLOT_MS = 350.0, 150.0, 0.5, 50.0

# Column sums shared by every generated .cpp file: support code sits in an anonymous namespace
# (one copy per file), a header is included outside it and an inline function's static is one
# object program-wide.
NORM_HEADER = r"""
#ifndef DC_NORM_H
#define DC_NORM_H
inline double* dc_colsum_buffer() { static double buf[65536]; return buf; }
inline double& dc_colsum_last_t() { static double last = -1.0; return last; }
#endif
"""
ADD_CODE = r"""
double dc_colsum_add(double w, int32_t j, double t) {
    double* s = dc_colsum_buffer();
    if (t != dc_colsum_last_t()) {  // first synapse of a new pass: clear the sums
        for (int k = 0; k < 65536; k++) s[k] = 0.0;
        dc_colsum_last_t() = t;
    }
    s[j] += w;
    return w;
}
"""
GET_CODE = r"""
double dc_colsum_get(int32_t j) { return dc_colsum_buffer()[j]; }
"""


def simulate(mode, N, X, n, seed, p, target="cython", workdir=None, traces="synapse"):
    import brian2 as b2
    from brian2 import Hz, mV, ms, second  # noqa: F401

    b2.prefs.logging.file_log = False
    b2.prefs.logging.console_log_level = "WARNING"
    if mode == "cpp":
        b2.set_device("cpp_standalone", build_on_run=False, directory=workdir)
    else:
        b2.prefs.codegen.target = target
    b2.defaultclock.dt = DT_MS * ms
    b2.seed(seed)
    rng = np.random.default_rng(seed)

    # rates: one row per 50 ms slot, 7 slots of image then 3 of silence per sample
    n_on, n_slots = int(PRESENT_MS / SLOT_MS), int((PRESENT_MS + REST_MS) / SLOT_MS)
    rates = np.zeros((n * n_slots, X.shape[1]))
    for k in range(n):
        rates[k * n_slots:k * n_slots + n_on] = X[k] * p["max_rate_hz"]
    stim = b2.TimedArray(rates * Hz, dt=SLOT_MS * ms)

    ns = dict(
        v_rest_e=p["v_rest_e_mv"] * mV, v_reset_e=p["v_reset_e_mv"] * mV, v_thresh_e=p["v_thresh_e_mv"] * mV,
        v_rest_i=p["v_rest_i_mv"] * mV, v_reset_i=p["v_reset_i_mv"] * mV, v_thresh_i=p["v_thresh_i_mv"] * mV,
        e_exc=p["e_exc_mv"] * mV, e_inh_e=p["e_inh_e_mv"] * mV, e_inh_i=p["e_inh_i_mv"] * mV,
        tau_e=p["tau_mem_e_ms"] * ms, tau_i=p["tau_mem_i_ms"] * ms, tau_ge=p["tau_ge_ms"] * ms,
        tau_gi=p["tau_gi_ms"] * ms, theta_plus=p["theta_plus_mv"] * mV, tau_theta=p["tau_theta_ms"] * ms,
        tau_pre=p["tau_pre_ms"] * ms, tau_post1=p["tau_post1_ms"] * ms, tau_post2=p["tau_post2_ms"] * ms,
        nu_pre=p["nu_pre"], nu_post=p["nu_post"], w_max=p["w_max"], w_ei=p["w_ei"], w_ie=p["w_ie"],
        weight_sum=p["weight_sum"], stim=stim,
    )
    eqs_e = """
    dv/dt = ((v_rest_e - v) + ge * (e_exc - v) + gi * (e_inh_e - v)) / tau_e : volt (unless refractory)
    dge/dt = -ge / tau_ge : 1
    dgi/dt = -gi / tau_gi : 1
    dtheta/dt = -theta / tau_theta : volt
    """
    eqs_i = """
    dv/dt = ((v_rest_i - v) + ge * (e_exc - v) + gi * (e_inh_i - v)) / tau_i : volt (unless refractory)
    dge/dt = -ge / tau_ge : 1
    dgi/dt = -gi / tau_gi : 1
    """
    post_traces = "" if traces == "synapse" else """
    dpost1/dt = -post1 / tau_post1 : 1
    dpost2/dt = -post2 / tau_post2 : 1
    """
    reset_e = "v = v_reset_e; theta += theta_plus" + ("" if traces == "synapse" else "; post1 = 1.0; post2 = 1.0")
    if traces == "synapse":
        P = b2.PoissonGroup(X.shape[1], rates="stim(t, i)", namespace=ns, name="inputs")
    else:  # PoissonGroup's own threshold, plus the input's trace
        P = b2.NeuronGroup(X.shape[1], "dpre/dt = -pre / tau_pre : 1", threshold="rand() < stim(t, i) * dt",
                           reset="pre = 1.0", method="exact", namespace=ns, name="inputs")
    E = b2.NeuronGroup(N, eqs_e + post_traces, threshold="v > v_thresh_e + theta", reset=reset_e,
                       refractory=p["refrac_e_ms"] * ms, method="exponential_euler", namespace=ns, name="exc")
    I = b2.NeuronGroup(N, eqs_i, threshold="v > v_thresh_i", reset="v = v_reset_i",
                       refractory=p["refrac_i_ms"] * ms, method="exponential_euler", namespace=ns, name="inh")
    E.v = p["v_rest_e_mv"] * mV
    I.v = p["v_rest_i_mv"] * mV
    if traces == "synapse":  # the Brian2 ports' formulation: event-driven traces per synapse
        S = b2.Synapses(P, E, model="""
            w : 1
            dpre/dt = -pre / tau_pre : 1 (event-driven)
            dpost1/dt = -post1 / tau_post1 : 1 (event-driven)
            dpost2/dt = -post2 / tau_post2 : 1 (event-driven)
            """,
                        on_pre="ge_post += w; pre = 1.0; w = clip(w - nu_pre * post1, 0, w_max)",
                        on_post="w = clip(w + nu_post * pre * post2, 0, w_max); post1 = 1.0; post2 = 1.0",
                        namespace=ns, name="input_exc")
    else:  # traces on the neurons (one per input / E neuron), set by the resets after the synapses
        S = b2.Synapses(P, E, model="w : 1",
                        on_pre="ge_post += w; w = clip(w - nu_pre * post1_post, 0, w_max)",
                        on_post="w = clip(w + nu_post * pre_pre * post2_post, 0, w_max)",
                        namespace=ns, name="input_exc")
    S.connect()
    # initial weights (U(0,1) + offset) * scale, in Brian2's synapse order
    S.w = ((rng.random(X.shape[1] * N) + p["w_init_offset"]) * p["w_init_scale"])
    EI = b2.Synapses(E, I, on_pre="ge_post += w_ei", namespace=ns, name="exc_inh")
    EI.connect(j="i")
    IE = b2.Synapses(I, E, on_pre="gi_post += w_ie", namespace=ns, name="inh_exc")
    IE.connect(condition="i != j")
    mon = b2.SpikeMonitor(E, name="exc_spikes")
    objects = [P, E, I, S, EI, IE, mon]

    sample = (PRESENT_MS + REST_MS) * ms
    if mode == "cpp":
        hdir = workdir
        with open(os.path.join(hdir, "dc_norm.h"), "w") as f:
            f.write(NORM_HEADER)
        kw = dict(headers=['"dc_norm.h"'], include_dirs=[os.path.abspath(hdir)])

        @b2.implementation("cpp", ADD_CODE, **kw)
        @b2.check_units(w=1, j=1, t=second, result=1)
        def dc_colsum_add(w, j, t):
            raise NotImplementedError("C++ standalone only")

        @b2.implementation("cpp", GET_CODE, **kw)
        @b2.check_units(j=1, result=1)
        def dc_colsum_get(j):
            raise NotImplementedError("C++ standalone only")

        dc_colsum_add.stateless = False  # side effects: never reorder or hoist
        dc_colsum_get.stateless = False
        ns.update(dc_colsum_add=dc_colsum_add, dc_colsum_get=dc_colsum_get)
        objects.append(S.run_regularly("w = dc_colsum_add(w, j, t)", dt=sample, when="start", order=0,
                                       name="norm_sum"))
        objects.append(S.run_regularly("w = w * weight_sum / dc_colsum_get(j)", dt=sample, when="start",
                                       order=1, name="norm_scale"))
        net = b2.Network(*objects)
        net.run(n * sample, namespace=ns)
        t0 = time.perf_counter()
        b2.device.build(directory=workdir, compile=True, run=False)
        compile_s = time.perf_counter() - t0
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        b2.device.run(directory=workdir, with_output=False)
        wall_s = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim_s = float(b2.device._last_run_time)
        cpu_s = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)  # the whole binary
        info = dict(target="cpp_standalone", compile_s=compile_s, run_wall_s=wall_s, sim_s=sim_s, cpu_s=cpu_s)
    else:
        post = None

        @b2.network_operation(dt=sample, when="start")
        def normalize():
            nonlocal post
            if post is None:
                post = np.asarray(S.j[:])
            w = S.w_[:]
            colsum = np.bincount(post, weights=w, minlength=N)
            S.w_[:] = w * (p["weight_sum"] / np.where(colsum > 0, colsum, p["weight_sum"]))[post]

        objects.append(normalize)
        net = b2.Network(*objects)
        net.store("start")
        t0 = time.perf_counter()
        net.run(b2.defaultclock.dt, namespace=ns)  # compiles every code object (cached on disk)
        compile_s = time.perf_counter() - t0
        net.restore("start")
        t0, c0 = time.perf_counter(), time.process_time()
        net.run(n * sample, namespace=ns)
        sim_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        info = dict(target=b2.prefs.codegen.target, compile_s=compile_s, run_wall_s=sim_s, sim_s=sim_s, cpu_s=cpu_s)

    spikes = np.asarray(mon.t[:] / ms)
    per_sample = np.bincount((spikes // (PRESENT_MS + REST_MS)).astype(int), minlength=n)[:n]
    info.update(samples=n, neurons=N, samples_per_s=n / sim_s, mean_spikes=float(per_sample.mean()),
                brian2=b2.__version__, mean_w_colsum=float(np.asarray(S.w[:]).sum() / N))
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["cpp", "runtime"], required=True)
    ap.add_argument("--target", default="cython", choices=["cython", "numpy"], help="runtime codegen target")
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--images", help=".npy (n, 784) values in [0, 1]; default: uniform random images")
    ap.add_argument("--params", help="JSON dict overriding the model constants (DiehlCookParams names)")
    ap.add_argument("--traces", choices=["synapse", "neuron"], default="synapse",
                    help="STDP traces per synapse, event-driven (the Brian2 ports), or per neuron")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = dict(PARAMS)
    if args.params:
        p.update({k: v for k, v in json.loads(args.params).items() if k in PARAMS})
    if args.images:
        X = np.load(args.images)[:args.samples]
    else:
        X = np.random.default_rng(args.seed).random((args.samples, 784))
    n = min(args.samples, X.shape[0])
    try:
        import brian2  # noqa: F401
    except ImportError as e:
        print(json.dumps({"error": f"not installed ({e})"}))
        return 3
    with tempfile.TemporaryDirectory(prefix="brian2_dc_") as tmp:
        info = simulate(args.mode, args.neurons, X, n, args.seed, p, args.target, tmp, args.traces)
        info["traces"] = args.traces
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
