"""The CNN-Transformer scorer network (AntiFoley's architecture, trained here for speech).

A plain :class:`torch.nn.Module` with no I/O: the spectrogram front-end, windowing, pooling and the
artefact on disk live in :mod:`soundsentry.models.spectral`.

    (batch, band, frame) ─► 3 × [conv 3×3 ─ BN ─ ReLU ─ max-pool 2×2] ─► flatten band into channel
    ─► linear to d_model ─► + sinusoidal positions ─► Transformer encoder ─► mean over time ─► head ─► logit

Usage
-----
>>> model = CNNTransformer(CNNTransformer.merge_config({"d_model": 64}))
>>> logits = model(torch.randn(4, 128, 128))   # (batch,) logit of "fake"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

#: class-level defaults; a config saved with a checkpoint is merged over these (never mutated)
CNN_TRANSFORMER_DEFAULTS: Mapping[str, Any] = {
    "n_bands": 128,  # spectrogram bands in (height)
    "n_frames": 128,  # frames per window (width)
    "channels": (32, 64, 128),  # filters of the three conv blocks
    "d_model": 256,
    "n_heads": 8,
    "n_layers": 2,
    "ff_dim": 1024,
    "dropout": 0.1,
    "head_hidden": 128,
    "head": "linear",  # "linear": a logit from a linear layer; "one_class": OC-softmax (see OneClassHead)
}

HEADS = ("linear", "one_class")

#: OC-softmax (Zhang, Jiang and Duan, IEEE SPL 2021): scale α, and the cosine margins real windows must
#: exceed and fake ones stay under. The published values.
ONE_CLASS_SCALE, ONE_CLASS_REAL_MARGIN, ONE_CLASS_FAKE_MARGIN = 20.0, 0.9, 0.2


class ConvBlock(nn.Module):
    """conv 3×3 (same padding) → batch norm → ReLU → max-pool 2×2.

    forward(x: (batch, channel_in, band, frame)) -> (batch, channel_out, band / 2, frame / 2)

    ReLU runs after the pooling: the same result (ReLU is monotonic), on a quarter of the values.
    """

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels_out)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pool(self.norm(self.conv(x))))


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine positions of "Attention is all you need".

    forward(x: (batch, time, d_model)) -> (batch, time, d_model)
    """

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)  # not saved: it is a function of d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} steps is longer than {self.table.shape[0]}")
        return x + self.table[: x.shape[1]]


class OneClassHead(nn.Module):
    """OC-softmax's scoring layer: the cosine ``s`` between an embedding and one learned direction of
    real speech, returned as the logit of "fake" ``α·(c − s)`` with ``c`` halfway between the margins.

    Real windows are pulled into a narrow cone around the direction (``s > 0.9``), fake ones only kept
    out of a wide one (``s < 0.2``): the real class is made compact and the fakes may lie anywhere else,
    which is meant to carry to fakes of generators the training never saw. :func:`one_class_loss` is
    its loss. forward(x: (batch, dim)) -> (batch, 1), as the linear head's last layer
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.randn(dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosine = nn.functional.normalize(x, dim=-1) @ nn.functional.normalize(self.direction, dim=0)
        middle = (ONE_CLASS_REAL_MARGIN + ONE_CLASS_FAKE_MARGIN) / 2
        return (ONE_CLASS_SCALE * (middle - cosine)).unsqueeze(-1)


def one_class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """OC-softmax's loss on :class:`OneClassHead` logits (targets 1 = fake): ``softplus(α(m_real − s))``
    for real, ``softplus(α(s − m_fake))`` for fake; with the logit ``α(c − s)`` both are a logistic loss
    with the same margin added. Mean over the batch."""
    margin = ONE_CLASS_SCALE * (ONE_CLASS_REAL_MARGIN - ONE_CLASS_FAKE_MARGIN) / 2
    signed = torch.where(targets > 0.5, -logits, logits)
    return nn.functional.softplus(signed + margin).mean()


def loss_for(config: Mapping[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of a network with ``config``: (logits, float targets) → scalar."""
    return one_class_loss if config["head"] == "one_class" else nn.BCEWithLogitsLoss()


