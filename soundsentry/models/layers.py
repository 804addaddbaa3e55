"""The speaker networks TKAN can read, behind one small interface.

Two backends:

- ``resemblyzer-0.1.4`` (default, shipped): the Resemblyzer voice encoder, :mod:`soundsentry.models.resemblyzer`;
  its weights ship inside the ``resemblyzer`` wheel, pinned by the version in its name.
- ``pyannote-xvector-sincnet`` (optional): pyannote's ``XVectorSincNet`` (SincNet, five TDNN layers,
  statistics pooling, embedding) from a local checkpoint directory such as ``model/embedding/``
  (``pyannote/embedding``'s layout on the hub), :mod:`soundsentry.models.xvector`. Its weights are
  identified by the checkpoint's SHA-256.

What a network's layers are (:class:`NetworkLayout`) is static, so a
:class:`~soundsentry.models.tkan.FeatureSpec` is validated without loading anything; the networks
themselves are loaded by :func:`soundsentry.models.speaker.load_tkan_network`. Both return :class:`WindowActivations`.

Usage
-----
>>> network_layout("pyannote-xvector-sincnet").width("tdnn5")
1500
>>> network = speaker.load_tkan_network("xvector", xvector_dir=Path("model/embedding"))
>>> activations = network.analyse(samples, hop_s=1.6)   # (window, layer, width) statistics
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class NetworkLayout:
    """The layers a speaker network exposes to TKAN, in order, and how many neurons each has."""

    name: str
    layer_names: tuple[str, ...]
    layer_widths: tuple[int, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.layer_names) != len(self.layer_widths) or len(set(self.layer_names)) != len(self.layer_names):
            raise ValueError(f"{self.name}: layer names must be unique and have one width each")

    def width(self, layer: str) -> int:
        return self.layer_widths[self.layer_names.index(layer)]


RESEMBLYZER = NetworkLayout(
    name="resemblyzer-0.1.4",
    layer_names=("lstm1", "lstm2", "lstm3", "embedding"),
    layer_widths=(256, 256, 256, 256),
    description="Resemblyzer voice encoder: 3 x LSTM(256), linear(256) + ReLU",
)
XVECTOR = NetworkLayout(
    name="pyannote-xvector-sincnet",
    layer_names=("sincnet", "tdnn1", "tdnn2", "tdnn3", "tdnn4", "tdnn5", "embedding"),
    layer_widths=(60, 512, 512, 512, 512, 1500, 512),
    description="pyannote XVectorSincNet: SincNet(60), TDNN 512/512/512/512/1500, stats pool, linear(512)",
)
LAYOUTS: dict[str, NetworkLayout] = {layout.name: layout for layout in (RESEMBLYZER, XVECTOR)}
# short names for the command line
ALIASES: dict[str, str] = {"resemblyzer": RESEMBLYZER.name, "xvector": XVECTOR.name}
DEFAULT_NETWORK = RESEMBLYZER.name


def resolve_network_name(name: str) -> str:
    """The full network name for a full name or a short alias (``resemblyzer``, ``xvector``)."""
    full = ALIASES.get(name, name)
    if full not in LAYOUTS:
        raise ValueError(f"unknown speaker network {name!r}; choose from {', '.join([*ALIASES, *LAYOUTS])}")
    return full


def network_layout(name: str) -> NetworkLayout:
    """The layout of a network by its full name (as a FeatureSpec stores it) or alias."""
    return LAYOUTS[resolve_network_name(name)]


@dataclass(frozen=True)
class WindowActivations:
    """What a speaker network says about a run of windows over one stretch of audio.

    Layers differ in width (the x-vector's SincNet has 60 neurons, its last TDNN 1500), so the
    per-layer statistics share one array as wide as the widest layer; entries past a layer's own
    width are NaN. Use :meth:`layer` to read one layer without the padding.

    Attributes
    ----------
    starts : (window,) window start times in seconds, relative to the analysed audio
    layer_mean : (window, layer, width) time-averaged activations per layer
    layer_std : (window, layer, width) standard deviation over time (0 for an embedding layer)
    embeddings : (window, dimension) L2-normalised speaker embeddings
    window_s : the window length in seconds (audio shorter than one window is one shorter window)
    network : the name of the network that produced them
    layer_names : the layers along the ``layer`` axis
    layer_widths : each layer's number of neurons (default: all ``layer_mean.shape[2]``)
    """

    starts: np.ndarray
    layer_mean: np.ndarray
    layer_std: np.ndarray
    embeddings: np.ndarray
    window_s: float = 1.6
    network: str = RESEMBLYZER.name
    layer_names: tuple[str, ...] = RESEMBLYZER.layer_names
    layer_widths: tuple[int, ...] = ()  # () = every layer as wide as the array

    def __post_init__(self) -> None:
        if not self.layer_widths:
            object.__setattr__(self, "layer_widths", (self.layer_mean.shape[2],) * len(self.layer_names))
        expected = (len(self.starts), len(self.layer_names), max(self.layer_widths))
        if self.layer_mean.shape != expected or self.layer_std.shape != expected:
            raise ValueError(
                f"layer statistics must be (window, layer, width) = {expected}, got "
                f"{self.layer_mean.shape} and {self.layer_std.shape}"
            )

    def layer(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(window, width) mean and standard deviation of one layer, without padding."""
        if name not in self.layer_names:
            raise ValueError(f"{self.network} has no layer {name!r}; its layers: {', '.join(self.layer_names)}")
        index = self.layer_names.index(name)
        width = self.layer_widths[index]
        return self.layer_mean[:, index, :width], self.layer_std[:, index, :width]

    def __len__(self) -> int:
        return int(self.starts.size)


class TkanNetwork(Protocol):
    """What TKAN needs from a speaker network (both backends provide it).

    ``weights_id`` identifies the weights when the name does not pin them (the x-vector checkpoint's
    SHA-256; ``None`` for Resemblyzer, whose weights come with the wheel version in its name).
    """

    name: str
    layout: NetworkLayout
    sample_rate: int
    window_s: float

    @property
    def weights_id(self) -> str | None: ...

    def analyse(self, samples: np.ndarray, hop_s: float = ...) -> WindowActivations: ...

    def describe(self) -> dict[str, Any]: ...


def window_starts(n_total: int, window: int, hop: int) -> np.ndarray:
    """Indices where windows of ``window`` steps start over ``n_total`` steps, every ``hop``.

    The windows cover everything: the last one is end-aligned; one window when ``n_total`` is no
    longer than a window.
    """
    if n_total <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_total - window + 1, hop)
    if starts[-1] + window < n_total:
        starts = np.append(starts, n_total - window)
    return starts


def stack_layer_statistics(activations: list[torch.Tensor], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer time mean and std of a batch, padded with NaN to ``width``.

    ``activations``: one (batch, frame, layer width) tensor per layer → two (batch, layer, width) arrays.
    """
    batch = activations[0].shape[0]
    mean = np.full((batch, len(activations), width), np.nan, dtype=np.float32)
    std = np.full_like(mean, np.nan)
    for index, layer in enumerate(activations):
        mean[:, index, : layer.shape[2]] = layer.mean(dim=1).numpy()
        std[:, index, : layer.shape[2]] = layer.std(dim=1, correction=0).numpy()
    return mean, std
