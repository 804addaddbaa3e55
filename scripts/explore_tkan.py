"""``python -m scripts.explore_tkan``: the command of :mod:`soundsentry.training.explore_tkan`
(``--help`` lists its options)."""

import sys

from soundsentry.training.explore_tkan import main

if __name__ == "__main__":
    sys.exit(main())
