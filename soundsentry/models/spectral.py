"""The CNN-Transformer scorer at run time: spectrogram front-end, windowing, inference, artefact.

:class:`SpectralFeatures` defines the input (saved with the weights, so a model is never fed features
it was not trained on); :class:`SpectralFrontEnd` turns 16 kHz mono audio into a normalised log
spectrogram; :class:`SpectralScorer` cuts it into windows of ``n_frames`` frames, runs
:class:`~soundsentry.models.cnn_transformer.CNNTransformer` on them in batches of at most 16 and pools the logits.

Feature definition (defaults; the shipped artefact says which ``kind`` it uses)
-----------------------------------------------------------------------------
- STFT: Hann window of 512 samples (32 ms), hop 256 (16 ms): 128 frames = 2.05 s, and a 4 s chunk
  is 251 frames = two windows.
- ``kind="linear"``: the power of STFT bins 1..256 averaged in pairs: 128 bands of 62.5 Hz each,
  linear up to 8 kHz, so the 4-8 kHz half (where many vocoder artefacts sit) keeps half the bands.
  ``kind="high"``: the top ``n_bands`` STFT bins themselves (bins 129..256: 4.0-8 kHz at 31.25 Hz),
  the upper band alone at full resolution, where the harmonic structure that neural vocoders fail
  to reproduce is resolved.
  ``kind="mel"``: 128 Slaney mel bands (0-8 kHz) of the same STFT.
- log power, floored ``dynamic_range_db`` below the segment's peak (so the floor scales with level),
  then normalised per utterance (the segment passed in): minus its mean, over its standard deviation,
  over all bands and frames (``"utterance"``), per band (``"utterance_band"``), or per band and then
  minus each frame's mean over the bands (``"utterance_band_frame"``: the spectral shape within a frame
  and its motion, without the frame's level; rescaled to unit deviation). Either way the
  gain of the input does not change the features.

Segments longer than one window are scored window by window (windows spread evenly, at most
``n_frames`` apart, the last one flush with the end) and the logits averaged; shorter ones are
repeat-padded to one window (the frames are tiled, after normalisation). An artefact may hold several
networks of one architecture and input (an ensemble, e.g. seeds of one recipe): each window's logit
is then the mean of theirs.

Artefact (``data/cnn_transformer.pt``, torch, loads with ``weights_only=True``)
------------------------------------------------------------------------------
``{"format", "state_dicts" (a list, one per network, float16), "model_config", "features", "metadata"}``,
and beside it ``data/cnn_transformer.json`` (the same config, feature definition and metadata, readable
by people). Format ``/1`` artefacts (one ``"state_dict"``) still load.

Usage
-----
>>> scorer = SpectralScorer.load(Path("data/cnn_transformer.pt"))
>>> scorer.score(samples)                     # (time,) 16 kHz float32 → P(fake)
>>> scorer.score_many([chunk_a, chunk_b])     # → (segment,) P(fake)
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch.nn.utils.fusion import fuse_conv_bn_eval

from soundsentry.constants import DEFAULT_DATA_DIR
from soundsentry.errors import ModelLoadError
from soundsentry.models.cnn_transformer import CNNTransformer

ARTEFACT_FORMAT = "soundsentry.cnn_transformer/2"
_SINGLE_NETWORK_FORMAT = "soundsentry.cnn_transformer/1"  # "state_dict" instead of "state_dicts"
DEFAULT_ARTEFACT = DEFAULT_DATA_DIR / "cnn_transformer.pt"
FEATURE_KINDS = ("linear", "mel", "high")
NORMALISATIONS = ("utterance", "utterance_band", "utterance_band_frame")
_MAX_BATCH_WINDOWS = 16  # windows per forward pass: 64 peaked ~300 MB of activations per request


@dataclass(frozen=True)
class SpectralFeatures:
    """What the network sees: see the module docstring. Saved with the weights."""

    kind: str = "linear"
    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 256
    n_bands: int = 128
    n_frames: int = 128
    f_max_hz: float = 8000.0
    dynamic_range_db: float = 80.0
    normalisation: str = "utterance"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        bins = self.n_fft // 2
        if self.kind == "linear" and bins % self.n_bands:
            raise ValueError(f"linear bands need n_fft/2 ({bins}) to be a multiple of n_bands ({self.n_bands})")
        if self.kind == "high" and self.n_bands > bins:
            raise ValueError(f"high bands take the top n_bands of n_fft/2 ({bins}) bins; got n_bands {self.n_bands}")

    @property
    def window_s(self) -> float:
        """Duration one window of ``n_frames`` frames covers, in seconds."""
        return ((self.n_frames - 1) * self.hop_length + self.n_fft) / self.sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest segment the front-end accepts (one FFT window)."""
        return self.n_fft

    @property
    def key(self) -> str:
        """A short stable hash of the definition (consistency checks)."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def log_power_key(self) -> str:
        """Hash of everything before the normalisation (caches of :meth:`SpectralFrontEnd.log_power`)."""
        values = {k: v for k, v in self.to_dict().items() if k != "normalisation"}
        return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SpectralFeatures:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown feature settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


class SpectralFrontEnd:
    """16 kHz mono audio → normalised log spectrogram ``(band, frame)`` (torch, float32).

    Stateless after construction (a window and a band matrix), so one instance serves all threads.
    """

    def __init__(self, features: SpectralFeatures = SpectralFeatures()) -> None:
        self.features = features
        self.window = torch.hann_window(features.n_fft)
        self.bands = band_matrix(features)  # (bin, band)

    def __call__(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(time,) samples → (band, frame) normalised log spectrogram, frame = 1 + time // hop_length."""
        return normalise(self.log_power(samples), self.features.normalisation)

    def log_power(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(time,) samples → (band, frame) natural-log band power, floored below the peak; not normalised."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)) if not torch.is_tensor(samples) else samples.float()
        if x.ndim != 1:
            raise ValueError(f"expected mono audio shaped (time,), got shape {tuple(x.shape)}")
        needed = self.features.min_samples
        if x.numel() < needed:
            raise ValueError(
                f"segment of {x.numel()} samples is too short: the spectrogram needs at least {needed} samples "
                f"({needed / self.features.sample_rate * 1000:.0f} ms at {self.features.sample_rate} Hz); "
                "drop or merge shorter segments"
            )
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        spectrum = torch.stft(
            x, self.features.n_fft, hop_length=self.features.hop_length, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )  # (bin, frame)
        power = spectrum.real.square() + spectrum.imag.square()
        banded = self.bands.T @ power  # (band, frame)
        floor = banded.max().clamp_min(1e-20) * 10.0 ** (-self.features.dynamic_range_db / 10.0)
        return torch.log(torch.maximum(banded, floor))


def band_matrix(features: SpectralFeatures) -> torch.Tensor:
    """(bin, band) weights that average STFT power into ``n_bands`` bands."""
    n_bins = features.n_fft // 2 + 1
    if features.kind == "mel":
        return torchaudio.functional.melscale_fbanks(
            n_bins, 0.0, features.f_max_hz, features.n_bands, features.sample_rate, norm="slaney", mel_scale="slaney",
        )
    if features.kind == "high":
        return torch.eye(n_bins)[:, n_bins - features.n_bands :]
    per_band = (n_bins - 1) // features.n_bands
    matrix = torch.zeros(n_bins, features.n_bands)
    for band in range(features.n_bands):  # bin 0 (DC) is left out
        matrix[1 + band * per_band : 1 + (band + 1) * per_band, band] = 1.0 / per_band
    return matrix


def normalise(log_power: torch.Tensor, how: str) -> torch.Tensor:
    """(band, frame) → zero mean, unit variance over the utterance (all values, or per band; see the
    module docstring for ``"utterance_band_frame"``)."""
    if how == "utterance":
        mean, std = log_power.mean(), log_power.std(unbiased=False)
    else:
        mean = log_power.mean(dim=1, keepdim=True)
        std = log_power.std(dim=1, unbiased=False, keepdim=True)
    normalised = (log_power - mean) / std.clamp_min(1e-5)
    if how == "utterance_band_frame":
        normalised = normalised - normalised.mean(dim=0, keepdim=True)
        normalised = normalised / normalised.std(unbiased=False).clamp_min(1e-5)
    return normalised


def window_starts(n_total: int, n_frames: int) -> list[int]:
    """First frame of each window: evenly spread, at most ``n_frames`` apart, the last flush with the end."""
    if n_total <= n_frames:
        return [0]
    count = math.ceil((n_total - n_frames) / n_frames) + 1
    return sorted({int(round(s)) for s in np.linspace(0, n_total - n_frames, count)})


def spectrogram_windows(spectrogram: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(band, frame) → (window, band, n_frames): tiled when short, :func:`window_starts` when long."""
    total = spectrogram.shape[1]
    if total < n_frames:
        repeats = math.ceil(n_frames / total)
        return spectrogram.repeat(1, repeats)[:, :n_frames].unsqueeze(0)
    return torch.stack([spectrogram[:, s : s + n_frames] for s in window_starts(total, n_frames)])


class LogitMean(torch.nn.Module):
    """Networks of one architecture as one: (window, band, frame) → mean of their logits."""

    def __init__(self, networks: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(windows) for network in self.networks]).mean(dim=0)


def as_networks(models: CNNTransformer | Sequence[CNNTransformer]) -> list[CNNTransformer]:
    """One network or several of one configuration → a list; raises ``ValueError`` otherwise."""
    networks = [models] if isinstance(models, CNNTransformer) else list(models)
    if not networks:
        raise ValueError("no CNN-Transformer networks given")
    if any(n.config != networks[0].config for n in networks[1:]):
        raise ValueError("the networks of an ensemble must share one configuration")
    return networks


def inference_copy(model: CNNTransformer) -> CNNTransformer:
    """An eval-mode copy with batch norm folded into the convolutions and channels-last weights
    (3-4× faster on CPU: max-pooling is slow on channels-first tensors). Same outputs to ~1e-5."""
    fused = copy.deepcopy(model).eval()
    for block in fused.cnn:
        block.conv = fuse_conv_bn_eval(block.conv, block.norm)
        block.norm = torch.nn.Identity()
    return fused.to(memory_format=torch.channels_last)


def frozen_copy(model: CNNTransformer) -> torch.jit.ScriptModule:
    """:func:`inference_copy`, traced, frozen and optimised for inference by TorchScript: the same
    outputs (to ~1e-6) for any number of windows, about a quarter faster on this CPU (10.2 → 7.6 ms for
    two windows), which pays for the second network of an ensemble. Without the input shape check of
    :meth:`CNNTransformer.forward`: the scorer makes the windows itself. TorchScript is deprecated
    (``torch.jit.freeze`` says so, as a DeprecationWarning) but works with the pinned torch 2.11; should
    it go, :func:`inference_copy` alone gives the same logits, slower. ``torch.compile`` is its
    successor but compiles C++ at start-up."""
    fast = inference_copy(model)
    example = torch.zeros(2, fast.config["n_bands"], fast.config["n_frames"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape check, fixed for the example
        traced = torch.jit.trace(fast, example, check_trace=False)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


class SpectralScorer:
    """P(fake) of speech segments from the CNN-Transformer: one score per segment.

    Parameters
    ----------
    models
        A trained :class:`CNNTransformer`, or several of one configuration (their window logits are
        averaged); they are copied for inference (the arguments are not changed).
    features
        The feature definition the model was trained on.
    metadata
        How it was trained (shown by :meth:`info`).

    ``score``/``score_many`` take 16 kHz mono float32 ``(time,)`` arrays and are thread-safe. Torch's
    thread count is the caller's to set.
    """

    name = "cnn_transformer"

    def __init__(self, models: CNNTransformer | Sequence[CNNTransformer], features: SpectralFeatures,
                 metadata: Mapping[str, Any] | None = None):
        networks = as_networks(models)
        config = networks[0].config
        if config["n_bands"] != features.n_bands:
            raise ValueError(f"model expects {config['n_bands']} bands, features give {features.n_bands}")
        self.features = features
        self.front_end = SpectralFrontEnd(features)
        self.model = LogitMean([frozen_copy(n) for n in networks])
        self.n_networks = len(networks)
        self.model_config = dict(config)
        self.metadata = dict(metadata or {})

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @classmethod
    def load(cls, path: Path = DEFAULT_ARTEFACT) -> SpectralScorer:
        """Load our own artefact; raise :class:`~soundsentry.errors.ModelLoadError` if anything is off."""
        networks, features, metadata = load_artefact(path)
        return cls(networks, features, metadata)

    def windows(self, samples: np.ndarray) -> torch.Tensor:
        """(time,) → (window, band, frame) normalised log-spectrogram windows of one segment."""
        return spectrogram_windows(self.front_end(samples), self.features.n_frames)

    @torch.inference_mode()
    def logits_many(self, segments: Sequence[np.ndarray]) -> np.ndarray:
        """(segment,) mean window logit of each segment (the fusion's input; sigmoid gives P(fake)).

        Segments are windowed and scored about ``_MAX_BATCH_WINDOWS`` windows at a time, so memory does
        not grow with the length of the recording (an hour's windows at once cost ~300 MB)."""
        pooled: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []  # windows of the segments not scored yet

        def score_pending() -> None:
            if pending:
                batch = torch.cat(pending)
                logits = torch.cat([self.model(part) for part in torch.split(batch, _MAX_BATCH_WINDOWS)])
                pooled.extend(chunk.mean() for chunk in torch.split(logits, [w.shape[0] for w in pending]))
                pending.clear()

        for samples in segments:
            pending.append(self.windows(samples))
            if sum(w.shape[0] for w in pending) >= _MAX_BATCH_WINDOWS:
                score_pending()
        score_pending()
        return torch.stack(pooled).numpy().astype(np.float32) if pooled else np.zeros(0, dtype=np.float32)

    def score_many(self, segments: Sequence[np.ndarray]) -> np.ndarray:
        """(segment,) P(fake): the sigmoid of :meth:`logits_many`."""
        return (1.0 / (1.0 + np.exp(-self.logits_many(segments).astype(np.float64)))).astype(np.float32)

    def score(self, samples: np.ndarray) -> float:
        """P(fake) of one segment."""
        return float(self.score_many([samples])[0])

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "features": self.features.to_dict(),
            "window_s": round(self.features.window_s, 4),
            "model_config": self.model_config,
            "networks": self.n_networks,
            "training": self.metadata,
        }


# --------------------------------------------------------------------------------------------
# artefact


def save_artefact(
    path: Path, models: CNNTransformer | Sequence[CNNTransformer], features: SpectralFeatures,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``path`` (weights in float16, config, features, metadata) and ``path.with_suffix('.json')``.
    Several networks of one configuration make an ensemble (see the module docstring)."""
    networks = as_networks(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    states = [
        {name: (value.half() if value.is_floating_point() else value).clone() for name, value in n.state_dict().items()}
        for n in networks
    ]
    plain_metadata = json.loads(json.dumps(dict(metadata or {}), default=float))  # weights_only-safe types
    bundle = {
        "format": ARTEFACT_FORMAT,
        "state_dicts": states,
        "model_config": dict(networks[0].config),
        "features": features.to_dict(),
        "metadata": plain_metadata,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(bundle, temporary)
    temporary.replace(path)
    description = {k: bundle[k] for k in ("format", "model_config", "features")}
    description["feature_key"] = features.key
    description["networks"] = len(networks)
    description["parameters"] = sum(p.numel() for n in networks for p in n.parameters())
    description["metadata"] = plain_metadata
    path.with_suffix(".json").write_text(json.dumps(description, indent=2) + "\n")


def load_artefact(path: Path) -> tuple[list[CNNTransformer], SpectralFeatures, dict[str, Any]]:
    """(networks in eval mode, float32; feature definition; metadata). Raises :class:`ModelLoadError`."""
    path = Path(path)
    retrain = "python -m scripts.train_cnn_transformer"
    if not path.is_file():
        raise ModelLoadError(
            f"CNN-Transformer weights {path} are missing. Restore them from git (`git checkout -- data/`) "
            f"or retrain with `{retrain}`."
        )
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader error means the file is unusable
        raise ModelLoadError(
            f"Cannot read the CNN-Transformer weights {path} ({type(error).__name__}: {error}). The file is "
            f"corrupt or not a torch checkpoint; restore it from git or retrain with `{retrain}`."
        ) from error
    if not isinstance(bundle, dict) or bundle.get("format") not in (ARTEFACT_FORMAT, _SINGLE_NETWORK_FORMAT):
        found = bundle.get("format") if isinstance(bundle, dict) else type(bundle).__name__
        raise ModelLoadError(
            f"{path} is not a CNN-Transformer artefact of format {ARTEFACT_FORMAT!r} (found {found!r}). "
            f"Point the scorer at a file written by `{retrain}`."
        )
    try:
        features = SpectralFeatures.from_dict(bundle["features"])
        config = CNNTransformer.merge_config(bundle["model_config"])
        if config["n_bands"] != features.n_bands or config["n_frames"] != features.n_frames:
            raise ValueError(
                f"the model takes {config['n_bands']}×{config['n_frames']} windows but the features "
                f"give {features.n_bands}×{features.n_frames}"
            )
        states = [bundle["state_dict"]] if bundle["format"] == _SINGLE_NETWORK_FORMAT else bundle["state_dicts"]
        if not states:
            raise ValueError("no networks in the artefact")
        networks = []
        for state in states:
            network = CNNTransformer(bundle["model_config"])
            network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                    strict=True)
            networks.append(network.eval())
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"The CNN-Transformer artefact {path} does not match this code ({type(error).__name__}: {error}). "
            f"It was written by another version; retrain with `{retrain}`."
        ) from error
    return networks, features, dict(bundle.get("metadata", {}))
