"""The ``soundsentry`` command: ``soundsentry serve | predict | evaluate | train`` (``soundsentry COMMAND --help``).

- ``serve``: the API with the launcher's connection limits (:mod:`api.server`; same options);
- ``predict FILE...``: one line per file (verdict, P(fake), speakers), or the JSON report with ``--json``;
  exit status 1 when any file was rejected;
- ``evaluate --test-dir DIR``: the batch evaluator (predictions.csv, metrics.json, plots);
- ``train RECIPE...``: training recipes (``configs/*.toml``, :mod:`soundsentry.training.recipes`).

The benchmark and load test run from a checkout (``python -m scripts.benchmark``): they start the
service from its sources.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from soundsentry.constants import DEFAULT_DATA_DIR

EVALUATE_DOC = """Evaluate the detector on a labelled folder or manifest, through the same path the API serves.

    soundsentry evaluate --test-dir DIR [--use-diarization] [--output-dir OUT] [--no-plots]

DIR holds ``real/`` and ``fake/`` sub-folders, or a ``manifest.csv`` (``path,label[,source,system]``);
``--test-dir`` may also name a CSV directly, or any layout ``soundsentry.datasets.load_items`` reads
(In-the-Wild, ASVspoof 2019 LA / 2021 LA and DF protocols, Fake-or-Real splits). Writes
``predictions.csv`` and ``metrics.json`` (eer with a 95 % bootstrap interval over files, roc_auc,
accuracy, precision, recall, f1, confusion_matrix, threshold, min DCF, per-source and per-system EER
and min DCF when the data names them, each scorer alone and its paired EER difference to the served
score), the figures of ``soundsentry.evaluation.plots`` beside them, and prints a summary.

``--engine dask`` scores the files on a local Dask cluster of ``--workers`` processes (one torch thread
each), or on the running cluster at ``--scheduler tcp://HOST:8786`` (``dask scheduler``, then
``dask worker tcp://HOST:8786 --nthreads 1`` on each machine; every worker needs this package, the models
at the same ``--data-dir`` path and read access to the test files at the same paths). The predictions are
the sequential run's. Each finished file is appended to ``OUT/predictions.partial.jsonl``: a run with the
same settings in the same ``--output-dir`` skips the files found there (an interrupted run resumes);
one with other settings is refused unless ``--restart`` is given.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": serve_main, "predict": predict_main, "evaluate": evaluate_main, "train": train_main}
    if not argv or argv[0] not in commands:
        sys.stderr.write(__doc__.split("\n\n")[0] + "\n" if argv and argv[0] in ("-h", "--help")
                         else f"usage: soundsentry {{{','.join(commands)}}} [options]\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:]) or 0


def serve_main(argv: list[str] | None = None) -> int:
    """``soundsentry serve``: :func:`api.server.main` (its options: ``--host``, ``--port``, ...)."""
    from api.server import main as serve

    serve(argv)
    return 0


def predict_main(argv: list[str] | None = None) -> int:
    """``soundsentry predict FILE... [--use-diarization] [--json | --rttm] [--data-dir DIR]``."""
    from soundsentry.detector import Detector, DetectorConfig
    from soundsentry.errors import SoundSentryError

    parser = argparse.ArgumentParser(prog="soundsentry predict", description="Is the speech in each file real or "
                                     "AI-generated? One line per file, or the full report with --json.")
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--use-diarization", action="store_true")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the full report as JSON")
    output.add_argument("--rttm", action="store_true",
                        help="print the speaker turns as RTTM (uri: the file name's stem), for pyannote.metrics")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="model directory (default: shipped)")
    args = parser.parse_args(argv)
    try:
        detector = Detector.load(DetectorConfig(data_dir=args.data_dir))
    except SoundSentryError as error:
        sys.stderr.write(f"cannot load the models: {error.message}\n")
        return 2
    failed = 0
    for path in args.files:
        try:
            report = detector.predict_bytes(path.read_bytes(), filename=path.name, use_diarization=args.use_diarization)
        except (SoundSentryError, OSError) as error:
            failed += 1
            sys.stdout.write(f"{path}\tERROR\t{getattr(error, 'message', error)}\n")
            continue
        if args.json:
            sys.stdout.write(json.dumps({"file": str(path), **report.serialize()}, indent=2) + "\n")
        elif args.rttm:
            sys.stdout.write(report.rttm(path.stem))
        else:
            speakers = ", ".join(f"{s.speaker} {s.result} ({s.zone}) {s.probability:.2f}" for s in report.speakers)
            sys.stdout.write(f"{path}\t{report.overall}\tP(fake)={report.mean_probability:.3f}\t"
                             f"confidence={report.confidence:.2f}\t{speakers or report.message}\n")
    return 1 if failed else 0


