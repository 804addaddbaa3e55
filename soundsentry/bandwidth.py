"""How much of the spectrum an upload carries: the band edge of its speech.

The shipped scorers read the 4-8 kHz band. Telephone audio (8 kHz PCM, µ-law, A-law, GSM) carries
nothing above 4 kHz, so they judge it by an absence that real and fake share, and call nearly all of
it Fake (`data/NOTES.md` item 45). :func:`band_edge_hz` measures the band; the detector reports it,
and flags speech whose edge is under :data:`BAND_LIMITED_HZ` as band-limited.

>>> band_edge_hz(samples)  # 16 kHz mono speech
7680.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soundsentry.constants import SAMPLE_RATE

#: under this band edge, the upper-band scorers have nothing to read (8 kHz audio measures 4.0-4.4 kHz,
#: MP3 and Opus at 16-128 kb/s 7.1-8.0 kHz, 16 kHz PCM 7.4-8.0 kHz)
BAND_LIMITED_HZ = 6000.0
FRAME = 400  # 25 ms
DYNAMIC_RANGE_DB = 50.0
BLOCK_FRAMES = 4096  # frames transformed at once (13 MB of float64)


def band_edge_hz(samples: np.ndarray, spans: Sequence[tuple[float, float]] | None = None,
                 rate: int = SAMPLE_RATE) -> float:
    """The highest frequency whose long-term power is within 50 dB of the spectrum's peak, over the
    frames of ``spans`` (seconds; default: every frame) that are within 35 dB of the loudest."""
    pieces = [samples] if spans is None else [samples[int(a * rate):int(b * rate)] for a, b in spans]
    frames = [p[: len(p) // FRAME * FRAME].reshape(-1, FRAME) for p in pieces if len(p) >= FRAME]
    if not frames:
        return 0.0
    # in blocks of frames: an hour of speech at once took 1.3 GB of float64 temporaries
    levels = [10 * np.log10(np.mean(f.astype(np.float64) ** 2, axis=1) + 1e-12) for f in frames]
    floor = max(float(level.max()) for level in levels) - 35.0
    window = np.hanning(FRAME)
    power = np.zeros(FRAME // 2 + 1)
    for piece, level in zip(frames, levels, strict=True):
        for first in range(0, len(piece), BLOCK_FRAMES):
            block = piece[first : first + BLOCK_FRAMES][level[first : first + BLOCK_FRAMES] > floor]
            if len(block):
                power += (np.abs(np.fft.rfft(block.astype(np.float64) * window, axis=1)) ** 2).sum(axis=0)
    if power.max() <= 0:
        return 0.0
    freqs = np.fft.rfftfreq(FRAME, 1 / rate)
    return float(freqs[np.flatnonzero(power > power.max() * 10 ** (-DYNAMIC_RANGE_DB / 10))[-1]])
