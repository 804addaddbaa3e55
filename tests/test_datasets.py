"""Dataset loaders on tiny copies of each release layout, and the evaluation figures.

Each layout is rebuilt in ``tmp_path`` with the real file and folder names of its release and a
few 0.5 s 16 kHz clips written by soundfile; the loaders must find every clip with its label,
system, speaker and source. Nothing here loads a model, so the file runs in seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsentry.constants import SAMPLE_RATE
from soundsentry.datasets import AudioItem, load_items
from soundsentry.evaluation.batch import Prediction, summarise
from soundsentry.evaluation.plots import MAX_GROUP_CURVES, curve_groups, write_plots


def write_clip(path: Path, seed: int = 0) -> Path:
    """0.5 s of a 220 Hz tone with a little noise, as WAV or FLAC by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32), SAMPLE_RATE)
    return path


def summary(items: list[AudioItem]) -> list[tuple[str, int, str, str, str]]:
    return sorted((item.path.name, item.label, item.source, item.system, item.speaker) for item in items)


def test_in_the_wild(tmp_path: Path) -> None:
    root = tmp_path / "release_in_the_wild"
    for index in range(3):
        write_clip(root / f"{index}.wav", index)
    (root / "meta.csv").write_text(
        "file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,Alec Guinness,bona-fide\n2.wav,Barack Obama,bona-fide\n"
    )
    expected = [
        ("0.wav", 1, "in_the_wild", "", "Alec Guinness"),
        ("1.wav", 0, "in_the_wild", "", "Alec Guinness"),
        ("2.wav", 0, "in_the_wild", "", "Barack Obama"),
    ]
    for location in (root, root / "meta.csv"):
        items = load_items(location)
        assert summary(items) == expected
        assert all(item.path.parent == root and item.path.is_file() for item in items)


def test_asvspoof2019_la(tmp_path: Path) -> None:
    root = tmp_path / "LA"
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True)
    (protocols / "ASVspoof2019.LA.cm.train.trn.txt").write_text(
        "LA_0079 LA_T_1138215 - - bonafide\nLA_0079 LA_T_1271820 - A01 spoof\n\n"
    )
    (protocols / "ASVspoof2019.LA.cm.eval.trl.txt").write_text("LA_0039 LA_E_2834763 - A11 spoof\n")
    for split, utterance in (("train", "LA_T_1138215"), ("train", "LA_T_1271820"), ("eval", "LA_E_2834763")):
        write_clip(root / f"ASVspoof2019_LA_{split}" / "flac" / f"{utterance}.flac")

    items = load_items(root)
    assert summary(items) == [
        ("LA_E_2834763.flac", 1, "asvspoof2019_la/eval", "A11", "LA_0039"),
        ("LA_T_1138215.flac", 0, "asvspoof2019_la/train", "", "LA_0079"),
        ("LA_T_1271820.flac", 1, "asvspoof2019_la/train", "A01", "LA_0079"),
    ]
    assert all(item.path.is_file() for item in items)
    # the protocol file itself gives that split only
    single = load_items(protocols / "ASVspoof2019.LA.cm.eval.trl.txt")
    assert [item.path for item in single] == [root / "ASVspoof2019_LA_eval" / "flac" / "LA_E_2834763.flac"]


def test_asvspoof2021_df_and_la_keys(tmp_path: Path) -> None:
    df_key = tmp_path / "DF-keys-full" / "keys" / "CM" / "trial_metadata.txt"
    df_key.parent.mkdir(parents=True)
    df_key.write_text(
        "LA_0043 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -\n"
        "LA_0023 DF_E_2000013 low_m4a asvspoof - bonafide notrim eval - - - - -\n"
        "TEF2 DF_E_2000026 mp3m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive "
        "Task1 team20 FF E\n"
    )
    for utterance in ("DF_E_2000011", "DF_E_2000013", "DF_E_2000026"):
        write_clip(tmp_path / "ASVspoof2021_DF_eval" / "flac" / f"{utterance}.flac")
    expected = [
        ("DF_E_2000011.flac", 1, "asvspoof2021_df", "A14", "LA_0043"),
        ("DF_E_2000013.flac", 0, "asvspoof2021_df", "", "LA_0023"),
        ("DF_E_2000026.flac", 1, "asvspoof2021_df", "Task1-team20", "TEF2"),
    ]
    for location in (df_key, tmp_path):
        items = load_items(location)
        assert summary(items) == expected
        assert all(item.path.is_file() for item in items)

    la_root = tmp_path / "la2021"
    la_key = la_root / "keys" / "CM" / "trial_metadata.txt"
    la_key.parent.mkdir(parents=True)
    la_key.write_text("LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n")
    write_clip(la_root / "ASVspoof2021_LA_eval" / "flac" / "LA_E_9332881.flac")
    assert summary(load_items(la_root)) == [("LA_E_9332881.flac", 1, "asvspoof2021_la", "A07", "LA_0009")]


