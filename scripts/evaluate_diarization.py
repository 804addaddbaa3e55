"""``python -m scripts.evaluate_diarization``: the command of :mod:`soundsentry.evaluation.evaluate_diarization`
(``--help`` lists its options)."""

import sys

from soundsentry.evaluation.evaluate_diarization import main

if __name__ == "__main__":
    sys.exit(main())
