"""``python -m scripts.evaluate_conversations``: the command of
:mod:`soundsentry.evaluation.evaluate_conversations` (``--help`` lists its options)."""

import sys

from soundsentry.evaluation.evaluate_conversations import main

if __name__ == "__main__":
    sys.exit(main())
