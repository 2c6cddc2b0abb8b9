"""The app factory: `uvicorn --factory taskservice.main:create_app` (lesson 09: a factory, so tests build
their own app with their own settings; lifespan for what lives as long as the process)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .db import connection_arithmetic, create_engine_from, install_database_errors, session_factory
from .middleware import RequestContextMiddleware
from .routes import auth, health, tasks
from .security import TokenKeys
from .settings import Settings
from .telemetry import configure_logging

log = logging.getLogger("taskservice.main")
NOT_TRACED = {"/health/live", "/health/ready"}


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
            yield
        finally:
            await engine.dispose()

    telemetry = ({"exclude": lambda scope: scope.get("path") in NOT_TRACED} if settings.telemetry
                 else {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(title="Task Service", version="1.0.0", lifespan=lifespan, telemetry=telemetry)
    app.state.settings = settings
    app.state.keys = keys
    install_database_errors(app)
    app.add_middleware(RequestContextMiddleware)
    for router in (auth.router, tasks.router, health.router):
        app.include_router(router)
    return app
