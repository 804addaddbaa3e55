"""TKAN features: the top-k activated neurons of each layer of a speaker network (DeepSonar).

DeepSonar (Wang et al., ACM MM 2020) observes that a speaker-recognition network's layer-wise
neuron behaviour differs between real and synthetic voices, and summarises each layer by its most
activated neurons. Here each layer's activations are averaged over time (and over the 1.6 s
windows of the segment), then reduced to its top-k neurons:

- ``reduction="values"``: the k largest activations, sorted (k numbers per layer);
- ``reduction="masked"``: all 256 neurons, zero except the top k, which keep their activation
  (neuron identity preserved, 256 numbers per layer).

With ``stats=("mean", "std")`` the same reduction is also applied to the time standard deviation,
at the neurons the mean selected. A :class:`FeatureSpec` names one definition; its ``key`` is
stored with every trained artefact so that features and classifier cannot be mixed up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from soundsentry.encoder import LAYER_NAMES, WindowActivations


@dataclass(frozen=True)
class FeatureSpec:
    network: str = "resemblyzer-0.1.4"
    layers: tuple[str, ...] = LAYER_NAMES
    k: int = 32
    reduction: str = "values"  # "values" | "masked"
    stats: tuple[str, ...] = ("mean",)  # subset of ("mean", "std")
    hop_s: float = 1.6  # window hop when scoring a segment

    def __post_init__(self) -> None:
        unknown = set(self.layers) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}; choose from {LAYER_NAMES}")
        if self.reduction not in ("values", "masked"):
            raise ValueError(f"reduction must be 'values' or 'masked', got {self.reduction!r}")
        if not set(self.stats) <= {"mean", "std"} or "mean" not in self.stats:
            raise ValueError(f"stats must contain 'mean' and may add 'std', got {self.stats}")
        if not 1 <= self.k <= 256:
            raise ValueError(f"k must be in 1..256, got {self.k}")

    @property
    def dimension(self) -> int:
        per_layer = self.k if self.reduction == "values" else 256
        return per_layer * len(self.layers) * len(self.stats)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureSpec:
        values = dict(values)
        values["layers"] = tuple(values["layers"])
        values["stats"] = tuple(values["stats"])
        return cls(**values)

    @property
    def key(self) -> str:
        """A short stable hash of the definition."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reduce(mean: np.ndarray, other: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one layer: (256,) mean and (256,) companion statistic → two (dim,) vectors."""
    order = np.argsort(mean)[::-1][: spec.k]
    if spec.reduction == "values":
        return mean[order], other[order]
    masked_mean = np.zeros_like(mean)
    masked_other = np.zeros_like(other)
    masked_mean[order] = mean[order]
    masked_other[order] = other[order]
    return masked_mean, masked_other


def tkan_features(activations: WindowActivations, spec: FeatureSpec) -> np.ndarray:
    """Pool the windows of one segment and reduce each layer to its top-k neurons.

    Parameters
    ----------
    activations : the segment's windows, ``layer_mean``/``layer_std`` of shape (window, layer, 256)
    spec : which layers, k, reduction and statistics

    Returns
    -------
    features : (spec.dimension,) float32
    """
    if len(activations) == 0:
        raise ValueError("no windows to pool: the segment is empty")
    mean = activations.layer_mean.mean(axis=0)  # (layer, 256)
    std = activations.layer_std.mean(axis=0)
    parts_mean, parts_std = [], []
    for name in spec.layers:
        index = LAYER_NAMES.index(name)
        reduced_mean, reduced_std = _reduce(mean[index], std[index], spec)
        parts_mean.append(reduced_mean)
        parts_std.append(reduced_std)
    parts = parts_mean + (parts_std if "std" in spec.stats else [])
    return np.concatenate(parts).astype(np.float32)
