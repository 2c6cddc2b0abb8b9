"""The pgqueuer / asyncpg / SQLAlchemy behaviours lesson 13 and its exercise rely on, and coursekit.processes.

On the embedded PostgreSQL (CI must run them: there a missing server fails them; elsewhere they skip).
Workers run in-process here (a QueueManager on this test's event loop): cheaper than a fork, the same
queries. coursekit.processes is tested with real forked children.
"""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, Queries, QueueManager, RetryRequested
from pgqueuer.executors import EntrypointExecutorParameters
from pgqueuer.models import Context, Job
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from coursekit.processes import serve_in_process, start_process
from tests.conftest import start_embedded_postgres


@pytest.fixture(scope="module")
def dsn():
    db = start_embedded_postgres("13")

    async def install() -> None:
        connection = await asyncpg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await Queries(AsyncpgDriver(connection)).install()
            await connection.execute("CREATE TABLE t13_rows (id int PRIMARY KEY)")
        finally:
            await connection.close()

    try:
        asyncio.run(install())
        yield db.url.replace("postgresql+asyncpg://", "postgresql://")
    finally:
        db.stop()


def run(coro):
    return asyncio.run(coro)


async def scalar(dsn: str, query: str, *args):
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


def test_enqueue_on_an_open_transaction_commits_and_rolls_back_with_it(dsn):
    async def scenario() -> tuple:
        connection = await asyncpg.connect(dsn)
        try:
            queue = Queries(AsyncpgDriver(connection))
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute("INSERT INTO t13_rows VALUES (1)")
            [rolled_back] = await queue.enqueue("t13_job", b"1")
            await transaction.rollback()
            after_rollback = await connection.fetchval("SELECT count(*) FROM pgqueuer WHERE id = $1", rolled_back)
            async with connection.transaction():
                await connection.execute("INSERT INTO t13_rows VALUES (2)")
                [committed] = await queue.enqueue("t13_job", b"2")
            same_tx = await connection.fetchval(
                "SELECT (SELECT xmin::text FROM pgqueuer WHERE id = $1) = (SELECT xmin::text FROM t13_rows WHERE id = 2)", committed
            )
            await connection.execute("DELETE FROM pgqueuer")
            return after_rollback, same_tx
        finally:
            await connection.close()

    assert run(scenario()) == (0, True)


def test_enqueue_on_a_sqlalchemy_session_joins_its_transaction(dsn):
    async def scenario() -> int:
        engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool)
        try:
            async with AsyncSession(engine) as session:
                await session.execute(text("INSERT INTO t13_rows VALUES (3)"))
                raw = await (await session.connection()).get_raw_connection()
                assert isinstance(raw.driver_connection, asyncpg.Connection)
                await Queries(AsyncpgDriver(raw.driver_connection)).enqueue("t13_session_job", b"3")
                await session.rollback()
            return await scalar(dsn, "SELECT count(*) FROM pgqueuer WHERE entrypoint = 't13_session_job'")
        finally:
            await engine.dispose()

    assert run(scenario()) == 0


def test_a_session_connection_is_in_no_transaction_before_its_first_statement(dsn):
    """SQLAlchemy's asyncpg adapter sends BEGIN with its first statement: a job deferred on the raw
    connection before it (or after commit(), until the next statement) runs in autocommit and survives the rollback."""

    async def scenario() -> tuple:
        engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool)
        try:
            async with AsyncSession(engine) as session:
                raw = (await (await session.connection()).get_raw_connection()).driver_connection
                before = raw.is_in_transaction()
                await Queries(AsyncpgDriver(raw)).enqueue("t13_too_early", None)
                await session.execute(text("SELECT 1"))
                after_a_statement = raw.is_in_transaction()
                await session.rollback()
            async with AsyncSession(engine) as session:  # the same after commit(): no BEGIN until the next statement
                await session.execute(text("SELECT 1"))
                await session.commit()
                raw = (await (await session.connection()).get_raw_connection()).driver_connection
                after_commit = raw.is_in_transaction()
                await Queries(AsyncpgDriver(raw)).enqueue("t13_too_late", None)
                await session.rollback()
            survived = await scalar(dsn, "SELECT count(*) FROM pgqueuer WHERE entrypoint IN ('t13_too_early', 't13_too_late')")
            return before, after_a_statement, after_commit, survived
        finally:
            await engine.dispose()

    assert run(scenario()) == (False, True, False, 2), "(in a transaction: before a statement, after one, after commit; jobs left)"


def job(attempts: int) -> Job:
    return Job.model_validate({
        "id": 1, "priority": 0, "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z",
        "heartbeat": "2026-01-01T00:00:00Z", "execute_after": "2026-01-01T00:00:00Z", "status": "picked",
        "entrypoint": "x", "payload": None, "queue_manager_id": None, "headers": None, "attempts": attempts,
    })


