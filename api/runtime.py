"""What the running service holds besides settings: the models (re-loaded after a failure) and
the directory uploads spool to.

:class:`ModelSlot` loads the detector at start-up. When that fails (a model file missing or
corrupt), the app stays up: ``/health`` answers 503 with the reason, and the next ``/health`` or
``/predict`` at least ``retry_s`` after the last attempt tries again, so the service recovers by
itself once the files are restored; no restart and no admin endpoint. A loaded detector is never
replaced (a retrained model is picked up on restart).

:class:`UploadSpool` checks, and optionally provides, the temp directory that Starlette spools
uploads over 1 MiB to (as unnamed ``O_TMPFILE`` files on Linux, mode 0600, gone when closed) and
that the ffmpeg fallback decoder writes seekable copies to (removed after each decode).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from soundsentry.detector import Detector
from soundsentry.errors import ModelLoadError

log = logging.getLogger("api")


class ModelSlot:
    """The loaded :class:`Detector`, or why there is none; retried lazily, never twice at once."""

    def __init__(self, loader: Callable[[], Detector], retry_s: float, clock: Callable[[], float] = time.monotonic):
        self._loader = loader
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_attempt: float | None = None
        self.detector: Detector | None = None
        self.error: str | None = None

    def load(self) -> Detector | None:
        """Try to load now (unless another thread is loading); log and keep the reason on failure."""
        if not self._lock.acquire(blocking=False):
            return self.detector
        try:
            if self.detector is None:
                retry = self.error is not None
                self._last_attempt = self._clock()
                try:
                    self.detector = self._loader()
                except ModelLoadError as error:
                    self.error = error.message
                    log.error("models failed to load: %s (retrying at most every %g s)", error.message, self.retry_s)
                except Exception as error:  # any other failure also means "no models": stay up, say why
                    self.error = f"loading the models failed with {type(error).__name__}: {error}"
                    log.exception("models failed to load (retrying at most every %g s)", self.retry_s)
                else:
                    log.info("models loaded%s: %s", " on retry" if retry else "", self.detector.models)
                    self.error = None
            return self.detector
        finally:
            self._lock.release()

    def get(self) -> Detector | None:
        """The detector; if there is none and a retry is due, try loading first."""
        if self.detector is None and (
            self._last_attempt is None or self._clock() - self._last_attempt >= self.retry_s
        ):
            self.load()
        return self.detector

    @property
    def reason(self) -> str:
        if self.error:
            return self.error
        return "the models are loading" if self._lock.locked() else "the models are not loaded yet"

    def close(self) -> None:
        self.detector = None


class UploadSpool:
    """The temp directory uploads go to. With ``root``: a private (0700) directory made under it
    for this process, set as :data:`tempfile.tempdir` until :meth:`close` (then removed).

    Without ``root`` the system temp directory is used and nothing is changed.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.private_dir: Path | None = None
        self._previous_tempdir: str | None = None

    def open(self) -> None:
        if self.root is None:
            self.check()
            return
        self._previous_tempdir = tempfile.tempdir
        self._make_private_dir()

    def _make_private_dir(self) -> bool:
        assert self.root is not None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.private_dir = Path(tempfile.mkdtemp(prefix="soundsentry-uploads-", dir=self.root))
        except OSError as error:
            log.error("cannot make the private upload directory under %s (%s); uploads over 1 MiB will be "
                      "refused with 503 storage_unavailable until it is writable", self.root, error)
            return False
        tempfile.tempdir = str(self.private_dir)
        log.info("uploads spool to %s", self.private_dir)
        return True

    @property
    def directory(self) -> str:
        """Where temp files go now (may raise ``FileNotFoundError`` when no directory is usable)."""
        return str(self.private_dir) if self.private_dir is not None else tempfile.gettempdir()

    def check(self) -> str | None:
        """None when a temp file can be written now, else why not (logged). Re-makes a lost private dir."""
        if self.root is not None and (self.private_dir is None or not self.private_dir.is_dir()):
            self.private_dir = None
            if not self._make_private_dir():
                return f"cannot create an upload directory under {self.root}"
        try:
            directory = self.directory
            with tempfile.TemporaryFile(dir=directory) as probe:
                probe.write(b"\0")
        except OSError as error:
            reason = f"cannot write temp files ({error.strerror or error})"
            log.error("upload spool: %s", reason)
            return reason
        return None

    def close(self) -> None:
        if self.root is None:
            return
        if self.private_dir is not None and tempfile.tempdir == str(self.private_dir):
            previous = self._previous_tempdir
            tempfile.tempdir = previous if previous is None or Path(previous).is_dir() else None
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None
