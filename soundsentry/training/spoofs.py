"""Vocoder re-synthesis of real speech: training fakes with the speakers and words of the reals.

The LibriSpeech reals in ``../shared/corpus`` have no fakes of their own, so a detector trained on
them could learn "LibriSpeech accent / recording room" instead of "synthetic". Re-synthesising each
real utterance through a vocoder gives fakes with the same speakers and the same words; the only
thing that differs is the synthesis, which is what the detector should learn.

Three different DSP vocoder families, so no single artefact stands for "fake":

- :func:`griffin_lim_resynthesis` — magnitude (optionally mel) spectrogram, phase recovered by
  Griffin-Lim (torchaudio): the phase artefacts of early neural TTS front-ends.
- :func:`world_resynthesis` — WORLD (pyworld): F0, spectral envelope and aperiodicity, optionally
  coded to a low-dimensional envelope as a statistical-parametric TTS would.
- :func:`lpc_resynthesis` — frame-wise linear prediction with a pulse/noise excitation driven by a
  pitch track (LPC-10 style), or a decimated and quantised residual (RELP style).

:func:`lpcnet_resynthesis` adds a neural one, LPCNet from Debian's libcodec2 (``make_spoofs --methods
lpcnet``; not in the shipped recipe: spliced like the others it cost the devset 13-24 EER points,
data/NOTES.md item 53).

:func:`band_splice` then keeps a fake's artefacts above a cut-off only: the real's own spectrum below
it, the re-synthesis above. Vocoders made here are far cruder than the ones a detector meets in the
wild, and a detector trained on whole-band re-synthesis learns their gross low-band faults; spliced
fakes differ from their reals only where neural vocoders are known to fail too (the harmonic
structure of the upper band), which is what carried to unseen generators on the devset
(see data/MODEL_CARD.md).

Every function takes and returns 16 kHz mono float32 ``(time,)`` arrays, has no I/O, and returns audio
of the input's length, its RMS, finite and within [-1, 1]. ``seed`` makes the random parts
reproducible (WORLD is deterministic and ignores it; LPCNet ignores it and is not
reproducible sample for sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import signal

from soundsentry.constants import SAMPLE_RATE

SpoofMethod = Callable[..., np.ndarray]


# --------------------------------------------------------------------------------------------
# shared helpers


def _as_float64(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio shaped (time,), got shape {x.shape}")
    return np.ascontiguousarray(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _finish(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Length of ``reference``, its RMS, finite, clipped to [-1, 1], float32."""
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    n = len(reference)
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    y = y[:n]
    target, current = _rms(reference), _rms(y)
    if current > 1e-12 and target > 0.0:
        y = y * (target / current)
    else:
        y = np.zeros(n)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _is_silent(x: np.ndarray) -> bool:
    return x.size == 0 or _rms(x) < 1e-7


def log_spectral_distance(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 512,
    hop_length: int = 128,
    dynamic_range_db: float = 60.0,
) -> float:
    """Log-spectral distance in dB between two signals of (about) the same length.

    Per frame, the RMS over frequency of the difference of the power spectra in dB; averaged over the
    frames where the reference is within ``dynamic_range_db`` of its loudest frame, with both power
    spectra floored at ``dynamic_range_db`` below the reference's peak bin (so silence and empty bands
    do not dominate). Both signals are RMS-normalised first: level differences do not count.
    """
    a = _as_float64(reference)
    b = _as_float64(test)
    n = min(len(a), len(b))
    if n < n_fft:
        raise ValueError(f"signals too short for n_fft={n_fft}: {n} samples")
    a, b = a[:n], b[:n]
    a = a / max(_rms(a), 1e-12)
    b = b / max(_rms(b), 1e-12)
    kwargs: dict[str, Any] = dict(fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop_length)
    _, _, sa = signal.stft(a, **kwargs)
    _, _, sb = signal.stft(b, **kwargs)
    pa = np.abs(sa) ** 2
    pb = np.abs(sb) ** 2
    floor = max(float(pa.max()), 1e-20) * 10.0 ** (-dynamic_range_db / 10.0)
    pa = np.maximum(pa, floor)
    pb = np.maximum(pb, floor)
    diff = 10.0 * np.log10(pa) - 10.0 * np.log10(pb)
    per_frame = np.sqrt(np.mean(diff**2, axis=0))
    energy_db = 10.0 * np.log10(pa.sum(axis=0))
    keep = energy_db >= energy_db.max() - dynamic_range_db
    return float(per_frame[keep].mean())