def test_retry_executor_backs_off_exponentially_and_runs_max_attempts_plus_one_times():
    async def fails(job: Job) -> None:
        raise OSError("relay down")

    executor = DatabaseRetryEntrypointExecutor(
        EntrypointExecutorParameters(concurrency_limit=0, func=fails), max_attempts=2, initial_delay=timedelta(seconds=0.1)
    )

    async def outcome(attempts: int):
        try:
            await executor.execute(job(attempts), Context(cancellation=None, resources={}))
        except RetryRequested as retry:
            return retry.delay
        except OSError:
            return "raised"

    # attempts starts at 0: attempts 0 and 1 are retried (0.1 s, 0.2 s), attempt 2 (the third run) raises
    assert [run(outcome(n)) for n in range(3)] == [timedelta(seconds=0.1), timedelta(seconds=0.2), "raised"]


async def run_worker_until(dsn: str, register, done, heartbeat_timeout: timedelta, timeout: float = 60.0) -> None:
    """An in-process QueueManager until `done()` holds (or the timeout fails the test).

    The timeout bounds a worker that never gets there; it was 8 s, a deadline a loaded CI machine can miss.
    """
    connection = await asyncpg.connect(dsn)
    try:
        worker = QueueManager(Queries(AsyncpgDriver(connection)))
        register(worker)
        task = asyncio.create_task(worker.run(dequeue_timeout=timedelta(seconds=0.1), heartbeat_timeout=heartbeat_timeout))
        try:
            deadline = time.monotonic() + timeout
            while not await done():
                assert time.monotonic() < deadline, "the worker did not get there in time"
                assert not task.done(), f"the worker stopped: {task.exception() if not task.cancelled() else 'cancelled'}"
                await asyncio.sleep(0.05)
        finally:
            worker.shutdown.set()
            await asyncio.wait_for(task, 30)
    finally:
        await connection.close()


def test_hold_keeps_a_job_that_exhausted_its_retries_as_failed(dsn):
    async def scenario() -> tuple:
        connection = await asyncpg.connect(dsn)
        try:
            [held] = await Queries(AsyncpgDriver(connection)).enqueue("t13_always_fails", None)
            [deleted] = await Queries(AsyncpgDriver(connection)).enqueue("t13_fails_deleted", None)
        finally:
            await connection.close()
        runs = []

        def register(worker: QueueManager) -> None:
            @worker.entrypoint(
                "t13_always_fails",
                on_failure="hold",
                executor_factory=lambda p: DatabaseRetryEntrypointExecutor(p, max_attempts=1, initial_delay=timedelta(seconds=0.05)),
            )
            async def always_fails(job: Job) -> None:
                runs.append(job.attempts)
                raise OSError("nope")

            @worker.entrypoint("t13_fails_deleted")  # the default on_failure, "delete" (lesson 13, section 4.4)
            async def fails_once(job: Job) -> None:
                raise OSError("gone")

        async def failed() -> bool:
            return await scalar(dsn, "SELECT status::text FROM pgqueuer WHERE id = $1", held) == "failed" and not await scalar(
                dsn, "SELECT count(*) FROM pgqueuer WHERE id = $1", deleted
            )

        await run_worker_until(dsn, register, failed, timedelta(seconds=5))
        logged = await scalar(dsn, "SELECT string_agg(status::text, ',' ORDER BY id) FROM pgqueuer_log WHERE job_id = $1", deleted)
        return runs, await scalar(dsn, "SELECT attempts FROM pgqueuer WHERE id = $1", held), logged.split(",")[-1]

    # hold: the job stays as failed; the default deletes it, its exception logged in pgqueuer_log
    assert run(scenario()) == ([0, 1], 1, "exception")


def test_a_picked_job_with_a_stale_heartbeat_is_taken_again(dsn):
    async def scenario() -> list:
        connection = await asyncpg.connect(dsn)
        try:
            [abandoned] = await Queries(AsyncpgDriver(connection)).enqueue("t13_abandoned", b"x")
            # what a SIGKILLed worker leaves behind: picked, its heartbeat 3 s old
            await connection.execute(
                "UPDATE pgqueuer SET status = 'picked', heartbeat = now() - interval '3 seconds' WHERE id = $1", abandoned
            )
        finally:
            await connection.close()
        runs = []

        def register(worker: QueueManager) -> None:
            @worker.entrypoint("t13_abandoned")
            async def abandoned_job(job: Job) -> None:
                runs.append(job.id)

        async def ran() -> bool:
            return bool(runs)

        await run_worker_until(dsn, register, ran, timedelta(seconds=1))
        return runs == [abandoned]

    assert run(scenario())


# ---- coursekit.processes ----


async def _child_writes(path: str) -> None:
    print("hello from the child")
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    await asyncio.sleep(30)


def test_start_process_runs_the_target_in_a_child_and_kill_is_sigkill(tmp_path):
    marker = tmp_path / "pid"
    with start_process(_child_writes, str(marker)) as child:
        deadline = time.monotonic() + 10
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline and child.alive, child.output()
            time.sleep(0.02)
        assert int(marker.read_text()) == child.pid != os.getpid()
        assert child.kill() == -signal.SIGKILL
        assert "hello from the child" in child.output()
    assert not os.path.exists(child.log_path), "the child's log is deleted with the block"


