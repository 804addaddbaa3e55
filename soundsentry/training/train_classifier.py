"""Train the shipped TKAN classifier: speaker-disjoint CV for figures and thresholds, then fit on all.

    python -m scripts.train_classifier --features cache/features/train --output-dir data
    python -m scripts.train_classifier --features cache/features/train-xvector --output-dir model/tkan-xvector

Writes ``feature_scaler.pkl``, ``trained_model.pth`` and ``training_report.json`` (CV figures,
thresholds, data snapshot, versions, the speaker network and its checkpoint's SHA-256) into
``--output-dir`` (alias ``--output``). The default is ``data/`` for features of the shipped Resemblyzer
encoder and ``model/tkan-<network>`` for another network, whose artefacts never go into ``data/``
(the served default would then need that network's checkpoint). With ``--eval-features`` (rows
extracted from a validation set such as ../shared/devset) it also scores those rows — evaluation
only: nothing is fitted on them.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from soundsentry.detector import DEFAULT_DATA_DIR
from soundsentry.evaluation.metrics import binary_report
from soundsentry.models.classifier import save_tkan_artifacts
from soundsentry.models.layers import ALIASES, DEFAULT_NETWORK
from soundsentry.training.common import (
    FeatureSet,
    category_thresholds,
    cv_summary,
    make_model,
    out_of_fold_scores,
    provenance,
)

log = logging.getLogger("train_classifier")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=Path("cache/features/train"))
    parser.add_argument("--output-dir", "--output", dest="output", type=Path, default=None,
                        help="where the artefacts go (default: data/, or model/tkan-<network> for another network)")
    parser.add_argument("--eval-features", type=Path, nargs="+", action="extend", default=[],
                        help="validation rows to score")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--balance", choices=["weights", "oversample"], default="weights")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    return parser.parse_args(argv)


def evaluate_rows(model, directory: Path) -> dict:
    """Score held-out rows: pooled and per-source report at the pooled EER point."""
    data = FeatureSet.load(directory)
    scores = model.predict_proba(data.features)[:, 1]
    sources = data.column("source")
    real = data.labels == 0
    report = {"pooled": binary_report(data.labels, scores, 0.5), "per_source_eer": {}}
    for source in sorted(set(sources)):
        fake = (sources == source) & (data.labels == 1)
        if fake.any() and real.any():
            labels = np.concatenate([np.zeros(real.sum()), np.ones(fake.sum())])
            pooled = np.concatenate([scores[real], scores[fake]])
            report["per_source_eer"][source] = binary_report(labels, pooled, 0.5)["eer"]
    return report


def output_directory(requested: Path | None, network: str) -> Path:
    """``requested``, or the default for ``network``; never ``data/`` for a network other than the shipped one."""
    if network == DEFAULT_NETWORK:
        return requested or Path("data")
    short = {full: alias for alias, full in ALIASES.items()}.get(network, network)
    default = Path("model") / f"tkan-{short}"
    if requested is not None and requested.resolve() == DEFAULT_DATA_DIR.resolve():
        raise SystemExit(
            f"these features read {network}, not the shipped {DEFAULT_NETWORK}: their classifier does not go "
            f"into {DEFAULT_DATA_DIR} (the served default). Pass --output-dir {default} and point the detector "
            "at it (SOUNDSENTRY_TKAN_DIR / DetectorConfig.tkan_dir)."
        )
    return requested or default


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = FeatureSet.load(args.features)
    output = output_directory(args.output, data.spec.network)
    params = dict(hidden=args.hidden, dropout=args.dropout, epochs=args.epochs, weight_decay=args.weight_decay)
    log.info("%d rows, %d fake, %d speakers", len(data.labels), int(data.labels.sum()), len(set(data.groups)))

    scores, folds = out_of_fold_scores(data, n_splits=args.folds, seed=args.seed, balance=args.balance, **params)
    thresholds = category_thresholds(data.labels, scores, data.durations)
    summary = cv_summary(data, scores, folds, thresholds)
    log.info("speaker-disjoint %d-fold CV: EER %.3f, ROC-AUC %.3f", args.folds,
             summary["pooled"]["eer"], summary["pooled"]["roc_auc"])

    model = make_model(args.balance, random_state=args.seed, **params).fit(data.features, data.labels)
    scaler, classifier = model.steps[0][1], model.steps[-1][1]
    report = {
        "cross_validation": {"method": f"StratifiedGroupKFold({args.folds}) by speaker, out-of-fold rows", **summary},
        "thresholds": thresholds,
        "training_data": {
            "rows": int(len(data.labels)),
            "fake_rows": int(data.labels.sum()),
            "speakers": len(set(data.groups)),
            "feature_spec": data.spec.to_dict(),
            "speaker_network": data.speaker_network,
            "rows_per_system": dict(Counter(data.column("system"))),
            "recipe": data.recipe,
        },
        "classifier": {"balance": args.balance, **params, "seed": args.seed},
        "versions": provenance(),
        "validation": {str(d): evaluate_rows(model, d) for d in args.eval_features},
    }
    for name, result in report["validation"].items():
        log.info("held-out %s: EER %.3f (per source %s)", name, result["pooled"].get("eer", float("nan")),
                 {k: round(v, 3) for k, v in result["per_source_eer"].items()})
    metadata = {
        "trained_on": sorted(set(data.column("source"))),
        "cv_eer": summary["pooled"]["eer"],
        "cv_roc_auc": summary["pooled"]["roc_auc"],
        "rows": int(len(data.labels)),
        "speaker_network": data.speaker_network,
        **provenance(),
    }
    save_tkan_artifacts(output, spec=data.spec, scaler=scaler, classifier=classifier,
                        thresholds=thresholds, metadata=metadata)
    (output / "training_report.json").write_text(json.dumps(report, indent=2, default=float))
    log.info("thresholds %s → %s", {k: round(v, 3) for k, v in thresholds.items()}, output)


if __name__ == "__main__":
    main()
