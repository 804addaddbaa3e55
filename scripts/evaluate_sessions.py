"""``python -m scripts.evaluate_sessions``: the command of
:mod:`soundsentry.evaluation.evaluate_sessions` (``--help`` lists its options)."""

import sys

from soundsentry.evaluation.evaluate_sessions import main

if __name__ == "__main__":
    sys.exit(main())
