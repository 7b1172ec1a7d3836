"""Training loop for the baseline models: Adam, minibatches, regulariser, checkpoint/resume."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import _files
from .._progress import progress_bar
from .._validation import check_float, check_int, check_labels
from .models import BaselineModel, _check_inputs
from .regularizers import Regularizer

__all__ = ["train", "NonFiniteLossError", "CHECKPOINT_FORMAT", "checkpoint_epoch"]

CHECKPOINT_FORMAT = "bioreps-baselines-checkpoint"
CHECKPOINT_VERSION = 1
_HISTORY_KEYS = ("epoch", "loss", "ce", "accuracy", "regularizer", "seconds", "val_loss",
                 "val_accuracy")


class NonFiniteLossError(FloatingPointError, ValueError):
    """The training loss became NaN or inf; ``epoch`` and ``batch`` are 1-based."""

    def __init__(self, epoch, batch, n_batches, checkpoint):
        self.epoch, self.batch = epoch, batch
        where = (f"the checkpoint {checkpoint} still holds the last completed epoch"
                 if checkpoint is not None else "no checkpoint was written")
        super().__init__(f"non-finite training loss at epoch {epoch}, batch {batch}/{n_batches}; "
                         f"training stopped before the update ({where}). Lower lr or the "
                         f"regulariser strength.")


def _atomic_torch_save(obj, path: Path) -> None:
    with _files.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_checkpoint(path, device="cpu") -> dict:
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a bioreps baselines checkpoint")
    return state


def checkpoint_epoch(path) -> int:
    """The epochs completed by the run that wrote checkpoint ``path`` (:func:`train`)."""
    return int(_load_checkpoint(path)["epoch"])


def _run_config(model, regularizer, batch_size, lr, seed, n_samples):
    """What must match for a resumed run to continue the same run."""
    arch = {k: v for k, v in model.hyperparameters().items() if k != "seed"}  # init seed: moot
    return {"model_class": type(model).__name__, "model": arch,
            "regularizer": regularizer.to_dict() if regularizer is not None else {"name": "none"},
            "batch_size": batch_size, "lr": lr, "seed": seed, "n_samples": n_samples}


def _evaluate(model, X, y, batch_size=4096):
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, X.shape[0], batch_size):
            logits = model(X[s:s + batch_size])
            loss += float(F.cross_entropy(logits, y[s:s + batch_size], reduction="sum"))
            correct += int((logits.argmax(1) == y[s:s + batch_size]).sum())
    model.train(was_training)
    return loss / X.shape[0], correct / X.shape[0]


def train(model, X, y, regularizer=None, epochs=10, batch_size=128, lr=1e-3, seed=0,
          callback=None, checkpoint=None, checkpoint_every=1, resume=False, progress=None,
          X_val=None, y_val=None):
    """Train ``model`` with Adam on the cross-entropy (+ ``regularizer``).

    Parameters
    ----------
    model : BaselineModel
        :class:`MLP`, :class:`CNN`, :class:`SpikingMLP` (trained in place).
    X : array (n, n_features) in [0, 1]
    y : array (n,) of int labels in ``0 .. model.n_classes - 1``
    regularizer : Regularizer or None
        :class:`WeightDecay`, :class:`JacobianReg`, :class:`SpectralReg`,
        :class:`AdversarialTraining`.
    epochs : int
        Total epochs (a resumed run continues up to this number).
    batch_size : int
        Minibatch size; a remainder batch smaller than ``regularizer.min_batch_size(model)`` is
        skipped (it changes from epoch to epoch: the samples are reshuffled every epoch).
    lr : float
        Adam learning rate.
    seed : int
        Seeds the run's own torch.Generator (shuffling, random projections, PGD starts) and, for
        a :class:`SpikingMLP`, reseeds ``model.generator``; the global torch RNG is not used.
        The initial weights come from the model's own ``seed``.
    callback : callable, optional
        ``callback(epoch, record, model)`` after every epoch (1-based epoch, the epoch's history
        entry); returning ``True`` stops training.
    checkpoint : path, optional
        File written (atomically) every ``checkpoint_every`` epochs and after the last one with
        model, optimiser and RNG states, epoch and history.
    resume : bool
        Continue from ``checkpoint`` if it exists (it must come from the same run: model,
        regulariser, batch size, lr, seed, number of samples). On CPU the result is
        bit-identical to an uninterrupted run.
    progress : bool or None
        tqdm progress bar (None: follow ``$BIOREPS_PROGRESS``).
    X_val, y_val : optional
        Evaluated (loss, accuracy) after every epoch.

    Returns
    -------
    dict
        Lists per epoch: ``epoch``, ``loss`` (training loss incl. penalty), ``ce``,
        ``accuracy`` (training accuracy on the batches as seen), ``regularizer`` (mean value
        logged by the regulariser; 0 without one), ``seconds``, and ``val_loss`` /
        ``val_accuracy`` (None without validation data). Also stored as ``model.history_``;
        the settings go to ``model.training_info_``. The model is left in eval mode.

    Raises
    ------
    NonFiniteLossError
        (a ``ValueError``) when the loss becomes NaN/inf; names the epoch and batch. The
        checkpoint file keeps the last completed epoch.
    """
    if not isinstance(model, BaselineModel):
        raise TypeError(f"model must be a bioreps baseline model (MLP, CNN, SpikingMLP), got "
                        f"{type(model).__name__}")
    if regularizer is not None and not isinstance(regularizer, Regularizer):
        raise TypeError(f"regularizer must be a bioreps.baselines regulariser or None, got "
                        f"{type(regularizer).__name__}")
    X = _check_inputs(X, model)
    y = check_labels(y, n=X.shape[0], n_classes=model.n_classes)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_float(lr, "lr", strict=True)
    seed = check_int(seed, "seed", minimum=0)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val, or neither")
    if X_val is not None:
        X_val = torch.from_numpy(_check_inputs(X_val, model, name="X_val"))
        y_val = torch.from_numpy(check_labels(y_val, n=X_val.shape[0], n_classes=model.n_classes,
                                              name="y_val"))
    n = X.shape[0]
    if regularizer is not None:
        regularizer.check(model, batch_size, n)
    min_batch = regularizer.min_batch_size(model) if regularizer is not None else 1
    if min(batch_size, n) < min_batch:
        raise ValueError(f"{n} samples give no batch of the {min_batch} samples that "
                         f"{type(regularizer).__name__} needs")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    device = next(model.parameters()).device
    Xt, yt = Xt.to(device), yt.to(device)
    gen = torch.Generator().manual_seed(seed)
    model_gen = getattr(model, "generator", None)
    if isinstance(model_gen, torch.Generator):
        model_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    config = _run_config(model, regularizer, batch_size, lr, seed, n)
    history = {k: [] for k in _HISTORY_KEYS}
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None

    if resume and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, device)
        if state["config"] != config:
            diff = sorted(k for k in config if state["config"].get(k) != config[k])
            raise ValueError(f"checkpoint {ckpt_path} belongs to another run (differs in "
                             f"{', '.join(diff)}); cannot resume")
        if state["epoch"] > epochs:
            raise ValueError(f"checkpoint {ckpt_path} is at epoch {state['epoch']}, beyond "
                             f"epochs={epochs}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        if isinstance(model_gen, torch.Generator) and state.get("model_generator") is not None:
            model_gen.set_state(state["model_generator"])
        history = {k: list(v) for k, v in state["history"].items()}
        start_epoch = int(state["epoch"])

    model.training_info_ = {**config, "epochs": epochs, "optimizer": "adam",
                            "checkpoint_every": checkpoint_every}
    needs_hidden = regularizer is not None and regularizer.needs_hidden
    needs_input_grad = regularizer is not None and regularizer.needs_input_grad
    n_batches = -(-n // batch_size)

    def save_checkpoint(epoch):
        _atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epoch,
            "config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "model_generator": model_gen.get_state() if isinstance(model_gen, torch.Generator) else None,
            "history": history}, ckpt_path)

    bar = progress_bar(total=(epochs - start_epoch) * n_batches, progress=progress,
                       desc=f"train {type(model).__name__}"
                            + (f" + {regularizer.name}" if regularizer is not None else ""))
    # Flush subnormal floats to zero while training (CPU FTZ/DAZ; restored afterwards). Weights
    # that only weight decay moves shrink geometrically under Adam, their squared gradients in
    # Adam's second moment underflow into subnormals, and every later step (and matmul) takes
    # the CPU's slow path: measured, 10 weight-decay epochs of a 784-2000-10 MLP stalled for
    # more than 10 minutes where vanilla took 2. Values below ~1e-38 (float32) cannot change a
    # result at this precision.
    flushed = torch.set_flush_denormal(True)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            model.train()
            if regularizer is not None:
                regularizer.on_epoch_start(model, Xt)
            perm = torch.randperm(n, generator=gen).to(device)
            sum_loss = sum_ce = sum_reg = 0.0
            correct = seen = 0
            for b in range(n_batches):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                if idx.numel() < min_batch:
                    bar.update(1)
                    continue
                xb, yb = Xt[idx], yt[idx]
                if needs_input_grad:
                    xb = xb.clone().requires_grad_(True)
                captured = []
                handle = (model.representation_module.register_forward_hook(
                    lambda m, i, o: captured.append(o)) if needs_hidden else None)
                try:
                    logits = model(xb)
                finally:
                    if handle is not None:
                        handle.remove()
                ce = F.cross_entropy(logits, yb)
                if regularizer is not None:
                    total, reg = regularizer.loss(model, xb, yb, logits, ce,
                                                  hidden=captured[-1] if captured else None,
                                                  generator=gen)
                else:
                    total, reg = ce, None
                if not torch.isfinite(total):
                    raise NonFiniteLossError(epoch + 1, b + 1, n_batches, ckpt_path)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                k = idx.numel()
                sum_loss += float(total.detach()) * k
                sum_ce += float(ce.detach()) * k
                sum_reg += (float(reg) if reg is not None else 0.0) * k
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += k
                bar.update(1)
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", acc=f"{correct / seen:.3f}",
                                reg=f"{float(reg) if reg is not None else 0.0:.4g}", refresh=False)
            record = {"epoch": epoch + 1, "loss": sum_loss / seen, "ce": sum_ce / seen,
                      "accuracy": correct / seen, "regularizer": sum_reg / seen,
                      "seconds": time.perf_counter() - t0, "val_loss": None, "val_accuracy": None}
            if X_val is not None:
                record["val_loss"], record["val_accuracy"] = _evaluate(model, X_val, y_val)
            for key in _HISTORY_KEYS:
                history[key].append(record[key])
            last = epoch + 1 == epochs
            if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or last):
                save_checkpoint(epoch + 1)
            if callback is not None and callback(epoch + 1, record, model) is True:
                if ckpt_path is not None and not last and (epoch + 1) % checkpoint_every:
                    save_checkpoint(epoch + 1)
                break
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        bar.close()
        model.history_ = history
        model.eval()
    return history
