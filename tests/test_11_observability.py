"""The FastAPI/OpenTelemetry/prometheus_client behaviours lesson 11 and its exercise rely on.

An upgrade that changes one of them fails here by name, not only as an nbval diff.
"""

import io
import json
import logging

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from opentelemetry import propagate, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def providers():
    spans, reader, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    config = {"tracer_provider": tracer_provider, "meter_provider": MeterProvider(metric_readers=[reader]),
              "logger_provider": logger_provider}
    return config, spans, reader, logs


def orders_app(**telemetry) -> FastAPI:
    app = FastAPI(telemetry=telemetry)

    @app.get("/orders/{order_id}")
    async def read(order_id: int, tasks: BackgroundTasks) -> dict[str, int]:
        tasks.add_task(lambda: None)
        return {"id": order_id}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404)

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError("secret in the message")

    @app.get("/recording")
    async def recording() -> dict[str, bool]:
        return {"recording": trace.get_current_span().is_recording()}

    return app


async def get(app: FastAPI, *paths: str) -> list[int]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [(await client.get(path)).status_code for path in paths]


@pytest.mark.anyio
async def test_without_an_sdk_provider_nothing_is_recorded():
    transport = httpx.ASGITransport(app=orders_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/recording")).json() == {"recording": False}


@pytest.mark.anyio
async def test_span_names_attributes_and_operation_spans():
    config, spans, _, _ = providers()
    assert await get(orders_app(**config), "/orders/42?token=t&sig=s") == [200]
    names = [s.name for s in sorted(spans.get_finished_spans(), key=lambda s: s.start_time)]
    assert names == ["GET /orders/{order_id}", "fastapi.dependencies", "fastapi.endpoint",
                     "fastapi.serialization", "fastapi.background_task"]
    server = next(s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER)
    assert server.attributes["http.route"] == "/orders/{order_id}"
    assert server.attributes["url.path"] == "/orders/42"  # the raw path is kept
    assert server.attributes["url.query"] == "token=t&sig=REDACTED"  # only a few names are redacted


@pytest.mark.anyio
async def test_errors_set_status_not_events_and_go_to_logs():
    config, spans, _, logs = providers()
    assert await get(orders_app(**config), "/boom", "/missing", "/nowhere") == [500, 404, 404]
    by_path = {s.attributes["url.path"]: s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER}
    assert by_path["/boom"].status.status_code is trace.StatusCode.ERROR and not by_path["/boom"].events
    assert by_path["/boom"].attributes["error.type"] == "ZeroDivisionError"
    assert by_path["/missing"].status.status_code is trace.StatusCode.UNSET
    assert by_path["/nowhere"].name == "GET" and "http.route" not in by_path["/nowhere"].attributes
    (record,) = [r.log_record for r in logs.get_finished_logs()]
    assert record.event_name == "http.server.request.exception"
    assert record.attributes["exception.message"] == "secret in the message"


@pytest.mark.anyio
async def test_metric_names_units_and_buckets():
    config, _, reader, _ = providers()
    await get(orders_app(**config), "/orders/1")
    metrics = {m.name: m for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics}
    assert metrics["http.server.request.duration"].unit == "s"
    assert metrics["http.server.active_requests"].unit == "{request}"
    point = metrics["http.server.request.duration"].data.data_points[0]
    assert point.explicit_bounds[:3] == (0.005, 0.01, 0.025) and point.attributes["http.route"] == "/orders/{order_id}"


@pytest.mark.anyio
async def test_switches():
    config, spans, reader, _ = providers()
    await get(orders_app(**config, exclude=lambda scope: scope["path"] == "/missing"), "/missing")
    assert spans.get_finished_spans() == () and reader.get_metrics_data() is None
    await get(orders_app(**config, operation_spans=False), "/orders/1")
    assert [s.name for s in spans.get_finished_spans()] == ["GET /orders/{order_id}"]
    spans.clear()
    await get(orders_app(**config, tracing=False), "/orders/1")
    assert spans.get_finished_spans() == ()


@pytest.mark.anyio
async def test_traceparent_is_extracted_and_flags_are_03():
    config, spans, _, _ = providers()
    tracer = config["tracer_provider"].get_tracer("test")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("client") as client_span:
        propagate.inject(headers)
    assert headers["traceparent"].startswith("00-") and headers["traceparent"].endswith("-03")
    transport = httpx.ASGITransport(app=orders_app(**config))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/orders/1", headers=headers)
    server = next(s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER)
    assert server.context.trace_id == client_span.get_span_context().trace_id
    assert server.parent.span_id == client_span.get_span_context().span_id and server.parent.is_remote
    assert propagate.inject({}) is None  # outside a span: inject adds nothing
    empty: dict[str, str] = {}
    propagate.inject(empty)
    assert empty == {}


def test_global_provider_is_set_once(tmp_path):
    import subprocess
    import sys

    code = ("from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
            "a, b = TracerProvider(), TracerProvider()\ntrace.set_tracer_provider(a)\n"
            "trace.set_tracer_provider(b)\nprint(trace.get_tracer_provider() is a)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.stdout.strip() == "True" and "Overriding of current TracerProvider is not allowed" in done.stderr


def test_prometheus_text_parses_back():
    registry = CollectorRegistry()
    histogram = Histogram("d_seconds", "d", ["route"], buckets=(0.1, 1.0), registry=registry)
    histogram.labels("/a/{id}").observe(0.5)
    families = {f.name: f.samples for f in text_string_to_metric_families(generate_latest(registry).decode())}
    buckets = {s.labels["le"]: s.value for s in families["d_seconds"] if s.name == "d_seconds_bucket"}
    assert buckets == {"0.1": 0.0, "1.0": 1.0, "+Inf": 1.0}


def test_logging_filter_sees_the_current_span():
    tracer_provider = TracerProvider()
    seen: list[bool] = []

    class Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(trace.get_current_span().get_span_context().is_valid)
            return True

    logger = logging.getLogger("test_11")
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(Filter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    with tracer_provider.get_tracer("t").start_as_current_span("s"):
        logger.warning("inside")
    logger.warning("outside")
    assert seen == [True, False]
    assert json.dumps(None) == "null"


@pytest.mark.anyio
async def test_known_methods_are_read_when_the_app_is_created(monkeypatch):
    config, spans, _, _ = providers()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "POST")
    app = orders_app(**config)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS")
    await get(app, "/orders/1")
    server = next(s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER)
    assert server.name == "HTTP /orders/{order_id}"
    assert server.attributes["http.request.method"] == "_OTHER"
    assert server.attributes["http.request.method_original"] == "GET"


def test_middleware_stack_has_the_exception_layer():
    app = orders_app()
    stack = app.build_middleware_stack()
    assert type(stack).__name__ == "ServerErrorMiddleware"
    assert type(stack.app).__name__ == "ExceptionTelemetryMiddleware"


def test_auto_configure_failure_is_a_warning_and_the_app_starts(tmp_path):
    import subprocess
    import sys

    code = (
        "import asyncio, logging\n"
        "from asgi_lifespan import LifespanManager\n"
        "from fastapi import FastAPI\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "async def main():\n"
        "    async with LifespanManager(FastAPI()):\n"
        "        print('started')\n"
        "asyncio.run(main())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "FASTAPI_OTEL_AUTO_CONFIGURE": "true", "OTEL_TRACES_EXPORTER": "zipkin",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.stdout.strip() == "started", done.stderr
    assert "FastAPI automatic telemetry configuration failed" in done.stderr
    assert "OTEL_TRACES_EXPORTER=otlp or none" in done.stderr


@pytest.mark.anyio
async def test_only_five_query_names_are_redacted():
    config, spans, _, _ = providers()
    redacted = ["sig", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature"]
    await get(orders_app(**config), "/orders/1?" + "&".join(f"{n}=x" for n in redacted + ["token", "password"]))
    server = next(s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER)
    assert server.attributes["url.query"] == "&".join(f"{n}=REDACTED" for n in redacted) + "&token=x&password=x"


def test_uvicorn_closes_the_connection_after_an_unhandled_exception():
    """ServerErrorMiddleware sends the 500 then re-raises (also with an Exception handler); uvicorn,
    the response already sent, closes the keep-alive connection without `Connection: close`: a pooled
    client's next request on it can race the close (httpx.ReadError). A handled HTTPException keeps it open."""
    import socket

    from fastapi.responses import JSONResponse

    from coursekit import run_server

    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.exception_handler(Exception)
    async def handled(request, exc):
        return JSONResponse({"detail": "internal"}, status_code=500)

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404)

    def exchange(path: str) -> tuple[bytes, bool]:
        with socket.create_connection((server.host, server.port), timeout=1) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            raw = b""
            try:
                while chunk := sock.recv(65536):
                    raw += chunk
            except TimeoutError:
                return raw, False
            return raw, True

    with run_server(app, log_level="critical") as server:
        crashed, crashed_closed = exchange("/boom")
        missing_raw, missing_closed = exchange("/missing")
    assert crashed.startswith(b"HTTP/1.1 500 ") and b"connection:" not in crashed.lower()
    assert crashed.endswith(b'{"detail":"internal"}') and crashed_closed
    assert missing_raw.startswith(b"HTTP/1.1 404 ") and not missing_closed


@pytest.mark.anyio
async def test_contrib_middleware_in_the_stack_turns_native_telemetry_off():
    """FastAPI looks for opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware in the built stack
    (fastapi/telemetry/_asgi.py, _legacy_otel); the contrib package is not pinned: a stand-in of that
    module and name is enough to trigger the switch."""

    class OpenTelemetryMiddleware:
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            await self.app(scope, receive, send)

    OpenTelemetryMiddleware.__module__ = "opentelemetry.instrumentation.asgi"
    config, spans, _, _ = providers()
    with_contrib = orders_app(**config)
    with_contrib.add_middleware(OpenTelemetryMiddleware)
    await get(with_contrib, "/orders/1")
    assert spans.get_finished_spans() == ()
    await get(orders_app(**config), "/orders/1")
    assert any(s.kind is trace.SpanKind.SERVER for s in spans.get_finished_spans())


def test_auto_configure_variable_is_read_when_the_app_is_created(monkeypatch):
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    created_with = FastAPI()
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE")
    assert created_with._telemetry["auto_configure"] is True  # private: the behaviour needs a process of its own
    assert FastAPI()._telemetry["auto_configure"] is False
