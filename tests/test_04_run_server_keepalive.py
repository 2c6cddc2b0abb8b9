"""run_server answers keep-alive requests without the ~40 ms Nagle/delayed-ACK stall.

asyncio sets TCP_NODELAY on accepted connections only when the listening socket's proto is
IPPROTO_TCP; a socket made with socket.socket(AF_INET, SOCK_STREAM) has proto 0. uvicorn
writes a response's headers and body separately, so without TCP_NODELAY every request after
the first on a connection waited for the client's delayed ACK (40 ms on Linux). Lesson 04
measures response times through run_server: they must be the server's, not the TCP stack's.
"""

import socket
import statistics
import time

from fastapi import FastAPI

from coursekit import run_server


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_keep_alive_requests_are_not_delayed_by_nagle() -> None:
    with run_server(_app()) as server:
        with socket.create_connection((server.host, server.port), timeout=5) as conn:
            timings = []
            for _ in range(12):
                started = time.perf_counter()
                conn.sendall(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
                data = b""
                while not data.endswith(b'{"ok":true}'):
                    chunk = conn.recv(4096)
                    assert chunk, "the server closed the keep-alive connection"
                    data += chunk
                timings.append(time.perf_counter() - started)
    later = statistics.median(timings[1:])
    # With the stall every request after the first takes >= 40 ms; without it, about 1 ms.
    assert later < 0.025, f"median keep-alive request took {later * 1000:.0f} ms: TCP_NODELAY not set?"
