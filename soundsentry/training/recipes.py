"""Recipes: every step of ``make train`` as one TOML file in ``configs/``.

A recipe names a step (a module of :mod:`soundsentry.training`) and its arguments, which are exactly
that step's command-line options, dashes written as underscores::

    [recipe]
    step = "train_flatness"          # soundsentry.training.train_flatness
    about = "the upper-band flatness scorer"
    minutes = 6                      # about how long on this project's 2-core machine

    [args]
    data = ["cache/spoofs_band_gan/manifest.csv"]
    augmented_variants = 0
    output = "data"

``true`` is a bare flag (``--eval-devset``), ``false`` or a missing key the step's default, a list
the option's values (``--data a b``). ``{shared}`` in a string stands for the shared data folder
(``--shared``, default ``../shared``); other paths are relative to where the recipe runs (the checkout).

``soundsentry train RECIPE...`` runs them in the order given (``make train``: ``configs/*.toml`` in
file-name order) and copies each recipe into ``recipes/`` of the directory its step wrote to, beside
the artefact and its metadata, as AASIST keeps its ``.conf``: ``data/recipes/`` says how each shipped
artefact was made. ``--dry-run`` checks every recipe against its step's options and prints the
commands without running anything.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the steps a recipe may name (each a module of soundsentry.training with ``parse_args`` and ``main``)
STEPS = ("make_spoofs", "make_zoo", "train_vocoder", "make_neural_spoofs", "make_band_spoofs", "feature_extractor",
         "train_classifier", "train_cnn_transformer", "train_flatness", "train_fusion", "make_reals",
         "fit_operating_point", "fit_rollup")
RECORD_DIR = "recipes"


class RecipeError(ValueError):
    """A recipe that cannot run: unreadable, an unknown step, or arguments its step refuses."""


@dataclass(frozen=True)
class Recipe:
    path: Path
    step: str
    about: str
    minutes: float | None
    args: dict[str, Any]

    def argv(self, shared: str | Path = "../shared") -> list[str]:
        """The step's command line for these arguments."""
        argv: list[str] = []
        for key, value in self.args.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, list):
                argv += [flag, *(self._text(key, v, shared) for v in value)]
            else:
                argv += [flag, self._text(key, value, shared)]
        return argv

    def _text(self, key: str, value: Any, shared: str | Path) -> str:
        if isinstance(value, (dict, list)):
            raise RecipeError(f"{self.path}: [args] {key}: a table is not an argument value (write a value or "
                              f"a list of values)")
        return str(value).replace("{shared}", str(shared)) if isinstance(value, str) else str(value)

    def command(self, shared: str | Path = "../shared") -> str:
        return " ".join([f"python -m scripts.{self.step}", *self.argv(shared)])

    def output_dir(self, shared: str | Path = "../shared") -> Path | None:
        """The directory the step writes to (``output_dir``, or ``output``: a directory, or a file's folder)."""
        key = "output_dir" if "output_dir" in self.args else "output"
        if not isinstance(self.args.get(key), str):
            return None
        path = Path(self._text(key, self.args[key], shared))
        return path.parent if path.suffix else path


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecipeError(f"{path}: cannot read it ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: not valid TOML ({error})") from error
    head, args = document.get("recipe", {}), document.get("args", {})
    unknown = set(document) - {"recipe", "args"}
    if unknown or not isinstance(head, dict) or not isinstance(args, dict):
        raise RecipeError(f"{path}: a recipe has a [recipe] table (step, about, minutes) and an [args] table, "
                          f"nothing else{f' (found {sorted(unknown)})' if unknown else ''}")
    step = head.get("step")
    if step not in STEPS:
        raise RecipeError(f"{path}: [recipe] step must be one of {', '.join(STEPS)} (got {step!r})")
    minutes = head.get("minutes")
    return Recipe(path, step, str(head.get("about", "")), float(minutes) if minutes is not None else None, args)


def _module(step: str):
    return importlib.import_module(f"soundsentry.training.{step}")


def check(recipe: Recipe, shared: str | Path = "../shared") -> argparse.Namespace:
    """Parse the recipe's arguments with its step's own options; :class:`RecipeError` saying why not."""
    try:
        return _module(recipe.step).parse_args(recipe.argv(shared))
    except SystemExit as error:  # argparse has printed the reason on stderr
        raise RecipeError(f"{recipe.path}: {recipe.step} refuses these arguments (see above): "
                          f"{recipe.command(shared)}") from error


def run(recipe: Recipe, shared: str | Path = "../shared") -> None:
    """Run the recipe's step, then keep a copy of the recipe beside what it wrote."""
    check(recipe, shared)
    log.info("recipe %s: %s%s", recipe.path, recipe.command(shared),
             f" (about {recipe.minutes:g} min)" if recipe.minutes else "")
    status = _module(recipe.step).main(recipe.argv(shared))
    if isinstance(status, int) and status != 0:
        raise RecipeError(f"{recipe.path}: {recipe.step} exited with status {status}")
    record = recipe.output_dir(shared)
    if record is not None:
        (record / RECORD_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe.path, record / RECORD_DIR / recipe.path.name)


def main(argv: list[str] | None = None) -> int:
    """``soundsentry train RECIPE... [--shared DIR] [--dry-run]``."""
    parser = argparse.ArgumentParser(prog="soundsentry train", description="Run training recipes (configs/*.toml) "
                                     "in the order given; each is copied beside the artefact it made.")
    parser.add_argument("recipes", type=Path, nargs="+", metavar="RECIPE")
    parser.add_argument("--shared", default="../shared", help="the shared data folder {shared} stands for "
                        "(default ../shared)")
    parser.add_argument("--dry-run", action="store_true", help="check every recipe and print its command; run nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        recipes = [load_recipe(path) for path in args.recipes]
        for recipe in recipes:  # refuse a bad recipe before hours of the good ones run
            check(recipe, args.shared)
        if args.dry_run:
            total = sum(r.minutes or 0 for r in recipes)
            for recipe in recipes:
                minutes = f"{recipe.minutes:6.0f} min" if recipe.minutes else "         ?"
                sys.stdout.write(f"{minutes}  {recipe.path}: {recipe.command(args.shared)}\n")
            sys.stdout.write(f"{total:6.0f} min in all\n")
            return 0
        for recipe in recipes:
            run(recipe, args.shared)
    except RecipeError as error:
        sys.stderr.write(f"soundsentry train: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
