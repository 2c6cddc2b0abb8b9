"""The exercise builder: markers, stubs, staleness, resets that keep the learner's work."""

import json
import subprocess

import pytest

from coursekit.build import (
    COLLAPSED_INPUT,
    HINT_IMPORT,
    MarkerError,
    build,
    exercise_from_solution,
    exercise_note,
    reset,
    sources_digest,
    stub_source,
)
from coursekit.manifest import lessons
from tests.conftest import write_notebook

SOLUTION_CELL = '''def add(a, b):
    ### BEGIN SOLUTION: return the sum
    total = a + b
    return total
    ### END SOLUTION
'''


def test_a_region_becomes_a_stub_that_says_not_done_yet():
    stub = stub_source(SOLUTION_CELL, "cell 1")
    assert "total" not in stub
    assert "    # TODO: return the sum" in stub
    assert "    raise NotImplementedError('not done yet: return the sum')" in stub
    namespace: dict = {}
    exec(stub, namespace)  # the cell still defines its names
    with pytest.raises(NotImplementedError, match="not done yet"):
        namespace["add"](1, 2)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside a function body"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1", "no END SOLUTION"),
        ("def f():\n    return 1\n    ### END SOLUTION", "without a BEGIN"),
        ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "inside the region"),
        ("class Clock:\n    # a comment\n    ### BEGIN SOLUTION\n    now = 1\n    ### END SOLUTION", "class body"),
    ],
)
def test_bad_markers_are_refused_with_the_place(source, message):
    with pytest.raises(MarkerError, match=message) as info:
        stub_source(source, "solutions/x.ipynb, cell 3")
    assert "cell 3" in str(info.value)


def test_a_region_in_a_method_or_a_class_inside_a_function_is_fine():
    for source in ("class Clock:\n    def now(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION",
                   "def make():\n    class Clock:\n        pass\n    ### BEGIN SOLUTION\n    return Clock\n    ### END SOLUTION"):
        assert "not done yet" in stub_source(source, "x")


