"""``python -m scripts.train_classifier``: the command of :mod:`soundsentry.training.train_classifier`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_classifier import main

if __name__ == "__main__":
    sys.exit(main())
