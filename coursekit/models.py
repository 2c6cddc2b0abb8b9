"""SQLModel tables that survive re-running a notebook cell."""

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


def new_sqlmodel_base() -> type[SQLModel]:
    """Return a fresh SQLModel base class with its own registry and MetaData.

    Table classes normally register in the one global `SQLModel.metadata`; defining
    `class Task(SQLModel, table=True)` a second time (re-running a cell) raises
    "Table 'task' is already defined for this MetaData instance". Subclass the base
    returned here instead, from the same cell: every run starts with an empty registry.
    Create the tables with `Base.metadata.create_all(...)`.
    """

    class Base(SQLModel, registry=registry()):
        pass

    return Base
