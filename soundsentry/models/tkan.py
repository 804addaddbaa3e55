"""TKAN features: the top-k activated neurons of each layer of a speaker network (DeepSonar).

DeepSonar (Wang et al., ACM MM 2020) observes that a speaker-recognition network's layer-wise
neuron behaviour differs between real and synthetic voices, and summarises each layer by its most
activated neurons. Here each layer's activations are averaged over time (and over the windows of
the segment), then reduced to its top-k neurons:

- ``reduction="values"``: the k largest activations, sorted (k numbers per layer);
- ``reduction="masked"``: all the layer's neurons, zero except the top k, which keep their
  activation (neuron identity preserved, as many numbers as the layer is wide).

The spec names its speaker network (:mod:`soundsentry.models.layers`: the shipped Resemblyzer encoder,
or pyannote's x-vector); its layers are checked against that network's layers, and k against each
chosen layer's width.

With ``stats=("mean", "std")`` the same reduction is also applied to the time standard deviation,
at the neurons the mean selected. A :class:`FeatureSpec` names one definition; its ``key`` is
stored with every trained artefact so that features and classifier cannot be mixed up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from soundsentry.models.layers import DEFAULT_NETWORK, NetworkLayout, TkanNetwork, WindowActivations, network_layout
from soundsentry.speech.segments import ScoringSegment, crop_samples


@dataclass(frozen=True)
class FeatureSpec:
    """One TKAN feature definition.

    ``network`` is a full network name (``resemblyzer-0.1.4``, ``pyannote-xvector-sincnet``);
    ``layers`` defaults to all of that network's layers.
    """

    network: str = DEFAULT_NETWORK
    layers: tuple[str, ...] | None = None  # None: every layer of the network
    k: int = 32
    reduction: str = "values"  # "values" | "masked"
    stats: tuple[str, ...] = ("mean",)  # subset of ("mean", "std")
    hop_s: float = 1.6  # window hop when scoring a segment

    def __post_init__(self) -> None:
        layout = network_layout(self.network)  # ValueError for an unknown network
        if layout.name != self.network:  # an alias: store the full name, which the key hashes
            object.__setattr__(self, "network", layout.name)
        if self.layers is None:
            object.__setattr__(self, "layers", layout.layer_names)
        if not self.layers:
            raise ValueError("choose at least one layer")
        unknown = [name for name in self.layers if name not in layout.layer_names]
        if unknown:
            raise ValueError(f"unknown layers {unknown} for {layout.name}; choose from {layout.layer_names}")
        if self.reduction not in ("values", "masked"):
            raise ValueError(f"reduction must be 'values' or 'masked', got {self.reduction!r}")
        if not set(self.stats) <= {"mean", "std"} or "mean" not in self.stats:
            raise ValueError(f"stats must contain 'mean' and may add 'std', got {self.stats}")
        narrowest = min(self.layers, key=layout.width)
        if not 1 <= self.k <= layout.width(narrowest):
            raise ValueError(
                f"k must be in 1..{layout.width(narrowest)} (layer {narrowest!r} of {layout.name} has "
                f"{layout.width(narrowest)} neurons), got {self.k}"
            )

    @property
    def layout(self) -> NetworkLayout:
        return network_layout(self.network)

    @property
    def dimension(self) -> int:
        layout = self.layout
        per_stat = sum(self.k if self.reduction == "values" else layout.width(name) for name in self.layers)
        return per_stat * len(self.stats)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureSpec:
        values = dict(values)
        if values.get("layers") is not None:
            values["layers"] = tuple(values["layers"])
        if "stats" in values:
            values["stats"] = tuple(values["stats"])
        return cls(**values)

    @property
    def key(self) -> str:
        """A short stable hash of the definition."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reduce(mean: np.ndarray, other: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one layer: (width,) mean and (width,) companion statistic → two (k or width,) vectors."""
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
    activations : the segment's windows, ``layer_mean``/``layer_std`` of shape (window, layer, width),
        from the network ``spec`` names
    spec : which layers, k, reduction and statistics

    Returns
    -------
    features : (spec.dimension,) float32
    """
    if len(activations) == 0:
        raise ValueError("no windows to pool: the segment is empty")
    if activations.network != spec.network:
        raise ValueError(
            f"the activations come from {activations.network} but the feature definition reads "
            f"{spec.network}: analyse the audio with the network the spec names"
        )
    parts_mean, parts_std = [], []
    for name in spec.layers:
        mean, std = activations.layer(name)  # (window, width)
        reduced_mean, reduced_std = _reduce(mean.mean(axis=0), std.mean(axis=0), spec)
        parts_mean.append(reduced_mean)
        parts_std.append(reduced_std)
    parts = parts_mean + (parts_std if "std" in spec.stats else [])
    return np.concatenate(parts).astype(np.float32)


def segment_features(
    network: TkanNetwork, spec: FeatureSpec, samples: np.ndarray, segments: list[ScoringSegment]
) -> np.ndarray:
    """(segment, spec.dimension) TKAN features, one row per scoring segment.

    ``network`` must be the one ``spec.network`` names (:func:`~soundsentry.models.layers.load_tkan_network`).
    """
    rows = [
        tkan_features(network.analyse(crop_samples(samples, s.start, s.end), hop_s=spec.hop_s), spec)
        for s in segments
    ]
    return np.stack(rows) if rows else np.zeros((0, spec.dimension), dtype=np.float32)
