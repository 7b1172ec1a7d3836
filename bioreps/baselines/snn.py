"""A surrogate-gradient spiking MLP trained with backprop through time (plain torch).

Model (one hidden LIF layer by default, ``sizes=(784, 2000, 10)``):

- **Input**: rate coding. At each of ``n_steps`` steps of ``dt_ms`` every input fires with
  probability ``min(1, gain * x)`` (Bernoulli, ``x`` = pixel intensity in [0, 1]). The draw is
  made through a straight-through estimator (``s = bernoulli(p) + p - p.detach()``), so the
  input gradient used by the Jacobian regulariser and by PGD is that of the expected input.
  The draws come from the model's own :attr:`SpikingMLP.generator` (seeded with ``seed``;
  :func:`~bioreps.baselines.train` reseeds it from its own seed and checkpoints its state).
- **Hidden layers**: current-based leaky integrate-and-fire neurons with the membrane time
  constant of the excitatory neurons of the spiking layer (Diehl & Cook 2015 model card:
  ``tau_mem_e_ms = 100``). The membrane is normalised: rest = reset = 0, threshold = 1.
  Per step ``v <- exp(-dt/tau) * v + W s_in + b``; a spike when ``v >= 1``, then ``v <- 0``
  (the reset is not differentiated through, as in Zenke & Ganguli 2018). No refractory period.
- **Surrogate gradient**: the fast sigmoid of SuperSpike (Zenke & Ganguli 2018),
  ``dS/dv = 1 / (1 + slope * |v - 1|)^2``.
- **Readout**: a non-spiking, non-leaky output layer integrates the last hidden layer's spikes;
  the logits are its membrane after the last step divided by ``n_steps``, i.e.
  ``W_out (counts / n_steps) + b_out``.
- **Representation**: the spike counts of the last hidden layer over the ``n_steps`` steps,
  the output of :attr:`SpikingMLP.representation_module`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_float, check_int
from .models import BaselineModel, _check_sizes, _global_rng_untouched, _init_parameters, _resolve_seed

__all__ = ["SpikingMLP", "LIFParameters", "lif_step", "fast_sigmoid_spike"]

#: Membrane time constant of the excitatory neurons of the spiking layer (model card).
TAU_MEM_E_MS = 100.0


class LIFParameters(tuple):
    """(tau_mem_ms, dt_ms, v_thresh, surrogate_slope) of the normalised LIF neuron."""

    __slots__ = ()

    def __new__(cls, tau_mem_ms=TAU_MEM_E_MS, dt_ms=1.0, v_thresh=1.0, surrogate_slope=10.0):
        return super().__new__(cls, (float(tau_mem_ms), float(dt_ms), float(v_thresh),
                                     float(surrogate_slope)))

    tau_mem_ms = property(lambda self: self[0])
    dt_ms = property(lambda self: self[1])
    v_thresh = property(lambda self: self[2])
    surrogate_slope = property(lambda self: self[3])

    @property
    def decay(self) -> float:
        """Per-step membrane decay ``exp(-dt / tau)``."""
        return math.exp(-self.dt_ms / self.tau_mem_ms)


class _FastSigmoidSpike(torch.autograd.Function):
    """Heaviside forward, SuperSpike fast-sigmoid derivative backward (twice differentiable)."""

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * x.abs()) ** 2, None


def fast_sigmoid_spike(x: torch.Tensor, slope: float = 10.0) -> torch.Tensor:
    """Spikes ``x >= 0`` with surrogate gradient ``1 / (1 + slope |x|)^2``."""
    return _FastSigmoidSpike.apply(x, slope)


def lif_step(current: torch.Tensor, v: torch.Tensor, p: LIFParameters):
    """One step of the normalised LIF neuron: ``(spikes, new_v)`` (pure function)."""
    v = p.decay * v + current
    s = fast_sigmoid_spike(v - p.v_thresh, p.surrogate_slope)
    return s, v * (1.0 - s.detach())


class _LIFLayer(nn.Module):
    """Linear synapses + LIF neurons over a spike train ``(T, B, n_in)`` -> ``(T, B, n_out)``."""

    def __init__(self, n_in, n_out, params: LIFParameters):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.params = params

    def forward(self, spikes_in):
        T, B, _ = spikes_in.shape
        currents = self.fc(spikes_in.reshape(T * B, -1)).reshape(T, B, -1)  # one matmul for all steps
        v = currents.new_zeros(currents.shape[1:])
        out = []
        for t in range(T):
            s, v = lif_step(currents[t], v, self.params)
            out.append(s)
        return torch.stack(out)


class _SpikeCounts(nn.Module):
    """The last hidden LIF layer; its forward output is the spike count per unit ``(B, n)``."""

    def __init__(self, layer: _LIFLayer):
        super().__init__()
        self.layer = layer

    def forward(self, spikes_in):
        return self.layer(spikes_in).sum(0)


class SpikingMLP(BaselineModel):
    """Surrogate-gradient spiking MLP; see the module docstring for the model.

    Parameters
    ----------
    sizes : sequence of int
        Inputs, hidden LIF layer widths (one or more), classes.
    n_steps : int
        Time steps per sample.
    dt_ms : float
        Step length.
    tau_mem_ms : float
        Membrane time constant (default 100 ms: ``tau_mem_e_ms`` of the spiking layer).
    gain : float
        Spike probability per step of an input of intensity x is ``min(1, gain * x)``.
    surrogate_slope : float
        Steepness of the fast-sigmoid surrogate derivative.
    seed : int or None
        Seeds the initial weights and :attr:`generator` (input spike draws).
    """

    kind = "spiking-mlp"
    has_preactivations = False  # its representation is spike counts: no activation input

    def __init__(self, sizes=(784, 2000, 10), n_steps=25, dt_ms=1.0, tau_mem_ms=TAU_MEM_E_MS,
                 gain=1.0, surrogate_slope=10.0, seed=None):
        super().__init__()
        sizes = _check_sizes(sizes)
        n_steps = check_int(n_steps, "n_steps")
        dt_ms = check_float(dt_ms, "dt_ms", strict=True)
        tau_mem_ms = check_float(tau_mem_ms, "tau_mem_ms", strict=True)
        gain = check_float(gain, "gain", strict=True)
        surrogate_slope = check_float(surrogate_slope, "surrogate_slope", strict=True)
        seed = _resolve_seed(seed)
        self._params = {"sizes": list(sizes), "n_steps": n_steps, "dt_ms": dt_ms,
                        "tau_mem_ms": tau_mem_ms, "gain": gain,
                        "surrogate_slope": surrogate_slope, "seed": seed}
        self.lif = LIFParameters(tau_mem_ms, dt_ms, 1.0, surrogate_slope)
        with _global_rng_untouched():
            hidden = [_LIFLayer(sizes[i], sizes[i + 1], self.lif) for i in range(len(sizes) - 2)]
            self.hidden_layers = nn.ModuleList(hidden[:-1])
            self.counts = _SpikeCounts(hidden[-1])
            self.readout = nn.Linear(sizes[-2], sizes[-1])
        self.n_features = sizes[0]
        self.n_classes = sizes[-1]
        self._n_units = sizes[-2]
        self.generator = torch.Generator().manual_seed(seed)
        _init_parameters(self, torch.Generator().manual_seed(seed))

    @property
    def representation_module(self) -> nn.Module:
        return self.counts

    @property
    def representation_description(self) -> str:
        return (f"spike counts of the last hidden LIF layer over {self._params['n_steps']} steps "
                f"of {self._params['dt_ms']:g} ms")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bernoulli input spikes ``(n_steps, B, n_features)`` (straight-through in ``x``)."""
        p = (self._params["gain"] * x).clamp(0.0, 1.0)
        T = self._params["n_steps"]
        pT = p.unsqueeze(0).expand(T, *p.shape)
        if pT.device.type == self.generator.device.type:
            draws = torch.bernoulli(pT.detach(), generator=self.generator)
        else:   # the generator lives on the CPU: draw there (reproducible), then move
            draws = torch.bernoulli(pT.detach().cpu(), generator=self.generator).to(pT.device)
        return draws + pT - pT.detach()

    def _forward_until_representation(self, x):
        s = self.encode(x)
        for layer in self.hidden_layers:
            s = layer(s)
        return self.counts(s)

    def forward(self, x):
        counts = self._forward_until_representation(self._as_tensor(x))
        return self.readout(counts / self._params["n_steps"])
