"""Prepare pyannote models for offline use: the diarization pipeline (the service then diarizes with
pyannote instead of the embedded default) and the x-vector that TKAN can read instead of Resemblyzer.

    python -m scripts.entry export [--pipeline pyannote/speaker-diarization-community-1] [--output DIR]
        Download the pipeline (needs HUGGING_FACE_TOKEN and network) into DIR (default
        model/speaker-diarization-community-1) in the layout ``Pipeline.from_pretrained(DIR)`` reads,
        then load it back offline to check it.
    python -m scripts.entry export --model pyannote/embedding [--output DIR]
        Download pyannote's x-vector (XVectorSincNet) into DIR (default model/embedding) in the layout
        ``Model.from_pretrained(DIR)`` reads, then load it back offline as TKAN's x-vector network.
    python -m scripts.entry check [DIR]
        Say whether DIR holds a complete pipeline and load it (offline).
    python -m scripts.entry random-pipeline DIR [--seed 0]
        Write a pipeline with community-1's layout and architectures but random weights (PyanNet
        segmentation, WeSpeakerResNet34 embedding, a PLDA pair): for tests and speed measurements
        without network. Its diarization is meaningless.
    python -m scripts.entry random-xvector DIR [--seed 0]
        Write an XVectorSincNet checkpoint with random weights in pyannote/embedding's layout (tests,
        speed measurements: its compute cost is the real model's; its features are meaningless).

Exit status: 0 on success, 2 when something the user must provide is missing (token, network,
files), 1 when a pipeline does not load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from soundsentry.constants import CHECKOUT
from soundsentry.errors import ModelLoadError
from soundsentry.models.xvector import CHECKPOINT_FILE, HUB_ID, WINDOW_S, load_xvector
from soundsentry.speech.pyannote_backend import (
    PIPELINE_FILES,
    PIPELINE_ID,
    TOKEN_ENV,
    load_pipeline,
    missing_pipeline_files,
)

REPO_ROOT = CHECKOUT
MODEL_DIR = REPO_ROOT / "model"
EXPORT_PATTERNS = ("*.yaml", "*.bin", "*.npz", "*.safetensors", "*.md", "LICENSE*")

# community-1's pipeline configuration (sub-models referenced as $model/<folder>)
COMMUNITY_CONFIG = """\
# Written by `python -m scripts.entry random-pipeline`: community-1's layout, RANDOM weights.
dependencies:
  pyannote.audio: {version}
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    clustering: VBxClustering
    segmentation: $model/segmentation
    segmentation_batch_size: 32
    embedding: $model/embedding
    embedding_batch_size: 32
    embedding_exclude_overlap: true
    plda: $model/plda
params:
  clustering:
    threshold: 0.6
    Fa: 0.07
    Fb: 0.8
  segmentation:
    min_duration_off: 0.0
