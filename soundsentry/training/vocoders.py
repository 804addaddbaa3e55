"""Small neural vocoders for copy-synthesis spoofs (Wang & Yamagishi, ICASSP 2023).

Real speech goes through a mel front-end and a trained neural vocoder (copy-synthesis: waveform → mel
→ waveform). The result keeps the speaker and the words but carries the generator's artefacts —
transposed-convolution upsampling, periodic "checkerboard" patterns, smeared phase — which is what a
detector must learn to carry over to unseen neural generators (HiFi-GAN, MelGAN, WaveGlow, ...).
Even a vocoder trained briefly leaves those artefacts, so small networks trained on CPU are useful.

Two families, different upsampling and different mel analyses, so no single artefact stands for fake:

======== ===================================================== ==========================================
family   generator                                             mel front-end (16 kHz)
======== ===================================================== ==========================================
hifigan  transposed convs 8×5×4 (hop 160) + multi-receptive-   80 bands 0-8 kHz (Slaney), n_fft 1024,
         field residual blocks (kernels 3/7/11, dilations      win 640 (40 ms), hop 160 (10 ms), ln
         1/3/5), weight norm, tanh
melgan   transposed convs 8×8×2×2 (hop 256) + dilated          64 bands 55-7600 Hz (HTK), n_fft 1024,
         residual stacks (dilations 1/3/9), reflection pad,    win 1024 (64 ms), hop 256 (16 ms), log10
         weight norm, tanh
======== ===================================================== ==========================================

Everything here is a plain :class:`torch.nn.Module` or a pure function, with no file I/O: training
and the files on disk live in ``scripts/train_vocoder.py`` and ``scripts/make_neural_spoofs.py``.
A checkpoint is an in-memory dict (:func:`vocoder_payload` / :func:`vocoder_from_payload`) that the
scripts save with ``torch.save`` and load with ``torch.load(weights_only=True)``.

Usage
-----
>>> vocoder = Vocoder(merge_config("hifigan"))
>>> mel = vocoder.front_end(waveform)            # (batch, 80, frames), frames = time // 160
>>> audio = vocoder.generator(mel)               # (batch, frames * 160)
>>> fake = vocoder.resynthesize(samples)         # (time,) float32 16 kHz → same length, same RMS (no clipping)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from soundsentry.constants import SAMPLE_RATE

PAYLOAD_FORMAT = "soundsentry.vocoder/1"
VOCODER_FAMILIES = ("hifigan", "melgan")

#: class-level defaults per family; a config saved with a checkpoint is merged over these (never mutated)
VOCODER_DEFAULTS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "hifigan": {
        "mel": {
            "sample_rate": SAMPLE_RATE,
            "n_fft": 1024,
            "win_length": 640,
            "hop_length": 160,
            "n_mels": 80,
            "f_min": 0.0,
            "f_max": 8000.0,
            "mel_scale": "slaney",
            "log_base": "e",
            "floor": 1e-5,
        },
        "generator": {
            "upsample_rates": [8, 5, 4],
            "upsample_kernel_sizes": [16, 11, 8],  # kernel - rate even: symmetric padding
            "upsample_initial_channel": 128,
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        },
    },
    "melgan": {
        "mel": {
            "sample_rate": SAMPLE_RATE,
            "n_fft": 1024,
            "win_length": 1024,
            "hop_length": 256,
            "n_mels": 64,
            "f_min": 55.0,
            "f_max": 7600.0,
            "mel_scale": "htk",
            "log_base": "10",
            "floor": 1e-5,
        },
        "generator": {
            "ratios": [8, 8, 2, 2],
            "ngf": 8,  # channels of the last stage; the first has ngf * 2**len(ratios)
            "n_residual_layers": 3,  # dilations 1, 3, 9
        },
    },
}

#: loss settings shared by both families (see :class:`VocoderLoss`)
LOSS_DEFAULTS: Mapping[str, Any] = {
    # (n_fft, hop, win) of the multi-resolution STFT loss (Parallel WaveGAN's, which suit 16 kHz too)
    "stft_resolutions": [[512, 50, 240], [1024, 120, 600], [2048, 240, 1200]],
    "stft_weight": 1.0,  # spectral convergence + log-magnitude L1, averaged over resolutions
    "mel_weight": 1.0,  # L1 between the log mels of output and target (the family's own front-end)
    "adversarial_weight": 1.0,  # LSGAN generator loss, once the discriminator is on
    "feature_matching_weight": 2.0,  # L1 between discriminator features of real and generated
}

#: the optional discriminator: multi-period (HiFi-GAN) + multi-scale (MelGAN), small
DISCRIMINATOR_DEFAULTS: Mapping[str, Any] = {
    "periods": [2, 3, 5, 7, 11],
    "period_channels": [16, 32, 64],
    "n_scales": 2,
    "scale_channels": [16, 32, 64],
}


def _merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}; known: {sorted(defaults)}")
    return copy.deepcopy({**defaults, **overrides})


def merge_config(family: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A new vocoder config: ``{"family", "mel", "generator", "loss", "discriminator"}``.

    Each section of ``overrides`` is merged over the family's defaults (:data:`VOCODER_DEFAULTS`,
    :data:`LOSS_DEFAULTS`, :data:`DISCRIMINATOR_DEFAULTS`); unknown keys are an error.
    """
    if family not in VOCODER_DEFAULTS:
        raise ValueError(f"unknown vocoder family {family!r}; choose from {', '.join(VOCODER_FAMILIES)}")
    overrides = dict(overrides or {})
    overrides.pop("family", None)
    sections = {
        "mel": VOCODER_DEFAULTS[family]["mel"],
        "generator": VOCODER_DEFAULTS[family]["generator"],
        "loss": LOSS_DEFAULTS,
        "discriminator": DISCRIMINATOR_DEFAULTS,
    }
    unknown = set(overrides) - set(sections)
    if unknown:
        raise ValueError(f"unknown config sections {sorted(unknown)}; known: {sorted(sections)}")
    config: dict[str, Any] = {"family": family}
    for name, defaults in sections.items():
        config[name] = _merge(defaults, overrides.get(name), f"{family} {name}")
    hop = config["mel"]["hop_length"]
    upsampling = generator_hop_length(family, config["generator"])
    if upsampling != hop:
        raise ValueError(
            f"the {family} generator upsamples by {upsampling} but the mel hop is {hop}; make the product of "
            "the upsampling rates equal hop_length"
        )
    return config


