"""Train the CNN-Transformer scorer and write data/cnn_transformer.pt (+ .json), in one command.

    nice -n 10 python -m scripts.train_cnn_transformer --features linear --eval-devset --benchmark

Steps
-----
1. **items**: ``--data`` manifests (default: ../shared/corpus and cache/spoofs, the LibriSpeech
   re-synthesis fakes made by ``scripts.make_spoofs``).
2. **split**: about ``--holdout`` of the speakers are held out, grouped (a LibriSpeech speaker's reals
   and the fakes re-synthesised from them stay together) and stratified by label
   (``StratifiedGroupKFold``, first fold). The held-out part picks the epoch (early stopping) and
   drives ``ReduceLROnPlateau``; nothing else is fitted on it.
3. **cache**: each file is augmented ``--variants`` times by :mod:`soundsentry.training.augment`, the same
   label-blind way for both classes (``--augmentation``): ``random`` chains of codecs, noise, reverb,
   RawBoost, band limits and gain, a quarter of them "none"; ``opus``: the file as it is, then
   Opus/WEBM round trips at browser bitrates (nothing else); ``none``: each file once, as it is,
   which the devset preferred to ``random``: data/NOTES.md. The log spectrograms of every variant
   (before the per-utterance normalisation, applied on loading) are cached under ``--cache`` as
   float16, for both feature kinds at once, so that ``--features mel`` after ``--features linear``
   (or another ``--normalisation``) costs no new augmentation. Data preparation runs in
   ``--workers`` processes, one torch thread each.
4. **train**: each epoch draws ``--windows-per-epoch`` random windows of 128 frames (2.05 s) from the
   training variants, half real and half fake (class-balanced), files in proportion to their length.
   AdamW, BCE on logits (``--head one_class``: OC-softmax's loss instead), gradient clipping,
   ``ReduceLROnPlateau`` on the held-out file-level EER, early stopping after ``--patience`` epochs
   without improvement, a wall-clock cap ``--max-minutes``.
   Windows are normalised over their whole file, or with ``--normalise-span LEAST MOST`` over a random
   span of LEAST-MOST seconds around them (floored and normalised on its own), the way the service
   normalises each scoring segment (a 4 s chunk, or a stretch of at most 10 s) over itself. Held-out
   files are normalised whole either way. ``--spec-augment N`` zeroes N stretches of bands and N of
   frames in each training window (SpecAugment), both classes alike. ``--ema DECAY`` keeps an
   exponential moving average of the weights over the optimiser's steps and re-estimates its batch-norm
   statistics on 1024 of the epoch's windows; that average, not the last step's weights, is what each
   epoch's held-out check scores and what is saved.
5. **save**: the best epoch's weights → ``--output`` (float16 weights, config, feature definition,
   metadata) and the same metadata as JSON beside it.
6. ``--eval-devset``: the saved artefact scores every ../shared/devset file (whole file, windows pooled)
   — validation only: nothing is trained, normalised or selected on it. Pooled EER (every fake
   against every real) and per source (that source's fakes against all reals) go into the metadata,
   each file's score into ARTEFACT.devset.csv (``scripts.compare_runs`` compares two such files).
   ``--benchmark``: milliseconds to score one 4 s chunk with 1 and 2 torch threads.

Everything is seeded (``--seed``): the split, the augmentation of each file (from the seed and the
file's path, not the order of work), the windows drawn and the initial weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from soundsentry.audio import decode_file
from soundsentry.constants import CHECKOUT
from soundsentry.datasets import AudioItem, load_items
from soundsentry.errors import InputError
from soundsentry.evaluation.metrics import eer, per_group
from soundsentry.models.cnn_transformer import CNN_TRANSFORMER_DEFAULTS, HEADS, CNNTransformer, loss_for
from soundsentry.models.spectral import (
    FEATURE_KINDS,
    NORMALISATIONS,
    SpectralFeatures,
    SpectralFrontEnd,
    SpectralScorer,
    inference_copy,
    load_artefact,
    normalise,
    save_artefact,
    spectrogram_windows,
)
from soundsentry.training.common import provenance
from soundsentry.training.make_spoofs import write_manifest_rows

ROOT = CHECKOUT
log = logging.getLogger("train_cnn_transformer")

DEFAULT_DATA = (ROOT.parent / "shared" / "corpus" / "manifest.csv", ROOT / "cache" / "spoofs" / "manifest.csv")
DEFAULT_DEVSET = ROOT.parent / "shared" / "devset" / "manifest.csv"
#: the columns of ``--eval-devset``'s per-file scores (ARTEFACT.devset.csv), those ``scripts.compare_runs`` reads
DEVSET_SCORE_COLUMNS = ("path", "chunk", "label", "source", "status", "probability")
#: held-out EER + this × held-out loss picks the epoch and drives ReduceLROnPlateau: the loss (≈0.1-0.7)
#: moves the criterion by less than one held-out EER step (1/~600 file variants), so it only breaks ties;
#: OC-softmax's loss (``--head one_class``, ≈2-7) weighs a few steps, still less than epochs differ by
SELECTION_LOSS_WEIGHT = 1e-3
#: training windows of the epoch that re-estimate the batch-norm statistics of ``--ema``'s averaged weights
BATCH_NORM_WINDOWS = 1024
#: how training files are augmented (``--augmentation``; :func:`variant_folder`)
AUGMENTATIONS = ("random", "opus", "none")


@dataclass
class TrainConfig:
    """One experiment; copied into the artefact's metadata."""

    features: dict[str, Any] = field(default_factory=dict)  # SpectralFeatures overrides
    model_config: dict[str, Any] = field(default_factory=dict)  # CNNTransformer overrides
    variants: int = 3
    augmentation: str = "random"  # one of AUGMENTATIONS; "none" makes variants 1
    holdout: float = 0.15
    epochs: int = 12
    windows_per_epoch: int = 4096
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 150
    lr_factor: float = 0.5
    lr_patience: int = 1
    patience: int = 4
    max_minutes: float = 22.0
    heldout_max_windows: int = 3  # per held-out file variant, evenly spread
    seed: int = 0
    split_seed: int | None = None  # the held-out split's seed; None: ``seed``
    # Normalise each training window over a random span of this many seconds around it (floor and
    # mean/variance, as the service treats a 4 s chunk), not over its whole file. None: whole file.
    normalise_span_s: tuple[float, float] | None = None
    # SpecAugment-style masking of training windows (Park et al., 2019): this many stretches of up to
    # ``mask_width`` bands and as many of up to ``mask_width`` frames set to 0 (the normalised mean). 0: off.
    spec_masks: int = 0
    mask_width: int = 16
    # Exponential moving average of the weights, updated after every step (decay per step; 128 steps an
    # epoch at the defaults), its batch-norm statistics re-estimated before each check. 0: off.
    ema_decay: float = 0.0
    threads: int = 1  # measured faster than 2 on the shared 2-core machine

    @property
    def holdout_seed(self) -> int:
        """Networks meant to be averaged share this, so the fusion sees speakers none of them trained on."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# seeds and items


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def item_key(item: AudioItem) -> str:
    """The cache name of a file: its path, label, size and modification time (a file re-rendered in
    place, e.g. by ``make_zoo``, gets a new key rather than the old file's spectrogram)."""
    stat = item.path.stat()
    name = f"{item.path.resolve()}|{item.label}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def item_seed(item: AudioItem, variant: int, seed: int) -> int:
    """Seed of one file's augmentation: from the base seed, the file's name and system, the variant."""
    digest = hashlib.sha256(f"{seed}:{item.path.name}:{item.system}:{variant}".encode()).hexdigest()
    return int(digest[:8], 16)


def group_of(item: AudioItem) -> str:
    return item.speaker or str(item.path)


def split_holdout(items: Sequence[AudioItem], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): whole speaker groups, stratified by label."""
    n_splits = max(2, round(1.0 / fraction))
    labels = np.array([item.label for item in items])
    groups = np.array([group_of(item) for item in items])
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, held = next(splitter.split(np.zeros(len(items)), labels, groups))
    return train, held


# --------------------------------------------------------------------------------------------
# augmented spectrogram cache


def variant_folder(augmentation: str, seed: int, variant: int) -> str:
    """The cache folder of one variant: "clean" for the file as it is (``none``, and ``opus``'s first
    variant, so the two share it), else one per augmentation, seed and variant."""
    if augmentation == "none" or (augmentation == "opus" and variant == 0):
        return "clean"
    if augmentation == "opus":
        return f"opus-seed{seed}-v{variant}"
    if augmentation == "random":
        return f"seed{seed}-v{variant}"
    raise ValueError(f"unknown augmentation {augmentation!r}; choose from {', '.join(AUGMENTATIONS)}")


def cache_path(
    cache: Path, features: SpectralFeatures, seed: int, variant: int, item: AudioItem,
    augmentation: str = "random",
) -> Path:
    """Where the (not yet normalised) log spectrogram of one file variant lives."""
    folder = variant_folder(augmentation, seed, variant)
    return cache / f"{features.kind}-{features.log_power_key}" / folder / f"{item_key(item)}.npy"


def _init_worker() -> None:
    torch.set_num_threads(1)


def _prepare_one(job: tuple[AudioItem, int, int, list[dict[str, Any]], str, str]) -> tuple[str, int, str]:
    """Augment one file once (or not, for a "clean" variant) and cache its spectrogram for every feature
    definition in the job."""
    from soundsentry.training.augment import apply_augmentation, browser_codec_augmentation, random_augmentation

    item, variant, seed, feature_dicts, cache, augmentation = job
    try:
        samples = decode_file(item.path).samples
    except InputError as error:
        return str(item.path), variant, f"skipped: {error.message}"
    if variant_folder(augmentation, seed, variant) == "clean":
        audio, description = samples, "clean"
    else:
        rng = np.random.default_rng(item_seed(item, variant, seed))
        chain = browser_codec_augmentation(rng) if augmentation == "opus" else random_augmentation(rng)
        audio, description = apply_augmentation(samples, chain, rng), chain.describe()
    for values in feature_dicts:
        features = SpectralFeatures.from_dict(values)
        target = cache_path(Path(cache), features, seed, variant, item, augmentation)
        target.parent.mkdir(parents=True, exist_ok=True)
        spectrogram = SpectralFrontEnd(features).log_power(audio).numpy().astype(np.float16)
        temporary = target.with_suffix(f".{os.getpid()}.tmp.npy")  # parallel trainers share the cache
        np.save(temporary, spectrogram)
        temporary.replace(target)
    return str(item.path), variant, description


def build_cache(
    items: Sequence[AudioItem], features: Sequence[SpectralFeatures], *, variants: int, seed: int, cache: Path,
    workers: int, augmentation: str = "random",
) -> None:
    """Make every missing (file, variant) spectrogram; resumable (each file is written atomically)."""
    jobs = [
        (item, variant, seed, [f.to_dict() for f in features], str(cache), augmentation)
        for item in items
        for variant in range(variants)
        if not all(cache_path(cache, f, seed, variant, item, augmentation).is_file() for f in features)
    ]
    if not jobs:
        return
    log.info("augmenting and caching %d file variants with %d worker(s)", len(jobs), workers)
    started = time.perf_counter()
    chains_file = cache / f"augmentations-seed{seed}.csv"
    chains_file.parent.mkdir(parents=True, exist_ok=True)
    with chains_file.open("a", newline="") as handle:
        writer = csv.writer(handle)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            for done, (path, variant, description) in enumerate(pool.map(_prepare_one, jobs, chunksize=4), 1):
                writer.writerow([path, variant, description])
                if done % 200 == 0 or done == len(jobs):
                    elapsed = time.perf_counter() - started
                    log.info("  %d/%d (%.0f s, %.0f s left)", done, len(jobs), elapsed,
                             elapsed / done * (len(jobs) - done))


@dataclass
class SpectrogramSet:
    """Normalised spectrograms of (file, variant) pairs, with the file's label and owner."""

    spectrograms: list[np.ndarray]  # each (band, frame) float16
    labels: np.ndarray  # (entry,), 1 = fake
    item_index: np.ndarray  # (entry,) index into the item list

    @classmethod
    def load(
        cls, items: Sequence[AudioItem], indices: Sequence[int], features: SpectralFeatures, *, variants: int,
        seed: int, cache: Path, augmentation: str = "random", normalised: bool = True,
    ) -> SpectrogramSet:
        """``normalised=False`` keeps the cached log power as it is (for :func:`span_window`)."""
        spectrograms, labels, owners = [], [], []
        for index in indices:
            for variant in range(variants):
                path = cache_path(cache, features, seed, variant, items[index], augmentation)
                if path.is_file():
                    log_power = np.load(path).astype(np.float32)
                    if normalised:
                        log_power = normalise(torch.from_numpy(log_power), features.normalisation).numpy()
                    spectrograms.append(log_power.astype(np.float16))
                    labels.append(items[index].label)
                    owners.append(index)
        return cls(spectrograms, np.array(labels, dtype=np.int64), np.array(owners, dtype=np.int64))

    @property
    def frames(self) -> np.ndarray:
        return np.array([s.shape[1] for s in self.spectrograms])


def random_window(spectrogram: np.ndarray, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random (band, n_frames) crop; short spectrograms are tiled as at inference."""
    total = spectrogram.shape[1]
    if total < n_frames:
        return np.tile(spectrogram, (1, -(-n_frames // total)))[:, :n_frames]
    start = int(rng.integers(0, total - n_frames + 1))
    return spectrogram[:, start : start + n_frames]


def span_window(log_power: np.ndarray, features: SpectralFeatures, span_frames: tuple[int, int],
                rng: np.random.Generator) -> np.ndarray:
    """A random window of a random span of ``span_frames`` (least, most) frames, the span floored and
    normalised on its own as :class:`~soundsentry.models.spectral.SpectralFrontEnd` treats a segment."""
    total = log_power.shape[1]
    length = min(total, int(rng.integers(span_frames[0], span_frames[1] + 1)))
    start = int(rng.integers(0, total - length + 1))
    span = log_power[:, start : start + length].astype(np.float32)
    span = np.maximum(span, span.max() - features.dynamic_range_db / 10.0 * math.log(10.0))
    span = normalise(torch.from_numpy(span), features.normalisation).numpy()
    return random_window(span, features.n_frames, rng)


def window_batch(windows: Sequence[np.ndarray], first: int, size: int) -> torch.Tensor:
    """Windows ``first`` to ``first + size`` as one float32 (batch, band, frame) tensor."""
    return torch.from_numpy(np.stack(windows[first : first + size]).astype(np.float32))


def draw_epoch(
    data: SpectrogramSet, n_windows: int, n_frames: int, rng: np.random.Generator,
    span: tuple[SpectralFeatures, tuple[int, int]] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """``n_windows`` (window, label) pairs: half of each class, entries weighted by length. With ``span``
    (features, (least, most) frames) the entries are raw log power, cut by :func:`span_window`."""
    weights = np.maximum(data.frames, n_frames).astype(np.float64)
    chosen = []
    for label, count in ((0, n_windows // 2), (1, n_windows - n_windows // 2)):
        members = np.flatnonzero(data.labels == label)
        p = weights[members] / weights[members].sum()
        chosen.append(rng.choice(members, size=count, p=p))
    entries = rng.permutation(np.concatenate(chosen))
    if span is not None:
        return [span_window(data.spectrograms[e], *span, rng) for e in entries], data.labels[entries]
    return [random_window(data.spectrograms[e], n_frames, rng) for e in entries], data.labels[entries]


def spec_augment(window: np.ndarray, masks: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of a normalised (band, frame) window with ``masks`` band stretches and ``masks`` frame
    stretches, each 0 to ``width`` wide, set to 0 (SpecAugment's frequency and time masks)."""
    window = window.copy()
    for axis in (0, 1):
        for _ in range(masks):
            size = int(rng.integers(0, width + 1))
            start = int(rng.integers(0, window.shape[axis] - size + 1))
            if axis == 0:
                window[start : start + size, :] = 0.0
            else:
                window[:, start : start + size] = 0.0
    return window


def span_frames(features: SpectralFeatures, seconds: tuple[float, float]) -> tuple[int, int]:
    """(least, most) seconds → frames, at least one window."""
    least, most = (max(features.n_frames, round(s * features.sample_rate / features.hop_length)) for s in seconds)
    return least, max(least, most)


# --------------------------------------------------------------------------------------------
# training


@torch.inference_mode()
def heldout_scores(model: CNNTransformer, data: SpectrogramSet, n_frames: int, max_windows: int) -> np.ndarray:
    """Mean logit per held-out entry, over at most ``max_windows`` evenly spread windows."""
    fast = inference_copy(model)
    windows, counts = [], []
    for spectrogram in data.spectrograms:
        w = spectrogram_windows(torch.from_numpy(spectrogram.astype(np.float32)), n_frames)
        if w.shape[0] > max_windows:
            w = w[np.linspace(0, w.shape[0] - 1, max_windows).round().astype(int)]
        windows.append(w)
        counts.append(w.shape[0])
    logits = torch.cat([fast(batch) for batch in torch.split(torch.cat(windows), 64)])
    return torch.stack([c.mean() for c in torch.split(logits, counts)]).numpy()


def train(config: TrainConfig, features: SpectralFeatures, train_set: SpectrogramSet, held_set: SpectrogramSet,
          ) -> tuple[CNNTransformer, dict[str, Any]]:
    """Train; return the best epoch's model (by held-out EER) and the history."""
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = CNNTransformer({**config.model_config, "n_bands": features.n_bands, "n_frames": features.n_frames})
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    loss_fn = loss_for(model.config)  # batches are class-balanced by draw_epoch
    average = None if not config.ema_decay else AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    checked = model if average is None else average.module  # what each epoch scores and keeps
    span = None if config.normalise_span_s is None else (features, span_frames(features, config.normalise_span_s))
    best: dict[str, Any] = {"criterion": float("inf"), "epoch": -1, "state": None}
    history, started, step = [], time.perf_counter(), 0
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        windows, labels = draw_epoch(train_set, config.windows_per_epoch, features.n_frames, rng, span)
        if config.spec_masks:
            windows = [spec_augment(w, config.spec_masks, config.mask_width, rng) for w in windows]
        model.train()
        losses = []
        for first in range(0, len(windows), config.batch_size):
            batch = window_batch(windows, first, config.batch_size)
            target = torch.from_numpy(labels[first : first + config.batch_size].astype(np.float32))
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), target)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            if average is not None:
                average.update_parameters(model)
            if step < config.warmup_steps:
                warmup.step()
            step += 1
            losses.append(float(loss.detach()))
        if average is not None:  # batch-norm statistics of the averaged weights, not of the last step's
            update_bn((window_batch(windows, first, config.batch_size)
                       for first in range(0, min(len(windows), BATCH_NORM_WINDOWS), config.batch_size)), checked)
        checked.eval()
        logits = heldout_scores(checked, held_set, features.n_frames, config.heldout_max_windows)
        held_loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(held_set.labels.astype(np.float32))))
        held_eer = eer(held_set.labels, logits)
        criterion = held_eer + SELECTION_LOSS_WEIGHT * held_loss  # EER first, the loss breaks ties
        plateau.step(criterion)
        record = {
            "epoch": epoch + 1, "train_loss": float(np.mean(losses)), "heldout_loss": held_loss,
            "heldout_eer": held_eer, "lr": optimiser.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - epoch_started, 1),
        }
        history.append(record)
        log.info("epoch %d: train loss %.4f, held-out loss %.4f, held-out EER %.4f, lr %.1e, %.0f s", *(
            record[k] for k in ("epoch", "train_loss", "heldout_loss", "heldout_eer", "lr", "seconds")))
        if criterion < best["criterion"]:
            best = {"criterion": criterion, "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in checked.state_dict().items()}}
        elif epoch + 1 - best["epoch"] >= config.patience:
            log.info("early stop: no held-out improvement for %d epochs", config.patience)
            break
        minutes = (time.perf_counter() - started) / 60
        if minutes + record["seconds"] / 60 > config.max_minutes:
            log.info("stopping at the %.0f-minute cap (%.1f minutes used)", config.max_minutes, minutes)
            break
    model.load_state_dict(best["state"])
    model = model.to(memory_format=torch.contiguous_format).eval()
    summary = {"best_epoch": best["epoch"], "epochs_run": len(history), "history": history,
               "training_minutes": round((time.perf_counter() - started) / 60, 2)}
    return model, summary


def heldout_report(model: CNNTransformer, items: Sequence[AudioItem], held_set: SpectrogramSet,
                   features: SpectralFeatures, config: TrainConfig) -> dict[str, Any]:
    """Held-out EER of the chosen model: pooled, per fake system (vs all held-out reals), per source."""
    logits = heldout_scores(model, held_set, features.n_frames, config.heldout_max_windows)
    labels = held_set.labels
    systems = np.array([items[i].system for i in held_set.item_index])
    sources = np.array([items[i].source for i in held_set.item_index])
    return {
        "eer": eer(labels, logits),
        "file_variants": int(len(labels)), "fake_file_variants": int(labels.sum()),
        "per_system_eer_vs_all_reals": per_group(labels, logits, systems),
        "per_source_eer_within_source": per_group(labels, logits, sources, within=True),
        "scoring": f"whole file variant, mean logit of at most {config.heldout_max_windows} windows",
    }


# --------------------------------------------------------------------------------------------
# devset and timing


def evaluate_devset(scorer: SpectralScorer, manifest: Path, scores_csv: Path | None = None) -> dict[str, Any]:
    """Score every file (whole file, windows pooled). Pooled EER and per source (its fakes vs all reals).
    ``scores_csv``: also write each file's score there, in ``run_test``'s ``predictions.csv`` columns, so
    that ``scripts.compare_runs`` can compare two networks file by file with intervals."""
    items = load_items(manifest)
    scores, labels, sources, skipped, rows = [], [], [], [], []
    for item in items:
        try:
            samples = decode_file(item.path).samples
        except InputError as error:
            skipped.append(f"{item.path.name}: {error.message}")
            continue
        scores.append(scorer.score(samples))
        labels.append(item.label)
        sources.append(item.source)
        rows.append({"path": str(item.path), "chunk": "", "label": item.label_name, "source": item.source,
                     "status": "ok", "probability": f"{scores[-1]:.6f}"})
    if scores_csv is not None:
        write_manifest_rows(scores_csv, rows, DEVSET_SCORE_COLUMNS)
    scores_a, labels_a, sources_a = np.array(scores), np.array(labels), np.array(sources)
    real = labels_a == 0
    report: dict[str, Any] = {"files": len(scores), "skipped": skipped, "pooled_eer": eer(labels_a, scores_a),
                              "per_source_eer": per_group(labels_a, scores_a, sources_a),
                              "per_source_eer_within_source": per_group(labels_a, scores_a, sources_a, within=True)}
    report["mean_score"] = {"real": float(scores_a[real].mean()), "fake": float(scores_a[~real].mean())}
    return report


def benchmark(scorer: SpectralScorer, thread_counts: Sequence[int] = (1, 2), repeats: int = 50) -> dict[str, Any]:
    """Median and 90th-percentile milliseconds to score one 4 s chunk (front-end included)."""
    rng = np.random.default_rng(0)
    chunk = (0.1 * rng.standard_normal(4 * scorer.sample_rate)).astype(np.float32)
    before = torch.get_num_threads()
    result = {}
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for _ in range(5):
                scorer.score(chunk)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                scorer.score(chunk)
                times.append((time.perf_counter() - start) * 1000)
            result[f"{threads}_thread"] = {"median_ms": float(np.median(times)),
                                           "p90_ms": float(np.percentile(times, 90))}
    finally:
        torch.set_num_threads(before)
    result["windows_per_4s_chunk"] = len(scorer.windows(chunk))
    return result


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", choices=FEATURE_KINDS, default="linear",
                        help="linear: STFT power pooled into 128 linear bands (62.5 Hz each, to 8 kHz); "
                             "mel: 128 log-mel bands; high: the top 128 STFT bins (4-8 kHz at --n-fft 512; "
                             "what ships) (default linear)")
    parser.add_argument("--n-fft", type=int, default=SpectralFeatures.n_fft,
                        help="STFT length in samples (default %(default)s); with --features high the input is "
                             "the top 128 of its n_fft/2 bins: 4-8 kHz at 512, 6-8 kHz at 1024")
    parser.add_argument("--normalisation", choices=NORMALISATIONS, default="utterance",
                        help="per-utterance mean/variance over all values, per band, or per band and then "
                             "minus each frame's mean over the bands (default utterance)")
    parser.add_argument("--normalise-span", type=float, nargs=2, metavar=("LEAST_S", "MOST_S"),
                        help="normalise each training window over a random span of LEAST_S-MOST_S seconds "
                             "around it, as the service normalises a chunk over itself (default: over the "
                             "whole file)")
    parser.add_argument("--spec-augment", type=int, default=TrainConfig.spec_masks, metavar="MASKS",
                        help="SpecAugment: MASKS band stretches and MASKS frame stretches of up to 16 each, "
                             "zeroed in every training window (default 0: off)")
    parser.add_argument("--ema", type=float, default=TrainConfig.ema_decay, metavar="DECAY",
                        help="check and save an exponential moving average of the weights with this decay per "
                             "step (e.g. 0.997; default 0: off)")
    parser.add_argument("--data", type=Path, nargs="+", action="extend", help="training manifest or folder; repeatable "
                        "(default: ../shared/corpus/manifest.csv and cache/spoofs/manifest.csv)")
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "cnn_transformer.pt",
                        help="artefact path; metadata goes beside it as .json (default data/cnn_transformer.pt)")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "cnn",
                        help="augmented spectrogram cache (default cache/cnn)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="most epochs (default %(default)s)")
    parser.add_argument("--windows-per-epoch", type=int, default=TrainConfig.windows_per_epoch)
    parser.add_argument("--variants", type=int, default=TrainConfig.variants,
                        help="augmented copies of each file (default %(default)s)")
    parser.add_argument("--augmentation", choices=AUGMENTATIONS, default=TrainConfig.augmentation,
                        help="random: label-blind random chains; opus: the file as it is plus --variants - 1 "
                             "Opus/WEBM round trips at browser bitrates; none: each file once, as it is "
                             "(--variants is ignored) (default %(default)s)")
    parser.add_argument("--no-augmentation", dest="augmentation", action="store_const", const="none",
                        help="the same as --augmentation none (older artefacts' recorded commands use it)")
    parser.add_argument("--holdout", type=float, default=TrainConfig.holdout,
                        help="fraction of speaker groups held out for epoch selection (default %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience, help="early-stopping epochs")
    parser.add_argument("--max-minutes", type=float, default=TrainConfig.max_minutes,
                        help="wall-clock cap on the training loop (default %(default)s)")
    parser.add_argument("--model-config", type=json.loads, default={},
                        help='JSON overrides of the network, e.g. \'{"d_model": 128}\'')
    parser.add_argument("--head", choices=HEADS,
                        help="the network's last layer and loss: a linear logit with BCE, or one_class: OC-softmax "
                             f"(a compact real class, fakes anywhere else; default {CNN_TRANSFORMER_DEFAULTS['head']})")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch threads for training")
    parser.add_argument("--workers", type=int, default=2, help="processes for augmentation (1 thread each)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--split-seed", type=int, help="seed of the held-out split alone (default: --seed); "
                        "give networks that will be averaged the same one")
    parser.add_argument("--limit", type=int, help="only N files per label (quick runs)")
    parser.add_argument("--eval-devset", nargs="?", type=Path, const=DEFAULT_DEVSET, default=None,
                        metavar="MANIFEST", help="after training, score ../shared/devset (validation only)")
    parser.add_argument("--benchmark", action="store_true", help="time one 4 s chunk with 1 and 2 threads")
    parser.add_argument("--prepare-only", action="store_true", help="build the cache and stop")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="ARTEFACT",
                        help="train nothing: write the given artefacts' networks to --output as one ensemble "
                             "(window logits averaged); they must share the input and the held-out split "
                             "(train them with one --split-seed). --eval-devset and --benchmark apply")
    return parser.parse_args(argv)


