"""GET /metrics: the app's Prometheus metrics (text exposition format), open like /health.

Served only when ``SOUNDSENTRY_METRICS_ENABLED`` (default on); the names are listed in
``api/observability.py`` and docs/SERVICE.md ("Metrics and logs").
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.observability import METRICS_CONTENT_TYPE, ServiceMetrics

router = APIRouter(tags=["status"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    collected: ServiceMetrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=METRICS_CONTENT_TYPE)
