"""A real uvicorn server inside a notebook or a test.

In-process clients (httpx.ASGITransport) hide some truths: they buffer a whole
streamed body, wait for background tasks before returning, and cannot disconnect
mid-stream. A real server on 127.0.0.1 shows what a real client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

# Exceptions raised by apps served here, newest last (bounded). The check plugin reads
# it to tell a stub's "not done yet" behind a 500 from a real failure.
RECENT_APP_ERRORS: list[BaseException] = []
_MAX_RECENT = 50


@dataclass
class RunningServer:
    """What `run_server` yields: the base URL, and the exceptions the app raised."""

    url: str
    host: str
    port: int
    errors: list[BaseException] = field(default_factory=list)


class ServerStartError(RuntimeError):
    pass


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopping within milliseconds of being asked to.

    uvicorn 0.54 looks at `should_exit` once per 0.1 s tick, and its shutdown pauses a fixed 0.1 s after
    asking the connections to close, then polls them every 0.1 s: about 0.2 s per stop, every time, for
    servers that hold no connection at all (the suite starts and stops hundreds). Here `stop()` wakes the
    main loop at once and the shutdown polls every 10 ms; otherwise it is uvicorn's own: connections asked
    to close, open responses given `timeout_graceful_shutdown` seconds, then cancelled, then the lifespan's
    shutdown.
    """

    _POLL_S = 0.01
    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask the server to exit (from any thread): `should_exit`, and the main loop woken now."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed: the server is gone
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):  # a tick, as uvicorn's (date header, limits)
                await asyncio.wait_for(self._wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new connections
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):  # idle ones close now, busy ones after their response
            connection.shutdown()
        try:
            await asyncio.wait_for(self._drained(), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _drained(self) -> None:
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            await asyncio.sleep(self._POLL_S)
        for server in self.servers:
            await server.wait_closed()


def _recording(app: Any, errors: list[BaseException]) -> Any:
    """Wrap an ASGI app so exceptions it raises are recorded (then re-raised as usual)."""

    async def wrapper(scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "lifespan":
            await app(scope, receive, send)
            return
        held: list[dict] = []

        async def send_or_hold(message: dict) -> None:
            # A 500 waits until the app has finished, so the exception behind it is recorded
            # before the client can see the response (a check reads the record right after).
            if held or (message["type"] == "http.response.start" and message.get("status") == 500):
                held.append(message)
            else:
                await send(message)

        try:
            await app(scope, receive, send_or_hold)
        except BaseException as exc:  # recorded, never swallowed
            errors.append(exc)
            RECENT_APP_ERRORS.append(exc)
            del RECENT_APP_ERRORS[:-_MAX_RECENT]
            raise
        finally:
            for message in held:
                await send(message)

    return wrapper


@contextmanager
def run_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    log_level: str = "warning",
    startup_timeout: float = 60.0,
    shutdown_timeout: float = 5.0,
    **config_kwargs: Any,
) -> Iterator[RunningServer]:
    """Serve `app` with uvicorn in a background thread on a free port of 127.0.0.1.

        with run_server(app) as server:
            r = httpx.get(f"{server.url}/tasks")

    The server gets its own event loop in its own thread, as a separate server process
    would: a blocking call in the app stalls the server, not your notebook. On leaving
    the block (also when it raises) the server shuts down, its thread is joined and its
    port is closed. Open streams get `shutdown_timeout` seconds to finish.
    """
    # IPPROTO_TCP, not the default proto 0: asyncio sets TCP_NODELAY only on sockets whose
    # proto is IPPROTO_TCP. Without it, Nagle's algorithm and the client's delayed ACK add
    # ~40 ms to every keep-alive request after the first (headers and body are two writes).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))  # port 0: the OS picks a free port, no race with other servers
    port = sock.getsockname()[1]
    running = RunningServer(url=f"http://{host}:{port}", host=host, port=port)
    # The asyncio loop on every platform unless asked otherwise: uvicorn's default ("auto") takes
    # uvloop where it is installed (pgqueuer installs it on Linux, not on Windows), and lessons must
    # behave the same on every learner's machine.
    config_kwargs.setdefault("loop", "asyncio")
    config = uvicorn.Config(
        _recording(app, running.errors),
        log_level=log_level,
        timeout_graceful_shutdown=shutdown_timeout,
        **config_kwargs,
    )
    server = _PromptServer(config)
    crash: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            crash.append(exc)

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                cause = crash[0] if crash else None
                raise ServerStartError(
                    f"uvicorn did not start on {running.url} within {startup_timeout} s"
                    + (f": {type(cause).__name__}: {cause}" if cause else " (see the log above: lifespan startup may have failed)")
                ) from cause
            time.sleep(0.005)
        yield running
    finally:
        server.stop()
        thread.join(shutdown_timeout + 2)
        if thread.is_alive():  # a connection that would not close: stop without waiting
            server.force_exit = True
            thread.join(2)
        sock.close()
