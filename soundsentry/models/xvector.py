"""pyannote's x-vector (``XVectorSincNet``) as a second speaker network for TKAN.

The original TKAN design reads the layers of pyannote's ``pyannote/embedding`` model: SincNet on
the waveform (80 learnt band-pass filters, then two convolutions; 60 channels), five TDNN layers
(Conv1d → LeakyReLU → BatchNorm1d; 512, 512, 512, 512 and 1500 channels), statistics pooling and a
linear embedding (512). Here it is loaded from a local checkpoint directory (default
``model/embedding/``, holding ``pytorch_model.bin`` as ``Model.from_pretrained(directory)`` reads
it: the layout ``pyannote/embedding`` has on the hub; ``python -m scripts.entry export --model
pyannote/embedding`` fills it), so nothing is downloaded at run time.

Layers TKAN reads (:data:`~soundsentry.models.layers.XVECTOR`): ``sincnet`` (SincNet's output),
``tdnn1`` … ``tdnn5`` (each TDNN block's output, after its BatchNorm: what the next layer reads),
``embedding`` (the linear layer's output before normalisation; one frame).

:class:`XVectorLayers` is a plain ``nn.Module`` that runs pyannote's own sub-modules in the order
of ``XVectorSincNet.forward`` and returns every layer's output. It is used instead of forward hooks
because hooks would leave per-call state on a module that concurrent requests share; a test pins
its embedding to pyannote's ``forward``. :class:`XVectorNetwork` runs it over audio (windows,
batches, inference mode) and returns :class:`~soundsentry.models.layers.WindowActivations`;
:func:`load_xvector` reads a checkpoint directory. pyannote.audio is imported only there, with its
telemetry switched off first.

Usage
-----
>>> network = load_xvector(Path("model/embedding"))
>>> activations = network.analyse(samples, hop_s=1.6)  # 3 s windows
>>> activations.layer("tdnn5")[0].shape               # (window, 1500)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from soundsentry.constants import CHECKOUT, SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.hashing import file_sha256
from soundsentry.models.layers import XVECTOR, WindowActivations, stack_layer_statistics, window_starts

WINDOW_S = 3.0  # pyannote/embedding's model card embeds 3 s sliding windows
CHECKPOINT_FILE = "pytorch_model.bin"  # what Model.from_pretrained(directory) reads
HUB_ID = "pyannote/embedding"
DEFAULT_XVECTOR_DIR = CHECKOUT / "model" / "embedding"
TDNN_BLOCK = (nn.Conv1d, nn.LeakyReLU, nn.BatchNorm1d)


def missing_checkpoint_message(directory: Path) -> str:
    """What to put where when the x-vector checkpoint is not in ``directory``."""
    return (
        f"pyannote's x-vector checkpoint {directory / CHECKPOINT_FILE} is missing. TKAN features of "
        f"network {XVECTOR.name} are read from pyannote's {HUB_ID} model: put its {CHECKPOINT_FILE} in "
        f"{directory}/ (`HUGGING_FACE_TOKEN=hf_... python -m scripts.entry export --model {HUB_ID} "
        f"--output {directory}` downloads it once its conditions are accepted at https://hf.co/{HUB_ID}), "
        "or point DetectorConfig.xvector_dir / SOUNDSENTRY_XVECTOR_DIR / --xvector-dir at the directory "
        "that holds it."
    )


class XVectorLayers(nn.Module):
    """pyannote's ``XVectorSincNet`` with every layer TKAN reads visible.

    forward(waveforms: (batch, channel=1, sample)) -> (layer activations, embedding)
        layer activations: 7 tensors (batch, frame, width): SincNet (60), tdnn1..tdnn5 (512, 512,
        512, 512, 1500) and the embedding layer as one frame, (batch, 1, 512);
        embedding: (batch, 512), L2-normalised x-vector.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_structure(model)
        self.model = model

    def forward(self, waveforms: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        model = self.model
        hidden = model.sincnet(waveforms)  # (batch, 60, frame)
        activations = [hidden]
        for index, block in enumerate(model.tdnns):
            hidden = block(hidden)
            if index % len(TDNN_BLOCK) == len(TDNN_BLOCK) - 1:  # the end of a TDNN block
                activations.append(hidden)
        embedding_raw = model.embedding(model.stats_pool(hidden))  # (batch, 512)
        activations.append(embedding_raw.unsqueeze(2))
        embedding = embedding_raw / embedding_raw.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return [a.transpose(1, 2) for a in activations], embedding


def check_structure(model: nn.Module) -> None:
    """Refuse a model whose layers are not the ones :data:`XVECTOR` describes (another version or class)."""
    tdnns = getattr(model, "tdnns", None)
    embedding = getattr(model, "embedding", None)
    widths: tuple[int, ...] = ()
    if (
        hasattr(model, "sincnet")
        and isinstance(embedding, nn.Linear)
        and tdnns is not None
        and tuple(type(module) for module in tdnns) == TDNN_BLOCK * 5
    ):
        convolutions = [module.out_channels for module in tdnns if isinstance(module, nn.Conv1d)]
        widths = (tdnns[0].in_channels, *convolutions, embedding.out_features)
    if widths != XVECTOR.layer_widths:
        raise ModelLoadError(
            f"{type(model).__name__} does not have the layers TKAN's {XVECTOR.name} reads "
            f"({XVECTOR.description}); load pyannote/embedding's XVectorSincNet checkpoint "
            "with pyannote.audio 4.0.x."
        )


class XVectorNetwork:
    """Runs :class:`XVectorLayers` over audio: 3 s windows, batches, inference mode, NumPy out.

    Follows pyannote's embedding-wrapper interface: ``sample_rate``, ``dimension``, ``metric``.
    The waveform needs no volume normalisation: SincNet starts with an instance norm.
    """

    name = XVECTOR.name
    layout = XVECTOR
    sample_rate = SAMPLE_RATE
    dimension = XVECTOR.width("embedding")
    metric = "cosine"
    layer_names = XVECTOR.layer_names
    window_s = WINDOW_S

    def __init__(self, model: nn.Module, checkpoint: Path, checkpoint_sha256: str, max_batch: int = 16) -> None:
        self.net = XVectorLayers(model).eval()
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.max_batch = max_batch
        # two output frames at least: the statistics pooling takes an (unbiased) standard deviation
        self.min_samples = int(model.receptive_field_size(num_frames=2))

    @property
    def weights_id(self) -> str:
        return self.checkpoint_sha256

    def describe(self) -> dict[str, Any]:
        """Provenance for training metadata: name, checkpoint path and SHA-256."""
        from importlib.metadata import version

        return {"name": self.name, "checkpoint": str(self.checkpoint), "checkpoint_sha256": self.checkpoint_sha256,
                "pyannote.audio": version("pyannote.audio")}

    @torch.inference_mode()
    def analyse(self, samples: np.ndarray, hop_s: float = 1.6) -> WindowActivations:
        """Slide 3 s windows with hop ``hop_s`` over ``samples`` and run them in batches.

        Audio shorter than one window is analysed as one shorter window; it must hold at least
        :attr:`min_samples` (about 0.3 s).
        """
        if samples.ndim != 1 or samples.size < self.min_samples:
            raise ValueError(
                f"need mono audio of at least {self.min_samples / SAMPLE_RATE:.2f} s for the x-vector, "
                f"got shape {samples.shape}"
            )
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        window = int(round(WINDOW_S * SAMPLE_RATE))
        starts = window_starts(audio.numel(), window, max(1, int(round(hop_s * SAMPLE_RATE))))
        length = min(window, audio.numel())
        windows = torch.stack([audio[s : s + length] for s in starts]).unsqueeze(1)  # (window, 1, sample)
        means, stds, embeddings = [], [], []
        for batch in torch.split(windows, self.max_batch):
            activations, embedding = self.net(batch)
            mean, std = stack_layer_statistics(activations, max(XVECTOR.layer_widths))
            means.append(mean)
            stds.append(std)
            embeddings.append(embedding.numpy())
        return WindowActivations(
            starts=starts / SAMPLE_RATE,
            layer_mean=np.concatenate(means),
            layer_std=np.concatenate(stds),
            embeddings=np.concatenate(embeddings),
            window_s=WINDOW_S,
            network=self.name,
            layer_names=XVECTOR.layer_names,
            layer_widths=XVECTOR.layer_widths,
        )


def load_xvector(directory: Path = DEFAULT_XVECTOR_DIR) -> XVectorNetwork:
    """Load ``directory/pytorch_model.bin`` (an ``XVectorSincNet`` checkpoint) on the CPU, offline.

    Raises
    ------
    ModelLoadError
        The checkpoint is missing (the message says how to get it), does not load, or is not an
        ``XVectorSincNet``.
    """
    checkpoint = Path(directory) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise ModelLoadError(missing_checkpoint_message(Path(directory)))
    try:
        from pyannote.audio import Model
        from pyannote.audio.models.embedding import XVectorSincNet

        with warnings.catch_warnings():
            # pyannote/embedding was saved by pyannote.audio 2.x with its training loss (ArcFace)
            # weights; from_pretrained drops them with a warning
            warnings.filterwarnings("ignore", module=r"pyannote\.audio.*")
            warnings.filterwarnings("ignore", message=r".*loss_func.*")
            model = Model.from_pretrained(Path(directory), map_location=torch.device("cpu"))
    except Exception as error:  # pyannote/lightning raise many kinds (pickling, KeyError, version checks)
        raise ModelLoadError(
            f"Cannot load the x-vector checkpoint {checkpoint}: {type(error).__name__}: {error}. "
            f"Re-export it (`python -m scripts.entry export --model {HUB_ID}`)."
        ) from error
    if not isinstance(model, XVectorSincNet):
        raise ModelLoadError(
            f"{checkpoint} holds a {type(model).__name__}, not pyannote's XVectorSincNet ({HUB_ID}); "
            "TKAN's x-vector network needs that architecture."
        )
    model.eval()
    return XVectorNetwork(model, checkpoint, file_sha256(checkpoint))
