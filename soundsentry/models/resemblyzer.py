"""The speaker-recognition network whose layers TKAN reads, and whose embeddings drive diarization.

Default: the Resemblyzer voice encoder (GE2E d-vector; 40 mel bands → 3 × LSTM(256) → linear(256)
→ ReLU → L2 norm). Its weights ship inside the ``resemblyzer`` wheel; we read them from there
without importing the package (which would pull in librosa and webrtcvad at start-up), and
recompute its mel front-end with torchaudio (checked equal to librosa's to 1e-6).

``nn.LSTM`` with ``num_layers=3`` only returns the last layer's outputs, so the stack is rebuilt
as three single-layer LSTMs carrying the same weights: every layer's activations become visible.

Layers: the network is a plain ``nn.Module`` (:class:`ResemblyzerNet`); :class:`SpeakerNetwork`
runs it (framing, batching, inference mode) and returns NumPy arrays. Its layer layout, and the
other network TKAN can read (pyannote's x-vector, :mod:`soundsentry.models.xvector`), are declared in
:mod:`soundsentry.models.layers`; the diarizer always uses this one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.hashing import file_sha256
from soundsentry.models.layers import RESEMBLYZER, WindowActivations, stack_layer_statistics, window_starts

__all__ = ["LAYER_NAMES", "ResemblyzerNet", "SpeakerNetwork", "WindowActivations", "resemblyzer_weights_path"]

MEL_BANDS = 40
HOP_SAMPLES = 160  # 10 ms
WINDOW_FRAMES = 160  # 1.6 s, the partial-utterance length the encoder was trained on
HIDDEN = 256
LAYER_NAMES = RESEMBLYZER.layer_names  # lstm1, lstm2, lstm3, embedding
NORM_TARGET_DBFS = -30.0  # Resemblyzer's volume normalisation target


def resemblyzer_weights_path() -> Path:
    """Where the installed ``resemblyzer`` wheel keeps ``pretrained.pt`` (found without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The Resemblyzer voice encoder is not installed. Run `make setup` "
            "(it installs resemblyzer==0.1.4 with --no-deps)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise ModelLoadError(f"Resemblyzer weights missing at {path}; reinstall resemblyzer==0.1.4.")
    return path


class ResemblyzerNet(nn.Module):
    """Resemblyzer's encoder with its LSTM stack unrolled into separately visible layers.

    forward(mels: (batch, frame, 40)) -> (layer activations, embedding)
        layer activations: list of 4 tensors, (batch, frame, 256) for the LSTM layers and
        (batch, 1, 256) for the embedding layer (ReLU(linear(last hidden state)), before L2 norm);
        embedding: (batch, 256), L2-normalised d-vector.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lstms = nn.ModuleList(
            [nn.LSTM(MEL_BANDS if i == 0 else HIDDEN, HIDDEN, batch_first=True) for i in range(3)]
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)

    def load_resemblyzer_state(self, state: dict[str, torch.Tensor]) -> None:
        """Map the stacked ``lstm.weight_ih_l{i}`` keys of the original onto the unrolled layers."""
        mapped = {"linear.weight": state["linear.weight"], "linear.bias": state["linear.bias"]}
        for i in range(3):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mapped[f"lstms.{i}.{kind}_l0"] = state[f"lstm.{kind}_l{i}"]
        self.load_state_dict(mapped, strict=True)

    def forward(self, mels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        activations = []
        hidden = mels
        for lstm in self.lstms:
            hidden, _ = lstm(hidden)
            activations.append(hidden)
        embedding_raw = torch.relu(self.linear(hidden[:, -1]))
        activations.append(embedding_raw.unsqueeze(1))
        embedding = embedding_raw / embedding_raw.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return activations, embedding


class SpeakerNetwork:
    """Runs :class:`ResemblyzerNet` over audio: volume normalisation, mels, windows, batches.

    Follows pyannote's embedding-wrapper interface: ``sample_rate``, ``dimension``, ``metric``.
    """

    name = RESEMBLYZER.name
    layout = RESEMBLYZER
    sample_rate = SAMPLE_RATE
    dimension = HIDDEN
    metric = "cosine"
    layer_names = LAYER_NAMES
    window_s = WINDOW_FRAMES * HOP_SAMPLES / SAMPLE_RATE
    weights_id = None  # the weights come with the wheel version in the name

    def __init__(self, weights_path: Path | None = None, max_batch: int = 64) -> None:
        path = weights_path or resemblyzer_weights_path()
        self.weights_path = path
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            self.net = ResemblyzerNet()
            self.net.load_resemblyzer_state(checkpoint["model_state"])
        except (OSError, RuntimeError, KeyError) as error:
            raise ModelLoadError(f"Cannot load the speaker network from {path}: {error}") from error
        self.net.eval()
        self.max_batch = max_batch
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=400, hop_length=HOP_SAMPLES, n_mels=MEL_BANDS,
            power=2.0, norm="slaney", mel_scale="slaney", center=True, pad_mode="constant",
        )

    def mels(self, samples: np.ndarray) -> torch.Tensor:
        """(time,) float32 → (frame, 40) mel power spectrogram after volume normalisation."""
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        rms = audio.pow(2).mean().sqrt().clamp_min(1e-6)
        audio = audio * (10 ** (NORM_TARGET_DBFS / 20) / rms)
        return self._mel(audio).T

    def describe(self) -> dict[str, Any]:
        """Provenance for training metadata: name and the weights file with its SHA-256."""
        return {"name": self.name, "checkpoint": str(self.weights_path),
                "checkpoint_sha256": file_sha256(self.weights_path)}

    def window_starts(self, n_frames: int, hop_frames: int) -> np.ndarray:
        """Frame indices where windows start: cover the audio; the last window is end-aligned."""
        return window_starts(n_frames, WINDOW_FRAMES, hop_frames)

    @torch.inference_mode()
    def analyse(self, samples: np.ndarray, hop_s: float = 0.8) -> WindowActivations:
        """Slide 1.6 s windows with hop ``hop_s`` over ``samples`` and run them in batches.

        Audio shorter than one window is analysed as one shorter window.
        """
        if samples.ndim != 1 or samples.size < HOP_SAMPLES * 2:
            raise ValueError(f"need mono audio of at least 20 ms, got shape {samples.shape}")
        mels = self.mels(samples)
        hop_frames = max(1, int(round(hop_s * SAMPLE_RATE / HOP_SAMPLES)))
        starts = self.window_starts(mels.shape[0], hop_frames)
        windows = torch.stack([mels[s : s + WINDOW_FRAMES] for s in starts])
        means, stds, embeddings = [], [], []
        for batch in torch.split(windows, self.max_batch):
            activations, embedding = self.net(batch)
            mean, std = stack_layer_statistics(activations, HIDDEN)
            means.append(mean)
            stds.append(std)
            embeddings.append(embedding.numpy())
        return WindowActivations(
            starts=starts * HOP_SAMPLES / SAMPLE_RATE,
            layer_mean=np.concatenate(means),
            layer_std=np.concatenate(stds),
            embeddings=np.concatenate(embeddings),
            window_s=self.window_s,
            network=self.name,
            layer_names=LAYER_NAMES,
            layer_widths=self.layout.layer_widths,
        )
