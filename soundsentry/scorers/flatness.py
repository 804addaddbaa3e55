"""The upper-band flatness member: spectral flatness of four sub-bands of 4-8 kHz through a logistic
regression (:mod:`soundsentry.models.flatness`); artefact ``flatness.joblib``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.models.flatness import FLATNESS_FILE, FlatnessScorer
from soundsentry.scorers.base import LoadContext
from soundsentry.speech.segments import ScoringSegment, crop_samples


class BandFlatnessScorer:
    name = "flatness"
    files = (FLATNESS_FILE,)
    unused = {"flatness": "not used"}
    stands_alone = False
    thresholds = None  # scores inside a fusion only

    def __init__(self, model: FlatnessScorer) -> None:
        self.model = model

    @classmethod
    def load(cls, directory: Path, context: LoadContext = LoadContext()) -> BandFlatnessScorer:
        return cls(FlatnessScorer.load(directory / FLATNESS_FILE))

    def score(self, samples: np.ndarray, segments: Sequence[ScoringSegment]) -> np.ndarray:
        crops = [crop_samples(samples, s.start, s.end) for s in segments]
        return np.asarray(self.model.score_many(crops), dtype=np.float64)

    def models(self) -> dict[str, str]:
        return {"flatness": "4 sub-bands of 4-8 kHz, logistic regression"}

    def info(self) -> dict[str, Any]:
        return self.model.info()
