"""``python -m scripts.compare_runs``: the command of :mod:`soundsentry.evaluation.compare_runs`
(``--help`` lists its options)."""

import sys

from soundsentry.evaluation.compare_runs import main

if __name__ == "__main__":
    sys.exit(main())
