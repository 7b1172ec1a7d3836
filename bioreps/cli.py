"""The ``bioreps`` command line (also ``python -m bioreps``).

Subcommands::

    bioreps datasets [--data-dir DIR]     known datasets, where each was found, sizes
    bioreps inspect FILE.h5               summary of a bioreps HDF5 file
    bioreps run CONFIG.toml [--output D]  run an experiment (fit, export, readout, report) or a
                                          study ([study] + [[models]]: many models x seeds,
                                          --workers N / --scheduler ADDRESS for Dask)
    bioreps train CONFIG.toml [--resume]  the same, named for training runs; resumes from checkpoint
    bioreps version                       versions of bioreps and its main dependencies

Errors in the user's input (a missing or malformed file, an unknown option) print one clear line
on stderr and exit with status 2; ``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ._version import __version__

__all__ = ["main"]


def _cmd_datasets(args) -> int:
    from . import data

    rows = data.info(data_dir=args.data_dir)
    header = ("dataset", "found", "train", "test", "shape", "location")
    table = []
    for r in rows:
        splits = r.get("splits") or {}
        table.append((r["name"], "yes" if r["found"] else "no",
                      str(splits.get("train", "-")), str(splits.get("test", "-")),
                      "x".join(str(d) for d in r.get("image_shape", ())),
                      r["path"] if r["found"] else r.get("how_to_get", "not found")))
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(fmt.format(*header))
    for row in table:
        print(fmt.format(*row))
    return 0


def _cmd_inspect(args) -> int:
    from . import io

    for i, path in enumerate(args.files):
        if i:
            print()
        with io.load(path) as f:
            print(f.summary())
    return 0


def _cmd_run(args) -> int:
    from .studies import run as study
    from .studies import study as studies

    if studies.is_study(study.read_toml(args.config)):
        if args.seed is not None:
            raise ValueError("--seed is for single experiments; a study lists its seeds in [study] seeds")
        studies.run_study(args.config, output=args.output, workers=args.workers, scheduler=args.scheduler,
                          resume=args.resume, progress=False if args.no_progress else None)
        return 0
    if args.workers is not None or args.scheduler is not None:
        raise ValueError("--workers/--scheduler run the units of a study ([study] + [[models]]); "
                         f"{args.config} is a single experiment")
    cfg = study.load_config(args.config)
    if args.output:
        cfg["experiment"]["output"] = args.output
    if args.seed is not None:
        cfg["experiment"]["seed"] = args.seed
    results = study.run(cfg, progress=False if args.no_progress else None, resume=args.resume,
                              source=args.config)
    print(f"results: {cfg['experiment']['output']}/results.json")
    for key in ("readout_train_accuracy", "readout_test_accuracy"):
        if key in results:
            print(f"  {key}: {results[key]:.4f}")
    return 0


@contextlib.contextmanager
def _progress_env(no_progress: bool):
    """``--no-progress``: turn off every progress bar (``$BIOREPS_PROGRESS=0``) for the command."""
    if not no_progress:
        yield
        return
    previous = os.environ.get("BIOREPS_PROGRESS")
    os.environ["BIOREPS_PROGRESS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("BIOREPS_PROGRESS", None)
        else:
            os.environ["BIOREPS_PROGRESS"] = previous


def _cmd_analyze(args) -> int:
    from .studies.execute import threads

    with _progress_env(args.no_progress), threads(args.threads):
        return _analyze(args)


def _analyze(args) -> int:
    from .studies.report import analyze_file

    _check_fit_windows(args)  # an impossible --ranks window: exit 2 before any file is written
    for path in args.files:
        res = analyze_file(path, split=args.split, ranks=(args.ranks[0], args.ranks[1]), n_boot=args.bootstrap,
                           out_dir=args.out, seed=args.seed, plots=not args.no_plots)
        spec = res["spectrum"]
        alpha = "n/a" if spec.get("alpha") is None else f"{spec['alpha']:.3f}"
        line = f"{path} [{res['split']}, {res['n_samples']} x {res['n_units']}]: alpha {alpha}"
        if "alpha_ci95" in spec:
            line += f" (95% CI {spec['alpha_ci95'][0]:.3f}-{spec['alpha_ci95'][1]:.3f})"
        sel = res["selectivity"]
        if "mean" in sel:
            line += f", class selectivity mean {sel['mean']:.3f}"
        print(line)
        print(f"  results: {res['files']['json']}")
    return 0


def _cmd_compare(args) -> int:
    from .studies.execute import threads

    with _progress_env(args.no_progress), threads(args.threads):
        return _compare(args)


def _compare(args) -> int:
    from .studies.report import compare_files

    res = compare_files(args.files, split=args.split, max_samples=args.max_samples, seed=args.seed,
                        out_dir=args.out, plots=not args.no_plots, name=args.name,
                        robustness=args.robustness, eps=args.eps, n_attack=args.n_attack)
    names = res["names"]
    width = max(len(n) for n in names)
    print(f"linear CKA ({res['split']}, {res['n_samples_used']} samples)")
    print(" " * (width + 2) + "  ".join(f"{n[:8]:>8}" for n in names))
    for name, row in zip(names, res["cka_linear"]):
        print(f"{name:<{width}}  " + "  ".join(f"{v:8.3f}" for v in row))
    rob = res.get("robustness")
    if rob:
        print(f"robust accuracy (L-inf, worst of FGSM/PGD-{rob['pgd_steps']}, {rob['n_samples']} {rob['split']} images)")
        for label, curve in rob["curves"].items():
            pts = ", ".join(f"eps {e:g}: {a:.3f}" for e, a in zip(curve["eps"], curve["worst_case"]))
            print(f"  {label}: {pts}")
        for label, why in rob["skipped"].items():
            print(f"  {label}: skipped ({why})")
        for label, how in rob.get("retrained", {}).items():
            print(f"  {label}: classifier retrained, not the file's ({how})")
        if "transfer" in rob:
            t = rob["transfer"]
            print(f"transfer (PGD eps {t['eps']:g}; row = source, column = target accuracy)")
            for label, row in zip(t["names"], t["matrix"]):
                print(f"  {label:<{width}}  " + "  ".join(f"{v:6.3f}" for v in row))
    print(f"results: {res['outputs']['json']}")
    return 0


def _check_fit_windows(args) -> None:
    """Refuse ``--ranks LO HI`` when LO < 1, LO >= HI, or fewer than 3 ranks of some file's
    spectrum (one eigenvalue per unit) lie in the window; reads only the files' shapes."""
    from . import io
    from .analysis import spectrum
    from .studies.report import _pick_split

    lo, hi = args.ranks
    try:
        spectrum.fit_window(max(hi, lo) + 2, (lo, hi))
    except ValueError as exc:
        raise ValueError(f"--ranks {lo} {hi}: {exc}") from None
    for path in args.files:
        with io.load(path) as f:
            split, rep = _pick_split(f, args.split, path)
            n_units = rep.shape[1]
        try:
            spectrum.fit_window(n_units, (lo, hi))
        except ValueError as exc:
            raise ValueError(f"--ranks {lo} {hi} does not fit the spectrum of {path} [{split}, "
                             f"{n_units} units]: {exc}") from None


