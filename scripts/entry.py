"""``python -m scripts.entry``: the command of :mod:`soundsentry.models.export`
(``--help`` lists its options)."""

import sys

from soundsentry.models.export import main

if __name__ == "__main__":
    sys.exit(main())
