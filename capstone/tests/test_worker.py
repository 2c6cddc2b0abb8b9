"""The worker as deployed, in-process: `run_worker` (pgqueuer's QueueManager, its own connections) takes the
job a real signup committed; the SMTP server is down first (the failure logged with the signup's request
id, the job retried by the queue), then up: exactly one mail (lesson 13).

The worker's own connections see only committed rows, so this test commits through an app with no
overrides, and deletes what it wrote at the end (the other tests roll theirs back).
"""

import asyncio
import contextlib
import logging
import socket

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskservice.main import create_app
from taskservice.settings import Settings
from taskservice.worker import run_worker

from .conftest import PASSWORD
from .test_mail_job import LoopbackController, Mailbox

pytestmark = pytest.mark.anyio
EMAIL = "worker-test@example.com"


class ControllerOnSocket(LoopbackController):
    """aiosmtpd listening on a socket the test bound long before: while it was bound and not listening,
    connections to it were refused (the relay down), and no other xdist worker could take its port."""

    def __init__(self, handler, sock: socket.socket) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0)
        self.sock = sock

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.sock)


async def until(condition, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_worker_retries_while_smtp_is_down_then_sends_once(settings: Settings):
    relay = socket.socket()
    relay.bind(("127.0.0.1", 0))  # bound, not listening yet: the relay is down (connections refused)
    port = relay.getsockname()[1]
    worker_settings = Settings.model_validate({**settings.model_dump(), "smtp_port": port, "smtp_timeout_seconds": 1.0,
                                               "job_retry_seconds": 0.2, "job_max_retries": 5})
    lines: list[logging.LogRecord] = []
    recorder = logging.Handler()
    recorder.emit = lines.append
    jobs_log = logging.getLogger("taskservice.jobs")
    level = jobs_log.level
    jobs_log.addHandler(recorder)
    jobs_log.setLevel(logging.INFO)
    admin = await asyncpg.connect(worker_settings.asyncpg_dsn)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(worker_settings, stop))
    mailbox, controller = Mailbox(), None
    try:
        app = create_app(worker_settings)
        async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            signup = await client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD},
                                       headers={"X-Request-ID": "signup-worker"})
        assert signup.status_code == 201, signup.text

        async def failed_once() -> bool:
            return any(line.levelname == "WARNING" for line in lines) or worker.done()

        # 60 s: a bound on the wait only (it ends at the first failure); 10 s was a deadline a loaded CI machine could miss
        assert await until(failed_once, 60) and not worker.done(), f"no failure logged with the relay down: {lines}"
        failure = next(line for line in lines if line.levelname == "WARNING")
        assert failure.request_id == "signup-worker" and "failed" in failure.getMessage()

        controller = ControllerOnSocket(mailbox, relay)
        controller.start()  # the relay is back, on the same port

        async def delivered() -> bool:
            return bool(mailbox.received) or worker.done()

        assert await until(delivered, 60), f"no mail within 60 s of the relay's return: {[l.getMessage() for l in lines]}"
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        [mail] = mailbox.received
        assert (mail["To"], mail["X-Idempotency-Key"]) == (EMAIL, f"welcome:{signup.json()['id']}")
        sent = [line for line in lines if line.levelname == "INFO" and line.fields.get("sent")]
        assert [line.request_id for line in sent] == ["signup-worker"]
        left = await admin.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = 'send_welcome_mail'")
        assert left == 0, "a sent job leaves the queue"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 10)
        if controller is not None:
            controller.stop()
        relay.close()
        jobs_log.removeHandler(recorder)
        jobs_log.setLevel(level)
        user_id = await admin.fetchval("SELECT id FROM users WHERE email = $1", EMAIL)
        await admin.execute("DELETE FROM sent_mail WHERE idempotency_key = $1", f"welcome:{user_id}")
        await admin.execute("DELETE FROM users WHERE email = $1", EMAIL)
        await admin.execute("DELETE FROM pgqueuer WHERE entrypoint = 'send_welcome_mail'")
        await admin.close()
