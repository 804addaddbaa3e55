"""``python -m scripts.train_vocoder``: the command of :mod:`soundsentry.training.train_vocoder`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_vocoder import main

if __name__ == "__main__":
    sys.exit(main())