class CNNTransformer(nn.Module):
    """Spectrogram window → one logit of "fake".

    Parameters
    ----------
    config
        Hyper-parameters; missing keys take :data:`CNN_TRANSFORMER_DEFAULTS` (see :meth:`merge_config`).

    Shapes, with the defaults (B = batch)
    -------------------------------------
    input           (batch, band, frame)              B × 128 × 128 (normalised log spectrogram)
    conv blocks     (batch, channel, band, frame)     B × 32 × 64 × 64 → B × 64 × 32 × 32 → B × 128 × 16 × 16
    tokens          (batch, time, channel·band)       B × 16 × 2048
    projection      (batch, time, d_model)            B × 16 × 256 (+ sinusoidal positions)
    encoder         (batch, time, d_model)            B × 16 × 256
    mean over time  (batch, d_model)                  B × 256
    head            (batch,)                          B logits; sigmoid gives P(fake)
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = self.merge_config(config)
        cfg = self.config
        channels = tuple(cfg["channels"])
        reduction = 2 ** len(channels)
        if cfg["n_bands"] % reduction or cfg["n_frames"] % reduction:
            raise ValueError(
                f"n_bands ({cfg['n_bands']}) and n_frames ({cfg['n_frames']}) must be multiples of {reduction} "
                f"for {len(channels)} pooling blocks"
            )
        blocks, channels_in = [], 1
        for channels_out in channels:
            blocks.append(ConvBlock(channels_in, channels_out))
            channels_in = channels_out
        self.cnn = nn.Sequential(*blocks)
        self.project = nn.Linear(channels[-1] * (cfg["n_bands"] // reduction), cfg["d_model"])
        self.positions = SinusoidalPositions(cfg["d_model"])
        layer = nn.TransformerEncoderLayer(
            d_model=cfg["d_model"],
            nhead=cfg["n_heads"],
            dim_feedforward=cfg["ff_dim"],
            dropout=cfg["dropout"],
            activation="gelu",
            batch_first=True,
        )
        # nested tensors only matter with padding masks; turning them off silences a warning
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg["n_layers"], enable_nested_tensor=False)
        if cfg["head"] == "one_class":  # an embedding of head_hidden values scored by its angle
            last: list[nn.Module] = [OneClassHead(cfg["head_hidden"])]
        else:
            last = [nn.GELU(), nn.Linear(cfg["head_hidden"], 1)]
        self.head = nn.Sequential(
            nn.LayerNorm(cfg["d_model"]),
            nn.Dropout(cfg["dropout"]),
            nn.Linear(cfg["d_model"], cfg["head_hidden"]),
            *last,
        )

    @staticmethod
    def merge_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A new dict: ``config`` over :data:`CNN_TRANSFORMER_DEFAULTS`; unknown keys are an error."""
        config = dict(config or {})
        unknown = set(config) - set(CNN_TRANSFORMER_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown CNN-Transformer settings {sorted(unknown)}; known: {sorted(CNN_TRANSFORMER_DEFAULTS)}"
            )
        merged = {**CNN_TRANSFORMER_DEFAULTS, **config}
        merged["channels"] = [int(c) for c in merged["channels"]]
        if merged["head"] not in HEADS:
            raise ValueError(f"unknown head {merged['head']!r}; known: {', '.join(HEADS)}")
        return merged

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(batch, band, frame) normalised log spectrogram → (batch,) logits of "fake"."""
        if spectrogram.ndim != 3 or spectrogram.shape[1] != self.config["n_bands"]:
            raise ValueError(
                f"expected (batch, {self.config['n_bands']} bands, frame), got shape {tuple(spectrogram.shape)}"
            )
        x = self.cnn(spectrogram.unsqueeze(1))  # (batch, channel, band, time)
        batch, channel, band, time = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, time, channel * band)  # (batch, time, channel·band)
        x = self.positions(self.project(x))  # (batch, time, d_model)
        x = self.encoder(x).mean(dim=1)  # (batch, d_model)
        return self.head(x).squeeze(-1)  # (batch,)
