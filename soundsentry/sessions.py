"""Streams: one browser tab's 4 s chunks judged together, speaker by speaker.

A :class:`Session` keeps, for each speaker heard in its chunks, the evidence the detector produced:
the speech scored, the duration-weighted sum of its segments' P(fake), and each chunk's own logit
(their spread says how steady the evidence is). A chunk's speakers are linked to the session's by
their d-vectors (:func:`~soundsentry.speech.diarization.speaker_embeddings`): the closest session
speaker within :data:`LINK_DISTANCE` (cosine distance) takes the chunk speaker's evidence and moves its
centroid; otherwise the chunk speaker is a new session speaker (up to ``max_speakers``; past that it
joins the closest one).

The rolling verdict (:func:`summarise`) is what the detector says of a recording, applied to all the
stream's speech at once: a speaker's P(fake) is the duration-weighted mean over every segment it had,
judged at the threshold of its accumulated speech's duration category, the speakers judged together by
the contrast roll-up (:meth:`~soundsentry.detector.Detector.judge_speakers`). Its ``confidence`` grows
with evidence (:func:`evidence_confidence`): the margin to the threshold in logits over the standard
error of the chunks' mean logit.

Sessions live in a store: :class:`MemorySessionStore` (one process; idle sessions expire after a TTL,
the least recently used is dropped past ``max_sessions``) or :class:`RedisSessionStore` (shared by
every replica behind a load balancer; Redis expires the keys). Both update a session atomically, so
two chunks of one stream that arrive at once are both counted.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from soundsentry.errors import ServiceUnavailableError, SessionNotFoundError
from soundsentry.fusion import logit
from soundsentry.report import Report, SpeakerResult
from soundsentry.rollup import overall_verdict, speaker_result

if TYPE_CHECKING:
    from soundsentry.detector import Detector

T = TypeVar("T")

# cosine distance under which a chunk's speaker is one of the session's. Measured on 4 s WEBM/Opus chunks of
# the corpus's LibriSpeech readers (training side; data/NOTES.md item 48), one 1.6 s window per chunk: pairs of
# one reader's chunks lie above 0.40 in 3.3 %, pairs of two readers' below it in 2.2 % (at the diarizer's
# 0.30, 37 % of one reader's pairs were split)
LINK_DISTANCE = 0.40
# the prior on the spread of one speaker's chunk logits: a standard deviation of PRIOR_SD logits, worth
# PRIOR_CHUNKS chunks; the session's own chunks take over as they accumulate
PRIOR_SD = 1.0
PRIOR_CHUNKS = 2.0
# judge a stream's speakers by their contrast to each other (the roll-up of recordings), or each alone
CONTRAST = True
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class SessionSpeaker:
    """One speaker of a stream and the evidence so far."""

    speaker: str  # "S1", "S2", ... in the order they were first heard
    centroid: np.ndarray | None  # unit d-vector (mean of its chunks', weighted by speech); None without a network
    speech: float = 0.0  # seconds of scored speech
    weighted: float = 0.0  # sum of P(fake) x segment duration
    segments: int = 0
    chunks: int = 0
    logit_sum: float = 0.0  # of each chunk's own P(fake) for this speaker
    logit_squares: float = 0.0

    @property
    def probability(self) -> float:
        return self.weighted / self.speech if self.speech > 0 else 0.0

    def add(self, result: SpeakerResult, embedding: np.ndarray | None) -> None:
        own = result.own_probability if result.own_probability is not None else result.probability
        if embedding is not None:
            total = self.speech + result.speech_duration
            mean = embedding if self.centroid is None else (
                self.centroid * self.speech + embedding * result.speech_duration) / max(total, 1e-9)
            self.centroid = (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)
        self.speech += result.speech_duration
        self.weighted += own * result.speech_duration
        self.segments += result.segments
        self.chunks += 1
        x = float(logit(np.asarray(own)))
        self.logit_sum += x
        self.logit_squares += x * x

    @property
    def chunk_logit_sd(self) -> float:
        """The spread of the chunk logits, shrunk towards :data:`PRIOR_SD` (it is the prior alone at one chunk)."""
        n = self.chunks
        scatter = max(0.0, self.logit_squares - self.logit_sum ** 2 / n) if n else 0.0
        return math.sqrt((PRIOR_SD ** 2 * PRIOR_CHUNKS + scatter) / (PRIOR_CHUNKS + max(n - 1, 0)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["centroid"] = (base64.b64encode(self.centroid.astype("<f4").tobytes()).decode()
                            if self.centroid is not None else None)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionSpeaker:
        values = dict(data)
        if values.get("centroid") is not None:
            values["centroid"] = np.frombuffer(base64.b64decode(values["centroid"]), dtype="<f4").copy()
        return cls(**values)


@dataclass
class Session:
    session_id: str
    created: float  # epoch seconds
    updated: float
    chunks: int = 0
    speakers: list[SessionSpeaker] = field(default_factory=list)

    @property
    def speech(self) -> float:
        return sum(s.speech for s in self.speakers)

    def to_json(self) -> str:
        return json.dumps({"session_id": self.session_id, "created": self.created, "updated": self.updated,
                           "chunks": self.chunks, "speakers": [s.to_dict() for s in self.speakers]})

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        data = json.loads(text)
        return cls(data["session_id"], data["created"], data["updated"], data["chunks"],
                   [SessionSpeaker.from_dict(s) for s in data["speakers"]])


NOT_FOUND = ("There is no session with this id (it expired after its last chunk, was deleted, or never "
             "existed); start a new one with POST /sessions.")


def new_session_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 random bits: unguessable


def add_chunk(session: Session, report: Report, *, max_speakers: int = 8, now: float | None = None) -> dict[str, str]:
    """Count one chunk's report in ``session``; returns which session speaker each chunk speaker became
    (empty for a chunk without speech). Speakers are linked by their d-vectors; without them (a pyannote
    pipeline's own network) every chunk speaker is matched to the session speaker of the same rank."""
    session.chunks += 1
    session.updated = time.time() if now is None else now
    links: dict[str, str] = {}
    taken: set[str] = set()
    for rank, result in enumerate(sorted(report.speakers, key=lambda s: -s.speech_duration)):
        embedding = report.speaker_embeddings.get(result.speaker)
        target = _closest(session, embedding, taken) if embedding is not None else (
            session.speakers[rank] if rank < len(session.speakers) else None)
        if target is None or (embedding is not None and target.centroid is not None
                              and _distance(target.centroid, embedding) > LINK_DISTANCE
                              and len(session.speakers) < max_speakers):
            target = SessionSpeaker(f"S{len(session.speakers) + 1}", None)
            session.speakers.append(target)
        target.add(result, embedding)
        taken.add(target.speaker)
        links[result.speaker] = target.speaker
    return links


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(np.dot(a, b))


def _closest(session: Session, embedding: np.ndarray, taken: set[str]) -> SessionSpeaker | None:
    """The nearest session speaker that no other speaker of this chunk has taken."""
    candidates = [s for s in session.speakers if s.centroid is not None and s.speaker not in taken]
    return min(candidates, key=lambda s: _distance(s.centroid, embedding), default=None)


def evidence_confidence(probability: float, threshold: float, chunk_logit_sd: float, chunks: int) -> float:
    """How sure the verdict is, 0 at the threshold towards 1: P(the mean of the chunks' logits lies on the
    side of the threshold it was found on), two-sided, with the standard error ``chunk_logit_sd / sqrt(chunks)``."""
    margin = abs(float(logit(np.asarray(probability))) - float(logit(np.asarray(threshold))))
    standard_error = chunk_logit_sd / math.sqrt(max(chunks, 1))
    return math.erf(margin / (standard_error * math.sqrt(2.0)))


def summarise(session: Session, detector: Detector, ttl_s: float, *, contrast: bool = CONTRAST) -> dict[str, Any]:
    """The stream's rolling verdict (the ``session`` object of the API); ``contrast``: the speakers judged
    together by the detector's contrast roll-up, else each alone."""
    speakers = session.speakers
    base = {"session_id": session.session_id, "chunks": session.chunks, "speech_duration": round(session.speech, 3),
            "expires_in_s": round(ttl_s), "speakers": [], "overall": "No Speech", "zone": None,
            "probability": 0.0, "mean_probability": 0.0, "confidence": 0.0}
    heard = [s for s in speakers if s.speech > 0]
    if not heard:
        return base
    longest = max(heard, key=lambda s: s.speech)
    results = [speaker_result(s.speaker, s.speech, s.probability, s.segments,
                              s is longest or s.speech >= detector.config.min_speaker_speech_s,
                              detector.thresholds, detector.uncertain_from) for s in heard]
    recording = sum(s.weighted for s in heard) / sum(s.speech for s in heard)
    if contrast:
        judged, (overall, _, zone) = detector.judge_speakers(results, recording)
    else:
        judged, (overall, _, zone) = results, overall_verdict(results)
    by_name = {s.speaker: s for s in heard}
    confidences = {r.speaker: evidence_confidence(r.probability, r.threshold, by_name[r.speaker].chunk_logit_sd,
                                                  by_name[r.speaker].chunks) for r in judged}
    counted = [r for r in judged if r.counted]
    deciding = [r for r in counted if r.result == "Fake"] if overall == "Fake" else counted
    surest = max if overall == "Fake" else min  # as overall_verdict: the surest fake, or the least sure real
    decisive = surest(deciding, key=lambda r: confidences[r.speaker])
    base["speakers"] = [
        {**r.serialize(), "confidence": round(confidences[r.speaker], 4), "chunks": by_name[r.speaker].chunks}
        for r in judged
    ]
    base.update(overall=overall, zone=zone, probability=round(decisive.probability, 4),
                mean_probability=round(recording, 4), confidence=round(confidences[decisive.speaker], 4))
    return base


# --------------------------------------------------------------------------------------------
# stores


class SessionStore(Protocol):
    ttl_s: float

    def create(self) -> Session: ...

    def get(self, session_id: str) -> Session: ...

    def update(self, session_id: str, change: Callable[[Session], T]) -> tuple[Session, T]: ...

    def delete(self, session_id: str) -> bool: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class MemorySessionStore:
    """Sessions in this process. ``ttl_s`` after its last chunk a session expires (swept as others are
    touched); past ``max_sessions`` the least recently used is dropped. Each holds a few numbers and one
    256-value centroid per speaker (at most ``max_speakers``), about 2 KiB with eight speakers."""

    def __init__(self, ttl_s: float = 900.0, max_sessions: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[float, Session]] = OrderedDict()  # id → (last use, session)
        self.evicted = 0  # dropped while still live, to make room

    def _sweep(self) -> None:
        """Drop expired sessions: the least recently used come first, so stop at the first live one."""
        horizon = self._clock() - self.ttl_s
        while self._sessions:
            last_use, _ = next(iter(self._sessions.values()))
            if last_use > horizon:
                break
            self._sessions.popitem(last=False)

    def create(self) -> Session:
        now = time.time()
        session = Session(new_session_id(), now, now)
        with self._lock:
            self._sweep()
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
                self.evicted += 1
            self._sessions[session.session_id] = (self._clock(), session)
        return session

    def _live(self, session_id: str) -> Session:
        self._sweep()
        entry = self._sessions.get(session_id)
        if entry is None:
            raise SessionNotFoundError(NOT_FOUND)
        self._sessions.move_to_end(session_id)
        self._sessions[session_id] = (self._clock(), entry[1])
        return entry[1]

    def get(self, session_id: str) -> Session:
        with self._lock:
            return Session.from_json(self._live(session_id).to_json())  # a copy: callers cannot change the store

    def update(self, session_id: str, change: Callable[[Session], T]) -> tuple[Session, T]:
        with self._lock:
            session = self._live(session_id)
            result = change(session)
            return Session.from_json(session.to_json()), result

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def count(self) -> int:
        with self._lock:
            self._sweep()
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


class RedisSessionStore:
    """Sessions in Redis (``redis://host:port/db``), one JSON value per session under ``prefix + id``
    that expires ``ttl_s`` after its last chunk. Updates are optimistic transactions (``WATCH``/``MULTI``),
    retried when another replica changed the session meanwhile. Bound Redis's memory with its own
    ``maxmemory`` (and ``maxmemory-policy volatile-lru``): every key has a TTL."""

    RETRIES = 20

    def __init__(self, url: str, ttl_s: float = 900.0, prefix: str = "soundsentry:session:",
                 timeout_s: float = 2.0) -> None:
        import redis

        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._watch_error = redis.exceptions.WatchError
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.ttl_s = ttl_s
        self.prefix = prefix

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except self._redis_errors as error:
            raise ServiceUnavailableError(
                "The session store (Redis) cannot be reached; this is a server fault. Retry later, or send "
                "the chunk to POST /predict on its own.", error_code="session_store_unavailable") from error

    def _key(self, session_id: str) -> str:
        return self.prefix + session_id

    def create(self) -> Session:
        now = time.time()
        session = Session(new_session_id(), now, now)
        with self._reachable():
            self.client.set(self._key(session.session_id), session.to_json(), ex=max(1, round(self.ttl_s)), nx=True)
        return session

    def get(self, session_id: str) -> Session:
        with self._reachable():
            value = self.client.get(self._key(session_id))
        if value is None:
            raise SessionNotFoundError(NOT_FOUND)
        return Session.from_json(value)

    def update(self, session_id: str, change: Callable[[Session], T]) -> tuple[Session, T]:
        key = self._key(session_id)
        with self._reachable(), self.client.pipeline() as pipe:
            for _ in range(self.RETRIES):
                try:
                    pipe.watch(key)
                    value = pipe.get(key)
                    if value is None:
                        raise SessionNotFoundError(NOT_FOUND)
                    session = Session.from_json(value)
                    result = change(session)
                    pipe.multi()
                    pipe.set(key, session.to_json(), ex=max(1, round(self.ttl_s)))
                    pipe.execute()
                    return session, result
                except self._watch_error:
                    continue  # another replica counted a chunk of this session first: recount on its state
                finally:
                    pipe.reset()
        raise ServiceUnavailableError("The session is being updated by too many requests at once; retry.",
                                      error_code="server_busy")

    def delete(self, session_id: str) -> bool:
        with self._reachable():
            return bool(self.client.delete(self._key(session_id)))

    def count(self) -> int:
        with self._reachable():
            return sum(1 for _ in self.client.scan_iter(match=self.prefix + "*", count=1000))

    def close(self) -> None:
        self.client.close()


def open_store(redis_url: str | None, ttl_s: float, max_sessions: int) -> SessionStore:
    """Redis when a URL is given, else this process's memory."""
    if redis_url:
        return RedisSessionStore(redis_url, ttl_s)
    return MemorySessionStore(ttl_s, max_sessions)
