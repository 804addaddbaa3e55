"""The scorer contract (see :mod:`soundsentry.scorers`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from soundsentry.speech.segments import ScoringSegment

if TYPE_CHECKING:
    from soundsentry.models.resemblyzer import SpeakerNetwork


class Scorer(Protocol):
    """P(fake) of scoring segments; see the module docstring."""

    name: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # in its artefact directory
    unused: ClassVar[Mapping[str, str]]  # report ``models`` lines when the fusion does not weigh it
    stands_alone: ClassVar[bool]  # carries thresholds of its own: may score without a fusion
    thresholds: Mapping[str, float] | None

    @classmethod
    def load(cls, directory: Path, context: LoadContext) -> Scorer: ...

    def score(self, samples: np.ndarray, segments: Sequence[ScoringSegment]) -> np.ndarray: ...

    def models(self) -> dict[str, str]: ...

    def info(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadContext:
    """What loading may need beyond a member's directory.

    ``directories``: a member's artefacts from elsewhere than the fusion's directory (e.g.
    ``{"tkan": Path("model/tkan-xvector")}``); ``xvector_dir``: pyannote's x-vector checkpoint for TKAN
    artefacts that read it; ``resemblyzer``: an already loaded Resemblyzer to share (the embedded
    diarizer's)."""

    directories: Mapping[str, Path] = field(default_factory=dict)
    xvector_dir: Path | None = None
    resemblyzer: SpeakerNetwork | None = None
