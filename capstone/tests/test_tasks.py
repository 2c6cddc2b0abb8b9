"""Tasks: CRUD and status codes (lesson 01), ownership as 404, PATCH omitted-not-null (lessons 01, 08),
keyset pages with an opaque cursor (lesson 12), bounded ids, the JSON Lines export (lesson 06)."""

import asyncio
import base64
import json
from datetime import datetime

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from taskservice.routes import tasks as task_routes

from .test_platform import app_with

pytestmark = pytest.mark.anyio


async def create(client, member, title: str, **fields) -> dict:
    response = await client.post("/tasks", json={"title": title, **fields}, headers=member.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_crud_with_the_right_status_codes(client, make_member):
    ann = await make_member("ann@example.com")
    response = await client.post("/tasks", json={"title": "write the capstone"}, headers=ann.headers)
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"/tasks/{task['id']}"
    assert set(task) == {"id", "title", "done", "created_at", "updated_at"} and task["done"] is False
    read = await client.get(f"/tasks/{task['id']}", headers=ann.headers)
    assert read.status_code == 200 and read.json() == task
    patched = await client.patch(f"/tasks/{task['id']}", json={"done": True}, headers=ann.headers)
    assert patched.status_code == 200 and patched.json()["done"] is True
    assert datetime.fromisoformat(patched.json()["updated_at"]) > datetime.fromisoformat(task["updated_at"])
    deleted = await client.delete(f"/tasks/{task['id']}", headers=ann.headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await client.get(f"/tasks/{task['id']}", headers=ann.headers)).status_code == 404
    assert (await client.delete(f"/tasks/{task['id']}", headers=ann.headers)).status_code == 404


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "x" * 201}, {}, {"title": None}, {"title": "ok", "done": "maybe"},
                                  {"title": "nul \u0000 inside"}])  # PostgreSQL cannot store a NUL: 422, not its 500
async def test_create_refuses_bad_bodies(client, make_member, body):
    ann = await make_member("ann@example.com")
    assert (await client.post("/tasks", json=body, headers=ann.headers)).status_code == 422


async def test_a_lone_surrogate_is_a_422_not_a_500(client, make_member):
    """JSON may escape a lone surrogate; no UTF-8 holds it. FastAPI's default 422 echoed it back and failed to encode."""
    ann = await make_member("ann@example.com")
    task = await create(client, ann, "fine")
    for method, url, headers, body in (("POST", "/tasks", ann.headers, b'{"title": "a\\ud800b"}'),
                                       ("PATCH", f"/tasks/{task['id']}", ann.headers, b'{"title": "a\\ud800b"}'),
                                       ("POST", "/auth/signup", {}, b'{"email": "a\\ud800@example.com", "password": "long enough"}')):
        response = await client.request(method, url, content=body, headers={**headers, "content-type": "application/json"})
        assert response.status_code == 422, (method, url, response.status_code)
        assert response.json()["detail"][0]["loc"][0] == "body"


async def test_another_users_task_is_404_not_403(client, make_member):
    ann, bob = await make_member("ann@example.com"), await make_member("bob@example.com")
    task = await create(client, ann, "ann's secret plan")
    for method, body in (("GET", None), ("PATCH", {"title": "bob was here"}), ("DELETE", None)):
        response = await client.request(method, f"/tasks/{task['id']}", json=body, headers=bob.headers)
        assert (response.status_code, response.json()) == (404, {"detail": "task not found"}), method
    assert (await client.get(f"/tasks/{task['id']}", headers=ann.headers)).json()["title"] == "ann's secret plan"
    assert (await client.get("/tasks", headers=bob.headers)).json() == {"items": [], "next_cursor": None}


async def test_patch_keeps_omitted_fields_and_refuses_null(client, make_member):
    ann = await make_member("ann@example.com")
    task = await create(client, ann, "keep my title")
    done = await client.patch(f"/tasks/{task['id']}", json={"done": True}, headers=ann.headers)
    assert done.json()["title"] == "keep my title", "an omitted field must be kept"
    for null_body in ({"title": None}, {"done": None}, {"title": "nul \u0000"}):
        refused = await client.patch(f"/tasks/{task['id']}", json=null_body, headers=ann.headers)
        assert refused.status_code == 422, f"{null_body} must be refused, got {refused.status_code} {refused.text}"
    empty = await client.patch(f"/tasks/{task['id']}", json={}, headers=ann.headers)
    assert empty.status_code == 200 and empty.json() == done.json(), "an empty PATCH changes nothing"
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["TaskUpdate"]
    assert "null" not in json.dumps(schema["properties"]) and "required" not in schema, "the schema: neither null nor required"


