"""Lesson 03 (async endpoints and sessions): the stack behaviours the lesson is built on.

The notebooks assert the same facts under nbval; these tests name them one by one, so that
an upgrade of SQLAlchemy, SQLModel, FastAPI or AnyIO that changes one says which.
"""

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio.to_thread
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import inspect
from sqlalchemy.exc import MissingGreenlet, SAWarning, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm.exc import DetachedInstanceError
from sqlmodel import Field
from sqlmodel.ext.asyncio.session import AsyncSession

from coursekit import app_client, new_sqlmodel_base

pytestmark = pytest.mark.anyio


Base = new_sqlmodel_base()


class Task(Base, table=True):
    id: int | None = Field(default=None, primary_key=True)
    title: str


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/tasks.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


async def test_commit_expires_objects_and_async_access_raises_missing_greenlet(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        task = Task(title="t")
        session.add(task)
        await session.commit()
        assert inspect(task).expired_attributes == {"id", "title"} and not inspect(task).detached
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the driver's never-awaited coroutine
            with pytest.raises(StatementError) as caught:
                task.title
            assert isinstance(caught.value.orig, MissingGreenlet)
            del caught
            gc.collect()
    with pytest.raises(DetachedInstanceError):
        task.title


async def test_expire_on_commit_false_and_refresh_keep_objects_readable(engine: AsyncEngine) -> None:
    async with async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)() as session:
        kept = Task(title="kept")
        session.add(kept)
        await session.commit()
    async with AsyncSession(engine) as session:
        refreshed = Task(title="refreshed")
        session.add(refreshed)
        await session.commit()
        await session.refresh(refreshed)
    assert (kept.title, refreshed.title) == ("kept", "refreshed")


async def test_returning_an_expired_table_model_answers_an_empty_object(engine: AsyncEngine) -> None:
    async def get_session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(engine) as session:
            yield session

    app = FastAPI()

    @app.post("/tasks", status_code=201)
    async def create(title: str, session: Annotated[AsyncSession, Depends(get_session)]) -> Task:
        task = Task(title=title)
        session.add(task)
        await session.commit()
        return task

    async with app_client(app) as client:
        r = await client.post("/tasks", params={"title": "x"})
    assert (r.status_code, r.json()) == (201, {})


async def test_one_session_shared_by_a_gather_of_writes_fails(engine: AsyncEngine) -> None:
    async def add(session: AsyncSession, title: str) -> None:
        session.add(Task(title=title))
        await session.commit()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        async with AsyncSession(engine) as shared:
            outcomes = await asyncio.gather(*(add(shared, f"t{i}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, SQLAlchemyError) for o in outcomes), outcomes


async def test_threadpool_for_def_endpoints_has_40_tokens() -> None:
    assert anyio.to_thread.current_default_thread_limiter().total_tokens == 40


def test_patch_model_refuses_null_but_allows_leaving_a_field_out() -> None:
    """The lesson's TaskUpdate: a field validator runs only on fields sent (validate_default is off)."""
    from pydantic import ValidationError, field_validator
    from sqlmodel import SQLModel

    class TaskUpdate(SQLModel):
        title: str | None = None

        @field_validator("title")
        @classmethod
        def not_null(cls, value: object) -> object:
            if value is None:
                raise ValueError("may be left out, but not null")
            return value

    assert TaskUpdate.model_validate({}).model_dump(exclude_unset=True) == {}
    with pytest.raises(ValidationError):
        TaskUpdate.model_validate({"title": None})


async def test_sync_session_returning_the_table_model_after_commit_answers_empty(tmp_path: Path) -> None:
    """The reference tutorial's sync code: `commit(); return db_task` answers {} without a read model."""
    from collections.abc import Iterator

    from sqlmodel import Session, create_engine

    sync_engine = create_engine(f"sqlite:///{tmp_path}/sync.db")
    Base.metadata.create_all(sync_engine)

    def get_session() -> Iterator[Session]:
        with Session(sync_engine) as session:
            yield session

    SyncSession = Annotated[Session, Depends(get_session)]
    app = FastAPI()

    class TaskRead(Base):
        id: int
        title: str

    @app.post("/no-model")
    def no_model(title: str, session: SyncSession):  # noqa: ANN202 - the tutorial's shape
        task = Task(title=title)
        session.add(task)
        session.commit()
        return task

    @app.post("/table-model")
    def table_model(title: str, session: SyncSession) -> Task:
        task = Task(title=title)
        session.add(task)
        session.commit()
        return task

    @app.post("/read-model")
    def read_model(title: str, session: SyncSession) -> TaskRead:
        task = Task(title=title)
        session.add(task)
        session.commit()
        return task

    @app.post("/refreshed")
    def refreshed(title: str, session: SyncSession) -> Task:
        task = Task(title=title)
        session.add(task)
        session.commit()
        session.refresh(task)
        return task

    try:
        async with app_client(app) as client:
            bodies = {path: (await client.post(path, params={"title": "x"})).json() for path in ("/no-model", "/table-model", "/read-model", "/refreshed")}
    finally:
        sync_engine.dispose()
    assert bodies["/no-model"] == bodies["/table-model"] == {}
    assert sorted(bodies["/read-model"]) == sorted(bodies["/refreshed"]) == ["id", "title"]


async def test_nothing_committed_nothing_expired_but_commit_and_rollback_expire_all(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(Task(title="t"))
        await session.commit()
    async with AsyncSession(engine) as session:  # expire_on_commit=True
        loaded = await session.get(Task, 1)
    assert loaded.title == "t" and inspect(loaded).detached and not inspect(loaded).expired_attributes
    async with AsyncSession(engine) as session:
        only_read = await session.get(Task, 1)
        session.add(Task(title="other"))
        await session.commit()
        assert inspect(only_read).expired_attributes == {"id", "title"}
        await session.refresh(only_read)
        await session.rollback()
        assert inspect(only_read).expired_attributes == {"id", "title"}


async def test_run_in_threadpool_passes_keywords_anyio_run_sync_does_not() -> None:
    import functools

    from starlette.concurrency import run_in_threadpool

    def f(a: int, *, kw: int) -> tuple[int, int]:
        return (a, kw)

    assert await run_in_threadpool(f, 1, kw=2) == (1, 2)
    assert await anyio.to_thread.run_sync(functools.partial(f, 1, kw=2)) == (1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'kw'"):
        await anyio.to_thread.run_sync(f, 1, kw=2)  # type: ignore[call-arg]
