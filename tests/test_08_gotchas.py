"""Lesson 08 (the common gotchas): the stack behaviours the lesson is built on.

The notebooks assert the same facts under nbval; these tests name them one by one, so that
an upgrade of FastAPI, Starlette, Pydantic or uvicorn that changes one says which gotcha
appeared, vanished or changed its symptom.
"""

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import FastAPIError, ResponseValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ValidationError

from coursekit import app_client, run_server

pytestmark = pytest.mark.anyio


def item_route_then_stats_route(item_path: str) -> FastAPI:
    """The item route declared first, the fixed /tasks/stats after it."""
    app = FastAPI()

    @app.get(item_path)
    def read_task(task_id: int) -> dict:
        return {"id": task_id}

    @app.get("/tasks/stats")
    def stats() -> dict:
        return {"total": 0}

    return app


async def test_path_parameter_declared_first_shadows_a_fixed_path():
    async with app_client(item_route_then_stats_route("/tasks/{task_id}")) as client:
        r = await client.get("/tasks/stats")
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "int_parsing" and r.json()["detail"][0]["loc"] == ["path", "task_id"]


async def test_an_int_path_convertor_lets_a_fixed_path_declared_later_match():
    async with app_client(item_route_then_stats_route("/tasks/{task_id:int}")) as client:
        assert (await client.get("/tasks/stats")).json() == {"total": 0}
        assert (await client.get("/tasks/7")).json() == {"id": 7}


async def test_optional_type_without_default_is_required():
    app = FastAPI()

    @app.get("/required")
    def required(tag: str | None) -> dict:
        return {"tag": tag}

    @app.get("/optional")
    def optional(tag: str | None = None) -> dict:
        return {"tag": tag}

    async with app_client(app) as client:
        missing, fine = await client.get("/required"), await client.get("/optional")
    assert missing.status_code == 422 and missing.json()["detail"][0]["type"] == "missing"
    assert fine.status_code == 200 and fine.json() == {"tag": None}


def test_model_dump_includes_defaults_and_exclude_unset_keeps_explicit_null():
    class Update(BaseModel):
        priority: int = 3
        note: str | None = None

    sent = Update.model_validate({"note": None})
    assert sent.model_dump() == {"priority": 3, "note": None}
    assert sent.model_dump(exclude_unset=True) == {"note": None}
    assert sent.model_fields_set == {"note"}


async def test_a_returned_instance_of_the_return_type_is_not_revalidated():
    class Task(BaseModel):
        title: str

    app = FastAPI()

    @app.get("/instance")
    def instance() -> Task:  # model_copy(update=...) does not validate: title None slips through
        return Task(title="kept").model_copy(update={"title": None})

    @app.get("/dict")
    def as_dict() -> Task:
        return {"title": None}  # type: ignore[return-value]

    async with app_client(app) as client:
        r = await client.get("/instance")
        assert r.status_code == 200 and r.json() == {"title": None}  # revalidate_instances="never"
        with pytest.raises(ResponseValidationError):
            await client.get("/dict")


async def test_read_modify_write_across_an_await_loses_updates():
    counter = {"n": 0}
    app = FastAPI()

    @app.post("/view")
    async def view() -> None:
        current = counter["n"]
        await asyncio.sleep(0)
        counter["n"] = current + 1

    async with app_client(app) as client:
        await asyncio.gather(*(client.post("/view") for _ in range(20)))
    assert counter["n"] < 20


async def test_dependency_is_cached_per_request_unless_use_cache_false():
    calls = itertools.count(1)

    def new_id() -> int:
        return next(calls)

    def via_sub(value: Annotated[int, Depends(new_id)]) -> int:
        return value

    app = FastAPI()

    @app.get("/cached")
    def cached(a: Annotated[int, Depends(new_id)], b: Annotated[int, Depends(via_sub)]) -> list[int]:
        return [a, b]

    @app.get("/fresh")
    def fresh(a: Annotated[int, Depends(new_id)], b: Annotated[int, Depends(new_id, use_cache=False)]) -> list[int]:
        return [a, b]

    async with app_client(app) as client:
        assert (await client.get("/cached")).json() == [1, 1]  # endpoint and sub-dependency share one call
        assert (await client.get("/cached")).json() == [2, 2]  # the cache is per request
        assert (await client.get("/fresh")).json() == [3, 4]

    router = APIRouter(dependencies=[Depends(new_id)])  # a router's dependencies share the same cache

    @router.get("/routed")
    def routed(a: Annotated[int, Depends(new_id)]) -> int:
        return a

    app.include_router(router)
    async with app_client(app) as client:
        assert (await client.get("/routed")).json() == 5
        assert next(calls) == 6  # new_id ran once for the router and the endpoint together


def _swallowing_app(reraise: bool) -> FastAPI:
    def unit_of_work():
        try:
            yield
        except Exception:
            if reraise:
                raise

    app = FastAPI()

    @app.get("/missing")
    def missing(uow: Annotated[None, Depends(unit_of_work)]) -> dict:
        raise HTTPException(404, detail="nope")

    return app


async def test_yield_dependency_swallowing_an_http_exception_turns_404_into_500():
    async with app_client(_swallowing_app(reraise=False), raise_app_exceptions=False) as client:
        r = await client.get("/missing")
    assert r.status_code == 500
    with pytest.raises(FastAPIError, match="dependency with yield") as caught:
        async with app_client(_swallowing_app(reraise=False)) as client:
            await client.get("/missing")
    assert caught.value.__context__ is None  # the original exception is not attached
    async with app_client(_swallowing_app(reraise=True)) as client:
        assert (await client.get("/missing")).status_code == 404


