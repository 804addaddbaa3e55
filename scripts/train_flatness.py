"""Train the upper-band flatness scorer and write data/flatness.joblib.

    python -m scripts.train_flatness [--data cache/spoofs_band/manifest.csv] [--output data]

Rows: every file of ``--data`` (default: the corpus reals and their upper-band fakes written by
``scripts.make_band_spoofs``) as it is, plus ``--augmented-variants`` copies through a random
label-blind augmentation chain (default none, see the option) and a random crop of each ``--crops``
duration (:func:`soundsentry.flatness.file_rows`). Speaker-disjoint 5-fold cross-validation gives
the in-corpus figures saved with the model; then a StandardScaler + logistic regression is fitted
on every row. Why this scorer exists, and what it scores on ../shared/devset:
soundsentry/flatness.py and data/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from soundsentry.datasets import load_items
from soundsentry.flatness import FLATNESS_FILE, FlatnessFeatures, FlatnessScorer, file_rows, fit_flatness_model
from soundsentry.metrics import binary_report
from soundsentry.training import provenance

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("train_flatness")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", help="manifests or folders; repeatable")
    parser.add_argument("--output", type=Path, default=ROOT / "data")
    parser.add_argument("--augmented-variants", type=int, default=0,
                        help="augmented copies of each file (default 0: on the devset, copies through codecs, noise "
                             "and reverb cost 1.8 points whole-file and 1.7 in the browser condition; data/NOTES.md)")
    parser.add_argument("--crops", type=float, nargs="*", default=[],
                        help="also a random crop of each of these durations (seconds) of every file")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--folds", type=int, default=5, help="speaker-disjoint CV folds (at most one per speaker)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    locations = args.data or [ROOT / "cache" / "spoofs_band" / "manifest.csv"]
    items = [item for location in locations for item in load_items(location)]
    features = FlatnessFeatures()
    rows, labels, owners = file_rows(items, features, augmented_variants=args.augmented_variants, crops_s=args.crops,
                                     seed=args.seed,
                                     progress=lambda x: tqdm(x, desc="features", unit="file", mininterval=5.0))
    groups = np.array([item.speaker or str(item.path) for item in owners])
    scores = np.zeros(labels.size)
    folds = min(args.folds, len(set(groups)))  # a small set may have fewer speakers than folds
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=args.seed).split(rows, labels, groups):
        scores[test] = fit_flatness_model(rows[train], labels[train], args.c).predict_proba(rows[test])[:, 1]
    cv = binary_report(labels, scores, 0.5)
    systems = np.array([item.system for item in owners])
    per_system = {str(s): binary_report(np.r_[np.zeros((labels == 0).sum()), np.ones((systems == s).sum())],
                                        np.r_[scores[labels == 0], scores[systems == s]], 0.5)["eer"]
                  for s in sorted(set(systems[labels == 1]))}
    log.info("speaker-disjoint %d-fold CV: EER %.3f, ROC-AUC %.3f; per system %s", folds, cv["eer"], cv["roc_auc"],
             {k: round(v, 3) for k, v in per_system.items()})
    metadata = {
        "command": "python -m scripts.train_flatness " + " ".join(sys.argv[1:] if argv is None else argv),
        "trained": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": [str(p) for p in locations], "files": len(items), "rows": int(labels.size),
        "fake_rows": int(labels.sum()), "augmented_variants": args.augmented_variants,
        "crops_s": args.crops, "c": args.c,
        "cross_validation": {"method": f"StratifiedGroupKFold({folds}) by speaker", "eer": cv["eer"],
                             "roc_auc": cv["roc_auc"], "per_system_eer": per_system},
        **provenance(),
    }
    scorer = FlatnessScorer(fit_flatness_model(rows, labels, args.c), features, metadata)
    args.output.mkdir(parents=True, exist_ok=True)
    scorer.save(args.output / FLATNESS_FILE)
    log.info("wrote %s", args.output / FLATNESS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
