"""``python -m scripts.train_fusion``: the command of :mod:`soundsentry.training.train_fusion`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_fusion import main

if __name__ == "__main__":
    sys.exit(main())
