"""``python -m scripts.train_classifier_kfold``: the command of :mod:`soundsentry.training.train_classifier_kfold`
(``--help`` lists its options)."""

import sys

from soundsentry.training.train_classifier_kfold import main

if __name__ == "__main__":
    sys.exit(main())
