"""coursekit.new_sqlmodel_base (tables defined again when a cell is re-run) and show_versions."""

from sqlmodel import Field, Session, create_engine, select

from coursekit import new_sqlmodel_base, show_versions


def define_task_table():
    Base = new_sqlmodel_base()

    class Task(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        title: str

    return Base, Task


def test_a_table_can_be_defined_again_as_when_a_cell_is_rerun():
    for _ in range(2):  # the second definition raised "Table 'task' is already defined" before
        Base, Task = define_task_table()
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Task(title="again"))
            session.commit()
            assert session.exec(select(Task.title)).all() == ["again"]


def test_show_versions_prints_pinned_versions(capsys):
    show_versions("fastapi", "no-such-package-xyz")
    out = capsys.readouterr().out.splitlines()
    from importlib.metadata import version

    assert out[0].split() == ["fastapi", version("fastapi")]
    assert out[1].split() == ["no-such-package-xyz", "not", "installed"]