def evaluate_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="soundsentry evaluate", description=EVALUATE_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-dir", type=Path, default=Path("test_data"))
    parser.add_argument("--use-diarization", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="model directory to evaluate (default: the shipped data/)")
    parser.add_argument("--tkan-dir", type=Path, default=None,
                        help="TKAN artefacts from here instead of --data-dir (e.g. model/tkan-xvector)")
    parser.add_argument("--xvector-dir", type=Path, default=None,
                        help="pyannote x-vector checkpoint directory for TKAN artefacts that read it (model/embedding)")
    parser.add_argument("--denoise", action="store_true",
                        help="noisereduce the input before scoring (measured on the devset: see data/MODEL_CARD.md)")
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--limit", type=int, help="only the first N files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the sequential engine (more only "
                        "helps on an idle machine; a Dask worker uses one)")
    parser.add_argument("--browser-chunks", action="store_true",
                        help="score each file as the browser extension sends it: 4 s WEBM/Opus 32 kb/s chunks")
    parser.add_argument("--no-plots", action="store_true",
                        help="skip the PNG figures (confusion matrix, ROC, DET, score histograms)")
    parser.add_argument("--engine", choices=("sequential", "dask"), default="sequential",
                        help="where the files are scored: this process, or a Dask cluster (default: sequential)")
    parser.add_argument("--workers", type=int, default=2,
                        help="--engine dask: processes of the local cluster, one torch thread each (default 2)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="--engine dask: a running cluster's scheduler (tcp://HOST:8786) instead of a local "
                        "cluster; --workers is then ignored")
    parser.add_argument("--restart", action="store_true",
                        help="ignore the partial results in --output-dir and score every file again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.scheduler and args.engine != "dask":
        parser.error("--scheduler needs --engine dask")
    return args


def format_summary(metrics: dict) -> str:
    unit = "chunks" if metrics.get("browser_chunks") else "files"
    lines = [f"{unit} {metrics['files']}: scored {metrics['scored']}, no speech {metrics['no_speech']}, "
             f"errors {metrics['errors']}"]
    if "eer" in metrics:
        low, high = metrics["eer_interval"]
        lines.append(f"EER {metrics['eer']:.2%} (95 % interval {low:.1%}-{high:.1%}, files resampled)  "
                     f"ROC-AUC {metrics['roc_auc']:.3f}  minDCF {metrics['min_dcf']:.3f}  ECE {metrics['ece']:.3f}")
    if "accuracy" in metrics:
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        lines += [
            f"accuracy {metrics['accuracy']:.3f}  precision {metrics['precision']:.3f}  "
            f"recall {metrics['recall']:.3f}  f1 {metrics['f1']:.3f}",
            "confusion matrix (rows: true, columns: predicted)",
            "            Real   Fake",
            f"  Real  {tn:6d} {fp:6d}",
            f"  Fake  {fn:6d} {tp:6d}",
        ]
    for key, what in (("reals_called_fake", "reals called Fake"), ("fakes_called_real", "fakes called Real")):
        if metrics.get(key, {}).get("trials"):
            low, high = metrics[key]["interval"]
            lines.append(f"{what}: {metrics[key]['rate']:.1%} (95 % interval {low:.1%}-{high:.1%}) "
                         f"of {metrics[key]['trials']}")
    if "zones" in metrics:
        lines.append("zones (real / uncertain / fake): " + "; ".join(
            f"{label}s {z['real']} / {z['uncertain']} / {z['fake']}" for label, z in metrics["zones"].items()))
    for name, member in metrics.get("members", {}).items():
        gain = member["served_minus_member_eer"]
        low, high = gain["interval"]
        lines.append(f"{name} alone: EER {member['eer']:.1%}, ROC-AUC {member['roc_auc']:.3f}; served minus {name}: "
                     f"{100 * gain['difference']:+.1f} points (95 % interval {100 * low:+.1f} to {100 * high:+.1f})")
    for key in ("per_source_eer", "per_source_eer_within_source", "per_system_eer"):
        if len(metrics.get(key, {})) > 1:
            trials = metrics.get(key.replace("_eer", "_trials").replace("_within_source", ""), {})
            lines.append(key.replace("_", " ") + ": " + ", ".join(
                f"{k} {v:.1%}" + (f" (n={trials[k]['fake']})" if k in trials else "") for k, v in metrics[key].items()))
    return "\n".join(lines)


def evaluate_main(argv: list[str] | None = None) -> int:
    """``soundsentry evaluate``: score a labelled folder through the served path; write predictions, metrics, plots.

    The files are scored by :func:`soundsentry.evaluation.engines.evaluate_items` (sequential or Dask,
    resuming from ``--output-dir``'s partial results).
    """
    from soundsentry.datasets import AudioItem, load_items
    from soundsentry.evaluation.batch import BrowserChunks, Prediction, scored_arrays, summarise
    from soundsentry.evaluation.engines import EngineError, ResumeError, RunSettings, evaluate_items
    from soundsentry.evaluation.plots import write_plots

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = evaluate_args(argv)
    try:
        items = load_items(args.test_dir)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"cannot read test data from {args.test_dir}: {error}\n")
        return 2
    if args.limit:
        items = items[: args.limit]
    settings = RunSettings.of(test_dir=args.test_dir, data_dir=args.data_dir, tkan_dir=args.tkan_dir,
                              xvector_dir=args.xvector_dir, denoise=args.denoise,
                              use_diarization=args.use_diarization,
                              chunks=BrowserChunks() if args.browser_chunks else None)
    try:
        outcome = evaluate_items(items, settings, args.output_dir, engine=args.engine, workers=args.workers,
                                 scheduler=args.scheduler, threads=args.threads, restart=args.restart,
                                 progress=not args.quiet, say=lambda line: sys.stderr.write(line + "\n"))
    except ResumeError as error:
        sys.stderr.write(f"cannot resume: {error}\n")
        return 2
    except EngineError as error:
        sys.stderr.write(f"cannot evaluate on the cluster: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: the files scored so far are kept in {args.output_dir}; "
                         "run the same command again to go on\n")
        return 130
    predictions = outcome.predictions
    metrics = summarise(predictions, outcome.thresholds)
    metrics["use_diarization"] = args.use_diarization
    metrics["browser_chunks"] = args.browser_chunks
    metrics["denoise"] = args.denoise
    metrics["models"] = outcome.models
    metrics["run"] = outcome.run
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(Prediction(AudioItem(Path(""), 0), "error").row()))
        writer.writeheader()
        writer.writerows(p.row() for p in predictions)
    (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    arrays = scored_arrays(predictions)
    if not args.no_plots and arrays["labels"].size:
        threshold = 0.5 if metrics.get("threshold") is None else metrics["threshold"]
        write_plots(args.output_dir, arrays["labels"], arrays["scores"], threshold,
                    groups=arrays["systems"], decisions=arrays["verdicts"],
                    category_thresholds=metrics.get("model_thresholds"))
    run = outcome.run
    speed = f": {run['files_per_s']:.2f} files/s" if run["files_per_s"] else ""
    engine = run["engine"] + (f", {run['workers']} workers" if run["engine"] == "dask" else "")
    sys.stdout.write(format_summary(metrics) + f"\nscored {run['files_scored_now']} files in {run['scoring_s']:.1f} s"
                     f"{speed} ({engine}; {run['files_resumed']} resumed, startup {run['startup_s']:.1f} s)"
                     f"\nwritten to {args.output_dir}\n")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """``soundsentry train RECIPE... [--shared DIR] [--dry-run]``: :func:`soundsentry.training.recipes.main`."""
    from soundsentry.training.recipes import main as train

    return train(argv)


if __name__ == "__main__":
    sys.exit(main())
