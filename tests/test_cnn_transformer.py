"""The CNN-Transformer scorer: network shapes, front-end, a smoke training, the artefact on disk.

Audio is made here with espeak-ng (reals) and Griffin-Lim re-synthesis of it (fakes); the shipped
``data/cnn_transformer.pt`` is only loaded and run, not judged.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsentry.audio import decode_file
from soundsentry.constants import SAMPLE_RATE
from soundsentry.errors import ModelLoadError
from soundsentry.evaluation.metrics import eer
from soundsentry.models.cnn_transformer import (
    CNN_TRANSFORMER_DEFAULTS,
    ONE_CLASS_FAKE_MARGIN,
    ONE_CLASS_REAL_MARGIN,
    ONE_CLASS_SCALE,
    CNNTransformer,
    OneClassHead,
    one_class_loss,
)
from soundsentry.models.spectral import (
    ARTEFACT_FORMAT,
    DEFAULT_ARTEFACT,
    FEATURE_KINDS,
    SpectralFeatures,
    SpectralFrontEnd,
    SpectralScorer,
    band_matrix,
    frozen_copy,
    inference_copy,
    save_artefact,
    spectrogram_windows,
    window_starts,
)
from soundsentry.training.spoofs import griffin_lim_resynthesis
from tests.conftest import speak

TINY = {"channels": (4, 8, 8), "d_model": 32, "n_heads": 2, "ff_dim": 64, "head_hidden": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    """~5 s of espeak-ng speech, (time,) float32 at 16 kHz."""
    return decode_file(speech_wav).samples


@pytest.fixture(scope="module")
def real_and_fake(audio_dir: Path, speech: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two espeak-ng voices (real) and their Griffin-Lim re-synthesis (fake)."""
    other = decode_file(speak("Six spoons of fresh snow peas for the kids.", audio_dir / "cnn-other.wav",
                              voice="en-gb", pitch=65)).samples
    reals = [speech, other]
    return reals, [griffin_lim_resynthesis(x, sample_rate=SAMPLE_RATE) for x in reals]


def tiny_model(seed: int = 0) -> CNNTransformer:
    torch.manual_seed(seed)
    return CNNTransformer(TINY)


# --------------------------------------------------------------------------------------------
# network


def test_shapes_through_the_network() -> None:
    """(batch, band, frame) → conv blocks (batch, channel, band/8, frame/8) → (batch,) logits."""
    model = CNNTransformer().eval()
    x = torch.randn(3, 128, 128)  # (batch, band, frame)
    with torch.inference_mode():
        maps = model.cnn(x.unsqueeze(1))
        assert maps.shape == (3, 128, 16, 16)  # (batch, channel, band, time)
        assert model.project.in_features == 128 * 16  # channel·band → d_model
        assert model(x).shape == (3,)
        assert model(torch.randn(1, 128, 256)).shape == (1,)  # longer windows: more time steps
    assert sum(p.numel() for p in model.parameters()) < 3_000_000  # a few MB in float16


def test_config_is_merged_not_mutated_and_checked() -> None:
    model = CNNTransformer({"d_model": 64, "n_heads": 4})
    assert model.config["d_model"] == 64 and CNN_TRANSFORMER_DEFAULTS["d_model"] == 256
    with pytest.raises(ValueError, match="unknown"):
        CNNTransformer({"layers": 3})
    with pytest.raises(ValueError, match="bands"):
        CNNTransformer()(torch.randn(1, 64, 128))


