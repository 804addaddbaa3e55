"""Capacity and fairness: the admission gate around the detector, and per-client token buckets.

:class:`AdmissionGate` bounds the work in flight: at most ``max_running`` detections run at once
(one per CPU core, each with its share of torch threads) and at most ``max_waiting`` more wait for
a slot, each for at most ``wait_timeout_s``. Anything beyond is refused at once with
:class:`ServerBusyError` (HTTP 503 + ``Retry-After``), so overload answers quickly instead of
piling up threads, memory and latency. The endpoints are plain ``def`` (FastAPI's thread pool),
so the gate uses ``threading`` primitives, and :meth:`AdmissionGate.run` hands the detection itself
to the gate's own ``max_running`` worker threads, and stops waiting for it at its time bound: the
detection checks its own deadline as it goes (``soundsentry.deadline``), and one that still has not
returned is abandoned to finish on its own, its worker replaced, so no slot is held past the bound.

:class:`TokenBuckets` rate-limits per client (API key or IP address): ``per_minute`` tokens a
minute, at most ``burst`` saved up; touched only from the event loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TypeVar

from soundsentry.errors import ProcessingTimeoutError, ServiceUnavailableError

T = TypeVar("T")


class ServerBusyError(ServiceUnavailableError):
    """Every detection slot is taken and the queue is full (or the wait was too long)."""

    error_code = "server_busy"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AdmissionGate:
    """At most ``max_running`` holders of :meth:`slot` at once, ``max_waiting`` more queued.

    Usage
    -----
    >>> gate = AdmissionGate(max_running=2, max_waiting=16, wait_timeout_s=30)
    >>> with gate.slot():
    ...     gate.run(detector.predict_bytes, data)
    """

    def __init__(self, max_running: int, max_waiting: int, wait_timeout_s: float, retry_after_s: int = 1) -> None:
        if max_running < 1 or max_waiting < 0 or wait_timeout_s <= 0:
            raise ValueError(f"AdmissionGate needs max_running >= 1, max_waiting >= 0, wait_timeout_s > 0; got "
                             f"{max_running}, {max_waiting}, {wait_timeout_s}")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self.retry_after_s = retry_after_s
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0
        self.rejected = 0  # refused since start-up (for /info and the logs)
        self.abandoned = 0  # detections that overran their bound and were left to finish on their own
        self._workers = ThreadPoolExecutor(max_running, thread_name_prefix="detection")

    @property
    def capacity(self) -> int:
        return self.max_running + self.max_waiting

    @property
    def saturated(self) -> bool:
        """True when a new request would be refused right now (a hint; :meth:`slot` decides)."""
        return self._admitted >= self.capacity

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running,
                    "max_running": self.max_running, "max_waiting": self.max_waiting, "rejected": self.rejected,
                    "abandoned": self.abandoned}

    def busy(self, why: str) -> ServerBusyError:
        """The error for a refused request (counted in ``rejected``)."""
        self.rejected += 1
        return ServerBusyError(
            f"The server is busy ({why}); retry in {self.retry_after_s} s. It runs {self.max_running} "
            f"detection(s) at once and queues {self.max_waiting} more.",
            retry_after_s=self.retry_after_s,
        )

    def run(self, function: Callable[..., T], /, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on one of the gate's ``max_running`` worker threads; waits and
        returns its result or raises its exception. Call it while holding a :meth:`slot`, so it never queues.

        With ``timeout_s``, waits at most that long: a call still running then is abandoned (it runs
        to its end on its own thread, which a new pool replaces for the next callers) and
        :class:`~soundsentry.errors.ProcessingTimeoutError` is raised, so the caller's slot is freed.

        Why not in the request's own thread: FastAPI's pool has up to 40 threads, and torch and the C
        allocator keep state per thread that touches them (arenas, scratch buffers). A soak of 10 000
        chunks from 16 clients, run in the request threads, grew the server from 1175 to 1231 MiB; the
        same detections on 18 threads in one process held about 200 MiB more than on 2."""
        workers = self._workers
        future = workers.submit(function, *args, **kwargs)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            if future.cancel():  # never started (cannot happen while callers hold a slot): nothing runs
                message = f"The analysis did not start within {timeout_s:g} s; retry later."
                raise ProcessingTimeoutError(message) from None
            with self._lock:
                self.abandoned += 1
                if self._workers is workers:  # the stuck thread keeps the old pool; new work gets a fresh one
                    self._workers = ThreadPoolExecutor(self.max_running, thread_name_prefix="detection")
            workers.shutdown(wait=False)
            raise ProcessingTimeoutError(
                f"The analysis took longer than {timeout_s:g} s and was stopped. Send a shorter recording, "
                "or retry later if the server is busy."
            ) from None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one detection slot for the block; raise :class:`ServerBusyError` if none comes."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise self.busy("every slot is taken and the queue is full")
            self._admitted += 1
        try:
            if not self._slots.acquire(timeout=self.wait_timeout_s):
                with self._lock:
                    raise self.busy(f"no slot came free within {self.wait_timeout_s:g} s")
            with self._lock:
                self._running += 1
            try:
                yield
            finally:
                with self._lock:
                    self._running -= 1
                self._slots.release()
        finally:
            with self._lock:
                self._admitted -= 1


class TokenBuckets:
    """One token bucket per client key; ``take(key)`` spends a token or says how long to wait.

    Parameters
    ----------
    per_minute
        Refill rate, tokens per minute (> 0).
    burst
        Bucket size: requests a fresh or rested client may send at once (>= 1).
    max_clients
        Buckets kept; the least recently seen are forgotten beyond it (memory stays bounded).
    clock
        Seconds, monotonic (injectable for tests).
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1 or max_clients < 1:
            raise ValueError(f"TokenBuckets needs per_minute > 0, burst >= 1, max_clients >= 1; got "
                             f"{per_minute}, {burst}, {max_clients}")
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0.0 if allowed, else the seconds until one is due."""
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate_per_s)
            wait_s = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait_s = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait_s

    @staticmethod
    def retry_after(wait_s: float) -> int:
        return max(1, math.ceil(wait_s))
