"""Train the upper-band flatness scorer and write data/flatness.joblib.

    python -m scripts.train_flatness [--data cache/spoofs_band/manifest.csv] [--output data]

Rows: every file of ``--data`` (default: the corpus reals and their upper-band fakes written by
``scripts.make_band_spoofs``) as it is, plus ``--augmented-variants`` copies through a random
label-blind augmentation chain (default none, see the option) and a random crop of each ``--crops``
duration (:func:`soundsentry.models.flatness.file_rows`). Speaker-disjoint 5-fold cross-validation gives
the in-corpus figures saved with the model; then a StandardScaler + logistic regression is fitted
on every row. Why this scorer exists, and what it scores on ../shared/devset:
soundsentry/flatness.py and data/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from soundsentry.constants import CHECKOUT, SAMPLE_RATE
from soundsentry.datasets import load_items
from soundsentry.evaluation.metrics import binary_report
from soundsentry.models.flatness import FLATNESS_FILE, FlatnessFeatures, FlatnessScorer, flatness_features
from soundsentry.training.common import provenance

ROOT = CHECKOUT
log = logging.getLogger("train_flatness")


def file_rows(
    items: Sequence[Any], features: FlatnessFeatures = FlatnessFeatures(), *, augmented_variants: int = 0,
    crops_s: Sequence[float] = (), seed: int = 0, progress=lambda x: x,
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Feature rows of labelled files (``AudioItem``s): each file as it is and ``augmented_variants``
    times through a random label-blind augmentation chain (codecs, noise, reverb, RawBoost...), and
    for each of those a random crop of each duration in ``crops_s`` (a file no longer than the crop
    is used whole). The shipped scorer uses no augmented copies: on the devset they made it worse, in
    the browser condition too (data/NOTES.md). Returns (rows, labels, the item of each row)."""
    import soundfile as sf

    from soundsentry.training.augment import apply_augmentation, random_augmentation

    rows, labels, owners = [], [], []
    for item in progress(items):
        samples, rate = sf.read(item.path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{item.path}: {rate} Hz; training files must be 16 kHz")
        samples = samples.mean(axis=1)
        rng = np.random.default_rng([seed, zlib.crc32(str(item.path).encode())])  # not the order of work
        variants = [samples] + [apply_augmentation(samples, random_augmentation(rng, p_none=0.0), rng)
                                for _ in range(augmented_variants)]
        for variant in variants:
            for view in [variant] + [_random_crop(variant, seconds, rng) for seconds in crops_s]:
                rows.append(flatness_features(view, features))
                labels.append(item.label)
                owners.append(item)
    return np.stack(rows), np.array(labels), owners


def _random_crop(samples: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    length = int(round(seconds * SAMPLE_RATE))
    start = int(rng.integers(0, samples.size - length + 1)) if samples.size > length else 0
    return samples[start : start + length]


def fit_flatness_model(rows: np.ndarray, labels: np.ndarray, c: float = 1.0) -> Any:
    """StandardScaler + class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=1000)).fit(
        rows, labels)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", action="extend", help="manifests or folders; repeatable")
    parser.add_argument("--output", type=Path, default=ROOT / "data")
    parser.add_argument("--augmented-variants", type=int, default=0,
                        help="augmented copies of each file (default 0: on the devset, copies through codecs, noise "
                             "and reverb cost 1.8 points whole-file and 1.7 in the browser condition; data/NOTES.md)")
    parser.add_argument("--crops", type=float, nargs="*", default=[],
                        help="also a random crop of each of these durations (seconds) of every file")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--folds", type=int, default=5, help="speaker-disjoint CV folds (at most one per speaker)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
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
