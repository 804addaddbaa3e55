"""Score fusion and calibration: the members' P(fake) → one calibrated P(fake) and its thresholds.

Members: ``tkan`` (TKAN classifier), ``cnn`` (CNN-Transformer), ``flatness`` (upper-band flatness,
:mod:`soundsentry.models.flatness`).

The fusion is a logistic regression on the members' logits (``z = b + Σ w_m · logit(p_m)``), which
is at once the combination and its Platt calibration. It is fitted by ``scripts.train_fusion`` on
scores of held-out training speakers that neither member was trained on — never on the devset —
and the decision thresholds per duration category are the EER points of the fused held-out scores.

Artefact: ``data/fusion.json``::

    {"format": "soundsentry.fusion/1", "members": ["tkan", "cnn"], "weights": [..], "bias": ..,
     "thresholds": {"very_short": .., "short": .., "normal": ..}, "metadata": {...}}

A member whose weight is 0 is not computed at run time (see :attr:`Fusion.active_members`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.errors import ModelLoadError
from soundsentry.hashing import file_sha256

FUSION_FILE = "fusion.json"
FORMAT = "soundsentry.fusion/1"
MEMBERS = ("tkan", "cnn", "flatness")
_EPS = 1e-6


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class Fusion:
    members: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    thresholds: Mapping[str, float]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.members) - set(MEMBERS)
        if unknown or len(self.members) != len(self.weights) or not self.members:
            raise ValueError(f"fusion needs weights for members among {MEMBERS}; got {self.members} / {self.weights}")

    @property
    def active_members(self) -> tuple[str, ...]:
        """Members with a non-zero weight: the only ones the detector has to compute."""
        return tuple(m for m, w in zip(self.members, self.weights, strict=True) if w != 0.0)

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """(segment,) calibrated P(fake) from each active member's (segment,) P(fake)."""
        z = np.full(np.shape(scores[self.active_members[0]]), self.bias, dtype=np.float64)
        for member, weight in zip(self.members, self.weights, strict=True):
            if weight != 0.0:
                z = z + weight * logit(scores[member])
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "members": list(self.members), "weights": list(self.weights), "bias": self.bias,
                "thresholds": dict(self.thresholds), "metadata": dict(self.metadata)}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Fusion:
        try:
            values = json.loads(path.read_text())
            if values.get("format") != FORMAT:
                raise ValueError(f"format {values.get('format')!r}, expected {FORMAT!r}")
            return cls(members=tuple(values["members"]), weights=tuple(float(w) for w in values["weights"]),
                       bias=float(values["bias"]), thresholds={k: float(v) for k, v in values["thresholds"].items()},
                       metadata=values.get("metadata", {}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path}: unreadable fusion artefact ({error}); retrain it with "
                                 "`python -m scripts.train_fusion` or remove it to score with TKAN alone") from error


def check_member_artefacts(fusion: Fusion, directory: Path) -> None:
    """Refuse member artefacts other than the ones the fusion was fitted with (``metadata.artefacts``:
    file name → SHA-256): its weights and thresholds would not fit them."""
    for name, expected in fusion.metadata.get("artefacts", {}).items():
        path = directory / name
        if path.is_file() and file_sha256(path) != expected:
            raise ModelLoadError(f"{path} is not the model {FUSION_FILE} was fitted with; refit the fusion "
                                 "(`python -m scripts.train_fusion`) after retraining a member")


def fit_fusion(
    members: Sequence[str], scores: np.ndarray, labels: np.ndarray, *, c: float = 1.0
) -> tuple[tuple[float, ...], float]:
    """Weights and bias of a class-balanced logistic regression on the members' logits.

    ``scores``: (item, member) P(fake) of held-out items; ``labels``: (item,) 1 = fake. Balanced
    classes make 0.5 the equal-prior decision point; the per-category thresholds are then set apart.
    """
    from sklearn.linear_model import LogisticRegression

    if scores.ndim != 2 or scores.shape[1] != len(members):
        raise ValueError(f"scores must be (item, {len(members)}), got {scores.shape}")
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    model.fit(logit(scores), labels)
    return tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0])
