"""``python -m scripts.train_cnn_transformer``: the command of :mod:`soundsentry.training.train_cnn_transformer`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_cnn_transformer import main

if __name__ == "__main__":
    sys.exit(main())
