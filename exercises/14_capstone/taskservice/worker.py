"""`python -m taskservice.worker`: the pgqueuer worker process (lesson 13, section 3.3).

Its own connections: one for the queue (dequeue, LISTEN, heartbeats) and a pool of two for the jobs;
together JOB_WORKER_CONNECTIONS in the settings' connection arithmetic. SIGTERM finishes the running
jobs and stops.
"""

import asyncio
import logging
import signal
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager

from .jobs import register_jobs
from .settings import Settings
from .telemetry import configure_logging

log = logging.getLogger("taskservice.worker")


async def run_worker(settings: Settings, stop: asyncio.Event, *, signals: bool = False) -> None:
    """One connected run of the queue: returns once `stop` is set, after the running jobs finish.
    With `signals=True` (the process's main loop), SIGTERM and SIGINT set it; a test sets it itself."""
    server_settings = {"application_name": "taskservice-worker"}  # visible in pg_stat_activity
    connection = await asyncpg.connect(settings.asyncpg_dsn, server_settings=server_settings)
    try:
        async with asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=2, server_settings=server_settings) as pool:
            worker = QueueManager(Queries(AsyncpgDriver(connection)))
            register_jobs(worker, settings, pool)
            if signals:
                loop = asyncio.get_running_loop()
                for stop_signal in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(stop_signal, stop.set)
            stopped = asyncio.ensure_future(stop.wait())
            stopped.add_done_callback(lambda _: worker.shutdown.set())
            log.info("worker started")
            # dequeue_timeout: how often to look for work no NOTIFY announces (retries coming due, stalled jobs);
            # heartbeat_timeout: a killed worker's job is taken again after this long.
            try:
                await worker.run(dequeue_timeout=timedelta(seconds=1), heartbeat_timeout=timedelta(seconds=10))
            finally:
                stopped.cancel()  # a failed run leaves no waiter behind for the next one
            log.info("worker stopped")
    finally:
        await connection.close()


RECONNECT_SECONDS = 1.0


async def serve(settings: Settings) -> None:
    """run_worker until SIGTERM, started again when it fails (a database restart closes its connections; what
    pgqueuer raises then varies with the moment: InterfaceError, CannotConnectNowError, an error of one of its
    own tasks). Without this the process exits on the first restart and no mail is sent again until someone
    restarts it. Each failure is logged with its traceback."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        try:
            await run_worker(settings, stopping, signals=True)
            if stopping.is_set():
                return  # SIGTERM or SIGINT: run_worker finished its jobs and stopped
            log.error("worker stopped without a signal; starting again in %s s", RECONNECT_SECONDS)
        except Exception as exc:
            log.exception("worker failed: %s: %s; starting again in %s s", type(exc).__name__, exc, RECONNECT_SECONDS)
        for stop_signal in (signal.SIGTERM, signal.SIGINT):  # a signal while waiting stops the worker too
            loop.add_signal_handler(stop_signal, stopping.set)
        try:
            await asyncio.wait_for(stopping.wait(), RECONNECT_SECONDS)
            return
        except TimeoutError:
            pass


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
