"""``python -m scripts.make_spoofs``: the command of :mod:`soundsentry.training.make_spoofs`
(``--help`` lists its options)."""

import sys

from soundsentry.training.make_spoofs import main

if __name__ == "__main__":
    sys.exit(main())
