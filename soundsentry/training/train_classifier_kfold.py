"""Cross-validated figures for the TKAN classifier, without writing a model.

    python -m scripts.train_classifier_kfold --features cache/features/train [--hold-out-systems]

Speaker-disjoint StratifiedGroupKFold: pooled, per-fold, per-duration and per-system EER. With
``--hold-out-systems``, each fake system is also scored by models that never saw it (its fakes are
removed from every training fold): the in-corpus view of how a generator the model never met fares.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from soundsentry.evaluation.metrics import eer_from_labels
from soundsentry.training.common import FeatureSet, category_thresholds, cv_summary, make_model, out_of_fold_scores

log = logging.getLogger("train_classifier_kfold")


def held_out_system_eer(data: FeatureSet, folds: int, seed: int, **params) -> dict[str, float]:
    systems = data.column("system")
    result = {}
    for system in sorted(set(systems[data.labels == 1])):
        keep = systems != system
        meta = [m for m, k in zip(data.meta, keep, strict=True) if k]
        subset = FeatureSet(data.features[keep], data.labels[keep], meta, data.spec, data.recipe)
        scores, _ = out_of_fold_scores(subset, n_splits=folds, seed=seed, **params)
        real_scores = scores[subset.labels == 0]
        # the unseen system's rows, scored by a model fitted on everything else
        model = make_model(random_state=seed, **params).fit(subset.features, subset.labels)
        fake_scores = model.predict_proba(data.features[~keep])[:, 1]
        labels = np.concatenate([np.zeros(real_scores.size), np.ones(fake_scores.size)])
        result[system] = eer_from_labels(labels, np.concatenate([real_scores, fake_scores]))[0]
        log.info("unseen %s: EER %.3f", system, result[system])
    return result


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=Path("cache/features/train"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hold-out-systems", action="store_true")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    data = FeatureSet.load(args.features)
    scores, folds = out_of_fold_scores(data, n_splits=args.folds, seed=args.seed, epochs=args.epochs)
    summary = cv_summary(data, scores, folds, category_thresholds(data.labels, scores, data.durations))
    log.info("pooled EER %.3f, ROC-AUC %.3f; per fold %s", summary["pooled"]["eer"], summary["pooled"]["roc_auc"],
             [round(x, 3) for x in summary["per_fold_eer"]])
    if args.hold_out_systems:
        summary["unseen_system_eer"] = held_out_system_eer(data, args.folds, args.seed, epochs=args.epochs)
    if args.output:
        args.output.write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
