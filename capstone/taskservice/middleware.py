"""Pure ASGI middleware (lesson 05): request id, timing and the access log, around streams too.

Not BaseHTTPMiddleware: its `call_next` returns at the response's start (a streamed body would be
timed as 0 ms), and contextvars set below it do not reach it. Here the access line is written when
the last body message has gone out, with the status sent and the request id of the request.
"""

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .telemetry import request_id_var

access_log = logging.getLogger("taskservice.access")
error_log = logging.getLogger("taskservice.errors")
# Lesson 05: an inbound id is trusted only if it is short and plain (no log injection, no megabyte ids).
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            offered = value.decode("latin-1")
            return offered if VALID_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets pass untouched
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        token = request_id_var.set(request_id)
        began = time.perf_counter()  # (not `started`: that name is the response-started flag below)
        status = 500  # what the client gets if the app raises before it starts a response
        response_started = logged = False

        def log_access() -> None:
            nonlocal logged
            if not logged:
                logged = True
                route = scope.get("route")
                access_log.info("%s %s %s", scope["method"], scope["path"], status, extra={"fields": {
                    "method": scope["method"], "path": scope["path"], "route": getattr(route, "path", None),
                    "status": status, "duration_ms": round((time.perf_counter() - began) * 1000, 2)}})

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                log_access()  # the whole body is out: a stream is timed to its end

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette's ServerErrorMiddleware sits outside every added middleware: its 500 would carry no
            # X-Request-ID. Answer the 500 here (with the id), and log the error as JSON with the id.
            error_log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise  # the headers are out: nothing clean to send; the server closes the connection
            await send_with_id({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json")]})
            await send_with_id({"type": "http.response.body", "body": b'{"detail":"Internal Server Error"}'})
        finally:
            log_access()
            request_id_var.reset(token)