def test_one_class_head_scores_the_angle_to_the_real_direction_with_oc_softmax_margins() -> None:
    """OC-softmax: logit α(c − cos) with c between the margins; reals are penalised below the real
    margin, fakes above the fake margin, each with loss log 2 exactly at its margin."""
    head = OneClassHead(4)
    with torch.no_grad():
        head.direction.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))  # only its direction counts
    angles = torch.tensor([0.0, 0.5, 1.0, 2.0])
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(4), torch.zeros(4)], dim=1) * 3
    logits = head(embeddings).squeeze(-1)  # (batch, 1) like the linear head's last layer
    middle = (ONE_CLASS_REAL_MARGIN + ONE_CLASS_FAKE_MARGIN) / 2
    assert torch.allclose(logits, ONE_CLASS_SCALE * (middle - torch.cos(angles)), atol=1e-5)
    assert torch.all(torch.diff(logits) > 0)  # further from the real direction: more fake
    at_margin = ONE_CLASS_SCALE * (middle - torch.tensor([ONE_CLASS_REAL_MARGIN, ONE_CLASS_FAKE_MARGIN]))
    for logit, target in zip(at_margin, (0.0, 1.0), strict=True):
        loss = one_class_loss(logit.reshape(1), torch.tensor([target]))
        assert float(loss) == pytest.approx(np.log(2.0), abs=1e-5)
    assert one_class_loss(torch.tensor([-30.0]), torch.tensor([0.0])) < 1e-3  # confidently real and real
    assert one_class_loss(torch.tensor([-30.0]), torch.tensor([1.0])) > 30  # confidently real but fake
    with pytest.raises(ValueError, match="head"):
        CNNTransformer({"head": "softmax"})


@pytest.mark.parametrize("head", ["linear", "one_class"])
def test_inference_and_frozen_copies_match_the_eval_model(head: str) -> None:
    torch.manual_seed(0)
    model = CNNTransformer({**TINY, "head": head})
    with torch.no_grad():  # non-trivial batch-norm statistics
        for block in model.cnn:
            block.norm.running_mean.uniform_(-0.5, 0.5)
            block.norm.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(2, 128, 128)
    frozen = frozen_copy(model)  # traced with two windows: any number must work
    with torch.inference_mode():
        assert torch.allclose(inference_copy(model)(x), model(x), atol=1e-4)
        for windows in (1, 2, 7, 16):
            x = torch.randn(windows, 128, 128)
            assert torch.allclose(frozen(x), model(x), atol=1e-4)
    assert model.cnn[0].norm is not None and isinstance(model.cnn[0].norm, torch.nn.BatchNorm2d)  # untouched


# --------------------------------------------------------------------------------------------
# front-end and windows