"""


def default_output(pipeline_id: str) -> Path:
    return MODEL_DIR / pipeline_id.split("/")[-1]


class UserActionNeeded(Exception):
    """Something only the user can provide is missing; the message says what and how."""


def token_missing_message(repo_id: str, command: str, fallback: str) -> str:
    return (
        f"{TOKEN_ENV} is not set. To export {repo_id} for offline use:\n"
        f"  1. accept the user conditions at https://hf.co/{repo_id} (and of any model it uses)\n"
        "  2. create a read token at https://hf.co/settings/tokens\n"
        f"  3. {TOKEN_ENV}=hf_... python -m scripts.entry {command}\n"
        f"{fallback}"
    )


def download_failed(repo_id: str, error: Exception) -> UserActionNeeded:
    return UserActionNeeded(
        f"Could not download {repo_id}: {type(error).__name__}: {error}\n"
        f"Check the network (huggingface.co must be reachable), that {TOKEN_ENV} is valid and that its "
        f"account accepted the conditions at https://hf.co/{repo_id}."
    )


def replace_directory(staging: Path, output: Path) -> None:
    """Move a checked export into place, replacing what was there only now."""
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output)


def make_staging(output: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=".export-", dir=output.parent if output.parent.exists() else None))


def export_pipeline(pipeline_id: str, output: Path, token: str | None) -> Path:
    """Download ``pipeline_id`` (and the pyannote models its config names by hub id) into ``output``.

    Sub-models referenced as ``$model/<folder>`` come with the repository; others that are pyannote
    hub ids (3.x style configs) are downloaded into ``output/<param>/`` and the config is rewritten
    to point there, so the directory is self-contained.
    """
    if not token:
        raise UserActionNeeded(token_missing_message(
            pipeline_id, f"export --pipeline {pipeline_id}",
            "Until then the service diarizes with its embedded default (Resemblyzer + clustering).",
        ))
    import yaml
    from huggingface_hub import snapshot_download

    staging = make_staging(output)
    try:
        try:
            snapshot_download(pipeline_id, token=token, local_dir=staging, allow_patterns=list(EXPORT_PATTERNS))
            config_path = staging / "config.yaml"
            config = yaml.safe_load(config_path.read_text())
            params = config.get("pipeline", {}).get("params", {})
            for key in ("segmentation", "embedding"):
                value = params.get(key)
                if isinstance(value, str) and value.startswith("pyannote/"):
                    snapshot_download(value, token=token, local_dir=staging / key, allow_patterns=list(EXPORT_PATTERNS))
                    params[key] = f"$model/{key}"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        except Exception as error:  # huggingface_hub: HTTP, connection, offline-mode and gating errors
            raise download_failed(pipeline_id, error) from error
        load_pipeline(staging)  # offline check before anything replaces a working export
        replace_directory(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def export_xvector(model_id: str, output: Path, token: str | None) -> Path:
    """Download pyannote's x-vector model ``model_id`` (``pyannote/embedding``) into ``output``.

    The directory then holds ``pytorch_model.bin`` (and the model card) as ``Model.from_pretrained``
    reads it; it is loaded offline as TKAN's x-vector network before it replaces ``output``.
    """
    if not token:
        raise UserActionNeeded(token_missing_message(
            model_id, f"export --model {model_id}",
            "Until then TKAN reads the shipped Resemblyzer encoder (the default); x-vector TKAN artefacts "
            "cannot load.",
        ))
    from huggingface_hub import snapshot_download

    staging = make_staging(output)
    try:
        try:
            snapshot_download(model_id, token=token, local_dir=staging,
                              allow_patterns=[CHECKPOINT_FILE, "config.yaml", "*.md", "LICENSE*"])
        except Exception as error:  # huggingface_hub: HTTP, connection, offline-mode and gating errors
            raise download_failed(model_id, error) from error
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        load_xvector(staging)  # offline check before anything replaces a working export
        replace_directory(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def write_checkpoint(model, path: Path) -> Path:
    """Save a pyannote ``Model`` the way pyannote saves one, so ``Model.from_pretrained`` reads it.

    Lightning's ``state_dict`` and ``hyper_parameters`` plus pyannote's ``on_save_checkpoint`` block
    (versions, architecture, specifications).
    """
    import lightning
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def write_random_pipeline(directory: Path, seed: int = 0) -> Path:
    """A pipeline directory with community-1's layout and architectures, randomly initialised.

    Checkpoints are written by :func:`write_checkpoint`, so ``Model.from_pretrained`` and
    ``Pipeline.from_pretrained`` read them as they read downloaded ones.
    """
    import torch
    from pyannote.audio import __version__
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    segmentation = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.0},
        linear={"hidden_size": 128, "num_layers": 2},
    )
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        min_duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    segmentation.build()
    embedding = WeSpeakerResNet34()
    embedding.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0, min_duration=5.0
    )

    directory.mkdir(parents=True, exist_ok=True)
    for folder, model in (("segmentation", segmentation), ("embedding", embedding)):
        write_checkpoint(model, directory / folder / CHECKPOINT_FILE)

    rng = np.random.default_rng(seed)
    dimension, lda_dimension = embedding.dimension, 128
    lda, _ = np.linalg.qr(rng.standard_normal((dimension, lda_dimension)))
    rotation, _ = np.linalg.qr(rng.standard_normal((lda_dimension, lda_dimension)))
    (directory / "plda").mkdir(exist_ok=True)
    np.savez(
        directory / "plda" / "xvec_transform.npz",
        mean1=rng.standard_normal(dimension) * 0.01,
        mean2=rng.standard_normal(lda_dimension) * 0.01,
        lda=lda,
    )
    np.savez(
        directory / "plda" / "plda.npz",
        mu=np.zeros(lda_dimension),
        tr=rotation,
        psi=np.sort(rng.uniform(0.5, 5.0, lda_dimension))[::-1].copy(),
    )
    (directory / "config.yaml").write_text(COMMUNITY_CONFIG.format(version=__version__))
    return directory


def write_random_xvector(directory: Path, seed: int = 0) -> Path:
    """An x-vector directory in ``pyannote/embedding``'s layout (``pytorch_model.bin``, an
    ``XVectorSincNet`` with SincNet stride 10 and a 512-d embedding), randomly initialised.

    It loads through :func:`soundsentry.models.xvector.load_xvector` like a downloaded one: for tests and
    speed measurements (the compute cost is the real model's; the features mean nothing).
    """
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet

    torch.manual_seed(seed)
    model = XVectorSincNet(sincnet={"stride": 10}, dimension=512)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=WINDOW_S, min_duration=WINDOW_S
    )
    write_checkpoint(model, directory / CHECKPOINT_FILE)
    (directory / "README.md").write_text(
        "Written by `python -m scripts.entry random-xvector`: pyannote/embedding's architecture with RANDOM "
        "weights (tests and speed measurements only).\n"
    )
    return directory


def check(directory: Path) -> str:
    missing = missing_pipeline_files(directory)
    if not (directory / "config.yaml").is_file():
        raise UserActionNeeded(
            f"No pipeline in {directory} (config.yaml missing). Export one with "
            f"`{TOKEN_ENV}=hf_... python -m scripts.entry export --output {directory}`."
        )
    pipeline = load_pipeline(directory)
    note = f" (not in the community-1 layout: {', '.join(missing)} missing, but it loads)" if missing else ""
    return f"{directory}: {type(pipeline).__name__} loads offline{note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="download a pipeline (or the x-vector model) into model/")
    what = export.add_mutually_exclusive_group()
    what.add_argument("--pipeline", default=PIPELINE_ID, help="a speaker-diarization pipeline")
    what.add_argument("--model", choices=[HUB_ID], help="pyannote's x-vector model, for TKAN (model/embedding)")
    export.add_argument("--output", type=Path, default=None)
    checking = commands.add_parser("check", help="check a local pipeline directory")
    checking.add_argument("directory", type=Path, nargs="?", default=default_output(PIPELINE_ID))
    random = commands.add_parser("random-pipeline", help="write a random-weight pipeline (tests, benchmarks)")
    random.add_argument("directory", type=Path)
    random.add_argument("--seed", type=int, default=0)
    random_xvector = commands.add_parser("random-xvector", help="write a random-weight x-vector (tests, benchmarks)")
    random_xvector.add_argument("directory", type=Path)
    random_xvector.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "export" and args.model:
            output = export_xvector(args.model, args.output or default_output(args.model), os.environ.get(TOKEN_ENV))
            sys.stdout.write(
                f"exported {args.model} to {output}; extract TKAN features with it: "
                f"python -m scripts.feature_extractor --network xvector --xvector-dir {output} ...\n"
            )
        elif args.command == "export":
            output = export_pipeline(
                args.pipeline, args.output or default_output(args.pipeline), os.environ.get(TOKEN_ENV)
            )
            sys.stdout.write(
                f"exported {args.pipeline} to {output}; the service will use it (files: {', '.join(PIPELINE_FILES)})\n"
            )
        elif args.command == "check":
            sys.stdout.write(check(args.directory) + "\n")
        elif args.command == "random-xvector":
            sys.stdout.write(f"random-weight x-vector written to {write_random_xvector(args.directory, args.seed)}\n")
        else:
            sys.stdout.write(f"random-weight pipeline written to {write_random_pipeline(args.directory, args.seed)}\n")
    except UserActionNeeded as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except ModelLoadError as error:
        sys.stderr.write(f"{error.message}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
