"""Load the speaker network TKAN reads, by name (:mod:`soundsentry.models.layers` says what each exposes)."""

from __future__ import annotations

from pathlib import Path

from soundsentry.models.layers import RESEMBLYZER, TkanNetwork, resolve_network_name
from soundsentry.models.resemblyzer import SpeakerNetwork
from soundsentry.models.xvector import DEFAULT_XVECTOR_DIR, load_xvector


def load_tkan_network(
    name: str, *, xvector_dir: Path | None = None, resemblyzer: SpeakerNetwork | None = None
) -> TkanNetwork:
    """Load the speaker network ``name`` (full name or alias) for TKAN.

    Parameters
    ----------
    xvector_dir
        Directory holding the x-vector's ``pytorch_model.bin`` (default ``model/embedding``).
    resemblyzer
        An already loaded Resemblyzer network to reuse (the detector shares it with the diarizer).

    Raises
    ------
    ModelLoadError
        The network's weights are missing or do not load; the message says what to put where.
    """
    full = resolve_network_name(name)
    if full == RESEMBLYZER.name:
        return resemblyzer if resemblyzer is not None else SpeakerNetwork()
    return load_xvector(xvector_dir or DEFAULT_XVECTOR_DIR)
