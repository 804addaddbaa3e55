"""``python -m scripts.check_shortcuts``: the command of :mod:`soundsentry.training.shortcuts`
(``--help`` lists its options)."""

import sys

from soundsentry.training.shortcuts import main

if __name__ == "__main__":
    sys.exit(main())
