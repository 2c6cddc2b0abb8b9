"""The SQLAlchemy / SQLModel / FastAPI / Alembic behaviours lesson 12 and its exercise rely on.

Most run on in-memory SQLite (aiosqlite goes through the same greenlet machinery as asyncpg); the
server-side ones (EXPLAIN row counts, NOT NULL on a table with rows, transactional DDL) run on the
embedded PostgreSQL. CI must run those: there (CI set) a missing server fails them; elsewhere they skip.
"""

# No `from __future__ import annotations` here: SQLModel reads the relationship annotations at class creation.
import asyncio
import gc
import tempfile
import warnings
from argparse import Namespace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import alembic
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.exceptions import ResponseValidationError
from pydantic import BaseModel
from sqlalchemy import event, insert, text, tuple_
from sqlalchemy.exc import InvalidRequestError, MissingGreenlet, StatementError
from sqlalchemy.ext.asyncio import AsyncAttrs, create_async_engine
from sqlalchemy.orm import joinedload, registry, selectinload
from sqlmodel import Field, Relationship, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from coursekit import app_client
from tests.conftest import start_embedded_postgres


# aiosqlite creates its cursor with an await: a refused lazy load leaves that coroutine behind.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'Connection.cursor' was never awaited:RuntimeWarning")


def run(coro):
    return asyncio.run(coro)


