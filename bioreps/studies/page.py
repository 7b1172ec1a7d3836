"""``report.html``: a study's comparison as one self-contained page.

Every study writes it (also when some units failed: the page then shows what exists and lists
what is missing). It reads only the units' files (``train.json``, ``analysis.json``,
``compare.json`` and each ``unit.json`` record), so it can be rebuilt at any time with
:func:`write_report` (``bioreps report RUN_DIR`` on the command line).

What the page holds (the figures of Holzhausen et al. 2024, arXiv:2405.00679, and of the other
papers whose measures a study computes; each caption says what was measured, on what, and over
how many seeds):

* a table: model | clean accuracy | alpha of the test representation (Stringer fit and the
  unweighted fit of lambda_n / lambda_1) | alpha on Gaussian-noise probes | eps at 50% relative
  accuracy per attack | median critical perturbation; each as the mean and a 95% Student-t
  interval across seeds (:func:`bioreps.studies.stats.mean_ci`);
* relative accuracy vs eps (log axis), one axes per attack, one line per model with its
  interval band;
* the spectra, lambda_n / lambda_1 vs n on log-log axes, one line per model, clipped to the
  ranks that carry variance, with the fitted line over the fit window;
* alpha per layer (both fits, mean and interval across seeds) and its table, when a model has
  several layers whose test representations its file stores (``layers`` of analysis.json);
* boxplots of each image's critical perturbation per model, and the median critical
  perturbation vs clean accuracy (one point per model and seed);
* the linear CKA matrix across the models (Kornblith et al. 2019) averaged over seeds, and the
  CKA to the vanilla backprop model vs robustness (Jones et al. 2022);
* class-selectivity histograms (Morcos et al. 2018) when the study measured them;
* provenance: versions, the git commit of bioreps, the study's configuration, each unit's wall
  time and host.

Self-contained: images are PNGs embedded as ``data:`` URIs and the style sheet is inline, so
the file makes no request when opened (tested in headless Chromium).

Beside it, ``summary.md`` (:func:`write_summary`) holds the summary and contrasts tables and how
they were measured as Markdown, from the same cells, for a README or a lab notebook.
"""

from __future__ import annotations

import html
import json
import math
import platform
import re
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["write_report", "write_summary", "collect"]

REPORT_NAME = "report.html"
#: the summary and contrasts tables as Markdown, written beside the page (:func:`write_summary`)
SUMMARY_NAME = "summary.md"
_LEVEL = 0.5  # the relative accuracy whose eps the table reports


# =========================================================================== reading the units