@pytest.mark.parametrize("kind", ["linear", "mel", "high"])
def test_front_end_shape_and_level_invariance(kind: str, speech: np.ndarray) -> None:
    front_end = SpectralFrontEnd(SpectralFeatures(kind=kind))
    features = front_end(speech)
    assert features.shape == (128, 1 + speech.size // 256)  # (band, frame)
    assert abs(float(features.mean())) < 1e-4 and float(features.std()) == pytest.approx(1.0, abs=1e-3)
    quieter = front_end(speech * 0.05)
    # float32 rounding of the faint upper band of espeak speech (tens of dB below the low band)
    assert torch.allclose(features, quieter, atol=1e-2 if kind == "high" else 1e-3)


@pytest.mark.parametrize("how", ["utterance_band", "utterance_band_frame"])
def test_band_normalisations_remove_each_bands_level_and_keep_the_gain_out(how: str, speech: np.ndarray) -> None:
    front_end = SpectralFrontEnd(SpectralFeatures(kind="high", normalisation=how))
    features = front_end(speech)
    if how == "utterance_band":
        assert features.mean(dim=1).abs().max() < 1e-4
        assert torch.allclose(features.std(dim=1, unbiased=False), torch.ones(128), atol=1e-3)
    else:  # and then each frame's level over the bands
        assert features.mean(dim=0).abs().max() < 1e-4
        assert float(features.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
        per_band = SpectralFrontEnd(SpectralFeatures(kind="high", normalisation="utterance_band"))(speech)
        assert not torch.allclose(features, per_band)
    assert torch.allclose(features, front_end(speech * 0.05), atol=1e-2)


def test_linear_bands_are_62_5_hz_wide_up_to_8_khz() -> None:
    bands = band_matrix(SpectralFeatures(kind="linear"))  # (bin, band)
    assert bands.shape == (257, 128)
    assert torch.allclose(bands.sum(dim=0), torch.ones(128))
    assert bands[0].sum() == 0  # DC left out
    assert bands[255:, 127].tolist() == [0.5, 0.5]  # the last band ends at Nyquist
    assert (band_matrix(SpectralFeatures(kind="mel")).sum(dim=0) > 0).all()  # no empty mel band


def test_high_bands_are_the_top_stft_bins_from_4_khz() -> None:
    bands = band_matrix(SpectralFeatures(kind="high"))  # (bin, band): one bin each
    assert bands.shape == (257, 128)
    assert [int(bands[:, b].argmax()) for b in (0, 127)] == [129, 256]  # 4031 Hz ... 8000 Hz
    assert torch.equal(bands.sum(dim=0), torch.ones(128)) and bands[:129].sum() == 0
    with pytest.raises(ValueError, match="top n_bands"):
        SpectralFeatures(kind="high", n_fft=128, n_bands=128)
    finer = band_matrix(SpectralFeatures(kind="high", n_fft=1024))  # `--n-fft 1024`: 6-8 kHz at 15.6 Hz
    assert finer.shape == (513, 128) and [int(finer[:, b].argmax()) for b in (0, 127)] == [385, 512]


def test_windows_cover_long_segments_and_tile_short_ones() -> None:
    assert window_starts(251, 128) == [0, 123]  # a 4 s chunk: two windows
    assert window_starts(128, 128) == [0]
    assert window_starts(400, 128) == [0, 91, 181, 272]
    short = torch.arange(50, dtype=torch.float32).repeat(128, 1)  # (band, frame)
    tiled = spectrogram_windows(short, 128)
    assert tiled.shape == (1, 128, 128) and tiled[0, 0, 50] == 0 and tiled[0, 0, 127] == 27


def test_front_end_rejects_bad_input() -> None:
    front_end = SpectralFrontEnd()
    with pytest.raises(ValueError, match="mono"):
        front_end(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="too short"):
        front_end(np.zeros(100, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# smoke training


def test_smoke_training_decreases_the_loss(real_and_fake) -> None:
    reals, fakes = real_and_fake
    scorer_front_end = SpectralFrontEnd(SpectralFeatures(kind="linear"))
    windows, labels = [], []
    for label, clips in ((0.0, reals), (1.0, fakes)):
        for clip in clips:
            w = spectrogram_windows(scorer_front_end(clip), 128)
            windows.append(w)
            labels += [label] * len(w)
    x, y = torch.cat(windows), torch.tensor(labels)
    model = tiny_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize(("span", "masks", "ema", "head"),
                         [(None, 0, 0.0, "linear"), ((2.0, 10.0), 2, 0.0, "linear"), (None, 0, 0.9, "linear"),
                          (None, 0, 0.0, "one_class")],
                         ids=["whole-file", "span-masked", "weight-average", "one-class"])
def test_training_loop_of_the_script_runs_and_keeps_the_best_epoch(real_and_fake, span, masks, ema, head) -> None:
    from soundsentry.training.train_cnn_transformer import SpectrogramSet, TrainConfig, heldout_scores, train

    reals, fakes = real_and_fake
    features = SpectralFeatures(kind="mel")
    front_end = SpectralFrontEnd(features)
    spectrograms = [front_end(c).numpy().astype(np.float16) for c in reals + fakes]
    held = SpectrogramSet(spectrograms, np.array([0, 0, 1, 1]), np.arange(4))
    data = held if span is None else SpectrogramSet(  # span normalisation trains on the raw log power
        [front_end.log_power(c).numpy().astype(np.float16) for c in reals + fakes], held.labels, held.item_index)
    config = TrainConfig(model_config={**TINY, "head": head}, epochs=3, windows_per_epoch=32, batch_size=16,
                         warmup_steps=1, learning_rate=3e-3, threads=1, normalise_span_s=span, spec_masks=masks,
                         ema_decay=ema)
    model, summary = train(config, features, data, held)
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    best = summary["history"][summary["best_epoch"] - 1]["heldout_eer"]
    assert best == min(h["heldout_eer"] for h in summary["history"])
    assert not model.training
    # what is returned is what that epoch checked (with --ema: the averaged weights, not the last step's)
    assert eer(held.labels, heldout_scores(model, held, features.n_frames, config.heldout_max_windows)) == best


def test_span_windows_are_normalised_over_their_span_like_a_chunk_at_run_time(speech: np.ndarray) -> None:
    """``--normalise-span``: a window cut from raw log power, floored and normalised over its own span.
    With a span of exactly one window, each band of the window has zero mean and unit deviation, the
    window is an affine image of a stretch of the raw input, and the gain of the input changes nothing."""
    from soundsentry.training.train_cnn_transformer import span_frames, span_window

    features = SpectralFeatures(kind="high", normalisation="utterance_band")
    assert span_frames(features, (2.0, 10.0)) == (128, 625)  # 2 s is 125 frames: at least one window
    assert span_frames(features, (4.0, 3.0)) == (250, 250)
    raw = SpectralFrontEnd(features).log_power(speech).numpy()
    window = span_window(raw, features, (128, 128), np.random.default_rng(3))
    assert window.shape == (128, 128)
    np.testing.assert_allclose(window.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(window.std(axis=1), 1.0, atol=1e-3)
    louder = span_window(raw + 2.0, features, (128, 128), np.random.default_rng(3))  # +2 in log power: gain
    np.testing.assert_allclose(louder, window, atol=1e-4)
    band = 60  # a band whose raw values the floor does not touch much: find the window's stretch
    correlation = [np.corrcoef(raw[band, s : s + 128], window[band])[0, 1] for s in range(raw.shape[1] - 127)]
    assert max(correlation) > 0.99
    wide = [span_window(raw, features, (128, 625), np.random.default_rng(seed)) for seed in range(20)]
    assert all(w.shape == (128, 128) for w in wide)
    assert np.abs(np.mean([w.mean(axis=1) for w in wide])) < 0.5 and max(np.abs(w.mean()) for w in wide) > 1e-3


def test_spec_augment_zeroes_stretches_of_bands_and_frames_and_nothing_else() -> None:
    from soundsentry.training.train_cnn_transformer import spec_augment

    rng = np.random.default_rng(0)
    window = rng.normal(size=(128, 128)).astype(np.float32) + 5.0  # no zeros of its own
    masked = spec_augment(window, 2, 16, np.random.default_rng(1))
    assert masked.shape == window.shape and not np.shares_memory(masked, window)
    zero = masked == 0.0
    np.testing.assert_array_equal(masked[~zero], window[~zero])  # untouched outside the masks
    full_bands, full_frames = zero.all(axis=1), zero.all(axis=0)
    assert np.array_equal(zero, full_bands[:, None] | full_frames[None, :])  # whole bands and whole frames
    assert 0 < full_bands.sum() <= 32 and 0 < full_frames.sum() <= 32
    np.testing.assert_array_equal(spec_augment(window, 0, 16, rng), window)


def test_cache_without_augmentation_holds_each_file_as_it_is(tmp_path: Path, speech_wav: Path) -> None:
    """``--augmentation none`` caches one clean spectrogram per file, apart from the augmented variants."""
    from soundsentry.datasets import AudioItem
    from soundsentry.training.train_cnn_transformer import SpectrogramSet, build_cache, cache_path

    item = AudioItem(path=speech_wav, label=0, speaker="s1")
    features = SpectralFeatures(kind="high")
    build_cache([item], [features], variants=1, seed=0, cache=tmp_path, workers=1, augmentation="none")
    clean = cache_path(tmp_path, features, 0, 0, item, augmentation="none")
    assert clean.is_file() and not cache_path(tmp_path, features, 0, 0, item).exists()
    expected = SpectralFrontEnd(features).log_power(decode_file(speech_wav).samples).numpy()
    np.testing.assert_allclose(np.load(clean).astype(np.float32), expected, atol=0.05, rtol=1e-3)  # float16
    data = SpectrogramSet.load([item], [0], features, variants=1, seed=0, cache=tmp_path, augmentation="none")
    assert data.labels.tolist() == [0] and len(data.spectrograms) == 1


def test_opus_augmentation_adds_codec_round_trips_to_the_clean_copy(tmp_path: Path, speech_wav: Path) -> None:
    """``--augmentation opus``: variant 0 is the clean copy (shared with ``none``), the others went through
    Opus/WEBM and nothing else, so they differ from it but keep the spectrogram's shape and rough level."""
    from soundsentry.datasets import AudioItem
    from soundsentry.training.train_cnn_transformer import SpectrogramSet, build_cache, cache_path

    item = AudioItem(path=speech_wav, label=1, speaker="s1")
    features = SpectralFeatures(kind="high")
    build_cache([item], [features], variants=2, seed=0, cache=tmp_path, workers=1, augmentation="opus")
    clean = cache_path(tmp_path, features, 0, 0, item, augmentation="opus")
    assert clean == cache_path(tmp_path, features, 0, 0, item, augmentation="none")
    coded = np.load(cache_path(tmp_path, features, 0, 1, item, augmentation="opus")).astype(np.float32)
    reference = np.load(clean).astype(np.float32)
    assert coded.shape == reference.shape
    assert 0.05 < np.abs(coded - reference).mean() < 5.0  # changed by the codec, not replaced
    with (tmp_path / "augmentations-seed0.csv").open(newline="") as handle:
        chains = {int(variant): description for _, variant, description in csv.reader(handle)}
    assert chains[0] == "clean" and chains[1].startswith("codec(codec=opus,") and "+" not in chains[1]
    data = SpectrogramSet.load([item], [0], features, variants=2, seed=0, cache=tmp_path, augmentation="opus")
    assert data.labels.tolist() == [1, 1]


def test_augmentation_flags() -> None:
    from soundsentry.training.train_cnn_transformer import parse_args

    assert parse_args([]).augmentation == "random"
    assert parse_args(["--augmentation", "opus"]).augmentation == "opus"
    assert parse_args(["--no-augmentation"]).augmentation == "none"  # older artefacts' recorded commands
    assert parse_args([]).normalise_span is None
    assert parse_args(["--normalise-span", "2", "10"]).normalise_span == [2.0, 10.0]
    assert parse_args([]).spec_augment == 0 and parse_args(["--spec-augment", "2"]).spec_augment == 2
    assert parse_args([]).ema == 0.0 and parse_args(["--ema", "0.997"]).ema == 0.997
    assert parse_args([]).n_fft == 512 and parse_args(["--n-fft", "1024"]).n_fft == 1024
    with pytest.raises(SystemExit):
        parse_args(["--augmentation", "mp3"])


def test_split_seed_fixes_the_held_out_speakers_whatever_the_seed() -> None:
    from soundsentry.datasets import AudioItem
    from soundsentry.training.train_cnn_transformer import TrainConfig, split_holdout

    items = [AudioItem(path=Path(f"{s}_{i}.flac"), label=i % 2, speaker=f"s{s}") for s in range(40) for i in range(4)]
    assert TrainConfig(seed=1).holdout_seed == 1
    shared = TrainConfig(seed=1, split_seed=0)
    assert shared.holdout_seed == 0
    held = {seed: set(split_holdout(items, 0.15, seed)[1].tolist()) for seed in (0, 1)}
    assert held[0] != held[1]  # so a shared split is something a second seed has to ask for
    assert set(split_holdout(items, 0.15, shared.holdout_seed)[1].tolist()) == held[0]


# --------------------------------------------------------------------------------------------
# artefact


@pytest.mark.parametrize("head", ["linear", "one_class"])
def test_save_load_round_trip(tmp_path: Path, speech: np.ndarray, head: str) -> None:
    torch.manual_seed(0)
    model = CNNTransformer({**TINY, "head": head}).eval()
    features = SpectralFeatures(kind="mel", normalisation="utterance_band")
    path = tmp_path / "cnn.pt"
    save_artefact(path, model, features, {"note": "test", "eer": np.float64(0.25)})
    assert path.with_suffix(".json").is_file()
    loaded = SpectralScorer.load(path)
    assert loaded.features == features and loaded.metadata == {"note": "test", "eer": 0.25}
    original = SpectralScorer(model, features)
    segments = [speech, speech[: SAMPLE_RATE // 2], speech[: 4 * SAMPLE_RATE]]
    scores = loaded.score_many(segments)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, original.score_many(segments), atol=5e-3)  # float16 weights
    np.testing.assert_allclose(scores[1], loaded.score(segments[1]), atol=1e-5)  # batching changes nothing
    assert loaded.score_many([]).shape == (0,)


def test_missing_corrupt_and_mismatched_artefacts_raise_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing"):
        SpectralScorer.load(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="corrupt"):
        SpectralScorer.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelLoadError, match="format"):
        SpectralScorer.load(foreign)

    path = tmp_path / "cnn.pt"
    save_artefact(path, tiny_model(), SpectralFeatures())
    bundle = torch.load(path, weights_only=True)
    for change in (
        {"model_config": {**bundle["model_config"], "d_model": 64}},  # weights of another shape
        {"features": {**bundle["features"], "n_bands": 64}},  # features the model does not take
        {"features": {**bundle["features"], "kind": "cqt"}},  # unknown feature kind
        {"state_dicts": [{k: v for k, v in bundle["state_dicts"][0].items() if not k.startswith("head")}]},
        {"state_dicts": []},  # no network at all
    ):
        mismatched = tmp_path / "mismatched.pt"
        torch.save({**bundle, **change}, mismatched)
        with pytest.raises(ModelLoadError, match="does not match"):
            SpectralScorer.load(mismatched)
    assert bundle["format"] == ARTEFACT_FORMAT


def test_an_ensemble_averages_its_networks_window_logits(tmp_path: Path, speech: np.ndarray) -> None:
    """Several networks in one artefact: each window's logit is the mean of theirs, so a segment's pooled
    logit is the mean of the members' pooled logits; networks of different shapes cannot be combined."""
    features = SpectralFeatures(kind="high", normalisation="utterance_band")
    members = [tiny_model(seed).eval() for seed in (0, 1)]
    segments = [speech, speech[: SAMPLE_RATE], speech[: 4 * SAMPLE_RATE]]
    alone = [SpectralScorer(m, features).logits_many(segments) for m in members]
    assert not np.allclose(alone[0], alone[1])  # two different networks
    together = SpectralScorer(members, features)
    np.testing.assert_allclose(together.logits_many(segments), np.mean(alone, axis=0), atol=1e-5)
    path = tmp_path / "ensemble.pt"
    save_artefact(path, members, features, {"note": "two seeds"})
    loaded = SpectralScorer.load(path)
    assert loaded.info()["networks"] == 2 and json.loads(path.with_suffix(".json").read_text())["networks"] == 2
    np.testing.assert_allclose(loaded.logits_many(segments), np.mean(alone, axis=0), atol=5e-3)  # float16
    with pytest.raises(ValueError, match="share one configuration"):
        SpectralScorer([members[0], CNNTransformer({**TINY, "d_model": 16})], features)
    with pytest.raises(ValueError, match="no CNN-Transformer"):
        SpectralScorer([], features)


def test_combine_writes_an_ensemble_of_artefacts_that_share_their_held_out_speakers(tmp_path: Path,
                                                                                    speech: np.ndarray) -> None:
    from soundsentry.training.train_cnn_transformer import main

    features = SpectralFeatures(kind="high", normalisation="utterance_band")
    paths = [tmp_path / f"seed{seed}.pt" for seed in (0, 1, 2)]
    for seed, path in enumerate(paths):
        groups = ["s1", "s2"] if seed < 2 else ["s3"]  # the third held out other speakers
        save_artefact(path, tiny_model(seed), features, {"command": f"seed {seed}", "heldout": {"eer": 0.1},
                                                         "data": {"files": 4, "heldout_groups": groups}})
    output = tmp_path / "ensemble.pt"
    metadata = main(["--combine", str(paths[0]), str(paths[1]), "--output", str(output)])
    assert [m["command"] for m in metadata["ensemble_of"]] == ["seed 0", "seed 1"]
    assert metadata["data"]["heldout_groups"] == ["s1", "s2"]  # what train_fusion fits on
    ensemble = SpectralScorer.load(output)
    alone = [SpectralScorer.load(p).logits_many([speech])[0] for p in paths[:2]]
    assert ensemble.info()["networks"] == 2
    np.testing.assert_allclose(ensemble.logits_many([speech])[0], np.mean(alone), atol=1e-4)
    with pytest.raises(SystemExit, match="same --split-seed"):
        main(["--combine", str(paths[0]), str(paths[2]), "--output", str(tmp_path / "bad.pt")])
    save_artefact(paths[2], tiny_model(2), SpectralFeatures(kind="high"), {"data": {"heldout_groups": ["s1", "s2"]}})
    with pytest.raises(SystemExit, match="other input"):
        main(["--combine", str(paths[0]), str(paths[2]), "--output", str(tmp_path / "bad.pt")])
    assert not (tmp_path / "bad.pt").exists()


def test_devset_check_writes_each_files_score_for_compare_runs(tmp_path: Path, real_and_fake) -> None:
    """The trainer's devset check keeps each file's score in run_test's columns: two networks' checks
    compare file by file (scripts.compare_runs), and a network compared with itself differs by nothing."""
    import soundfile

    from soundsentry.evaluation.batch import compare_runs
    from soundsentry.training.train_cnn_transformer import evaluate_devset

    rows = []
    for label, clips in zip(("real", "fake"), real_and_fake, strict=True):
        for index, clip in enumerate(clips):
            path = tmp_path / f"{label}{index}.wav"
            soundfile.write(path, clip, SAMPLE_RATE)
            rows.append({"path": path.name, "label": label, "source": "espeak" if label == "real" else "gl"})
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "source"])
        writer.writeheader()
        writer.writerows(rows)
    scorer = SpectralScorer(tiny_model().eval(), SpectralFeatures(kind="high", normalisation="utterance_band"))
    scores_csv = tmp_path / "net.devset.csv"
    report = evaluate_devset(scorer, manifest, scores_csv)
    with scores_csv.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert report["files"] == len(written) == 4
    assert sorted(row["label"] for row in written) == ["fake", "fake", "real", "real"]
    assert report["mean_score"]["real"] == pytest.approx(
        np.mean([float(row["probability"]) for row in written if row["label"] == "real"]), abs=1e-5)
    same = compare_runs(written, written, resamples=50)
    assert same["trials"] == 4 and same["pooled"]["difference"] == 0.0


def test_single_network_artefacts_of_format_1_still_load(tmp_path: Path, speech: np.ndarray) -> None:
    features = SpectralFeatures(kind="high")
    path = tmp_path / "cnn.pt"
    save_artefact(path, tiny_model(), features)
    bundle = torch.load(path, weights_only=True)
    old = {**{k: v for k, v in bundle.items() if k != "state_dicts"},
           "format": "soundsentry.cnn_transformer/1", "state_dict": bundle["state_dicts"][0]}
    torch.save(old, path)
    expected = SpectralScorer(tiny_model(), features).score(speech)
    np.testing.assert_allclose(SpectralScorer.load(path).score(speech), expected, atol=5e-3)


def test_shipped_artefact_scores_speech(speech: np.ndarray) -> None:
    scorer = SpectralScorer.load(DEFAULT_ARTEFACT)
    assert scorer.name == "cnn_transformer" and scorer.sample_rate == SAMPLE_RATE
    assert DEFAULT_ARTEFACT.stat().st_size < 4.5 * 1024 * 1024 * scorer.n_networks  # 2.2 M float16 weights each
    probability = scorer.score(speech)
    assert isinstance(probability, float) and 0.0 <= probability <= 1.0
    many = scorer.score_many([speech, speech[: 4 * SAMPLE_RATE]])
    assert many.shape == (2,) and np.isclose(many[0], probability, atol=1e-5)
    info = scorer.info()
    assert info["features"]["kind"] in FEATURE_KINDS
    assert "heldout" in info["training"] or all("heldout" in m for m in info["training"]["ensemble_of"])


def test_many_segments_are_scored_in_bounded_batches_with_the_same_result(speech: np.ndarray, monkeypatch) -> None:
    """A long recording's windows are not all made at once: no forward pass sees more than the batch
    bound plus one segment's windows, and each segment scores as it does alone."""
    from soundsentry.models import spectral

    scorer = SpectralScorer(tiny_model(), SpectralFeatures(kind="high"))
    segments = [speech[i * 800 :] for i in range(40)]  # ~5 s each: 40 segments, ~100 windows in all
    alone = np.array([scorer.score(s) for s in segments])
    events, sizes = [], []
    forward, windows = scorer.model.forward, scorer.windows
    monkeypatch.setattr(scorer.model, "forward",
                        lambda x: events.append("forward") or sizes.append(len(x)) or forward(x))
    monkeypatch.setattr(scorer, "windows", lambda x: events.append("windows") or windows(x))
    np.testing.assert_allclose(scorer.score_many(segments), alone, atol=1e-5)
    assert events.count("windows") == 40 and len(sizes) > 1
    assert events.index("forward") < 39  # scoring starts before the last segment is windowed
    assert max(sizes) < spectral._MAX_BATCH_WINDOWS + windows(segments[0]).shape[0]
