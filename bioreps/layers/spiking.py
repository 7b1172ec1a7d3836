"""Spiking winner-take-all network of Diehl & Cook (2015), "Unsupervised learning of digit
recognition using spike-timing-dependent plasticity", Front. Comput. Neurosci. 9:99.

The model is the one of the released Brian-1 code as summarised in
``docs/models/diehl_cook_2015.md`` (not BindsNET's variant): Poisson inputs (rate
proportional to the pixel) drive N conductance-based LIF excitatory neurons through plastic
weights; each E neuron excites one I neuron, which inhibits every other E neuron; E neurons
carry an adaptive threshold theta; weights learn by the trace-based STDP rule of the code. The
kernels and their step order are described in :mod:`bioreps.kernels.cpu.lif`.

Choices the card leaves open, made here:

* Input delays (0-10 ms random in the original) are **not modelled**.
* The network starts at rest (``V = v_rest``; the original starts E neurons 40 mV below rest);
  theta starts at 0 (the original's 20 mV with a -20 mV offset is the same threshold).
* During :meth:`SpikingWTA.fit` the network state (potentials, conductances, traces) carries over
  from one sample to the next as in the original (the 150 ms rest lets it decay, no reset). In
  :meth:`SpikingWTA.transform` every sample starts from rest, so samples are independent (order
  free, reproducible one by one, parallel on a GPU later).
* The low-activity retry: when the E neurons fire fewer than ``min_spikes`` spikes during a
  presentation, the maximum input rate is raised by ``rate_boost_hz`` and the sample shown again
  (after its rest period), at most ``params.max_retries`` times (10 by default); the counts of the
  last attempt are used. Weights are renormalised before every training presentation, retries
  included, as in the original. The retry applies in ``transform`` too (as in the original's
  test phase).
* Input encoding for datasets other than MNIST (the paper has only MNIST): by default the
  paper's (one input per pixel, rate proportional to the pixel). Two options, both off by
  default: ``DiehlCookParams(input_sum=...)`` scales every image to the same total intensity
  (a per-image gain), and ``encoding="on-off"`` feeds ON and OFF inputs around the training
  set's mean image (:func:`encode_input`). On Fashion-MNIST (N = 400, one epoch) they lift the
  vote from 69.8% to 73.6% (gain) and 75.3-75.4% (both; ``benchmarks/RESULTS.md``); the network,
  its constants and its learning rule are unchanged.
* Each presentation draws its Poisson spikes from the counter-based generator of
  :mod:`bioreps.kernels.poisson`, keyed ``stream_key(seed_, phase, sample_index, attempt)``
  (phase 1 = fit, 2 = transform): results do not depend on batching, and the CPU kernel and the
  CUDA kernels (which draw the spikes on the device) see the very same spikes.
* Backends: ``"cpu"`` runs the Numba kernel one presentation at a time; ``"cuda"`` runs
  :mod:`bioreps.kernels.cuda.lif`: for ``fit`` one persistent block runs every presentation of a
  chunk of samples (normalisation, retries and STDP on the device, ``W`` resident on the device for
  the whole call), for ``transform`` one block per sample, many samples in parallel. Both give the
  same spike counts; weights agree to rounding (~1e-12).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .._progress import progress_bar
from .._validation import check_array, check_float, check_int, check_labels
from ..backend import resolve
from ._base import Layer

__all__ = ["DiehlCookParams", "ENCODINGS", "SpikingWTA", "encode_input"]


@dataclass(frozen=True)
class DiehlCookParams:
    """Every constant of the Diehl & Cook (2015) model (units in the names; conductances and
    weights are in units of the leak conductance, i.e. dimensionless).

    Neurons: ``tau_mem_{e,i}_ms``, ``v_{rest,reset,thresh}_{e,i}_mv``, reversal potentials
    ``e_exc_mv``, ``e_inh_e_mv``, ``e_inh_i_mv``, refractory periods ``refrac_{e,i}_ms``,
    conductance decays ``tau_ge_ms``, ``tau_gi_ms``. Adaptive threshold: ``theta_plus_mv`` per
    spike, decaying with ``tau_theta_ms`` (learning only). Lateral connections: ``w_ei`` (E -> its
    I partner), ``w_ie`` (I -> every other E). Input weights: initial ``(U(0, 1) + w_init_offset)
    * w_init_scale``, each E neuron's inputs renormalised to sum ``weight_sum`` before every
    training sample (an absolute sum: 0.1 per input at 784 inputs), clipped to [0, ``w_max``].
    STDP: ``nu_pre``, ``nu_post``, trace time constants ``tau_pre_ms``, ``tau_post1_ms``,
    ``tau_post2_ms``. Input: a pixel of 1.0 fires at ``max_rate_hz`` (255 / 4 Hz); the retry
    raises that by ``rate_boost_hz`` at most ``max_retries`` times. Input delays are not
    modelled.

    ``input_sum`` (not in the paper; 0 = off, the paper's encoding) is a per-image gain: when > 0
    every image is scaled so its inputs sum to ``input_sum`` (then clipped to 1; with the ON/OFF
    encoding the ON and the OFF inputs each to half of it) before the rates are computed, so all
    images drive the network about equally (see :func:`encode_input`).
    """

    tau_mem_e_ms: float = 100.0
    tau_mem_i_ms: float = 10.0
    v_rest_e_mv: float = -65.0
    v_reset_e_mv: float = -65.0
    v_thresh_e_mv: float = -52.0
    v_rest_i_mv: float = -60.0
    v_reset_i_mv: float = -45.0
    v_thresh_i_mv: float = -40.0
    e_exc_mv: float = 0.0
    e_inh_e_mv: float = -100.0
    e_inh_i_mv: float = -85.0
    refrac_e_ms: float = 5.0
    refrac_i_ms: float = 2.0
    tau_ge_ms: float = 1.0
    tau_gi_ms: float = 2.0
    theta_plus_mv: float = 0.05
    tau_theta_ms: float = 1e7
    w_ei: float = 10.4
    w_ie: float = 17.0
    w_init_scale: float = 0.3
    w_init_offset: float = 0.01
    weight_sum: float = 78.0
    nu_pre: float = 1e-4
    nu_post: float = 1e-2
    tau_pre_ms: float = 20.0
    tau_post1_ms: float = 20.0
    tau_post2_ms: float = 40.0
    w_max: float = 1.0
    max_rate_hz: float = 63.75
    rate_boost_hz: float = 32.0
    max_retries: int = 10
    input_sum: float = 0.0

    _time_constants = ("tau_mem_e_ms", "tau_mem_i_ms", "refrac_e_ms", "refrac_i_ms", "tau_ge_ms", "tau_gi_ms",
                       "tau_theta_ms", "tau_pre_ms", "tau_post1_ms", "tau_post2_ms")
    _non_negative = ("theta_plus_mv", "w_ei", "w_ie", "w_init_scale", "w_init_offset", "nu_pre", "nu_post",
                     "rate_boost_hz", "input_sum")
    _positive = ("weight_sum", "w_max", "max_rate_hz")

    def validate(self):
        """Raise ValueError for a non-finite constant, a time constant <= 0, a negative
        learning rate/weight/rate, or thresholds not above the reset potentials."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "max_retries":
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise ValueError(f"max_retries must be an integer >= 0, got {v!r}")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v!r}")
        for name in self._time_constants:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (a time constant), got {getattr(self, name)!r}")
        for name in self._non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in self._positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.v_thresh_e_mv <= self.v_reset_e_mv or self.v_thresh_i_mv <= self.v_reset_i_mv:
            raise ValueError("thresholds must lie above the reset potentials")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> "DiehlCookParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DiehlCookParams fields: {sorted(unknown)}")
        return cls(**dict(d))