def collect(cfg, root) -> dict:
    """What the study's unit folders under ``root`` (the study's output folder) hold.

    Returns ``{"train": {(model, seed): dict}, "analysis": {...}, "compare": {seed: dict},
    "ensemble": {model: dict}, "records": {key: unit.json}, "missing": [(key, reason)]}``. A unit counts when its record
    says it finished with the configuration the study has now; otherwise it is listed as missing
    with the reason (not run, failed, stale)."""
    from .execute import _read_record
    from .study import plan

    root = Path(root)
    out = {"train": {}, "analysis": {}, "compare": {}, "ensemble": {}, "records": {}, "missing": []}
    names = {"train": "train.json", "analyze": "analysis.json", "compare": "compare.json",
             "ensemble": "ensemble.json"}
    for unit in plan(cfg, root / "units"):
        record = _read_record(unit.folder)
        if not record:
            out["missing"].append((unit.key, "not run" if record is None else "unit.json unreadable"))
            continue
        if record.get("status") != "done" or record.get("config_hash") != unit.config_hash:
            out["missing"].append((unit.key, "stale: run with another configuration"))
            continue
        try:
            data = json.loads((unit.folder / names[unit.key[0]]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out["missing"].append((unit.key, f"{names[unit.key[0]]} unreadable ({exc})"))
            continue
        out["records"][unit.key] = record
        if unit.key[0] == "train":
            out["train"][unit.key[1:]] = data
        elif unit.key[0] == "analyze":
            out["analysis"][unit.key[1:]] = data
        elif unit.key[0] == "ensemble":
            out["ensemble"][unit.key[1]] = data
        else:
            out["compare"][unit.key[1]] = data
    return out


# =========================================================================== numbers

def _ci(values):
    from .stats import mean_ci

    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return mean_ci(vals) if vals else None


def _fmt(s, digits=3, *, sci=False, bounds=(-math.inf, math.inf)):
    """Mean and interval as HTML; the interval is clipped to the quantity's range (``bounds``,
    e.g. [0, 1] for an accuracy: a t interval over two seeds can reach past it)."""
    if s is None:
        return "&ndash;"
    f = (lambda v: f"{v:.{digits - 1}e}") if sci else (lambda v: f"{v:.{digits}f}")
    if s["n"] == 1:
        return f"{f(s['mean'])}<br><span class=n>1 seed</span>"
    lo, hi = max(s["ci_low"], bounds[0]), min(s["ci_high"], bounds[1])
    return f"{f(s['mean'])}<br><span class=ci>[{f(lo)}, {f(hi)}]</span>"


def _eps50_cell(entries):
    """Mean and CI of eps at 50% over seeds; seeds whose curve never fell to 50% on the grid
    are counted and said (their eps is only a lower bound)."""
    if not entries:
        return "&ndash;"
    finite = [e["eps"] for e in entries if e.get("eps") is not None and np.isfinite(e["eps"])]
    above = [e for e in entries if e.get("censored") == "above"]
    cell = _fmt(_ci(finite), 3, sci=True, bounds=(0.0, math.inf)) if finite else ""
    if above:
        top = max(e["lo"] for e in above)
        note = f"&gt; {top:.3g} in {len(above)} of {len(entries)} seeds"
        cell = f"{cell}<br><span class=n>{note}</span>" if cell else note
    return cell


def _model_names(cfg):
    return [m["name"] for m in cfg["models"]]


def _seeds(cfg):
    return list(cfg["study"]["seeds"])


def _robustness(a) -> dict:
    """The robustness block of one analysis (an empty dict when it has none)."""
    return (a or {}).get("robustness") or {}


def _attack_entry(a, attack):
    """One attack's entry of one analysis (``None`` when that attack was not measured)."""
    return (_robustness(a).get("attacks") or {}).get(attack)


def _attacks(cfg, data):
    """The attacks measured: the study's in its order, then those only a model's own
    ``[models.attacks]`` asked for (e.g. Square on a spiking model), in model order."""
    seen = {name for a in data["analysis"].values() for name in (_robustness(a).get("attacks") or {})}
    order = list(cfg["analysis"]["attacks"]["methods"])
    for m in cfg["models"]:
        order += [a for a in (m.get("attacks") or {}).get("methods", []) if a not in order]
    return [m for m in order if m in seen]


# =========================================================================== figures

def _figure(width=7.0, height=4.2, ncols=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig) -> str:
    from ..plots import figure_data_uri

    return figure_data_uri(fig)


def _colors(names):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _fig_relative_accuracy(cfg, data, colors):
    attacks = _attacks(cfg, data)
    if not attacks:
        return None
    fig, axes = _figure(4.2 * len(attacks), 3.8, len(attacks))
    n_seeds = set()
    for ax, attack in zip(axes, attacks):
        for name in _model_names(cfg):
            curves, eps = [], None
            for seed in _seeds(cfg):
                rob = _robustness(data["analysis"].get((name, seed)))
                a = _attack_entry(data["analysis"].get((name, seed)), attack)
                if a:
                    eps = np.asarray(rob["eps"], float)
                    curves.append(np.asarray(a["relative_accuracy"], float))
            if not curves:
                continue
            n_seeds.add(len(curves))
            C = np.vstack(curves)
            keep = eps > 0  # a log axis: eps = 0 is the clean point (relative accuracy 1)
            mean = C.mean(axis=0)
            ax.plot(eps[keep], mean[keep], marker="o", ms=3, color=colors[name], label=name)
            if len(curves) > 1:
                stats = [_ci(C[:, j]) for j in range(C.shape[1])]
                lo = np.array([s["ci_low"] for s in stats])
                hi = np.array([s["ci_high"] for s in stats])
                ax.fill_between(eps[keep], np.clip(lo[keep], 0, 1), np.clip(hi[keep], 0, 1),
                                color=colors[name], alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(_LEVEL, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("eps (L-inf)")
        ax.set_ylabel("relative accuracy")
        ax.set_title(attack.upper() if attack != "noise" else "random noise")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=8, loc="lower left")
    seeds = "/".join(str(s) for s in sorted(n_seeds)) or "0"
    spread = ("mean over " + seeds + " seeds with the 95% interval as a band" if max(n_seeds, default=1) > 1
              else "one seed (no interval)")
    caption = (f"Relative accuracy (the fraction of each model's correctly classified test images still "
               f"classified correctly) against the L-inf budget eps, per attack; {spread}. An image counts "
               f"as fooled from the first eps of the grid that fools it on (the best attack within each "
               f"budget). Dotted: 50%.")
    return _png(fig), caption


_SOURCES = {"test": ("the representation", "the test images"),
            "noise": ("the representation", "Gaussian-noise probes"),
            "test-pre": ("the pre-activations", "the test images"),
            "noise-pre": ("the pre-activations", "Gaussian-noise probes")}


def _spectra(data, name, seed):
    return (data["analysis"].get((name, seed)) or {}).get("spectra") or {}


def _fig_spectra(cfg, data, colors, source="test"):
    fig, axes = _figure(6.4, 4.4)
    ax = axes[0]
    drawn = 0
    for name in _model_names(cfg):
        for seed in _seeds(cfg):
            spec = _spectra(data, name, seed).get(source)
            if spec and spec.get("eigs"):
                eigs = np.asarray(spec["eigs"], float)
                n = np.arange(1, len(eigs) + 1)
                ax.loglog(n, eigs, color=colors[name], lw=1.3,
                          label=f"{name}: alpha {spec['alpha']:.2f} / {spec['alpha_nassar']:.2f}")
                lo, hi = spec["nassar_ranks"]
                r = np.arange(lo, min(hi, len(eigs) + 1))
                if len(r):
                    ax.loglog(r, np.exp(spec["nassar_intercept"]) * r ** (-spec["alpha_nassar"]),
                              color=colors[name], lw=0.9, ls="--")
                drawn += 1
                break  # the first seed that has it
    if not drawn:
        return None
    ax.set_xlabel("rank n")
    ax.set_ylabel("lambda_n / lambda_1")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower left", title="alpha: Stringer / unweighted", title_fontsize=7)
    what, probes = _SOURCES[source]
    caption = (f"PCA spectra of {what} of each model on {probes} (one seed per model, the "
               f"first available), lambda_n / lambda_1 against rank, clipped to the ranks that carry "
               f"variance (above 1e-12 of lambda_1). Dashed: the unweighted least-squares power law "
               f"over its fit window (Nassar et al. 2020's convention, as the seed paper).")
    return _png(fig), caption


def _fig_alpha_by_width(cfg, data, colors, source):
    fig, axes = _figure(6.0, 4.0)
    ax = axes[0]
    drawn = []
    for name in _model_names(cfg):
        rows = {}
        for seed in _seeds(cfg):
            for r in (_spectra(data, name, seed).get(source) or {}).get("by_width") or []:
                if r.get("alpha_nassar") is not None:
                    rows.setdefault(r["h"], []).append(r["alpha_nassar"])
        if rows:
            hs = sorted(rows)
            ys = [np.mean(rows[h]) for h in hs]
            ax.plot(hs, ys, marker="o", ms=3, color=colors[name], label=name)
            drawn += ys
    if not drawn:
        return None
    ax.set_xscale("log")
    positive = [y for y in drawn if y > 0]
    if len(positive) == len(drawn) and max(positive) > 4 * min(positive):
        # one model's few-unit alphas (e.g. 16 at h = 20) would flatten the others' near 1-3
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("h (the first h units)")
    ax.set_ylabel("alpha (unweighted fit)" + (", log axis" if ax.get_yscale() == "log" else ""))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    what, probes = _SOURCES[source]
    caption = (f"alpha of the spectrum of the first h units of {what} on {probes} against h (the seed "
               f"paper varies h from 10 to the width), unweighted fit, mean over seeds. Dotted: alpha = 1.")
    return _png(fig), caption


_FITS = (("alpha", "Stringer fit"), ("alpha_nassar", "unweighted fit"))


def _layer_alphas(cfg, data):
    """``{model: {layer: {"n_units": int, "alpha": [per seed], "alpha_nassar": [...]}}}`` for the
    models whose analyses measured each layer (``layers`` of analysis.json; layer 0-based)."""
    out = {}
    for name in _model_names(cfg):
        for seed in _seeds(cfg):
            for e in (data["analysis"].get((name, seed)) or {}).get("layers") or []:
                row = out.setdefault(name, {}).setdefault(e["layer"], {"n_units": e.get("n_units"), "alpha": [],
                                                                       "alpha_nassar": [], "seeds": 0})
                row["seeds"] += 1
                for fit, _ in _FITS:
                    if e.get(fit) is not None:
                        row[fit].append(e[fit])
    return out


def _fig_alpha_by_layer(cfg, data, colors):
    """alpha of each layer's test representation against depth, both fits, mean and 95% interval."""
    by_model = _layer_alphas(cfg, data)
    if not by_model:
        return None
    fig, axes = _figure(9.6, 3.9, 2)
    n_seeds, depth = set(), 1
    for k, (name, layers) in enumerate(by_model.items()):
        shift = 0.06 * (k - (len(by_model) - 1) / 2)  # side by side, so the error bars do not overlap
        for ax, (fit, _) in zip(axes, _FITS):
            xs, ys, lo, hi = [], [], [], []
            for layer in sorted(layers):
                s = _ci(layers[layer][fit])
                if s is None:
                    continue
                n_seeds.add(s["n"])
                xs.append(layer + 1 + shift)
                ys.append(s["mean"])
                lo.append(s["mean"] - s["ci_low"] if s["n"] > 1 else 0.0)  # one seed: no interval
                hi.append(s["ci_high"] - s["mean"] if s["n"] > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=3, color=colors[name], label=name)
            depth = max(depth, max(layers) + 1)
    for ax, (fit, title) in zip(axes, _FITS):
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_xticks(range(1, depth + 1))
        ax.set_xlabel("layer (1 = nearest the input)")
        ax.set_ylabel(f"alpha ({title})")
        ax.set_title(title)
        ax.grid(True, alpha=0.25)
    axes[0].legend(fontsize=8)
    lo_r, hi_r = cfg["analysis"]["spectrum"]["ranks"]
    seeds = "/".join(str(s) for s in sorted(n_seeds)) or "0"
    spread = (f"mean over {seeds} seeds with the 95% Student-t interval as error bars" if max(n_seeds, default=1) > 1
              else "one seed (no interval)")
    caption = (f"Alpha per layer: the power-law exponent of the PCA spectrum of each layer's test representation "
               f"(every layer of a multi-layer model is stored in its file; the last is the representation of the "
               f"other figures), fitted over ranks {lo_r}-{hi_r} (clipped to each layer's spectrum, cut at its "
               f"cliff) with the Stringer et al. 2019 weighted fit (left) and the unweighted least-squares fit of "
               f"lambda_n / lambda_1 (right; Nassar et al. 2020); {spread}. Dotted: alpha = 1, the 1/n spectrum. "
               f"No bootstrap and no widths per layer: a convolutional layer is a flattened (channel, y, x) map, "
               f"whose first h units are not a sample of units.")
    return _png(fig), caption


def _layers_table(cfg, data):
    """The numbers of the alpha-per-layer figure: one row per model and layer."""
    rows = []
    for name, layers in _layer_alphas(cfg, data).items():
        kind = next(m["kind"] for m in cfg["models"] if m["name"] == name)
        for layer in sorted(layers):
            row = layers[layer]
            rows.append([f"{html.escape(name)}<br><span class=n>{html.escape(kind)}</span>", str(layer + 1),
                         str(row["n_units"])] + [_fmt(_ci(row[fit]), 2) for fit, _ in _FITS])
    if not rows:
        return ""
    return _html_table(["model", "layer", "units", "alpha (Stringer)", "alpha (unweighted)"], rows)


def _critical(data, name, seeds, attack):
    l2 = []
    for seed in seeds:
        a = _attack_entry(data["analysis"].get((name, seed)), attack)
        if a:
            l2 += [np.inf if v is None else float(v) for v in a["l2"]]
    return np.asarray(l2, float)


def _fig_critical(cfg, data, colors, attack):
    vals, labels = [], []
    for name in _model_names(cfg):
        v = _critical(data, name, _seeds(cfg), attack)
        if v.size:
            vals.append(v[np.isfinite(v)])
            labels.append(name)
    if not labels or not any(v.size for v in vals):
        return None
    fig, axes = _figure(max(5.0, 0.9 * len(labels) + 2), 4.0)
    ax = axes[0]
    bp = ax.boxplot([v if v.size else [np.nan] for v in vals], patch_artist=True, showfliers=True)
    for patch, name in zip(bp["boxes"], labels):
        patch.set_facecolor(colors[name])
        patch.set_alpha(0.5)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    ax.set_ylabel("critical perturbation ||x - x_adv||_2")
    ax.grid(True, axis="y", alpha=0.25)
    caption = (f"Critical perturbation of each correctly classified test image under {attack.upper()}: the "
               f"L2 norm of x - x_adv at the first eps of the grid that flips its class, pooled over "
               f"seeds. Images never flipped on the grid are left out of the boxes (their share is the "
               f"last point of the relative-accuracy curve).")
    return _png(fig), caption


def _fig_median_vs_accuracy(cfg, data, colors, attack):
    fig, axes = _figure(5.6, 4.0)
    ax = axes[0]
    drawn = 0
    for name in _model_names(cfg):
        xs, ys = [], []
        for seed in _seeds(cfg):
            a = _attack_entry(data["analysis"].get((name, seed)), attack)
            t = data["train"].get((name, seed))
            if a and t and a.get("median_l2") is not None:
                xs.append(t["test_accuracy"])
                ys.append(a["median_l2"])
        if xs:
            ax.scatter(xs, ys, color=colors[name], label=name, s=28)
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("clean test accuracy")
    ax.set_ylabel(f"median critical perturbation ({attack.upper()})")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    caption = (f"Median critical perturbation ({attack.upper()}, L2) against clean test accuracy, one point "
               f"per model and seed: robustness bought with accuracy lies to the upper left.")
    return _png(fig), caption


def _mean_cka(cfg, data):
    names = _model_names(cfg)
    mats = []
    for seed in _seeds(cfg):
        c = data["compare"].get(seed)
        if c and c.get("matrix") is not None and c.get("models") == names:
            mats.append(np.asarray(c["matrix"], float))
    return (np.mean(mats, axis=0), len(mats)) if mats else (None, 0)


def _fig_cka(cfg, data):
    M, n = _mean_cka(cfg, data)
    if M is None:
        return None
    from matplotlib.colors import Normalize

    names = _model_names(cfg)
    k = len(names)
    fig, axes = _figure(1.0 + 0.75 * k + 1.5, 0.75 * k + 1.2)
    ax = axes[0]
    off = M[~np.eye(k, dtype=bool)] if k > 1 else M.ravel()
    lo = float(np.nanmin(off)) if off.size else 0.0
    norm = Normalize(vmin=max(0.0, lo - 0.02), vmax=1.0)  # the scale spans the values present
    im = ax.imshow(M, cmap="viridis", norm=norm)
    ax.set_xticks(range(k), names, rotation=35, ha="right")
    ax.set_yticks(range(k), names)
    for i in range(k):
        for j in range(k):
            v = M[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if norm(v) > 0.6 else "white")
    fig.colorbar(im, ax=ax, shrink=0.8, label="linear CKA")
    kind = (data["compare"].get(_seeds(cfg)[0]) or {}).get("cka", "linear")
    caption = (f"{kind.capitalize()} CKA (Kornblith et al. 2019) between the models' test representations, the "
               f"same images for every model, averaged over {n} seed(s). The colour scale runs from just "
               f"below the smallest value to 1 so that close values stay apart.")
    return _png(fig), caption


def _fig_cka_vs_robustness(cfg, data, colors, attack):
    from .study import vanilla_model

    ref = vanilla_model(cfg)
    names = _model_names(cfg)
    if ref is None:
        return None
    fig, axes = _figure(5.6, 4.0)
    ax = axes[0]
    drawn = 0
    j = names.index(ref)
    for seed in _seeds(cfg):
        c = data["compare"].get(seed)
        if not c or c.get("matrix") is None or c.get("models") != names:
            continue
        for i, name in enumerate(names):
            a = _attack_entry(data["analysis"].get((name, seed)), attack)
            if a and a.get("median_l2") is not None:
                ax.scatter(c["matrix"][i][j], a["median_l2"], color=colors[name], s=28,
                           label=name if seed == _seeds(cfg)[0] or not drawn else None)
                drawn += 1
    if not drawn:
        return None
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set_xlabel(f"CKA to {ref}")
    ax.set_ylabel(f"median critical perturbation ({attack.upper()})")
    ax.grid(True, alpha=0.25)
    caption = (f"Similarity to the vanilla backprop model ({ref}) against robustness, one point per model "
               f"and seed (Jones et al. 2022 relate the two).")
    return _png(fig), caption


def _fig_transfer(cfg, data):
    mats, eps, attack, n_img = [], set(), None, 0
    names = None
    for seed in _seeds(cfg):
        t = (data["compare"].get(seed) or {}).get("transfer")
        if t:
            names = names or t["names"]
            if t["names"] != names:
                continue
            mats.append(np.array([[np.nan if v is None else v for v in row] for row in t["matrix"]], float))
            eps.add(t["eps"])
            attack, n_img = t["attack"], t["n_images"]
    if not mats:
        return None
    # mean over the seeds; a source no attack can craft on is NaN on every seed and stays NaN (no warning)
    M = np.ma.masked_invalid(np.stack(mats)).mean(axis=0).filled(np.nan)
    k = len(names)
    fig, axes = _figure(1.0 + 0.75 * k + 1.5, 0.75 * k + 1.4)
    ax = axes[0]
    from matplotlib import colormaps

    # a source gradients cannot reach: grey cells marked n/a, not blank ones
    cmap = colormaps["magma"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), names, rotation=35, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("evaluated on (target)")
    ax.set_ylabel("crafted on (source)")
    for i in range(k):
        for j in range(k):
            v = M[i, j]
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if v < 0.55 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="accuracy")
    eps_txt = ", ".join(f"{e:g}" for e in sorted(eps))
    caption = (f"Transfer of adversarial examples (Szegedy et al. 2013): accuracy of each target model (columns) "
               f"on {attack.upper()} examples crafted on each source model (rows) at eps {eps_txt}, the grid eps "
               f"nearest the models' median eps at 50% relative accuracy; {n_img} test images, mean over "
               f"{len(mats)} seed(s). The diagonal is white-box accuracy; n/a: a source that gradient attacks "
               f"cannot craft on (not differentiable).")
    return _png(fig), caption


def _pruning_figures(cfg, data, root):
    """The pruning figures the analysis units drew (first seed of each prunable model)."""
    import base64

    out = []
    for name in _model_names(cfg):
        for seed in _seeds(cfg):
            a = data["analysis"].get((name, seed))
            png = Path(root) / "units" / f"analyze+{name}+{seed}" / "pruning.png"
            if a and a.get("pruning") and png.is_file():
                uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
                p = a["pruning"]
                out.append((uri, f"{name} (seed {seed}): {p['n_noise']} of {p['n_units']} units are noise units "
                                 f"(a two-component Gaussian mixture on each unit's weight log-variance, as the seed "
                                 f"paper's code: units that kept their random start). Left: the histogram and the "
                                 f"cutoff; middle: the first units before pruning; right: the first units after."))
                break
    return out


def _fig_ablation(cfg, data, colors):
    # one panel per order, one line per model: with ten models a single axes held twenty lines
    fig, axes = _figure(10.0, 4.0, ncols=2)
    drawn, n_img = set(), set()
    for ax, (order, title) in zip(axes, (("selective", "most class-selective first"), ("random", "random order"))):
        for name in _model_names(cfg):
            curves = []
            for seed in _seeds(cfg):
                ab = (data["analysis"].get((name, seed)) or {}).get("ablation") or {}
                c = (ab.get("curves") or {}).get(order)
                if c:
                    curves.append((np.asarray(c["fractions"]), np.asarray(c["accuracy"])))
                    n_img.add(ab["n_images"])
            if curves:
                ax.plot(curves[0][0], np.mean([a for _, a in curves], axis=0), marker="o", ms=2.5,
                        color=colors[name], label=name)
                drawn.add(name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of units ablated (clamped to 0)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.25)
    if not drawn:
        return None
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="lower left")
    caption = (f"Ablation (Morcos et al. 2018): accuracy as the representation's units are clamped to 0, the "
               f"most class-selective first (left) or in a random order (right), on "
               f"{'/'.join(str(n) for n in sorted(n_img))} test images, mean over seeds; local-learning models "
               f"through their stored readout on their stored representation.")
    return _png(fig), caption


def _fig_selectivity(cfg, data, colors):
    fig, axes = _figure(6.0, 3.8)
    ax = axes[0]
    drawn = 0
    bins = np.linspace(0, 1, 26)
    for name in _model_names(cfg):
        vals = []
        for seed in _seeds(cfg):
            s = (data["analysis"].get((name, seed)) or {}).get("selectivity")
            if s:
                vals += [v for v in s["values"] if v is not None]
        if vals:
            ax.hist(vals, bins=bins, histtype="step", lw=1.4, color=colors[name], label=name, density=True)
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("class selectivity index")
    ax.set_ylabel("density of units")
    ax.legend(fontsize=8)
    caption = ("Class selectivity of each unit of the test representation (Morcos et al. 2018: "
               "(mu_max - mu_rest) / (mu_max + mu_rest) over the class-mean responses), pooled over seeds.")
    return _png(fig), caption


# =========================================================================== the page

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:18px 22px;color:#1d1d1f;background:#fff}
h1{font-size:24px;margin:4px 0 2px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#f4f4f6;text-align:left}td.num{text-align:right;white-space:nowrap}
.ci{color:#666;font-size:12px}.n{color:#888;font-size:12px}
figure{margin:14px 0 22px}figure img{max-width:100%;height:auto;border:1px solid #eee}
.scroll{overflow-x:auto}.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:0 18px}th{font-size:12.5px}
figcaption{font-size:13px;color:#444;max-width:900px}
.warn{background:#fff6e0;border:1px solid #f0c36d;padding:8px 12px;border-radius:4px}
pre{background:#f7f7f9;padding:10px;overflow:auto;font-size:12px;max-height:420px}
details{margin:6px 0}
"""


def _figure_html(item):
    if item is None:
        return ""
    uri, caption = item
    return f'<figure><img src="{uri}" alt="{html.escape(caption[:80])}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _git_commit():
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if out.returncode != 0:
        return "unknown (bioreps is not in a git checkout)"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("bioreps", "numpy", "scipy", "numba", "torch", "h5py", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _summary_source(data):
    """The spectra the summary table reports: the pre-activations when measured (the seed paper's
    protocol), else the representation."""
    measured = {k for a in data["analysis"].values() for k in (a.get("spectra") or {})}
    return ("test-pre", "noise-pre", "alpha_nassar", "pre-activations, unweighted fit") if "test-pre" in measured \
        else ("test", "noise", "alpha", "representation, Stringer fit")


def _table(cfg, data, attacks):
    head, rows, note = _summary_cells(cfg, data, attacks)
    return _html_table(head, rows) + f"<p class=n>{note}</p>"


def _summary_cells(cfg, data, attacks):
    """The summary table as (head, rows of HTML cells, the note below it in HTML): the page and
    ``summary.md`` render the same cells."""
    seeds = _seeds(cfg)
    critical = [a for a in attacks if a != "noise"]  # random noise is a baseline, not an attack's minimum
    test_src, noise_src, fit, label = _summary_source(data)
    with_noise = any(noise_src in (a.get("spectra") or {}) for a in data["analysis"].values())
    rows, fallback = [], []
    for m in cfg["models"]:
        name = m["name"]
        tr = [data["train"][(name, s)] for s in seeds if (name, s) in data["train"]]
        an = [data["analysis"][(name, s)] for s in seeds if (name, s) in data["analysis"]]
        spec = [(a.get("spectra") or {}).get(test_src) or {} for a in an]
        noise = [(a.get("spectra") or {}).get(noise_src) or {} for a in an]
        if test_src != "test" and an and not any(spec):  # no pre-activations (spike counts): its representation's
            spec = [(a.get("spectra") or {}).get("test") or {} for a in an]
            noise = [(a.get("spectra") or {}).get("noise") or {} for a in an]
            fallback.append(name)
            mark = "<sup>&dagger;</sup>"
        else:
            mark = ""
        cells = [f"{html.escape(name)}<br><span class=n>{html.escape(m['kind'])}</span>",
                 _fmt(_ci([t.get("test_accuracy") for t in tr]), bounds=(0.0, 1.0)),
                 _fmt(_ci([s.get(fit) for s in spec]), 2) + (mark if any(spec) else "")]
        if with_noise:
            cells.append(_fmt(_ci([s.get(fit) for s in noise]), 2) + (mark if any(noise) else ""))
        for attack in attacks:
            entries = [_attack_entry(a, attack) for a in an]
            cells.append(_eps50_cell([e["eps50"] for e in entries if e]))
        for attack in critical:
            entries = [_attack_entry(a, attack) for a in an]
            cells.append(_fmt(_ci([e.get("median_l2") for e in entries if e]), 2, bounds=(0.0, math.inf)))
        rows.append(cells)
    head = (["model", "clean accuracy", f"alpha, test images ({label})"]
            + ([f"alpha, noise probes ({label})"] if with_noise else [])
            + [f"eps @ 50% rel. acc. {a.upper()}" for a in attacks]
            + [f"median critical L2 {a.upper()}" for a in critical])
    note = ("" if not fallback else
            f" <sup>&dagger;</sup>{html.escape(', '.join(fallback))}: no pre-activations (the representation is "
            f"not an activation function of currents, e.g. spike counts): the representation's own spectrum, same fit.")
    return head, rows, ("Each cell: the mean over seeds with the 95% Student-t interval across seeds "
                        "(clipped to the quantity's range)." + note)


def _contrast_columns(data, attacks):
    """(metric key, column title) of the contrasts table: accuracy, both fits' alpha of the
    summary's spectra, eps at 50% and the median critical perturbation of each attack."""
    test_src, _, _, _ = _summary_source(data)
    prefix = "pre_" if test_src == "test-pre" else ""
    what = "pre-activations" if prefix else "representation"
    cols = [("test_accuracy", "clean accuracy"), (prefix + "alpha_nassar", f"alpha, {what} (unweighted fit)"),
            (prefix + "alpha", f"alpha, {what} (Stringer fit)")]
    cols += [(f"{a}_eps50", f"eps @ 50% rel. acc. {a.upper()}") for a in attacks]
    cols += [(f"{a}_median_l2", f"median critical L2 {a.upper()}") for a in attacks if a != "noise"]
    return cols


def _contrast_cell(d):
    if d is None:
        return "-"
    sign = "+" if d["diff"] >= 0 else "&minus;"
    if d["decided"] is None:
        verdict = "<span class=n>one seed: undecided</span>"
    elif d["decided"]:
        verdict = "<b>higher</b>" if d["diff"] > 0 else "<b>lower</b>"
    else:
        verdict = "<span class=n>not resolved</span>"
    interval = (f"<br><span class=ci>[{d['ci_low']:.3g}, {d['ci_high']:.3g}]</span>"
                if d["decided"] is not None else "")
    return f"{sign}{abs(d['diff']):.3g}{interval}<br>{verdict}"


def _contrasts_table(cfg, data, attacks):
    """Each model minus the vanilla backprop model, per figure, with Welch's 95% interval across
    seeds: which differences the seeds decide (:func:`bioreps.studies.study.contrasts`)."""
    cells = _contrast_cells(cfg, data, attacks)
    if cells is None:
        return ""
    title, head, rows, note = cells
    return f"<h3>{title}</h3>" + _html_table(head, rows) + f"<p class=n>{note}</p>"


def _contrast_cells(cfg, data, attacks):
    """The contrasts table as (title, head, rows of HTML cells, note in HTML), None without a
    vanilla model or models to contrast."""
    from .study import _metrics, contrasts

    per_seed = {}
    for (name, seed), analysis in data["analysis"].items():
        if (name, seed) in data["train"]:
            per_seed.setdefault(name, {})[str(seed)] = _metrics(data["train"][(name, seed)], analysis)
    result = contrasts(cfg, per_seed)
    ref = result["reference"]
    if ref is None or not result["models"]:
        return None
    names = [n for n in _model_names(cfg) if n in result["models"]]
    # a column no model has a figure in (e.g. eps at 50% under random noise, which no model
    # reaches on the grid) is left out, so the table fits a laptop screen; the note names it
    cols, empty = [], []
    for key, title in _contrast_columns(data, attacks):
        (cols if any(result["models"][n].get(key) is not None for n in names) else empty).append((key, title))
    rows = [[f"{html.escape(name)}<br><span class=n>{html.escape(next(m['kind'] for m in cfg['models'] if m['name'] == name))}</span>"]
            + [_contrast_cell(result["models"][name].get(key)) for key, _ in cols] for name in names]
    left_out = ("" if not empty else " Left out, no model having the figure on every seed: "
                + html.escape("; ".join(title for _, title in empty)) + ".")
    note = (f"Each cell: mean(model) &minus; mean({html.escape(ref)}) across seeds with Welch's two-sided "
            "95% t interval; <b>higher</b>/<b>lower</b> when the interval excludes 0 (the seeds decide the sign), "
            "\"not resolved\" when it contains 0; \"-\": a figure missing on some seed (e.g. eps at 50% where a "
            "seed's curve does not cross 50% on the grid)." + left_out + " Also in results.json (\"contrasts\").")
    return (f"Each model against the vanilla backprop model ({html.escape(ref)})",
            ["model"] + [title for _, title in cols], rows, note)


def _text(cell) -> str:
    """An HTML cell as one line of Markdown text: small print in parentheses, line breaks become
    spaces, tags go, entities are decoded, pipes escaped."""
    text = re.sub(r"<br\s*/?>\s*<span class=n>(.*?)</span>", r" (\1)", str(cell))  # a cell's small print
    text = re.sub(r"<br\s*/?>", " ", text)
    text = re.sub(r"<sup>(.*?)</sup>", r"\1", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return " ".join(text.split()).replace("|", "\\|")


def _markdown_table(head, rows) -> str:
    lines = ["| " + " | ".join(_text(h) for h in head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(_text(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_summary(root, cfg, data=None, *, wall_seconds=None) -> Path:
    """Write ``root/summary.md``: the page's summary and contrasts tables and how they were
    measured, as Markdown (for a README, a lab notebook or a paper's supplement); the same
    cells as ``report.html``. Returns its path; written atomically."""
    from .. import _files

    root = Path(root)
    data = collect(cfg, root) if data is None else data
    attacks = _attacks(cfg, data)
    n_units = len(data["records"]) + len(data["missing"])
    unit_seconds = sum(float(r.get("seconds") or 0.0) for r in data["records"].values())
    lines = [f"# {cfg['study']['name']}: summary", ""]
    if cfg["study"].get("description"):
        lines += [cfg["study"]["description"], ""]
    lines += [f"{len(cfg['models'])} models x {len(_seeds(cfg))} seeds (seeds {', '.join(map(str, _seeds(cfg)))}); "
              f"{len(data['records'])} of {n_units} units finished; the finished units took {unit_seconds:.0f} s "
              f"in all ({unit_seconds / 3600:.1f} h, the attempts that finished them)"
              + (f"; this run's wall time {wall_seconds:.0f} s" if wall_seconds is not None else "")
              + f"; written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by bioreps "
              f"{_versions().get('bioreps', '?')} (git {_git_commit()[:12]}).", ""]
    if data["missing"]:
        lines += [f"Missing: {len(data['missing'])} units (the tables cover the finished ones).", ""]
    head, rows, note = _summary_cells(cfg, data, attacks)
    lines += ["## Summary", "", _markdown_table(head, rows), "", _text(note), ""]
    cells = _contrast_cells(cfg, data, attacks)
    if cells is not None:
        title, head, rows, note = cells
        lines += [f"## {_text(title)}", "", _markdown_table(head, rows), "", _text(note), ""]
    lines += ["## How it was measured", ""] + [f"- {p}" for p in _protocol(cfg)] + [""]
    path = root / SUMMARY_NAME
    _files.write_text_atomic(path, "\n".join(lines))
    return path


def _html_table(head, rows):
    body = "".join("<tr>" + "".join(f"<td{' class=num' if j >= 1 else ''}>{c}</td>" for j, c in enumerate(r))
                   + "</tr>" for r in rows)
    return "<div class=scroll><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body + "</table></div>"


def _spectra_table(cfg, data):
    """Every alpha measured: representation and pre-activations, test images and noise probes,
    both fits."""
    seeds = _seeds(cfg)
    measured = [k for k in _SOURCES if any(k in (a.get("spectra") or {}) for a in data["analysis"].values())]
    if not measured:
        return ""
    rows = []
    for m in cfg["models"]:
        name = m["name"]
        an = [data["analysis"][(name, s)] for s in seeds if (name, s) in data["analysis"]]
        cells = [f"{html.escape(name)}<br><span class=n>{html.escape(m['kind'])}</span>"]
        for source in measured:
            for fit in ("alpha", "alpha_nassar"):
                cells.append(_fmt(_ci([((a.get("spectra") or {}).get(source) or {}).get(fit) for a in an]), 2))
        rows.append(cells)
    head = ["model"] + [f"{_SOURCES[k][0].replace('the ', '')}, {_SOURCES[k][1].replace('the ', '')}: "
                        f"{'Stringer' if fit == 'alpha' else 'unweighted'}"
                        for k in measured for fit in ("alpha", "alpha_nassar")]
    return _html_table(head, rows)


def _notes(cfg, data):
    """Per-model lines: seeds trained together, attacks skipped and why, fit warnings."""
    lines = []
    for name, e in sorted(data.get("ensemble", {}).items()):
        lines.append(f"{name}: seeds {', '.join(map(str, e['seeds']))} trained together as one ensemble "
                     f"({len(e['seeds'])} networks at once on the {e.get('backend', '?')} backend, "
                     f"{e['fit_seconds']:.0f} s wall); each is the network its seed trains alone")
    for (name, seed), a in sorted(data["analysis"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rob = _robustness(a)
        for attack, why in (rob.get("skipped") or {}).items():
            lines.append(f"{name} (seed {seed}): {attack} not run: {why}")
        for attack, e in (rob.get("attacks") or {}).items():
            if e.get("n_correct") == 0:
                lines.append(f"{name} (seed {seed}): {attack}: no attacked test image is classified correctly, "
                             f"so there is no relative accuracy to measure")
        if (a.get("ablation") or {}).get("not_measured"):
            lines.append(f"{name} (seed {seed}): no ablation curve: {a['ablation']['not_measured']}")
        for note in a.get("spectra_notes") or []:
            lines.append(f"{name} (seed {seed}): {note}")
        for e in a.get("layers") or []:
            if e.get("not_measured"):
                lines.append(f"{name} (seed {seed}): no alpha for layer {e['layer'] + 1}: {e['not_measured']}")
        if rob.get("not_attacked"):
            lines.append(f"{name} (seed {seed}): no attack: {rob['not_attacked']}")
    return lines


def _protocol(cfg):
    an = cfg["analysis"]
    att, spec = an["attacks"], an["spectrum"]
    eps = ", ".join(f"{e:g}" for e in att["eps"])
    return [
        f"Data: {cfg['data']['dataset']}, {cfg['data'].get('n_train', 'all')} training and "
        f"{cfg['data'].get('n_test', 'all')} test images per seed (the same rows for every model of a seed).",
        f"Seeds: {', '.join(str(s) for s in cfg['study']['seeds'])}; intervals are two-sided 95% Student-t "
        f"intervals across seeds (none with one seed).",
        f"Spectra: PCA of each model's test representation (what its readout sees), alpha fitted over ranks "
        f"{spec['ranks'][0]}-{spec['ranks'][1]} with the Stringer et al. 2019 weighted fit and the unweighted "
        f"least-squares fit of lambda_n / lambda_1 (Nassar et al. 2020; the seed paper's); each fit's window "
        f"ends at the spectrum's cliff when it has one."
        + (" Noise probes: as many Gaussian images as test images, each pixel drawn from a normal with "
           "that pixel's test-set mean and standard deviation, clipped to [0, 1] (the models' input range)."
           if spec.get("noise_probes") else "")
        + (" Pre-activations: the currents the representation's activation function acts on (W x after the "
           "layer's own input preparation for the Hebbian layers and the random layer, the hidden layer's "
           "W x + b for backprop networks, the pixels themselves for the pixels); the seed paper measures "
           "these." if spec.get("preactivations") else "")
        + (f" Widths: the spectrum of the first h units for h in {spec['widths']} and the full width."
           if spec.get("widths") else ""),
        f"Attacks: {', '.join(att['methods'])} (L-inf) on the first {att['n_images']} test images, keeping "
        f"those the model classifies correctly (relative accuracy); eps grid {eps}; PGD {att['steps']} "
        f"steps. Eps at 50% relative accuracy is interpolated linearly in log eps between the two grid "
        f"points around the crossing (its resolution is that bracket). Critical perturbation: the L2 norm "
        f"of x - x_adv at the first eps that flips the image."
        + (f" Square (gradient-free, for models gradients cannot reach): {att['n_queries']} queries per image "
           f"and eps." if "square" in att["methods"] or any("square" in (m.get("attacks") or {}).get("methods", [])
                                                             for m in cfg["models"]) else ""),
    ] + [f"{m['name']}: its own attack settings: "
         + ", ".join(f"{k} = {v}" for k, v in m["attacks"].items()) for m in cfg["models"] if m.get("attacks")]


def write_report(root, cfg, *, error=None, wall_seconds=None) -> Path:
    """Write ``root/report.html`` for the study ``cfg`` (validated) from its unit folders.

    ``error``: the error that stopped the study, shown at the top (the page then covers the
    units that finished). Returns the page's path. The file is written atomically."""
    from .. import _files

    root = Path(root)
    data = collect(cfg, root)
    names = _model_names(cfg)
    colors = _colors(names)
    attacks = _attacks(cfg, data)
    # the strongest gradient attack measured, else the gradient-free one, else what there is
    main_attack = next((a for a in ("pgd", "fgsm", "square") if a in attacks), attacks[-1] if attacks else None)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>{html.escape(cfg['study']['name'])}: bioreps study report</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(cfg['study']['name'])}</h1>")
    if cfg["study"].get("description"):
        parts.append(f"<p>{html.escape(cfg['study']['description'])}</p>")
    n_units = len(data["records"]) + len(data["missing"])
    parts.append(f"<p class=n>{len(names)} models &times; {len(_seeds(cfg))} seeds; {len(data['records'])} of "
                 f"{n_units} units finished; written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
                 + (f"; wall time {wall_seconds:.0f} s" if wall_seconds is not None else "") + "</p>")
    if error is not None or data["missing"]:
        items = "".join(f"<li><code>{html.escape('/'.join(str(k) for k in key))}</code>: {html.escape(why)}</li>"
                        for key, why in data["missing"])
        msg = f"<p><b>The study stopped:</b> {html.escape(str(error))}</p>" if error is not None else ""
        reasons = Counter(why for _, why in data["missing"])
        counts = "; ".join(f"{n} {html.escape(why)}" for why, n in reasons.items())
        head = f"Missing units ({len(data['missing'])} of {n_units}: {counts}); the page shows what exists"
        # a long list (a study still running) folds away so the results stay at the top
        listing = (f"<p>{head}:</p><ul>{items}</ul>" if len(data["missing"]) <= 10 else
                   f"<details><summary>{head}: the list</summary><ul>{items}</ul></details>")
        parts.append(f"<div class=warn>{msg}{listing}</div>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table(cfg, data, attacks))
    parts.append(_contrasts_table(cfg, data, attacks))
    notes = _notes(cfg, data)
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<details open><summary>How it was measured</summary><ul>"
                 + "".join(f"<li>{html.escape(p)}</li>" for p in _protocol(cfg)) + "</ul></details>")

    parts.append("<h2>Robustness</h2>")
    parts.append(_figure_html(_fig_relative_accuracy(cfg, data, colors)) or "<p>No attack was measured.</p>")
    if main_attack and main_attack != "noise":
        parts.append(_figure_html(_fig_critical(cfg, data, colors, main_attack)))
        parts.append(_figure_html(_fig_median_vs_accuracy(cfg, data, colors, main_attack)))
    if "square" in attacks and main_attack != "square":
        # the gradient-free attack's own boxes: the models gradients cannot reach appear only here
        parts.append(_figure_html(_fig_critical(cfg, data, colors, "square")))
    parts.append("<h2>Spectra</h2>")
    parts.append(_spectra_table(cfg, data) or "<p>No spectrum was measured.</p>")
    figs = [_figure_html(_fig_spectra(cfg, data, colors, source)) for source in _SOURCES]
    parts.append("<div class=grid2>" + "".join(figs) + "</div>")
    for source in ("test-pre", "test"):
        fig = _fig_alpha_by_width(cfg, data, colors, source)
        if fig:
            parts.append(_figure_html(fig))
            break
    parts.append(_figure_html(_fig_alpha_by_layer(cfg, data, colors)) + _layers_table(cfg, data))
    parts.append("<h2>Similarity</h2>")
    parts.append(_figure_html(_fig_cka(cfg, data)) or "<p>No CKA was measured (analysis.cka = \"none\" or "
                                                       "the compare units are missing).</p>")
    if main_attack and main_attack != "noise":
        fig = _fig_cka_vs_robustness(cfg, data, colors, main_attack)
        parts.append(_figure_html(fig) if fig else
                     "<p class=n>No CKA-to-vanilla figure: the study has no vanilla backprop model (a supervised "
                     "model without a regulariser), or its CKA or attacks are missing.</p>")
    parts.append(_figure_html(_fig_transfer(cfg, data)))
    pruning = _pruning_figures(cfg, data, root)
    if pruning:
        parts.append("<h2>Receptive fields and pruning</h2>" + "".join(_figure_html(f) for f in pruning))
    sel, abl = _fig_selectivity(cfg, data, colors), _fig_ablation(cfg, data, colors)
    if sel or abl:
        parts.append("<h2>Class selectivity and ablation</h2>" + _figure_html(sel) + _figure_html(abl))

    parts.append("<h2>Provenance</h2>")
    v = _versions()
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(x))}</td></tr>"
                                     for k, x in {**v, "bioreps git commit": _git_commit()}.items()) + "</table>")
    rows = []
    for key, rec in sorted(data["records"].items(), key=lambda kv: [str(p) for p in kv[0]]):
        extra = ""
        if key[0] == "train":
            t = data["train"].get(key[1:], {})
            extra = html.escape(str(t.get("backend", "")))
        # a unit that continued a killed attempt's checkpoint: its seconds are the last attempt's
        resumed = (f" <small>(resumed from {html.escape(str(rec['resumed_from']))})</small>"
                   if rec.get("resumed_from") else "")
        rows.append(f"<tr><td><code>{html.escape('/'.join(str(k) for k in key))}</code></td>"
                    f"<td class=num>{rec.get('seconds', float('nan')):.1f}{resumed}</td>"
                    f"<td>{html.escape(str(rec.get('host', '')))}</td>"
                    f"<td>{rec.get('threads', '')}</td><td>{extra}</td><td>{html.escape(str(rec.get('finished', '')))}</td></tr>")
    parts.append("<details><summary>Units: wall time (of the attempt that finished the unit), host, threads, "
                 "backend</summary><table><tr><th>unit</th>"
                 "<th>seconds</th><th>host</th><th>threads</th><th>backend</th><th>finished</th></tr>"
                 + "".join(rows) + "</table></details>")
    parts.append("<details><summary>Configuration</summary><pre>"
                 + html.escape(json.dumps(cfg, indent=2, sort_keys=False)) + "</pre></details>")
    parts.append("</body></html>")
    page = "\n".join(p for p in parts if p)
    path = root / REPORT_NAME
    _files.write_text_atomic(path, page)
    write_summary(root, cfg, data, wall_seconds=wall_seconds)
    return path
