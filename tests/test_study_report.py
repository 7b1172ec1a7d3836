"""The study's report page (report.html) and the seed paper's measures it shows: relative
accuracy, critical perturbations, eps at 50%, spectra of test images and noise probes, CKA,
transfer, selectivity; a study whose units partly failed still gets its page."""

import base64
import html
import json
import re
import struct

import numpy as np
import pytest

from bioreps.studies import kinds, study
from bioreps.studies.execute import UnitError
from bioreps.studies.run import ConfigError
from bioreps.studies.study import run_study

from test_study_run import tiny_study

pytestmark = pytest.mark.slow


def _full(tmp_path, **kw):
    cfg = tiny_study(tmp_path, **kw)
    cfg["models"][1].pop("regularizer")  # a vanilla backprop model: the CKA-to-vanilla reference
    cfg["analysis"] = {"attacks": {"methods": ["noise", "fgsm", "pgd"], "eps": [0.0, 0.01, 0.03, 0.1, 0.3],
                                   "steps": 3, "n_images": 60},
                       "spectrum": {"noise_probes": True, "preactivations": True, "widths": [4, 10]},
                       "selectivity": True, "ablation": True}
    return cfg


def _pngs(page):
    """(width, height) of every embedded PNG, read from its IHDR chunk."""
    sizes = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
        sizes.append(struct.unpack(">II", raw[16:24]))
    return sizes


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from conftest import require_fashion_mnist

    require_fashion_mnist()
    tmp = tmp_path_factory.mktemp("report")
    res = run_study(_full(tmp), progress=False, log=lambda *a: None)
    return tmp / "out", res


def test_analysis_measures_the_papers_protocol(full_run):
    out, res = full_run
    a = json.loads((out / "units" / "analyze+mlp+0" / "analysis.json").read_text())
    rob = a["robustness"]
    assert rob["eps"] == [0.0, 0.01, 0.03, 0.1, 0.3]
    for attack in ("noise", "fgsm", "pgd"):
        e = rob["attacks"][attack]
        rel = np.array(e["relative_accuracy"])
        assert rel[0] == 1.0 and np.all(np.diff(rel) <= 0)  # relative: every kept image correct at eps 0
        assert len(e["l2"]) == e["n_correct"] == round(rob["clean_accuracy"] * rob["n_images"])
        flipped = [(c, v) for c, v in zip(e["critical_eps"], e["l2"]) if c is not None]
        # an image flipped at eps has ||x - x_adv||_2 <= eps * sqrt(784) (L-inf ball) and > 0
        assert all(0 < v <= c * np.sqrt(784) + 1e-4 for c, v in flipped)
        assert np.isclose(rel[-1], 1 - len(flipped) / e["n_correct"])
    # PGD is the stronger attack: it never leaves more images standing than random noise
    assert np.all(np.array(rob["attacks"]["pgd"]["relative_accuracy"])
                  <= np.array(rob["attacks"]["noise"]["relative_accuracy"]) + 1e-9)
    spectra = a["spectra"]
    assert set(spectra) == {"test", "noise", "test-pre", "noise-pre"}
    spec, noise = spectra["test"], spectra["noise"]
    assert spec["eigs"][0] == 1.0 and np.all(np.diff(spec["eigs"]) <= 0) and min(spec["eigs"]) > 1e-12
    assert spec["alpha"] != noise["alpha"]  # the noise probes give their own spectrum
    # the pre-activations of the MLP's hidden layer: W x + b, recomputed here from its file
    from bioreps import io as bio
    from bioreps.baselines.models import MLP
    from bioreps.analysis import spectrum

    model = MLP.load(out / "units" / "train+mlp+0" / "model.h5")
    with bio.load(out / "units" / "train+mlp+0" / "model.h5") as f:
        index = f.representations["test"].inputs_index
    from bioreps import data as bdata

    X = bdata.load("fashion-mnist", "test")[0][index]
    W, b = model.net[0].weight.detach().numpy(), model.net[0].bias.detach().numpy()
    eigs = spectrum.eigenspectrum(X @ W.T + b)
    assert np.allclose(spectra["test-pre"]["eigs"], (eigs / eigs[0])[:len(spectra["test-pre"]["eigs"])], rtol=1e-3)
    assert [r["h"] for r in spectra["test-pre"]["by_width"]] == [4, 10, 24]
    assert spectra["test-pre"]["by_width"][-1]["alpha"] == pytest.approx(spectra["test-pre"]["alpha"])
    assert len(a["selectivity"]["values"]) == 24
    ab = a["ablation"]
    for order in ("selective", "random"):
        c = ab["curves"][order]
        assert c["fractions"][0] == 0 and c["fractions"][-1] == 1 and len(c["accuracy"]) == 11
    train = json.loads((out / "units" / "train+mlp+0" / "train.json").read_text())
    assert ab["curves"]["selective"]["accuracy"][0] == pytest.approx(train["test_accuracy"])  # clean = the model's
    hebb = json.loads((out / "units" / "analyze+hebb+0" / "analysis.json").read_text())["ablation"]
    htrain = json.loads((out / "units" / "train+hebb+0" / "train.json").read_text())
    assert hebb["curves"]["random"]["accuracy"][0] == pytest.approx(htrain["test_accuracy"])  # the stored readout
    assert hebb["curves"]["random"]["accuracy"][-1] < 0.5  # every unit off: chance-like
    m = res["per_seed"]["mlp"]["0"]
    assert m["pgd_relative_accuracy@0"] == 1.0 and m["noise_alpha"] == noise["alpha"]
    assert m["pre_alpha_nassar"] == spectra["test-pre"]["alpha_nassar"]


