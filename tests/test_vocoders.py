"""Neural vocoders for copy-synthesis spoofs (soundsentry.training.vocoders, scripts/train_vocoder.py,
scripts/make_neural_spoofs.py).

The speech is an espeak-ng sentence made here; the networks are the default configs or shrunken ones
so that everything runs on one CPU thread in seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from soundsentry.training import make_neural_spoofs, train_vocoder, vocoders
from soundsentry.training.vocoders import (
    MelFrontEnd,
    Vocoder,
    VocoderDiscriminator,
    VocoderLoss,
    merge_config,
    remove_weight_norm,
    vocoder_from_payload,
    vocoder_payload,
)
from tests.conftest import read_wav, speak

SR = 16000
SENTENCE = "Please call Stella and ask her to bring these things with her from the store."
# shrunken networks: same structure, few channels (fast on one thread)
TINY = {
    "hifigan": {"generator": {"upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7],
                              "resblock_dilation_sizes": [[1, 3], [1, 3]]}},
    "melgan": {"generator": {"ngf": 4, "n_residual_layers": 2}},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """~4 s espeak-ng sentence, 16 kHz mono float32."""
    samples, rate = read_wav(speak(SENTENCE, tmp_path_factory.mktemp("vocoder") / "sentence.wav"))
    assert rate == SR and len(samples) > 2 * SR
    return samples


def tiny_vocoder(family: str, seed: int = 0) -> Vocoder:
    torch.manual_seed(seed)
    return Vocoder(merge_config(family, TINY[family]))


# --------------------------------------------------------------------------------------------
# config and front-end


def test_merge_config_defaults_and_errors() -> None:
    hifigan, melgan = merge_config("hifigan"), merge_config("melgan")
    assert (hifigan["mel"]["hop_length"], hifigan["mel"]["n_mels"]) == (160, 80)
    assert (melgan["mel"]["hop_length"], melgan["mel"]["n_mels"]) == (256, 64)
    hifigan["mel"]["n_mels"] = 1  # a copy: the defaults are untouched
    assert merge_config("hifigan")["mel"]["n_mels"] == 80
    with pytest.raises(ValueError, match="unknown vocoder family"):
        merge_config("wavenet")
    with pytest.raises(ValueError, match="unknown hifigan generator settings"):
        merge_config("hifigan", {"generator": {"channels": 3}})
    with pytest.raises(ValueError, match="upsamples by 160 but the mel hop is 256"):
        merge_config("hifigan", {"mel": {"hop_length": 256}})
    with pytest.raises(ValueError, match="kernel must be >= its rate"):
        Vocoder(merge_config("hifigan", {"generator": {"upsample_kernel_sizes": [16, 10, 8]}}))


@pytest.mark.parametrize("family", vocoders.VOCODER_FAMILIES)
def test_front_end_frames_and_bands(family: str) -> None:
    config = merge_config(family)["mel"]
    front_end = MelFrontEnd(config)
    hop = config["hop_length"]
    mel = front_end(torch.zeros(2, 50 * hop))
    assert mel.shape == (2, config["n_mels"], 50)
    # silence is the floor, in the family's log base
    floor = np.log(1e-5) if config["log_base"] == "e" else np.log10(1e-5)
    assert torch.allclose(mel, torch.full_like(mel, floor), atol=1e-3)
    # a 1 kHz tone peaks in the band whose centre is nearest 1 kHz
    t = torch.arange(50 * hop) / SR
    tone = front_end((0.5 * torch.sin(2 * torch.pi * 1000.0 * t)).unsqueeze(0))
    peak_band = int(tone[0, :, 25].argmax())
    centres = front_end.filters.argmax(dim=1).float() * SR / config["n_fft"]  # (mel,) peak of each filter, Hz
    assert abs(float(centres[peak_band]) - 1000.0) <= 120.0
    with pytest.raises(ValueError, match="expected \\(batch, time\\)"):
        front_end(torch.zeros(50 * hop))


# --------------------------------------------------------------------------------------------
# generators, discriminator, losses


@pytest.mark.parametrize("family", vocoders.VOCODER_FAMILIES)
def test_generator_output_is_hop_times_frames(family: str) -> None:
    vocoder = Vocoder(merge_config(family))  # the default (full-size) configs
    hop = vocoder.hop_length
    for frames in (4, 7, 20):
        mel = torch.randn(2, vocoder.config["mel"]["n_mels"], frames)
        with torch.no_grad():
            audio = vocoder.generator(mel)
        assert audio.shape == (2, frames * hop)
        assert float(audio.abs().max()) < 1.0  # tanh
    with torch.no_grad():
        assert vocoder(torch.randn(1, 12 * hop) * 0.1).shape == (1, 12 * hop)
    with pytest.raises(ValueError, match="not a multiple of hop_length"):
        vocoder(torch.zeros(1, 12 * hop + 1))
    if family == "melgan":
        with pytest.raises(ValueError, match="at least 4 mel frames"):
            vocoder.generator(torch.zeros(1, 64, 3))


def test_discriminator_and_gan_losses() -> None:
    discriminator = VocoderDiscriminator({"periods": [2, 3], "period_channels": [4, 8], "scale_channels": [4, 8]})
    real, fake = torch.randn(2, 4000) * 0.1, torch.randn(2, 4000) * 0.1
    with torch.no_grad():
        real_outputs, fake_outputs = discriminator(real), discriminator(fake)
    assert len(real_outputs) == 2 + 2  # two periods + two scales
    for score, features in real_outputs:
        assert score.shape[0] == 2 and len(features) >= 3
    assert float(vocoders.lsgan_discriminator_loss(real_outputs, fake_outputs)) >= 0.0
    assert float(vocoders.lsgan_generator_loss(fake_outputs)) >= 0.0
    assert float(vocoders.feature_matching_loss(real_outputs, real_outputs)) == pytest.approx(0.0)


def test_stft_loss_is_zero_for_identical_and_positive_otherwise() -> None:
    loss = vocoders.MultiResolutionSTFTLoss([[256, 64, 256], [512, 128, 400]])
    x = torch.randn(2, 4000)
    convergence, magnitude = loss(x, x)
    assert float(convergence) == pytest.approx(0.0, abs=1e-6) and float(magnitude) == pytest.approx(0.0, abs=1e-6)
    convergence, magnitude = loss(0.5 * x, x)  # half the magnitude: SC = 0.5, log-mag = ln 2
    assert float(convergence) == pytest.approx(0.5, abs=1e-3)
    assert float(magnitude) == pytest.approx(np.log(2.0), abs=1e-3)


@pytest.mark.parametrize("family", vocoders.VOCODER_FAMILIES)
def test_training_steps_reduce_the_loss(speech: np.ndarray, family: str) -> None:
    vocoder = tiny_vocoder(family).train()
    loss_fn = VocoderLoss(vocoder.front_end)
    optimizer = torch.optim.Adam(vocoder.generator.parameters(), lr=3e-3)
    length = SR // 2 // vocoder.hop_length * vocoder.hop_length  # 0.5 s
    batch = torch.from_numpy(speech[SR // 2 : SR // 2 + length]).unsqueeze(0)
    losses = []
    for _ in range(12):
        loss = loss_fn(vocoder(batch), batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.9 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_gan_training_step_runs(tmp_path: Path) -> None:
    args = train_vocoder.parse_args(["--family", "melgan", "--output", str(tmp_path / "v.pt"), "--max-minutes", "1",
                                     "--gan-start-step", "0"])
    trainer = train_vocoder.Trainer(args)
    discriminator_before = [p.detach().clone() for p in trainer.discriminator.parameters()]
    record = trainer.train_step(torch.randn(1, 2048) * 0.1)
    assert {"total", "mel", "discriminator", "adversarial", "feature_matching"} <= set(record)
    assert trainer.step == 1
    after = trainer.discriminator.parameters()
    changed = [not torch.equal(a, b) for a, b in zip(discriminator_before, after, strict=True)]
    assert any(changed)


# --------------------------------------------------------------------------------------------
# copy-synthesis and checkpoints


@pytest.mark.parametrize("family", vocoders.VOCODER_FAMILIES)
def test_resynthesize_matches_length_and_rms(speech: np.ndarray, family: str) -> None:
    vocoder = tiny_vocoder(family).eval()
    quiet = speech * np.float32(0.3 / np.abs(speech).max())  # headroom: the RMS can be matched without clipping
    for samples in (quiet, quiet[:12345], quiet[:300]):  # whole, not whole frames, shorter than n_fft
        fake = vocoder.resynthesize(samples)
        assert fake.dtype == np.float32 and fake.shape == samples.shape
        assert np.isfinite(fake).all() and np.abs(fake).max() <= 1.0
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
        assert float(np.sqrt(np.mean(fake.astype(np.float64) ** 2))) == pytest.approx(rms, rel=0.05)
    assert not vocoder.resynthesize(np.zeros(SR, dtype=np.float32)).any()
    # loud input whose RMS-matched re-synthesis would clip: scaled to the peak limit instead
    loud = (0.95 * np.sign(speech) * np.abs(speech / np.abs(speech).max()) ** 0.2).astype(np.float32)
    fake = vocoder.resynthesize(loud, peak_limit=0.9)
    assert float(np.abs(fake).max()) == pytest.approx(0.9, abs=1e-4)
    assert float(np.sqrt(np.mean(fake.astype(np.float64) ** 2))) < float(np.sqrt(np.mean(loud.astype(np.float64) ** 2)))
    with pytest.raises(ValueError, match="resample first"):
        vocoder.resynthesize(speech, sample_rate=22050)
    with pytest.raises(ValueError, match="mono audio"):
        vocoder.resynthesize(np.stack([speech, speech]))


@pytest.mark.parametrize("family", vocoders.VOCODER_FAMILIES)
def test_checkpoint_round_trip(speech: np.ndarray, tmp_path: Path, family: str) -> None:
    vocoder = tiny_vocoder(family, seed=3).eval()
    path = tmp_path / f"{family}.pt"
    train_vocoder.save_checkpoint(path, vocoder_payload(vocoder, step=7), {"step": 7})
    payload = train_vocoder.load_checkpoint(path)  # weights_only=True
    assert payload["step"] == 7 and json.loads(path.with_name(path.name + ".json").read_text()) == {"step": 7}
    loaded = vocoder_from_payload(payload)
    assert loaded.config == vocoder.config and not loaded.training
    clip = speech[: SR // 2]
    expected = vocoder.resynthesize(clip)
    np.testing.assert_array_equal(loaded.resynthesize(clip), expected)
    remove_weight_norm(loaded.generator)  # folding weight norm for inference keeps the output
    np.testing.assert_allclose(loaded.resynthesize(clip), expected, atol=1e-4)
    with pytest.raises(ValueError, match="not a vocoder checkpoint"):
        vocoder_from_payload({"format": "something else"})


# --------------------------------------------------------------------------------------------
# the scripts, end to end on a tiny corpus


@pytest.fixture()
def tiny_corpus(tmp_path: Path, speech: np.ndarray) -> Path:
    """Three 'LibriSpeech' reals of three speakers and one of another source (the espeak sentence at
    different gains)."""
    corpus = tmp_path / "corpus"
    rows = []
    for index, gain in enumerate((0.5, 1.0, 0.8)):
        relative = f"librispeech/real/{index}-1-000{index}.flac"
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        sf.write(corpus / relative, speech[: 2 * SR + 1000 * index] * gain, SR, subtype="PCM_16")
        rows.append({"path": relative, "label": "real", "source": "librispeech", "system": "bonafide",
                     "speaker": f"libri_{index}", "duration_s": "2.0", "licence": "CC-BY-4.0", "origin": "test"})
    (corpus / "algan_vc" / "real").mkdir(parents=True)
    sf.write(corpus / "algan_vc" / "real" / "speaker_1__a.flac", speech[: 2 * SR] * 0.7, SR, subtype="PCM_16")
    rows.append({"path": "algan_vc/real/speaker_1__a.flac", "label": "real", "source": "algan_vc",
                 "system": "bonafide", "speaker": "speaker_1", "duration_s": "2.0", "licence": "MIT", "origin": "test"})
    with (corpus / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return corpus


def test_train_resume_then_make_spoofs(tiny_corpus: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "vocoders" / "melgan.pt"
    common = ["--family", "melgan", "--output", str(checkpoint), "--corpus", str(tiny_corpus), "--max-minutes", "2",
              "--batch-size", "1", "--segment-s", "0.25", "--val-speakers", "1"]
    assert train_vocoder.main([*common, "--steps", "2"]) == 0
    first = train_vocoder.load_checkpoint(checkpoint)
    assert first["step"] == 2 and len(first["history"]) == 1 and "val_lsd_db" in first["history"][0]
    assert train_vocoder.main([*common, "--steps", "3"]) == 0  # resumes
    assert train_vocoder.load_checkpoint(checkpoint)["step"] == 3
    fine_tuned = tmp_path / "vocoders" / "melgan_gan.pt"  # a new run continuing that one, the original kept
    rest = [a if a != str(checkpoint) else str(fine_tuned) for a in common]
    assert train_vocoder.main([*rest, "--steps", "4", "--gan-start-step", "3", "--start-from", str(checkpoint)]) == 0
    assert train_vocoder.load_checkpoint(fine_tuned)["step"] == 4
    assert "discriminator" in train_vocoder.load_checkpoint(fine_tuned)["history"][-1]
    assert train_vocoder.load_checkpoint(checkpoint)["step"] == 3

    spoofs = tmp_path / "spoofs"
    arguments = ["--vocoder", str(checkpoint), "--corpus", str(tiny_corpus), "--output-dir", str(spoofs)]
    assert make_neural_spoofs.main(arguments) == 0
    with (spoofs / "manifest_neural.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [f"melgan/{i}-1-000{i}.flac" for i in range(3)]
    assert {(r["label"], r["source"], r["system"]) for r in rows} == {("fake", "resynth_melgan", "melgan")}
    assert [r["speaker"] for r in rows] == ["libri_0", "libri_1", "libri_2"]
    for row in rows:
        fake, rate = sf.read(spoofs / row["path"], dtype="float32")
        real, _ = sf.read(tiny_corpus / row["origin"], dtype="float32")
        assert rate == SR and len(fake) == len(real)
        assert float(row["duration_s"]) == pytest.approx(len(real) / SR, abs=1e-3)
    assert json.loads((spoofs / "melgan" / "vocoder.json").read_text())["step"] == 3
    modified = (spoofs / rows[0]["path"]).stat().st_mtime_ns
    assert make_neural_spoofs.main(arguments) == 0  # resumable: nothing redone, nothing listed twice
    assert (spoofs / rows[0]["path"]).stat().st_mtime_ns == modified
    assert len((spoofs / "manifest_neural.csv").read_text().splitlines()) == 1 + 3

    # another source's reals on request, under a folder of that source's name
    other = tmp_path / "spoofs_other"
    assert make_neural_spoofs.main([*arguments[:-1], str(other), "--sources", "algan_vc"]) == 0
    with (other / "manifest_neural.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["path"], r["speaker"], r["origin"]) for r in rows] == [
        ("melgan/algan_vc/speaker_1__a.flac", "speaker_1", "algan_vc/real/speaker_1__a.flac")]
    assert (other / rows[0]["path"]).is_file()
