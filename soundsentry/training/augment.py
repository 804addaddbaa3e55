"""Codec and channel augmentation, applied alike to real and fake training audio.

Some real originals in the corpus were MP3/Opus-compressed before publishing and the fakes were not;
uploads from browsers arrive as Opus in WEBM, MP3 or AAC. Augmenting both classes with the same random
chain of codecs and channel effects keeps "was compressed" / "has room noise" from predicting the
label. Nothing here knows the label: :func:`random_augmentation` draws from one distribution.

Everything is 16 kHz mono float32 ``(time,)`` in and out, output the input's length, finite, within
[-1, 1]. An :class:`Augmentation` is a plain description (a chain of :class:`AugmentStep`), drawn by
:func:`random_augmentation`; :func:`apply_augmentation` runs it, taking noise realisations and random
filters from the ``rng`` it is given, so a (spec, seed) pair reproduces the output.

Codec round trips run the ``ffmpeg`` program (libopus, libmp3lame, aac) through a temporary directory
that is always removed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from soundsentry.constants import SAMPLE_RATE

#: codec name -> (ffmpeg encoder arguments without the bitrate, container format, file suffix)
CODECS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "opus": (("-c:a", "libopus", "-application", "audio"), "webm", ".webm"),
    "mp3": (("-c:a", "libmp3lame"), "mp3", ".mp3"),
    "aac": (("-c:a", "aac"), "ipod", ".m4a"),
}
#: bitrates (kb/s) :func:`random_augmentation` draws from
CODEC_BITRATES: dict[str, tuple[int, ...]] = {
    "opus": (16, 24, 32, 48, 64),
    "mp3": (32, 48, 64, 96, 128),
    "aac": (32, 48, 64, 96, 128),
}
#: sample rates the audio is encoded at (browsers and phones record at 48 / 44.1 kHz)
CODEC_SAMPLE_RATES: dict[str, tuple[int, ...]] = {
    "opus": (16000, 48000),
    "mp3": (16000, 44100),
    "aac": (16000, 44100),
}

STEP_KINDS = ("reverb", "noise", "rawboost", "lowpass", "gain", "codec")


@dataclass(frozen=True)
class AugmentStep:
    """One effect: ``kind`` (one of :data:`STEP_KINDS`) and its parameters.

    - ``codec``: ``codec`` ("opus" | "mp3" | "aac"), ``bitrate_kbps``, ``sample_rate`` (encoding rate)
    - ``gain``: ``gain_db`` (positive gains are limited so the peak stays below 0.99)
    - ``lowpass``: ``cutoff_hz``, ``order`` (Butterworth, zero phase), optional ``highpass_hz``
    - ``noise``: ``snr_db``, ``colour`` ("white" | "pink")
    - ``reverb``: ``rt60_s``, ``drr_db`` (direct-to-reverberant ratio), ``predelay_ms``
    - ``rawboost``: ``algorithms`` (a sequence of "lnl", "isd", "ssi", run in that order)
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        inner = ",".join(f"{key}={_fmt(value)}" for key, value in self.params.items())
        return f"{self.kind}({inner})"


