"""GET /tasks/events: FastAPI's built-in SSE (lesson 06), one event per change of the caller's tasks,
resumable with Last-Event-ID, and never another user's changes.

An endless stream never returns through ASGITransport (it hands over the body only when the app is
done), so these tests drive the app as a server would: ASGI messages in, body messages out, and an
`http.disconnect` once the events we wait for have arrived (Starlette then cancels the stream).
"""

import asyncio
import json

import pytest

from taskservice.routes import tasks as task_routes

pytestmark = pytest.mark.anyio


async def stream_events(app, headers: dict[str, str], wanted: int, timeout: float = 60.0,
                        path: str = "/tasks/events") -> tuple[int, str, list[dict]]:
    """(status, content-type, events) of a GET stream, disconnecting after `wanted` events (or lines).

    `timeout` only bounds a stream that never delivers: a loaded CI machine can take seconds to.
    """
    start: dict = {}
    events: list[dict] = []
    buffer = b""
    done = asyncio.Event()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            buffer += message.get("body", b"")
            if path.endswith("/export"):  # JSON Lines: one item per line
                *complete, buffer = buffer.split(b"\n")
                events.extend(json.loads(line) for line in complete)
            else:  # SSE: blocks of "field: value" lines, ": ping" comments skipped
                *complete, buffer = buffer.split(b"\n\n")
                for block in complete:
                    fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if not line.startswith(":"))
                    if fields:
                        events.append(fields)
            if len(events) >= wanted or not message.get("more_body", False):
                done.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"test")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout)
    content_type = dict(start.get("headers", [])).get(b"content-type", b"").decode()
    return start.get("status"), content_type, events


async def test_each_change_is_an_event_with_an_id_and_resumes_after_last_event_id(app, client, make_member, monkeypatch):
    # 0: the stream queries without a pause, so the disconnect lands mid-query unless the read is shielded
    monkeypatch.setattr(task_routes, "EVENTS_POLL_SECONDS", 0.0)
    ann, bob = await make_member("ann@example.com"), await make_member("bob@example.com")
    first = (await client.post("/tasks", json={"title": "one"}, headers=ann.headers)).json()
    await client.post("/tasks", json={"title": "bob's"}, headers=bob.headers)
    second = (await client.post("/tasks", json={"title": "two"}, headers=ann.headers)).json()

    status, content_type, events = await stream_events(app, ann.headers, wanted=2)
    assert (status, content_type) == (200, "text/event-stream; charset=utf-8")
    changes = [(e["event"], json.loads(e["data"])["task_id"], json.loads(e["data"])["kind"]) for e in events]
    assert changes == [("created", first["id"], "created"), ("created", second["id"], "created")], "bob's task is not ann's"

    patched = await client.patch(f"/tasks/{first['id']}", json={"done": True}, headers=ann.headers)
    deleted = await client.delete(f"/tasks/{second['id']}", headers=ann.headers)
    assert (patched.status_code, deleted.status_code) == (200, 204), "the disconnect left the connection unusable"
    resumed = await stream_events(app, {**ann.headers, "Last-Event-ID": events[-1]["id"]}, wanted=2)
    assert [e["event"] for e in resumed[2]] == ["updated", "deleted"], ("resume after the last event seen, nothing again", resumed)
    assert all(int(e["id"]) > int(events[-1]["id"]) for e in resumed[2])


async def test_the_stream_refuses_before_it_starts(client, make_member):
    ann = await make_member("ann@example.com")
    missing = await client.get("/tasks/events")
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    for bad in ("-1", "x", str(2**63)):
        refused = await client.get("/tasks/events", headers={**ann.headers, "Last-Event-ID": bad})
        assert refused.status_code == 422, bad


async def test_a_client_leaving_an_export_midway_leaves_the_connection_clean(app, client, make_member, monkeypatch):
    # A query before every line. (JSON Lines runs the generator only when the next line is wanted, so the
    # disconnect lands at a yield, not mid-query as in the SSE feed: passes with or without a shield.)
    monkeypatch.setattr(task_routes, "EXPORT_BATCH", 1)
    ann = await make_member("ann@example.com")
    for n in range(6):
        await client.post("/tasks", json={"title": f"task {n}"}, headers=ann.headers)
    status, content_type, lines = await stream_events(app, ann.headers, wanted=2, path="/tasks/export")
    assert (status, content_type) == (200, "application/jsonl") and 2 <= len(lines) < 6, lines
    after = await client.get("/tasks", headers=ann.headers)
    assert after.status_code == 200 and len(after.json()["items"]) == 6, "the disconnect left the connection unusable"
