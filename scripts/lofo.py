"""``python -m scripts.lofo``: the command of :mod:`soundsentry.training.lofo` (``--help`` lists its options)."""

import sys

from soundsentry.training.lofo import main

if __name__ == "__main__":
    sys.exit(main())
