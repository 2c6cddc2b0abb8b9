"""The app factory: `uvicorn --factory taskservice.main:create_app` (lesson 09: a factory, so tests build
their own app with their own settings; lifespan for what lives as long as the process)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .db import check_server_budget, connection_arithmetic, create_engine_from, install_database_errors, session_factory
from .middleware import RequestContextMiddleware
from .routes import auth, health, tasks
from .security import TokenKeys
from .settings import Settings
from .telemetry import configure_logging

log = logging.getLogger("taskservice.main")
NOT_TRACED = {"/health/live", "/health/ready"}


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, without each error's `input`: that echoed what was sent (a password too short, a whole
    sign-up body when a field was missing), and a lone surrogate in it ("\\ud800" in the JSON) made the 422
    itself fail to encode as UTF-8: a 500 (found in review). `input` is optional in the documented schema."""
    errors = [{key: value for key, value in error.items() if key != "input"} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # from the environment; a missing required value stops here, named
    configure_logging(settings.log_level)
    arithmetic = connection_arithmetic(settings)  # refuses a layout the database cannot hold (lesson 07)
    keys = TokenKeys(settings)  # a bad key fails at startup, not at the first login

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info(arithmetic)
        app.state.engine = engine = create_engine_from(settings)
        app.state.sessions = session_factory(engine)
        try:
            await check_server_budget(engine, settings)  # the server's own limit, reserved slots counted
            yield
        finally:
            await engine.dispose()

    telemetry = ({"exclude": lambda scope: scope.get("path") in NOT_TRACED} if settings.telemetry
                 else {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(title="Task Service", version="1.0.0", lifespan=lifespan, telemetry=telemetry)
    app.state.settings = settings
    app.state.keys = keys
    install_database_errors(app)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_middleware(RequestContextMiddleware)
    for router in (auth.router, tasks.router, health.router):
        app.include_router(router)
    return app
