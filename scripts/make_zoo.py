"""``python -m scripts.make_zoo``: the command of :mod:`soundsentry.training.make_zoo`
(``--help`` lists its options)."""

import sys

from soundsentry.training.make_zoo import main

if __name__ == "__main__":
    sys.exit(main())