def test_compare_unit_measures_transfer_near_the_50_percent_eps(full_run):
    out, _ = full_run
    c = json.loads((out / "units" / "compare+0" / "compare.json").read_text())
    t = c["transfer"]
    assert t["attack"] == "pgd" and t["names"] == ["hebb", "mlp", "pix"] and t["eps"] in (0.01, 0.03, 0.1, 0.3)
    analyses = [json.loads((out / "units" / f"analyze+{n}+0" / "analysis.json").read_text()) for n in t["names"]]
    assert t["eps"] == study._transfer_eps(analyses, [0.0, 0.01, 0.03, 0.1, 0.3], "pgd")
    M = np.array(t["matrix"])
    assert M.shape == (3, 3) and np.all((0 <= M) & (M <= 1))


def test_transfer_eps_is_the_grid_point_nearest_the_median_in_log():
    def a(e):
        return {"robustness": {"attacks": {"pgd": {"eps50": {"eps": e}}}}}

    grid = [0.0, 0.01, 0.03, 0.1]
    assert study._transfer_eps([a(0.02), a(0.05), a(0.04)], grid, "pgd") == 0.03
    assert study._transfer_eps([a(0.07)], grid, "pgd") == 0.1  # log(0.07) is nearer log(0.1)
    assert study._transfer_eps([a(None), {"robustness": {}}], grid, "pgd") == 0.1  # nothing crossed: the top
    assert study._transfer_eps([a(0.02)], [0.0], "pgd") is None


def test_the_page_is_self_contained_and_shows_every_model(full_run):
    out, res = full_run
    page = (out / "report.html").read_text()
    # no request can leave the file: no external URL in any src/href, no script
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    sizes = _pngs(page)
    # relative accuracy, critical boxplot, median vs accuracy, 4 spectra, alpha by width, CKA,
    # CKA-to-vanilla, transfer, pruning (hebb), selectivity, ablation
    assert len(sizes) == 14 and all(w > 100 and h > 100 for w, h in sizes)
    table = page[page.index("<h2>Summary</h2>"):page.index("How it was measured")]
    for name in ("hebb", "mlp", "pix"):
        assert f"<td>{name}<br>" in table
    s = res["summary"]["pix"]["test_accuracy"]
    assert f"{s['mean']:.3f}<br><span class=ci>[{max(s['ci_low'], 0):.3f}, {min(s['ci_high'], 1):.3f}]" in table
    for text in ("eps @ 50% rel. acc. PGD", "median critical L2 PGD", "alpha, noise probes (pre-activations, unweighted",
                 "pre-activations, test images: unweighted", "the first h units", "Receptive fields and pruning",
                 "vanilla backprop model (mlp)", "Transfer of adversarial examples", "Class selectivity", "bioreps git commit",
                 "PGD 3 steps"):
        assert text in page, text
    assert "Missing units" not in page