def select_items(locations: Sequence[Path], limit: int | None, seed: int) -> list[AudioItem]:
    items = [item for location in locations for item in load_items(location)]
    if limit:
        rng = np.random.default_rng(seed)
        items = [items[i] for label in (0, 1)
                 for i in sorted(rng.permutation([j for j, it in enumerate(items) if it.label == label])[:limit])]
    return items


def combine(paths: Sequence[Path], command: str) -> tuple[list[CNNTransformer], SpectralFeatures, dict[str, Any]]:
    """Networks of several artefacts as one ensemble, with metadata that keeps each member's record.
    The members must share the input and the held-out speakers (the fusion is fitted on those)."""
    members = [load_artefact(path) for path in paths]
    features, data = members[0][1], members[0][2].get("data", {})
    for path, (_, other_features, metadata) in zip(paths, members, strict=True):
        if other_features != features:
            raise SystemExit(f"{path} takes other input than {paths[0]}: {other_features} vs {features}")
        if metadata.get("data", {}).get("heldout_groups") != data.get("heldout_groups"):
            raise SystemExit(f"{path} held out other speakers than {paths[0]}: train the members of an ensemble "
                             "with the same --split-seed")
    metadata = {
        "trained": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
        "ensemble_of": [{"artefact": str(path), **{k: m[k] for k in ("trained", "command", "heldout", "training",
                                                                      "devset") if k in m}}
                        for path, (_, _, m) in zip(paths, members, strict=True)],
        "data": data,
        "versions": provenance(),
    }
    return [network for networks, _, _ in members for network in networks], features, metadata


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    command = "python -m scripts.train_cnn_transformer " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.combine:
        networks, features, metadata = combine(args.combine, command)
        return finish(args, networks, features, metadata)
    config = TrainConfig(
        features={"kind": args.features, "normalisation": args.normalisation, "n_fft": args.n_fft},
        model_config=args.model_config if args.head is None else {**args.model_config, "head": args.head},
        variants=1 if args.augmentation == "none" else args.variants, augmentation=args.augmentation,
        holdout=args.holdout, epochs=args.epochs, windows_per_epoch=args.windows_per_epoch,
        learning_rate=args.learning_rate, patience=args.patience, max_minutes=args.max_minutes, seed=args.seed,
        threads=args.threads, split_seed=args.split_seed,
        normalise_span_s=None if args.normalise_span is None else tuple(args.normalise_span),
        spec_masks=args.spec_augment, ema_decay=args.ema,
    )
    features = SpectralFeatures(**config.features)
    every_kind = [SpectralFeatures(**{**config.features, "kind": kind}) for kind in FEATURE_KINDS]
    items = select_items(args.data or DEFAULT_DATA, args.limit, args.seed)
    train_idx, held_idx = split_holdout(items, config.holdout, config.holdout_seed)
    log.info("%d files (%d fake), %d speaker groups; held out %d files of %d groups", len(items),
             sum(i.label for i in items), len({group_of(i) for i in items}), len(held_idx),
             len({group_of(items[i]) for i in held_idx}))

    prep_started = time.perf_counter()
    build_cache(items, every_kind, variants=config.variants, seed=config.seed, cache=args.cache, workers=args.workers,
                augmentation=config.augmentation)
    prep_minutes = (time.perf_counter() - prep_started) / 60
    if args.prepare_only:
        return {}
    train_set = SpectrogramSet.load(items, train_idx, features, variants=config.variants, seed=config.seed,
                                    cache=args.cache, augmentation=config.augmentation,
                                    normalised=config.normalise_span_s is None)
    held_set = SpectrogramSet.load(items, held_idx, features, variants=config.variants, seed=config.seed,
                                   cache=args.cache, augmentation=config.augmentation)

    torch.set_num_threads(config.threads)
    model, summary = train(config, features, train_set, held_set)
    metadata: dict[str, Any] = {
        "trained": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "config": config.to_dict(),
        "data": {
            "manifests": [str(p) for p in (args.data or DEFAULT_DATA)],
            "files": len(items), "fake_files": sum(i.label for i in items),
            "files_per_source_label": {f"{k[0]}/{k[1]}": v for k, v in
                                       sorted(Counter((i.source, i.label_name) for i in items).items())},
            "train_file_variants": len(train_set.labels), "heldout_file_variants": len(held_set.labels),
            "heldout_groups": sorted({group_of(items[i]) for i in held_idx}),
        },
        "heldout": heldout_report(model, items, held_set, features, config),
        "training": summary,
        "data_preparation_minutes": round(prep_minutes, 2),
        "versions": provenance(),
    }
    log.info("held-out EER %.4f (best epoch %d of %d)", metadata["heldout"]["eer"], summary["best_epoch"],
             summary["epochs_run"])
    return finish(args, model, features, metadata)


def finish(args: argparse.Namespace, networks: CNNTransformer | list[CNNTransformer], features: SpectralFeatures,
           metadata: dict[str, Any]) -> dict[str, Any]:
    """Save, then score the saved artefact on the devset and time it if asked, and save with those figures."""
    save_artefact(args.output, networks, features, metadata)

    scorer = SpectralScorer(*load_artefact(args.output)[:2])  # evaluate what ships (float16 round trip)
    if args.eval_devset:
        metadata["devset"] = evaluate_devset(scorer, args.eval_devset, args.output.with_suffix(".devset.csv"))
        log.info("devset pooled EER %.4f, per source %s", metadata["devset"]["pooled_eer"],
                 {k: round(v, 4) for k, v in metadata["devset"]["per_source_eer"].items()})
    if args.benchmark:
        metadata["timing_4s_chunk"] = benchmark(scorer)
        log.info("one 4 s chunk: %s", metadata["timing_4s_chunk"])
    save_artefact(args.output, networks, features, metadata)
    log.info("wrote %s and %s", args.output, args.output.with_suffix(".json"))
    return metadata


if __name__ == "__main__":
    main()
