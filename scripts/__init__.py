"""Training, data-making, research and benchmark commands over the library: ``python -m scripts.NAME``
from a checkout (``make setup`` installs the ``soundsentry`` package they import, editable).

Heavy jobs here run one numeric thread each (two threads on two busy cores are far slower); set before
any of them imports numpy or torch. ``OMP_NUM_THREADS=N`` in the environment overrides it.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
