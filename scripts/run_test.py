"""Evaluate the detector on a labelled folder: ``python -m scripts.run_test`` is ``soundsentry evaluate``
(:func:`soundsentry.cli.evaluate_main`; ``--help`` lists the options)."""

from __future__ import annotations

import sys

from soundsentry.cli import evaluate_main as main
from soundsentry.cli import format_summary

__all__ = ["format_summary", "main"]

if __name__ == "__main__":
    sys.exit(main())
