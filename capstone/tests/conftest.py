"""The task service's test fixtures (lesson 09's production pattern).

- one embedded PostgreSQL per run (coursekit.postgres), migrated once with the real Alembic scripts;
- per test: one connection, an outer transaction, a session joined to it with SAVEPOINTs
  (`join_transaction_mode="create_savepoint"`): the app's commits are real, and everything the test
  wrote is rolled back at the end, whatever happened;
- an app from the factory, `get_session` overridden with that session, the overrides cleared after;
- `httpx.AsyncClient` over `ASGITransport`, with `asgi_lifespan.LifespanManager` (ASGITransport sends no
  lifespan events).
"""

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel.ext.asyncio.session import AsyncSession

CAPSTONE = Path(__file__).resolve().parent.parent
if str(CAPSTONE) not in sys.path:
    sys.path.insert(0, str(CAPSTONE))  # the service's import name is `taskservice` (capstone/README.md)

from taskservice.db import get_session, get_session_factory  # noqa: E402
from taskservice.keys import new_private_key_pem  # noqa: E402
from taskservice.main import create_app  # noqa: E402
from taskservice.models import User  # noqa: E402
from taskservice.security import password_hash  # noqa: E402
from taskservice.settings import Settings  # noqa: E402

PASSWORD = "correct horse battery"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """An embedded PostgreSQL for the run, migrated to head; skipped where none starts (failed in CI)."""
    from coursekit.postgres import start_database

    db = asyncio.run(start_database(from_env=False))  # never a learner's DATABASE_URL: we migrate it
    try:
        if not db.is_postgres:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the capstone on PostgreSQL, but: {db.reason}")
            pytest.skip(f"no embedded PostgreSQL here: {db.reason}")
        config = Config(str(CAPSTONE / "alembic.ini"))
        config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
        command.upgrade(config, "head")  # env.py runs its own event loop: no loop is running here
        yield db.url
    finally:
        db.stop()


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    return new_private_key_pem()  # one per run, like a deployment's one key for every worker


@pytest.fixture
def settings(database_url: str, private_key_pem: str) -> Settings:
    return Settings(database_url=database_url, jwt_private_key=private_key_pem, smtp_port=1, log_level="WARNING")


@pytest.fixture(scope="session")
def known_hash() -> str:
    """One argon2 hash per run: most tests need a user, not the cost of hashing (tested in test_auth)."""
    return password_hash.hash(PASSWORD)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            outer = await connection.begin()
            try:
                yield connection
            finally:
                await outer.rollback()  # everything the test wrote, committed or not, is gone
    finally:
        await engine.dispose()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
def app(settings: Settings, session: AsyncSession):
    app = create_app(settings)

    async def test_session() -> AsyncIterator[AsyncSession]:
        try:
            yield session
        finally:
            # What closing the app's own session does after each request: drop what it did not commit
            # (a refused signup), so that the next request of the test starts clean.
            await session.rollback()

    @contextlib.asynccontextmanager
    async def short_test_session() -> AsyncIterator[AsyncSession]:
        yield session  # the streams' short sessions: the same test session, left open

    app.dependency_overrides[get_session] = test_session
    app.dependency_overrides[get_session_factory] = lambda: short_test_session
    try:
        yield app
    finally:
        app.dependency_overrides.clear()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@dataclass
class Member:
    id: int
    email: str
    headers: dict[str, str]  # Authorization: Bearer <a token the app issued for this user>


@pytest.fixture
def make_member(app, session: AsyncSession, known_hash: str):
    """A user in the database and a valid token for them, without a signup's argon2 cost."""

    async def make(email: str) -> Member:
        user = User(email=email, hashed_password=known_hash)
        session.add(user)
        await session.commit()
        token = app.state.keys.issue(user.id)
        # ids, not the ORM object: the next request's rollback expires it (lesson 03)
        return Member(id=user.id, email=email, headers={"Authorization": f"Bearer {token}"})

    return make
