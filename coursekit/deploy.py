"""The capstone service run as it is deployed: real processes, a real SMTP server.

    with mail_server() as smtp:                               # aiosmtpd on 127.0.0.1:<free port>
        with deploy_service(db.url, smtp=smtp) as service:    # migrations, job worker, uvicorn --workers 2
            httpx.post(f"{service.url}/auth/signup", json=...)
            smtp.wait_for(1)                                  # the welcome mail, sent by the job worker
            service.log_lines()                               # the JSON log lines of every process

`deploy_service` runs what capstone/README.md tells an operator to run, each as its own process:
`alembic -c capstone/alembic.ini upgrade head` (to completion), `python -m taskservice.worker`, and
`uvicorn --factory taskservice.main:create_app --workers N` on a free port of 127.0.0.1, with
`PYTHONPATH=capstone` and the settings in `TASKSERVICE_*` variables (a fresh Ed25519 key each time:
no secret is written down anywhere). The block starts once `/health/ready` answers 200.

Every process is stopped on leaving the block, also when it raises: SIGTERM (uvicorn shuts down
gracefully and stops its workers), SIGKILL to the process's whole group after a timeout. A kernel
that dies without leaving the block cannot do that: these are exec'd programs, not forks, so they
cannot watch their parent as `coursekit.processes`' children do. A small guardian process does it
for them: it holds the read end of a pipe only this process writes to, and when the pipe reaches
end-of-file (its writer is gone, however it died) it stops every process group it was given. Each
service process runs in its own session (its own process group), so uvicorn's worker processes
are stopped with their master. POSIX only.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as email_policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAPSTONE = ROOT / "capstone"


class DeployError(RuntimeError):
    """A service process that would not start: the message says which, with the end of its log."""


# --------------------------------------------------------------------------------------------
# The SMTP server (lesson 04's, as a helper)


@dataclass
class MailServer:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)  # (MAIL FROM, RCPT TOs), same order
    _controller: Any = field(default=None, repr=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.original_content or envelope.content, policy=email_policy)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int = 1, timeout: float = 15.0) -> list[EmailMessage]:
        """Wait until at least `count` messages have arrived; all of them. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} message(s) within {timeout} s, got {len(self.messages)}")
            time.sleep(0.02)
        return list(self.messages)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _start(self) -> None:
        from aiosmtpd.controller import Controller

        mail_server = self

        class LoopbackController(Controller):
            # With port=0 the OS picks a free port, but Controller.start() then probes port 0: read the
            # real one from the bound socket first (lesson 04, section 1).
            def _trigger_server(self) -> None:
                self.port = self.server.sockets[0].getsockname()[1]
                mail_server.port = self.port
                super()._trigger_server()

        controller = LoopbackController(self, hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller

    def _stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped for the block (connections refused), back on the same port after it."""
        self._stop()
        try:
            yield
        finally:
            self._start()


@contextmanager
def mail_server() -> Iterator[MailServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1:<free port> for the block; stopped on leaving it."""
    server = MailServer()
    server._start()
    try:
        yield server
    finally:
        server._stop()


# --------------------------------------------------------------------------------------------
# Processes that die with this one


_GUARDIAN = r"""
import os, select, shutil, signal, sys, time
# stdin: a pipe only the process that started us writes to. "+PGID" lines: process groups to stop
# if that process dies; "x": dismissed (it stopped them itself); end-of-file: it died.
# argv: that process's pid, and the folder of the logs to delete after the groups are stopped.
parent, logs, groups, buffer = int(sys.argv[1]), sys.argv[2], [], b""
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the notebook is not for us
while True:
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready:
        data = os.read(0, 4096)
        if not data:
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line == b"x":
                sys.exit(0)
            groups.append(int(line[1:]))
    elif os.getppid() != parent:  # re-parented: a backstop should the pipe have leaked into a fork
        break

def alive(group):
    try:
        os.killpg(group, 0)
        return True
    except OSError:
        return False

for group in groups:
    try:
        os.killpg(group, signal.SIGTERM)  # graceful first: uvicorn stops its own workers
    except OSError:
        pass
deadline = time.monotonic() + 5
while any(map(alive, groups)) and time.monotonic() < deadline:
    time.sleep(0.05)
for group in filter(alive, groups):
    os.killpg(group, signal.SIGKILL)
shutil.rmtree(logs, ignore_errors=True)
"""


class _Guardian:
    """A process that stops the registered process groups (and deletes the logs) when this process dies."""

    def __init__(self, logs: Path) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _GUARDIAN, str(os.getpid()), str(logs)],
                stdin=read_end, start_new_session=True,  # its own session: a signal to our group spares it
            )
        finally:
            os.close(read_end)

    def register(self, pgid: int) -> None:
        os.write(self._write_end, f"+{pgid}\n".encode())

    def dismiss(self) -> None:
        """Everything was stopped here: the guardian leaves without touching any group."""
        try:
            os.write(self._write_end, b"x\n")
        except OSError:
            pass
        os.close(self._write_end)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a group we may not signal is not ours any more
        return False


