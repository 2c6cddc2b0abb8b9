"""Lesson 04 (background tasks): the stack behaviours the lesson and its exercise are built on.

The notebooks assert the same facts under nbval; these tests name them one by one, so that an
upgrade of Starlette, FastAPI, SQLAlchemy or the standard library that changes one says which.
"""

import socket
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, Session, create_engine

from coursekit import app_client, new_sqlmodel_base, run_server

pytestmark = pytest.mark.anyio

Base = new_sqlmodel_base()


class User(Base, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/users.db", connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def app_with_tasks(*tasks) -> FastAPI:
    app = FastAPI()

    @app.post("/run")
    def run(background: BackgroundTasks) -> dict[str, str]:
        for task in tasks:
            background.add_task(task)
        return {"status": "queued"}

    return app


async def test_asgi_transport_returns_only_after_the_tasks() -> None:
    done = threading.Event()
    async with app_client(app_with_tasks(done.set)) as client:
        await client.post("/run")
        assert done.is_set()


async def test_a_real_server_answers_before_the_tasks_run() -> None:
    release, ran = threading.Event(), threading.Event()

    def slow_task() -> None:
        release.wait(60)  # set right after the response: 60 s only bounds a failing run (5 s was a race on a loaded machine)
        ran.set()

    with run_server(app_with_tasks(slow_task)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post("/run")
            assert response.status_code == 200 and not ran.is_set()
            release.set()


async def test_one_raising_task_skips_the_next() -> None:
    ran = threading.Event()

    def failing() -> None:
        raise RuntimeError("down")

    async with app_client(app_with_tasks(failing, ran.set), raise_app_exceptions=False) as client:
        response = await client.post("/run")
    assert response.status_code == 200 and not ran.is_set()


async def test_async_def_tasks_run_on_the_event_loop_thread_and_def_tasks_in_the_threadpool() -> None:
    threads: dict[str, int] = {}

    async def async_task() -> None:
        threads["async task"] = threading.get_ident()

    def sync_task() -> None:
        threads["def task"] = threading.get_ident()

    app = app_with_tasks(async_task, sync_task)

    @app.get("/loop")
    async def loop_thread() -> None:
        threads["event loop"] = threading.get_ident()

    with run_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.get("/loop")
            await client.post("/run")
        deadline = time.monotonic() + 60  # a bound on the wait only: the tasks run after the response
        while len(threads) < 3 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
    assert threads["async task"] == threads["event loop"] != threads["def task"]


async def test_returning_the_committed_table_object_answers_200_and_an_empty_body(engine: Engine) -> None:
    app = FastAPI()

    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    @app.post("/users")
    async def create(session: Annotated[Session, Depends(get_session)]):
        user = User(name="ada")
        session.add(user)
        session.commit()
        return user

    async with app_client(app) as client:
        response = await client.post("/users")
    assert (response.status_code, response.json()) == (200, {})


def test_a_closed_session_can_be_used_again_and_checks_out_a_connection(engine: Engine) -> None:
    with Session(engine) as setup:
        user = User(name="ada")
        setup.add(user)
        setup.commit()
        user_id = user.id
    session = Session(engine)
    session.close()
    assert session.get(User, user_id) is not None
    assert engine.pool.checkedout() == 1
    session.close()
    assert engine.pool.checkedout() == 0


def test_smtplib_waits_forever_by_default_and_honours_a_timeout() -> None:
    assert socket.getdefaulttimeout() is None
    with socket.socket() as listener:  # accepts connections (kernel backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtplib.SMTP("127.0.0.1", port, timeout=0.2)
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                smtplib.SMTP("127.0.0.1", port)
            except (OSError, smtplib.SMTPException) as exc:
                outcome.append(exc)

        hung = threading.Thread(target=connect, daemon=True)
        hung.start()
        hung.join(0.5)
        assert hung.is_alive()
    hung.join(60)  # closing the listener resets the connection it never accepted (60 s: a bound on the wait only)
    assert not hung.is_alive() and outcome
