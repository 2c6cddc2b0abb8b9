"""In-process HTTP client for an ASGI app."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager


@asynccontextmanager
async def app_client(
    app: Any,
    *,
    base_url: str = "http://test",
    raise_app_exceptions: bool = True,
    **client_kwargs: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx.AsyncClient that calls `app` in this process, lifespan included.

    httpx's ASGITransport sends no lifespan events, so startup/shutdown code in a
    `lifespan` would silently never run: asgi-lifespan's LifespanManager runs it.
    With raise_app_exceptions=True (httpx's default) an exception in the app reaches
    the caller as that exception; pass False to see the 500 a real client would get.
    """
    # asgi-lifespan's default gives startup and shutdown 5 s: a lifespan that opens a database pool can take
    # longer on a loaded machine (CI: 4 workers on 2 cores). The bound only stops a lifespan that hangs.
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, **client_kwargs) as client:
            yield client
