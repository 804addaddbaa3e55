"""``python -m scripts.codec_spread``: the command of :mod:`soundsentry.evaluation.codec_spread`
(``--help`` lists its options)."""

import sys

from soundsentry.evaluation.codec_spread import main

if __name__ == "__main__":
    sys.exit(main())