def test_each_model_is_contrasted_with_the_vanilla_model_by_welchs_interval(full_run):
    from test_stats import welch_reference

    out, res = full_run
    con = res["contrasts"]
    assert con["reference"] == "mlp" and set(con["models"]) == {"hebb", "pix"}
    per = res["per_seed"]
    for name in ("hebb", "pix"):
        for key in ("test_accuracy", "pre_alpha_nassar", "pgd_median_l2"):
            a = [per[name][s][key] for s in ("0", "1")]
            b = [per["mlp"][s][key] for s in ("0", "1")]
            d = con["models"][name][key]
            lo, hi, _ = welch_reference(a, b)
            assert d["diff"] == pytest.approx(np.mean(a) - np.mean(b)), (name, key)
            assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi), rel=1e-9), (name, key)
            assert d["decided"] == bool(lo > 0 or hi < 0)
    page = (out / "report.html").read_text()
    section = page[page.index("Each model against the vanilla backprop model (mlp)"):page.index("How it was measured")]
    d = con["models"]["hebb"]["test_accuracy"]
    sign = "+" if d["diff"] >= 0 else "&minus;"
    assert f"<td>hebb<br>" in section and "<td>mlp<br>" not in section
    assert f"{sign}{abs(d['diff']):.3g}<br><span class=ci>[{d['ci_low']:.3g}, {d['ci_high']:.3g}]</span>" in section
    assert ("higher" if d["decided"] and d["diff"] > 0 else "lower" if d["decided"] else "not resolved") in section
    # a column is shown when some model has its figure, else named among those left out
    head = section[:section.index("</tr>")]
    left = section.split("Left out", 1)[1] if "Left out" in section else ""
    for attack in ("noise", "fgsm", "pgd"):
        title = f"eps @ 50% rel. acc. {attack.upper()}"
        shown = any(con["models"][n].get(f"{attack}_eps50") is not None for n in ("hebb", "pix"))
        assert (title in head) == shown and (title in left) == (not shown), attack


def test_a_failed_unit_still_leaves_a_page_listing_what_is_missing(tmp_path, fashion_mnist_available,
                                                                   monkeypatch):
    cfg = tiny_study(tmp_path, seeds=[0])
    cfg["analysis"]["attacks"] = {"methods": ["fgsm"], "eps": [0.0, 0.1], "n_images": 30}
    real = kinds.build

    def build(kind, *a, **kw):   # the model builds (the study checks values that way first)
        model = real(kind, *a, **kw)
        if kind == "pixels":       # but its training, in its unit, fails
            def refuse(*args, **kwargs):
                raise RuntimeError("pixels refused on purpose")
            model.fit = refuse
        return model

    monkeypatch.setattr(kinds, "build", build)
    with pytest.raises(UnitError, match="pixels refused on purpose"):
        run_study(cfg, progress=False, log=lambda *a: None)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "The study stopped:" in page and "pixels refused on purpose" in page
    missing = page[page.index("Missing units"):page.index("<h2>Summary</h2>")]
    assert "train/pix/0" in missing and "compare/0" in missing and "train/hebb/0" not in missing
    table = page[page.index("<h2>Summary</h2>"):page.index("How it was measured")]
    row = {name: table.split(f"<td>{name}<br>")[1].split("</tr>")[0] for name in ("hebb", "mlp", "pix")}
    assert "&ndash;" not in row["mlp"].split("</td>")[1]  # mlp's accuracy is shown
    assert row["pix"].count("&ndash;") >= 4  # pix has nothing
    assert not (tmp_path / "out" / "results.json").exists()
    assert "alpha, noise probes" not in table  # not measured in this study: no empty column
    assert "one seed (no interval)" in page


def test_the_page_loads_cleanly_in_a_real_browser(full_run):
    """Headless Chromium: no network request, no console error, every image decodes with its
    true size; the screenshot is kept in the run folder (look at it when the page changes)."""
    import _browser

    if _browser.find_chromium() is None:
        pytest.skip("no Chromium to load pages in (apt-get install chromium, or set $BIOREPS_CHROMIUM)")
    out, _ = full_run
    shot = out / "report.png"
    rep = _browser.load_page(out / "report.html", screenshot=shot)
    assert rep.problems() == []
    page = (out / "report.html").read_text()
    assert [(i["natural_width"], i["natural_height"]) for i in rep.images] == _pngs(page)
    assert rep.title.startswith("tiny") and rep.scroll_height > 3000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_model_may_set_its_own_attack_budget_without_retraining(tmp_path, fashion_mnist_available):
    cfg = tiny_study(tmp_path, seeds=[0])
    cfg["models"] = cfg["models"][1:]  # mlp, pix
    cfg["analysis"] = {"attacks": {"methods": ["pgd"], "eps": [0.0, 0.05, 0.3], "steps": 2, "n_images": 40},
                       "transfer": False}
    run_study(cfg, progress=False, log=lambda *a: None)
    cfg["models"][1]["attacks"] = {"methods": ["square"], "n_images": 12, "n_queries": 20}
    logs = []
    run_study(cfg, progress=False, resume=True, log=logs.append)
    ran = sorted(line.split("unit ")[1].split(")")[0] + ")" for line in logs if " done in " in line)
    assert ran == ["('analyze', 'pix', 0)"]  # the attack settings rerun the analysis only
    out = tmp_path / "out"
    pix = json.loads((out / "units" / "analyze+pix+0" / "analysis.json").read_text())["robustness"]
    mlp = json.loads((out / "units" / "analyze+mlp+0" / "analysis.json").read_text())["robustness"]
    assert list(pix["attacks"]) == ["square"] and pix["n_images"] == 12
    assert list(mlp["attacks"]) == ["pgd"] and mlp["n_images"] == 40
    page = html.unescape((out / "report.html").read_text())
    assert "pix: its own attack settings: methods = ['square'], n_images = 12, n_queries = 20" in page
    # the gradient-free attack has its own critical-perturbation boxes (a model only it reaches)
    assert any(v is not None for v in pix["attacks"]["square"]["l2"])  # eps 0.3 flips some
    assert "Critical perturbation of each correctly classified test image under SQUARE" in page
    bad = tiny_study(tmp_path / "bad", seeds=[0])
    bad["models"][0]["attacks"] = {"eps": [0.1]}
    with pytest.raises(ConfigError, match=r"unknown key models\[0\].attacks.eps; a model may set"):
        run_study(bad, progress=False, log=lambda *a: None)
    bad["models"][0]["attacks"] = {"methods": ["cw"]}
    with pytest.raises(ConfigError, match=r"models\[0\].attacks.methods must be distinct names"):
        run_study(bad, progress=False, log=lambda *a: None)


