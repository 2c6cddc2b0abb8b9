"""coursekit.app_client and coursekit.run_server."""

import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, Request

from coursekit import app_client, run_server
from coursekit.server import RECENT_APP_ERRORS, ServerStartError


def make_app(events: list[str] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        if events is not None:
            events.append("startup")
        yield {"greeting": "hi"}
        if events is not None:
            events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/greet")
    async def greet(request: Request) -> dict:
        return {"greeting": request.state.greeting}

    @app.get("/boom")
    async def boom() -> dict:
        raise NotImplementedError("not done yet: boom")

    return app


@pytest.mark.anyio
async def test_app_client_runs_the_lifespan():
    events: list[str] = []
    async with app_client(make_app(events)) as client:
        assert events == ["startup"]
        response = await client.get("/greet")
    assert response.json() == {"greeting": "hi"}
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_app_client_raises_app_exceptions_or_answers_500():
    async with app_client(make_app()) as client:
        with pytest.raises(NotImplementedError):
            await client.get("/boom")
    async with app_client(make_app(), raise_app_exceptions=False) as client:
        assert (await client.get("/boom")).status_code == 500


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_server_serves_on_loopback_and_stops_cleanly():
    threads_before = threading.active_count()
    events: list[str] = []
    with run_server(make_app(events)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/greet").json() == {"greeting": "hi"}
        assert _port_open(server.port)
    assert events == ["startup", "shutdown"]
    assert not _port_open(server.port), "the port is still open after the block"
    assert threading.active_count() == threads_before, "the server thread leaked"


def test_run_server_stops_when_the_body_raises():
    threads_before = threading.active_count()
    with pytest.raises(ZeroDivisionError):
        with run_server(make_app()) as server:
            1 / 0
    assert not _port_open(server.port)
    assert threading.active_count() == threads_before


def test_run_server_records_app_errors_behind_a_500():
    with run_server(make_app()) as server:
        assert httpx.get(f"{server.url}/boom").status_code == 500
    assert len(server.errors) == 1 and isinstance(server.errors[0], NotImplementedError)
    assert server.errors[0] in RECENT_APP_ERRORS


def test_run_server_reports_a_failing_startup():
    @asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    threads_before = threading.active_count()
    with pytest.raises(ServerStartError, match="did not start"):
        with run_server(FastAPI(lifespan=broken), startup_timeout=5):
            pass
    assert threading.active_count() == threads_before
