"""coursekit: the plumbing the course notebooks share.

Lessons import these so that their cells can show the FastAPI pattern itself:
- app_client: an in-process httpx client for an app, lifespan included
- run_server: a real uvicorn server on 127.0.0.1 inside a notebook
- setup_checks: ipytest configured for the exercise check cells
- new_sqlmodel_base: a SQLModel base with its own registry, so table cells re-run
- show_versions: the pinned versions a notebook runs on
- start_database: a PostgreSQL with no set-up (DATABASE_URL, else an embedded server, else SQLite)
- start_process / serve_in_process: a function or an app in a separate (forked) process you can kill -9
- hint: in an exercise, the next hint for the first check not passed

Names are imported on first use, so the `course` CLI starts without loading
FastAPI, SQLAlchemy or IPython.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "app_client": "coursekit.client",
    "run_server": "coursekit.server",
    "setup_checks": "coursekit.checks",
    "new_sqlmodel_base": "coursekit.models",
    "show_versions": "coursekit.versions",
    "start_database": "coursekit.postgres",
    "start_process": "coursekit.processes",
    "serve_in_process": "coursekit.processes",
    "hint": "coursekit.hints",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'coursekit' has no attribute {name!r}")
