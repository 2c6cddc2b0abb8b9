"""Tasks of the signed-in user: CRUD, keyset pages (lesson 12), a JSON Lines export and an SSE feed of
changes (lesson 06).

Another user's task answers 404, never 403: a 403 would confirm that the id exists (lesson 02).
"""

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterable
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..db import SessionDep, SessionFactoryDep
from ..models import (MAX_BIGINT, MAX_ID, Task, TaskChange, TaskCreate, TaskEvent, TaskPage, TaskRead, TaskUpdate, User,
                      utcnow)
from ..security import CurrentUser, StreamingUserId
from . import errors

router = APIRouter(prefix="/tasks", tags=["tasks"])
TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]  # PostgreSQL's integer: 2**31 is a 422 here, not a 500 there
EXPORT_BATCH = 500
EVENTS_BATCH = 100
EVENTS_POLL_SECONDS = 1.0  # how soon a change reaches an idle stream; each poll is one short query
EVENTS_QUERY_TIMEOUT_SECONDS = 5


def encode_cursor(last_id: int) -> str:
    """Opaque to clients (they pass it back, never build it): base64 of the last id seen (lesson 12)."""
    return base64.urlsafe_b64encode(json.dumps([last_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor names; a cursor this service did not issue is the client's error: 422, never 500."""
    try:
        [last_id] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        last_id = None
    if type(last_id) is not int or not 0 <= last_id <= MAX_ID:
        # FastAPI's own 422 shape, so the body matches the documented HTTPValidationError
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "cursor"),
                                       "msg": "Value error, not a cursor this service issued", "input": cursor}])
    return last_id


async def owned_task(session: SessionDep, user: User, task_id: int) -> Task:
    task = await session.get(Task, task_id)
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="task not found")
    if task.owner_id != user.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this task belongs to another user")
    return task


# 400 on the routes with a JSON body: FastAPI's answer to bytes that are not UTF-8 (found by schemathesis)
@router.post("", responses=errors(400, 401, 503))
async def create_task(data: TaskCreate, user: CurrentUser, session: SessionDep, response: Response) -> TaskRead:
    task = Task(owner_id=user.id, **data.model_dump())
    session.add(task)
    await session.flush()  # the id, for the event
    session.add(TaskEvent(owner_id=user.id, task_id=task.id, kind="created"))
    await session.commit()  # the task and its event, or neither
    response.headers["Location"] = f"/tasks/{task.id}"
    return TaskRead.model_validate(task)


@router.get("", responses=errors(401, 503))
async def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> TaskPage:
    """Keyset pagination by id: page N costs what page 1 costs, and inserts never shift a page (lesson 12)."""
    statement = select(Task).where(Task.owner_id == user.id).order_by(col(Task.id)).limit(limit + 1)
    if cursor is not None:
        statement = statement.where(col(Task.id) > decode_cursor(cursor))
    rows = list((await session.exec(statement)).all())
    page, more = rows[:limit], len(rows) > limit  # one row more than asked: no empty last page
    return TaskPage(items=[TaskRead.model_validate(task) for task in page],
                    next_cursor=encode_cursor(page[-1].id) if more else None)


# Before /{task_id}: "export" and "events" are not ids.
@router.get("/export", responses=errors(401, 503))
async def export_tasks(user_id: StreamingUserId, sessions: SessionFactoryDep) -> AsyncIterable[TaskRead]:
    """Every task as JSON Lines (FastAPI's built-in `application/jsonl`, lesson 06), read in keyset batches.

    The user is checked before the first line (a 401 after the headers would arrive as a 200). Each batch is
    read in a short session closed before its lines are sent: a slow client holds no pooled connection (lesson
    06, section 7; the request's session would stay checked out until the last line). The end is fixed before
    the first batch, so tasks created meanwhile stay out and the export ends; memory stays at one batch.
    """
    async with sessions() as session:
        last_id = (await session.exec(select(func.max(Task.id)).where(Task.owner_id == user_id))).one()
    after = 0
    while last_id is not None and after < last_id:
        async with sessions() as session:
            statement = (select(Task).where(Task.owner_id == user_id, col(Task.id) > after, col(Task.id) <= last_id)
                         .order_by(col(Task.id)).limit(EXPORT_BATCH))
            batch = list((await session.exec(statement)).all())
        if not batch:
            return
        for task in batch:
            yield TaskRead.model_validate(task)
        after = batch[-1].id


async def events_after(sessions: async_sessionmaker[AsyncSession], user_id: int, position: int) -> list[TaskEvent]:
    # Shielded: a client's disconnect cancels the stream, and a cancellation landing mid-query leaves asyncpg
    # mid-protocol (SQLAlchemy then throws the connection away). The read takes milliseconds: the cancellation
    # waits for it, and the connection goes back to the pool clean. fail_after still bounds a hung query.
    with anyio.CancelScope(shield=True), anyio.fail_after(EVENTS_QUERY_TIMEOUT_SECONDS):
        async with sessions() as session:
            statement = (select(TaskEvent).where(TaskEvent.owner_id == user_id, col(TaskEvent.id) > position)
                         .order_by(col(TaskEvent.id)).limit(EVENTS_BATCH))
            return list((await session.exec(statement)).all())


@router.get("/events", response_class=EventSourceResponse, responses=errors(401, 503))
async def task_events(
    user_id: StreamingUserId,
    sessions: SessionFactoryDep,
    last_event_id: Annotated[int, Header(ge=0, le=MAX_BIGINT, description="resume after this event id")] = 0,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events (FastAPI's built-in SSE, lesson 06): one event per change of the caller's tasks,
    with its id, so that a reconnecting browser resumes with `Last-Event-ID`; FastAPI pings every 15 s.

    Polls the event table with a short session per read: an open stream holds no pooled connection.
    """
    position = last_event_id
    while True:
        events = await events_after(sessions, user_id, position)
        for event in events:
            yield ServerSentEvent(data=TaskChange.model_validate(event), event=event.kind, id=str(event.id))
        if events:
            position = events[-1].id
        else:
            await asyncio.sleep(EVENTS_POLL_SECONDS)


@router.get("/{task_id}", responses=errors(401, 404, 503))
async def read_task(task_id: TaskId, user: CurrentUser, session: SessionDep) -> TaskRead:
    return TaskRead.model_validate(await owned_task(session, user, task_id))


@router.patch("/{task_id}", responses=errors(400, 401, 404, 503))
async def update_task(task_id: TaskId, changes: TaskUpdate, user: CurrentUser, session: SessionDep) -> TaskRead:
    """Only the fields sent change; a field may be omitted, never null (lessons 01 and 08)."""
    task = await owned_task(session, user, task_id)
    sent = changes.model_dump(exclude_unset=True)
    if sent:
        for field, value in sent.items():
            setattr(task, field, value)
        task.updated_at = utcnow()
        session.add(TaskEvent(owner_id=user.id, task_id=task.id, kind="updated"))
        await session.commit()
    return TaskRead.model_validate(task)


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 503))
async def delete_task(task_id: TaskId, user: CurrentUser, session: SessionDep) -> None:
    await session.delete(await owned_task(session, user, task_id))
    session.add(TaskEvent(owner_id=user.id, task_id=task_id, kind="deleted"))
    await session.commit()
