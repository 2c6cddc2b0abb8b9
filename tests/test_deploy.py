"""coursekit.deploy (the capstone run as deployed) and capstone/loadtest.py, on real processes.

One deployment (embedded PostgreSQL, the SMTP server, migrations, the job worker, uvicorn with 2
workers) serves the module's read-only tests; the tests about stopping start their own, since
they end it. CI must run them: there a missing PostgreSQL fails them; elsewhere they skip.
"""

import asyncio
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from coursekit.deploy import DeployError, deploy_service, mail_server, send_test_mail
from tests.conftest import ROOT, start_embedded_postgres

sys.path.insert(0, str(ROOT / "capstone"))
import loadtest  # noqa: E402  capstone/loadtest.py, a script beside the package

sys.path.remove(str(ROOT / "capstone"))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def wait_until(condition, timeout: float = 30.0) -> bool:  # a bound on the wait only: CI runs on a loaded machine
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def database():
    db = start_embedded_postgres("14")
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="module")
def smtp():
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def service(database, smtp):
    with deploy_service(database.url, smtp=smtp, web_workers=2) as deployed:
        yield deployed


def test_mail_server_keeps_messages_and_can_be_taken_down():
    with mail_server() as smtp:
        send_test_mail(smtp, to="ada@example.com")
        [message] = smtp.wait_for(1)
        assert message["To"] == "ada@example.com" and message["Subject"] == "smoke test"
        assert smtp.envelopes == [("noreply@taskservice.example", ["ada@example.com"])]
        port = smtp.port
        with smtp.down():
            assert refuses(port), "down(): the SMTP port refuses connections"
            with pytest.raises(OSError):
                send_test_mail(smtp)
        assert smtp.port == port, "back on the same port: the service's settings still point at it"
        send_test_mail(smtp, to="bob@example.com")
        assert [m["To"] for m in smtp.wait_for(2)] == ["ada@example.com", "bob@example.com"]
    assert refuses(port), "the server is stopped when the block ends"


def test_deployed_as_the_readme_says(service):
    assert service.url == f"http://127.0.0.1:{service.port}"
    assert httpx.get(f"{service.url}/health/ready", timeout=60).status_code == 200  # not httpx's 5 s: CI is loaded
    assert len(service.web_worker_pids()) == 2, "uvicorn --workers 2: two worker processes under the master"
    assert alive(service.worker_pid), "the job worker runs as its own process"
    assert service.env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT / "capstone")
    assert service.env["TASKSERVICE_JWT_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    assert not any(name.startswith("TASKSERVICE_") for name in os.environ), "the notebook's own environment is untouched"


def test_migrations_were_applied_first(service):
    import asyncpg

    async def tables() -> set[str]:
        connection = await asyncpg.connect(service.env["TASKSERVICE_DATABASE_URL"].replace("+asyncpg", ""))
        try:
            rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row["tablename"] for row in rows}
        finally:
            await connection.close()

    found = asyncio.run(tables())
    assert {"alembic_version", "users", "tasks", "sent_mail", "pgqueuer"} <= found, found


def test_a_signup_mail_arrives_through_the_job_worker_with_its_request_id(service, smtp):
    before = len(smtp.messages)
    response = httpx.post(f"{service.url}/auth/signup", json={"email": "deploy-test@example.com", "password": "a long passphrase"},
                          headers={"X-Request-ID": "deploy-test-signup-1"}, timeout=60)  # argon2 on a loaded machine: not 5 s
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "deploy-test-signup-1"
    arrived = smtp.wait_for(before + 1, timeout=30)
    assert [m["To"] for m in arrived[before:]] == ["deploy-test@example.com"]
    assert wait_until(lambda: any("deploy-test-signup-1" in json.dumps(line) for line in service.log_lines("worker"))), \
        "the worker logs the mail job with the request id of the signup that queued it"
    # waited for too: a web worker writes its access line after the response's last byte (test_14 once read it first)
    assert wait_until(lambda: any("deploy-test-signup-1" in json.dumps(line) for line in service.log_lines("web"))), \
        "the access log line carries the request id"


