"""The trainers and the batch evaluator end to end on a tiny folder of real audio they make themselves.

Reals are espeak-ng voices; fakes are the same sentences re-synthesised by Griffin-Lim and WORLD.
The point is that they run and produce artefacts the detector loads — not the figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from soundsentry import cli
from soundsentry.audio import decode_file
from soundsentry.detector import Detector, DetectorConfig
from soundsentry.evaluation.metrics import bootstrap_eer, bootstrap_rate, compute_eer, expected_calibration_error
from soundsentry.models.classifier import load_tkan_artifacts
from soundsentry.training import (
    feature_extractor,
    train_classifier,
    train_classifier_kfold,
    train_flatness,
    train_fusion,
    train_gridsearch,
)
from soundsentry.training.spoofs import griffin_lim_resynthesis, world_resynthesis
from tests.conftest import speak, write_wav

SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas and five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
]
VOICES = [("en-us", 40), ("en-gb", 60), ("en-us+f3", 70)]


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    rows = []
    for v, (voice, pitch) in enumerate(VOICES):
        for s, text in enumerate(SENTENCES):
            real = speak(text, root / "real" / f"v{v}s{s}.wav", voice=voice, pitch=pitch)
            samples = decode_file(real).samples
            rows.append((f"real/{real.name}", "real", "espeak", "bonafide", f"voice{v}"))
            for method in (griffin_lim_resynthesis, world_resynthesis):
                fake = root / "fake" / f"v{v}s{s}-{method.__name__}.wav"
                write_wav(fake, method(samples, sample_rate=16_000))
                rows.append((f"fake/{fake.name}", "fake", "espeak", method.__name__, f"voice{v}"))
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source", "system", "speaker"])
        writer.writerows(rows)
    return root


def test_metrics_on_hand_made_scores() -> None:
    eer, threshold = compute_eer(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85]))
    assert eer == pytest.approx(1 / 3) and 0.3 <= threshold <= 0.85
    assert compute_eer(np.array([0.9, 0.8]), np.array([0.1, 0.2]))[0] == 0.0
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
    assert expected_calibration_error(np.array([0, 0]), np.array([0.95, 0.95])) == pytest.approx(0.95)


def test_bootstrap_interval_of_the_eer() -> None:
    labels = np.array([1] * 40 + [0] * 40)
    perfect = np.where(labels == 1, 0.9, 0.1)
    result = bootstrap_eer(labels, perfect, np.arange(80), paired={"reversed": 1 - perfect}, resamples=200)
    assert result["eer"] == 0.0 and result["interval"] == [0.0, 0.0]
    assert result["paired"]["reversed"]["difference"] == -1.0 and result["paired"]["reversed"]["interval"] == [-1, -1]

    rng = np.random.default_rng(1)
    noisy = labels + rng.normal(0, 1, labels.size)
    files = bootstrap_eer(labels, noisy, np.arange(80), resamples=300)
    low, high = files["interval"]
    assert 0 < low < files["eer"] < high < 1 and files["clusters"] == {"fake": 40, "real": 40}
    # three chunks of each file scored alike are one file's evidence, not three: the same interval
    chunks = bootstrap_eer(np.repeat(labels, 3), np.repeat(noisy, 3), np.repeat(np.arange(80), 3), resamples=300)
    assert chunks["eer"] == pytest.approx(files["eer"]) and chunks["interval"] == pytest.approx(files["interval"])
    with pytest.raises(ValueError, match="fake and one real"):
        bootstrap_eer(np.ones(4), np.arange(4.0), np.arange(4))


def test_bootstrap_interval_of_a_rate() -> None:
    hits = np.array([True] * 10 + [False] * 90)
    result = bootstrap_rate(hits, np.arange(100), resamples=300)
    low, high = result["interval"]
    assert result["rate"] == 0.1 and result["trials"] == 100 and 0.03 < low < 0.1 < high < 0.18
    # chunks of one file move together: ten files of ten chunks give a wider interval than 100 files
    grouped = bootstrap_rate(hits, np.repeat(np.arange(10), 10), resamples=300)
    assert grouped["rate"] == 0.1 and grouped["interval"][1] - grouped["interval"][0] > high - low
    assert bootstrap_rate(np.array([], dtype=bool), np.array([]))["trials"] == 0


def test_extract_train_load_and_evaluate(labelled_dir: Path, tmp_path: Path) -> None:
    features = tmp_path / "features"
    feature_extractor.main(["--data", str(labelled_dir), "--output", str(features), "--crops", "2"])
    labels = np.load(features / "labels.npy")
    assert labels.sum() > 0 and (labels == 0).sum() > 0
    assert np.load(features / "features.npy").shape[0] == labels.size

    # a second run is served from the per-file cache and gives the same rows
    first = np.load(features / "features.npy")
    feature_extractor.main(["--data", str(labelled_dir), "--output", str(features), "--crops", "2"])
    assert np.array_equal(first, np.load(features / "features.npy"))

    model_dir = tmp_path / "model"
    train_classifier.main(["--features", str(features), "--output", str(model_dir), "--folds", "3", "--epochs", "20"])
    artifacts = load_tkan_artifacts(model_dir)
    assert set(artifacts.thresholds) == {"very_short", "short", "normal"}
    report = json.loads((model_dir / "training_report.json").read_text())
    assert 0.0 <= report["cross_validation"]["pooled"]["eer"] <= 1.0
    assert report["training_data"]["speakers"] == 3

    kfold_report = tmp_path / "kfold.json"
    train_classifier_kfold.main(["--features", str(features), "--folds", "3", "--epochs", "5",
                                 "--hold-out-systems", "--output", str(kfold_report)])
    unseen = json.loads(kfold_report.read_text())["unseen_system_eer"]
    assert set(unseen) == {"griffin_lim_resynthesis", "world_resynthesis"}
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"mlpclassifiertorch__hidden": [16, 32]}))
    train_gridsearch.main(["--features", str(features), "--folds", "3", "--epochs", "3", "--grid", str(grid),
                           "--output", str(tmp_path / "grid_results.json")])
    assert len(json.loads((tmp_path / "grid_results.json").read_text())) == 2

    detector = Detector.load(DetectorConfig(data_dir=model_dir))
    assert detector.predict(decode_file(labelled_dir / "real" / "v0s0.wav")).overall in ("Real", "Fake")


def test_run_test_writes_predictions_and_metrics(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    assert cli.evaluate_main(["--test-dir", str(labelled_dir), "--output-dir", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("eer", "roc_auc", "accuracy", "precision", "recall", "f1", "confusion_matrix", "threshold"):
        assert key in metrics, key
    assert metrics["files"] == 27 and metrics["errors"] == 0
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["scored"]
    low, high = metrics["eer_interval"]
    assert low <= metrics["eer"] <= high and metrics["bootstrap"]["unit"] == "file"
    with (tmp_path / "predictions.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 27
    assert "confusion matrix" in capsys.readouterr().out


def test_run_test_on_plain_folders(labelled_dir: Path, tmp_path: Path) -> None:
    folders = tmp_path / "folders"
    for label in ("real", "fake"):
        (folders / label).mkdir(parents=True)
        for path in sorted((labelled_dir / label).glob("*.wav"))[:2]:
            (folders / label / path.name).write_bytes(path.read_bytes())
    assert cli.evaluate_main(["--test-dir", str(folders), "--output-dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["files"] == 4
    # the browser condition: every ~5 s file becomes one or two 4 s WEBM/Opus chunks
    assert cli.evaluate_main(["--test-dir", str(folders), "--output-dir", str(tmp_path / "web"),
                              "--browser-chunks"]) == 0
    chunked = json.loads((tmp_path / "web" / "metrics.json").read_text())
    assert chunked["browser_chunks"] is True and chunked["files"] >= 4 and chunked["errors"] == 0
    assert cli.evaluate_main(["--test-dir", str(tmp_path / "nothing-here"), "--output-dir", str(tmp_path)]) == 2


def test_flatness_and_fusion_training_end_to_end(labelled_dir: Path, tmp_path: Path) -> None:
    import shutil

    from soundsentry.detector import DEFAULT_DATA_DIR
    from soundsentry.fusion import Fusion
    from soundsentry.models.flatness import FlatnessScorer
    from soundsentry.models.spectral import load_artefact, save_artefact

    models = tmp_path / "models"
    shutil.copytree(DEFAULT_DATA_DIR, models)
    (models / "fusion.json").unlink(missing_ok=True)
    assert train_flatness.main(["--data", str(labelled_dir), "--output", str(models)]) == 0
    scorer = FlatnessScorer.load(models / "flatness.joblib")
    assert 0.0 <= scorer.metadata["cross_validation"]["eer"] <= 1.0 and scorer.metadata["files"] == 27

    # the fusion is fitted on the speakers the CNN-Transformer held out: say it held out voice2
    model, features, metadata = load_artefact(models / "cnn_transformer.pt")
    save_artefact(models / "cnn_transformer.pt", model, features, {**metadata, "data": {"heldout_groups": ["voice2"]}})
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "cnn", "flatness"]) == 0
    fusion = Fusion.load(models / "fusion.json")
    assert fusion.members == ("cnn", "flatness") and set(fusion.thresholds) == {"very_short", "short", "normal"}
    assert fusion.metadata["heldout_files"] == 9 and set(fusion.metadata["heldout"]) == {"cnn", "flatness", "fused"}
    assert set(fusion.metadata["artefacts"]) == {"cnn_transformer.pt", "flatness.joblib"}
    detector = Detector.load(DetectorConfig(data_dir=models))
    report = detector.predict(decode_file(labelled_dir / "real" / "v2s0.wav"))
    assert report.overall in ("Real", "Fake") and set(report.segments[0].scores) == set(fusion.active_members)

    # calibrated on generators the member did not train on: one refit per fake family
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "flatness", "--unseen-generators"]) == 0
    fusion = Fusion.load(models / "fusion.json")
    folds = fusion.metadata["calibration"]["folds"]
    assert [f["left_out"] for f in folds] == ["griffin_lim_resynthesis", "world_resynthesis"]
    assert all(0.0 <= f["eer"] <= 1.0 for f in folds) and fusion.members == ("flatness",)
    assert Detector.load(DetectorConfig(data_dir=models)).predict(
        decode_file(labelled_dir / "fake" / "v2s0-world_resynthesis.wav")).overall in ("Real", "Fake")
    with pytest.raises(SystemExit):  # the CNN-Transformer cannot be refitted per family here
        train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--members", "cnn", "flatness",
                           "--unseen-generators"])

    # calibrated on fakes of generators no member trained on: the held-out weights keep their ratio,
    # only the Platt scale and offset and the thresholds come from the calibration fakes
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "cnn", "flatness"]) == 0
    plain = Fusion.load(models / "fusion.json")
    unseen = tmp_path / "unseen"
    (unseen / "fake").mkdir(parents=True)
    for path in sorted((labelled_dir / "fake").glob("*world*.wav")):
        (unseen / "fake" / path.name).write_bytes(path.read_bytes())
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "cnn", "flatness", "--calibration-fakes", str(unseen)]) == 0
    calibrated = Fusion.load(models / "fusion.json")
    calibration = calibrated.metadata["calibration"]
    assert calibration["fake_files"] == len(list((unseen / "fake").glob("*.wav"))) > 0
    scale = calibration["platt_scale"]
    np.testing.assert_allclose(calibrated.weights, [scale * w for w in plain.weights], rtol=1e-9)
    assert calibrated.bias == pytest.approx(scale * plain.bias + calibration["platt_offset"])
    assert set(calibrated.thresholds) == {"very_short", "short", "normal"}
    assert Detector.load(DetectorConfig(data_dir=models)).predict(
        decode_file(labelled_dir / "real" / "v2s0.wav")).overall in ("Real", "Fake")

    # the weights fitted on those fakes too: one logistic regression, so the ratio is its own
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "cnn", "flatness", "--calibration-fakes", str(unseen),
                              "--weights", "calibration-fakes"]) == 0
    refitted = Fusion.load(models / "fusion.json")
    assert refitted.metadata["calibration"]["method"].startswith("weights, bias and thresholds")
    assert refitted.metadata["calibration"]["platt_scale"] == 1.0
    assert refitted.weights[1] / refitted.weights[0] != pytest.approx(plain.weights[1] / plain.weights[0])
    with pytest.raises(SystemExit):  # weights from calibration fakes that were not given
        train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--members", "cnn", "flatness",
                           "--weights", "calibration-fakes"])
    # equal weights: each member's logit scaled by its spread over the held-out reals, ratio kept by Platt
    assert train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--output", str(models),
                              "--members", "cnn", "flatness", "--calibration-fakes", str(unseen),
                              "--weights", "equal"]) == 0
    equal = Fusion.load(models / "fusion.json")
    assert equal.metadata["weights"] == "equal" and equal.members == ("cnn", "flatness")
    assert Detector.load(DetectorConfig(data_dir=models)).predict(
        decode_file(labelled_dir / "fake" / "v2s0-world_resynthesis.wav")).overall in ("Real", "Fake")
    with pytest.raises(SystemExit):  # two calibrations at once
        train_fusion.main(["--data", str(labelled_dir), "--models-dir", str(models), "--members", "flatness",
                           "--unseen-generators", "--calibration-fakes", str(unseen)])



def test_explore_tkan_columns_follow_the_feature_layout() -> None:
    """The columns a variant keeps are the ones tkan_features wrote for those layers, k and statistics."""
    from soundsentry.models.layers import WindowActivations
    from soundsentry.models.tkan import FeatureSpec, tkan_features
    from soundsentry.training.explore_tkan import columns

    rng = np.random.default_rng(0)
    activations = WindowActivations(starts=np.zeros(1), layer_mean=rng.random((1, 4, 256)),
                                    layer_std=rng.random((1, 4, 256)), embeddings=rng.random((1, 256)))
    spec = FeatureSpec(k=8, stats=("mean", "std"))
    row = tkan_features(activations, spec)
    top = np.argsort(activations.layer_mean[0, 1])[::-1][:3]  # lstm2's three most active neurons
    picked = row[columns(spec, ("lstm2",), 3, ("mean", "std"))]
    np.testing.assert_allclose(picked, np.r_[activations.layer_mean[0, 1, top], activations.layer_std[0, 1, top]],
                               rtol=1e-6)
    np.testing.assert_allclose(row[columns(spec, ("lstm2",), 3)], activations.layer_mean[0, 1, top], rtol=1e-6)
    with pytest.raises(ValueError, match="std"):
        columns(FeatureSpec(k=8), ("lstm1",), 4, ("mean", "std"))


def test_equal_fusion_weights_scale_each_member_by_its_spread_over_reals() -> None:
    from soundsentry.fusion import logit

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 2)) * np.array([2.0, 0.5])
    weights = train_fusion.equal_weights(1.0 / (1.0 + np.exp(-logits)))
    scaled = logit(1.0 / (1.0 + np.exp(-logits))) * np.array(weights)
    np.testing.assert_allclose(scaled.std(axis=0), [1.0, 1.0], rtol=1e-6)
    assert weights[1] / weights[0] == pytest.approx(logits[:, 0].std() / logits[:, 1].std(), rel=1e-6)
    with pytest.raises(ValueError, match="do not vary"):
        train_fusion.equal_weights(np.full((10, 2), 0.3))
