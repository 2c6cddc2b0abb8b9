"""Liveness (the process answers) and readiness (the database answers): lesson 07."""

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..db import RETRY_AFTER_SECONDS
from ..models import Health
from . import errors

router = APIRouter(prefix="/health", tags=["health"])
log = logging.getLogger("taskservice.health")
READY_TIMEOUT_SECONDS = 2


@router.get("/live")
async def live() -> Health:
    return Health(status="ok")


@router.get("/ready", responses=errors(503))
async def ready(request: Request) -> Health:
    """200 when a pooled connection answers within 2 s; else 503 + Retry-After (take me out of rotation)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any reason the database cannot serve: the answer is the same
        log.warning("not ready: %s", type(exc).__name__)  # the cause for the operator, not for the client
        return JSONResponse({"detail": "the database is not ready"}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return Health(status="ok")
