"""File-level analyses behind ``bioreps analyze`` and ``bioreps compare``.

Both read bioreps HDF5 files (any model kind: local-learning layers, baselines, controls) and
write their results next to the inputs (or into ``out_dir``): a JSON file of numbers and PNG
plots. The functions return the same dictionaries they write, so notebooks can use them too::

    from bioreps.studies.report import analyze_file, compare_files
    res = analyze_file("run/model.h5", split="test")
    res["spectrum"]["alpha"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _files

__all__ = ["analyze_file", "compare_files", "file_classifier"]


def _pick_split(f, split, path):
    reps = f.representations
    if not reps:
        raise ValueError(f"{path}: the file holds no representations to analyse")
    if split is None:
        split = "test" if "test" in reps else next(iter(reps))
    if split not in reps:
        raise ValueError(f"{path}: no representation {split!r}; the file has {', '.join(sorted(reps))}")
    return split, reps[split]


def _subsample(n, max_samples, seed):
    if max_samples is None or n <= max_samples:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(max_samples), replace=False))


def analyze_file(path, *, split=None, ranks=(11, 500), n_boot=0, out_dir=None, seed=0, plots=True):
    """Eigenspectrum + power-law exponent and class selectivity of one representation.

    Parameters
    ----------
    path : str or os.PathLike
        A bioreps HDF5 file.
    split : str, optional
        Which representation (default ``"test"`` if present, else the first).
    ranks : (int, int)
        Fit window of :func:`~bioreps.analysis.spectrum.powerlaw_alpha` (1-based, inclusive).
    n_boot : int
        Bootstrap resamples for a 95% interval of alpha (0: none).
    out_dir : str or os.PathLike, optional
        Where to write ``<name>.<split>.analysis.json`` and the PNGs (default: beside the file);
        ``<name>`` is the file's stem, or its folder's name for a runner's ``model.h5``.

    Returns
    -------
    dict
        What was written to the JSON file.
    """
    from .. import io
    from ..analysis import selectivity, spectrum

    path = Path(path)
    out_dir = Path(out_dir) if out_dir is not None else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    with io.load(path) as f:
        split, rep = _pick_split(f, split, path)
        R = rep.to_numpy()
        labels = rep.labels if rep.has_labels else None
        kind = f.model.kind
    result = {"file": str(path), "model_kind": kind, "split": split,
              "n_samples": int(R.shape[0]), "n_units": int(R.shape[1])}

    eigs = spectrum.eigenspectrum(R)
    spec = {"ranks": list(ranks), "eigenvalues_head": [float(v) for v in eigs[:20]]}
    try:
        fit = spectrum.powerlaw_alpha(eigs, ranks=tuple(ranks))
        spec.update(alpha=float(fit.alpha), intercept=float(fit.intercept),
                    residual=float(fit.residual), ranks_used=list(fit.ranks), method=fit.method)
    except ValueError as exc:
        fit = None
        spec.update(alpha=None, error=str(exc))
    try:
        nas = spectrum.powerlaw_alpha(eigs, ranks=(10, 500), method="nassar")
        spec["alpha_nassar"] = float(nas.alpha)
    except ValueError as exc:
        spec["alpha_nassar"] = None
        spec["alpha_nassar_error"] = str(exc)
    if n_boot and fit is not None:
        ci = spectrum.alpha_ci(R, ranks=tuple(ranks), n_boot=int(n_boot), seed=seed)
        spec.update(alpha_ci95=[float(ci.low), float(ci.high)], n_boot=int(n_boot),
                    alpha_bootstrap_bias=float(ci.bias))
    result["spectrum"] = spec

    stem = f"{_file_label(path)}.{split}"
    files = {}
    if plots:
        png = out_dir / f"{stem}.spectrum.png"
        spectrum.plot_spectrum(eigs, fit=fit, path=png)
        files["spectrum_png"] = str(png)

    if labels is None:
        result["selectivity"] = {"skipped": "the representation has no labels"}
    elif R.min() < 0:
        result["selectivity"] = {"skipped": "signed activity (class selectivity needs non-negative units)"}
    else:
        sel = np.asarray(selectivity.class_selectivity(R, labels))
        active = R.max(axis=0) > 0
        result["selectivity"] = {
            "mean": float(sel.mean()), "median": float(np.median(sel)),
            "mean_active_units": float(sel[active].mean()) if active.any() else None,
            "n_silent_units": int((~active).sum()),
            "quantiles": {q: float(np.quantile(sel, float(q))) for q in ("0.1", "0.25", "0.75", "0.9")},
        }
        if plots:
            png = out_dir / f"{stem}.selectivity.png"
            selectivity.plot_selectivity(sel, png, title=f"{path.name} [{split}]")
            files["selectivity_png"] = str(png)
    result["files"] = files
    json_path = out_dir / f"{stem}.analysis.json"
    result["files"]["json"] = str(json_path)
    _files.write_json_atomic(json_path, result)
    return result


def compare_files(paths, *, split=None, max_samples=5000, seed=0, out_dir=None, plots=True,
                  name="compare", robustness=False, eps=(0.05, 0.1), n_attack=500, pgd_steps=20):
    """CKA (linear, and debiased linear) and RSA between the representations of several files.

    Every file must hold the split with the same samples in the same order (checked through
    ``inputs_index`` when the files store it, else through the labels). At most
    ``max_samples`` rows (the same random subset for every file) are used.

    With ``robustness=True``, every file that holds a classifier is also attacked (see
    :func:`file_classifier`): a robust-accuracy curve (FGSM and PGD, L-inf, radii ``eps``) per
    model on the first ``n_attack`` images of the split's dataset, and a transfer matrix at the
    largest radius. Files without a classifier are listed with the reason; files without a
    stored readout (older files), whose readout was retrained here, are listed under
    ``robustness["retrained"]``.
    """
    from .. import io
    from ..analysis import similarity

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("compare needs at least two files")
    out_dir = Path(out_dir) if out_dir is not None else paths[0].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    reps, names, n_rows, ref_index, ref_labels = [], [], None, None, None
    for path in paths:
        with io.load(path) as f:
            s, rep = _pick_split(f, split, path)
            split = s
            index = rep.inputs_index
            labels = rep.labels
            if n_rows is None:
                n_rows, ref_index, ref_labels = rep.shape[0], index, labels
                keep = _subsample(n_rows, max_samples, seed)
            elif (rep.shape[0] != n_rows
                  or (index is not None and ref_index is not None and not np.array_equal(index, ref_index))
                  or (labels is not None and ref_labels is not None and not np.array_equal(labels, ref_labels))):
                raise ValueError(f"{path}: representation {split!r} is not over the same samples as "
                                 f"{paths[0]} ({rep.shape[0]} vs {n_rows} rows)")
            R = rep.to_numpy() if keep is None else rep.to_numpy()[keep]
        reps.append(R)
        names.append(_unique_name(path, names))
    linear = similarity.cka_matrix(reps)
    debiased = similarity.cka_matrix(reps, debiased=True)
    # RDMs are O(n^2): the first 2000 rows of the subset (16 MB per file's RDM), leaving out rows
    # that are constant in some representation (a silent spiking sample), whose correlation
    # distance is undefined; each file's RDM is computed once (rsa_matrix)
    rows = np.arange(min(reps[0].shape[0], 2000))
    varying = np.all([R[rows].std(axis=1) > 0 for R in reps], axis=0)
    rsa_rows = rows[varying]
    rsa = similarity.rsa_matrix([R[rsa_rows] for R in reps])
    result = {"files": [str(p) for p in paths], "names": names, "split": split,
              "n_samples_used": int(reps[0].shape[0]),
              "cka_linear": np.asarray(linear).tolist(), "cka_linear_debiased": np.asarray(debiased).tolist(),
              "rsa_spearman_correlation": rsa.tolist(), "rsa_samples": int(rsa_rows.size),
              "rsa_rows_left_out_constant": int(rows.size - rsa_rows.size)}
    outputs = {}
    if robustness:
        result["robustness"] = _robustness(paths, names, split, eps, n_attack, pgd_steps, seed, out_dir, name,
                                           plots, outputs)
    if plots:
        png = out_dir / f"{name}.cka.png"
        similarity.plot_cka_matrix(np.asarray(linear), names, path=png)
        outputs["cka_png"] = str(png)
    json_path = out_dir / f"{name}.json"
    outputs["json"] = str(json_path)
    result["outputs"] = outputs
    _files.write_json_atomic(json_path, result)
    return result


def file_classifier(path, *, readout_epochs=20, seed=0):
    """A torch module returning logits for the model a bioreps file holds, or ``(None, reason)``.

    Which kinds qualify is read from their classes (:mod:`bioreps.studies.kinds`): a kind
    without ``gradient_attacks`` holds no classifier that can be attacked here. A ``supervised``
    model (the baselines) is rebuilt as saved. Any other (the Hebbian layers) is rebuilt from the
    file (with the power it was exported at) and wrapped with its readout by
    :func:`bioreps.torch_views.classifier` (differentiable): the readout stored in the file
    (``/readout``, schema >= 1.2.0) when there is one. Only a file without one (older files) gets
    a softmax :class:`~bioreps.readout.LinearReadout` retrained for ``readout_epochs`` epochs on
    its labelled ``train`` representation, for as many classes as the file's dataset has, and the
    description says so (it contains ``"retrained"``). Returns ``(module, description)``.
    """
    from .. import data, io
    from . import kinds

    with io.load(path) as f:
        kind = f.model.kind
        train = f.representations.get("train")
        try:
            cls = kinds.get(kind)
        except ValueError:
            return None, f"model kind {kind!r} is not known to this bioreps"
        if not cls.gradient_attacks:
            return None, f"model kind {kind!r} holds no classifier that can be attacked here"
        stored = f.readout
        if not cls.supervised and stored is None:
            if train is None or not train.has_labels:
                return None, f"{kind} file without a labelled 'train' representation to fit a readout on"
            dataset = train.dataset or f.provenance.get("dataset")
            H, y = train.to_numpy(), train.labels
    if cls.supervised:
        return cls.load(path), f"{kind} (as trained)"
    from ..readout import LinearReadout
    from ..torch_views import classifier

    layer = cls.load(path)  # with the power the file was exported at
    if stored is not None:
        readout = LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)
        return classifier(layer, readout), f"{kind} layer + the file's readout"
    try:  # the dataset's own class count (labels of the train split may not show every class)
        n_classes = data.spec(dataset).n_classes
    except (TypeError, ValueError):  # no dataset recorded, or one bioreps does not know
        n_classes = int(y.max()) + 1
    readout = LinearReadout(epochs=readout_epochs, random_state=seed, progress=False).fit(H, y, n_classes=n_classes)
    return classifier(layer, readout), (f"{kind} layer + no readout stored in the file: retrained a "
                                        f"{readout_epochs}-epoch readout on its train split")


def _robustness(paths, names, split, eps, n_attack, pgd_steps, seed, out_dir, stem, plots, outputs):
    from .. import data, io
    from ..analysis import robustness as rob

    eps = sorted(float(e) for e in eps)
    with io.load(paths[0]) as f:
        rep = f.representations[split]
        dataset = rep.dataset or f.provenance.get("dataset")
        source_split = rep.dataset_split or split
        index = rep.inputs_index
    if not dataset or dataset == "unknown":
        raise ValueError(f"{paths[0]}: the file does not say which dataset its {split!r} split came from")
    X, y = data.load(dataset, source_split)
    rows = (index if index is not None else np.arange(X.shape[0]))[:int(n_attack)]
    X, y = X[rows], y[rows]
    models, skipped, curves, retrained = {}, {}, {}, {}
    for path, label in zip(paths, names):
        module, how = file_classifier(path, seed=seed)
        if module is None:
            skipped[label] = how
            continue
        if "retrained" in how:   # an older file without a stored readout
            retrained[label] = how
        models[label] = module
        curve = rob.robust_accuracy_curve(module, X, y, [0.0, *eps], attacks=("fgsm", "pgd"), seed=seed,
                                          pgd={"steps": int(pgd_steps)}, progress=False)
        curves[label] = {"model": how, **curve.to_dict()}
        if plots:
            png = out_dir / f"{stem}.{label}.robustness.png"
            rob.plot_robust_accuracy(curve, path=png)
            outputs[f"robustness_png_{label}"] = str(png)
    out = {"dataset": dataset, "split": source_split, "n_samples": int(len(rows)), "eps": eps,
           "pgd_steps": int(pgd_steps), "curves": curves, "skipped": skipped, "retrained": retrained}
    if len(models) >= 2:
        tr = rob.transfer_matrix(models, X, y, eps[-1], attack="pgd", seed=seed, steps=int(pgd_steps),
                                 progress=False)
        out["transfer"] = {"eps": eps[-1], "attack": "pgd", "names": list(tr.names),
                           "matrix": np.asarray(tr.matrix).tolist(),
                           "clean_accuracy": np.asarray(tr.clean_accuracy).tolist()}
    return out


def _file_label(path: Path) -> str:
    """A file's name for outputs: its stem, or its folder's name for the runner's ``model.h5``."""
    return path.stem if path.stem != "model" else (path.parent.resolve().name or path.stem)


def _unique_name(path: Path, taken):
    name = _file_label(path)
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name
