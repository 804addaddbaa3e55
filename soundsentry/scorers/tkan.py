"""The TKAN member: top-k activations of a speaker network's layers, scaled, through a small MLP.

Its artefacts are the scaler and classifier ``scripts.train_classifier`` writes (``feature_scaler.pkl``,
``trained_model.pth``, :mod:`soundsentry.models.classifier`); the speaker network it reads is the one their
feature definition names (:mod:`soundsentry.models.layers`), checked against the checkpoint it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.errors import ModelLoadError
from soundsentry.models.classifier import MODEL_FILE, SCALER_FILE, TkanArtifacts, load_tkan_artifacts
from soundsentry.models.layers import TkanNetwork
from soundsentry.models.speaker import load_tkan_network
from soundsentry.models.tkan import FeatureSpec, segment_features
from soundsentry.scorers.base import LoadContext
from soundsentry.speech.segments import ScoringSegment


class TkanScorer:
    """``predict_fake``: (segment, spec.dimension) features → (segment,) P(fake) (the shipped scaler + MLP,
    or a model refitted for fusion training); ``network`` must be the one ``spec.network`` names."""

    name = "tkan"
    files = (SCALER_FILE, MODEL_FILE)
    unused = {"tkan_network": "not used", "tkan_classifier": "not used"}
    stands_alone = True  # the classifier carries thresholds: single-member mode

    def __init__(self, network: TkanNetwork, spec: FeatureSpec, predict_fake: Callable[[np.ndarray], np.ndarray],
                 *, thresholds: Mapping[str, float] | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        if network.name != spec.network:
            raise ValueError(f"the TKAN classifier reads {spec.network} but the network given is {network.name}")
        self.network = network
        self.spec = spec
        self.predict_fake = predict_fake
        self.thresholds = dict(thresholds) if thresholds is not None else None
        self.metadata = dict(metadata or {})
        self._network_text = _describe_network(network)  # once: it goes into every report

    @classmethod
    def from_artifacts(cls, artifacts: TkanArtifacts, network: TkanNetwork) -> TkanScorer:
        return cls(network, artifacts.spec, artifacts.predict_fake, thresholds=artifacts.thresholds,
                   metadata=artifacts.metadata)

    @classmethod
    def load(cls, directory: Path, context: LoadContext = LoadContext()) -> TkanScorer:
        """The scaler and classifier in ``directory`` and the network they read (``context.xvector_dir``,
        ``context.resemblyzer``); refuse other network weights than their training run's. Raises
        :class:`ModelLoadError`."""
        artifacts = load_tkan_artifacts(directory)
        network = load_tkan_network(artifacts.spec.network, xvector_dir=context.xvector_dir,
                                    resemblyzer=context.resemblyzer)
        recorded = artifacts.metadata.get("speaker_network", {})
        trained_on = recorded.get("checkpoint_sha256")
        if network.weights_id is not None and trained_on and trained_on != network.weights_id:
            checkpoint = network.describe()["checkpoint"]
            raise ModelLoadError(
                f"{checkpoint} (sha256 {network.weights_id[:12]}…) is not the {network.name} checkpoint the TKAN "
                f"classifier in {directory} was trained with (sha256 {trained_on[:12]}…, then at "
                f"{recorded.get('checkpoint', '?')}): put that checkpoint at {checkpoint}, or retrain the "
                "classifier on features extracted with this one."
            )
        return cls.from_artifacts(artifacts, network)

    def score(self, samples: np.ndarray, segments: Sequence[ScoringSegment]) -> np.ndarray:
        if not segments:
            return np.zeros(0)
        features = segment_features(self.network, self.spec, samples, list(segments))
        return np.asarray(self.predict_fake(features), dtype=np.float64)

    def models(self) -> dict[str, str]:
        return {"tkan_network": self._network_text, "tkan_classifier": f"mlp {self.spec.key}"}

    def info(self) -> dict[str, Any]:
        return {"feature_spec": self.spec.to_dict(), "training": self.metadata}


def _describe_network(network: TkanNetwork) -> str:
    """The network, with its checkpoint when the name does not pin the weights."""
    if network.weights_id is None:
        return network.name
    return f"{network.name} ({network.describe()['checkpoint']}, sha256 {network.weights_id[:12]})"
