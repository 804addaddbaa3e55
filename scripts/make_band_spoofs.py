"""``python -m scripts.make_band_spoofs``: the command of :mod:`soundsentry.training.make_band_spoofs`
(``--help`` lists its options)."""

import sys

from soundsentry.training.make_band_spoofs import main

if __name__ == "__main__":
    sys.exit(main())