def test_bioreps_report_rewrites_the_page_from_the_units(full_run, tmp_path, capsys):
    from bioreps import cli

    out, _ = full_run
    before = (out / "report.html").read_text()
    (out / "report.html").unlink()
    (out / "summary.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and f"summary: {out / 'summary.md'}" in printed
    assert (out / "summary.md").read_text().startswith("# tiny: summary")
    after = (out / "report.html").read_text()
    strip = lambda page: re.sub(r"written [0-9-]+ [0-9:]+ UTC(; wall time [0-9]+ s)?", "", page)  # noqa: E731
    assert strip(after) == strip(before)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "holds no study (no study.json)" in capsys.readouterr().err


def test_every_models_file_finds_its_test_images_again(full_run):
    """The test representation's inputs_index points at the images the model saw (a subset of the
    test split here), for backprop networks too: attacks and ablation use those images."""
    from bioreps import data as bdata
    from bioreps import io as bio
    from bioreps.baselines.models import MLP

    out, res = full_run
    path = out / "units" / "train+mlp+0" / "model.h5"
    with bio.load(path) as f:
        test = f.representations["test"]
        index, y = test.inputs_index, test.labels
    X, labels = bdata.load("fashion-mnist", "test")[:2]
    assert len(index) == 120 and not np.array_equal(index, np.arange(120))  # a drawn subset
    np.testing.assert_array_equal(labels[index], y)
    acc = float((MLP.load(path).predict(X[index]) == y).mean())
    assert acc == pytest.approx(res["per_seed"]["mlp"]["0"]["test_accuracy"])


def test_alpha_by_width_survives_silent_leading_units():
    """A representation whose first units never respond (dead RePU units in a backprop network):
    the widths that see only them have no spectrum (None), the others are fitted."""
    rng = np.random.default_rng(0)
    R = np.abs(rng.standard_normal((400, 60))) * (np.arange(1, 61) ** -0.7)
    R[:, :12] = 0.0
    _, _, entry = study._spectrum_entry(R.astype(np.float32), [2, 30], widths=[10, 20, 40])
    rows = {r["h"]: r for r in entry["by_width"]}
    assert rows[10]["alpha"] is None and rows[10]["alpha_nassar"] is None
    assert rows[20]["alpha"] is not None and rows[60]["alpha"] == pytest.approx(entry["alpha"])


def test_the_summary_shows_a_models_own_attacks_and_its_representations_alpha_without_preactivations():
    from bioreps.studies import page

    cfg = {"study": {"seeds": [0, 1]}, "analysis": {"attacks": {"methods": ["fgsm"]}},
           "models": [{"name": "net", "kind": "mlp"},
                      {"name": "dc", "kind": "spiking-wta", "attacks": {"methods": ["noise", "square"]}}]}
    e50 = lambda eps: {"eps": eps, "lo": eps / 2, "hi": eps * 2, "censored": None}  # noqa: E731
    data = {"train": {(m, s): {"test_accuracy": 0.8 + 0.01 * s} for m in ("net", "dc") for s in (0, 1)},
            "analysis": {}}
    for s in (0, 1):
        data["analysis"][("net", s)] = {
            "spectra": {"test-pre": {"alpha_nassar": 2.0 + s}, "test": {"alpha_nassar": 9.0}},
            "robustness": {"attacks": {"fgsm": {"eps50": e50(0.01), "median_l2": 1.0}}}}
        data["analysis"][("dc", s)] = {
            "spectra": {"test": {"alpha_nassar": 1.1 + 0.2 * s}},
            "robustness": {"attacks": {"noise": {"eps50": e50(0.3), "median_l2": 9.0},
                                       "square": {"eps50": e50(0.1 + 0.02 * s), "median_l2": 4.0 + s}}}}
    attacks = page._attacks(cfg, data)
    assert attacks == ["fgsm", "noise", "square"]  # the study's, then the spiking model's own
    table = page._table(cfg, data, attacks)
    rows = {r.split("<br>")[0].split("<td>")[-1]: r for r in table.split("<tr>")[2:]}
    assert "eps @ 50% rel. acc. SQUARE" in table and "median critical L2 SQUARE" in table
    assert "1.10e-01" in rows["dc"] and "4.50" in rows["dc"]  # the mean over its seeds
    # no pre-activations: its representation's alpha, marked and explained; the others' pre-activations
    assert "1.20" in rows["dc"] and "&dagger;" in rows["dc"] and "2.50" in rows["net"] and "9.00" not in rows["net"]
    assert "dc: no pre-activations" in table


def test_a_long_list_of_missing_units_folds_away_with_its_counts(tmp_path):
    from bioreps.studies import page
    from bioreps.studies.study import validate_study

    cfg = validate_study(tiny_study(tmp_path))  # nothing run yet: every unit is missing
    text = page.write_report(tmp_path, cfg).read_text()
    warn = text[text.index("<div class=warn>"):text.index("<h2>Summary</h2>")]
    assert "<details><summary>Missing units (14 of 14: 14 not run); the page shows what exists: the list" in warn
    assert warn.count("<li>") == 14 and "<code>train/hebb/0</code>: not run" in warn


def test_summary_md_holds_the_pages_tables_as_markdown(full_run):
    out, res = full_run
    md = (out / "summary.md").read_text()
    assert md.startswith(f"# {res['study']}: summary\n")
    summary = md[md.index("## Summary"):md.index("## Each model against")]
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | clean accuracy | alpha, test images (pre-activations, unweighted fit)")
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| hebb (hebbian-wta)", "| mlp (mlp)", "| pix (pixels)"]
    assert all(r.count(" | ") == rows[0].count(" | ") for r in rows)  # every row has every column
    s = res["summary"]["pix"]["test_accuracy"]
    assert f"| {s['mean']:.3f} [{max(s['ci_low'], 0):.3f}, {min(s['ci_high'], 1):.3f}] |" in rows[3]
    d = res["contrasts"]["models"]["hebb"]["test_accuracy"]
    sign = "+" if d["diff"] >= 0 else "\u2212"
    contrasts = md[md.index("## Each model against the vanilla backprop model (mlp)"):md.index("## How it was")]
    assert f"| {sign}{abs(d['diff']):.3g} [{d['ci_low']:.3g}, {d['ci_high']:.3g}]" in contrasts
    assert "<" not in md.replace("&lt;", "") and "&" not in md  # no HTML left
    assert "PGD 3 steps" in md  # how it was measured
    n = len(list((out / "units").glob("*/unit.json")))
    assert f"; {n} of {n} units finished;" in md and "Missing:" not in md


def test_transfer_matrix_averages_seeds_and_keeps_a_source_no_attack_reaches_as_na():
    """A source gradients cannot reach (the spiking layer) is None on every seed: its row stays n/a
    without NumPy's "Mean of empty slice" warning reaching the user's `bioreps report`."""
    import warnings

    import numpy as np

    from bioreps.studies import page

    names = ["hebb", "spiking", "mlp"]

    def transfer(scale):
        return {"names": names, "eps": 0.05, "attack": "pgd", "n_images": 100,
                "matrix": [[0.2 * scale, 0.5, 0.6], [None, None, None], [0.7, 0.4, 0.1 * scale]]}

    cfg = {"study": {"seeds": [0, 1]}}
    data = {"compare": {0: {"transfer": transfer(1)}, 1: {"transfer": transfer(2)}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png, caption = page._fig_transfer(cfg, data)
    assert png.startswith("data:image/png;base64,") and len(png) > 1000
    assert "mean over 2 seed(s)" in caption and "n/a: a source that gradient attacks cannot craft on" in caption