# --------------------------------------------------------------------------------------------
# Griffin-Lim


def griffin_lim_resynthesis(
    samples: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 1024,
    hop_length: int = 256,
    win_length: int | None = None,
    n_iter: int = 32,
    n_mels: int | None = 80,
    momentum: float = 0.99,
    seed: int = 0,
) -> np.ndarray:
    """Keep the STFT magnitude, throw the phase away, and recover a phase by Griffin-Lim.

    With ``n_mels`` (default 80, the usual TTS acoustic feature: 1024-point FFT, hop 256, Slaney mel
    filters over 0-8 kHz) the power spectrogram first goes through a mel filterbank and back by least
    squares, losing the fine harmonic structure the way a TTS front-end's mel spectrogram does;
    ``n_mels=None`` keeps the linear magnitude (phase artefacts only). Random initial phase from
    ``seed``; torch's global random state is left as it was.
    """
    import torch
    import torchaudio

    x = _as_float64(samples)
    if _is_silent(x):
        return np.zeros(len(x), dtype=np.float32)
    padded = np.pad(x, (0, max(0, n_fft - len(x))))  # reflect padding needs > n_fft / 2 samples
    wav = torch.from_numpy(padded.astype(np.float32))
    n_stft = n_fft // 2 + 1
    spectrogram = torchaudio.transforms.Spectrogram(
        n_fft=n_fft, win_length=win_length, hop_length=hop_length, power=2.0
    )
    with torch.no_grad():
        power = spectrogram(wav)  # (freq, frames)
        if n_mels:
            mel_kwargs: dict[str, Any] = dict(
                sample_rate=sample_rate,
                f_min=0.0,
                f_max=sample_rate / 2,
                norm="slaney",
                mel_scale="slaney",
            )
            mel = torchaudio.transforms.MelScale(n_mels=n_mels, n_stft=n_stft, **mel_kwargs)(power)
            inverse = torchaudio.transforms.InverseMelScale(
                n_stft=n_stft, n_mels=n_mels, driver="gelsd", **mel_kwargs
            )
            power = inverse(mel)
        griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=n_fft,
            n_iter=n_iter,
            win_length=win_length,
            hop_length=hop_length,
            power=2.0,
            momentum=momentum,
            length=len(padded),
            rand_init=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            y = griffin_lim(power).numpy()
    return _finish(y, x)


# --------------------------------------------------------------------------------------------
# WORLD


