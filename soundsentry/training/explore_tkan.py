"""Compare TKAN variants (layers, k, statistics) on a validation set without re-extracting features.

    python -m scripts.explore_tkan --train cache/features/train --validation cache/features/devset

With the ``values`` reduction each layer's block holds its top-k activations sorted in descending
order, so the top-k' variant (k' <= k) is the first k' columns of every block, and a layer subset is
a choice of blocks (the layers of the rows' feature definition, whichever speaker network it reads:
Resemblyzer or pyannote's x-vector). Rows extracted with ``stats=("mean", "std")`` (``--spec`` of
``scripts.feature_extractor``) are also tried with the time standard deviation added. Each variant
is fitted on the training rows (scaler + MLP, the shipped recipe) and scored on the validation rows
— which are never fitted on: they only rank the variants. Prints pooled and per-source validation
EER, and the in-corpus speaker-disjoint CV EER beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from soundsentry.evaluation.metrics import eer_from_labels
from soundsentry.training.common import FeatureSet, make_model, out_of_fold_scores


def layer_sets(layers: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each layer alone, all but the last (the embedding), and all: for Resemblyzer lstm1, lstm2, lstm3,
    embedding, lstm1-3 and all four; for the x-vector sincnet, tdnn1 … tdnn5, embedding, all but the
    embedding, and all seven."""
    sets = [(name,) for name in layers]
    for subset in (layers[:-1], layers):
        if len(subset) > 1 and subset not in sets:
            sets.append(subset)
    return sets


def columns(spec, layers: tuple[str, ...], k: int, stats: tuple[str, ...] = ("mean",)) -> np.ndarray:
    """Indices of the top-k columns of each chosen layer block, for each chosen statistic.

    The rows hold every layer's mean block first, then (when extracted with ``stats=("mean", "std")``)
    every layer's standard-deviation block at the neurons the mean chose
    (:func:`soundsentry.models.tkan.tkan_features`).
    """
    if spec.reduction != "values":
        raise ValueError("column slicing needs features extracted with reduction='values'")
    missing = set(stats) - set(spec.stats)
    if missing:
        raise ValueError(f"the rows hold no {sorted(missing)} statistics (extracted with stats={spec.stats})")
    stride = len(spec.layers) * spec.k  # one statistic's columns
    blocks = [spec.stats.index(stat) * stride + spec.layers.index(name) * spec.k
              for stat in stats for name in layers]
    return np.concatenate([np.arange(b, b + k) for b in blocks])


def source_eers(data: FeatureSet, scores: np.ndarray) -> dict[str, float]:
    sources = data.column("source")
    real = data.labels == 0
    result = {"pooled": eer_from_labels(data.labels, scores)[0]}
    for source in sorted(set(sources[data.labels == 1])):
        fake = (sources == source) & ~real
        result[source] = eer_from_labels(np.r_[np.zeros(real.sum()), np.ones(fake.sum())],
                                         np.r_[scores[real], scores[fake]])[0]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=Path("cache/features/train"))
    parser.add_argument("--validation", type=Path, default=Path("cache/features/devset"))
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--cv", action="store_true", help="also compute in-corpus CV EER (slower)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    train, validation = FeatureSet.load(args.train), FeatureSet.load(args.validation)
    if train.spec != validation.spec:
        raise SystemExit("training and validation rows were extracted with different feature definitions")
    results = []
    # with rows extracted with stats=("mean", "std"), every variant also with the time std added
    stat_sets = [("mean",), ("mean", "std")] if "std" in train.spec.stats else [("mean",)]
    for layers, k, stats in itertools.product(layer_sets(train.spec.layers), args.ks, stat_sets):
        if k > train.spec.k:
            continue
        index = columns(train.spec, layers, k, stats)
        model = make_model(epochs=args.epochs).fit(train.features[:, index], train.labels)
        scores = model.predict_proba(validation.features[:, index])[:, 1]
        row = {"layers": layers, "k": k, "stats": "+".join(stats), **source_eers(validation, scores)}
        if args.cv:
            subset = FeatureSet(train.features[:, index], train.labels, train.meta, train.spec, train.recipe)
            row["cv_eer"] = eer_from_labels(train.labels, out_of_fold_scores(subset, epochs=args.epochs)[0])[0]
        results.append(row)
        sys.stdout.write(" ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                                  for key, value in row.items()) + "\n")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
