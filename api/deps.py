"""Dependencies the routes declare: the app's settings, the loaded detector, the admission gate.

Each reads what ``create_app`` put on ``app.state``, so an app built with other settings (tests,
several apps in one process) is served its own; override them with ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.core.config import Settings
from api.limits import AdmissionGate
from api.runtime import ModelSlot
from soundsentry.detector import Detector
from soundsentry.errors import ServiceUnavailableError
from soundsentry.report import without_paths


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_detector(request: Request) -> Detector:
    """The detector; when the models failed to load, a due retry happens here (see ModelSlot)."""
    models: ModelSlot = request.app.state.models
    detector = models.get()
    if detector is None:
        raise ServiceUnavailableError(f"The detector is not ready: {without_paths(models.reason)}. Check GET /health "
                                      "and retry.",
                                      error_code="model_not_loaded")
    return detector


def get_gate(request: Request) -> AdmissionGate:
    return request.app.state.gate


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DetectorDep = Annotated[Detector, Depends(get_detector)]
GateDep = Annotated[AdmissionGate, Depends(get_gate)]
