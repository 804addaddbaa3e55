"""Is a candidate model better than the baseline on the same test set, or did it draw luckier files?

    python -m scripts.compare_runs results/devset/predictions.csv results/candidate/predictions.csv [--json OUT]

Both files are ``run_test`` outputs over one test set (whole files or ``--browser-chunks``, the same for
both). Prints each run's EER on the trials both scored and the candidate's minus the baseline's, pooled
and per source, with 95 % intervals from a paired bootstrap over files
(:func:`soundsentry.evaluation.batch.compare_runs`). A difference whose interval spans zero is noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from soundsentry.evaluation.batch import compare_runs


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def format_line(name: str, result: dict) -> str:
    low, high = result["interval"]
    return (f"{name}: baseline {result['baseline_eer']:.1%}, candidate {result['candidate_eer']:.1%}, "
            f"candidate minus baseline {100 * result['difference']:+.1f} points "
            f"(95 % interval {100 * low:+.1f} to {100 * high:+.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="predictions.csv of the baseline run")
    parser.add_argument("candidate", type=Path, help="predictions.csv of the candidate run")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(read_rows(args.baseline), read_rows(args.candidate), resamples=args.resamples)
    except (OSError, KeyError, ValueError) as error:
        sys.stderr.write(f"cannot compare {args.baseline} with {args.candidate}: {error!r}\n")
        return 2
    lines = [f"{result['trials']} trials of {result['files']} files scored by both runs, "
             f"{result['resamples']} bootstrap resamples of files", format_line("pooled EER", result["pooled"])]
    lines += [format_line(f"{source} fakes vs all reals", values) for source, values in result["per_source"].items()]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
