"""``python -m scripts.make_neural_spoofs``: the command of :mod:`soundsentry.training.make_neural_spoofs`
(``--help`` lists its options)."""

import sys

from soundsentry.training.make_neural_spoofs import main

if __name__ == "__main__":
    sys.exit(main())
