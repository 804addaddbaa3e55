"""Leave-one-family-out validation of the CNN-Transformer: the honest proxy for a generator never seen.

    python -m scripts.lofo --data ../shared/corpus/manifest.csv cache/zoo/manifest.csv \
        [--families zoo_vits zoo_hts ...] [--output-dir cache/lofo] -- --features linear --normalisation utterance_band

For each fake family (a ``source`` of the training manifests: ``zoo_vits``, ``resynth_world``, ...), the
CNN-Transformer is trained (``scripts.train_cnn_transformer`` with the arguments after ``--``) on every
file except that family's, then scores the held-out family's fakes against ``../shared/devset``'s reals
(other speakers and recordings than any training real) and the devset itself. Results go to
``OUTPUT_DIR/lofo.json`` and a table on stdout: per held-out family its EER, and the devset's pooled and
per-source EER of the same network. Each family costs one training run (about 10 minutes on one core
with early stopping). Nothing is fitted on the devset or on the held-out family.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from soundsentry.constants import CHECKOUT
from soundsentry.training import train_cnn_transformer

DEVSET = CHECKOUT.parent / "shared" / "devset" / "manifest.csv"
COLUMNS = ("path", "label", "source", "system", "speaker")


def read_rows(manifest: Path) -> list[dict[str, str]]:
    """A manifest's rows with absolute paths (so that they can be listed anywhere)."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        path = Path(row["path"])
        row["path"] = str(path if path.is_absolute() else (manifest.parent / path).resolve())
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**{c: "" for c in COLUMNS}, **row} for row in rows)
    return path


def run(data: list[Path], families: list[str] | None, devset: Path, output_dir: Path,
        trainer_args: list[str]) -> dict:
    pool = [row for manifest in data for row in read_rows(manifest)]
    found = sorted({row["source"] for row in pool if row["label"] == "fake"})
    families = families or found
    unknown = sorted(set(families) - set(found))
    if unknown:
        raise SystemExit(f"no fakes of {', '.join(unknown)} in --data (fake sources: {', '.join(found)})")
    if not devset.is_file():
        raise SystemExit(f"no devset manifest at {devset}; pass --devset MANIFEST (its reals are the held-out reals)")
    devset_rows = read_rows(devset)
    devset_reals = [row for row in devset_rows if row["label"] == "real"]
    results_path = output_dir / "lofo.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for family in families:
        if family in results:  # resumable: a family done is kept
            continue
        where = output_dir / family
        train = write_rows(where / "train.csv", [row for row in pool if row["source"] != family])
        held_out = [row for row in pool if row["source"] == family]
        test = write_rows(where / "test.csv", devset_rows + [{**row, "source": f"held_out:{family}"}
                                                             for row in held_out])
        metadata = train_cnn_transformer.main([*trainer_args, "--data", str(train), "--eval-devset", str(test),
                                               "--output", str(where / "cnn_transformer.pt")])
        scores = metadata["devset"]["per_source_eer"]
        devset_sources = {k: v for k, v in scores.items() if not k.startswith("held_out:")}
        results[family] = {"held_out_eer": scores[f"held_out:{family}"], "held_out_fakes": len(held_out),
                           "against_reals": len(devset_reals), "devset_per_source_eer": devset_sources,
                           "heldout_speakers_eer": metadata["heldout"]["eer"],
                           "command": metadata.get("command")}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="training manifests")
    parser.add_argument("--families", nargs="+", default=None, help="fake sources to hold out (default: all)")
    parser.add_argument("--devset", type=Path, default=DEVSET)
    parser.add_argument("--output-dir", type=Path, default=CHECKOUT / "cache" / "lofo")
    args = parser.parse_args(own)
    results = run(args.data, args.families, args.devset, args.output_dir, trainer_args)
    sys.stdout.write("held-out family              EER    devset sources (same network)\n")
    for family, entry in results.items():
        others = ", ".join(f"{k} {100 * v:.1f}" for k, v in entry["devset_per_source_eer"].items())
        sys.stdout.write(f"{family:28s} {100 * entry['held_out_eer']:5.1f} %  {others}\n")
    return 0
