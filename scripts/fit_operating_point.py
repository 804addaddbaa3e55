"""``python -m scripts.fit_operating_point``: the command of :mod:`soundsentry.training.fit_operating_point`
(``--help`` lists its options)."""

import sys

from soundsentry.training.fit_operating_point import main

if __name__ == "__main__":
    sys.exit(main())
