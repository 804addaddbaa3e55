"""``python -m scripts.train_flatness``: the command of :mod:`soundsentry.training.train_flatness`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_flatness import main

if __name__ == "__main__":
    sys.exit(main())