def test_start_process_stops_the_child_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with start_process(time.sleep, 30) as child:
            raise RuntimeError("boom")
    assert child.exit_code == -signal.SIGTERM


def test_a_child_exits_without_running_the_parents_atexit_handlers(tmp_path):
    marker = tmp_path / "atexit-ran"
    import atexit

    def parent_only() -> None:
        marker.write_text("ran")

    atexit.register(parent_only)
    try:
        with start_process(lambda: None) as child:
            assert child.wait(10) == 0
        assert not marker.exists()
    finally:
        atexit.unregister(parent_only)


def test_serve_in_process_serves_the_app_until_killed():
    app = FastAPI()

    @app.get("/pid")
    def pid() -> int:
        return os.getpid()

    with serve_in_process(app) as server:
        served_by = httpx.get(f"{server.url}/pid", timeout=5).json()
        assert served_by == server.process.pid != os.getpid()
        assert server.kill() == -signal.SIGKILL
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.url}/pid", timeout=1)


def test_uvicorn_finishes_a_running_background_task_on_sigterm(tmp_path):
    """Lesson 13, section 2: on SIGTERM uvicorn's graceful shutdown waits for a background task still
    running (without limit unless timeout_graceful_shutdown is set); only SIGKILL loses it."""
    marker = tmp_path / "sent"
    app = FastAPI()

    def send_later() -> None:
        time.sleep(0.5)
        marker.write_text("sent")

    @app.post("/signup", status_code=201)
    def signup(tasks: BackgroundTasks) -> None:
        tasks.add_task(send_later)

    with serve_in_process(app) as server:
        assert httpx.post(f"{server.url}/signup", timeout=5).status_code == 201
        assert not marker.exists()  # the task is still sleeping
        server.process.signal(signal.SIGTERM)
        assert server.process.wait(10) is not None, "uvicorn did not exit within 10 s of SIGTERM"
    assert marker.read_text() == "sent", "SIGTERM: uvicorn exited without waiting for the running background task"


def test_serve_in_process_lets_a_request_in_flight_finish_when_it_stops(tmp_path):
    """The block's end wakes the child's uvicorn at once (coursekit.server._PromptServer, woken by the SIGTERM):
    what it waits for is unchanged, a response being sent is still sent whole, then the lifespan ends."""
    import threading
    from contextlib import asynccontextmanager

    events = tmp_path / "events"

    @asynccontextmanager
    async def lifespan(app):
        yield
        with events.open("a") as log:
            log.write("shutdown\n")

    app = FastAPI(lifespan=lifespan)

    @app.get("/slow")
    async def slow() -> str:
        with events.open("a") as log:
            log.write("started\n")
        await asyncio.sleep(0.3)
        with events.open("a") as log:
            log.write("answered\n")
        return "done"

    answers: list[httpx.Response] = []
    with serve_in_process(app) as server:
        client = threading.Thread(target=lambda: answers.append(httpx.get(f"{server.url}/slow", timeout=30)))
        client.start()
        deadline = time.monotonic() + 30
        while not (events.exists() and "started" in events.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "started" in events.read_text(), "the request never reached the app"
    client.join(30)
    assert [(r.status_code, r.json()) for r in answers] == [(200, "done")]
    assert events.read_text().split() == ["started", "answered", "shutdown"]
    assert server.process.exit_code == -signal.SIGTERM  # it stopped by itself, not by the SIGKILL after 3 s


def test_loop_cpu_seconds_counts_the_servers_work_not_idle_time():
    app = FastAPI()

    @app.get("/spin")
    async def spin() -> None:  # on the event loop's thread: 0.2 s of CPU
        started = time.thread_time()
        while time.thread_time() - started < 0.2:
            pass

    with serve_in_process(app) as server:
        before = server.loop_cpu_seconds()
        time.sleep(0.3)  # idle: the loop waits in epoll
        idle = server.loop_cpu_seconds() - before
        httpx.get(f"{server.url}/spin", timeout=30)
        busy = server.loop_cpu_seconds() - before - idle
        assert idle < 0.05, idle
        assert 0.2 <= busy < 0.4, busy
        server.kill()
        with pytest.raises(RuntimeError, match="has exited"):
            server.loop_cpu_seconds()


def _running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_a_child_exits_when_its_parent_dies_without_stopping_it():
    """A kernel killed mid-block (restarted, a timeout) runs no finally: its workers must not live on."""
    parent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, signal, time
            from coursekit.processes import start_process
            with start_process(time.sleep, 60) as child:
                print(child.pid, flush=True)
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGKILL)  # the parent dies: no finally, no atexit
        """)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    orphan = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 5
    while _running(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(orphan), f"child {orphan} outlived its killed parent"
