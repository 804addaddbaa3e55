"""The CNN-Transformer member: log-power spectrogram windows of a band through small CNN-Transformers
(:mod:`soundsentry.models.spectral`, :mod:`soundsentry.models.cnn_transformer`); artefact ``cnn_transformer.pt``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.errors import ModelLoadError
from soundsentry.models.spectral import SpectralScorer
from soundsentry.scorers.base import LoadContext
from soundsentry.speech.segments import ScoringSegment, crop_samples

CNN_FILE = "cnn_transformer.pt"


class CnnScorer:
    name = "cnn"
    files = (CNN_FILE,)
    unused = {"cnn_transformer": "not used"}
    stands_alone = False
    thresholds = None  # scores inside a fusion only

    def __init__(self, model: SpectralScorer) -> None:
        self.model = model

    @classmethod
    def load(cls, directory: Path, context: LoadContext = LoadContext()) -> CnnScorer:
        path = directory / CNN_FILE
        try:
            return cls(SpectralScorer.load(path))
        except Exception as error:  # a missing or corrupt artefact is a load error, reported at start-up
            raise ModelLoadError(f"{path}: cannot load the CNN-Transformer the fusion needs ({error}); "
                                 "restore it (`git checkout -- data/`) or retrain it") from error

    def score(self, samples: np.ndarray, segments: Sequence[ScoringSegment]) -> np.ndarray:
        crops = [crop_samples(samples, s.start, s.end) for s in segments]
        return np.asarray(self.model.score_many(crops), dtype=np.float64)

    def models(self) -> dict[str, str]:
        return {"cnn_transformer": f"{self.model.features.kind} {self.model.features.key}"}

    def info(self) -> dict[str, Any]:
        return self.model.info()
