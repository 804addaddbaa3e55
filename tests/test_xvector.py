"""TKAN on pyannote's x-vector, offline: a random-weight XVectorSincNet checkpoint written in
``pyannote/embedding``'s layout goes through the same loading code as a user's ``model/embedding/``,
on espeak-ng audio the tests make. Random weights make the features meaningless but cost the same
and exercise every path: extraction, training, artefacts, the detector, the load errors.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsentry.audio import decode_file
from soundsentry.detector import DEFAULT_DATA_DIR, Detector, DetectorConfig
from soundsentry.errors import ModelLoadError
from soundsentry.fusion import FUSION_FILE, Fusion
from soundsentry.hashing import file_sha256
from soundsentry.models import export as entry
from soundsentry.models.classifier import MODEL_FILE, load_tkan_artifacts
from soundsentry.models.layers import RESEMBLYZER, XVECTOR
from soundsentry.models.speaker import load_tkan_network
from soundsentry.models.tkan import FeatureSpec, tkan_features
from soundsentry.models.xvector import CHECKPOINT_FILE, HUB_ID, XVectorNetwork
from soundsentry.training import feature_extractor, train_classifier
from soundsentry.training.spoofs import lpc_resynthesis
from tests.conftest import speak, write_wav

SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "We also need a small plastic snake and a big toy frog for the kids.",
]
VOICES = [("en-us", 40), ("en-gb+f3", 70)]


@pytest.fixture(scope="module")
def xvector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return entry.write_random_xvector(tmp_path_factory.mktemp("xvector") / "embedding")


@pytest.fixture(scope="module")
def network(xvector_dir: Path) -> XVectorNetwork:
    return load_tkan_network("xvector", xvector_dir=xvector_dir)


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two espeak-ng voices × two sentences, each real and re-synthesised by an LPC vocoder (8 files)."""
    root = tmp_path_factory.mktemp("labelled-xvector")
    rows = []
    for v, (voice, pitch) in enumerate(VOICES):
        for s, text in enumerate(SENTENCES):
            real = speak(text, root / f"real-v{v}s{s}.wav", voice=voice, pitch=pitch)
            fake = write_wav(root / f"fake-v{v}s{s}.wav", lpc_resynthesis(decode_file(real).samples))
            rows += [(real.name, "real", "espeak", "bonafide", f"voice{v}"),
                     (fake.name, "fake", "espeak", "lpc", f"voice{v}")]
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source", "system", "speaker"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def tkan_xvector_dir(labelled_dir: Path, xvector_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x-vector TKAN artefacts made by the two scripts, as a user would (tiny and fast)."""
    work = tmp_path_factory.mktemp("tkan-xvector")
    features, output = work / "features", work / "model" / "tkan-xvector"
    feature_extractor.main(["--data", str(labelled_dir), "--output", str(features), "--network", "xvector",
                            "--xvector-dir", str(xvector_dir), "--crops", "2", "--no-augment"])
    train_classifier.main(["--features", str(features), "--output-dir", str(output), "--folds", "2",
                           "--epochs", "5", "--hidden", "16"])
    return output