def world_resynthesis(
    samples: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    f0_method: str = "harvest",
    frame_period: float = 5.0,
    f0_floor: float = 71.0,
    f0_ceil: float = 800.0,
    envelope_dims: int | None = 60,
    code_aperiodicity: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Analyse with WORLD (F0, spectral envelope, aperiodicity) and synthesise from the parameters.

    ``f0_method``: ``"harvest"`` (robust, slower) or ``"dio"`` (DIO refined by StoneMask).
    ``envelope_dims``: code the CheapTrick envelope to that many mel-cepstrum-like coefficients and
    decode it again (60 is a typical statistical-parametric TTS setting; ``None`` keeps the full
    envelope). ``code_aperiodicity`` likewise reduces D4C's aperiodicity to WORLD's band
    aperiodicity. ``seed`` is accepted for a uniform signature; WORLD is deterministic.
    """
    import pyworld

    del seed
    x = _as_float64(samples)
    if _is_silent(x):
        return np.zeros(len(x), dtype=np.float32)
    fs = int(sample_rate)
    if f0_method == "harvest":
        f0, times = pyworld.harvest(
            x, fs, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period
        )
    elif f0_method == "dio":
        f0, times = pyworld.dio(x, fs, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period)
        f0 = pyworld.stonemask(x, f0, times, fs)
    else:
        raise ValueError(f"f0_method must be 'harvest' or 'dio', not {f0_method!r}")
    envelope = pyworld.cheaptrick(x, f0, times, fs, f0_floor=f0_floor)
    aperiodicity = pyworld.d4c(x, f0, times, fs)
    fft_size = (envelope.shape[1] - 1) * 2
    if envelope_dims:
        coded = pyworld.code_spectral_envelope(envelope, fs, int(envelope_dims))
        envelope = pyworld.decode_spectral_envelope(np.ascontiguousarray(coded), fs, fft_size)
    if code_aperiodicity:
        coded_ap = pyworld.code_aperiodicity(aperiodicity, fs)
        aperiodicity = pyworld.decode_aperiodicity(np.ascontiguousarray(coded_ap), fs, fft_size)
    y = pyworld.synthesize(
        np.ascontiguousarray(f0),
        np.ascontiguousarray(envelope),
        np.ascontiguousarray(aperiodicity),
        fs,
        frame_period,
    )
    return _finish(y, x)


# --------------------------------------------------------------------------------------------
# LPC


def _frames(x: np.ndarray, centres: np.ndarray, length: int) -> np.ndarray:
    """Rows of ``length`` samples centred on ``centres`` (zero outside the signal)."""
    half = length // 2
    right = max(0, int(centres.max()) - half + length - len(x)) if len(centres) else 0
    padded = np.pad(x, (half, right))
    view = np.lib.stride_tricks.sliding_window_view(padded, length)
    return view[centres]  # centre c starts at x[c - half], which is padded[c]


def _autocorrelation(frames: np.ndarray, max_lag: int) -> np.ndarray:
    n_fft = 1 << int(np.ceil(np.log2(frames.shape[1] + max_lag + 1)))
    spectrum = np.fft.rfft(frames, n_fft, axis=1)
    return np.fft.irfft(np.abs(spectrum) ** 2, n_fft, axis=1)[:, : max_lag + 1]


def _levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Levinson-Durbin on rows of autocorrelations ``r`` (frames, order + 1).

    Returns the reflection coefficients (frames, order) and the final prediction error energy
    (frames,). Convention: A(z) = 1 + a1 z^-1 + ... (see :func:`_reflection_to_lpc`).
    """
    n = r.shape[0]
    a = np.zeros((n, order + 1))
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    reflection = np.zeros((n, order))
    for i in range(1, order + 1):
        acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1 : 0 : -1], axis=1)
        k = -acc / error
        k = np.clip(k, -0.9999, 0.9999)
        previous = a.copy()
        a[:, 1:i] = previous[:, 1:i] + k[:, None] * previous[:, i - 1 : 0 : -1]
        a[:, i] = k
        error = error * (1.0 - k**2)
        reflection[:, i - 1] = k
    return reflection, error


def _reflection_to_lpc(reflection: np.ndarray) -> np.ndarray:
    """Step-up recursion: reflection coefficients (n, p) to A(z) coefficients (n, p + 1).

    Any |k| < 1 gives a minimum-phase A(z), so interpolating reflection coefficients between frames
    keeps the synthesis filter stable.
    """
    n, order = reflection.shape
    a = np.zeros((n, order + 1))
    a[:, 0] = 1.0
    for i in range(1, order + 1):
        previous = a.copy()
        k = reflection[:, i - 1]
        a[:, 1:i] = previous[:, 1:i] + k[:, None] * previous[:, i - 1 : 0 : -1]
        a[:, i] = k
    return a


