"""Streams of chunks: POST /sessions, POST /sessions/{id}/chunks, GET and DELETE /sessions/{id}.

The browser extension opens a session per tab and posts each 4 s chunk to it; every answer carries
the chunk's own report (as ``/predict`` gives it) and the stream's rolling verdict per speaker
(:mod:`soundsentry.sessions`). A chunk goes through the same admission gate, limits and deadline as
``/predict``; the session is looked up before the work (an unknown id costs nothing) and updated
atomically after it. The store is the app's (``app.state.sessions``): in this process, or Redis when
``SOUNDSENTRY_REDIS_URL`` is set.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Request, Response, UploadFile

from api import examples
from api.deps import DetectorDep, GateDep, SettingsDep
from api.routes.predict import ERRORS, analyse, bounded, note_reports
from api.schemas import ChunkResponse, ErrorResponse, SessionCreated, SessionOut
from soundsentry.errors import SessionNotFoundError
from soundsentry.sessions import NOT_FOUND, SESSION_ID, SessionStore, add_chunk, summarise

router = APIRouter(prefix="/sessions", tags=["sessions"], form_limits={"max_files": 1, "max_fields": 16})
SESSION_ERRORS = {**ERRORS, 404: {"model": ErrorResponse}}
SessionId = Annotated[str, Path(description="the id POST /sessions answered",
                                examples=[examples.SESSION_CREATED["session_id"]])]


def store_of(request: Request) -> SessionStore:
    return request.app.state.sessions


def checked(session_id: str) -> str:
    if not SESSION_ID.match(session_id):
        raise SessionNotFoundError(NOT_FOUND)
    return session_id


@router.post("", status_code=201, response_model=SessionCreated, responses=SESSION_ERRORS)
def create_session(request: Request) -> SessionCreated:
    store = store_of(request)
    session = store.create()
    return SessionCreated(session_id=session.session_id, expires_in_s=round(store.ttl_s))


@router.post("/{session_id}/chunks", response_model=ChunkResponse, responses=SESSION_ERRORS)
def post_chunk(
    request: Request,
    session_id: SessionId,
    detector: DetectorDep,
    settings: SettingsDep,
    gate: GateDep,
    audio: Annotated[UploadFile, File(description="the next chunk of the stream (the extension: 4 s of WEBM/Opus)")],
    use_diarization: Annotated[bool, Form(description="split the chunk per speaker first", examples=[False])] = False,
) -> dict:
    store = store_of(request)
    store.get(checked(session_id))  # 404 before any work
    with gate.slot():
        limits = settings.decode_limits(use_diarization)
        body = bounded(gate, settings, partial(analyse, embed_speakers=True), detector, audio, use_diarization,
                       limits)
    report = body.pop("report")
    note_reports(request, settings, [body], batch=False)

    def count(session):
        index = session.chunks
        return index, add_chunk(session, report, max_speakers=settings.session_max_speakers)

    session, (index, links) = store.update(session_id, count)
    return {"session_id": session_id, "chunk_index": index, "chunk": body,
            "session": {**summarise(session, detector, store.ttl_s), "chunk_speakers": links}}


@router.get("/{session_id}", response_model=SessionOut, responses=SESSION_ERRORS)
def get_session(request: Request, session_id: SessionId, detector: DetectorDep) -> dict:
    store = store_of(request)
    return summarise(store.get(checked(session_id)), detector, store.ttl_s)


@router.delete("/{session_id}", status_code=204, responses=SESSION_ERRORS)
def delete_session(request: Request, session_id: SessionId) -> Response:
    if not store_of(request).delete(checked(session_id)):
        raise SessionNotFoundError(NOT_FOUND)
    return Response(status_code=204)
