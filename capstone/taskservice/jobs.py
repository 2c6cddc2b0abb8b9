"""Durable jobs with pgqueuer (lesson 13): enqueued in the request's transaction, run by the worker.

The outbox rule: the job row is written on the session's own connection, inside its transaction, so
a signup that rolls back leaves no job, and a job never names a user that does not exist.
"""

import asyncio
import json
import logging
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, Queries, QueueManager
from pgqueuer.models import Job
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .mail import send_mail, welcome_message
from .settings import Settings
from .telemetry import request_id_var

log = logging.getLogger("taskservice.jobs")
WELCOME_MAIL = "send_welcome_mail"


async def queue_in(session: AsyncSession) -> Queries:
    """pgqueuer's queries on the session's own asyncpg connection, inside its transaction."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    if not raw.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN only with its first statement: a job enqueued before
        # that would commit on its own and survive a rollback (lesson 13, section 3.2).
        await connection.execute(text("SELECT 1"))
    return Queries(AsyncpgDriver(raw))


async def enqueue_welcome_mail(session: AsyncSession, user_id: int, email: str, request_id: str | None) -> int:
    payload = json.dumps({"user_id": user_id, "email": email, "request_id": request_id}).encode()
    [job_id] = await (await queue_in(session)).enqueue(WELCOME_MAIL, payload)
    return job_id


async def send_welcome_mail(connection: asyncpg.Connection, settings: Settings, payload: dict) -> bool:
    """The job: send the welcome mail at most once per user. True if this run sent it.

    The key `welcome:<user id>` is claimed in the transaction that sends: it commits only after the relay
    accepted the mail. A failed send rolls the claim back (the retry can send); a second run of a job that
    did send finds the key and sends nothing (lesson 13, section 4.5).
    """
    user_id = payload["user_id"]
    key = f"welcome:{user_id}"
    async with connection.transaction():
        email = await connection.fetchval("SELECT email FROM users WHERE id = $1", user_id)
        if email is None:
            return False  # the user is gone: nothing to send, and not a failure
        claimed = await connection.fetchval(
            "INSERT INTO sent_mail (idempotency_key) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", key)
        if not claimed:
            return False  # an earlier run sent it
        # smtplib blocks: in a thread, so the worker's heartbeats and other jobs keep running
        await asyncio.to_thread(send_mail, settings, welcome_message(settings, email, key))
    return True


def retry_policy(settings: Settings):
    """Retries live in the database (they survive a worker restart): waits of r, 2r, 4r, ... (r =
    JOB_RETRY_SECONDS), then the job is held as `failed`, listable and replayable (lesson 13, sections 4.3-4.4)."""

    def executor(parameters) -> DatabaseRetryEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(parameters, max_attempts=settings.job_max_retries,
                                               initial_delay=timedelta(seconds=settings.job_retry_seconds),
                                               backoff_multiplier=2)

    return executor


async def run_welcome_mail_job(connection: asyncpg.Connection, settings: Settings, payload: bytes | None,
                               job_id: int | None = None) -> bool:
    """One run of the job, logged with the request id of the signup that queued it (lesson 11)."""
    fields = json.loads(payload or b"{}")
    token = request_id_var.set(fields.get("request_id"))  # every line of this run carries the signup's id
    described = {"job_id": job_id, "user_id": fields.get("user_id"), "entrypoint": WELCOME_MAIL}
    try:
        sent = await send_welcome_mail(connection, settings, fields)
    except Exception as exc:
        log.warning("welcome mail failed: %s: %s", type(exc).__name__, exc, extra={"fields": described})
        raise  # the retry executor schedules the next attempt
    else:
        log.info("welcome mail %s", "sent" if sent else "not sent: already sent, or no such user",
                 extra={"fields": {**described, "sent": sent}})
        return sent
    finally:
        request_id_var.reset(token)


def register_jobs(worker: QueueManager, settings: Settings, pool: asyncpg.Pool) -> None:
    @worker.entrypoint(WELCOME_MAIL, executor_factory=retry_policy(settings), on_failure="hold")
    async def welcome_mail(job: Job) -> None:
        async with pool.acquire() as connection:
            await run_welcome_mail_job(connection, settings, job.payload, job.id)
