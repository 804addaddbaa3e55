"""Train a small neural vocoder (HiFi-GAN or MelGAN style) on the corpus's real LibriSpeech speech.

    python -m scripts.train_vocoder --family hifigan --max-minutes 18 --steps 100000 \\
        --output cache/vocoders/hifigan.pt [--corpus ../shared/corpus] [--batch-size 2] [--lr 1e-3]
        [--gan-start-step N] [--start-from CHECKPOINT] [--save-every-minutes 5] [--restart]

The vocoder is trained to copy-synthesise real speech (waveform → mel → waveform) so that
``scripts/make_neural_spoofs.py`` can turn every real LibriSpeech utterance into a fake with the same
speaker and words (Wang & Yamagishi, ICASSP 2023). Quality does not need to be high: the generator's
artefacts are the point.

Data: random ``--segment-s`` segments (default 1 s, rounded down to whole mel frames) of the
``librispeech`` reals of ``CORPUS/manifest.csv``, read with soundfile, each scaled to a random peak
in [0.3, 0.95]. The files of ``--val-speakers`` speakers (default 4, chosen by a hash of the seed)
are held out: at each save the log-spectral distance of their re-synthesis (a fixed 2 s clip each)
is logged. Each step's batch is drawn from ``numpy.random.default_rng([seed, step])``, so a resumed
run sees the same data as an uninterrupted one.

Losses: multi-resolution STFT (spectral convergence + log magnitude) + mel L1; with
``--gan-start-step N`` a small multi-period + multi-scale discriminator joins at step N (LSGAN +
feature matching).

Checkpoint (``--output``, torch, loads with ``weights_only=True``): :func:`soundsentry.training.vocoders.
vocoder_payload` (``format``, ``config``, ``generator``) plus ``step``, ``training`` (optimiser and
discriminator state, for resuming), ``history`` and ``metadata``; beside it ``<output>.json`` with the
config, the last losses and validation figures. Saved every ``--save-every-minutes`` and at the end,
atomically. An existing ``--output`` is resumed (``--steps`` is the total to reach) unless
``--restart``; ``--start-from CHECKPOINT`` starts a new ``--output`` from another run (the
adversarial fine-tuning of a reconstruction-only vocoder). ``--max-minutes`` bounds this
invocation's wall clock, the final save included.

Run it niced and single-threaded on shared machines (``--threads 1`` is the default):
``OMP_NUM_THREADS=1 nice -n 19 python -m scripts.train_vocoder ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from soundsentry.constants import CHECKOUT
from soundsentry.training.common import provenance
from soundsentry.training.spoofs import log_spectral_distance
from soundsentry.training.vocoders import (
    SAMPLE_RATE,
    VOCODER_FAMILIES,
    Vocoder,
    VocoderDiscriminator,
    VocoderLoss,
    count_parameters,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    merge_config,
    vocoder_from_payload,
    vocoder_payload,
)

ROOT = CHECKOUT
SOURCE = "librispeech"
VALIDATION_CLIP_S = 2.0
log = logging.getLogger("train_vocoder")


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class AudioFile:
    path: Path
    speaker: str
    frames: int


def read_sources(corpus: Path) -> list[AudioFile]:
    """The real LibriSpeech files of ``corpus/manifest.csv`` with their lengths in samples."""
    manifest = corpus / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest}; pass --corpus DIR")
    files = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] != SOURCE or row["label"] != "real":
                continue
            path = corpus / row["path"]
            info = sf.info(path)
            if info.samplerate != SAMPLE_RATE:
                raise SystemExit(f"{path}: {info.samplerate} Hz, expected {SAMPLE_RATE} Hz")
            files.append(AudioFile(path, row["speaker"], int(info.frames)))
    if not files:
        raise SystemExit(f"{manifest} lists no real {SOURCE} files")
    return files


def split_speakers(files: list[AudioFile], n_val_speakers: int, seed: int) -> tuple[list[AudioFile], list[AudioFile]]:
    """(train, validation) with whole speakers held out, chosen by a hash of seed and speaker."""
    speakers = sorted({f.speaker for f in files}, key=lambda s: zlib.crc32(f"{seed}:{s}".encode()))
    held_out = set(speakers[: max(0, n_val_speakers)])
    train = [f for f in files if f.speaker not in held_out]
    val = [f for f in files if f.speaker in held_out]
    if not train:
        raise SystemExit("no training files left after holding out validation speakers; lower --val-speakers")
    return train, val


def read_segment(file: AudioFile, start: int, length: int) -> np.ndarray:
    samples, _ = sf.read(file.path, start=start, frames=length, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    return np.pad(samples, (0, length - len(samples)))


def sample_batch(files: list[AudioFile], batch_size: int, segment_samples: int, seed: int, step: int) -> torch.Tensor:
    """(batch, segment_samples): random segments, files weighted by length, random peak in [0.3, 0.95]."""
    rng = np.random.default_rng([seed, step])
    weights = np.array([f.frames for f in files], dtype=np.float64)
    chosen = rng.choice(len(files), size=batch_size, p=weights / weights.sum())
    batch = np.zeros((batch_size, segment_samples), dtype=np.float32)
    for row, index in enumerate(chosen):
        file = files[index]
        start = int(rng.integers(0, max(1, file.frames - segment_samples + 1)))
        segment = read_segment(file, start, segment_samples)
        peak = float(np.abs(segment).max())
        gain = min(rng.uniform(0.3, 0.95) / peak, 10.0) if peak > 1e-4 else 1.0
        batch[row] = segment * gain
    return torch.from_numpy(batch)


def validation_clips(files: list[AudioFile], hop_length: int) -> list[np.ndarray]:
    """A fixed 2 s clip (whole frames) from the middle of each validation file."""
    length = int(VALIDATION_CLIP_S * SAMPLE_RATE) // hop_length * hop_length
    clips = []
    for file in files:
        start = max(0, (file.frames - length) // 2)
        clips.append(read_segment(file, start, length))
    return clips


# --------------------------------------------------------------------------------------------
# training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=VOCODER_FAMILIES, required=True)
    parser.add_argument("--output", type=Path, required=True, help="checkpoint path, e.g. cache/vocoders/hifigan.pt")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="corpus folder holding manifest.csv (default ../shared/corpus)")
    parser.add_argument("--max-minutes", type=float, required=True,
                        help="wall-clock budget of this invocation, final save included")
    parser.add_argument("--steps", type=int, default=1_000_000, help="total steps to reach (default: many)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--segment-s", type=float, default=1.0, help="segment length in seconds (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--gan-start-step", type=int, default=None,
                        help="switch the discriminator on at this step (default: never, reconstruction only)")
    parser.add_argument("--val-speakers", type=int, default=4, help="speakers held out for validation (default 4)")
    parser.add_argument("--log-every", type=int, default=25, help="steps between log lines (default 25)")
    parser.add_argument("--save-every-minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing --output and start afresh")
    parser.add_argument("--start-from", type=Path, default=None,
                        help="when --output does not exist yet, continue this checkpoint's training into it (the "
                             "adversarial fine-tuning starts from the reconstruction-only vocoder)")
    args = parser.parse_args(argv)
    if args.max_minutes <= 0 or args.batch_size < 1 or args.segment_s <= 0:
        parser.error("--max-minutes, --batch-size and --segment-s must be positive")
    return args


def save_checkpoint(path: Path, payload: dict[str, Any], summary: dict[str, Any]) -> None:
    """torch.save ``payload`` to ``path`` and ``summary`` to ``path.json``, each atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    torch.save(payload, partial)
    os.replace(partial, path)
    sidecar = path.with_name(path.name + ".json")
    partial = sidecar.with_name(sidecar.name + ".part")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, sidecar)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The dict saved by :func:`save_checkpoint` (our own artefacts only: weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def validate(vocoder: Vocoder, loss_fn: VocoderLoss, clips: list[np.ndarray]) -> dict[str, float]:
    """Reconstruction loss and log-spectral distance (dB) of the held-out clips."""
    if not clips:
        return {}
    was_training = vocoder.training
    vocoder.eval()
    batch = torch.from_numpy(np.stack(clips))
    generated = vocoder(batch)
    losses = loss_fn(generated, batch)
    lsd = [log_spectral_distance(clip, vocoder.resynthesize(clip)) for clip in clips]
    vocoder.train(was_training)
    return {"val_loss": float(losses["total"]), "val_mel": float(losses["mel"]), "val_lsd_db": float(np.mean(lsd))}


class Trainer:
    """The state of one run: networks, optimisers, step, history; resumable from a checkpoint."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = merge_config(args.family)
        self.vocoder = Vocoder(self.config).train()
        self.loss_fn = VocoderLoss(self.vocoder.front_end, self.config["loss"])
        self.optimizer = torch.optim.AdamW(self.vocoder.generator.parameters(), lr=args.lr, betas=(0.8, 0.99))
        self.discriminator = VocoderDiscriminator(self.config["discriminator"]).train()
        self.optimizer_d = torch.optim.AdamW(self.discriminator.parameters(), lr=args.lr, betas=(0.8, 0.99))
        self.step = 0
        self.train_seconds = 0.0  # summed over invocations
        self.history: list[dict[str, float]] = []

    def resume(self, payload: dict[str, Any], path: Path) -> None:
        if payload["config"]["family"] != self.args.family:
            raise SystemExit(f"{path} holds a {payload['config']['family']} vocoder, not "
                             f"{self.args.family}; pass another --output or --restart")
        self.vocoder = vocoder_from_payload(payload).train()
        self.config = self.vocoder.config
        self.loss_fn = VocoderLoss(self.vocoder.front_end, self.config["loss"])
        self.optimizer = torch.optim.AdamW(self.vocoder.generator.parameters(), lr=self.args.lr, betas=(0.8, 0.99))
        training = payload["training"]
        self.optimizer.load_state_dict(training["optimizer"])
        self.discriminator.load_state_dict(training["discriminator"])
        self.optimizer_d.load_state_dict(training["optimizer_d"])
        for group in (*self.optimizer.param_groups, *self.optimizer_d.param_groups):
            group["lr"] = self.args.lr
        self.step = int(payload["step"])
        self.train_seconds = float(training["train_seconds"])
        self.history = list(payload["history"])

    def gan_on(self) -> bool:
        return self.args.gan_start_step is not None and self.step >= self.args.gan_start_step

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        generated = self.vocoder(batch)
        losses = self.loss_fn(generated, batch)
        total = losses["total"]
        record = {name: float(value.detach()) for name, value in losses.items()}
        if self.gan_on():
            # discriminator step on a detached copy, then the generator's adversarial terms
            real_outputs = self.discriminator(batch)
            fake_outputs = self.discriminator(generated.detach())
            loss_d = lsgan_discriminator_loss(real_outputs, fake_outputs)
            self.optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.optimizer_d.step()
            self.discriminator.requires_grad_(False)  # the generator's step must not touch D
            fake_outputs = self.discriminator(generated)
            with torch.no_grad():
                real_outputs = self.discriminator(batch)
            self.discriminator.requires_grad_(True)
            adversarial = lsgan_generator_loss(fake_outputs)
            matching = feature_matching_loss(real_outputs, fake_outputs)
            weights = self.config["loss"]
            total = total + weights["adversarial_weight"] * adversarial + weights["feature_matching_weight"] * matching
            record.update(discriminator=float(loss_d.detach()), adversarial=float(adversarial.detach()),
                          feature_matching=float(matching.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.vocoder.generator.parameters(), 10.0)
        self.optimizer.step()
        record["total"] = float(total.detach())
        self.step += 1
        return record

    def payload(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return vocoder_payload(
            self.vocoder,
            step=self.step,
            training={
                "optimizer": self.optimizer.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "optimizer_d": self.optimizer_d.state_dict(),
                "train_seconds": self.train_seconds,
            },
            history=self.history,
            metadata=metadata,
        )


def _mean_records(records: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in records for k in r})
    return {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    deadline = started + 60.0 * args.max_minutes
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)

    trainer = Trainer(args)
    start = args.output if args.output.is_file() else args.start_from
    if start is not None and not args.restart:
        trainer.resume(load_checkpoint(start), start)
        log.info("resumed %s at step %d (%.1f min trained before)", start, trainer.step,
                 trainer.train_seconds / 60)
    files = read_sources(args.corpus)
    train_files, val_files = split_speakers(files, args.val_speakers, args.seed)
    hop = trainer.vocoder.hop_length
    segment_samples = int(args.segment_s * SAMPLE_RATE) // hop * hop
    clips = validation_clips(val_files, hop)
    log.info("%s: %d generator parameters, hop %d, %d mel bands; %d train files (%.1f min), %d validation "
             "files (%d speakers); batch %d × %d samples; lr %g; GAN %s", args.family,
             count_parameters(trainer.vocoder.generator), hop, trainer.config["mel"]["n_mels"], len(train_files),
             sum(f.frames for f in train_files) / SAMPLE_RATE / 60, len(val_files), args.val_speakers,
             args.batch_size, segment_samples, args.lr,
             "off" if args.gan_start_step is None else f"from step {args.gan_start_step}")

    metadata = {
        "family": args.family,
        "corpus": str(args.corpus),
        "train_files": len(train_files),
        "validation_speakers": sorted({f.speaker for f in val_files}),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **provenance(),
    }

    def save(reason: str) -> dict[str, float]:
        tick = time.perf_counter()
        val = validate(trainer.vocoder, trainer.loss_fn, clips)
        recent = _mean_records(window) if window else {}
        entry = {"step": trainer.step, "train_minutes": trainer.train_seconds / 60, **recent, **val}
        trainer.history.append(entry)
        summary = {"config": trainer.config, "step": trainer.step, "train_minutes": trainer.train_seconds / 60,
                   "steps_per_second": steps_per_second(), "last": entry, "metadata": metadata}
        save_checkpoint(args.output, trainer.payload(metadata), summary)
        log.info("%s: saved %s at step %d; %s (%.0f s)", reason, args.output, trainer.step,
                 ", ".join(f"{k} {v:.3f}" for k, v in val.items()), time.perf_counter() - tick)
        return val

    session_steps = 0
    session_train_s = 0.0

    def steps_per_second() -> float:
        return session_steps / session_train_s if session_train_s else float("nan")

    window: list[dict[str, float]] = []
    last_save = time.perf_counter()
    save_cost = 30.0  # reserve for a validation + save until one has been timed
    step_cost = 0.0
    while trainer.step < args.steps:
        now = time.perf_counter()
        # stop early enough that one more step plus the final save fits the budget
        if now + 1.5 * step_cost + save_cost > deadline:
            break
        if now - last_save > 60.0 * args.save_every_minutes:
            tick = time.perf_counter()
            save("periodic")
            save_cost = 1.5 * (time.perf_counter() - tick)
            last_save = time.perf_counter()
            continue
        tick = time.perf_counter()
        batch = sample_batch(train_files, args.batch_size, segment_samples, args.seed, trainer.step)
        record = trainer.train_step(batch)
        elapsed = time.perf_counter() - tick
        step_cost = elapsed if step_cost == 0.0 else 0.9 * step_cost + 0.1 * elapsed
        trainer.train_seconds += elapsed
        session_steps += 1
        session_train_s += elapsed
        window.append(record)
        if not np.isfinite(record["total"]):
            raise SystemExit(f"loss is not finite at step {trainer.step}; lower --lr")
        if trainer.step % args.log_every == 0:
            means = _mean_records(window[-args.log_every :])
            log.info("step %d  %s  | %.3f steps/s, %.1f min elapsed", trainer.step,
                     "  ".join(f"{k} {v:.3f}" for k, v in means.items()), steps_per_second(),
                     (time.perf_counter() - started) / 60)
            window = window[-args.log_every :]
    window = window[-args.log_every :]
    val = save("final")
    log.info("done: step %d, %.3f steps/s this session (%d steps in %.1f min of training), wall %.1f min; "
             "last %d steps: %s; validation: %s", trainer.step, steps_per_second(), session_steps,
             session_train_s / 60, (time.perf_counter() - started) / 60, len(window),
             ", ".join(f"{k} {v:.3f}" for k, v in _mean_records(window).items()),
             ", ".join(f"{k} {v:.3f}" for k, v in val.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
