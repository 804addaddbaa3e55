"""Predict files from the shell: ``python -m scripts.main FILE... [--use-diarization] [--json]``.

Prints one line per file (verdict, P(fake), speakers), or the full JSON report with ``--json``.
Exit status: 0 when every file was analysed, 1 when any was rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soundsentry.detector import Detector
from soundsentry.errors import SoundSentryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--use-diarization", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    detector = Detector.load()
    failed = 0
    for path in args.files:
        try:
            report = detector.predict_bytes(path.read_bytes(), filename=path.name, use_diarization=args.use_diarization)
        except (SoundSentryError, OSError) as error:
            failed += 1
            sys.stdout.write(f"{path}\tERROR\t{getattr(error, 'message', error)}\n")
            continue
        if args.json:
            sys.stdout.write(json.dumps({"file": str(path), **report.serialize()}, indent=2) + "\n")
        else:
            speakers = ", ".join(f"{s.speaker} {s.result} {s.probability:.2f}" for s in report.speakers)
            sys.stdout.write(f"{path}\t{report.overall}\tP(fake)={report.mean_probability:.3f}\t"
                             f"confidence={report.confidence:.2f}\t{speakers or report.message}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