def generator_hop_length(family: str, generator_config: Mapping[str, Any]) -> int:
    """Samples per mel frame that a generator config produces (product of its upsampling rates)."""
    rates = generator_config["upsample_rates"] if family == "hifigan" else generator_config["ratios"]
    return int(math.prod(int(r) for r in rates))


# --------------------------------------------------------------------------------------------
# mel front-end


class MelFrontEnd(nn.Module):
    """Waveform → log-mel spectrogram, one frame per ``hop_length`` samples.

    The signal is reflect-padded by ``(n_fft - hop_length) / 2`` on both sides and framed without
    centring (as HiFi-GAN does), so a waveform of ``frames × hop_length`` samples gives exactly
    ``frames`` frames and the generator's output lines up with its input sample for sample.

    forward(waveform: (batch, time)) -> (batch, n_mels, time // hop_length)
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        if cfg["win_length"] > cfg["n_fft"]:
            raise ValueError(f"win_length {cfg['win_length']} must not exceed n_fft {cfg['n_fft']}")
        if (cfg["n_fft"] - cfg["hop_length"]) % 2:
            raise ValueError("n_fft - hop_length must be even so the padding is symmetric")
        if cfg["log_base"] not in ("e", "10"):
            raise ValueError(f"log_base must be 'e' or '10', not {cfg['log_base']!r}")
        self.n_fft = int(cfg["n_fft"])
        self.hop_length = int(cfg["hop_length"])
        self.win_length = int(cfg["win_length"])
        self.n_mels = int(cfg["n_mels"])
        self.padding = (self.n_fft - self.hop_length) // 2
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        filters = torchaudio.functional.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=float(cfg["f_min"]),
            f_max=float(cfg["f_max"]),
            n_mels=self.n_mels,
            sample_rate=int(cfg["sample_rate"]),
            norm="slaney" if cfg["mel_scale"] == "slaney" else None,
            mel_scale=cfg["mel_scale"],
        )  # (freq, mel)
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)  # (mel, freq)

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, time) → (batch, freq, time // hop_length) linear STFT magnitude."""
        if waveform.ndim != 2:
            raise ValueError(f"expected (batch, time), got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] <= self.padding:
            raise ValueError(
                f"need more than {self.padding} samples for reflect padding, got {waveform.shape[-1]}; "
                "pad short inputs first"
            )
        x = F.pad(waveform.unsqueeze(1), (self.padding, self.padding), mode="reflect").squeeze(1)
        spectrum = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        # the epsilon keeps the gradient of sqrt finite at zero; it is small enough (1e-7 in magnitude)
        # that silence still reads as ``floor`` after a mel filterbank without area normalisation
        return torch.sqrt(spectrum.real.square() + spectrum.imag.square() + 1e-14)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.filters, self.magnitude(waveform))  # (batch, mel, frames)
        mel = torch.clamp(mel, min=float(self.config["floor"]))
        return torch.log(mel) if self.config["log_base"] == "e" else torch.log10(mel)