async def test_keyset_pages_cross_a_gap_in_ids(client, make_member):
    ann, bob = await make_member("ann@example.com"), await make_member("bob@example.com")
    mine = []
    for n in range(7):
        mine.append((await create(client, ann, f"task {n}"))["id"])
        await create(client, bob, f"bob's {n}")  # interleaved: ann's ids have gaps
    await client.delete(f"/tasks/{mine[3]}", headers=ann.headers)  # and one more gap
    expected = mine[:3] + mine[4:]
    seen, params, pages = [], {"limit": 2}, 0
    while True:
        page = (await client.get("/tasks", params=params, headers=ann.headers)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert seen == expected, "every task once, in id order, across the gaps"
    assert pages == 3, "6 tasks by 2: 3 pages, the last with no next_cursor (no empty page after it)"


@pytest.mark.parametrize("cursor", [
    "not-a-cursor", "", "!!!", base64.urlsafe_b64encode(b'["1"]').decode(), base64.urlsafe_b64encode(b"[-1]").decode(),
    base64.urlsafe_b64encode(b"[99999999999999999999]").decode(), base64.urlsafe_b64encode(b'{"a": 1}').decode(), "x" * 201,
])
async def test_a_bad_cursor_is_a_422_in_fastapis_shape(client, make_member, cursor):
    ann = await make_member("ann@example.com")
    response = await client.get("/tasks", params={"cursor": cursor}, headers=ann.headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("limit", [0, 101, -1, "many"])
async def test_limit_is_bounded(client, make_member, limit):
    ann = await make_member("ann@example.com")
    assert (await client.get("/tasks", params={"limit": limit}, headers=ann.headers)).status_code == 422


@pytest.mark.parametrize("task_id", ["0", "-1", str(2**31), str(2**63), "9" * 40, "1.5", "export2"])
async def test_an_id_postgresql_cannot_hold_is_a_422_not_a_500(client, make_member, task_id):
    ann = await make_member("ann@example.com")
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, f"/tasks/{task_id}", json={}, headers=ann.headers)
        assert response.status_code == 422, (method, task_id, response.status_code)


def recording_body_messages(app, bodies: list[bytes]):
    """The app, with every body message it sends recorded (ASGITransport joins them into one)."""

    async def recorded(scope, receive, send):
        async def recording_send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                bodies.append(message["body"])
            await send(message)

        await app(scope, receive, recording_send)

    return recorded


async def test_export_streams_json_lines_in_batches(client, app, make_member, monkeypatch):
    monkeypatch.setattr(task_routes, "EXPORT_BATCH", 2)  # 5 tasks: three batches
    ann, bob = await make_member("ann@example.com"), await make_member("bob@example.com")
    titles = [f"task {n}" for n in range(5)]
    for title in titles:
        await create(client, ann, title)
    await create(client, bob, "not ann's")
    bodies: list[bytes] = []
    transport = httpx.ASGITransport(app=recording_body_messages(app, bodies))  # the app's lifespan runs in `client`
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as recording_client:
        response = await recording_client.get("/tasks/export", headers=ann.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jsonl"
    lines = response.text.splitlines()
    assert [json.loads(line)["title"] for line in lines] == titles, "every task of ann's, once, in order, across batches"
    assert set(json.loads(lines[0])) == {"id", "title", "done", "created_at", "updated_at"}
    assert len(bodies) == len(titles), f"the app sent {len(bodies)} body message(s): a stream sends a line at a time"
    assert (await client.get("/tasks/export", headers=bob.headers)).text.count("\n") == 1


async def test_the_export_holds_no_connection_while_a_slow_client_reads(settings, database_url):
    """Lesson 06, section 7: a stream that keeps the request's session holds a pooled connection until its last
    line; with a pool of one, a second request during a slow export would wait and answer 503."""
    engine = create_async_engine(database_url, poolclass=NullPool)  # committed rows: the app reads with its own engine
    async with engine.begin() as connection:
        user_id = (await connection.execute(text(
            "INSERT INTO users (email, hashed_password, created_at) VALUES ('slow-reader@example.com', 'x', now()) "
            "RETURNING id"))).scalar_one()
        await connection.execute(text("INSERT INTO tasks (owner_id, title, done, created_at, updated_at) "
                                       "SELECT :owner, 'task ' || n, false, now(), now() FROM generate_series(1, 3) n"),
                                 {"owner": user_id})
    try:
        own = app_with(settings, db_pool_size=1, db_pool_timeout_seconds=0.5)
        async with LifespanManager(own):
            headers = {"Authorization": f"Bearer {own.state.keys.issue(user_id)}"}
            first_line, client_reads, requested = asyncio.Event(), asyncio.Event(), []
            lines: list[bytes] = []

            async def receive() -> dict:
                if not requested:
                    requested.append(True)
                    return {"type": "http.request", "body": b"", "more_body": False}
                await asyncio.Event().wait()  # the client stays connected (the stream's end cancels this wait)
                return {"type": "http.disconnect"}

            async def slow_client(message: dict) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    lines.append(message["body"])
                    first_line.set()
                    await client_reads.wait()  # the client has not read the first line yet: the stream waits here

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                     "path": "/tasks/export", "raw_path": b"/tasks/export", "query_string": b"", "root_path": "",
                     "headers": [(b"host", b"test"), (b"authorization", headers["Authorization"].encode())],
                     "client": ("127.0.0.1", 50001), "server": ("test", 80)}
            export = asyncio.create_task(own(scope, receive, slow_client))
            await asyncio.wait_for(first_line.wait(), 60)  # bounds on the waits only (a loaded CI machine is slow)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=own), base_url="http://t") as client:
                meanwhile = await client.get("/users/me", headers=headers)
            client_reads.set()
            await asyncio.wait_for(export, 60)
        assert meanwhile.status_code == 200, f"a request during a slow export: {meanwhile.status_code} {meanwhile.text}"
        assert [json.loads(line)["title"] for line in lines] == ["task 1", "task 2", "task 3"]
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})  # its tasks cascade
        await engine.dispose()
