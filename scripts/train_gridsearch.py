"""``python -m scripts.train_gridsearch``: the command of :mod:`soundsentry.training.train_gridsearch`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_gridsearch import main

if __name__ == "__main__":
    sys.exit(main())