# --------------------------------------------------------------------------------------------
# generators


def _padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrisation of ``module`` into a plain weight (faster inference)."""
    for submodule in module.modules():
        if parametrize.is_parametrized(submodule, "weight"):
            parametrize.remove_parametrizations(submodule, "weight", leave_parametrized=True)
    return module


class MRFResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, LeakyReLU → dilated conv → LeakyReLU → conv, plus the input.

    forward(x: (batch, channel, time)) -> (batch, channel, time)
    """

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d)))
            for d in dilations
        )
        self.plain = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size)))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.dilated, self.plain, strict=True):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN generator (Kong et al., 2020), small.

    conv 7 → per rate r: [LeakyReLU → transposed conv (kernel k, stride r), channels halve →
    mean of the multi-receptive-field ResBlocks] → LeakyReLU → conv 7 → tanh.

    Shapes, with the defaults (B = batch, F = frames)
    -------------------------------------------------
    input        (batch, mel, frame)      B × 80 × F
    conv_pre     (batch, channel, time)   B × 128 × F
    upsampling   (batch, channel, time)   B × 64 × 8F → B × 32 × 40F → B × 16 × 160F
    output       (batch, time)            B × 160F, in (-1, 1)
    """

    def __init__(self, n_mels: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        rates = [int(r) for r in config["upsample_rates"]]
        kernels = [int(k) for k in config["upsample_kernel_sizes"]]
        if len(rates) != len(kernels) or any(k < r or (k - r) % 2 for r, k in zip(rates, kernels, strict=True)):
            raise ValueError(
                f"each upsample kernel must be >= its rate with an even difference, got rates {rates} "
                f"and kernels {kernels} (e.g. kernel = 2 × rate, or 2 × rate + 1 for an odd rate)"
            )
        if len(config["resblock_kernel_sizes"]) != len(config["resblock_dilation_sizes"]):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes need one entry per block")
        self.hop_length = int(math.prod(rates))
        channels = int(config["upsample_initial_channel"])
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(rates, kernels, strict=True):
            out_channels = channels // 2
            padding = (kernel - rate) // 2
            self.ups.append(
                weight_norm(nn.ConvTranspose1d(channels, out_channels, kernel, stride=rate, padding=padding))
            )
            blocks = zip(config["resblock_kernel_sizes"], config["resblock_dilation_sizes"], strict=True)
            self.resblocks.append(
                nn.ModuleList(MRFResBlock(out_channels, int(k), [int(d) for d in dilations]) for k, dilations in blocks)
            )
            channels = out_channels
        self.conv_post = weight_norm(nn.Conv1d(channels, 1, 7, padding=3))
        self.apply(_init_weights)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, mel, frame) → (batch, frame × hop_length)."""
        x = self.conv_pre(mel)
        for up, blocks in zip(self.ups, self.resblocks, strict=True):
            x = up(F.leaky_relu(x, 0.1))
            x = torch.stack([block(x) for block in blocks]).mean(dim=0)
        x = self.conv_post(F.leaky_relu(x, 0.01))
        return torch.tanh(x).squeeze(1)