@dataclass
class ServiceProcess:
    """One program of the deployment, in its own session; its output goes to `log_path`."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float) -> int | None:
        """SIGTERM to the program, then SIGKILL to its whole group after `timeout` seconds. Its exit code."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if _group_alive(self.pid):  # the program itself, or children it left (uvicorn's workers)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.wait()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# The deployment


def new_private_key_pem() -> str:
    """A fresh Ed25519 private key as PKCS#8 PEM, as `python -m taskservice.keys` prints one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another program may take it before ours binds: retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class DeployedService:
    """What `deploy_service` yields."""

    url: str
    port: int
    env: dict[str, str]  # the environment every process of the deployment was started with
    web: ServiceProcess
    worker: ServiceProcess | None
    migrations_output: str = ""

    @property
    def uvicorn_pid(self) -> int:
        return self.web.pid

    @property
    def worker_pid(self) -> int | None:
        return self.worker.pid if self.worker else None

    def web_worker_pids(self) -> list[int]:
        """The pids of uvicorn's worker processes (children of the master), for as long as they run."""
        import psutil

        try:
            children = psutil.Process(self.web.pid).children()
            # multiprocessing's resource tracker is a child too: the workers are the spawned ones
            return sorted(child.pid for child in children if "spawn_main" in " ".join(child.cmdline()))
        except psutil.Error:
            return []

    def output(self, process: str = "web") -> str:
        """The raw output (stdout and stderr) of "web" or "worker" so far."""
        source = self.web if process == "web" else self.worker
        return source.output() if source else ""

    def log_lines(self, process: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of uvicorn (master and workers) and the job worker so far, parsed.

        Lines that are not a JSON object (a traceback, uvicorn's own start-up banner) are left out:
        `output()` has everything. `process`: "web" or "worker" for one of them only.
        """
        names = [process] if process else ["web", "worker"]
        parsed = []
        for name in names:
            for line in self.output(name).splitlines():
                line = line.strip()
                if line.startswith("{"):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        parsed.append(record)
        return parsed

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the uvicorn master (a graceful shutdown, as an orchestrator does it); waits. Its exit code."""
        return self.web.stop(timeout)


def _service_env(database_url: str, smtp: MailServer | None, web_workers: int, env: Mapping[str, str] | None,
                 capstone: Path) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("TASKSERVICE_")}
    python_path = [str(capstone), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    base.update({
        "PYTHONPATH": os.pathsep.join(python_path),
        "PYTHONUNBUFFERED": "1",  # log lines reach the file as they are written
        "TASKSERVICE_DATABASE_URL": database_url,
        "TASKSERVICE_JWT_PRIVATE_KEY": new_private_key_pem(),
        "TASKSERVICE_WEB_WORKERS": str(web_workers),
    })
    if smtp is not None:
        base.update({"TASKSERVICE_SMTP_HOST": smtp.host, "TASKSERVICE_SMTP_PORT": str(smtp.port)})
    base.update(env or {})
    return base


@contextmanager
def deploy_service(
    database_url: str,
    *,
    smtp: MailServer | None = None,
    web_workers: int = 2,
    env: Mapping[str, str] | None = None,
    job_worker: bool = True,
    migrate: bool = True,
    startup_timeout: float = 60.0,
    graceful_timeout: int = 5,
    stop_timeout: float = 15.0,
    capstone: Path = CAPSTONE,
) -> Iterator[DeployedService]:
    """Migrate, start the job worker and `uvicorn --workers N`; yield once /health/ready is 200.

    `env` overrides or adds TASKSERVICE_* settings (e.g. {"TASKSERVICE_DB_POOL_SIZE": "1"}).
    `job_worker=False` / `migrate=False`: a second deployment on a database another one migrated and
    whose job worker it shares.
    `graceful_timeout` is uvicorn's --timeout-graceful-shutdown: how long a SIGTERM waits for open
    requests and streams before closing them. Raises DeployError (the failing step and the end of
    its log) when a step fails; nothing is left running then either.
    """
    if os.name != "posix":
        raise DeployError("deploy_service needs POSIX process groups (Linux, macOS): run the capstone there or in WSL")
    service_env = _service_env(database_url, smtp, web_workers, env, capstone)
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="course-deploy-")))
        guardian = _Guardian(logs)
        stack.callback(guardian.dismiss)  # runs last: after every process below has been stopped

        def spawn(name: str, command: list[str]) -> ServiceProcess:
            log_path = logs / f"{name}.log"
            with open(log_path, "ab") as log:
                popen = subprocess.Popen(command, cwd=ROOT, env=service_env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            guardian.register(popen.pid)  # its own session: pgid == pid
            started = ServiceProcess(name, popen, log_path)
            stack.callback(started.stop, stop_timeout)
            return started

        migrations_output = ""
        if migrate:
            migrations = spawn("migrations", [sys.executable, "-m", "alembic", "-c",
                                              str(capstone / "alembic.ini"), "upgrade", "head"])
            try:
                code = migrations.popen.wait(startup_timeout)
            except subprocess.TimeoutExpired:
                code = None
            migrations_output = migrations.output()
            if code != 0:
                raise DeployError(f"alembic upgrade head {'timed out' if code is None else f'exited with {code}'}:\n"
                                  f"{_tail(migrations_output)}")

        worker = spawn("worker", [sys.executable, "-m", "taskservice.worker"]) if job_worker else None

        for attempt in range(3):  # a port picked free may be taken before uvicorn binds it: pick again
            port = free_port()
            web = spawn(f"web-{attempt}", [
                sys.executable, "-m", "uvicorn", "--factory", "taskservice.main:create_app",
                "--workers", str(web_workers), "--host", "127.0.0.1", "--port", str(port),
                "--timeout-graceful-shutdown", str(int(graceful_timeout)),
                "--no-access-log",  # the app writes its own JSON access line (capstone/README.md)
            ])
            url = f"http://127.0.0.1:{port}"
            if _wait_until_ready(url, web, worker, web_workers, startup_timeout):
                break
        else:
            raise DeployError(f"uvicorn could not bind a free port in 3 attempts:\n{_tail(web.output())}")
        yield DeployedService(url=url, port=port, env=service_env, web=web, worker=worker,
                              migrations_output=migrations_output)


def _wait_until_ready(url: str, web: ServiceProcess, worker: ServiceProcess | None, web_workers: int,
                      timeout: float) -> bool:
    """True once every web worker has started and GET /health/ready is 200; False when the port was taken.

    One 200 proves one worker only: the others may still be in their lifespan, so uvicorn's own line
    "Application startup complete." is counted too, one per worker. DeployError when a process dies.
    """
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not web.alive:
                output = web.output()
                if "address already in use" in output.lower():
                    web.stop(1)
                    return False
                raise DeployError(f"uvicorn exited with {web.popen.returncode} before it was ready:\n{_tail(output)}")
            if worker is not None and not worker.alive:
                raise DeployError(f"the job worker exited with {worker.popen.returncode}:\n{_tail(worker.output())}")
            try:
                response = client.get(f"{url}/health/ready")
                started = web.output().count("Application startup complete.")
                if response.status_code == 200 and started >= web_workers:
                    return True
                last = f"{response.status_code} {response.text[:200]}, {started} of {web_workers} workers started"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise DeployError(f"/health/ready was not 200 within {timeout} s (last: {last}):\n{_tail(web.output())}")
            time.sleep(0.1)


def send_test_mail(smtp: MailServer, to: str = "ada@example.com") -> None:
    """One message to `smtp` with the standard library's client (a smoke test of the server)."""
    message = EmailMessage()
    message["From"] = "noreply@taskservice.example"
    message["To"] = to
    message["Subject"] = "smoke test"
    message.set_content("sent by coursekit.deploy")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
        client.send_message(message)


__all__ = ["DeployError", "DeployedService", "MailServer", "deploy_service", "free_port", "mail_server",
           "new_private_key_pem", "send_test_mail"]
