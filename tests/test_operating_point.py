"""The operating point: thresholds from real speech of sources no scorer trained on, and the sources themselves."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from soundsentry.training import fit_operating_point as op
from soundsentry.training import make_reals


def trials(source: str, condition: str, category: str, probabilities) -> list[op.Trial]:
    return [op.Trial(source, condition, category, float(p)) for p in probabilities]


def test_lowest_threshold_meets_the_target_in_the_worst_group():
    groups = op.groups_of(trials("a", "file", "normal", np.linspace(0, 1, 101))
                          + trials("b", "file", "normal", np.linspace(0, 0.5, 1001)))
    threshold = op.lowest_threshold(groups, 0.10)
    assert np.mean(groups[("a", "file")] >= threshold) <= 0.10
    assert op.false_alarm_rate(groups, threshold) <= 0.10
    # one step lower breaks the target: it is the lowest such threshold
    lower = max(v for values in groups.values() for v in values if v < threshold)
    assert op.false_alarm_rate(groups, lower) > 0.10
    # a big, low-scoring source does not buy the small high-scoring one a lower threshold
    assert threshold == pytest.approx(0.9, abs=0.011)


def test_thresholds_per_category_and_the_pooled_fallback():
    rng = np.random.default_rng(0)
    data = (trials("a", "chunk", "short", rng.uniform(0.0, 0.6, 200))
            + trials("b", "chunk", "short", rng.uniform(0.2, 0.8, 200))
            + trials("a", "file", "normal", rng.uniform(0.0, 0.3, 100)))  # one source only: pooled threshold
    thresholds = op.fit_thresholds(data, 0.05)
    assert set(thresholds) == {"very_short", "short", "normal"}
    assert thresholds["normal"] == thresholds["very_short"] == op.lowest_threshold(op.groups_of(data), 0.05)
    rates = op.realised_rates(data, thresholds)
    assert max(rates["a"]["chunk"], rates["b"]["chunk"]) <= 0.05
    # never below the calibration's equal-error thresholds
    floor = {"very_short": 0.95, "short": 0.1, "normal": 0.99}
    floored = op.fit_thresholds(data, 0.05, floor)
    assert floored == {"very_short": 0.95, "short": thresholds["short"], "normal": 0.99}
    with pytest.raises(ValueError, match="no scored real"):
        op.fit_thresholds([], 0.1)


def test_leave_one_out_measures_the_sources_it_left_out():
    rng = np.random.default_rng(1)
    data = [t for name, high in (("low", 0.4), ("mid", 0.6), ("high", 0.99)) for t in
            trials(name, "chunk", "short", rng.uniform(0, high, 300))]
    held = op.leave_one_out(data, 0.10)
    assert set(held) == {"low", "mid", "high"}
    # fitted on the two lower sources, the high one is called Fake far above the target: what it is for
    assert held["high"]["called_fake"]["high"]["chunk"] > 0.3
    assert held["low"]["called_fake"]["low"]["chunk"] < 0.10
    # sources of one package leave together
    packaged = op.leave_one_out(data, 0.10, group_of=lambda s: "p" if s != "high" else "q")
    assert set(packaged) == {"p", "q"} and set(packaged["p"]["called_fake"]) == {"low", "mid"}


def test_real_sources_name_licences_and_write_a_manifest(tmp_path, monkeypatch):
    for source in make_reals.SOURCES.values():
        assert source.licence and source.package
    root = tmp_path / "sound"
    (root / "level" / "cs").mkdir(parents=True)
    import soundfile as sf

    for name in ("lev-m-ahoj.ogg", "lev-v-cau.ogg", "odd.ogg"):
        sf.write(root / "level" / "cs" / name, np.zeros(8000, dtype=np.float32), 16000, format="OGG")
    fake_source = make_reals.RealSource("fillets_cs", "fillets-ng-data-cs", root, "*/cs/*.ogg", "GPL-2",
                                            lambda p: "cs", make_reals._fillets_speaker)
    monkeypatch.setitem(make_reals.SOURCES, "fillets_cs", fake_source)
    assert make_reals.main(["--sources", "fillets_cs", "--output-dir", str(tmp_path / "out")]) == 0
    with (tmp_path / "out" / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["speaker"] for r in rows} == {"fillets-m", "fillets-v", "fillets-other"}
    assert {r["label"] for r in rows} == {"real"} and all(r["licence"] == "GPL-2" for r in rows)
    assert float(rows[0]["duration_s"]) == pytest.approx(0.5)
    empty = make_reals.RealSource("fillets_cs", "fillets-ng-data-cs", tmp_path / "absent", "*", "GPL-2",
                                      lambda p: "cs", lambda p: "x")
    monkeypatch.setitem(make_reals.SOURCES, "fillets_cs", empty)
    assert make_reals.main(["--sources", "fillets_cs", "--output-dir", str(tmp_path / "none")]) == 1


def test_joined_clips_keep_one_speaker_and_their_rate(tmp_path):
    import soundfile as sf

    root = tmp_path / "klettres"
    for language in ("cs", "fr"):
        (root / language / "alpha").mkdir(parents=True)
        for index in range(5):
            sf.write(root / language / "alpha" / f"{index}.ogg", np.full(22050, 0.1, dtype=np.float32), 44100,
                     format="OGG")
    source = make_reals.RealSource("joined", "klettres-data", root, "*/*/*.ogg", "GPL-2+",
                                       lambda p: p.parts[-3], lambda p: "k-" + p.parts[-3], join_s=1.5)
    found = make_reals.rows(source, None, joined_dir=tmp_path / "out")
    # five 0.5 s clips per speaker, 0.3 s gaps: two recordings of >= 1.5 s each (two clips left over)
    assert sorted(r["speaker"] for r in found) == ["k-cs", "k-cs", "k-fr", "k-fr"]
    assert {r["language"] for r in found} == {"cs", "fr"}
    info = sf.info(found[0]["path"])
    assert info.samplerate == 44100 and info.duration == pytest.approx(0.5 * 2 + 0.3 * 1, abs=0.01)


def test_fit_operating_point_rewrites_the_fusion_thresholds(tmp_path, speech_wav, two_speaker_wav):
    """The step end to end on the shipped models: reals of two sources → thresholds in fusion.json that the
    detector then serves, with the equal-error thresholds kept as where the uncertain zone begins."""
    import json
    import shutil

    from soundsentry.detector import Detector, DetectorConfig

    data = tmp_path / "data"
    shutil.copytree("data", data, ignore=shutil.ignore_patterns("*.md"))
    before = json.loads((data / "fusion.json").read_text())
    eer = before["metadata"].get("operating_point", {}).get("eer_thresholds", before["thresholds"])
    manifest = tmp_path / "reals.csv"
    manifest.write_text("path,label,source\n" + "".join(
        f"{path},real,{source}\n" for source in ("a", "b") for path in (speech_wav, two_speaker_wav)))
    assert op.main(["--reals", str(manifest), "--output-dir", str(data), "--target", "0.2"]) == 0
    after = json.loads((data / "fusion.json").read_text())
    point = after["metadata"]["operating_point"]
    assert after["weights"] == before["weights"] and after["bias"] == before["bias"]
    assert point["eer_thresholds"] == eer and point["thresholds"] == after["thresholds"]
    assert all(after["thresholds"][c] >= eer[c] for c in eer)
    assert set(point["trials"]) == {"a", "b"} and point["files"] == 4
    detector = Detector.load(DetectorConfig(data_dir=data))
    assert detector.thresholds == after["thresholds"] and detector.uncertain_from == eer
    # a second fit starts from the same equal-error thresholds, not from the first fit's
    assert op.main(["--reals", str(manifest), "--output-dir", str(data), "--target", "0.5"]) == 0
    again = json.loads((data / "fusion.json").read_text())["metadata"]["operating_point"]
    assert again["eer_thresholds"] == eer
    assert op.main(["--reals", str(tmp_path / "absent.csv"), "--output-dir", str(data)]) == 2
    assert op.main(["--reals", str(manifest), "--output-dir", str(data), "--target", "1.5"]) == 2