def test_layers_are_pyannotes_own_forward(network: XVectorNetwork) -> None:
    """Every layer TKAN reads is visible, and the last one is what pyannote's forward computes."""
    waveforms = torch.randn(2, 1, 24_000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        activations, embedding = network.net(waveforms)
        reference = network.net.model(waveforms)
    assert [a.shape[2] for a in activations] == list(XVECTOR.layer_widths)
    assert activations[-1].shape[1] == 1  # the embedding layer is one frame
    torch.testing.assert_close(activations[-1][:, 0], reference)
    torch.testing.assert_close(embedding, reference / reference.norm(dim=1, keepdim=True))


def test_xvector_activations_on_speech(network: XVectorNetwork, speech_wav: Path) -> None:
    samples = decode_file(speech_wav).samples
    windows = network.analyse(samples, hop_s=1.6)
    assert windows.network == XVECTOR.name and windows.layer_names == XVECTOR.layer_names
    assert windows.layer_mean.shape == windows.layer_std.shape == (len(windows), 7, 1500)
    assert windows.starts[0] == 0.0 and windows.window_s == 3.0
    assert windows.starts[-1] + windows.window_s == pytest.approx(samples.size / 16_000, abs=1e-3)
    for name, width in zip(XVECTOR.layer_names, XVECTOR.layer_widths, strict=True):
        mean, std = windows.layer(name)
        assert mean.shape == std.shape == (len(windows), width)
        assert np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()
    assert np.isnan(windows.layer_mean[:, 0, 60:]).all()  # past SincNet's 60 channels: padding
    assert np.allclose(windows.layer("embedding")[1], 0.0)
    assert np.allclose(np.linalg.norm(windows.embeddings, axis=1), 1.0, atol=1e-5)
    assert len(network.analyse(samples[:8_000])) == 1  # shorter than a window: one shorter window
    with pytest.raises(ValueError, match="at least"):
        network.analyse(samples[:1_000])

    spec = FeatureSpec(network="xvector", k=16, stats=("mean", "std"))
    features = tkan_features(windows, spec)
    assert features.shape == (spec.dimension,) == (16 * 7 * 2,) and np.isfinite(features).all()
    masked = FeatureSpec(network=XVECTOR.name, layers=("sincnet", "tdnn5"), k=4, reduction="masked")
    assert tkan_features(windows, masked).shape == (60 + 1500,)
    with pytest.raises(ValueError, match="activations come from"):
        tkan_features(windows, FeatureSpec())  # a Resemblyzer definition on x-vector activations


def test_feature_spec_is_checked_against_its_network() -> None:
    spec = FeatureSpec(network="xvector")
    assert spec.network == XVECTOR.name and spec.layers == XVECTOR.layer_names
    with pytest.raises(ValueError, match="unknown layers"):
        FeatureSpec(network=XVECTOR.name, layers=("lstm1",))
    with pytest.raises(ValueError, match="unknown layers"):
        FeatureSpec(layers=("tdnn1",))  # Resemblyzer has no TDNN
    with pytest.raises(ValueError, match="'sincnet' .* 60 neurons"):
        FeatureSpec(network=XVECTOR.name, k=61)
    assert FeatureSpec(network=XVECTOR.name, layers=("tdnn5",), k=1500).dimension == 1500
    with pytest.raises(ValueError, match="k must be in 1..512"):
        FeatureSpec(network=XVECTOR.name, layers=("tdnn1", "tdnn5"), k=513)
    with pytest.raises(ValueError, match="k must be in 1..256"):
        FeatureSpec(k=257)
    with pytest.raises(ValueError, match="unknown speaker network"):
        FeatureSpec(network="wav2vec2")
    # the shipped definition and its key are unchanged by the second network
    assert FeatureSpec().layers == RESEMBLYZER.layer_names
    shipped = torch.load(DEFAULT_DATA_DIR / MODEL_FILE, map_location="cpu", weights_only=True)
    assert FeatureSpec.from_dict(shipped["feature_spec"]) == FeatureSpec()
    assert FeatureSpec().key == shipped["feature_key"]


def test_xvector_tkan_trains_and_scores_end_to_end(
    tkan_xvector_dir: Path, xvector_dir: Path, labelled_dir: Path, tmp_path: Path
) -> None:
    artifacts = load_tkan_artifacts(tkan_xvector_dir)
    assert artifacts.spec == FeatureSpec(network=XVECTOR.name)
    recorded = artifacts.metadata["speaker_network"]
    assert recorded["name"] == XVECTOR.name
    assert recorded["checkpoint_sha256"] == file_sha256(xvector_dir / CHECKPOINT_FILE)
    report = json.loads((tkan_xvector_dir / "training_report.json").read_text())
    assert report["training_data"]["speaker_network"] == recorded

    # the artefacts alone: TKAN scores with its own thresholds
    clip = decode_file(labelled_dir / "real-v0s0.wav")
    detector = Detector.load(DetectorConfig(data_dir=tkan_xvector_dir, xvector_dir=xvector_dir))
    assert tuple(detector.members) == ("tkan",) and detector.members["tkan"].network.name == XVECTOR.name
    result = detector.predict(clip)
    assert result.overall in ("Real", "Fake") and result.segments
    assert all(0.0 <= s.scores["tkan"] <= 1.0 for s in result.segments)

    # beside the shipped scorers: TKAN from its own directory, the rest (and the fusion) from data_dir
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    Fusion(("tkan", "flatness"), (0.5, 1.0), 0.0, {"very_short": 0.5, "short": 0.5, "normal": 0.5}).save(
        data / FUSION_FILE
    )
    detector = Detector.load(DetectorConfig(data_dir=data, tkan_dir=tkan_xvector_dir, xvector_dir=xvector_dir))
    assert detector.speech.network.name == RESEMBLYZER.name  # the embedded diarizer keeps Resemblyzer
    assert detector.diarizer.network is detector.speech.network
    models = detector.info()["models"]
    assert models["tkan_network"].startswith(f"{XVECTOR.name} ({CHECKPOINT_FILE}, sha256 ")
    assert str(xvector_dir) not in models["tkan_network"]  # the file is named, not where it lies
    assert models["speaker_network"] == RESEMBLYZER.name
    assert detector.info()["members"]["tkan"]["feature_spec"]["network"] == XVECTOR.name
    segment = detector.predict(clip).segments[0]
    assert set(segment.scores) == {"tkan", "flatness"}
    assert segment.scores["tkan"] == pytest.approx(result.segments[0].scores["tkan"], abs=1e-6)


def test_info_says_which_tkan_network_from_the_environment(
    tkan_xvector_dir: Path, xvector_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """SOUNDSENTRY_TKAN_DIR and SOUNDSENTRY_XVECTOR_DIR reach the detector; /info names the TKAN network,
    and says when the fusion gives TKAN no weight (the x-vector is then not loaded at all)."""
    from fastapi.testclient import TestClient

    from api.core.config import Settings
    from api.main import create_app

    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    monkeypatch.setenv("SOUNDSENTRY_DATA_DIR", str(data))
    monkeypatch.setenv("SOUNDSENTRY_TKAN_DIR", str(tkan_xvector_dir))
    thresholds = {"very_short": 0.5, "short": 0.5, "normal": 0.5}
    for weights, xvector, expected in (
        ((1.0, 1.0), xvector_dir, f"{XVECTOR.name} ({CHECKPOINT_FILE}, sha256 "),
        ((0.0, 1.0), tmp_path / "nowhere", "not used"),
    ):
        Fusion(("tkan", "flatness"), weights, 0.0, thresholds).save(data / FUSION_FILE)
        monkeypatch.setenv("SOUNDSENTRY_XVECTOR_DIR", str(xvector))
        with TestClient(create_app(Settings())) as client:
            info = client.get("/info").json()
        assert info["models"]["tkan_network"].startswith(expected), info["models"]
        assert info["models"]["speaker_network"] == RESEMBLYZER.name
        if weights[0]:
            assert info["members"]["tkan"]["feature_spec"]["network"] == XVECTOR.name
        else:  # not loaded at all: its definition is not shown either
            assert "tkan" not in info["members"] and info["models"]["tkan_classifier"] == "not used"


def test_missing_or_other_xvector_checkpoint_is_a_clear_load_error(
    tkan_xvector_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "embedding"
    with pytest.raises(ModelLoadError) as error:
        Detector.load(DetectorConfig(data_dir=tkan_xvector_dir, xvector_dir=empty))
    message = error.value.message
    assert str(empty / CHECKPOINT_FILE) in message and "missing" in message
    assert f"scripts.entry export --model {HUB_ID}" in message and "SOUNDSENTRY_XVECTOR_DIR" in message

    other = entry.write_random_xvector(tmp_path / "other", seed=1)  # same architecture, other weights
    with pytest.raises(ModelLoadError, match="not the pyannote-xvector-sincnet checkpoint"):
        Detector.load(DetectorConfig(data_dir=tkan_xvector_dir, xvector_dir=other))

    (empty / CHECKPOINT_FILE).parent.mkdir()
    (empty / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="Cannot load the x-vector checkpoint"):
        load_tkan_network("xvector", xvector_dir=empty)


def test_xvector_artefacts_never_go_into_data() -> None:
    assert train_classifier.output_directory(None, XVECTOR.name) == Path("model/tkan-xvector")
    assert train_classifier.output_directory(None, RESEMBLYZER.name) == Path("data")
    with pytest.raises(SystemExit, match="--output-dir model/tkan-xvector"):
        train_classifier.output_directory(DEFAULT_DATA_DIR, XVECTOR.name)


def test_export_without_token_says_what_to_do(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(entry.TOKEN_ENV, raising=False)
    assert entry.main(["export", "--model", HUB_ID, "--output", str(tmp_path / "embedding")]) == 2
    message = capsys.readouterr().err
    assert f"https://hf.co/{HUB_ID}" in message and f"export --model {HUB_ID}" in message
    assert not (tmp_path / "embedding").exists()
