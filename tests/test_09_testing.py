"""Lesson 09 (testing with pytest): the stack behaviours the lesson and its exercise are built on.

The notebooks assert the same facts under nbval (through real pytest subprocesses); these tests name
them one by one, so that an upgrade of FastAPI, Starlette, httpx, asgi-lifespan, SQLAlchemy or
aiosqlite that changes one says which.
"""

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, select
from sqlmodel.ext.asyncio.session import AsyncSession

from coursekit import new_sqlmodel_base

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.10 asks for httpx2 when TestClient runs on httpx
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.anyio

Base = new_sqlmodel_base()


class Note(Base, table=True):
    id: int | None = Field(default=None, primary_key=True)
    text: str


def current_user() -> str:
    return "nobody"


def lifespan_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = True
        yield

    app = FastAPI(lifespan=lifespan)
    app.state.ready = False

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": app.state.ready}

    @app.get("/me")
    def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    return app


def test_an_override_outlives_the_client_that_used_it():
    """dependency_overrides is a plain dict on the app: nothing clears it between clients (lesson 09, section 1)."""
    app = lifespan_app()
    app.dependency_overrides[current_user] = lambda: "alice"
    with TestClient(app) as first:
        assert first.get("/me").json() == {"user": "alice"}
    with TestClient(app) as second:  # a "new test" on the same module-level app
        assert second.get("/me").json() == {"user": "alice"}
    app.dependency_overrides.clear()
    with TestClient(app) as third:
        assert third.get("/me").json() == {"user": "nobody"}


def test_testclient_runs_the_lifespan_only_with_with():
    assert TestClient(lifespan_app()).get("/ready").json() == {"ready": False}
    with TestClient(lifespan_app()) as client:
        assert client.get("/ready").json() == {"ready": True}


async def test_asgitransport_sends_no_lifespan_and_lifespanmanager_does():
    app = lifespan_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/ready")).json() == {"ready": False}
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client:
            assert (await client.get("/ready")).json() == {"ready": True}


def test_starlette_testclient_asks_for_httpx2():
    """The lesson quotes this warning (Starlette 1.10 with httpx, no httpx2 installed)."""
    import importlib
    import sys

    import starlette

    saved = sys.modules.pop("starlette.testclient")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importlib.import_module("starlette.testclient")
    finally:
        # the import also set the package's attribute to the second module: both restored, or a later test on
        # this worker gets two TestClient classes (`starlette.testclient.TestClient` is not fastapi's)
        sys.modules["starlette.testclient"] = saved
        starlette.testclient = saved
    assert any("install `httpx2` instead" in str(w.message) for w in caught), [str(w.message) for w in caught]


def sqlite_engine(path: Path, *, savepoint_fix: bool) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    if savepoint_fix:
        @event.listens_for(engine.sync_engine, "connect")
        def no_driver_transactions(dbapi_connection, connection_record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def begin(connection):
            connection.exec_driver_sql("BEGIN")
    return engine


@pytest.mark.parametrize(("savepoint_fix", "rows_left"), [(False, 1), (True, 0)], ids=["driver-default", "begin-hooks"])
async def test_outer_rollback_undoes_a_commit_only_with_the_sqlite_hooks(tmp_path, savepoint_fix, rows_left):
    """join_transaction_mode="create_savepoint": the session's commit() releases a savepoint, the outer
    rollback undoes it; on aiosqlite only once the driver's own transaction handling is switched off."""
    engine = sqlite_engine(tmp_path / "t.db", savepoint_fix=savepoint_fix)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        session.add(Note(text="written by a test"))
        await session.commit()
        assert len((await session.exec(select(Note))).all()) == 1  # visible inside the test
        await session.close()
        await outer.rollback()
    async with AsyncSession(engine) as session:
        assert len((await session.exec(select(Note))).all()) == rows_left
    await engine.dispose()


class UniqueNote(Base, table=True):
    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(unique=True)


@pytest.mark.parametrize(
    ("mode", "expected"), [(None, (0, False)), ("create_savepoint", (1, True))], ids=["default-mode", "create_savepoint"]
)
async def test_a_rollback_in_the_code_under_test_ends_the_outer_transaction_unless_create_savepoint(tmp_path, mode, expected):
    from sqlalchemy.exc import IntegrityError

    engine = sqlite_engine(tmp_path / "t.db", savepoint_fix=True)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with engine.connect() as connection:
        outer = await connection.begin()
        options = {} if mode is None else {"join_transaction_mode": mode}
        session = AsyncSession(bind=connection, expire_on_commit=False, **options)
        session.add(UniqueNote(text="set up"))
        await session.commit()
        session.add(UniqueNote(text="set up"))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
        seen = (len((await session.exec(select(UniqueNote))).all()), outer.is_active)
        await session.close()
        if outer.is_active:
            await outer.rollback()
    await engine.dispose()
    assert seen == expected


async def test_asgitransport_returns_only_after_the_background_tasks_ran():
    """Lesson 09, section 6: in-process, a test can assert a background task's effect right after the request."""
    from fastapi import BackgroundTasks

    from coursekit import app_client

    done: list[str] = []
    app = FastAPI()

    async def task() -> None:
        import anyio

        await anyio.sleep(0.05)
        done.append("task")

    @app.post("/work", status_code=202)
    def work(background: BackgroundTasks) -> dict[str, str]:
        background.add_task(task)
        return {"status": "accepted"}

    async with app_client(app) as client:
        response = await client.post("/work")
        assert response.status_code == 202 and done == ["task"]


def test_the_code_after_yield_runs_when_the_test_fails(tmp_path):
    """Lesson 09 and its exercise: a fixture's cleanup after `yield` runs whether the test passed or failed
    (pytest resumes the generator; it does not throw the failure into it), so no try/finally is needed for that."""
    import subprocess
    import sys

    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts =\n", encoding="utf-8")
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n"
        "LOG = []\n\n"
        "@pytest.fixture\n"
        "def overrides():\n"
        "    LOG.append('set')\n"
        "    yield\n"
        "    LOG.append('cleared')\n\n"
        "def test_fails(overrides):\n"
        "    assert False\n\n"
        "def test_cleanup_ran():\n"
        "    assert LOG == ['set', 'cleared']\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        # no plugin: loading the course environment's (nbval, xdist, schemathesis, ...) costs seconds of CPU, unused here
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--disable-plugin-autoload", "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
