"""Lesson 06 (streaming responses): the library behaviour the lesson and its exercise rely on.

When a pin moves, these fail with a message naming the changed behaviour, before nbval reports
a diff deep inside the notebooks. Fast: in-process where that shows the behaviour, a real
uvicorn server (coursekit.run_server) for ASGITransport buffering and disconnects.
"""

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ValidationError

from coursekit import app_client, run_server


class Item(BaseModel):
    id: int
    title: str


def make_app(log: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    async def items() -> AsyncIterable[Item]:
        yield {"id": 1, "title": "a", "internal": "never sent"}
        yield Item(id=2, title="b")

    @app.get("/invalid")
    async def invalid() -> AsyncIterable[Item]:
        yield {"id": 1, "title": "a"}
        yield {"id": "two", "title": "b"}

    @app.get("/events", response_class=EventSourceResponse)
    async def events() -> AsyncIterable[ServerSentEvent]:
        yield ServerSentEvent(data=Item(id=1, title="a"), event="progress", id="1")
        yield ServerSentEvent(raw_data="one\n\ntwo", event="log")
        yield ServerSentEvent(data="text")

    @app.get("/endless")
    async def endless() -> AsyncIterable[int]:
        n = 0
        try:
            while True:
                n += 1
                yield n
                await asyncio.sleep(0.01)
        finally:
            log.append("cleanup")

    async def resource() -> AsyncIterator[str]:
        log.append("open")
        yield "r"
        log.append("close")

    @app.get("/function-scope")
    async def function_scope(r: Annotated[str, Depends(resource, scope="function")]) -> AsyncIterable[int]:
        log.append("item")
        yield 1

    @app.get("/request-scope")
    async def request_scope(r: Annotated[str, Depends(resource)]) -> AsyncIterable[int]:
        log.append("item")
        yield 1

    return app


@pytest.mark.anyio
async def test_json_lines_are_validated_filtered_and_documented():
    app = make_app([])
    async with app_client(app) as client:
        response = await client.get("/items")
        assert response.headers["content-type"] == "application/jsonl"
        assert response.text == '{"id":1,"title":"a"}\n{"id":2,"title":"b"}\n'
        with pytest.raises(Exception) as raised:  # in-process, the validation error reaches the caller
            await client.get("/invalid")
    assert type(raised.value).__name__ == "ResponseValidationError"
    content = app.openapi()["paths"]["/items"]["get"]["responses"]["200"]["content"]
    assert content == {"application/jsonl": {"itemSchema": {"$ref": "#/components/schemas/Item"}}}


@pytest.mark.anyio
async def test_sse_framing_headers_and_keepalive():
    async with app_client(make_app([])) as client:
        response = await client.get("/events")
    assert response.text == (
        'event: progress\ndata: {"id":1,"title":"a"}\nid: 1\n\n'
        "event: log\ndata: one\ndata: \ndata: two\n\n"
        'data: "text"\n\n'
    )
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert KEEPALIVE_COMMENT == b": ping\n\n"
    import fastapi.sse

    assert fastapi.sse._PING_INTERVAL == 15.0  # the lesson says "idle for 15 s"
    with pytest.raises(ValidationError):
        ServerSentEvent(data=1, event="two\nlines")


@pytest.mark.anyio
async def test_function_scoped_dependency_closes_before_the_first_item():
    log: list[str] = []
    async with app_client(make_app(log)) as client:
        await client.get("/request-scope")
        request_order = list(log)
        log.clear()
        await client.get("/function-scope")
    assert request_order == ["open", "item", "close"]
    assert log == ["open", "close", "item"]


@pytest.mark.anyio
async def test_in_process_buffers_the_body_a_real_server_streams_it():
    """Told by how far the generator had got when the client read the first line, not by timing: CI once saw
    wall-time ratios (first line / whole body) miss their bounds on a loaded machine. In-process, the
    generator had finished; through uvicorn, it was still waiting for the client to read that line."""
    progress: list[str] = []
    first_line_read = threading.Event()
    app = FastAPI()

    @app.get("/numbers")
    async def numbers(wait_for_the_reader: bool) -> AsyncIterable[int]:
        for n in range(4):
            if n == 1 and wait_for_the_reader:
                # the next item only once the client holds the first: a server that buffers never gets it there
                for _ in range(3_000):  # at most 30 s, then the body ends and the asserts below fail
                    if first_line_read.is_set():
                        break
                    await asyncio.sleep(0.01)
            progress.append(f"yielded {n}")
            yield n
        progress.append("finished")

    async def at_the_first_line(client: httpx.AsyncClient, wait_for_the_reader: bool) -> tuple[list[str], list[str]]:
        progress.clear()
        first_line_read.clear()
        async with client.stream("GET", "/numbers", params={"wait_for_the_reader": wait_for_the_reader}) as response:
            lines = response.aiter_lines()
            received = [await anext(lines)]
            seen = list(progress)
            first_line_read.set()
            received += [line async for line in lines]
        assert received == ["0", "1", "2", "3"]
        return seen, list(progress)

    async with app_client(app) as client:
        in_process, _ = await at_the_first_line(client, wait_for_the_reader=False)
    with run_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            served, served_at_the_end = await at_the_first_line(client, wait_for_the_reader=True)
    assert in_process[-1] == "finished", "ASGITransport no longer buffers: the lesson's section 3 needs a rewrite"
    assert served == ["yielded 0"] and served_at_the_end[-1] == "finished", (served, served_at_the_end)


@pytest.mark.anyio
async def test_disconnect_cancels_the_generator_and_runs_finally():
    log: list[str] = []
    with run_server(make_app(log)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/endless") as response:
                async for line in response.aiter_lines():
                    if line == "3":
                        break
            deadline = time.monotonic() + 30  # a bound on the wait only: a loaded CI machine may take seconds
            while not log and time.monotonic() < deadline:
                gc.collect()  # a generator abandoned at a yield is cleaned up when finalized
                await asyncio.sleep(0.01)
    assert log == ["cleanup"]


@pytest.mark.anyio
async def test_error_before_the_first_item_is_a_200_a_dependency_makes_it_a_404():
    from fastapi import HTTPException

    app = FastAPI()

    def exists(item_id: int) -> int:
        if item_id != 1:
            raise HTTPException(status_code=404, detail="no such item")
        return item_id

    @app.get("/late/{item_id}")
    async def late(item_id: int) -> AsyncIterable[Item]:
        if item_id != 1:
            raise HTTPException(status_code=404, detail="no such item")
        yield Item(id=item_id, title="a")

    @app.get("/late-sse/{item_id}", response_class=EventSourceResponse)
    async def late_sse(item_id: int) -> AsyncIterable[Item]:
        if item_id != 1:
            raise HTTPException(status_code=404, detail="no such item")
        yield Item(id=item_id, title="a")

    @app.get("/early/{item_id}")
    async def early(item_id: Annotated[int, Depends(exists)]) -> AsyncIterable[Item]:
        yield Item(id=item_id, title="a")

    async with app_client(app, raise_app_exceptions=False) as client:
        late_lines, late_events, early_lines = [await client.get(p) for p in ("/late/2", "/late-sse/2", "/early/2")]
    assert (late_lines.status_code, late_lines.text) == (200, ""), "lesson 06 says: a 404 in the generator is a 200"
    assert (late_events.status_code, late_events.text) == (200, "")
    assert (early_lines.status_code, early_lines.json()) == (404, {"detail": "no such item"})
    assert app.openapi()["openapi"] == "3.1.0", "lesson 06 says FastAPI labels the document 3.1.0 (itemSchema is 3.2)"


@pytest.mark.anyio
async def test_streamed_items_are_validated_from_attributes():
    class Row:  # an object with attributes, like a table row
        id = 1
        title = "a"

    app = FastAPI()

    @app.get("/rows")
    async def rows() -> AsyncIterable[Item]:
        yield Row()

    async with app_client(app) as client:
        response = await client.get("/rows")
    assert response.text == '{"id":1,"title":"a"}\n', "lesson 06 section 7: FastAPI validates items from attributes"
    with pytest.raises(ValidationError):
        Item.model_validate(Row())
    assert Item.model_validate(Row(), from_attributes=True) == Item(id=1, title="a")


def test_starlette_cancels_the_stream_on_disconnect_in_a_task_group():
    import inspect

    from starlette.responses import StreamingResponse

    call = inspect.getsource(StreamingResponse.__call__)
    assert "listen_for_disconnect" in call and "task_group.cancel_scope.cancel()" in call, (
        "lesson 06 section 6 says StreamingResponse cancels its task group on http.disconnect"
    )


@pytest.mark.anyio
async def test_server_sent_event_data_is_not_filtered_plain_items_are():
    class Stored(BaseModel):
        id: int
        title: str
        secret: str

    app = FastAPI()

    @app.get("/plain", response_class=EventSourceResponse)
    async def plain() -> AsyncIterable[Item]:
        yield Stored(id=1, title="a", secret="s")

    @app.get("/wrapped", response_class=EventSourceResponse)
    async def wrapped() -> AsyncIterable[ServerSentEvent]:
        yield ServerSentEvent(data=Stored(id=1, title="a", secret="s"))

    async with app_client(app) as client:
        plain_text, wrapped_text = [(await client.get(p)).text for p in ("/plain", "/wrapped")]
    assert plain_text == 'data: {"id":1,"title":"a"}\n\n'
    assert wrapped_text == 'data: {"id":1,"title":"a","secret":"s"}\n\n', (
        "lesson 06 section 4 (and exercise 06's live feed) say a ServerSentEvent's data is sent unfiltered"
    )
