"""Make upper-band fakes: each re-synthesis fake spliced onto its own real below a cut-off.

    python -m scripts.make_band_spoofs [--spoofs cache/spoofs/manifest.csv cache/spoofs/manifest_neural.csv]
                                       [--corpus ../shared/corpus] [--output-dir cache/spoofs_band] [--cut-hz 4000]

For every fake of the ``--spoofs`` manifests (written by ``scripts.make_spoofs`` and
``scripts.make_neural_spoofs``; their ``origin`` column names the real in ``--corpus``),
:func:`soundsentry.training.spoofs.band_splice` keeps the real below ``--cut-hz`` and the fake above it. The
result goes to ``OUTPUT_DIR/<system>_hf/<file name>`` (16 kHz 16-bit FLAC), and
``OUTPUT_DIR/manifest.csv`` lists the spliced fakes (system ``<system>_hf``) **and every real of the
corpus** (absolute paths into it), so the one manifest is a training set in which each fake has its
real (same speaker, same words, the only difference the upper band's synthesis). The corpus's own
fakes (voice conversion, whole band) are left out: with them in, the detectors learn their
low-band cues and lose the devset (data/MODEL_CARD.md).

Why: see :mod:`soundsentry.training.spoofs` and data/MODEL_CARD.md. Resumable (files present are skipped) and
single-threaded, like ``scripts.make_spoofs``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tqdm import tqdm

from soundsentry.constants import CHECKOUT
from soundsentry.training.make_spoofs import COLUMNS, load, write_flac
from soundsentry.training.spoofs import band_splice

ROOT = CHECKOUT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spoofs", type=Path, nargs="+",
                        default=[ROOT / "cache" / "spoofs" / "manifest.csv",
                                 ROOT / "cache" / "spoofs" / "manifest_neural.csv"],
                        help="spoof manifests with an origin column (default: the DSP and neural ones in cache/spoofs)")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="corpus folder the origins are relative to (default ../shared/corpus)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "cache" / "spoofs_band")
    parser.add_argument("--cut-hz", type=float, default=4000.0, help="real below, fake above (default 4000)")
    parser.add_argument("--overwrite", action="store_true", help="redo files already present")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # each fake with the folder of its own manifest: two manifests may list the same relative path
    fakes = [(row, manifest.parent) for manifest in args.spoofs for row in csv.DictReader(manifest.open(newline=""))]
    entries: list[dict[str, str]] = []
    failed = 0
    for row, spoof_dir in tqdm(fakes, desc="splice", unit="file", mininterval=5.0, file=sys.stderr):
        system = f"{row['system']}_hf"
        relative = Path(system) / Path(row["path"]).name
        out = args.output_dir / relative
        real_path = (args.corpus / row["origin"]).resolve()
        try:
            if args.overwrite or not out.exists():
                write_flac(out, band_splice(load(real_path), load(spoof_dir / row["path"]), args.cut_hz))
        except Exception as error:  # one bad file must not stop a long run
            failed += 1
            tqdm.write(f"FAILED {row['path']}: {type(error).__name__}: {error}")
            continue
        entries.append({**{k: row.get(k, "") for k in COLUMNS}, "path": relative.as_posix(),
                        "source": f"band_{row['source']}", "system": system})
    reals = [
        {**{k: row.get(k, "") for k in COLUMNS},
         "path": str((args.corpus / row["path"]).resolve()), "origin": row["path"]}
        for row in csv.DictReader((args.corpus / "manifest.csv").open(newline=""))
        if row["label"] == "real"
    ]
    manifest = args.output_dir / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(reals + entries)
    sys.stdout.write(f"{len(entries)} spliced fakes and {len(reals)} reals in {manifest}; {failed} failed\n")
    return 1 if failed and not entries else 0


if __name__ == "__main__":
    sys.exit(main())
