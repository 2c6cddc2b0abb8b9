"""Tables (SQLModel) and the API's own models: what comes in, what goes out (lesson 01).

The tables are never response models: `User.hashed_password` cannot leak through a route that
answers `UserRead` (lesson 01/02). Timestamps are timezone-aware (lesson 08: a naive datetime is
a time in no zone at all).
"""

from datetime import datetime, timezone
from typing import Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field as PydanticField, field_validator
from sqlalchemy import BigInteger, DateTime, Index, func
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

# PostgreSQL's integer: a larger id in a path or body is the client's error (422), not a 500
# from asyncpg (a real schemathesis find, lesson 13's exercise).
MAX_ID = 2**31 - 1
MAX_BIGINT = 2**63 - 1  # task_events.id
# PostgreSQL's text cannot hold a NUL character: one in a stored string is the client's error (422), not a
# 500 from asyncpg (found in review: a NUL in an email, a login or a title answered 500).
EMAIL_PATTERN = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"
NO_NUL = r"^[^\x00]*$"


def utcnow() -> datetime:
    return datetime.utcnow()


class Base(SQLModel, registry=registry()):
    """Own registry and metadata: the package's tables never clash with another app's in one process."""


class User(Base, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    hashed_password: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Task(Base, table=True):
    __tablename__ = "tasks"
    # The keyset pages and the export read "this owner's tasks after id N, by id": one index walk (lesson 12).
    __table_args__ = (Index("ix_tasks_owner_id_id", "owner_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    title: str = Field(max_length=200)
    done: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class TaskEvent(Base, table=True):
    """One row per change of a task, written in the change's own transaction: the feed of GET /tasks/events."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_owner_id_id", "owner_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger)
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    task_id: int  # no foreign key: the event of a deleted task outlives it
    kind: str = Field(max_length=16)  # created, updated, deleted
    at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SentMail(Base, table=True):
    """Idempotency keys of mails sent: claimed in the transaction that sends (lesson 13, section 4.5)."""

    __tablename__ = "sent_mail"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    # Filled by the database: the job inserts the key with plain SQL (ON CONFLICT DO NOTHING).
    sent_at: datetime = Field(sa_type=DateTime(timezone=True), sa_column_kwargs={"server_default": func.now()})


# --- the API's models -------------------------------------------------------------------------


class Problem(BaseModel):
    """Every error body: FastAPI's own `{"detail": ...}` shape, documented in `responses=`."""

    detail: str


class SignupIn(BaseModel):
    email: str = PydanticField(max_length=254, pattern=EMAIL_PATTERN)
    password: str = PydanticField(min_length=8, max_length=128)

    @field_validator("email")
    @classmethod
    def lower_case(cls, email: str) -> str:
        return email.lower()  # one account per address, whatever its case


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    created_at: datetime


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class TaskCreate(BaseModel):
    title: str = PydanticField(min_length=1, max_length=200, pattern=NO_NUL)
    done: bool = False


# PATCH: each field may be omitted (kept as is) but never null (lessons 01 and 08). `MISSING` keeps null out
# of the schema and out of the accepted values: `{"title": null}` is a 422, where `str | None = None` would
# store a NULL title or need a check by hand.
class TaskUpdate(BaseModel):
    """Only the fields sent change."""

    title: str | MISSING = PydanticField(default=MISSING, min_length=1, max_length=200, pattern=NO_NUL)
    done: bool | MISSING = PydanticField(default=MISSING)


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    done: bool
    created_at: datetime
    updated_at: datetime


class TaskChange(BaseModel):
    """The data of one server-sent event: which task changed, how, when. Clients fetch the task if they need it."""

    model_config = ConfigDict(from_attributes=True)

    task_id: int
    kind: Literal["created", "updated", "deleted"]
    at: datetime


class TaskPage(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None


class Health(BaseModel):
    status: str