def _cmd_report(args) -> int:
    import json
    from pathlib import Path

    from .studies.page import SUMMARY_NAME, write_report
    from .studies.run import ConfigError
    from .studies.study import validate_study

    folder = Path(args.folder)
    record = folder / "study.json"
    if not record.is_file():
        raise ConfigError(f"{folder} holds no study (no study.json): give the output folder of `bioreps run STUDY.toml`")
    saved = json.loads(record.read_text())
    if "config" not in saved:
        raise ConfigError(f"{record} was written by an older bioreps without the study's configuration; "
                          "run the study again with --resume to record it")
    page = write_report(folder, validate_study(saved["config"], source=str(record)))
    print(f"report: {page}")
    print(f"summary: {page.parent / SUMMARY_NAME}")
    return 0


def _cmd_version(args) -> int:
    from .io import collect_provenance

    prov = collect_provenance()
    print(f"bioreps {__version__}")
    for key in ("git_commit", "python_version", "numpy_version", "numba_version", "torch_version", "h5py_version"):
        if key in prov:
            print(f"  {key}: {prov[key]}")
    from .backend import cuda_status
    usable, reason = cuda_status()
    print(f"  cuda: {'usable' if usable else 'not usable'} ({reason})")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _add_threads(p) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="numba, torch and BLAS threads for the command (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioreps", description="Local-learning representations: train, export, analyse.")
    parser.add_argument("--version", action="version", version=f"bioreps {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("datasets", help="list known datasets and where they were found")
    p.add_argument("--data-dir", default=None, help="also look in this folder first")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("inspect", help="summarise bioreps HDF5 files")
    p.add_argument("files", nargs="+", metavar="FILE.h5", help="bioreps HDF5 files to summarise")
    p.set_defaults(func=_cmd_inspect)

    for name, text in (("run", "run an experiment described by a TOML file (fit, export, readout, report)"),
                       ("train", "same as run: train the model of a TOML file, with checkpoints and --resume")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", metavar="CONFIG.toml", help="experiment file (see experiments/)")
        p.add_argument("--output", default=None, help="output folder (overrides [experiment] output)")
        p.add_argument("--seed", type=int, default=None, help="override [experiment] seed")
        p.add_argument("--resume", action="store_true",
                       help="continue from <output>/checkpoint.h5 (a study: keep its finished units)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--workers", type=int, default=None, metavar="N",
                           help="a study only: run its units on a local Dask cluster of N worker processes")
        where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                           help="a study only: run its units on an existing Dask scheduler (tcp://host:port)")
        p.set_defaults(func=_cmd_run)

    p = sub.add_parser("analyze", help="eigenspectrum power law (alpha) and class selectivity of bioreps files")
    p.add_argument("files", nargs="+", metavar="FILE.h5", help="bioreps HDF5 files to analyse, one after another")
    p.add_argument("--split", default=None, help="representation to analyse (default: test, else the first)")
    p.add_argument("--ranks", type=int, nargs=2, default=(11, 500), metavar=("LO", "HI"),
                   help="power-law fit window, 1-based inclusive ranks (default 11 500); clipped to the "
                        "spectrum and cut where it falls off a cliff (with a warning)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for a 95%% CI of alpha")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: beside each file)")
    p.add_argument("--no-plots", action="store_true", help="write the JSON results only, no PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("compare", help="CKA and RSA between the representations of several bioreps files")
    p.add_argument("files", nargs="+", metavar="FILE.h5", help="bioreps HDF5 files to compare (two or more)")
    p.add_argument("--split", default=None, help="representation to compare (default: test, else the first)")
    p.add_argument("--max-samples", type=int, default=5000, help="random subset of rows used (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the row subset and the attacks (default 0)")
    p.add_argument("--name", default="compare", help="stem of the output files (default: compare)")
    p.add_argument("--robustness", action="store_true",
                   help="also attack the files' classifiers (FGSM/PGD curves, transfer matrix)")
    p.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1], help="L-inf radii (default 0.05 0.1)")
    p.add_argument("--n-attack", type=int, default=500, help="test images attacked (default 500)")
    p.add_argument("--out", default=None, help="output folder (default: beside the first file)")
    p.add_argument("--no-plots", action="store_true", help="write the JSON results only, no PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="(re)write a study's report.html and summary.md from its finished units")
    p.add_argument("folder", metavar="RUN_DIR", help="the study's output folder (holds study.json and units/)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("version", help="versions of bioreps, its dependencies and the CUDA status")
    p.set_defaults(func=_cmd_version)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bioreps: {category.__name__}: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    previous, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return _dispatch(args)
    finally:
        warnings.showwarning = previous


def _dispatch(args) -> int:
    if args.traceback:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("bioreps: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"bioreps {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
