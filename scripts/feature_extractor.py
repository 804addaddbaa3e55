"""``python -m scripts.feature_extractor``: the command of :mod:`soundsentry.training.feature_extractor`
(``--help`` lists its options)."""

import sys

from soundsentry.training.feature_extractor import main

if __name__ == "__main__":
    sys.exit(main())
