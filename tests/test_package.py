"""The project as an installed package: the wheel carries the library, the service, the shipped models and the
``soundsentry`` command, and works from outside the repository."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed (without its dependencies: they are this venv's) into a
    directory of its own."""
    where = tmp_path_factory.mktemp("package")
    source = where / "source"  # a copy of what the wheel is built from: the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("soundsentry", "api", "data"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(where / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (where / "dist").glob("soundsentry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("soundsentry/data/fusion.json", "soundsentry/data/cnn_transformer.pt",
                    "soundsentry/data/flatness.joblib", "soundsentry/scorers/__init__.py", "api/main.py",
                    "api/static/index.html", "api/static/page.js", "api/static/trust.json"):  # the page at /
        assert shipped in names, shipped
    assert not any(name.startswith(("scripts/", "tests/")) for name in names)  # they stay in the checkout
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(where / "site"),
                    str(wheel)], check=True, capture_output=True)
    return where


def _outside(installed: Path, *command: str) -> subprocess.CompletedProcess:
    elsewhere = installed / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(installed / "site"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)


def test_detector_loads_from_the_installed_package(installed: Path) -> None:
    probe = ("import soundsentry, soundsentry.constants as c; from soundsentry import Detector; "
             "d = Detector.load(); print(soundsentry.__file__); print(c.DEFAULT_DATA_DIR); print(sorted(d.members))")
    shown = _outside(installed, sys.executable, "-c", probe)
    assert shown.returncode == 0, shown.stderr
    module, data, members = shown.stdout.strip().splitlines()
    site = str(installed / "site")
    assert module.startswith(site) and data == str(Path(site) / "soundsentry" / "data")
    assert members == "['cnn', 'flatness']"


def test_the_command_predicts_from_any_directory(installed: Path, speech_wav: Path) -> None:
    shown = _outside(installed, str(installed / "site" / "bin" / "soundsentry"), "predict", str(speech_wav))
    assert shown.returncode == 0, shown.stderr
    path, verdict, probability, *_ = shown.stdout.strip().split("\t")
    assert path == str(speech_wav) and verdict in ("Real", "Fake") and probability.startswith("P(fake)=")
    usage = _outside(installed, str(installed / "site" / "bin" / "soundsentry"), "nonsense")
    assert usage.returncode == 2 and "serve,predict,evaluate" in usage.stderr


def _import_graph() -> dict[str, set[str]]:
    """soundsentry's and api's imports of each other, module by module, read from the source: lazy imports
    inside functions count too."""
    modules = {}
    for root in ("soundsentry", "api"):
        for path in (REPO / root).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            edges |= {target for target in targets if target in modules and target != name}
        graph[name] = edges
    return graph


def test_no_import_circle() -> None:
    graph = _import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import circle: " + " → ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_serving_imports_no_training_or_evaluation_code() -> None:
    graph = _import_graph()
    served, todo = set(), ["api.main", "api.server", "soundsentry.detector"]
    while todo:
        module = todo.pop()
        if module not in served:
            served.add(module)
            todo += graph[module]
    assert not {m for m in served if m.startswith(("soundsentry.training", "soundsentry.evaluation"))}, served
    assert {"soundsentry.scorers", "soundsentry.speech.vad", "soundsentry.models.spectral"} <= served
