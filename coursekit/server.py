"""A real uvicorn server inside a notebook or a test.

In-process clients (httpx.ASGITransport) hide some truths: they buffer a whole
streamed body, wait for background tasks before returning, and cannot disconnect
mid-stream. A real server on 127.0.0.1 shows what a real client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
_uvicorn_log = logging.getLogger("uvicorn.error")  # where uvicorn's own server messages go


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
    """uvicorn's Server without its fixed waits on the way out (uvicorn 0.54): its main loop looks at
    `should_exit` every 0.1 s, and its shutdown sleeps 0.1 s after asking the connections to close, then polls
    them, and the tasks, every 0.1 s. Up to 0.3 s per stop: lessons and checks start a server per cell or per
    check, hundreds in the suite. Here `stop()` wakes the main loop at once and the shutdown polls every 5 ms;
    what it waits for is unchanged (connections closed, tasks done, at most timeout_graceful_shutdown, then
    the lifespan's shutdown)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _stop_requested: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask the server to exit, from any thread."""
        self.should_exit = True
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed: nothing to wake
                loop.call_soon_threadsafe(stop_requested.set)

    async def main_loop(self) -> None:
        self._stop_requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):  # a tick every 0.1 s, as uvicorn's (the Date header)
                await asyncio.wait_for(self._stop_requested.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn.Server.shutdown, its fixed sleep(0.1) and 0.1 s polls replaced by the 5 ms polls below
        _uvicorn_log.info("Shutting down")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            _uvicorn_log.error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded", len(self.server_state.tasks)
            )
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _wait_tasks_to_complete(self) -> None:
        if self.server_state.connections and not self.force_exit:
            _uvicorn_log.info("Waiting for connections to close. (CTRL+C to force quit)")
        while self.server_state.connections and not self.force_exit:
            await asyncio.sleep(0.005)
        if self.server_state.tasks and not self.force_exit:
            _uvicorn_log.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
        while self.server_state.tasks and not self.force_exit:
            await asyncio.sleep(0.005)
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
