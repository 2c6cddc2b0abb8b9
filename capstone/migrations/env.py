"""Alembic on the async engine (lesson 12): `connection.run_sync` runs the migrations on asyncpg.

The URL: `sqlalchemy.url` if the caller set it (the tests do), else TASKSERVICE_DATABASE_URL.
"""

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from taskservice.models import Base
from taskservice.settings import async_database_url

config = context.config
if config.config_file_name is not None:
    # alembic.ini's log levels ("Running upgrade ..."); keep the loggers already there (a test process's)
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata  # autogenerate compares the database with the package's tables


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("TASKSERVICE_DATABASE_URL", "")
    if not url:
        raise SystemExit("set TASKSERVICE_DATABASE_URL (e.g. postgresql://user:pw@127.0.0.1:5432/tasks)")
    return async_database_url(url)


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """pgqueuer's tables are its own (installed by SQL in 0001), not models: autogenerate leaves them alone."""
    return not (type_ == "table" and name is not None and name.startswith("pgqueuer"))


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the pgqueuer schema runs on the asyncpg driver")
asyncio.run(run_async_migrations())
