"""``python -m scripts.make_reals``: the command of :mod:`soundsentry.training.make_reals`
(``--help`` lists its options)."""

import sys

from soundsentry.training.make_reals import main

if __name__ == "__main__":
    sys.exit(main())
