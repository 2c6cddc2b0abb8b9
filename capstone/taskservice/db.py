"""The engine, the session dependency, and 503 + Retry-After when the database cannot serve (lesson 07).

One engine per process (created in the lifespan), its pool sized from the settings; one AsyncSession
per request (lesson 03), `expire_on_commit=False` so that a committed object can still be read
without a lazy load on the event loop (lesson 03: MissingGreenlet).
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from .settings import Settings

log = logging.getLogger("taskservice.db")
RETRY_AFTER_SECONDS = 1


def create_engine_from(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,  # 0: no extra connections; -1 would mean unlimited
        pool_timeout=settings.db_pool_timeout_seconds,  # wait this long for a connection, then 503 (not 30 s)
        pool_pre_ping=True,  # a connection the server dropped between requests is replaced, not a 500
        pool_recycle=1800,
        # A database error's message would carry the statement's parameters (an argon2 hash, emails) into the
        # error log: keep the SQL, drop the values.
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        try:
            await session.close()
        except DBAPIError as exc:
            # The connection broke under the request (a database restart): its rollback fails. Drop the
            # connection rather than raise after the response (uvicorn would reset the client's connection).
            log.warning("session close failed, connection dropped: %s", type(exc).__name__)
            await session.invalidate()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    """For endless streams: a short session per read, instead of one held (with its connection) for hours."""
    return request.app.state.sessions


SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]

# Exceptions that mean "the database cannot serve right now": the pool's wait ran out, the server is
# down or restarting. OSError: asyncpg's refused or timed-out connect (ConnectionRefusedError,
# TimeoutError) reaches us unwrapped by SQLAlchemy.
UNAVAILABLE = (PoolTimeoutError, OperationalError, InterfaceError, OSError)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable, retry shortly"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


# SQLSTATEs of a server that cannot serve: a broken connection (class 08), a server shutting down or
# starting up (57P01-57P03: "the database system is starting up" during a restart). asyncpg raises
# CannotConnectNowError for the last, which SQLAlchemy wraps in a plain DBAPIError, not OperationalError.
SERVER_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    """A connection dropped mid-request (a server restart, pg_terminate_backend) arrives with
    `connection_invalidated`: pre-ping cannot save a transaction already running (lesson 07, section 4), but
    the client may retry the whole request. So may it when the server refuses to connect while it starts up.
    Any other database error is a bug: a 500."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    if exc.connection_invalidated or state.startswith(SERVER_UNAVAILABLE_STATES):
        return await database_unavailable(request, exc)
    raise exc  # any other database error is a bug: a 500, logged with its traceback


def install_database_errors(app: FastAPI) -> None:
    for error in UNAVAILABLE:
        app.add_exception_handler(error, database_unavailable)
    app.add_exception_handler(DBAPIError, database_error)  # the other DBAPIErrors (its subclasses above win)


def connection_arithmetic(settings: Settings) -> str:
    """Lesson 07, section 1: the line startup logs; refuses to start when the server cannot hold it."""
    needed = settings.connections_needed
    line = (f"database connections: {settings.web_workers} web workers x (pool {settings.db_pool_size} + overflow "
            f"{settings.db_max_overflow}) + job worker = {needed} of max {settings.db_max_connections}")
    if needed > settings.db_max_connections:
        raise RuntimeError(line + ": too many; lower TASKSERVICE_DB_POOL_SIZE or TASKSERVICE_WEB_WORKERS")
    return line


# What an ordinary role may open: max_connections minus the slots PostgreSQL reserves (lesson 07, section 1).
SERVER_BUDGET = text("SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
                     " - coalesce(current_setting('reserved_connections', true)::int, 0)")


async def check_server_budget(engine: AsyncEngine, settings: Settings) -> None:
    """Lesson 07: size from the server, read from the server. DB_MAX_CONNECTIONS cannot know the reserved slots
    (3 by default: 98 connections pass a check against 100 and are refused at peak). Unreadable (the database
    is down at startup): a warning, and the service starts and answers 503 until the database is back."""
    try:
        async with asyncio.timeout(settings.db_pool_timeout_seconds + 1):
            async with engine.connect() as connection:
                budget = (await connection.execute(SERVER_BUDGET)).scalar_one()
    except (OSError, TimeoutError, SQLAlchemyError) as exc:
        log.warning("could not read the server's connection budget: %s", type(exc).__name__)
        return
    if settings.connections_needed > budget:
        raise RuntimeError(f"database connections: {settings.connections_needed} needed, but the server allows "
                           f"{budget} (max_connections minus its reserved slots): lower TASKSERVICE_DB_POOL_SIZE or "
                           "TASKSERVICE_WEB_WORKERS")
