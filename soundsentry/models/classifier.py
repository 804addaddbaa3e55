"""The scaled TKAN classifier: StandardScaler + a small MLP, and the artefacts that ship it.

:class:`MLPClassifierTorch` is a scikit-learn estimator (``fit`` returns ``self``, learned state
ends in ``_``, scores from ``predict_proba``) wrapping :class:`TkanMLP`, so that cross-validation
uses ``make_pipeline(StandardScaler(), MLPClassifierTorch())`` and the scaler never sees test folds.

Shipped artefacts (``data/``):

- ``feature_scaler.pkl`` — joblib: ``{"scaler": StandardScaler, "feature_spec": dict, "feature_key": str}``
- ``trained_model.pth`` — torch: ``{"state_dict", "model_config", "feature_spec", "feature_key",
  "thresholds", "metadata"}``

:func:`load_tkan_artifacts` refuses a pair whose feature definitions differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from soundsentry.errors import ModelLoadError
from soundsentry.models.tkan import FeatureSpec

SCALER_FILE = "feature_scaler.pkl"
MODEL_FILE = "trained_model.pth"


class TkanMLP(nn.Module):
    """forward(features: (batch, dimension)) -> logits of fake: (batch,)."""

    def __init__(self, dimension: int, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dimension, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


class MLPClassifierTorch(ClassifierMixin, BaseEstimator):
    """Binary MLP classifier (label 1 = fake) trained with Adam on class-balanced BCE."""

    def __init__(
        self,
        hidden: int = 128,
        dropout: float = 0.3,
        epochs: int = 60,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 64,
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPClassifierTorch:
        X, y = validate_data(self, X, y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"need exactly two classes, got {self.classes_}")
        generator = torch.Generator().manual_seed(self.random_state)
        torch.manual_seed(self.random_state)
        self.module_ = TkanMLP(X.shape[1], self.hidden, self.dropout)
        features = torch.as_tensor(X, dtype=torch.float32)
        targets = torch.as_tensor(y_index, dtype=torch.float32)
        positives = float(targets.sum())
        pos_weight = torch.tensor((len(targets) - positives) / max(positives, 1.0))
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        optimiser = torch.optim.Adam(
            self.module_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        self.module_.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for batch in torch.split(order, self.batch_size):
                optimiser.zero_grad()
                loss = loss_fn(self.module_(features[batch]), targets[batch])
                loss.backward()
                optimiser.step()
        self.module_.eval()
        return self

    @torch.inference_mode()
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False)
        return self.module_(torch.as_tensor(X, dtype=torch.float32)).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        fake = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - fake, fake], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


@dataclass
class TkanArtifacts:
    """A fitted scaler and MLP for one feature definition, with their decision thresholds."""

    spec: FeatureSpec
    scaler: StandardScaler
    mlp: TkanMLP
    model_config: dict[str, Any]
    thresholds: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)

    @torch.inference_mode()
    def predict_fake(self, features: np.ndarray) -> np.ndarray:
        """(segment, dimension) features → (segment,) P(fake)."""
        scaled = self.scaler.transform(np.atleast_2d(features)).astype(np.float32)
        return torch.sigmoid(self.mlp(torch.from_numpy(scaled))).numpy()


def save_tkan_artifacts(
    directory: Path,
    *,
    spec: FeatureSpec,
    scaler: StandardScaler,
    classifier: MLPClassifierTorch,
    thresholds: dict[str, float],
    metadata: dict[str, Any],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(
        {"scaler": scaler, "feature_spec": spec.to_dict(), "feature_key": spec.key},
        directory / SCALER_FILE,
    )
    torch.save(
        {
            "state_dict": classifier.module_.state_dict(),
            "model_config": {"dimension": spec.dimension, "hidden": classifier.hidden,
                             "dropout": classifier.dropout},
            "feature_spec": spec.to_dict(),
            "feature_key": spec.key,
            "thresholds": {name: float(value) for name, value in thresholds.items()},
            # plain JSON types only, so that torch.load(weights_only=True) accepts the file
            "metadata": json.loads(json.dumps(metadata, default=float)),
        },
        directory / MODEL_FILE,
    )


def load_tkan_artifacts(directory: Path) -> TkanArtifacts:
    """Load our own scaler + classifier pair; raise :class:`ModelLoadError` if anything is off."""
    scaler_path, model_path = directory / SCALER_FILE, directory / MODEL_FILE
    for path in (scaler_path, model_path):
        if not path.is_file():
            raise ModelLoadError(
                f"Model file {path} is missing. Restore it from git (`git checkout -- data/`) "
                "or retrain with `python -m scripts.train_classifier`."
            )
    try:
        scaler_bundle = joblib.load(scaler_path)
        checkpoint = torch.load(model_path, map_location="cpu", weights_only=True)
        spec = FeatureSpec.from_dict(checkpoint["feature_spec"])
        if scaler_bundle["feature_key"] != checkpoint["feature_key"] or spec.key != checkpoint["feature_key"]:
            raise ModelLoadError(
                f"{scaler_path.name} was fitted for features {scaler_bundle['feature_key']} but "
                f"{model_path.name} expects {checkpoint['feature_key']}: the pair does not belong "
                "together. Ship the scaler and classifier written by the same training run."
            )
        config = checkpoint["model_config"]
        mlp = TkanMLP(config["dimension"], config["hidden"], config["dropout"])
        mlp.load_state_dict(checkpoint["state_dict"])
        mlp.eval()
        scaler = scaler_bundle["scaler"]
        if getattr(scaler, "n_features_in_", None) != spec.dimension:
            raise ModelLoadError(
                f"{scaler_path.name} expects {getattr(scaler, 'n_features_in_', '?')} features, "
                f"the feature definition gives {spec.dimension}."
            )
    except ModelLoadError:
        raise
    except Exception as error:  # corrupt pickle / checkpoint: any library error means unusable
        raise ModelLoadError(f"Cannot read the model files in {directory}: {error}") from error
    return TkanArtifacts(
        spec=spec,
        scaler=scaler,
        mlp=mlp,
        model_config=config,
        thresholds=checkpoint["thresholds"],
        metadata=checkpoint.get("metadata", {}),
    )