def test_asvspoof_protocol_without_audio_names_the_folder(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True)
    key.write_text("LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n")
    with pytest.raises(ValueError, match="ASVspoof2021_LA_eval"):
        load_items(key)


def test_fake_or_real_splits(tmp_path: Path) -> None:
    root = tmp_path / "for-norm"
    for split in ("training", "validation", "testing"):
        write_clip(root / split / "real" / f"{split}-r.wav")
        write_clip(root / split / "fake" / f"{split}-f.wav")
    items = load_items(root)
    assert len(items) == 6
    assert {(item.path.name, item.label, item.source) for item in items} == {
        (f"{split}-{kind[0]}.wav", label, f"for-norm/{split}")
        for split in ("training", "validation", "testing") for kind, label in (("real", 0), ("fake", 1))
    }
    # one split is a plain real/ + fake/ folder
    assert summary(load_items(root / "testing")) == [
        ("testing-f.wav", 1, "testing", "fake", ""), ("testing-r.wav", 0, "testing", "real", ""),
    ]


def test_manifest_csv(tmp_path: Path) -> None:
    write_clip(tmp_path / "audio" / "a.wav")
    write_clip(tmp_path / "audio" / "b.flac")
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["path", "label", "source", "system", "speaker"],
                          ["audio/a.wav", "real", "librispeech", "bonafide", "19"],
                          ["audio/b.flac", "fake", "vocoders", "griffin_lim", "19"]])
    expected = [("a.wav", 0, "librispeech", "bonafide", "19"), ("b.flac", 1, "vocoders", "griffin_lim", "19")]
    assert summary(load_items(tmp_path)) == expected
    assert summary(load_items(tmp_path / "manifest.csv")) == expected
    assert all(item.path.is_file() for item in load_items(tmp_path))


