"""Grid search over the TKAN classifier's settings with speaker-disjoint folds.

    python -m scripts.train_gridsearch --features cache/features/train

Scores each setting by ROC-AUC of ``GridSearchCV`` over ``StratifiedGroupKFold`` (grouped by
speaker; the scaler is refitted in every fold by the pipeline) and prints the table, best first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from soundsentry.training.common import FeatureSet, make_model

GRID = {
    "mlpclassifiertorch__hidden": [64, 128, 256],
    "mlpclassifiertorch__dropout": [0.1, 0.3, 0.5],
    "mlpclassifiertorch__weight_decay": [1e-4, 1e-3, 1e-2],
}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=Path("cache/features/train"))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--grid", type=Path, help="JSON dict of parameter lists (pipeline step__param names)")
    parser.add_argument("--output", type=Path, help="write all results as JSON here")
    args = parser.parse_args(argv)
    data = FeatureSet.load(args.features)
    grid = json.loads(args.grid.read_text()) if args.grid else GRID
    search = GridSearchCV(
        make_model(epochs=args.epochs), grid, scoring="roc_auc",
        cv=StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0), n_jobs=1, refit=False,
    )
    search.fit(data.features, data.labels, groups=data.groups)
    results = sorted(
        ({"params": p, "roc_auc": float(m), "std": float(s)} for p, m, s in zip(
            search.cv_results_["params"], search.cv_results_["mean_test_score"], search.cv_results_["std_test_score"],
            strict=True)),
        key=lambda r: -r["roc_auc"],
    )
    for row in results:
        sys.stdout.write(f"{row['roc_auc']:.4f} ± {row['std']:.4f}  {row['params']}\n")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
