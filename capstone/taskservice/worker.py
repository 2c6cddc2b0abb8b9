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


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Take jobs until SIGTERM/SIGINT, or until `stop` is set (a test running the worker in its own loop)."""
    server_settings = {"application_name": "taskservice-worker"}  # visible in pg_stat_activity
    connection = await asyncpg.connect(settings.asyncpg_dsn, server_settings=server_settings)
    try:
        async with asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=2, server_settings=server_settings) as pool:
            worker = QueueManager(Queries(AsyncpgDriver(connection)))
            register_jobs(worker, settings, pool)
            if stop is None:
                loop = asyncio.get_running_loop()
                for stop_signal in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(stop_signal, worker.shutdown.set)
            else:
                asyncio.ensure_future(stop.wait()).add_done_callback(lambda _: worker.shutdown.set())
            log.info("worker started")
            # dequeue_timeout: how often to look for work no NOTIFY announces (retries coming due, stalled jobs);
            # heartbeat_timeout: a killed worker's job is taken again after this long.
            await worker.run(dequeue_timeout=timedelta(seconds=1), heartbeat_timeout=timedelta(seconds=10))
            log.info("worker stopped")
    finally:
        await connection.close()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