def test_exercise_has_no_outputs_and_records_its_lesson():
    solution = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["x"], "collapsed": True}, "source": SOLUTION_CELL,
             "outputs": [{"output_type": "stream", "name": "stdout", "text": "3"}], "execution_count": 4},
            {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        ],
        "metadata": {"kernelspec": {"name": "python3"}, "widgets": {}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    exercise = exercise_from_solution(solution, "07", "solutions/07_x.ipynb")
    code = exercise["cells"][0]
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"] == {"tags": ["x"]}
    stamp = exercise["metadata"]["course"].pop("sources_sha256")
    assert exercise["metadata"]["course"] == {"lesson": "07", "generated_from": "solutions/07_x.ipynb"}
    assert len(stamp) == 64 and stamp == sources_digest(exercise["cells"])
    assert "widgets" not in exercise["metadata"]


def test_a_solution_without_regions_is_refused():
    solution = {"cells": [{"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []}], "metadata": {}}
    with pytest.raises(MarkerError, match="no ### BEGIN SOLUTION"):
        exercise_from_solution(solution, "07", "solutions/07_x.ipynb")


@pytest.fixture
def course(tmp_path):
    (tmp_path / "course.toml").write_text(
        '[[lesson]]\nid = "01"\nslug = "demo"\ntitle = "Demo"\nsummary = "A demo."\n'
    )
    write_notebook(tmp_path / "solutions/01_demo.ipynb", [("code", SOLUTION_CELL)])
    return tmp_path


def test_build_writes_then_check_reports_in_sync_or_stale(course):
    assert [r.status for r in build(course)] == ["written"]
    assert [r.status for r in build(course, check=True)] == ["unchanged"]
    write_notebook(course / "solutions/01_demo.ipynb", [("code", SOLUTION_CELL.replace("sum", "total"))])
    assert [r.status for r in build(course, check=True)] == ["stale"]


def test_a_learners_edit_is_not_stale_when_git_has_the_generated_version(course):
    build(course)
    subprocess.run(["git", "init", "-q"], cwd=course, check=True)
    subprocess.run(["git", "add", "-A"], cwd=course, check=True)
    exercise = course / "exercises/01_demo.ipynb"
    exercise.write_text(exercise.read_text().replace("raise NotImplementedError", "return a + b  #"))
    assert [r.status for r in build(course, check=True)] == ["learner-edited"]


def test_build_and_reset_keep_the_learners_attempt(course):
    build(course)
    exercise = course / "exercises/01_demo.ipynb"
    attempt = exercise.read_text().replace("raise NotImplementedError('not done yet: return the sum')", "return a + b")
    exercise.write_text(attempt)
    (lesson,) = lessons(course)
    saved = reset(lesson)
    assert saved.parent == course / "attempts" and saved.read_text() == attempt
    assert "not done yet" in exercise.read_text()
    exercise.write_text(attempt)
    (result,) = build(course)  # outside git: a hand-edited exercise is saved before it is rewritten
    assert result.saved is not None and result.saved.read_text() == attempt


def test_an_exercise_only_run_or_only_regenerated_is_not_copied_to_attempts(course):
    build(course)
    exercise = course / "exercises/01_demo.ipynb"
    notebook = json.loads(exercise.read_text())
    notebook["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    notebook["cells"][0]["execution_count"] = 1
    exercise.write_text(json.dumps(notebook))  # run in JupyterLab, sources untouched
    (lesson,) = lessons(course)
    assert reset(lesson) is None
    # an author changes the solution twice without committing: the first generated exercise is no attempt
    write_notebook(course / "solutions/01_demo.ipynb", [("code", SOLUTION_CELL.replace("sum", "total"))])
    (result,) = build(course)
    assert result.status == "written" and result.saved is None
    assert not (course / "attempts").exists()


def test_an_exercise_without_the_builders_stamp_counts_as_edited(course):
    build(course)
    exercise = course / "exercises/01_demo.ipynb"
    notebook = json.loads(exercise.read_text())
    del notebook["metadata"]["course"]["sources_sha256"]
    exercise.write_text(json.dumps(notebook))
    (lesson,) = lessons(course)
    saved = reset(lesson)
    assert saved is not None and saved.parent == course / "attempts"


def test_committed_exercises_are_in_sync_with_solutions():
    results = build(check=True)
    stale = [r.lesson.stem for r in results if r.status == "stale"]
    assert not stale, f"exercises/ is stale for {stale}: run `course build` and commit"


def test_generated_exercises_are_valid_notebooks():
    import nbformat

    for lesson in lessons():
        nbformat.validate(nbformat.reads(lesson.exercise.read_text(), as_version=4))
        assert json.loads(lesson.exercise.read_text())["metadata"]["course"]["lesson"] == lesson.id


def test_check_cells_open_collapsed_the_intro_says_how_to_expand_and_hint_is_imported():
    setup = "import pytest\n\ndef setup_checks():  # stands for coursekit's (which needs IPython)\n    pass\n\nsetup_checks()\nx = 1\n"
    checks = "%%ipytest\n\ndef test_adds():\n    assert add(1, 2) == 3\n"
    solution = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# 07 · Exercise\n\nThe task.\n"},
            {"cell_type": "code", "metadata": {}, "source": setup, "outputs": [], "execution_count": 1},
            {"cell_type": "code", "metadata": {}, "source": SOLUTION_CELL, "outputs": [], "execution_count": 2},
            {"cell_type": "code", "metadata": {"tags": ["checks"]}, "source": checks, "outputs": [], "execution_count": 3},
        ],
        "metadata": {},
    }
    intro, setup_cell, answer, check_cell = exercise_from_solution(solution, "07", "solutions/07_x.ipynb")["cells"]
    assert check_cell["metadata"] == {"tags": ["checks"], **COLLAPSED_INPUT}
    assert check_cell["source"] == checks.rstrip("\n")  # expanded, the check reads as written
    assert answer["metadata"] == {} and setup_cell["metadata"] == {} and intro["metadata"] == {}
    assert intro["source"] == "# 07 · Exercise\n\nThe task." + exercise_note("07")
    assert "click" in intro["source"] and "`course hint 07`" in intro["source"] and "`hint()`" in intro["source"]
    assert setup_cell["source"] == setup.rstrip("\n").replace("setup_checks()\n", f"setup_checks()\n{HINT_IMPORT}\n")
    namespace: dict = {}
    exec(setup_cell["source"], namespace)  # the cell still runs, and defines hint
    assert callable(namespace["hint"])


@pytest.mark.parametrize("lesson", lessons(), ids=[lesson.stem for lesson in lessons()])
def test_every_committed_exercise_opens_its_checks_collapsed_and_offers_hint(lesson):
    from coursekit.runner import _is_check_cell

    cells = json.loads(lesson.exercise.read_text())["cells"]
    checks = [cell for cell in cells if _is_check_cell(cell)]
    name = lesson.exercise.name
    assert checks and all(cell["metadata"].get("jupyter") == COLLAPSED_INPUT["jupyter"] for cell in checks), (
        f"{name}: every check cell must open collapsed: run `course build`"
    )
    assert not [cell for cell in cells if "jupyter" in cell["metadata"] and not _is_check_cell(cell)], (
        f"{name}: only check cells are collapsed"
    )
    first_markdown = next(cell for cell in cells if cell["cell_type"] == "markdown")
    assert "".join(first_markdown["source"]).endswith(exercise_note(lesson.id)), (
        f"{name}: the first markdown cell must end with the note on expanding checks and hints: run `course build`"
    )
    setup = [cell for cell in cells if "".join(cell["source"]).count(HINT_IMPORT) == 1]
    assert len(setup) == 1 and "setup_checks()" in "".join(setup[0]["source"]), (
        f"{name}: `hint` is imported after `setup_checks()` when the solution calls it on a line of its own"
    )