def define_models(lazy: str) -> SimpleNamespace:
    class Base(AsyncAttrs, SQLModel, registry=registry()):
        pass

    class Parent(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        children: list["Child"] = Relationship(back_populates="parent", sa_relationship_kwargs={"lazy": lazy})

    class Child(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        parent_id: int = Field(foreign_key="parent.id")
        parent: Parent = Relationship(back_populates="children", sa_relationship_kwargs={"lazy": lazy})

    return SimpleNamespace(metadata=Base.metadata, Parent=Parent, Child=Child)


async def seeded(lazy: str, parents: int = 3):
    m = define_models(lazy)
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(m.metadata.create_all)
        await conn.execute(insert(m.Parent), [{"id": i} for i in range(1, parents + 1)])
        await conn.execute(insert(m.Child), [{"parent_id": (i + 1) // 2} for i in range(1, 2 * parents + 1)])
    return m, engine


def counting(engine) -> list[str]:
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda c, cur, statement, *rest: statements.append(statement))
    return statements


def test_async_engine_refuses_events_its_sync_engine_takes_them():
    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(NotImplementedError, match="asynchronous events are not implemented"):
        event.listen(engine, "before_cursor_execute", lambda *args: None)
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: None)


def test_lazy_select_relationship_raises_missing_greenlet_in_async_session():
    async def scenario():
        m, engine = await seeded("select")
        async with AsyncSession(engine) as session:
            parent = await session.get(m.Parent, 1)
            with pytest.raises((MissingGreenlet, StatementError)) as caught:
                parent.children
        # asyncpg raises MissingGreenlet itself (lesson 12 on PostgreSQL); aiosqlite wraps it in a StatementError
        cause = getattr(caught.value, "orig", None) or caught.value
        assert isinstance(cause, MissingGreenlet) and "greenlet_spawn has not been called" in str(cause)
        await engine.dispose()

    run(scenario())


def test_response_model_reading_a_lazy_relationship_is_a_response_validation_error():
    async def scenario():
        m, engine = await seeded("select")

        class ChildRead(BaseModel):
            id: int

        class ParentRead(BaseModel):
            id: int
            children: list[ChildRead]

        app = FastAPI()

        @app.get("/parents/1")
        async def read() -> ParentRead:
            async with AsyncSession(engine) as session:
                parent = await session.get(m.Parent, 1)
                return ParentRead.model_validate(parent, from_attributes=True)

        # Kept and closed at the end: a leaked session garbage-collected mid-test terminates the
        # in-memory database's only connection, and the next request finds no tables (CI saw it once).
        left_open: list[AsyncSession] = []

        @app.get("/returned/1")
        async def returned() -> ParentRead:
            session = AsyncSession(engine)  # still open while FastAPI validates the return value
            left_open.append(session)
            return await session.get(m.Parent, 1)

        async with app_client(app, raise_app_exceptions=False) as client:
            assert (await client.get("/returned/1")).status_code == 500
        async with app_client(app) as client:
            with pytest.raises(ResponseValidationError) as caught:
                await client.get("/returned/1")
        error = caught.value.errors()[0]
        assert error["type"] == "get_attribute_error" and error["loc"] == ("response", "children")
        assert "MissingGreenlet" in error["msg"]
        for session in left_open:
            await session.close()
        await engine.dispose()

    run(scenario())


def test_lazy_raise_refuses_before_any_sql_awaitable_attrs_too_refresh_still_loads():
    async def scenario():
        m, engine = await seeded("raise")
        statements = counting(engine)
        async with AsyncSession(engine) as session:
            parent = await session.get(m.Parent, 1)
            statements.clear()
            with pytest.raises(InvalidRequestError, match=r"'Parent.children' is not available due to lazy='raise'"):
                parent.children
            with pytest.raises(InvalidRequestError, match="lazy='raise'"):
                await parent.awaitable_attrs.children
            assert statements == []
            await session.refresh(parent, ["children"])
            assert len(parent.children) == 2
        await engine.dispose()

    run(scenario())


def test_awaitable_attrs_is_one_query_per_object():
    async def scenario():
        m, engine = await seeded("select", parents=5)
        statements = counting(engine)
        async with AsyncSession(engine) as session:
            parents = (await session.exec(select(m.Parent))).all()
            for parent in parents:
                await parent.awaitable_attrs.children
        assert len(statements) == 1 + 5
        await engine.dispose()

    run(scenario())


def test_selectinload_batches_in_lists_of_500():
    async def scenario():
        m, engine = await seeded("raise", parents=1000)
        statements = counting(engine)
        async with AsyncSession(engine) as session:
            parents = (await session.exec(select(m.Parent).options(selectinload(m.Parent.children)))).all()
        assert len(parents) == 1000 and all(len(p.children) == 2 for p in parents)
        assert len(statements) == 1 + 2  # 1000 keys: two IN lists of 500
        await engine.dispose()

    run(scenario())


def test_joinedload_on_a_collection_requires_unique():
    async def scenario():
        m, engine = await seeded("raise")
        statement = select(m.Parent).options(joinedload(m.Parent.children))
        async with AsyncSession(engine) as session:
            with pytest.raises(InvalidRequestError, match=r"The unique\(\) method must be invoked"):
                (await session.exec(statement)).all()
            assert len((await session.exec(statement)).unique().all()) == 3
            statements = counting(engine)
            children = (await session.exec(select(m.Child).options(joinedload(m.Child.parent)))).all()
            assert len(children) == 6 and len(statements) == 1  # many-to-one: a join, no unique() needed
        await engine.dispose()

    run(scenario())


def test_sqlmodel_datetime_is_utc_aware_and_refuses_naive_values():
    class Base(SQLModel, registry=registry()):
        pass

    class Stamp(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        at: datetime

    column_type = Stamp.__table__.c.at.type
    assert type(column_type).__name__ == "UTCDateTime" and column_type.impl.timezone is True

    async def scenario():
        engine = create_async_engine("sqlite+aiosqlite://")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            session.add(Stamp(at=datetime(2026, 1, 1)))
            with pytest.raises(Exception, match="Datetime values must have timezone information"):
                await session.commit()
        await engine.dispose()

    run(scenario())


ENV_PY = """\
import asyncio
from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config


def migrate(connection):
    context.configure(connection=connection, target_metadata=config.attributes["target_metadata"])
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = async_engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(migrate)
    await engine.dispose()


asyncio.run(main())
"""


def alembic_env(url: str, metadata, *, import_sqlmodel: bool = True) -> tuple[Config, Path]:
    folder = Path(tempfile.mkdtemp(prefix="test12-alembic-"))
    (folder / "versions").mkdir()
    (folder / "env.py").write_text(ENV_PY)
    template = (Path(alembic.__file__).parent / "templates" / "async" / "script.py.mako").read_text()
    assert "import sqlalchemy as sa\n" in template and "import sqlmodel" not in template
    if import_sqlmodel:
        template = template.replace("import sqlalchemy as sa\n", "import sqlalchemy as sa\nimport sqlmodel\n")
    (folder / "script.py.mako").write_text(template)
    cfg = Config(cmd_opts=Namespace(quiet=True))
    cfg.set_main_option("script_location", str(folder))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["target_metadata"] = metadata
    return cfg, folder


def test_alembic_autogenerate_writes_sqlmodel_types_which_need_import_sqlmodel(tmp_path, capsys):
    class Base(SQLModel, registry=registry()):
        pass

    class Note(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        body: str

    url = f"sqlite+aiosqlite:///{tmp_path}/notes.db"
    for import_sqlmodel in (False, True):
        cfg, folder = alembic_env(url, Base.metadata, import_sqlmodel=import_sqlmodel)
        try:
            script = command.revision(cfg, message="notes", autogenerate=True, rev_id="0001")
            assert "sqlmodel.sql.sqltypes.AutoString()" in Path(script.path).read_text()
            if import_sqlmodel:
                command.upgrade(cfg, "head")
                command.downgrade(cfg, "base")
            else:
                with pytest.raises(NameError, match="sqlmodel"):
                    command.upgrade(cfg, "head")
        finally:
            import shutil

            shutil.rmtree(folder)
    assert capsys.readouterr().out == ""  # quiet=True: no "Generating ..." lines


def test_alembic_async_env_cannot_run_inside_a_running_loop_but_can_in_a_thread(tmp_path):
    cfg, folder = alembic_env(f"sqlite+aiosqlite:///{tmp_path}/empty.db", SQLModel.metadata)

    async def scenario():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError, match=r"asyncio.run\(\) cannot be called from a running event loop"):
                command.upgrade(cfg, "head")
            gc.collect()
        await asyncio.to_thread(command.upgrade, cfg, "head")

    try:
        run(scenario())
    finally:
        import shutil

        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def postgres():
    db = start_embedded_postgres("12")
    yield db
    db.stop()


def test_postgres_offset_reads_every_skipped_row_keyset_reads_one_page(postgres):
    async def scenario():
        engine = create_async_engine(postgres.url)
        async with engine.begin() as conn:
            await conn.execute(text("create table t12_events (id serial primary key, created_at timestamptz not null, kind text)"))
            await conn.execute(text("create index on t12_events (created_at, id)"))
            await conn.execute(
                text("insert into t12_events (created_at) select timestamptz '2026-01-01 00:00+00' + (n / 10) * interval '1 second' from generate_series(1, 20000) n")
            )
            await conn.execute(text("analyze t12_events"))
            explain = "explain (analyze, costs off, timing off, summary off, buffers off) "
            offset_plan = (await conn.execute(text(explain + "select * from t12_events order by created_at desc, id desc offset 19980 limit 20"))).scalars().all()
            keyset_plan = (
                await conn.execute(
                    text(explain + "select * from t12_events where (created_at, id) < (timestamptz '2026-01-01 00:10:00+00', 6000) order by created_at desc, id desc limit 20")
                )
            ).scalars().all()
            await conn.execute(text("drop table t12_events"))
        await engine.dispose()
        return offset_plan, keyset_plan

    offset_plan, keyset_plan = run(scenario())
    # PostgreSQL 18 prints actual rows with two decimals. The deep OFFSET's plan is the planner's choice
    # (an index scan backward, or a sequential scan and a sort): either way its scan reads every row.
    assert any("Scan" in line and "(actual rows=20000.00 loops=1)" in line for line in offset_plan), offset_plan
    assert keyset_plan[1].strip().startswith("->  Index Scan Backward") and "(actual rows=20.00 loops=1)" in keyset_plan[1]


def test_postgres_not_null_column_on_rows_fails_and_rolls_back_a_server_default_fills_them_without_a_rewrite(postgres, tmp_path):
    class Base(SQLModel, registry=registry()):
        pass

    class Row(Base, table=True):
        __tablename__ = "t12_rows"
        id: int | None = Field(default=None, primary_key=True)

    cfg, folder = alembic_env(postgres.url, Base.metadata)
    revision = (
        "from alembic import op\nimport sqlalchemy as sa\nrevision = '0002'\ndown_revision = '0001'\n"
        "def upgrade():\n    op.add_column('t12_rows', sa.Column('channel', sa.String(), nullable=False{default}))\n"
        "def downgrade():\n    op.drop_column('t12_rows', 'channel')\n"
    )

    async def version(engine) -> str:
        async with engine.connect() as conn:
            return (await conn.execute(text("select version_num from alembic_version"))).scalar_one()

    async def filenode(engine) -> int:
        async with engine.connect() as conn:
            return (await conn.execute(text("select pg_relation_filenode('t12_rows')"))).scalar_one()

    async def scenario():
        engine = create_async_engine(postgres.url)
        await asyncio.to_thread(command.revision, cfg, message="rows", autogenerate=True, rev_id="0001")
        await asyncio.to_thread(command.upgrade, cfg, "head")
        async with engine.begin() as conn:
            await conn.execute(text("insert into t12_rows (id) select generate_series(1, 100)"))
        (folder / "versions" / "0002_channel.py").write_text(revision.format(default=""))
        with pytest.raises(Exception, match='column "channel" of relation "t12_rows" contains null values'):
            await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await version(engine) == "0001"  # transactional DDL: nothing half-applied
        file_before = await filenode(engine)
        (folder / "versions" / "0002_channel.py").write_text(revision.format(default=", server_default='web'"))
        await asyncio.to_thread(command.upgrade, cfg, "head")
        async with engine.connect() as conn:
            assert (await conn.execute(text("select count(*) from t12_rows where channel = 'web'"))).scalar_one() == 100
        assert await filenode(engine) == file_before  # PostgreSQL 11+: a constant default lives in the catalog, no rewrite
        async with engine.begin() as conn:
            await conn.execute(text("alter table t12_rows add column noise float8 not null default random()"))
        assert await filenode(engine) != file_before  # a volatile default is computed per row: the table is rewritten
        await asyncio.to_thread(command.downgrade, cfg, "base")
        await engine.dispose()

    try:
        run(scenario())
    finally:
        import shutil

        shutil.rmtree(folder)


def test_tuple_comparison_binds_plain_datetime_not_sqlmodels_utc_type():
    """A keyset `tuple_(col, id) > tuple_(value, id)` does not type its values from the columns: SQLModel's
    UTCDateTime (which refuses naive datetimes) applies to `col > value`, not inside tuple_(). Validate a
    cursor's datetime yourself (lesson 12, section 6: decode_cursor refuses a naive one)."""

    class Base(SQLModel, registry=registry()):
        pass

    class Stamp(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        at: datetime

    in_tuple = select(Stamp).where(tuple_(Stamp.at, Stamp.id) > tuple_(datetime(2026, 1, 1), 5)).compile()
    plain = select(Stamp).where(Stamp.at > datetime(2026, 1, 1)).compile()
    assert {type(b.type).__name__ for b in in_tuple.binds.values()} == {"DateTime", "Integer"}
    assert {type(b.type).__name__ for b in plain.binds.values()} == {"UTCDateTime"}