def test_loadtest_from_a_terminal_is_bounded_and_reports_every_operation(service, capsys):
    assert loadtest.main(["--url", service.url, "--requests", "20", "--users", "2"]) == 0, capsys.readouterr().out
    report = capsys.readouterr().out
    assert "then 20 requests in" in report and "0 failed" in report, report
    for operation in ("signup", "login", "create", "list", "get", "export", "mixed"):
        assert f"\n{operation} " in report, f"{operation} missing from the report:\n{report}"


def test_run_load_reuses_accounts_runs_logins_and_counts_failures(service):
    accounts = asyncio.run(loadtest.sign_up_users(service.url, 1))
    assert len(accounts.tokens) == 1 and accounts.setup.errors == 0, accounts.setup.failures
    result = asyncio.run(loadtest.run_load(service.url, seconds=None, requests=12, accounts=accounts, concurrency=3, logins=1))
    assert result.errors == 0, result.failures
    assert result.requests == 12, "the request bound counts the mixed loop only"
    assert len(result.latencies["signup"]) == 1, "no new signup: the accounts were given"
    assert len(result.latencies["login"]) > len(accounts.setup.latencies["login"]), "the login loop ran during the run"
    assert result.users == 3 and result.throughput > 0
    assert result.percentile(50) <= result.percentile(95) <= result.percentile(99) <= max(result.values())

    wrong = asyncio.run(loadtest.run_load(f"{service.url}/not-here", seconds=None, requests=4, users=1))
    assert wrong.failures == {"404": 1} and wrong.requests == 0, "a refused signup is counted by status, and the user stops"
    assert "the mixed load did not run" in wrong.report()


def test_percentile_interpolates_as_numpy_does():
    import numpy

    values = [0.3, 0.1, 0.9, 0.4, 0.2, 0.8, 0.5]
    for q in (0, 50, 95, 99, 100):
        assert loadtest.percentile(values, q) == pytest.approx(numpy.percentile(values, q))
    with pytest.raises(ValueError, match="bound the run"):
        asyncio.run(loadtest.run_load("http://127.0.0.1:9", seconds=None, requests=None))


@pytest.mark.usefixtures("service")  # it migrated the database: no second alembic run (~1 s of CPU) below
def test_everything_stops_when_the_block_raises_and_terminate_is_graceful(database):
    with pytest.raises(RuntimeError, match="the block failed"):
        with deploy_service(database.url, web_workers=2, migrate=False) as service:
            workers = service.web_worker_pids()
            pids = [service.uvicorn_pid, service.worker_pid, *workers]
            logs = service.web.log_path.parent
            assert service.terminate() == 0, "SIGTERM: uvicorn shuts down gracefully, exit code 0"
            assert not any(map(alive, [service.uvicorn_pid, *workers])) and refuses(service.port)
            assert alive(service.worker_pid), "terminate() stops the web server only"
            raise RuntimeError("the block failed")
    assert not any(map(alive, pids)), "the job worker is stopped too"
    assert not logs.exists(), "the captured logs are deleted"


def test_a_failing_step_is_one_clear_error_and_leaves_nothing(database):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(DeployError, match="alembic upgrade head exited with") as raised:
        with deploy_service("postgresql+asyncpg://nobody@127.0.0.1:9/none"):
            pass
    assert "Error" in str(raised.value), "the end of alembic's output says why"
    left = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before and alive(p.pid)]
    assert left == [], "no process of the failed deployment is left"


@pytest.mark.usefixtures("service")  # it migrated the database: no second alembic run below
def test_no_process_outlives_a_killed_kernel(database):
    # A "kernel" that deploys the service, then is SIGKILLed: no block is left, nothing runs its finally.
    kernel = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, time
        from coursekit.deploy import deploy_service
        with deploy_service({database.url!r}, web_workers=2, migrate=False) as service:
            print(json.dumps([str(service.web.log_path.parent), service.port, service.uvicorn_pid, service.worker_pid,
                              *service.web_worker_pids()]), flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        logs, port, *pids = json.loads(kernel.stdout.readline() or '["", 0]')
        assert len(pids) == 4, "the child deployed (master, job worker, 2 uvicorn workers)"
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
        assert wait_until(lambda: not any(map(alive, pids)), timeout=60), [p for p in pids if alive(p)]
        assert refuses(port)
        assert wait_until(lambda: not Path(logs).exists()), "the guardian deletes the captured logs too"
    finally:
        kernel.kill()
        kernel.wait()