@dataclass(frozen=True)
class Augmentation:
    """A chain of steps applied in order; no steps means the audio passes unchanged."""

    steps: tuple[AugmentStep, ...] = ()

    @property
    def is_identity(self) -> bool:
        return not self.steps

    def describe(self) -> str:
        return "+".join(step.describe() for step in self.steps) or "none"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (tuple, list)):
        return "/".join(_fmt(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------------------------
# drawing a chain


def random_augmentation(rng: np.random.Generator, *, p_none: float = 0.25) -> Augmentation:
    """Draw a chain: none with probability ``p_none``, otherwise 1 to 4 effects in physical order
    (room, noise, channel distortion, band limit, level, codec). Label-independent by construction."""
    if rng.random() < p_none:
        return Augmentation()
    probabilities = {
        "reverb": 0.3,
        "noise": 0.35,
        "rawboost": 0.25,
        "lowpass": 0.25,
        "gain": 0.4,
        "codec": 0.5,
    }
    chosen = [kind for kind in STEP_KINDS if rng.random() < probabilities[kind]]
    if not chosen:
        chosen = [STEP_KINDS[int(rng.integers(len(STEP_KINDS)))]]
    return Augmentation(tuple(_random_step(kind, rng) for kind in chosen))


def browser_codec_augmentation(rng: np.random.Generator) -> Augmentation:
    """One Opus/WEBM round trip at a bitrate and encoding rate drawn as :func:`random_augmentation` draws
    them: what the browser extension's chunks go through, and nothing else (no band limit, noise or
    reverberation that could erase the 4-8 kHz band where the upper-band fakes differ from their reals)."""
    return Augmentation((_codec_step("opus", rng),))


def _codec_step(codec: str, rng: np.random.Generator) -> AugmentStep:
    return AugmentStep(
        "codec",
        {
            "codec": codec,
            "bitrate_kbps": int(rng.choice(CODEC_BITRATES[codec])),
            "sample_rate": int(rng.choice(CODEC_SAMPLE_RATES[codec])),
        },
    )


def _random_step(kind: str, rng: np.random.Generator) -> AugmentStep:
    if kind == "codec":
        return _codec_step(str(rng.choice(list(CODECS))), rng)
    if kind == "gain":
        return AugmentStep("gain", {"gain_db": float(rng.uniform(-10.0, 10.0))})
    if kind == "lowpass":
        params: dict[str, Any] = {"cutoff_hz": float(rng.uniform(3400.0, 7000.0)), "order": 6}
        if rng.random() < 0.3:  # telephone-like band: also cut the lows
            params["highpass_hz"] = float(rng.uniform(100.0, 300.0))
        return AugmentStep("lowpass", params)
    if kind == "noise":
        return AugmentStep(
            "noise",
            {"snr_db": float(rng.uniform(10.0, 30.0)), "colour": str(rng.choice(["white", "pink"]))},
        )
    if kind == "reverb":
        return AugmentStep(
            "reverb",
            {
                "rt60_s": float(rng.uniform(0.2, 0.6)),
                "drr_db": float(rng.uniform(0.0, 10.0)),
                "predelay_ms": float(rng.uniform(2.0, 15.0)),
            },
        )
    if kind == "rawboost":
        options = (("lnl",), ("isd",), ("ssi",), ("lnl", "isd"), ("lnl", "ssi"), ("isd", "ssi"),
                   ("lnl", "isd", "ssi"))
        return AugmentStep("rawboost", {"algorithms": options[int(rng.integers(len(options)))]})
    raise ValueError(f"unknown augmentation step {kind!r}; choose from {', '.join(STEP_KINDS)}")


# --------------------------------------------------------------------------------------------
# applying a chain


def apply_augmentation(
    samples: np.ndarray,
    spec: Augmentation | AugmentStep | Sequence[AugmentStep],
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Run ``spec`` on ``samples``; the result has the input's length, finite, within [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio shaped (time,), got shape {x.shape}")
    if isinstance(spec, AugmentStep):
        steps: Sequence[AugmentStep] = (spec,)
    elif isinstance(spec, Augmentation):
        steps = spec.steps
    else:
        steps = tuple(spec)
    y = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    for step in steps:
        if len(y) == 0:
            break
        y = _apply_step(y, step, rng, sample_rate)
        y = _fit_length(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0), len(x))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _apply_step(
    x: np.ndarray, step: AugmentStep, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    p = dict(step.params)
    if step.kind == "codec":
        return codec_roundtrip(
            x, p["codec"], p["bitrate_kbps"], sample_rate=sample_rate,
            encode_sample_rate=p.get("sample_rate"),
        )
    if step.kind == "gain":
        return apply_gain(x, p["gain_db"])
    if step.kind == "lowpass":
        return band_limit(
            x, p["cutoff_hz"], sample_rate=sample_rate, order=p.get("order", 6),
            highpass_hz=p.get("highpass_hz"),
        )
    if step.kind == "noise":
        return add_noise(x, p["snr_db"], rng, colour=p.get("colour", "white"),
                         sample_rate=sample_rate)
    if step.kind == "reverb":
        return reverberate(
            x, p["rt60_s"], rng, sample_rate=sample_rate, drr_db=p.get("drr_db", 5.0),
            predelay_ms=p.get("predelay_ms", 5.0),
        )
    if step.kind == "rawboost":
        return rawboost(x, rng, algorithms=p.get("algorithms", ("lnl", "isd", "ssi")),
                        sample_rate=sample_rate)
    raise ValueError(f"unknown augmentation step {step.kind!r}; choose from {', '.join(STEP_KINDS)}")


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return y[:n]
    return np.pad(y, (0, n - len(y)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _match_rms(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scale ``y`` to the RMS of ``reference``, lowered if needed so the peak stays below 0.99."""
    current = _rms(y)
    if current < 1e-12:
        return y
    scale = _rms(reference) / current
    peak = float(np.max(np.abs(y))) * scale
    if peak > 0.99:
        scale *= 0.99 / peak
    return y * scale


# --------------------------------------------------------------------------------------------
# codecs


def _ffmpeg_roundtrip(
    samples: np.ndarray,
    codec_args: Sequence[str],
    container: str,
    *,
    sample_rate: int = SAMPLE_RATE,
    suffix: str | None = None,
    encode_sample_rate: int | None = None,
    timeout: float = 60.0,
) -> np.ndarray:
    """Encode ``samples`` with ffmpeg (``codec_args`` into ``container``) and decode them back to
    ``sample_rate`` mono float32. The encoded file lives in a temporary directory, always removed;
    raw samples travel through pipes. Raises ``RuntimeError`` when ffmpeg fails or is missing."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not on PATH; codec augmentation needs it")
    raw = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    rate_args = ("-ar", str(int(encode_sample_rate))) if encode_sample_rate else ()
    with tempfile.TemporaryDirectory(prefix="soundsentry-codec-") as tmp:
        encoded = Path(tmp) / f"encoded{suffix or '.' + container}"
        encode = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "f32le", "-ar", str(int(sample_rate)), "-ac", "1", "-i", "pipe:0",
            *rate_args, *codec_args, "-f", container, "-y", str(encoded),
        ]
        result = subprocess.run(encode, input=raw, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg encode failed: {result.stderr.decode(errors='replace')[-500:]}")
        decode = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(encoded),
            "-f", "f32le", "-ac", "1", "-ar", str(int(sample_rate)), "pipe:1",
        ]
        result = subprocess.run(decode, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg decode failed: {result.stderr.decode(errors='replace')[-500:]}")
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def codec_roundtrip(
    samples: np.ndarray,
    codec: str,
    bitrate_kbps: int,
    *,
    sample_rate: int = SAMPLE_RATE,
    encode_sample_rate: int | None = None,
) -> np.ndarray:
    """Encode with ``codec`` ("opus" in WEBM, "mp3", "aac" in M4A) at ``bitrate_kbps`` and decode.

    ``encode_sample_rate`` resamples before encoding (the codec then band-limits as it would for a
    48 / 44.1 kHz recording). The output has the input's length (ffmpeg trims the encoder delay
    these containers declare; the rest is padded or cut at the end).
    """
    try:
        args, container, suffix = CODECS[codec]
    except KeyError:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}") from None
    x = np.asarray(samples, dtype=np.float32)
    if len(x) == 0:
        return x.copy()
    decoded = _ffmpeg_roundtrip(
        x, (*args, "-b:a", f"{int(bitrate_kbps)}k"), container, sample_rate=sample_rate,
        suffix=suffix, encode_sample_rate=encode_sample_rate,
    )
    return _fit_length(decoded, len(x))


# --------------------------------------------------------------------------------------------
# channel effects


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """Multiply by ``gain_db``; a gain that would push the peak over 0.99 is reduced to reach it."""
    x = np.asarray(samples, dtype=np.float64)
    gain = 10.0 ** (gain_db / 20.0)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0 and peak * gain > 0.99:
        gain = 0.99 / peak
    return x * gain


def band_limit(
    samples: np.ndarray,
    cutoff_hz: float,
    *,
    sample_rate: int = SAMPLE_RATE,
    order: int = 6,
    highpass_hz: float | None = None,
) -> np.ndarray:
    """Zero-phase Butterworth low-pass at ``cutoff_hz`` (and high-pass at ``highpass_hz``)."""
    x = np.asarray(samples, dtype=np.float64)
    nyquist = sample_rate / 2
    if highpass_hz:
        sos = signal.butter(order, [highpass_hz, min(cutoff_hz, 0.99 * nyquist)], btype="bandpass",
                            fs=sample_rate, output="sos")
    elif cutoff_hz < 0.99 * nyquist:
        sos = signal.butter(order, cutoff_hz, fs=sample_rate, output="sos")
    else:
        return x.copy()
    if len(x) <= 3 * (2 * sos.shape[0] + 1):  # too short for filtfilt padding
        return signal.sosfilt(sos, x)
    return signal.sosfiltfilt(sos, x)


def coloured_noise(
    n: int, rng: np.random.Generator, colour: str = "white", *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Unit-RMS Gaussian noise; "pink" has a 1/f power spectrum above 20 Hz (flat below, so the
    energy is not spent on inaudible rumble), shaped in the frequency domain."""
    white = rng.standard_normal(n)
    if colour == "white" or n < 2:
        noise = white
    elif colour == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
        noise = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20.0)), n)
    else:
        raise ValueError(f"noise colour must be 'white' or 'pink', not {colour!r}")
    return noise / max(_rms(noise), 1e-12)


def add_noise(
    samples: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
    *,
    colour: str = "white",
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Add ``colour`` noise at ``snr_db`` below the signal's RMS, rescaled if the sum would clip."""
    x = np.asarray(samples, dtype=np.float64)
    level = _rms(x)
    if level < 1e-9:
        return x.copy()
    noise = coloured_noise(len(x), rng, colour, sample_rate=sample_rate)
    y = x + noise * level / 10.0 ** (snr_db / 20.0)
    peak = float(np.max(np.abs(y)))
    return y * (0.99 / peak) if peak > 0.99 else y


def synthetic_room_impulse_response(
    rt60_s: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    drr_db: float = 5.0,
    predelay_ms: float = 5.0,
) -> np.ndarray:
    """A unit direct path followed, after ``predelay_ms``, by exponentially decaying Gaussian noise
    that falls 60 dB in ``rt60_s``, scaled to ``drr_db`` direct-to-reverberant energy ratio."""
    length = int(round(rt60_s * sample_rate))
    delay = int(round(predelay_ms * sample_rate / 1000))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-np.log(1000.0) * t / rt60_s)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), 1e-12))
    response = np.zeros(delay + length + 1)
    response[0] = 1.0
    response[delay + 1 :] = tail
    return response


def reverberate(
    samples: np.ndarray,
    rt60_s: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    drr_db: float = 5.0,
    predelay_ms: float = 5.0,
) -> np.ndarray:
    """Convolve with :func:`synthetic_room_impulse_response`; keep the input's length and RMS."""
    x = np.asarray(samples, dtype=np.float64)
    response = synthetic_room_impulse_response(
        rt60_s, rng, sample_rate=sample_rate, drr_db=drr_db, predelay_ms=predelay_ms
    )
    y = signal.fftconvolve(x, response)[: len(x)]
    return _match_rms(y, x)


# --------------------------------------------------------------------------------------------
# RawBoost (Tak, Kamble, Patino, Todisco, Evans, ICASSP 2022), after the authors' reference code


def _random_bandpass_cascade(
    rng: np.random.Generator,
    *,
    sample_rate: int,
    n_bands: int = 5,
    min_f: float = 20.0,
    max_f: float = 8000.0,
    min_bw: float = 100.0,
    max_bw: float = 1000.0,
    min_coeff: int = 10,
    max_coeff: int = 100,
    min_gain_db: float = 0.0,
    max_gain_db: float = 0.0,
) -> np.ndarray:
    """RawBoost's ``genNotchCoeffs``: a cascade of ``n_bands`` random FIR notch (band-stop) filters
    (Hamming windowed, random centre, bandwidth and odd length), normalised to peak gain 10^(G/20)."""
    nyquist = sample_rate / 2
    b = np.ones(1)
    for _ in range(n_bands):
        fc = rng.uniform(min_f, max_f)
        bw = rng.uniform(min_bw, max_bw)
        taps = int(rng.integers(min_coeff, max_coeff + 1))
        if taps % 2 == 0:
            taps += 1
        f1 = max(fc - bw / 2, 1e-3)
        f2 = min(fc + bw / 2, nyquist - 1e-3)
        if f2 <= f1:
            f1, f2 = max(min(f1, nyquist - 2.0), 1e-3), nyquist - 1e-3
        # two cutoffs with pass_zero=True: a band-stop (notch) filter, as in the reference code
        b = np.convolve(signal.firwin(taps, [f1, f2], window="hamming", fs=sample_rate), b)
    gain_db = rng.uniform(min(min_gain_db, max_gain_db), max(min_gain_db, max_gain_db))
    _, response = signal.freqz(b, 1, fs=sample_rate)
    return 10.0 ** (gain_db / 20.0) * b / max(float(np.max(np.abs(response))), 1e-12)


def _norm_peak(x: np.ndarray, always: bool) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0 and (always or peak > 1.0):
        return x / peak
    return x


def rawboost_lnl(
    samples: np.ndarray,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_filters: int = 5,
    min_bias_db: float = 5.0,
    max_bias_db: float = 20.0,
) -> np.ndarray:
    """Linear and non-linear convolutive noise: sum over j = 1..N of h_j * x^j, each h_j a random
    band cascade with gains lowered by a further bias for every higher order (RawBoost algo 1)."""
    x = np.asarray(samples, dtype=np.float64)
    y = np.zeros_like(x)
    min_g, max_g = -min_bias_db, -max_bias_db
    for j in range(n_filters):
        if j == 1:
            min_g, max_g = min_g - min_bias_db, max_g - max_bias_db
        b = _random_bandpass_cascade(rng, sample_rate=sample_rate, min_gain_db=min_g,
                                     max_gain_db=max_g)
        y = y + signal.lfilter(b, 1, x ** (j + 1))
    return _norm_peak(y, always=False)


def rawboost_isd(
    samples: np.ndarray, rng: np.random.Generator, *, max_percent: float = 10.0, g_sd: float = 2.0
) -> np.ndarray:
    """Impulsive signal-dependent additive noise: a random up-to-``max_percent`` of the samples get
    x + g_sd * x * u1 * u2, u uniform in [-1, 1] (RawBoost algo 2)."""
    x = np.asarray(samples, dtype=np.float64)
    y = x.copy()
    count = int(len(x) * rng.uniform(0.0, max_percent) / 100.0)
    if count:
        where = rng.permutation(len(x))[:count]
        f_r = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
        y[where] = x[where] + g_sd * x[where] * f_r
    return _norm_peak(y, always=False)


def rawboost_ssi(
    samples: np.ndarray,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    min_snr_db: float = 10.0,
    max_snr_db: float = 40.0,
) -> np.ndarray:
    """Stationary signal-independent additive noise: white noise through a random band cascade,
    added at a random SNR in [``min_snr_db``, ``max_snr_db``] (RawBoost algo 3)."""
    x = np.asarray(samples, dtype=np.float64)
    b = _random_bandpass_cascade(rng, sample_rate=sample_rate)
    noise = _norm_peak(signal.lfilter(b, 1, rng.standard_normal(len(x))), always=True)
    snr_db = rng.uniform(min_snr_db, max_snr_db)
    noise_norm = float(np.linalg.norm(noise))
    if noise_norm > 0:
        noise = noise / noise_norm * float(np.linalg.norm(x)) / 10.0 ** (0.05 * snr_db)
    return x + noise


def rawboost(
    samples: np.ndarray,
    rng: np.random.Generator,
    *,
    algorithms: Sequence[str] = ("lnl", "isd", "ssi"),
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """RawBoost data boosting: the chosen algorithms in series (``("lnl", "isd", "ssi")`` is the
    paper's algo 4). Deviation from the reference code: the result is rescaled to the input's RMS
    (peak kept below 0.99), since LnL's negative gains would otherwise lower the level by 5-20 dB;
    level changes belong to the ``gain`` step."""
    x = np.asarray(samples, dtype=np.float64)
    y = x.copy()
    for name in algorithms:
        if name == "lnl":
            y = rawboost_lnl(y, rng, sample_rate=sample_rate)
        elif name == "isd":
            y = rawboost_isd(y, rng)
        elif name == "ssi":
            y = rawboost_ssi(y, rng, sample_rate=sample_rate)
        else:
            raise ValueError(f"unknown RawBoost algorithm {name!r}; choose from lnl, isd, ssi")
    return _match_rms(y, x)
