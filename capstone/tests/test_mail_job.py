"""The welcome-mail job against a real SMTP server (aiosmtpd on 127.0.0.1): exactly one mail per user,
with its idempotency key; a failed send keeps no key, so the retry sends (lesson 13). The job runs
in-process on the test's connection (inside its rolled-back transaction: asyncpg makes the job's
transaction a SAVEPOINT)."""

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as email_policy

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text

from taskservice.jobs import run_welcome_mail_job

from .conftest import PASSWORD

pytestmark = pytest.mark.anyio


class Mailbox:
    def __init__(self) -> None:
        self.received: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(message_from_bytes(envelope.original_content or envelope.content, policy=email_policy))
        return "250 Message accepted for delivery"


class LoopbackController(Controller):
    """aiosmtpd on a free port of 127.0.0.1 (port=0), the port read back once it listens.

    ready_timeout: aiosmtpd's default (5 s) for its thread to start and answer a probe is a deadline a
    loaded CI machine can miss ("SMTP server failed to start within allotted time").
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, ready_timeout=60, **kwargs)

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = LoopbackController(mailbox, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections for the block: bound, never listening, and kept bound (a port released
    at once could be taken by another xdist worker's server before the job connects to it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


async def queued_job(connection, email: str) -> bytes:
    rows = (await connection.execute(text("SELECT payload FROM pgqueuer WHERE entrypoint = 'send_welcome_mail'"))).all()
    [payload] = [row.payload for row in rows if json.loads(row.payload)["email"] == email]
    return payload


async def raw(connection):
    return (await connection.get_raw_connection()).driver_connection


@pytest.fixture
def job_lines():
    logger, lines = logging.getLogger("taskservice.jobs"), []
    handler = logging.Handler()
    handler.emit = lines.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def signed_up(client, connection, email: str, request_id: str) -> bytes:
    response = await client.post("/auth/signup", json={"email": email, "password": PASSWORD}, headers={"X-Request-ID": request_id})
    assert response.status_code == 201, response.text
    return await queued_job(connection, email)


async def test_the_job_sends_exactly_one_mail_per_user(client, connection, settings, job_lines):
    payload = await signed_up(client, connection, "ann@example.com", "signup-ann")
    user_id = json.loads(payload)["user_id"]
    with smtp_server() as (mailbox, port):
        smtp = settings.model_copy(update={"smtp_port": port})
        runs = [await run_welcome_mail_job(await raw(connection), smtp, payload, job_id=7) for _ in range(3)]
    assert runs == [True, False, False], "the first run sends; a re-run (a retry after a crash) finds the key"
    [mail] = mailbox.received
    assert (mail["To"], mail["X-Idempotency-Key"]) == ("ann@example.com", f"welcome:{user_id}")
    claimed = text("SELECT count(*) FROM sent_mail WHERE idempotency_key = :key")
    assert (await connection.execute(claimed, {"key": f"welcome:{user_id}"})).scalar_one() == 1, "the key stays claimed"
    assert [(line.request_id, line.fields["sent"]) for line in job_lines] == [("signup-ann", True), ("signup-ann", False), ("signup-ann", False)], \
        "every line of the job carries the request id of the signup that queued it"


async def test_smtp_down_keeps_no_key_and_the_retry_sends(client, connection, settings, job_lines):
    payload = await signed_up(client, connection, "bob@example.com", "signup-bob")
    with closed_port() as port, pytest.raises(OSError):
        down = settings.model_copy(update={"smtp_port": port, "smtp_timeout_seconds": 2.0})
        await run_welcome_mail_job(await raw(connection), down, payload)
    user_id = json.loads(payload)["user_id"]
    claimed = text("SELECT count(*) FROM sent_mail WHERE idempotency_key = :key")
    assert (await connection.execute(claimed, {"key": f"welcome:{user_id}"})).scalar_one() == 0, \
        "a failed send must roll its idempotency key back, or the retry would never send"
    [failure] = job_lines
    assert failure.levelname == "WARNING" and failure.request_id == "signup-bob" and "failed" in failure.getMessage()
    with smtp_server() as (mailbox, port):
        assert await run_welcome_mail_job(await raw(connection), settings.model_copy(update={"smtp_port": port}), payload)
    assert [mail["To"] for mail in mailbox.received] == ["bob@example.com"]


async def test_a_job_for_a_user_that_no_longer_exists_sends_nothing(connection, settings):
    payload = json.dumps({"user_id": 2**31 - 1, "email": "gone@example.com", "request_id": None}).encode()
    with smtp_server() as (mailbox, port):
        sent = await run_welcome_mail_job(await raw(connection), settings.model_copy(update={"smtp_port": port}), payload)
    assert (sent, mailbox.received) == (False, [])
