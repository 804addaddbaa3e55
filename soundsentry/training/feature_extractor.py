"""Extract TKAN feature rows for labelled audio into a resumable cache.

    python -m scripts.feature_extractor --data ../shared/corpus --data cache/spoofs/manifest.csv \
        --output cache/features/train

    python -m scripts.feature_extractor --network xvector --xvector-dir model/embedding \
        --data ../shared/corpus --output cache/features/train-xvector

Writes ``features.npy`` (row, dimension), ``labels.npy`` (row,; 1 = fake), ``meta.csv`` (one line
per row: file, speaker, source, system, variant, augmentation, duration_s) and ``spec.json`` (the
feature definition, the recipe, and the speaker network with its checkpoint's SHA-256).
Each file's rows are cached under ``items/`` so an interrupted run resumes where it stopped.
``--network`` picks the speaker network TKAN reads: ``resemblyzer`` (default, shipped) or ``xvector``
(pyannote's XVectorSincNet from ``--xvector-dir``, see ``model/README.md``).
``--data`` takes manifests, folders holding ``manifest.csv``, folders with ``real/`` + ``fake/``, and
the In-the-Wild, ASVspoof 2019 LA / 2021 LA and DF and Fake-or-Real layouts (``soundsentry.datasets``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from soundsentry.audio import decode_file
from soundsentry.datasets import AudioItem, load_items
from soundsentry.errors import InputError, ModelLoadError
from soundsentry.models.layers import ALIASES, LAYOUTS, TkanNetwork, resolve_network_name
from soundsentry.models.speaker import load_tkan_network
from soundsentry.models.tkan import FeatureSpec
from soundsentry.models.xvector import DEFAULT_XVECTOR_DIR
from soundsentry.speech.vad import SileroVad
from soundsentry.training.features import ExtractionRecipe, augment_for_training, extract_item_rows

log = logging.getLogger("feature_extractor")
META_FIELDS = ["path", "label", "speaker", "source", "system", "variant", "augmentation", "duration_s"]


def item_seed(item: AudioItem, recipe: ExtractionRecipe) -> int:
    digest = hashlib.sha256(f"{recipe.seed}:{item.path.name}:{item.system}".encode()).hexdigest()
    return int(digest[:8], 16)


def item_cache_key(item: AudioItem, spec: FeatureSpec, recipe: ExtractionRecipe, network: TkanNetwork) -> str:
    """Cache file name of one item's rows: the file, the feature definition, the recipe, and the
    network's weights when its name does not pin them (one x-vector checkpoint's rows are not another's)."""
    text = f"{item.path}:{spec.key}:{json.dumps(recipe.to_dict())}"
    if network.weights_id is not None:
        text += f":{network.weights_id}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def feature_spec(spec_path: Path | None, network: str | None) -> FeatureSpec:
    """The ``--spec`` definition, else the default one for ``--network``; they must agree."""
    if spec_path is None:
        return FeatureSpec(network=resolve_network_name(network or "resemblyzer"))
    spec = FeatureSpec.from_dict(json.loads(spec_path.read_text()))
    if network is not None and resolve_network_name(network) != spec.network:
        raise SystemExit(f"--network {network} contradicts {spec_path}, which reads {spec.network}")
    return spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True,
                        help="manifests or folders; repeatable")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--spec", type=Path, help="FeatureSpec as JSON (default: all layers of --network, k=32)")
    parser.add_argument("--network", choices=[*ALIASES, *LAYOUTS],
                        help="speaker network TKAN reads (default resemblyzer, or the one --spec names)")
    parser.add_argument("--xvector-dir", type=Path, default=DEFAULT_XVECTOR_DIR,
                        help="pyannote x-vector checkpoint directory (pytorch_model.bin) for --network xvector")
    parser.add_argument("--no-augment", action="store_true", help="no codec/noise augmentation (evaluation sets)")
    parser.add_argument("--crops", type=float, nargs="*", default=[4.0, 2.0],
                        help="crop durations besides the whole file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N files (quick runs)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = feature_spec(args.spec, args.network)
    try:
        network = load_tkan_network(spec.network, xvector_dir=args.xvector_dir)
    except ModelLoadError as error:
        raise SystemExit(error.message) from error
    recipe = ExtractionRecipe(crop_durations_s=tuple(args.crops), augment=not args.no_augment, seed=args.seed)
    items = [item for location in args.data for item in load_items(location)]
    if args.limit:
        items = items[: args.limit]
    augment = augment_for_training if recipe.augment else None

    vad = SileroVad()
    cache = args.output / "items"
    cache.mkdir(parents=True, exist_ok=True)
    features, labels, meta = [], [], []
    for item in tqdm(items, desc="features", unit="file"):
        cached = cache / f"{item_cache_key(item, spec, recipe, network)}.npz"
        if cached.is_file():
            stored = np.load(cached, allow_pickle=False)
            rows = [
                {"features": f, "duration_s": float(d), "variant": str(v), "augmentation": str(a)}
                for f, d, v, a in zip(stored["features"], stored["duration_s"], stored["variant"],
                                      stored["augmentation"], strict=True)
            ]
        else:
            try:
                samples = decode_file(item.path).samples
            except InputError as error:
                log.warning("skipping %s: %s", item.path, error.message)
                continue
            rng = np.random.default_rng(item_seed(item, recipe))
            rows = extract_item_rows(samples, network=network, vad=vad, spec=spec, recipe=recipe, rng=rng,
                                     augment=augment)
            np.savez(
                cached,
                features=np.stack([r["features"] for r in rows]) if rows else np.zeros((0, spec.dimension), np.float32),
                duration_s=np.array([r["duration_s"] for r in rows]),
                variant=np.array([r["variant"] for r in rows], dtype=str),
                augmentation=np.array([r["augmentation"] for r in rows], dtype=str),
            )
        for row in rows:
            features.append(row["features"])
            labels.append(item.label)
            meta.append({
                "path": str(item.path), "label": item.label_name, "speaker": item.speaker, "source": item.source,
                "system": item.system, "variant": row["variant"], "augmentation": row["augmentation"],
                "duration_s": f"{row['duration_s']:.3f}",
            })
    np.save(args.output / "features.npy", np.stack(features).astype(np.float32))
    np.save(args.output / "labels.npy", np.array(labels, dtype=np.int64))
    with (args.output / "meta.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=META_FIELDS)
        writer.writeheader()
        writer.writerows(meta)
    described = {"feature_spec": spec.to_dict(), "recipe": recipe.to_dict(), "speaker_network": network.describe()}
    (args.output / "spec.json").write_text(json.dumps(described, indent=2))
    log.info("%d rows from %d files (%d fake rows) → %s", len(labels), len(items), int(np.sum(labels)), args.output)


if __name__ == "__main__":
    main()
