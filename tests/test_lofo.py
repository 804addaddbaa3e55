"""Leave-one-family-out: each family's fakes are kept out of training and scored against the devset's reals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsentry.training import lofo, zoo

SENTENCES = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
             "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish."]
TINY = '{"channels": [4, 8, 8], "d_model": 32, "n_heads": 2, "ff_dim": 64, "head_hidden": 16, "dropout": 0.0}'


def _manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "source", "system", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A training manifest (reals of four espeak-ng "speakers" over a noise floor, fakes of two families:
    Pico and flite) and a "devset" manifest of two reals and two fakes."""
    root = tmp_path_factory.mktemp("lofo")
    rng = np.random.default_rng(0)
    rows, dev = [], []
    for index, text in enumerate(SENTENCES):
        speech, rate = zoo.GENERATORS["espeak"].speak(text, f"en-us+m{index + 1}", speed=1.0, pitch=1.0, seed=0)
        real = root / f"real{index}.wav"
        sf.write(real, speech + rng.normal(0, 0.002, len(speech)), rate)
        rows.append({"path": real.name, "label": "real", "source": "reads", "system": "", "speaker": f"s{index}"})
        for family, (generator, voice) in {"pico": ("pico", "en-US"), "flite": ("flite", "slt")}.items():
            fake, rate = zoo.GENERATORS[generator].speak(text, voice, speed=1.0, pitch=1.0, seed=0)
            path = root / f"{family}{index}.wav"
            sf.write(path, fake, rate)
            rows.append({"path": path.name, "label": "fake", "source": f"zoo_{family}", "system": generator,
                         "speaker": f"s{index}"})  # grouped with the real of its sentence
    for index in range(2):
        speech, rate = zoo.GENERATORS["espeak"].speak(SENTENCES[index], "en-gb+f2", speed=1.0, pitch=1.0, seed=0)
        sf.write(root / f"dev_real{index}.wav", speech + rng.normal(0, 0.002, len(speech)), rate)
        fake, rate = zoo.GENERATORS["festival"].speak(SENTENCES[index], "kal_diphone", speed=1.0, pitch=1.0, seed=0)
        sf.write(root / f"dev_fake{index}.wav", fake, rate)
        dev += [{"path": f"dev_real{index}.wav", "label": "real", "source": "dev", "system": "", "speaker": ""},
                {"path": f"dev_fake{index}.wav", "label": "fake", "source": "dev", "system": "", "speaker": ""}]
    return _manifest(root / "train.csv", rows), _manifest(root / "dev.csv", dev)


def test_each_family_is_held_out_of_training_and_scored(sets: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = sets
    trainer = ["--features", "linear", "--model-config", TINY, "--epochs", "1", "--windows-per-epoch", "16",
               "--augmentation", "none", "--holdout", "0.25", "--threads", "1", "--workers", "1",
               "--cache", str(tmp_path / "cache")]
    assert lofo.main(["--data", str(train), "--devset", str(dev), "--output-dir", str(tmp_path / "out"),
                      "--", *trainer]) == 0
    results = json.loads((tmp_path / "out" / "lofo.json").read_text())
    assert set(results) == {"zoo_pico", "zoo_flite"}
    for family, entry in results.items():
        assert 0.0 <= entry["held_out_eer"] <= 1.0 and entry["held_out_fakes"] == 4 and entry["against_reals"] == 2
        assert set(entry["devset_per_source_eer"]) == {"dev"}
        with (tmp_path / "out" / family / "train.csv").open() as handle:
            sources = {row["source"] for row in csv.DictReader(handle)}
        assert family not in sources and sources == {"reads", "zoo_pico", "zoo_flite"} - {family}
    with pytest.raises(SystemExit, match="no fakes of zoo_hts"):
        lofo.main(["--data", str(train), "--families", "zoo_hts", "--output-dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no devset manifest"):
        lofo.main(["--data", str(train), "--devset", str(tmp_path / "none.csv"), "--output-dir", str(tmp_path / "x")])
