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


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads alive now that were not before. Not a count: a thread an earlier test on this xdist worker
    left ending (a server's handler finishing its reply) would change the process's count mid-test."""
    return set(threading.enumerate()) - before


def test_run_server_serves_on_loopback_and_stops_cleanly():
    threads_before = set(threading.enumerate())
    events: list[str] = []
    with run_server(make_app(events)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/greet").json() == {"greeting": "hi"}
        assert _port_open(server.port)
    assert events == ["startup", "shutdown"]
    assert not _port_open(server.port), "the port is still open after the block"
    assert new_threads(threads_before) == set(), "the server thread leaked"


def test_run_server_stops_when_the_body_raises():
    threads_before = set(threading.enumerate())
    with pytest.raises(ZeroDivisionError):
        with run_server(make_app()) as server:
            1 / 0
    assert not _port_open(server.port)
    assert new_threads(threads_before) == set()


def test_run_server_records_app_errors_behind_a_500():
    with run_server(make_app()) as server:
        assert httpx.get(f"{server.url}/boom").status_code == 500
    assert len(server.errors) == 1 and isinstance(server.errors[0], NotImplementedError)
    assert server.errors[0] in RECENT_APP_ERRORS


@pytest.mark.anyio
async def test_an_app_error_is_recorded_before_the_client_sees_its_500():
    # a check classifies its outcome right after the response: the record must already be there
    with run_server(make_app(), log_level="critical") as server:
        recorded_in_time = []
        for _ in range(30):
            async with httpx.AsyncClient(base_url=server.url) as client:
                before = len(server.errors)
                assert (await client.get("/boom")).status_code == 500
                recorded_in_time.append(len(server.errors) == before + 1)
    assert all(recorded_in_time), f"recorded only after the 500 had arrived in {recorded_in_time.count(False)} of 30"


def test_run_server_reports_a_failing_startup():
    @asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    threads_before = set(threading.enumerate())
    with pytest.raises(ServerStartError, match="did not start"):
        with run_server(FastAPI(lifespan=broken), startup_timeout=5):
            pass
    assert new_threads(threads_before) == set()


def test_run_server_connections_have_tcp_nodelay():
    """Keep-alive responses must not wait ~40 ms for Nagle + delayed ACK.

    asyncio sets TCP_NODELAY on accepted connections only when the listening socket's proto is
    IPPROTO_TCP (socket.socket(AF_INET, SOCK_STREAM) has proto 0). uvicorn writes headers and body
    separately, so without it every request after the first on a connection stalled: lessons that
    time requests through run_server would have measured the TCP stack, not the server.
    """
    import asyncio
    import gc

    with run_server(make_app()) as server:
        with socket.create_connection((server.host, server.port), timeout=5) as conn:
            conn.sendall(b"GET /greet HTTP/1.1\r\nHost: test\r\n\r\n")
            assert b"200 OK" in conn.recv(4096)
            client_end = conn.getsockname()
            accepted = [
                obj.get_extra_info("socket")
                for obj in gc.get_objects()
                if isinstance(obj, asyncio.Transport) and obj.get_extra_info("peername") == client_end
            ]
            assert len(accepted) == 1, "the server's end of the connection was not found"
            assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def _app_with_a_held_route(arrived: threading.Event, hold_s: float | None) -> tuple[FastAPI, list[str]]:
    """/held answers after hold_s seconds (None: never); `arrived` is set when a request reaches it."""
    import asyncio

    events: list[str] = []
    app = make_app(events)

    @app.get("/held")
    async def held() -> dict:
        arrived.set()
        if hold_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(hold_s)
        events.append("answered")
        return {"held": hold_s}

    return app, events


def _get_in_a_thread(url: str) -> tuple[threading.Thread, list]:
    outcome: list = []

    def get() -> None:
        try:
            outcome.append(httpx.get(url, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=get)
    thread.start()
    return thread, outcome


def test_run_server_stop_lets_an_open_response_finish_then_cuts_one_past_shutdown_timeout():
    """run_server's quick stop keeps uvicorn's graceful shutdown: a response in progress is finished, one still
    running after `shutdown_timeout` is cancelled, and the lifespan's shutdown runs either way."""
    arrived = threading.Event()
    app, events = _app_with_a_held_route(arrived, hold_s=0.3)
    with run_server(app, log_level="critical") as server:
        client, outcome = _get_in_a_thread(f"{server.url}/held")
        assert arrived.wait(30), "the request never reached the app"
    client.join(30)
    assert isinstance(outcome[0], httpx.Response) and outcome[0].json() == {"held": 0.3}, outcome
    assert events == ["startup", "answered", "shutdown"]  # sent whole, then the lifespan ends

    arrived = threading.Event()
    app, events = _app_with_a_held_route(arrived, hold_s=None)
    with run_server(app, log_level="critical", shutdown_timeout=0.2) as server:
        client, outcome = _get_in_a_thread(f"{server.url}/held")
        assert arrived.wait(30), "the request never reached the app"
    client.join(30)
    assert not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200), outcome
    assert events == ["startup", "shutdown"]
    assert not _port_open(server.port)