ENCODINGS = ("pixels", "on-off")


def encode_input(X, params, input_mean=None):
    """The input values (in [0, 1]) the Poisson rates are computed from.

    ``input_mean`` None: the pixels themselves (the paper's encoding). Otherwise ON/OFF channels
    around that mean image, like retinal ON- and OFF-centre cells: ``[max(X - mean, 0), max(mean
    - X, 0)]``, twice as many inputs (an ON input fires where the image is brighter than
    usual, an OFF input where it is darker). Then, when ``params.input_sum > 0``, each channel
    of each row (the pixels; or the ON inputs and the OFF inputs separately, each to half of it)
    is scaled to sum ``params.input_sum`` and clipped to 1 (an empty channel stays empty), a gain
    per channel as the retina's ON and OFF pathways each have.

    The gain is a choice for datasets whose images differ much in total intensity (not in the
    paper): Fashion-MNIST images sum from 15 to 590 (mean 224; a sandal 107, a coat 302), so
    with raw pixels the bright classes drive every neuron and take most of them. MNIST digits
    differ far less.
    """
    X = np.asarray(X, np.float64)
    channels = [X] if input_mean is None else [np.maximum(X - input_mean, 0.0), np.maximum(input_mean - X, 0.0)]
    if params.input_sum > 0:
        target = params.input_sum / len(channels)
        for i, C in enumerate(channels):
            s = C.sum(axis=1, keepdims=True)
            channels[i] = np.minimum(C * np.divide(target, s, out=np.zeros_like(s), where=s > 0), 1.0)
    return channels[0] if len(channels) == 1 else np.concatenate(channels, axis=1)


