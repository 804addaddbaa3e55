"""Training recipes (configs/*.toml, soundsentry.training.recipes, ``soundsentry train``)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import joblib
import numpy as np
import pytest
import soundfile as sf

from soundsentry import cli
from soundsentry.constants import CHECKOUT, SAMPLE_RATE
from soundsentry.training import fit_operating_point, recipes, train_flatness, train_fusion
from soundsentry.training.spoofs import griffin_lim_resynthesis
from tests.conftest import speak

CONFIGS = sorted((CHECKOUT / "configs").glob("*.toml"))


def test_make_train_is_the_recipes_in_order() -> None:
    assert (CHECKOUT / "Makefile").read_text().count("soundsentry train --shared $(SHARED) configs/*.toml") == 1
    names = [path.name for path in CONFIGS]
    assert len(names) >= 10 and names == sorted(names) and all(name[:2].isdigit() for name in names)


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_recipe_is_accepted_by_its_step(path: Path) -> None:
    recipe = recipes.load_recipe(path)
    recipes.check(recipe)  # the step's own argparse
    assert recipe.about and recipe.minutes and recipe.output_dir() is not None


def _recorded_args(command: str, parse) -> dict:
    return vars(parse(shlex.split(command)[3:]))  # after "python -m scripts.<step>"


def test_the_shipped_fusion_and_flatness_came_from_their_recipes() -> None:
    """The arguments each shipped artefact records are those its recipe gives (paths relative to the checkout)."""
    fusion = json.loads((CHECKOUT / "data" / "fusion.json").read_text())["metadata"]["command"]
    recipe = recipes.load_recipe(CHECKOUT / "configs" / "17_fusion.toml")
    assert _recorded_args(fusion, train_fusion.parse_args) == vars(recipes.check(recipe))
    point = json.loads((CHECKOUT / "data" / "fusion.json").read_text())["metadata"]["operating_point"]["command"]
    recipe = recipes.load_recipe(CHECKOUT / "configs" / "20_operating_point.toml")
    assert _recorded_args(point, fit_operating_point.parse_args) == vars(recipes.check(recipe))
    flatness = joblib.load(CHECKOUT / "data" / "flatness.joblib")["metadata"]["command"]
    recipe = recipes.load_recipe(CHECKOUT / "configs" / "16_flatness.toml")
    assert _recorded_args(flatness, train_flatness.parse_args) == vars(recipes.check(recipe))


@pytest.fixture(scope="module")
def tiny_band_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two espeak-ng voices as reals and their Griffin-Lim re-synthesis as fakes, in real/ and fake/."""
    root = tmp_path_factory.mktemp("recipe-data")
    for folder in ("real", "fake"):
        (root / folder).mkdir()
    for index, (text, voice) in enumerate([("The birch canoe slid on the smooth planks.", "en-us"),
                                           ("Glue the sheet to the dark blue background.", "en-gb")]):
        samples, _ = sf.read(speak(text, root / f"voice{index}.wav", voice=voice), dtype="float32")
        sf.write(root / "real" / f"voice{index}.wav", samples, SAMPLE_RATE)
        fake = griffin_lim_resynthesis(samples, sample_rate=SAMPLE_RATE)
        sf.write(root / "fake" / f"voice{index}.wav", np.clip(fake, -1, 1), SAMPLE_RATE)
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_soundsentry_train_runs_a_recipe_and_keeps_it_beside_the_artefact(tiny_band_set: Path, tmp_path: Path,
                                                                           capsys) -> None:
    output = tmp_path / "models"
    recipe = _write(tmp_path / "flatness.toml", f"""
[recipe]
step = "train_flatness"
about = "a flatness scorer on two voices"
minutes = 1

[args]
data = ["{{shared}}/band"]
folds = 2
output = "{output}"
""")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "band").symlink_to(tiny_band_set)
    assert cli.main(["train", "--shared", str(tmp_path / "shared"), "--dry-run", str(recipe)]) == 0
    assert f"--data {tmp_path / 'shared'}/band --folds 2" in capsys.readouterr().out
    assert not output.exists()  # a dry run runs nothing

    assert cli.main(["train", "--shared", str(tmp_path / "shared"), str(recipe)]) == 0
    scorer = joblib.load(output / "flatness.joblib")
    assert scorer["metadata"]["files"] == 4 and scorer["metadata"]["rows"] == 4
    assert (output / "recipes" / "flatness.toml").read_text() == recipe.read_text()


@pytest.mark.parametrize(("text", "message"), [
    ("[recipe]\nstep = 'train_everything'\n", "step must be one of"),
    ("[recipe]\nstep = 'train_flatness'\n[args]\nlearning_rate = 3\n", "train_flatness refuses these arguments"),
    ("[recipe]\nstep = 'train_flatness'\n[args]\nfolds = 'many'\n", "train_flatness refuses these arguments"),
    ("[recipe]\nstep = 'train_flatness'\n[args]\ndata = {nested = 1}\n", "a table is not an argument value"),
    ("[recipe]\nstep = 'train_flatness'\n[optimiser]\nlr = 1\n", "nothing else (found ['optimiser'])"),
    ("[recipe\nstep = 'train_flatness'\n", "not valid TOML"),
], ids=["unknown-step", "unknown-option", "bad-value", "table-value", "unknown-table", "bad-toml"])
def test_a_bad_recipe_stops_the_run_before_any_step(tmp_path: Path, capsys, text: str, message: str) -> None:
    good_output = tmp_path / "first"
    good = _write(tmp_path / "01_good.toml", f"[recipe]\nstep = 'train_flatness'\n[args]\noutput = '{good_output}'\n")
    bad = _write(tmp_path / "02_bad.toml", text)
    assert cli.main(["train", str(good), str(bad)]) == 2
    error = capsys.readouterr().err
    assert message in error and str(bad) in error
    assert not good_output.exists()


def test_a_missing_recipe_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["train", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml: cannot read it" in capsys.readouterr().err
