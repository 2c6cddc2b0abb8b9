import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# `course grade` runs submissions in bubblewrap (Linux). Skipped where it is missing, unless the
# run must prove the sandbox (.ci/run sets COURSE_REQUIRE_SANDBOX=1 and installs it).
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("COURSE_REQUIRE_SANDBOX"),
    reason="bubblewrap (bwrap) is not installed; `course grade` needs it",
)


def import_start():
    """The project's start.py as a module (it lives beside the tests' package, not in it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("start", ROOT / "start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """A minimal notebook from (cell_type, source) pairs."""
    nb = {
        "cells": [
            {"cell_type": kind, "id": f"cell-{number}", "metadata": {}, "source": source,
             **({"outputs": [], "execution_count": None} if kind == "code" else {})}
            for number, (kind, source) in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


def _has_top_level_await(source: str) -> bool:
    import ast
    import inspect

    code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    return bool(code.co_flags & inspect.CO_COROUTINE)


def solution_namespace(lesson_id: str, *, preset: dict | None = None, until: str | None = None) -> dict:
    """Run a solution notebook's definition cells in a fresh namespace and return its globals.

    Check cells (`%%ipytest`) are skipped, and so are cells with top-level `await` (they start
    servers or databases, which a test starts itself); `setup_checks()` is a no-op (no IPython
    here). The tests use the solution's own code this way: nothing is copied, and lessons never
    import each other.

    With `preset` (names the skipped cells would have made, such as `db`), the statements of an
    `await` cell that do not await run too (its models, its engine on the preset database).
    `until`: stop after the cell that defines this name (before clean-up cells that stop `db`).
    """
    import ast

    import coursekit.checks

    (path,) = (ROOT / "solutions").glob(f"{lesson_id}_*.ipynb")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": f"solution_{lesson_id}", **(preset or {})}

    def run(source: str | ast.Module) -> None:
        exec(compile(source, path.name, "exec", dont_inherit=True), namespace)  # no __future__ from here

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coursekit.checks, "setup_checks", lambda: None)
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or source.lstrip().startswith("%%"):
                continue
            if not _has_top_level_await(source):
                run(source)
            elif preset is not None:
                for statement in ast.parse(source).body:
                    if not _has_top_level_await(ast.unparse(statement)):
                        run(ast.Module(body=[statement], type_ignores=[]))
            if until is not None and until in namespace:
                break
    return namespace


@pytest.fixture
def anyio_backend():
    return "asyncio"


def start_embedded_postgres(lesson: str):
    """An embedded PostgreSQL (DATABASE_URL set aside); skip where none can start, but fail in CI."""
    import asyncio
    import os

    from coursekit.postgres import start_database

    saved = os.environ.pop("DATABASE_URL", None)
    try:
        db = asyncio.run(start_database())
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
    if not db.is_postgres:
        db.stop()
        if os.environ.get("CI"):
            pytest.fail(f"CI must run lesson {lesson} on PostgreSQL, but: {db.reason}")
        pytest.skip(f"no embedded PostgreSQL here: {db.reason}")
    return db


# ---- tests/corpus/*.toml: each exercise's wrong and right answers, run against its checks ----
# One file per exercise, one kernel per file (the file's setup), one test item per entry, so a
# failing entry is named in pytest's summary: tests/corpus/01_x.toml::wrong::create_never_stores


class CorpusFile(pytest.File):
    def collect(self):
        from coursekit.corpus import in_run_order, lesson_by_key, load

        # first the generated exercise, run in the kernel while it is fresh (tests/test_exercise_stubs.py)
        yield StubRun.from_parent(self, name="stub::every_check_is_not_started")
        for entry in in_run_order(load(self.path), lesson_by_key(self.path.stem, ROOT).solution):
            yield CorpusEntry.from_parent(self, name=f"{entry.kind}::{entry.id}", entry=entry)

    def setup(self):
        from coursekit.corpus import CorpusRun, lesson_by_key

        lesson = lesson_by_key(self.path.stem, ROOT)
        stub_selected = any(isinstance(item, StubRun) and item.parent is self for item in self.session.items)
        self.run = CorpusRun(lesson.solution, lesson=lesson,
                             exercise=lesson.exercise if stub_selected else None).__enter__()

    def selected_entries(self):
        """This file's entries that this run selected (-k may leave some out)."""
        return [item.entry for item in self.session.items if isinstance(item, CorpusEntry) and item.parent is self]

    def teardown(self):
        run = getattr(self, "run", None)
        if run is not None:
            run.__exit__(None, None, None)


class CorpusEntry(pytest.Item):
    def __init__(self, *, entry, **kwargs):
        super().__init__(**kwargs)
        self.entry = entry

    def runtest(self):
        result = self.parent.run.judge(self.entry, self.parent.selected_entries())
        if not result.ok:
            raise CorpusEntryFailed(result.summary)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CorpusEntryFailed):
            return f"{self.entry.kind} answer {self.entry.id!r}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::{self.name}"


class CorpusEntryFailed(Exception):
    pass


class StubRun(pytest.Item):
    """The generated exercise's Run All (the corpus kernel ran it first): every check not-started."""

    def runtest(self):
        from coursekit.corpus import lesson_by_key
        from tests.test_exercise_stubs import assert_the_stub_reports_not_started

        assert_the_stub_reports_not_started(lesson_by_key(self.path.stem, ROOT), self.parent.run.exercise_report)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::{self.name}"


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".toml" and file_path.parent.name == "corpus":
        return CorpusFile.from_parent(parent, path=file_path)
    return None
