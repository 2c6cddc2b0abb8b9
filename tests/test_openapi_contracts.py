"""Every lesson's solution app keeps its OpenAPI promise: schemathesis through a real uvicorn.

Each app is the one its solution notebook builds (`solution_namespace`: the notebook's own cells,
nothing copied), served by `coursekit.run_server` on 127.0.0.1, authenticated where it needs it.
Schemathesis reads the app's /openapi.json as a generated client would, and runs its phases
(explicit examples, coverage of boundaries, fuzzing, stateful sequences) with a fixed seed and a
bounded number of examples per operation. Every check it has runs; the run must find nothing:
no 5xx, no response outside its documented schema, no undocumented status code, no schema-valid
request refused, ... except what is listed below with its reason: CHECKS_OFF (a framework
behaviour), ACCEPTED (one check on one operation) and each Target's `excluded` operations (what a
lesson breaks on purpose). The per-app figures (operations, generated cases, CPU) are printed.

Adding an app is one entry in APPS: `"13": lambda ns, stack: Target(...)`. The capstone service
(capstone/taskservice) is not here: lesson 14 (section 4.1) runs schemathesis with every check against
it as deployed (uvicorn --workers 2) and asserts the same (no finding but the four it accepts, with reasons).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, field_validator

from coursekit import run_server
from tests.conftest import solution_namespace, start_embedded_postgres

SEED = 19

# Checks off for every app, with the reason.
CHECKS_OFF = {
    # Starlette's Router answers 405 with the methods of the FIRST route whose path matches
    # (starlette/routing.py, Router.app keeps the first Match.PARTIAL), not of every route on that
    # path: OPTIONS /members/1 says `Allow: GET` though DELETE and PATCH exist. Framework
    # behaviour, shown and asserted in lesson 01; the course's apps do not work around it.
    "allow_header_conformance": "Starlette lists only the first matching route's methods in Allow (lesson 01)",
}

# Failures accepted for one operation of one app: (lesson, "METHOD /path", check) -> reason.
ACCEPTED: dict[tuple[str, str, str], str] = {
    # Pydantic's lax mode (FastAPI's default) turns `true` into 1 and a number into a date-time
    # (seconds since 1970): the schema (integer, date-time string) is stricter than validation.
    # Strict mode is no fix: it refuses 4.0, a JSON Schema integer, and FastAPI validates the
    # parsed body in Python mode, where a strict date-time refuses every string.
    ("04", "POST /loans", "negative_data_rejection"): "lax mode: `true` accepted as an id",
    ("08", "POST /books/{isbn}/holds", "negative_data_rejection"): "lax mode: a number accepted as a date-time",
    # An opaque cursor is a string to the schema; only the server knows which strings it issued.
    # A made-up one is a documented 400 ("not a queue cursor"), which the check counts as refusing valid data.
    ("12", "GET /queue", "positive_data_acceptance"): "an opaque cursor: any string is schema-valid, only issued ones work",
}


@dataclass
class Target:
    """One served app: what schemathesis needs besides its schema."""

    app: Any
    headers: dict[str, str] = field(default_factory=dict)
    max_examples: int = 10
    excluded: dict[str, str] = field(default_factory=dict)  # "METHOD /path" -> reason


@dataclass
class Outcome:
    operations: int
    cases: int
    cases_by_operation: Counter
    failures: list[str]
    accepted: Counter  # ACCEPTED keys seen, with how often
    broken: set[tuple[str, str]]  # (check, operation) of every failure


def run_schemathesis(lesson: str, target: Target) -> Outcome:
    import schemathesis
    from schemathesis.engine import Status, events, from_schema

    with run_server(target.app, log_level="error") as server:
        config = schemathesis.Config.from_dict({
            "seed": SEED,
            "headers": target.headers,
            # database "none": no .hypothesis/ example store in the working directory, and no
            # replay of an earlier run's failures: the same cases on every machine
            "generation": {"max-examples": target.max_examples, "database": "none"},
            # Sequences (create, then read, change, delete what was created) cost the most requests:
            # fewer and shorter scenarios keep the module within its CPU budget.
            "phases": {"stateful": {"generation": {"max-examples": max(2, target.max_examples // 2)}, "max-steps": 4}},
            "checks": {name: {"enabled": False} for name in CHECKS_OFF},
            "cache": {"enabled": False},  # else it writes .schemathesis/ into the working directory
        })
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
        for label in target.excluded:
            method, path = label.split(" ", 1)
            schema = schema.exclude(method=method, path=path)
        operations = sum(1 for result in schema.get_all_operations() if result.ok())
        cases: Counter = Counter()
        accepted: Counter = Counter()
        failures: list[str] = []
        broken: set[tuple[str, str]] = set()
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                recorder = event.recorder
                cases[recorder.label] += len(recorder.interactions)
                for case_id, checks in recorder.checks.items():
                    for check in checks:
                        if check.status != Status.FAILURE:
                            continue
                        operation = recorder.cases[case_id].value.operation.label
                        if (lesson, operation, check.name) in ACCEPTED:
                            accepted[(lesson, operation, check.name)] += 1
                            continue
                        sent = recorder.interactions.get(case_id)
                        request = f"{sent.request.method} {sent.request.uri}" if sent else "?"
                        status = sent.response.status_code if sent and sent.response else None
                        title = str(check.failure_info.failure).splitlines()[0] if check.failure_info else ""
                        if sent and sent.request.body and check.name.endswith(("data_rejection", "data_acceptance")):
                            title += f" body {sent.request.body[:120]!r}"
                        broken.add((check.name, operation))
                        failures.append(f"[{event.phase}] {operation}: {check.name}: {title} ({request} -> {status})")
            elif isinstance(event, (events.NonFatalError, events.FatalError)):
                failures.append(f"schemathesis error: {getattr(event, 'label', '')}: {getattr(event, 'info', event)}")
        if server.errors:
            failures.extend(f"the app raised {type(exc).__name__}: {exc}" for exc in server.errors[:5])
    return Outcome(operations, sum(cases.values()), cases, failures, accepted, broken)


# ---- the apps: each built from its solution's own definitions; `stack` stops what it started ----


def sqlite_file(stack: ExitStack, name: str) -> str:
    """A path for a SQLite file in a temporary folder removed at the end."""
    return f"{stack.enter_context(tempfile.TemporaryDirectory(prefix='contracts-'))}/{name}"


def create_tables(metadata, sync_url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(sync_url)
    metadata.create_all(engine)
    engine.dispose()


def app_01(ns, stack):
    parts = [ns[name] for name in ("add_signup", "add_read", "add_delete", "add_update", "add_export")]
    return Target(ns["build_app"](*parts, seed=ns["SEED"]), max_examples=5)  # argon2 per sign-up: few examples


def app_02(ns, stack):
    settings = ns["Settings"](signing_key=secrets.token_urlsafe(64))
    librarian = ns["issue_token"](settings, ns["PATRONS"]["grace"])  # may call every route
    return Target(ns["build_app"](settings), headers={"Authorization": f"Bearer {librarian}"}, max_examples=10)


def app_03(ns, stack):
    from sqlalchemy.ext.asyncio import create_async_engine

    path = sqlite_file(stack, "bookings.db")
    create_tables(ns["Base"].metadata, f"sqlite:///{path}")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    return Target(ns["build_app"](ns["make_session_factory"](engine)), max_examples=10)


def app_04(ns, stack):
    engine = stack.enter_context(ns["temporary_engine"]())
    # The receipt goes to a relay that refuses at once (port 9, discard): the background task
    # logs its failure, the response is already sent; this test is about the responses.
    settings = ns["LibrarySettings"](relay_port=9, relay_timeout=1)
    return Target(ns["create_app"](settings, engine), max_examples=10)


def app_05(ns, stack):
    card = next(iter(ns["CARDS"]))
    return Target(ns["build_app"](full=True), headers={"X-Library-Card": card}, max_examples=10, excluded={
        "GET /fines/total": "the lesson's planted bug (1 / 0): the 500 that shows the request id",
        "GET /loans/export/broken": "fails mid-stream on purpose: what a started response can no longer say",
    })


def app_06(ns, stack):
    return Target(ns["build_app"](ns["add_history"], ns["add_live"]), max_examples=10, excluded={
        "GET /sensors/{sensor_id}/live": "an endless live feed by design: a client reads it until it leaves",
    })


def app_08(ns, stack):
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    app, books = FastAPI(), ns["seed_books"]()
    url, folder = ns["new_library_db"]("9780141439518", 3)
    stack.callback(folder.cleanup)
    engine = create_async_engine(url)
    stack.callback(lambda: asyncio.run(engine.dispose()))
    ns["add_catalogue"](app, books)
    ns["add_member_patch"](app, ns["seed_members"]())
    ns["add_checkout"](app, async_sessionmaker(engine, expire_on_commit=False))
    ns["add_loans"](app, books)
    ns["add_renewals"](app, books)
    ns["add_holds"](app, books)
    # add_frontend_access is left out: its ReadOnlyGate answers every write 503 (the lesson's re-indexing).
    return Target(app, max_examples=10, excluded={
        "POST /books/{isbn}/scan": "the lesson's planted bug (scanner offline): a 500 that must reach the logs",
    })


def app_09(ns, stack):
    path = sqlite_file(stack, "library.db")
    create_tables(ns["Base"].metadata, f"sqlite:///{path}")
    app = ns["build_app"](f"sqlite+aiosqlite:///{path}")
    settings = ns["Settings"](api_token=secrets.token_urlsafe(16))
    app.dependency_overrides[ns["get_settings"]] = lambda: settings
    return Target(app, headers={"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}, max_examples=10)


def app_10(ns, stack):
    ring = ns["new_ring"]()
    portal = ns["build_portal"](ring, ns["RefreshStore"]())
    served = stack.enter_context(run_server(portal, log_level="error"))
    lab = ns["build_lab"](ns["LabSettings"](jwks_url=f"{served.url}/.well-known/jwks.json"))
    patient = next(iter(ns["PASSWORDS"]))
    return [
        Target(portal, max_examples=5),  # argon2 per login: few examples
        Target(lab, headers={"Authorization": f"Bearer {ns['sign_access'](ring, patient)}"}, max_examples=10),
    ]


def app_11(ns, stack):
    telemetry = ns["new_telemetry"]("parcels")
    depots = stack.enter_context(run_server(ns["build_depots"](telemetry), log_level="error"))
    return Target(ns["build_app"](telemetry, depots_url=depots.url), max_examples=10, excluded={
        "GET /crash": "the lesson's planted bug (ZeroDivisionError): the error span and the 500 it teaches",
        "GET /parcels/{parcel_id}/proof": "fails mid-stream on purpose: the span of a stream that broke",
    })


def app_07(ns, stack):
    from sqlalchemy.ext.asyncio import create_async_engine

    async def tables() -> None:
        engine = create_async_engine(ns["db"].url)
        async with engine.begin() as conn:
            await conn.run_sync(ns["Base"].metadata.drop_all)
            await conn.run_sync(ns["Base"].metadata.create_all)
            await conn.execute(ns["Appointment"].__table__.insert(), [{"patient": "Ada", "slot": "Mon 09:00"}])
        await engine.dispose()

    asyncio.run(tables())
    return Target(ns["build_app"](ns["make_web_engine"](ns["db"].url, 40)), max_examples=10)


def app_12(ns, stack):
    from datetime import datetime, timezone

    models = ns["models"]()

    async def tables() -> None:
        async with ns["engine"].begin() as conn:
            await conn.run_sync(models.metadata.drop_all)
            await conn.run_sync(models.metadata.create_all)
        async with ns["Session"]() as session:
            customer = models.Customer(name="Ada", api_key=secrets.token_hex(8))
            session.add(models.Ticket(subject="printer on fire", opened_at=datetime.now(timezone.utc), customer=customer))
            await session.commit()

    asyncio.run(tables())
    return Target(ns["build_app"](), max_examples=10)


def app_13(ns, stack):
    asyncio.run(ns["setup_schema"]())  # the shop's tables and pgqueuer's schema, as the notebook's cell does
    # Orders are taken (and their receipt jobs queued); no worker runs: the contract is the web app's.
    return Target(ns["build_app"](ns["Settings"](database_url=ns["DSN"])), max_examples=10)


# Lessons whose app needs PostgreSQL: a throw-away embedded server is handed to the solution's cells as `db`.
ON_POSTGRES = {"07", "12", "13"}
# The solution's cells run up to the one that defines this name: after it come clean-up cells that
# stop `db` (07, 12) or cells that grade the learner's tests (09), which the app does not need.
UNTIL = {"07": "build_app", "09": "build_app", "12": "queue_position", "13": "build_app"}

APPS: dict[str, Callable[[dict, ExitStack], Target | list[Target]]] = {
    "00": lambda ns, stack: Target(ns["build_app"]()),
    "01": app_01,
    "02": app_02,
    "03": app_03,
    "04": app_04,
    "05": app_05,
    "06": app_06,
    "08": app_08,
    "09": app_09,
    "10": app_10,
    "11": app_11,
    "12": app_12,
    "07": app_07,
    "13": app_13,
}


@pytest.mark.parametrize("lesson", sorted(APPS))
def test_solution_app_keeps_its_openapi_promise(lesson, capsys):
    failures = []
    with ExitStack() as stack:
        preset = None
        if lesson in ON_POSTGRES:
            preset = {"db": start_embedded_postgres(lesson)}
            stack.callback(preset["db"].stop)
        ns = solution_namespace(lesson, preset=preset, until=UNTIL.get(lesson))
        built = APPS[lesson](ns, stack)
        for target in built if isinstance(built, list) else [built]:
            cpu_before = time.process_time()  # this process: schemathesis and the served app (its thread)
            outcome = run_schemathesis(lesson, target)
            with capsys.disabled():
                print(f"\nlesson {lesson} ({target.app.title}): {outcome.operations} operations,"
                      f" {outcome.cases} generated cases, {time.process_time() - cpu_before:.1f} s CPU"
                      + "".join(f"\n  accepted x{n}: {op} {check} ({ACCEPTED[(lesson, op, check)]})"
                                for (_, op, check), n in sorted(outcome.accepted.items())))
            assert outcome.operations > 0 and outcome.cases >= outcome.operations
            failures += outcome.failures
    assert not failures, f"lesson {lesson}'s app breaks its OpenAPI contract:\n" + "\n".join(sorted(set(failures))[:60])


class NullRefusingChanges(BaseModel):
    title: str | None = None  # documents null...

    @field_validator("title")
    @classmethod
    def not_null(cls, value):  # ...and refuses it
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


def broken_app() -> FastAPI:
    """An app that breaks three promises once each."""
    app = FastAPI()
    titles = {1: "one"}

    @app.get("/items/{item_id}")
    def read(item_id: int) -> dict[str, str]:
        if item_id not in titles:
            raise HTTPException(404, "no such item")  # undocumented
        return {"title": titles[item_id]}

    @app.get("/count")
    def count() -> int:
        return "three"  # a 500: the return annotation refuses it

    @app.patch("/items/{item_id}")
    def change(item_id: int, changes: NullRefusingChanges) -> dict[str, str]:
        return {"title": changes.title or titles.get(item_id, "")}

    return app


def test_the_run_reports_each_kind_of_broken_promise():
    """The harness itself: each broken promise of `broken_app` must be reported."""
    outcome = run_schemathesis("harness", Target(broken_app(), max_examples=5))
    assert {("status_code_conformance", "GET /items/{item_id}"), ("not_a_server_error", "GET /count"),
            ("positive_data_acceptance", "PATCH /items/{item_id}")} <= outcome.broken, outcome.failures
    assert any("ResponseValidationError" in failure for failure in outcome.failures)  # the app's exception, named
    # imported as installed, not re-compiled by pytest's assertion rewriting (coursekit/pytest_startup.py: ~3.5 s of CPU)
    from _pytest.assertion.rewrite import AssertionRewritingHook

    rewritten = [name for name in ("schemathesis.specs.openapi.schemas", "hypothesis.core")
                 if isinstance(sys.modules[name].__loader__, AssertionRewritingHook)]
    assert not rewritten, f"pytest rewrote {rewritten}: coursekit.pytest_startup no longer unmarks blocked plugins"
