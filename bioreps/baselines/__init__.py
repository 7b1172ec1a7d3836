"""Backprop-trained baselines: MLP, CNN and a surrogate-gradient spiking MLP, four regularisers,
a deterministic, resumable training loop and export to the bioreps HDF5 schema.

    from bioreps import baselines, data

    X, y = data.load("fashion-mnist", "train")
    model = baselines.MLP((784, 2000, 10), seed=0)
    history = baselines.train(model, X, y, baselines.JacobianReg(lam=0.01), epochs=5,
                              batch_size=128, seed=0, checkpoint="mlp.ckpt", resume=True)
    model.export("mlp_jacobian.h5", {"train": (X, y)}, dataset="fashion-mnist")
    model = baselines.load("mlp_jacobian.h5")
"""

from .models import CNN, MLP, BaselineModel, ConvNet, export, load
from .regularizers import (AdversarialTraining, JacobianReg, Regularizer, SpectralReg, WeightDecay,
                           from_dict, jacobian_frobenius, pgd_attack, spectral_penalty)
from .snn import SpikingMLP
from .train import NonFiniteLossError, train

__all__ = ["MLP", "CNN", "ConvNet", "SpikingMLP", "BaselineModel", "train", "NonFiniteLossError",
           "Regularizer", "WeightDecay", "JacobianReg", "SpectralReg", "AdversarialTraining",
           "jacobian_frobenius", "spectral_penalty", "pgd_attack", "from_dict", "export", "load"]