async def test_trailing_slash_redirects_with_307_and_httpx_does_not_follow():
    app = FastAPI()

    @app.post("/tasks/")
    def create() -> dict:
        return {"ok": True}

    async with app_client(app) as client:
        r = await client.post("/tasks", json={})
        followed = await client.post("/tasks", json={}, follow_redirects=True)
        proxied = await client.post("/tasks", headers={"host": "api.example.com", "x-forwarded-proto": "https"})
    assert r.status_code == 307 and r.content == b"" and r.headers["location"] == "http://test/tasks/"
    assert followed.status_code == 200 and followed.request.method == "POST"  # 307 keeps the method
    assert proxied.headers["location"] == "http://api.example.com/tasks/"  # no proxy headers in-process

    with run_server(app) as server:  # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 by default
        r = httpx.post(f"{server.url}/tasks", headers={"host": "api.example.com", "x-forwarded-proto": "https"})
    assert r.headers["location"] == "https://api.example.com/tasks/"

    strict = FastAPI(redirect_slashes=False)
    strict.post("/tasks/")(create)
    async with app_client(strict) as client:
        assert (await client.post("/tasks")).status_code == 404


async def test_middleware_added_last_is_outermost():
    challenge = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}  # RFC 9110 15.5.2: a 401 carries a challenge

    async def reject(scope, receive, send):
        await JSONResponse({"detail": "no"}, 401, headers=challenge)(scope, receive, send)

    class Gate:
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            await reject(scope, receive, send)

    origin = {"Origin": "https://app.example.com"}
    inner_cors = FastAPI()
    inner_cors.add_middleware(CORSMiddleware, allow_origins=[origin["Origin"]])
    inner_cors.add_middleware(Gate)
    outer_cors = FastAPI()
    outer_cors.add_middleware(Gate)
    outer_cors.add_middleware(CORSMiddleware, allow_origins=[origin["Origin"]], expose_headers=["WWW-Authenticate"])
    assert [m.cls for m in outer_cors.user_middleware] == [CORSMiddleware, Gate]  # [0] is outermost

    async with app_client(inner_cors) as client:
        r = await client.get("/", headers=origin)
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
    assert r.headers["www-authenticate"] == challenge["WWW-Authenticate"]
    async with app_client(outer_cors) as client:
        r = await client.get("/", headers=origin)
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin["Origin"]
    assert r.headers["www-authenticate"] == challenge["WWW-Authenticate"]  # CORS keeps the challenge...
    assert r.headers["access-control-expose-headers"] == "WWW-Authenticate"  # ...and lets scripts read it


async def test_cors_allows_only_get_by_default_and_always_content_type():
    app = FastAPI()
    app.add_middleware(CORSMiddleware, allow_origins=["https://app.example.com"])
    ask = {"Origin": "https://app.example.com", "Access-Control-Request-Headers": "content-type"}
    async with app_client(app) as client:
        get = await client.options("/", headers={**ask, "Access-Control-Request-Method": "GET"})
        patch = await client.options("/", headers={**ask, "Access-Control-Request-Method": "PATCH"})
        simple = await client.get("/", headers={"Origin": "https://app.example.com"})
    assert get.status_code == 200 and "Content-Type" in get.headers["access-control-allow-headers"]
    assert patch.status_code == 400 and patch.text == "Disallowed CORS method"
    assert "access-control-expose-headers" not in simple.headers  # nothing exposed unless listed


def test_a_router_prefix_with_slash_path_registers_a_trailing_slash():
    slash, bare = APIRouter(prefix="/loans"), APIRouter(prefix="/loans")
    slash.get("/")(lambda: None)
    bare.get("")(lambda: None)
    assert [r.path for r in slash.routes] == ["/loans/"] and [r.path for r in bare.routes] == ["/loans"]


def test_sqlite_ignores_for_update():
    from sqlalchemy import column, select, table
    from sqlalchemy.dialects import postgresql, sqlite

    query = select(table("shelf", column("on_shelf"))).with_for_update()
    assert "FOR UPDATE" not in str(query.compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE" in str(query.compile(dialect=postgresql.dialect()))


async def test_conditional_update_rowcount_tells_who_won(tmp_path):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'claims.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE claim (id INTEGER PRIMARY KEY, owner TEXT)"))
            await conn.execute(text("INSERT INTO claim (id, owner) VALUES (1, NULL)"))
        won = []
        for user in ("ada", "grace"):
            async with engine.begin() as conn:
                result = await conn.execute(
                    text("UPDATE claim SET owner = :u WHERE id = 1 AND owner IS NULL"), {"u": user}
                )
                won.append(result.rowcount)
        assert won == [1, 0]
    finally:
        await engine.dispose()


def test_naive_datetime_serialises_without_offset_and_aware_datetime_refuses_it():
    class Out(BaseModel):
        at: datetime

    class In(BaseModel):
        at: AwareDatetime

    assert Out(at=datetime(2026, 7, 1, 9, 0)).model_dump_json() == '{"at":"2026-07-01T09:00:00"}'
    assert Out(at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC)).model_dump_json() == '{"at":"2026-07-01T09:00:00Z"}'
    with pytest.raises(ValidationError, match="timezone_aware"):
        In(at="2026-07-01T09:00:00")


def test_mutable_default_in_a_pydantic_model_is_not_shared():
    class Filter(BaseModel):
        tags: list[str] = []

    first = Filter()
    first.tags.append("urgent")
    assert Filter().tags == []


async def test_mutable_default_of_a_query_parameter_is_not_shared():
    app = FastAPI()

    @app.get("/q")
    def q(tags: Annotated[list[str], Query()] = []) -> list[str]:  # noqa: B006 - the point of the test
        tags.append("seen")
        return tags

    async with app_client(app) as client:
        assert (await client.get("/q")).json() == ["seen"]
        assert (await client.get("/q")).json() == ["seen"]
