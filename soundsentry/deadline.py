"""A wall-clock bound that long work checks as it goes, so it stops itself in time.

The decoders check it between packets and the detector between stages and batches, so one
upload can hold a detection slot at most a little past its bound, whatever it contains.

Usage
-----
>>> deadline = Deadline(30.0, "analysing the upload")
>>> for packet in packets:
...     deadline.check()   # raises ProcessingTimeoutError once 30 s have passed
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from soundsentry.errors import ProcessingTimeoutError


class Deadline:
    """``seconds`` from now (``None``: never). ``what`` names the work in the error message."""

    def __init__(self, seconds: float | None, what: str = "the analysis",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"a deadline needs seconds > 0 or None, got {seconds}")
        self.seconds = seconds
        self.what = what
        self._clock = clock
        self._at = math.inf if seconds is None else clock() + seconds

    @classmethod
    def never(cls) -> Deadline:
        return cls(None)

    def remaining(self) -> float:
        """Seconds left (``inf`` without a bound; 0 once passed)."""
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._at

    def check(self) -> None:
        """Raise :class:`ProcessingTimeoutError` once the bound has passed."""
        if self.expired:
            raise ProcessingTimeoutError(
                f"{self.what[0].upper()}{self.what[1:]} took longer than {self.seconds:g} s and was stopped. "
                "Send a shorter recording, or retry later if the server is busy."
            )
