"""JSON log lines that carry the request id (and the trace ids when telemetry is on): lesson 11.

The request id lives in a ContextVar set by the pure ASGI middleware (lesson 05); every record
logged while a request runs (or a job that carries the id runs) gets it through a logging.Filter.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace = _trace_ids()
        return True


def _trace_ids() -> dict[str, str] | None:
    try:
        from opentelemetry import trace
    except ImportError:  # the API is optional: no telemetry, no trace ids
        return None
    context = trace.get_current_span().get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"} if context.is_valid else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if getattr(record, "trace", None):
            line["trace"] = record.trace
        line.update(getattr(record, "fields", {}))  # structured extras: log.info(..., extra={"fields": {...}})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO") -> None:
    """One JSON line per record on stderr, for the taskservice loggers (uvicorn's own access log is off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContext())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("taskservice")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
