"""``python -m scripts.fit_rollup``: the command of :mod:`soundsentry.training.fit_rollup` (``--help`` lists its
options)."""

import sys

from soundsentry.training.fit_rollup import main

if __name__ == "__main__":
    sys.exit(main())