def _pitch_track(
    x: np.ndarray,
    centres: np.ndarray,
    *,
    sample_rate: int,
    f0_floor: float,
    f0_ceil: float,
    voicing_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation pitch (Boersma 1993, simplified): F0 per frame (0 = unvoiced) and strength.

    The signal is high-passed at 70 Hz (recording rumble) and low-passed at 1 kHz; candidates are
    local maxima of the window-corrected normalised autocorrelation within [1/f0_ceil, 1/f0_floor].
    A frame is voiced when its best candidate is strong enough, it is not near-silent, and most of
    its energy lies below 1 kHz (fricatives are not).
    """
    fs = sample_rate
    high = signal.sosfiltfilt(signal.butter(4, 70.0, btype="highpass", fs=fs, output="sos"), x)
    low = signal.sosfiltfilt(signal.butter(4, 1000.0, fs=fs, output="sos"), high)
    length = int(round(3.0 * fs / f0_floor))
    min_lag = max(2, int(np.floor(fs / f0_ceil)))
    max_lag = min(int(np.ceil(fs / f0_floor)), length - 2)
    window = np.hanning(length)
    frames = _frames(low, centres, length)
    frames = frames - frames.mean(axis=1, keepdims=True)
    r = _autocorrelation(frames * window, max_lag + 1)
    rw = _autocorrelation(window[None, :], max_lag + 1)[0]
    normalised = (r / np.maximum(r[:, :1], 1e-12)) / (rw / rw[0])
    lags = np.arange(min_lag, max_lag + 1)
    candidates = normalised[:, min_lag : max_lag + 1]
    before = normalised[:, min_lag - 1 : max_lag]
    after = normalised[:, min_lag + 1 : max_lag + 2]
    is_peak = (candidates > before) & (candidates >= after)
    # a small cost per octave of lag avoids choosing a multiple of the true period
    score = candidates - 0.01 * np.log2(lags / min_lag)[None, :]
    score = np.where(is_peak, score, -np.inf)
    best = np.argmax(score, axis=1)
    rows = np.arange(len(best))
    has_peak = np.isfinite(score[rows, best])
    strength = np.where(has_peak, candidates[rows, best], 0.0)
    lag = lags[best].astype(np.float64)
    # parabolic interpolation of the peak
    left = before[rows, best]
    mid = candidates[rows, best]
    right = after[rows, best]
    denominator = left - 2 * mid + right
    safe = np.where(np.abs(denominator) > 1e-12, denominator, 1.0)
    shift = np.where(np.abs(denominator) > 1e-12, 0.5 * (left - right) / safe, 0.0)
    lag += np.clip(shift, -0.5, 0.5)
    f0 = fs / lag

    full = _frames(high, centres, length)
    energy = np.mean(full**2, axis=1)
    low_energy = np.mean(frames**2, axis=1)
    loud = np.sqrt(energy) > 10 ** (-40 / 20) * max(np.sqrt(np.percentile(energy, 95)), 1e-9)
    low_band = low_energy > 0.3 * energy
    voiced = has_peak & (strength > voicing_threshold) & loud & low_band
    # drop isolated voiced frames, fill isolated unvoiced ones, then smooth F0 with a median filter
    v = voiced.astype(int)
    padded = np.pad(v, 1)
    isolated_on = (v == 1) & (padded[:-2] == 0) & (padded[2:] == 0)
    isolated_off = (v == 0) & (padded[:-2] == 1) & (padded[2:] == 1)
    voiced = (voiced & ~isolated_on) | isolated_off
    f0 = signal.medfilt(np.pad(f0, 2), 5)[2:-2]  # explicit zero padding: no warning on short input
    f0 = np.where(voiced, f0, 0.0)
    return f0, np.clip(np.where(voiced, strength, 0.0), 0.0, 1.0)


def _pulse_noise_excitation(
    f0: np.ndarray,
    strength: np.ndarray,
    centres: np.ndarray,
    n: int,
    *,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unit-power excitation: a pulse train at F0 mixed with noise where voiced, noise elsewhere."""
    t = np.arange(n)
    voiced_frames = f0 > 0
    voiced = np.interp(t, centres, voiced_frames.astype(float)) >= 0.5
    if voiced_frames.any():
        f0_samples = np.interp(t, centres[voiced_frames], f0[voiced_frames])
    else:
        f0_samples = np.full(n, 100.0)
    mix = np.interp(t, centres, strength)
    phase = np.cumsum(np.where(voiced, f0_samples / sample_rate, 0.0))
    pulses = np.diff(np.floor(phase), prepend=0.0) > 0
    pulse_train = pulses * np.sqrt(sample_rate / f0_samples)
    noise = rng.standard_normal(n)
    mix = np.where(voiced, np.clip(mix, 0.5, 1.0), 0.0)
    return np.sqrt(mix) * pulse_train + np.sqrt(1.0 - mix) * noise


def lpc_resynthesis(
    samples: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    order: int = 18,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
    excitation: str = "pitch",
    pre_emphasis: float = 0.97,
    f0_floor: float = 60.0,
    f0_ceil: float = 400.0,
    voicing_threshold: float = 0.45,
    residual_decimation: int = 8,
    residual_bits: int = 4,
    subframe_ms: float = 2.5,
    seed: int = 0,
) -> np.ndarray:
    """Frame-wise LPC analysis and all-pole re-synthesis from a new excitation.

    Analysis: pre-emphasis, Hann window of ``frame_ms`` every ``hop_ms``, autocorrelation with a
    60 Hz lag window, Levinson-Durbin to ``order`` reflection coefficients. Synthesis runs the all-pole
    filter sub-frame by sub-frame with reflection coefficients and gain interpolated between frames
    (always stable), then de-emphasis.

    ``excitation``:
      - ``"pitch"`` (LPC-10 style): an autocorrelation pitch track drives a pulse train in voiced
        frames (mixed with some noise by voicing strength), white noise in unvoiced ones, scaled by
        the frame's prediction error.
      - ``"residual"`` (RELP style): the true prediction residual, low-passed and decimated by
        ``residual_decimation``, quantised to ``residual_bits`` bits per sample with a block-adaptive
        step, and brought back to full band by zero insertion (spectral folding regenerates the high
        band), energy restored per frame.
    """
    if excitation not in ("pitch", "residual"):
        raise ValueError(f"excitation must be 'pitch' or 'residual', not {excitation!r}")
    x = _as_float64(samples)
    if _is_silent(x):
        return np.zeros(len(x), dtype=np.float32)
    fs = int(sample_rate)
    rng = np.random.default_rng(seed)
    n = len(x)
    hop = max(1, int(round(hop_ms * fs / 1000)))
    win = max(order + 2, int(round(frame_ms * fs / 1000)))
    emphasised = signal.lfilter([1.0, -pre_emphasis], [1.0], x) if pre_emphasis else x.copy()

    # analysis frames centred on block boundaries 0, hop, 2*hop, ... (one more than blocks)
    n_blocks = int(np.ceil(n / hop))
    centres = np.arange(n_blocks + 1) * hop
    window = np.hanning(win)
    frames = _frames(emphasised, centres, win) * window
    r = _autocorrelation(frames, order)
    lag = np.arange(order + 1)
    r = r * np.exp(-0.5 * (2 * np.pi * 60.0 * lag / fs) ** 2)[None, :]
    r[:, 0] = r[:, 0] * (1.0 + 1e-4) + 1e-12
    reflection, error = _levinson(r, order)
    gain = np.sqrt(np.maximum(error, 0.0) / np.sum(window**2))  # residual RMS per frame

    # sub-frames: interpolate reflection coefficients and gain between neighbouring frames
    sub = max(1, int(round(subframe_ms * fs / 1000)))
    starts = np.arange(0, n, sub)
    positions = np.minimum(starts + sub / 2, n) / hop
    left = np.minimum(np.floor(positions).astype(int), n_blocks - 1)
    alpha = (positions - left)[:, None]
    sub_reflection = (1 - alpha) * reflection[left] + alpha * reflection[left + 1]
    sub_lpc = _reflection_to_lpc(sub_reflection)
    sub_gain = (1 - alpha[:, 0]) * gain[left] + alpha[:, 0] * gain[left + 1]

    if excitation == "pitch":
        f0, strength = _pitch_track(
            x,
            centres,
            sample_rate=fs,
            f0_floor=f0_floor,
            f0_ceil=f0_ceil,
            voicing_threshold=voicing_threshold,
        )
        source = _pulse_noise_excitation(f0, strength, centres, n, sample_rate=fs, rng=rng)
        gains = sub_gain
    else:
        source = _relp_excitation(
            emphasised,
            sub_lpc,
            starts,
            sub,
            order=order,
            decimation=residual_decimation,
            bits=residual_bits,
            block=hop,
        )
        gains = np.ones(len(starts))

    y = np.zeros(n)
    state = np.zeros(order)
    for i, start in enumerate(starts):
        stop = min(start + sub, n)
        y[start:stop], state = signal.lfilter(
            [gains[i]], sub_lpc[i], source[start:stop], zi=state
        )
    if pre_emphasis:
        y = signal.lfilter([1.0], [1.0, -pre_emphasis], y)
    return _finish(y, x)


def _relp_excitation(
    x: np.ndarray,
    lpc: np.ndarray,
    starts: np.ndarray,
    sub: int,
    *,
    order: int,
    decimation: int,
    bits: int,
    block: int,
) -> np.ndarray:
    """Residual-excited LP: baseband residual, quantised, spectrally folded back to full band."""
    n = len(x)
    history = np.pad(x, (order, 0))
    residual = np.zeros(n)
    for i, start in enumerate(starts):
        stop = min(start + sub, n)
        segment = history[start : stop + order]
        residual[start:stop] = np.convolve(segment, lpc[i])[order : order + stop - start]

    decimation = max(1, int(decimation))
    if decimation > 1:
        baseband = signal.resample_poly(residual, 1, decimation)
    else:
        baseband = residual.copy()
    # block-adaptive uniform quantiser (APCM)
    levels = 2 ** (max(1, int(bits)) - 1)
    step_block = max(1, block // decimation)
    quantised = np.zeros_like(baseband)
    for start in range(0, len(baseband), step_block):
        chunk = baseband[start : start + step_block]
        peak = np.max(np.abs(chunk))
        if peak <= 0:
            continue
        step = peak / levels
        quantised[start : start + step_block] = np.clip(
            np.round(chunk / step), -levels, levels - 1
        ) * step
    folded = np.zeros(len(quantised) * decimation)
    folded[::decimation] = quantised
    folded = folded[:n]
    if len(folded) < n:
        folded = np.pad(folded, (0, n - len(folded)))
    # restore the residual's energy per block (the gain a RELP coder sends as side information)
    for start in range(0, n, block):
        target = _rms(residual[start : start + block])
        current = _rms(folded[start : start + block])
        if current > 1e-12:
            folded[start : start + block] *= target / current
    return folded


# --------------------------------------------------------------------------------------------
# LPCNet copy-synthesis (a neural vocoder of the WaveRNN family, from Debian's libcodec2)

LPCNET_DELAY = 864  # samples (54 ms) the encoder-decoder pair lags its input by (speech envelopes; the test checks it)


def lpcnet_resynthesis(x: np.ndarray, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """LPCNet copy-synthesis: FreeDV 2020's quantised features of ``x`` → LPCNet's neural vocoder.

    The one neural vocoder that installs here with its weights inside (Debian ``libcodec2-1.0``; the
    generator zoo's ``lpcnet`` family, :class:`soundsentry.training.zoo.LpcNet`). Its output is moved back
    by the pair's fixed lag so that it lines up with ``x`` (what :func:`band_splice` needs; within about
    50 samples, the spread of the lag measured on speech envelopes). ``seed`` is ignored: LPCNet samples
    each output value from its predicted distribution with libcodec2's own random numbers, so two runs
    differ sample by sample (not in kind).
    """
    from soundsentry.training.zoo import GENERATORS  # ctypes and the zoo only when this method runs

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"LPCNet runs at {SAMPLE_RATE} Hz, got {sample_rate}")
    reference = _as_float64(x)
    if _is_silent(reference):
        return np.zeros(len(reference), dtype=np.float32)
    padded = np.pad(reference, (0, LPCNET_DELAY + 1280))  # room for the lag and the last whole frame
    y, _ = GENERATORS["lpcnet"].resynthesise(padded.astype(np.float32), "freedv2020")
    return _finish(y[LPCNET_DELAY:], reference)


# --------------------------------------------------------------------------------------------
# registry

SPOOF_METHODS: dict[str, SpoofMethod] = {
    "griffin_lim": griffin_lim_resynthesis,
    "world": world_resynthesis,
    "lpc": lpc_resynthesis,
    "lpcnet": lpcnet_resynthesis,
}
DSP_METHODS = ("griffin_lim", "world", "lpc")  # make_spoofs' default: the three without a trained network


def resynthesize(
    samples: np.ndarray,
    method: str,
    *,
    sample_rate: int = SAMPLE_RATE,
    seed: int = 0,
    **options: Any,
) -> np.ndarray:
    """Run the registered method ``method`` (a key of :data:`SPOOF_METHODS`)."""
    try:
        function = SPOOF_METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown spoof method {method!r}; choose from {', '.join(SPOOF_METHODS)}"
        ) from None
    return function(samples, sample_rate=sample_rate, seed=seed, **options)


def band_splice(real: np.ndarray, fake: np.ndarray, cut_hz: float = 4000.0, *,
                crossfade_hz: float = 250.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``real`` below ``cut_hz`` and ``fake`` above it, mixed in the STFT domain (32 ms Hann, 75 %
    overlap) with a linear cross-fade ``crossfade_hz`` wide; the fake must be a re-synthesis of the
    real (same timing; phase may differ). Returns the real's length, RMS-matched to the real."""
    n = min(len(real), len(fake))
    real64, fake64 = _as_float64(real[:n]), _as_float64(fake[:n])
    n_fft = 512
    _, _, real_spec = signal.stft(real64, sample_rate, nperseg=n_fft, noverlap=3 * n_fft // 4)
    _, _, fake_spec = signal.stft(fake64, sample_rate, nperseg=n_fft, noverlap=3 * n_fft // 4)
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    upper = np.clip((frequencies - cut_hz) / crossfade_hz + 0.5, 0.0, 1.0)[:, None]
    _, mixed = signal.istft(real_spec * (1.0 - upper) + fake_spec * upper, sample_rate,
                            nperseg=n_fft, noverlap=3 * n_fft // 4)
    out = np.zeros(len(real), dtype=np.float64)
    out[:n] = mixed[:n]
    return _finish(out, _as_float64(real))