def _drive(plan, present):
    """Run a plan (:meth:`SpikingWTA._fit_plan`): present each request it yields, send back the
    retries, until it ends."""
    try:
        req = next(plan)
        while True:
            req = plan.send(present(req))
    except StopIteration:
        pass


def _present_many(members, requests, progress=None):
    """Present the same rows to several CUDA-backed layers in ONE launch of the many-network
    training kernel (:func:`bioreps.kernels.cuda.lif.fit_samples_many`, one block per network),
    then each layer's bookkeeping (:meth:`SpikingWTA._rows_done`). ``requests[i]`` is the request
    ``members[i]``'s plan yielded; all must present the same rows from the same sample index.
    Returns each layer's retries. Each layer ends exactly as its own ``_present_rows`` leaves it."""
    from ..kernels.cpu.lif import make_constants
    from ..kernels.cuda import lif

    first = requests[0]
    for r in requests[1:]:
        if (r["first"], r["n_present"], r["n_rest"], r["X"].shape) != (first["first"], first["n_present"],
                                                                        first["n_rest"], first["X"].shape):
            raise ValueError("the networks of one launch must present the same rows with the same timing")
    encodings, index, xidx = [], {}, []
    for m, r in zip(members, requests):
        mean = getattr(m, "input_mean_", None)
        key = (float(r["p"].input_sum), None if mean is None else np.asarray(mean, np.float64).tobytes())
        if key not in index:
            index[key] = len(encodings)
            encodings.append(encode_input(r["X"], r["p"], mean))
        xidx.append(index[key])
    n, N = first["X"].shape[0], members[0].weights_.shape[1]
    counts = [np.zeros((n, N), np.float32) for _ in members]
    states = []
    for m in members:
        state = m._net_state_
        state.theta = m.theta_
        states.append(state)
    bar = progress_bar(total=n, progress=progress, desc=f"{first['desc']} ({len(members)} networks)", unit="sample")
    try:
        attempts = lif.fit_samples_many(
            [m.weights_ for m in members], encodings, xidx, [m.seed_ for m in members], 1, first["first"],
            first["n_present"], first["n_rest"], [make_constants(m.dt_ms, **r["p"].to_dict()) for m, r in
                                                  zip(members, requests)],
            members[0].min_spikes, [r["p"].max_retries for r in requests], states, counts,
            callback=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()
    return [m._rows_done(n, int((attempts[i] - 1).sum()), states[i]) for i, m in enumerate(members)]


class SpikingWTA(Layer):
    """Diehl & Cook (2015) spiking network learning by STDP (Numba CPU or CUDA kernels).

    Parameters
    ----------
    n_neurons : int
        Excitatory neurons N (as many inhibitory ones).
    params : DiehlCookParams
        The model's constants.
    dt_ms : float
        Time step; at most the shorter refractory period (E 5 ms, I 2 ms).
    t_present_ms, t_rest_ms : float
        Presentation and rest time per sample (350 and 150 ms).
    min_spikes : int
        A presentation with fewer E spikes is repeated at a higher rate (see module docstring).
    encoding : {"pixels", "on-off"}
        What the Poisson inputs encode (:func:`encode_input`): "pixels" (the paper: one input per
        pixel, rate proportional to the pixel) or "on-off" (not in the paper: ON and OFF inputs
        around the training set's mean image, ``2 * n_features`` inputs; the mean is taken from
        the ``X`` of :meth:`fit`, or of the first :meth:`partial_fit`). ``params.weight_sum`` is
        an absolute sum: keep 0.1 per input by setting it to 156.8 for 784 pixels.
    backend : {"auto", "cpu", "cuda"}
        Resolved by :func:`bioreps.backend.resolve`: "auto" (or None) picks CUDA when a GPU (or
        the CUDA simulator) is usable, else the CPU (``$BIOREPS_BACKEND`` overrides "auto");
        "cuda" raises :class:`~bioreps.backend.BackendError` where CUDA is not usable.
    random_state : int or None
        Seeds the initial weights and every presentation's Poisson spikes.
    progress : bool or None
        Progress bar (samples/s, mean spikes per sample); None follows ``$BIOREPS_PROGRESS``.

    Attributes
    ----------
    weights_ : ndarray (n_inputs, n_neurons) float64
        Input weights, one row per input (pixel; with "on-off" the 784 ON inputs then the 784 OFF
        ones), one column per E neuron (the original's 784 x N layout). Columns are renormalised
        to sum ``weight_sum`` before every training presentation, so after :meth:`fit` they sum
        to about (not exactly) ``weight_sum``.
    input_mean_ : ndarray (n_features,) or None
        The mean image of the ON/OFF encoding (None for "pixels").
    theta_ : ndarray (n_neurons,) float64
        Adaptive thresholds in mV (added to ``v_thresh_e_mv``).
    labels_ : ndarray (n_neurons,) int64
        Class of each neuron, set by :meth:`assign_labels`.
    backend_ : str
    n_samples_seen_ : int
        Training samples presented (retries not counted).
    n_retries_ : int
        Extra presentations made by the low-activity retry during training.
    """

    kind = "spiking-wta"

    @classmethod
    def ensemble(cls, layers, n_jobs=None):
        """The layers as one :class:`~bioreps.layers.SpikingEnsemble` (see :attr:`Layer.ensemble`)."""
        from .ensemble import SpikingEnsemble

        return SpikingEnsemble.of(layers, n_jobs=n_jobs)
    checkpoint_unit = "samples"
    indexed_transform = True
    has_vote_readout = True
    config_fit_params = ("epochs",)
    input_dtype = np.float64
    input_unit_interval = True
    export_block_rows = 1024
    fitted = {**Layer.fitted, "weights_": np.float64, "theta_": np.float64, "input_mean_": np.float64,
              "labels_": np.int64, "classes_": np.int64, "seed_": "json", "n_samples_seen_": "json",
              "n_retries_": "json", "backend_": "json", "n_epochs_": "json", "n_fit_rows_": "json"}
    representation_description = "E spike counts per presentation"

    def __init__(self, n_neurons=100, params=DiehlCookParams(), dt_ms=0.5, t_present_ms=350.0, t_rest_ms=150.0,
                 min_spikes=5, encoding="pixels", backend="auto", random_state=None, progress=None):
        self.n_neurons = n_neurons
        self.encoding = encoding
        self.params = params
        self.dt_ms = dt_ms
        self.t_present_ms = t_present_ms
        self.t_rest_ms = t_rest_ms
        self.min_spikes = min_spikes
        self.backend = backend
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ validation
    def _validate_params(self):
        """Check every argument; return (backend, params, n_present_steps, n_rest_steps)."""
        check_int(self.n_neurons, "n_neurons", 1)
        check_int(self.min_spikes, "min_spikes", 0)
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {list(ENCODINGS)}")
        if not isinstance(self.params, DiehlCookParams):
            raise ValueError(f"params must be a DiehlCookParams, got {type(self.params).__name__}")
        p = self.params.validate()
        dt = check_float(self.dt_ms, "dt_ms", strict=True)
        if dt > p.refrac_e_ms or dt > p.refrac_i_ms:
            raise ValueError(f"dt_ms={dt:g} is larger than a refractory period (E {p.refrac_e_ms:g} ms, "
                             f"I {p.refrac_i_ms:g} ms)")
        t_present = check_float(self.t_present_ms, "t_present_ms", strict=True)
        t_rest = check_float(self.t_rest_ms, "t_rest_ms")
        n_present = int(round(t_present / dt))
        n_rest = int(round(t_rest / dt))
        if n_present < 1:
            raise ValueError(f"t_present_ms={t_present:g} is shorter than one step of {dt:g} ms")
        rate_max = p.max_rate_hz + p.max_retries * p.rate_boost_hz
        if rate_max * dt / 1000.0 > 1:
            raise ValueError(f"the highest input rate ({rate_max:g} Hz) exceeds one spike per step of {dt:g} ms")
        backend = resolve(self.backend)
        return backend, p, n_present, n_rest

    def _fitted_encoding(self):
        return "pixels" if getattr(self, "input_mean_", None) is None else "on-off"

    def _check_same_encoding(self):
        """Continuing (resume, partial_fit, transform) needs the encoding the layer was fitted with."""
        if self.encoding != self._fitted_encoding():
            raise ValueError(f"encoding={self.encoding!r} but the layer was fitted with "
                             f"{self._fitted_encoding()!r}; refit (fit starts afresh) or set it back")

    # ------------------------------------------------------------------ simulation
    def _kernel(self, backend=None):
        """The kernel module of ``backend`` (default: the one ``fit`` used, else the resolved
        argument): :mod:`bioreps.kernels.cpu.lif` or :mod:`bioreps.kernels.cuda.lif`; both export
        ``make_constants``, ``LIFState``, ``fit_samples`` and ``transform_samples`` with the same
        signatures."""
        if backend is None:
            backend = getattr(self, "backend_", None) or self._validate_params()[0]
        if backend == "cuda":
            from ..kernels.cuda import lif
        else:
            from ..kernels.cpu import lif
        return lif

    def _run(self, X, W, theta, n_present, n_rest, p, learn, phase, first_index, state=None, desc="spiking",
             backend=None, continuous=False):
        """Present every row of X with the kernels of ``backend`` (:meth:`_kernel`); returns
        (counts (n, N) float32, retries, state). When learning, ``W`` is updated in place and the
        state (a ``LIFState`` of that backend, created from ``theta`` when None) carries over."""
        lif = self._kernel(backend)
        X = encode_input(X, p, getattr(self, "input_mean_", None))
        c = lif.make_constants(self.dt_ms, **p.to_dict())
        n, N = X.shape[0], W.shape[1]
        out = np.zeros((n, N), np.float32)
        bar = progress_bar(total=n, progress=self.progress, desc=desc, unit="sample")
        spikes = [0.0]

        def callback(done, _):
            bar.update(done - bar.n)
            spikes[0] = float(out[:done].sum())
            bar.set_postfix(spikes_per_sample=f"{spikes[0] / max(done, 1):.1f}", refresh=False)

        try:
            if learn:
                if state is None:
                    state = lif.LIFState(W.shape[0], N, p.v_rest_e_mv, p.v_rest_i_mv, theta=theta)
                else:
                    state.theta = theta
                attempts = lif.fit_samples(W, X, self.seed_, phase, first_index, n_present, n_rest, c,
                                           self.min_spikes, p.max_retries, state, out, callback)
            else:
                attempts = lif.transform_samples(W, theta, X, self.seed_, phase, first_index, n_present, n_rest, c,
                                                 self.min_spikes, p.max_retries, out, callback, continuous=continuous)
        finally:
            bar.close()
        return out, int((attempts - 1).sum()), state

    # ------------------------------------------------------------------ learning
    _STATE_FIELDS = ("v_e", "ge_e", "gi_e", "ref_e", "theta", "v_i", "ge_i", "gi_i", "ref_i", "x_pre",
                     "x_post1", "x_post2", "spk_e", "spk_i")

    def _start(self, X, p, backend):
        """Fresh weights, thresholds and network state (at rest) for ``X``'s inputs."""
        from ..kernels.cpu.lif import LIFState

        seed_seq = np.random.SeedSequence(self.random_state)
        seed = int(seed_seq.entropy % (2**63))
        rng = np.random.default_rng([seed, 0])
        if self.encoding == "on-off":
            self.input_mean_ = X.mean(axis=0)
            n_inputs = 2 * X.shape[1]
        else:
            self.input_mean_ = None
            n_inputs = X.shape[1]
        W = (rng.random((n_inputs, int(self.n_neurons))) + p.w_init_offset) * p.w_init_scale
        self.seed_ = seed
        self.backend_ = backend
        self.weights_ = W
        self.theta_ = np.zeros(int(self.n_neurons))
        self.n_features_in_ = X.shape[1]
        self.n_neurons_ = int(self.n_neurons)
        self.n_samples_seen_ = 0
        self.n_retries_ = 0
        self.n_epochs_ = None
        self.n_fit_rows_ = None
        # the network state carries over between training presentations (and is checkpointed),
        # kept on the host; the CUDA kernels copy it in and back per call
        self._net_state_ = LIFState(n_inputs, self.n_neurons_, p.v_rest_e_mv, p.v_rest_i_mv, theta=self.theta_)

    def _present_rows(self, X, p, n_present, n_rest, backend, desc):
        """Train on the rows of ``X`` in order, continuing the sample counter and the state."""
        _, retries, state = self._run(X, self.weights_, self.theta_, n_present, n_rest, p, True, 1,
                                      self.n_samples_seen_, self._net_state_, desc=desc, backend=backend)
        return self._rows_done(X.shape[0], retries, state)

    def _rows_done(self, n, retries, state):
        """The bookkeeping after ``n`` rows were presented: state, thresholds, counters."""
        self._net_state_ = state
        self.theta_ = np.array(state.theta, np.float64)
        self.n_samples_seen_ += n
        self.n_retries_ += retries
        return retries

    def fit(self, X, epochs=1, *, callback=None, resume=False, checkpoint=None, checkpoint_every=None):
        """Learn the input weights and thresholds from ``X`` (n, n_features), values in [0, 1],
        by STDP, presenting the rows in order ``epochs`` times. Starts afresh unless ``resume``.

        Parameters
        ----------
        epochs : int
            Passes over ``X``.
        callback : callable or None
            ``callback(layer, record)`` after every epoch and every checkpoint, ``record`` a dict
            (``samples``: samples presented so far, ``epoch``, ``retries``, ``seconds``).
            Returning ``False`` stops training (the layer stays consistent and resumable).
        resume : bool
            Continue a fit of the same ``X`` and ``epochs`` from ``n_samples_seen_`` (after
            :meth:`load` of a checkpoint). Weights, thresholds and the network state are restored
            and every presentation draws the spikes keyed by its global sample number, so a
            resumed run ends exactly where an uninterrupted one does.
        checkpoint : path or None
            Save the layer there (atomically, through :mod:`bioreps.io`) every
            ``checkpoint_every`` samples (default: every epoch) and at the end.
        checkpoint_every : int or None
            Samples between checkpoints.
        """
        _drive(self._fit_plan(X, epochs, callback=callback, resume=resume, checkpoint=checkpoint,
                              checkpoint_every=checkpoint_every), self._present_request)
        return self

    def _present_request(self, req):
        return self._present_rows(req["X"], req["p"], req["n_present"], req["n_rest"], req["backend"], req["desc"])

    def _fit_plan(self, X, epochs=1, *, callback=None, resume=False, checkpoint=None, checkpoint_every=None):
        """:meth:`fit` as a generator: it checks everything, starts (or resumes), then yields each
        block of rows to present as a request (a dict: the rows ``X``, ``first`` (the global index
        of the first row), ``p``, ``n_present``, ``n_rest``, ``backend``, ``desc``) and expects
        the retries back once the caller presented them (:meth:`_present_request`, or
        :class:`~bioreps.layers.SpikingEnsemble` for many networks in one launch); it checkpoints
        and calls ``callback`` between blocks."""
        import time

        epochs = check_int(epochs, "epochs", 1)
        if checkpoint_every is not None:
            checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
        backend, p, n_present, n_rest = self._validate_params()
        X = self._check_X(X, reset=True)
        resuming = bool(resume) and self._is_fitted()
        if resuming:
            if (self.n_epochs_, self.n_fit_rows_) != (epochs, X.shape[0]):
                raise ValueError(f"cannot resume: the checkpoint is of a fit of {self.n_epochs_} epochs over "
                                 f"{self.n_fit_rows_} rows, asked for {epochs} epochs over {X.shape[0]} rows")
            X = self._check_X(X)
            self._check_same_encoding()
            if getattr(self, "_net_state_", None) is None:
                raise ValueError("cannot resume: the layer holds no network state (save a checkpoint "
                                 "with fit(checkpoint=...))")
            self.backend_ = backend
        else:
            # every check passed: start
            self._start(X, p, backend)
            self.n_epochs_, self.n_fit_rows_ = epochs, X.shape[0]
        n = X.shape[0]
        total = epochs * n
        step = checkpoint_every if (checkpoint is not None and checkpoint_every) else n
        while self.n_samples_seen_ < total:
            t0 = time.perf_counter()
            seen = self.n_samples_seen_
            epoch, row = divmod(seen, n)
            # up to the next checkpoint boundary (multiples of `step` samples) or the epoch's end
            stop = min((seen // step + 1) * step, (epoch + 1) * n) - epoch * n
            retries = yield dict(X=X[row:stop], first=seen, p=p, n_present=n_present, n_rest=n_rest,
                                 backend=backend, desc=f"spiking fit {epoch + 1}/{epochs}")
            done = self.n_samples_seen_
            if checkpoint is not None and (done % step == 0 or done % n == 0):
                self.save(checkpoint)
            record = {"samples": done, "epoch": done / n, "retries": retries,
                      "seconds": time.perf_counter() - t0}
            if callback is not None and callback(self, record) is False:
                break

    def partial_fit(self, X):
        """Present the rows of ``X`` once, in order, continuing the learning (weights, thresholds,
        network state and sample counter) of previous calls; the first call initialises the
        layer. Two calls on the halves of X equal one ``fit(X, epochs=1)``."""
        _drive(self._partial_plan(X), self._present_request)
        return self

    def _partial_plan(self, X):
        """:meth:`partial_fit` as a generator of one request (see :meth:`_fit_plan`)."""
        backend, p, n_present, n_rest = self._validate_params()
        X = self._check_X(X, reset=True)
        if self._is_fitted():
            X = self._check_X(X)
            self._check_same_encoding()
            if getattr(self, "_net_state_", None) is None:
                from ..kernels.cpu.lif import LIFState

                self._net_state_ = LIFState(self.weights_.shape[0], self.n_neurons_, p.v_rest_e_mv, p.v_rest_i_mv,
                                            theta=self.theta_)
            self.backend_ = backend
        else:
            self._start(X, p, backend)
        yield dict(X=X, first=self.n_samples_seen_, p=p, n_present=n_present, n_rest=n_rest, backend=backend,
                   desc="spiking partial_fit")

    # ------------------------------------------------------------------ inference
    def transform(self, X, *, first_index=0, protocol="reset"):
        """E spike counts per sample, float32 (n, n_neurons), learning and theta frozen. Row r
        draws its spikes from the seed ``[seed_, 2, first_index + r, attempt]`` (``first_index``
        lets block-wise callers reproduce one whole call).

        ``protocol``: ``"reset"`` (default) starts every sample from rest, so samples are
        independent of their order (and run in parallel on a GPU); ``"continuous"`` is the
        released Diehl & Cook code's test protocol: the images run back to back, each followed by
        ``t_rest_ms`` of rest in which the state decays, nothing reset between them (counts then
        depend on the order). It runs on the CPU kernel whatever the backend (it is sequential).
        With the same input spikes, untrained weights gave about 22% more spikes under the reset.
        """
        self._check_fitted()
        if protocol not in ("reset", "continuous"):
            raise ValueError(f"protocol must be 'reset' or 'continuous', got {protocol!r}")
        backend, p, n_present, n_rest = self._validate_params()
        X = self._check_X(X)
        self._check_same_encoding()
        continuous = protocol == "continuous"
        out, _, _ = self._run(X, self.weights_, self.theta_.copy(), n_present, n_rest, p, False, 2, int(first_index),
                              desc="spiking transform", backend="cpu" if continuous else backend,
                              continuous=continuous)
        return out

    def fit_transform(self, X, y=None, epochs=1):
        return self.fit(X, epochs=epochs).transform(X)

    def assign_labels(self, X, y, counts=None):
        """Label every neuron with the class of its highest mean response over ``(X, y)`` (the
        paper's readout). ``counts`` may pass precomputed ``transform(X)``. Returns self."""
        self._check_fitted()
        if counts is None:
            X = self._check_X(X)
            counts = self.transform(X)
        counts = check_array(counts, name="counts", ndim=2, dtype=np.float64)
        if counts.shape[1] != self.n_neurons_:
            raise ValueError(f"counts has {counts.shape[1]} columns, expected {self.n_neurons_}")
        y = check_labels(y, n=counts.shape[0])
        classes = np.unique(y)
        means = np.stack([counts[y == k].mean(axis=0) for k in classes])  # (n_classes, N)
        self.classes_ = classes
        self.labels_ = classes[np.argmax(means, axis=0)].astype(np.int64)
        return self

    def predict(self, X, counts=None):
        """The paper's vote: the class whose neurons have the highest mean spike count (classes
        without neurons never win unless no class has any)."""
        self._check_fitted()
        if not hasattr(self, "labels_"):
            raise RuntimeError("neuron labels are not assigned yet; call assign_labels(X, y) first")
        if counts is None:
            counts = self.transform(X)
        counts = np.asarray(counts, np.float64)
        scores = np.full((counts.shape[0], self.classes_.size), -np.inf)
        for c, k in enumerate(self.classes_):
            mask = self.labels_ == k
            if mask.any():
                scores[:, c] = counts[:, mask].mean(axis=1)
        return self.classes_[np.argmax(scores, axis=1)]

    @property
    def n_units_(self):
        """Alias of ``n_neurons_`` (every layer reports its width as ``n_units_``)."""
        return self.n_neurons_

    def receptive_field_weights(self):
        """Input weights as rows, (n_neurons, n_features); with the "on-off" encoding the ON
        weights minus the OFF weights (a neuron's preferred image relative to the mean)."""
        self._check_fitted()
        if getattr(self, "input_mean_", None) is not None:
            n = self.n_features_in_
            return (self.weights_[:n] - self.weights_[n:]).T
        return self.weights_.T

    # ------------------------------------------------------------------ persistence
    def model_arrays(self) -> dict:
        arrays = super().model_arrays()
        state = getattr(self, "_net_state_", None)
        if state is not None:
            arrays["network_state"] = {k: np.asarray(getattr(state, k)) for k in self._STATE_FIELDS}
        return arrays

    def _restore(self, hp, arrays, path):
        self.backend_ = self._validate_params()[0]
        n_inputs, self.n_neurons_ = self.weights_.shape
        if not hasattr(self, "input_mean_"):
            self.input_mean_ = None
        mean = self.input_mean_
        # files of older versions store no n_features_in_
        self.n_features_in_ = n_inputs if mean is None else mean.shape[0]
        if mean is not None and n_inputs != 2 * self.n_features_in_:
            raise ValueError(f"{path}: {n_inputs} input weights for an on-off encoding of "
                             f"{self.n_features_in_} features (expected {2 * self.n_features_in_})")
        self.n_retries_ = int(hp.get("n_retries_", 0))
        self.n_epochs_ = hp.get("n_epochs_")
        self.n_fit_rows_ = hp.get("n_fit_rows_")
        if "network_state" in arrays:
            from ..kernels.cpu.lif import LIFState

            p = self.params
            state = LIFState(n_inputs, self.n_neurons_, p.v_rest_e_mv, p.v_rest_i_mv)
            for k in self._STATE_FIELDS:
                if k not in arrays["network_state"]:
                    raise ValueError(f"{path}: network_state lacks {k!r}")
                setattr(state, k, np.array(arrays["network_state"][k], dtype=getattr(state, k).dtype))
            self._net_state_ = state