def test_unknown_layout_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "something").mkdir()
    write_clip(tmp_path / "something" / "clip.wav")
    with pytest.raises(ValueError, match="In-the-Wild.*ASVspoof.*real/ and fake/.*Fake-or-Real"):
        load_items(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_items(tmp_path / "missing")


def test_summary_has_per_group_eer_and_min_dcf() -> None:
    def prediction(label: int, probability: float, source: str, system: str) -> Prediction:
        item = AudioItem(Path(f"{source}{label}.wav"), label, source=source, system=system)
        return Prediction(item, "ok", probability=probability, overall="Fake" if probability >= 0.5 else "Real",
                          zone="fake" if probability >= 0.5 else "real")

    predictions = [  # b's fake beats b's real but not a's: perfect within b, not against all reals
        prediction(0, 0.7, "a", ""), prediction(1, 0.9, "a", "A01"),
        prediction(0, 0.5, "b", ""), prediction(1, 0.6, "b", "A02"),
    ]
    metrics = summarise(predictions, {"normal": 0.5})
    assert metrics["per_system_eer"] == {"A01": 0.0, "A02": 0.25}
    assert metrics["per_system_trials"] == {"A01": {"fake": 1, "real": 2}, "A02": {"fake": 1, "real": 2}}
    assert metrics["per_source_eer"] == {"a": 0.0, "b": 0.25}
    assert metrics["per_source_eer_interval"]["a"] == [0.0, 0.0] and metrics["per_source_eer_interval"]["b"][1] > 0
    assert metrics["per_source_eer_within_source"] == {"a": 0.0, "b": 0.0}
    assert metrics["per_system_min_dcf"]["A01"] == 0.0 < metrics["per_system_min_dcf"]["A02"]
    assert set(metrics["per_source_min_dcf"]) == {"a", "b"} and "min_dcf" in metrics
    assert metrics["reals_called_fake"]["rate"] == 1.0 and metrics["fakes_called_real"]["rate"] == 0.0
    assert metrics["zones"] == {"real": {"real": 0, "uncertain": 0, "fake": 2},
                                "fake": {"real": 0, "uncertain": 0, "fake": 2}}


def test_compare_runs_pairs_the_trials_both_scored(tmp_path: Path) -> None:
    from soundsentry.evaluation import compare_runs

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    noisy = 1 / (1 + np.exp(-(labels - 0.5 + rng.normal(0, 0.8, labels.size))))

    def write_run(name: str, probabilities: np.ndarray, label_of=lambda label: label) -> Path:
        predictions = [  # two chunks of each file, scored alike; one file the run could not score
            Prediction(AudioItem(Path(f"{i}.flac"), int(label_of(label)), source="ab"[i % 2]),
                       "ok" if i else "error", probability=float(p), chunk=f"{i}.flac#{c}")
            for i, (label, p) in enumerate(zip(labels, probabilities, strict=True)) for c in (0, 1)
        ]
        path = tmp_path / name / "predictions.csv"
        path.parent.mkdir()
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(predictions[0].row()))
            writer.writeheader()
            writer.writerows(p.row() for p in predictions)
        return path

    baseline, perfect = write_run("baseline", noisy), write_run("perfect", np.where(labels == 1, 0.8, 0.2))
    assert compare_runs.main([str(baseline), str(perfect), "--json", str(tmp_path / "cmp.json")]) == 0
    result = json.loads((tmp_path / "cmp.json").read_text())
    assert result["trials"] == 2 * (labels.size - 1) and result["files"] == labels.size - 1
    pooled = result["pooled"]
    assert pooled["candidate_eer"] == 0.0 and pooled["baseline_eer"] > 0.2
    assert pooled["difference"] == -pooled["baseline_eer"] and pooled["interval"][1] < 0
    assert set(result["per_source"]) == {"a", "b"}
    # a run against itself: no difference, and no interval around it
    assert compare_runs.main([str(baseline), str(baseline), "--json", str(tmp_path / "same.json")]) == 0
    assert json.loads((tmp_path / "same.json").read_text())["pooled"]["interval"] == [0.0, 0.0]
    # runs of different test sets are refused, with the reason
    flipped = write_run("flipped", noisy, label_of=lambda label: 1 - label)
    assert compare_runs.main([str(baseline), str(flipped)]) == 2


def test_only_groups_with_enough_fakes_get_their_own_curve() -> None:
    labels = np.array([0] * 30 + [1] * 70)
    groups = np.array([""] * 30 + ["big"] * 40 + ["mid"] * 25 + ["tiny"] * 3 + ["few"] * 2)
    assert curve_groups(labels, groups) == (["big", "mid"], 2)  # largest first; tiny and few left out
    assert curve_groups(labels, np.array([""] * 30 + ["one"] * 70)) == ([], 0)  # one group would repeat "all"
    many = np.array([""] * 30 + [f"g{i // 20}" for i in range(280)])
    assert len(curve_groups(np.array([0] * 30 + [1] * 280), many)[0]) == MAX_GROUP_CURVES


def test_write_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    scores = np.clip(np.concatenate([rng.normal(0.35, 0.15, 50), rng.normal(0.65, 0.15, 50)]), 0, 1)
    groups = np.array([""] * 50 + ["A01"] * 25 + ["A02"] * 25)
    written = write_plots(tmp_path / "plots", labels, scores, 0.5, groups=groups)
    assert sorted(p.name for p in written) == ["confusion_matrix.png", "det.png", "roc.png", "score_histogram.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    # the histogram with the three duration categories' thresholds
    assert write_plots(tmp_path / "three", labels, scores, 0.5, groups=groups,
                       category_thresholds={"very_short": 0.9, "short": 0.66, "normal": 0.63})
    # one class only: no ROC/DET, the other two still come
    only_real = write_plots(tmp_path / "real", labels[:50], scores[:50], 0.5)
    assert sorted(p.name for p in only_real) == ["confusion_matrix.png", "score_histogram.png"]