class DilatedResidualStack(nn.Module):
    """MelGAN residual stack: per dilation 3**j, [LeakyReLU → reflect pad → dilated conv 3 → LeakyReLU →
    conv 1] plus a 1×1 shortcut.

    forward(x: (batch, channel, time)) -> (batch, channel, time)
    """

    def __init__(self, channels: int, n_layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        for j in range(n_layers):
            dilation = 3**j
            self.blocks.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2),
                    nn.ReflectionPad1d(dilation),
                    weight_norm(nn.Conv1d(channels, channels, 3, dilation=dilation)),
                    nn.LeakyReLU(0.2),
                    weight_norm(nn.Conv1d(channels, channels, 1)),
                )
            )
            self.shortcuts.append(weight_norm(nn.Conv1d(channels, channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, shortcut in zip(self.blocks, self.shortcuts, strict=True):
            x = shortcut(x) + block(x)
        return x


class MelGANGenerator(nn.Module):
    """MelGAN generator (Kumar et al., 2019), small.

    reflect pad → conv 7 → per ratio r: [LeakyReLU → transposed conv (kernel 2r, stride r), channels
    halve → dilated residual stack] → LeakyReLU → reflect pad → conv 7 → tanh.

    Shapes, with the defaults (B = batch, F = frames)
    -------------------------------------------------
    input        (batch, mel, frame)      B × 64 × F
    conv_pre     (batch, channel, time)   B × 128 × F
    upsampling   (batch, channel, time)   B × 64 × 8F → B × 32 × 64F → B × 16 × 128F → B × 8 × 256F
    output       (batch, time)            B × 256F, in (-1, 1)
    """

    def __init__(self, n_mels: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        ratios = [int(r) for r in config["ratios"]]
        self.hop_length = int(math.prod(ratios))
        channels = int(config["ngf"]) * 2 ** len(ratios)
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(n_mels, channels, 7))]
        for ratio in ratios:
            out_channels = channels // 2
            layers += [
                nn.LeakyReLU(0.2),
                weight_norm(
                    nn.ConvTranspose1d(
                        channels, out_channels, 2 * ratio, stride=ratio,
                        padding=ratio // 2 + ratio % 2, output_padding=ratio % 2,
                    )
                ),
                DilatedResidualStack(out_channels, int(config["n_residual_layers"])),
            ]
            channels = out_channels
        layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), weight_norm(nn.Conv1d(channels, 1, 7)), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, mel, frame) → (batch, frame × hop_length); at least 4 frames (reflection padding)."""
        if mel.shape[-1] < 4:
            raise ValueError(f"the MelGAN generator needs at least 4 mel frames, got {mel.shape[-1]}; pad the input")
        return self.model(mel).squeeze(1)


def build_generator(config: Mapping[str, Any]) -> nn.Module:
    """The generator of a merged config (:func:`merge_config`)."""
    n_mels = int(config["mel"]["n_mels"])
    if config["family"] == "hifigan":
        return HiFiGANGenerator(n_mels, config["generator"])
    if config["family"] == "melgan":
        return MelGANGenerator(n_mels, config["generator"])
    raise ValueError(f"unknown vocoder family {config['family']!r}; choose from {', '.join(VOCODER_FAMILIES)}")


# --------------------------------------------------------------------------------------------
# discriminator (optional, LSGAN)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN period sub-discriminator: the waveform folded into (time / p, p), 2-D convs along time.

    forward(x: (batch, time)) -> (score: (batch, n), features: list of activations)
    """

    def __init__(self, period: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.period = period
        convs, channels_in = [], 1
        for channels_out in channels:
            convs.append(weight_norm(nn.Conv2d(channels_in, channels_out, (5, 1), (3, 1), padding=(2, 0))))
            channels_in = channels_out
        convs.append(weight_norm(nn.Conv2d(channels_in, channels_in, (5, 1), 1, padding=(2, 0))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels_in, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, time = x.shape
        if time % self.period:
            x = F.pad(x.unsqueeze(1), (0, self.period - time % self.period), mode="reflect").squeeze(1)
        x = x.view(batch, 1, -1, self.period)
        return _run_convs(self.convs, self.post, x)


def _run_convs(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A sub-discriminator's stack: leaky-ReLU convs, then ``post``; (flattened score, every activation)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class ScaleDiscriminator(nn.Module):
    """MelGAN scale sub-discriminator: strided grouped 1-D convs on the (average-pooled) waveform.

    forward(x: (batch, time)) -> (score: (batch, n), features: list of activations)
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        convs: list[nn.Module] = [weight_norm(nn.Conv1d(1, channels[0], 15, padding=7))]
        channels_in = channels[0]
        for channels_out in channels[1:]:
            groups = math.gcd(channels_in, channels_out) // 4 or 1
            convs.append(weight_norm(nn.Conv1d(channels_in, channels_out, 41, 4, groups=groups, padding=20)))
            channels_in = channels_out
        convs.append(weight_norm(nn.Conv1d(channels_in, channels_in, 5, padding=2)))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv1d(channels_in, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = x.unsqueeze(1)
        return _run_convs(self.convs, self.post, x)


class VocoderDiscriminator(nn.Module):
    """Multi-period (one sub-discriminator per period) + multi-scale (waveform pooled ×1, ×2, ...).

    forward(x: (batch, time)) -> list over sub-discriminators of (score, features)
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = _merge(DISCRIMINATOR_DEFAULTS, config, "discriminator")
        cfg = self.config
        self.periods = nn.ModuleList(PeriodDiscriminator(int(p), cfg["period_channels"]) for p in cfg["periods"])
        self.scales = nn.ModuleList(ScaleDiscriminator(cfg["scale_channels"]) for _ in range(int(cfg["n_scales"])))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        outputs = [period(x) for period in self.periods]
        for index, scale in enumerate(self.scales):
            if index:
                x = F.avg_pool1d(x.unsqueeze(1), 4, 2, padding=2).squeeze(1)
            outputs.append(scale(x))
        return outputs


# --------------------------------------------------------------------------------------------
# losses


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions (Parallel WaveGAN).

    forward(generated: (batch, time), target: (batch, time)) -> (spectral_convergence, log_magnitude)
    """

    def __init__(self, resolutions: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        for index, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{index}", torch.hann_window(win), persistent=False)

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        convergence = generated.new_zeros(())
        magnitude = generated.new_zeros(())
        for index, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window{index}")
            kwargs: dict[str, Any] = dict(n_fft=n_fft, hop_length=hop, win_length=win, window=window,
                                          return_complex=True)
            g = torch.stft(generated, **kwargs).abs().clamp(min=1e-7)
            t = torch.stft(target, **kwargs).abs().clamp(min=1e-7)
            convergence = convergence + torch.linalg.norm(t - g) / torch.linalg.norm(t).clamp(min=1e-7)
            magnitude = magnitude + F.l1_loss(torch.log(g), torch.log(t))
        count = len(self.resolutions)
        return convergence / count, magnitude / count


def lsgan_discriminator_loss(
    real_outputs: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
    fake_outputs: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
) -> torch.Tensor:
    """Sum over sub-discriminators of mean (D(real) - 1)² + mean D(fake)²."""
    loss = real_outputs[0][0].new_zeros(())
    for (real, _), (fake, _) in zip(real_outputs, fake_outputs, strict=True):
        loss = loss + torch.mean((real - 1.0) ** 2) + torch.mean(fake**2)
    return loss


def lsgan_generator_loss(fake_outputs: Sequence[tuple[torch.Tensor, list[torch.Tensor]]]) -> torch.Tensor:
    """Sum over sub-discriminators of mean (D(fake) - 1)²."""
    loss = fake_outputs[0][0].new_zeros(())
    for fake, _ in fake_outputs:
        loss = loss + torch.mean((fake - 1.0) ** 2)
    return loss


def feature_matching_loss(
    real_outputs: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
    fake_outputs: Sequence[tuple[torch.Tensor, list[torch.Tensor]]],
) -> torch.Tensor:
    """Mean over layers, summed over sub-discriminators, of L1 between real and fake activations."""
    loss = fake_outputs[0][0].new_zeros(())
    for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs, strict=True):
        layer_losses = [F.l1_loss(f, r.detach()) for r, f in zip(real_features, fake_features, strict=True)]
        loss = loss + torch.stack(layer_losses).mean()
    return loss


class VocoderLoss(nn.Module):
    """The generator's reconstruction loss: ``stft_weight × (SC + log-mag) + mel_weight × mel L1``.

    forward(generated: (batch, time), target: (batch, time)) -> dict of scalar tensors
    ``{"total", "spectral_convergence", "log_magnitude", "mel"}`` (adversarial terms are added by the
    training loop, which owns the discriminator).
    """

    def __init__(self, front_end: MelFrontEnd, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = _merge(LOSS_DEFAULTS, config, "loss")
        self.front_end = front_end
        self.stft = MultiResolutionSTFTLoss(self.config["stft_resolutions"])

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if generated.shape != target.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ in shape")
        convergence, magnitude = self.stft(generated, target)
        mel = F.l1_loss(self.front_end(generated), self.front_end(target))
        total = self.config["stft_weight"] * (convergence + magnitude) + self.config["mel_weight"] * mel
        return {"total": total, "spectral_convergence": convergence, "log_magnitude": magnitude, "mel": mel}


# --------------------------------------------------------------------------------------------
# the vocoder: front-end + generator


class Vocoder(nn.Module):
    """A mel front-end and its generator; copy-synthesis of waveforms.

    Parameters
    ----------
    config
        A merged config (:func:`merge_config`); kept as ``self.config`` and saved with the weights.

    Attributes
    ----------
    sample_rate, hop_length
        The rate the vocoder works at (16 kHz) and the samples per mel frame.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = merge_config(config["family"], {k: v for k, v in config.items() if k != "family"})
        self.family = self.config["family"]
        self.front_end = MelFrontEnd(self.config["mel"])
        self.generator = build_generator(self.config)
        self.sample_rate = int(self.config["mel"]["sample_rate"])
        self.hop_length = int(self.config["mel"]["hop_length"])

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, time) with time a multiple of hop_length → (batch, time) re-synthesised."""
        if waveform.shape[-1] % self.hop_length:
            raise ValueError(
                f"waveform length {waveform.shape[-1]} is not a multiple of hop_length {self.hop_length}; "
                "pad it (resynthesize() does)"
            )
        return self.generator(self.front_end(waveform))

    @torch.no_grad()
    def resynthesize(
        self, samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE, peak_limit: float = 0.99
    ) -> np.ndarray:
        """Copy-synthesis of one utterance: (time,) float → (time,) float32, the input's length and RMS.

        The input is zero-padded to whole frames (at least one ``n_fft`` window), passed through the
        front-end and generator, trimmed to its length and scaled to its RMS — unless that would put a
        peak above ``peak_limit``, in which case it is scaled to that peak instead (a little quieter
        than the original rather than clipped: briefly trained generators are peakier than speech,
        and clipping only the fakes would hand a detector a shortcut). Silent input gives silence.
        Runs in the module's current mode: call ``.eval()`` first.
        """
        if sample_rate != self.sample_rate:
            raise ValueError(f"the vocoder works at {self.sample_rate} Hz, got {sample_rate} Hz; resample first")
        x = np.nan_to_num(np.asarray(samples, dtype=np.float64))
        if x.ndim != 1:
            raise ValueError(f"expected mono audio shaped (time,), got shape {x.shape}")
        n = len(x)
        target_rms = float(np.sqrt(np.mean(x**2))) if n else 0.0
        if target_rms < 1e-7:
            return np.zeros(n, dtype=np.float32)
        n_fft = int(self.config["mel"]["n_fft"])
        padded_length = max(n, n_fft)
        padded_length = -(-padded_length // self.hop_length) * self.hop_length
        padded = np.pad(x, (0, padded_length - n)).astype(np.float32)
        parameter = next(self.parameters())
        waveform = torch.from_numpy(padded).to(parameter.device).unsqueeze(0)
        y = self(waveform)[0, :n].double().cpu().numpy()
        y = np.nan_to_num(y)
        current = float(np.sqrt(np.mean(y**2)))
        if current <= 1e-12:
            return np.zeros(n, dtype=np.float32)
        gain = target_rms / current
        peak = float(np.abs(y).max()) * gain
        if peak > peak_limit:
            gain *= peak_limit / peak
        return np.clip(y * gain, -1.0, 1.0).astype(np.float32)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vocoder_payload(vocoder: Vocoder, **extra: Any) -> dict[str, Any]:
    """An in-memory checkpoint: ``{"format", "config", "generator", **extra}`` (save it with torch.save).

    ``generator`` is the state dict with weight norm (the training form), so training can resume from it.
    """
    return {
        "format": PAYLOAD_FORMAT,
        "config": copy.deepcopy(vocoder.config),
        "generator": {k: v.detach().cpu().clone() for k, v in vocoder.generator.state_dict().items()},
        **extra,
    }


def vocoder_from_payload(payload: Mapping[str, Any]) -> Vocoder:
    """Rebuild a :class:`Vocoder` (in eval mode) from :func:`vocoder_payload`'s dict."""
    if payload.get("format") != PAYLOAD_FORMAT:
        raise ValueError(
            f"not a vocoder checkpoint (format {payload.get('format')!r}, expected {PAYLOAD_FORMAT!r}); "
            "make one with scripts/train_vocoder.py"
        )
    vocoder = Vocoder(payload["config"])
    vocoder.generator.load_state_dict(payload["generator"])
    return vocoder.eval()
