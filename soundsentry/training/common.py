"""Training helpers for the TKAN classifier: feature sets, speaker-disjoint CV, thresholds.

Cross-validation splits by speaker with ``StratifiedGroupKFold`` (a LibriSpeech speaker and the
fakes re-synthesised from that speaker stay in one fold), and the scaler is fitted inside each
fold by the pipeline. Out-of-fold scores give the validation figures and the per-duration
decision thresholds that ship with the model.
"""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from imblearn.over_sampling import RandomOverSampler
from imblearn.pipeline import make_pipeline as make_imb_pipeline
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from soundsentry.evaluation.metrics import binary_report, eer_from_labels
from soundsentry.models.classifier import MLPClassifierTorch
from soundsentry.models.tkan import FeatureSpec
from soundsentry.rollup import CATEGORIES, duration_category


@dataclass
class FeatureSet:
    """Rows written by ``scripts/feature_extractor.py``."""

    features: np.ndarray  # (row, dimension)
    labels: np.ndarray  # (row,), 1 = fake
    meta: list[dict[str, str]]
    spec: FeatureSpec
    recipe: dict[str, Any]
    # the network's name, checkpoint and SHA-256 (absent in caches written before it was recorded)
    speaker_network: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> FeatureSet:
        with (directory / "meta.csv").open(newline="") as handle:
            meta = list(csv.DictReader(handle))
        described = json.loads((directory / "spec.json").read_text())
        return cls(
            features=np.load(directory / "features.npy"),
            labels=np.load(directory / "labels.npy"),
            meta=meta,
            spec=FeatureSpec.from_dict(described["feature_spec"]),
            recipe=described["recipe"],
            speaker_network=described.get("speaker_network", {}),
        )

    def column(self, name: str) -> np.ndarray:
        return np.array([row[name] for row in self.meta])

    @property
    def groups(self) -> np.ndarray:
        """Speaker of each row (the file path when a manifest names no speaker)."""
        return np.array([row["speaker"] or row["path"] for row in self.meta])

    @property
    def durations(self) -> np.ndarray:
        return self.column("duration_s").astype(float)


def make_model(balance: str = "weights", **params: Any) -> Pipeline:
    """Scaler + MLP. ``balance="oversample"`` adds imbalanced-learn's RandomOverSampler (training
    folds only); ``"weights"`` relies on the MLP's class-weighted loss alone."""
    classifier = MLPClassifierTorch(**params)
    if balance == "oversample":
        return make_imb_pipeline(StandardScaler(), RandomOverSampler(random_state=0), classifier)
    if balance == "weights":
        return make_pipeline(StandardScaler(), classifier)
    raise ValueError(f"balance must be 'weights' or 'oversample', got {balance!r}")


def out_of_fold_scores(
    data: FeatureSet, *, n_splits: int = 5, seed: int = 0, balance: str = "weights", **params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) for every row from a model that never saw its speaker. Returns (scores, fold)."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = np.zeros(len(data.labels))
    folds = np.zeros(len(data.labels), dtype=int)
    for fold, (train, test) in enumerate(splitter.split(data.features, data.labels, data.groups)):
        model = make_model(balance, random_state=seed + fold, **params).fit(data.features[train], data.labels[train])
        scores[test] = model.predict_proba(data.features[test])[:, 1]
        folds[test] = fold
    return scores, folds


def category_thresholds(labels: np.ndarray, scores: np.ndarray, durations: np.ndarray) -> dict[str, float]:
    """The EER threshold per duration category (pooled threshold where a category lacks a class)."""
    _, pooled = eer_from_labels(labels, scores)
    categories = np.array([duration_category(d) for d in durations])
    thresholds = {}
    for category in CATEGORIES:
        members = categories == category
        has_both = members.any() and 0 < labels[members].sum() < members.sum()
        thresholds[category] = eer_from_labels(labels[members], scores[members])[1] if has_both else pooled
    return thresholds


def cv_summary(data: FeatureSet, scores: np.ndarray, folds: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Pooled, per-fold, per-category and per-source figures from out-of-fold scores."""
    _, pooled_threshold = eer_from_labels(data.labels, scores)
    summary: dict[str, Any] = {"pooled": binary_report(data.labels, scores, pooled_threshold)}
    summary["per_fold_eer"] = [
        eer_from_labels(data.labels[folds == f], scores[folds == f])[0] for f in np.unique(folds)
    ]
    categories = np.array([duration_category(d) for d in data.durations])
    summary["per_category"] = {
        c: binary_report(data.labels[categories == c], scores[categories == c], thresholds[c])
        for c in CATEGORIES if (categories == c).any()
    }
    systems = data.column("system")
    real = data.labels == 0
    summary["per_system_eer"] = {
        system: eer_from_labels(
            np.concatenate([np.zeros(real.sum()), np.ones((systems == system).sum())]),
            np.concatenate([scores[real], scores[systems == system]]),
        )[0]
        for system in sorted(set(systems[data.labels == 1]))
    }
    return summary


def provenance() -> dict[str, str]:
    """Library versions and the git commit, for the metadata saved beside an artefact."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a plain str: checkpoints load with weights_only=True
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
