"""Predict files from the shell: ``python -m scripts.main`` is ``soundsentry predict``
(:func:`soundsentry.cli.predict_main`; ``--help`` lists the options)."""

from __future__ import annotations

import sys

from soundsentry.cli import predict_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
