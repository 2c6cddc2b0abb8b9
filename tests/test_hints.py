"""Hints that unlock: every check of every exercise has hints; `course hint NN` and `hint()` show them one by one."""

import json
import os
import re

import pytest

from coursekit import cli
from coursekit.build import build
from coursekit.hints import MAX_HINTS, hints_path, load_hints
from coursekit.manifest import lessons
from coursekit.runner import CheckResult, Report, _source, notebook_check_ids, read_notebook
from tests.conftest import ROOT, write_notebook

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_every_check_of_every_exercise_has_a_hint(lesson):
    path = hints_path(lesson)
    assert path.is_file(), f"exercise {lesson.id} has no hints file: add {path.relative_to(ROOT)}"
    hints = load_hints(lesson)  # 1-3 non-empty hints per table, else a CourseError naming the table
    checks = notebook_check_ids(read_notebook(lesson.solution))
    missing = [check for check in checks if check not in hints]
    unknown = sorted(set(hints) - set(checks))
    assert not missing, f"{path.relative_to(ROOT)}: checks with no hint: {missing}"
    assert not unknown, f"{path.relative_to(ROOT)}: tables naming no check of {lesson.solution.name}: {unknown}"


SECTION_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*[a-z]?(?:-\d+[a-z]?)?)[.\s]", re.M)
# "Lesson 03, section 2.3" or, for the exercise's own lesson, "section 2.3"
SECTION_NAMED = re.compile(r"(?:\b[Ll]esson (\d\d)\b[^.;]*?)?\bsections? (\d+(?:\.\d+)*[a-z]?(?:-\d+[a-z]?)?)")


def lesson_sections(lesson) -> set[str]:
    """The numbers of a lesson's numbered section headings ("2", "4.1", "1b-1e")."""
    markdown = [_source(cell) for cell in read_notebook(lesson.notebook)["cells"] if cell["cell_type"] == "markdown"]
    return {match.group(1) for text in markdown for match in SECTION_HEADING.finditer(text)}


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_the_last_hint_names_a_lesson_section_that_exists(lesson):
    """"Lesson NN, section N" (or "section N" of the exercise's own lesson): a section number that lesson's headings have."""
    by_id = {other.id: other for other in LESSONS}
    sections = {}
    vague, wrong = [], []
    for check, hints in load_hints(lesson).items():
        named = SECTION_NAMED.findall(hints[-1])
        if not named:
            vague.append(check)
        for lesson_id, number in named:
            lesson_id = lesson_id or lesson.id
            if lesson_id not in sections and lesson_id in by_id:
                sections[lesson_id] = lesson_sections(by_id[lesson_id])
            if number not in sections.get(lesson_id, ()):
                wrong.append(f"{check}: lesson {lesson_id} has no section {number}")
    assert not vague, f"last hints that name no lesson section ('Lesson NN, section N' or 'section N'): {vague}"
    assert not wrong, f"sections that do not exist: {wrong}"


# --- the commands, on a tiny course ------------------------------------------------------------

SETUP = "from coursekit import setup_checks\n\nsetup_checks()\n"
ANSWER = '''def add(a, b):
    ### BEGIN SOLUTION: return the sum
    return a + b
    ### END SOLUTION


def double(x):
    ### BEGIN SOLUTION: return twice x
    return x * 2
    ### END SOLUTION
'''
CHECKS = '''%%ipytest

def test_adds():
    assert add(1, 2) == 3, "add(1, 2) should be 3"

def test_doubles():
    assert double(2) == 4, "double(2) should be 4"
'''
HINTS = '''# Hints for exercise 01: one table per check (the check function's name), most specific hint last.
[test_adds]
hints = ["first add hint", "second add hint", "third add hint: lesson 01, section 1"]

[test_doubles]
hints = ["the only doubles hint"]
'''
STUB = "raise NotImplementedError('not done yet: return the sum')"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-lesson course with its exercise built and its hints file; the working directory is in it."""
    (tmp_path / "course.toml").write_text('[[lesson]]\nid = "01"\nslug = "demo"\ntitle = "Demo"\nsummary = "A demo."\n')
    write_notebook(tmp_path / "solutions/01_demo.ipynb",
                   [("markdown", "# 01 · Demo"), ("code", SETUP), ("code", ANSWER), ("code", CHECKS)])
    (tmp_path / "solutions/hints").mkdir()
    (tmp_path / "solutions/hints/01_demo.toml").write_text(HINTS)
    build(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURSE_ROOT", raising=False)
    return tmp_path


def hint_in_process(capsys, *args):
    code = cli.main(["hint", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_hints_unlock_one_by_one_and_are_remembered(tiny, capsys):
    # a pristine exercise: every check not started, no kernel needed
    outputs = [hint_in_process(capsys, "01") for _ in range(4)]
    assert all(code == 0 for code, _, _ in outputs)
    first, second, third, fourth = (out for _, out, _ in outputs)
    assert "first check not passed is test_adds (… not started)" in first
    assert "Hint 1 of 3: first add hint" in first and "second" not in first
    assert "`course hint 01` again for the next hint" in first
    assert "Hint 2 of 3: second add hint" in second
    assert "Hint 3 of 3: third add hint" in third and "solutions/01_demo.ipynb" in third
    assert "All 3 hints for this check were shown" in fourth
    assert all(text in fourth for text in ("1. first add hint", "2. second add hint", "3. third add hint"))
    state = json.loads((tiny / ".course/hints.json").read_text())
    assert state == {"01": {"test_adds": 3}}

    # `course check` ran on an edited exercise: its cached report (fresh for this file) is used
    exercise = tiny / "exercises/01_demo.ipynb"
    exercise.write_text(exercise.read_text().replace(STUB, "return a + b"))
    cli._remember(exercise, Report(str(exercise), [CheckResult("test_adds", "passed"),
                                                   CheckResult("test_doubles", "failed", "double(2) should be 4")]))
    code, out, _ = hint_in_process(capsys, "01")
    assert "test_doubles (✘ failed)" in out and "check says: double(2) should be 4" in out
    assert "Hint 1 of 1: the only doubles hint" in out and "last hint" in out
    assert "checking" not in out  # nothing re-run
    cli._remember(exercise, Report(str(exercise), [CheckResult("test_adds", "passed"), CheckResult("test_doubles", "passed")]))
    code, out, _ = hint_in_process(capsys, "01")
    assert code == 0 and "Every check of exercise 01 passes (2 of 2): no hint needed." in out


def test_unknown_lesson_missing_or_broken_hints_say_so_in_one_line(tiny, capsys):
    code, out, err = hint_in_process(capsys, "99")
    assert code == 2 and err.startswith("course: no lesson '99'") and not out
    hints = tiny / "solutions/hints/01_demo.toml"
    hints.write_text(HINTS.replace('"the only doubles hint"', '"a", "b", "c", "d"'))
    code, _, err = hint_in_process(capsys, "01")
    assert code == 2 and f"[test_doubles] must hold only `hints = [...]`, 1 to {MAX_HINTS}" in err
    hints.write_text("[test_adds\n")
    code, _, err = hint_in_process(capsys, "01")
    assert code == 2 and "solutions/hints/01_demo.toml: cannot be read" in err and len(err.splitlines()) == 1
    hints.unlink()
    code, _, err = hint_in_process(capsys, "01")
    assert code == 2 and err.strip() == (
        "course: exercise 01 has no hints yet (solutions/hints/01_demo.toml is missing): "
        "the worked answer is solutions/01_demo.ipynb"
    )
    assert not (tiny / ".course/hints.json").exists()


def test_course_hint_runs_the_check_when_no_fresh_result_exists(tiny):
    exercise = tiny / "exercises/01_demo.ipynb"
    exercise.write_text(exercise.read_text().replace(STUB, "return a + b"))

    from tests.test_cli import course  # in-process (its docstring says why): the check's kernel is a process of its own

    def course_hint():
        return course("hint", "1", cwd=tiny, env={"PYTHONPATH": str(ROOT)})

    done = course_hint()
    assert done.returncode == 0, done.stderr
    assert "checking exercises/01_demo.ipynb" in done.stdout
    assert "first check not passed is test_doubles (… not started)" in done.stdout
    assert "Hint 1 of 1: the only doubles hint" in done.stdout
    again = course_hint()  # the run's result was kept for `course status`: no second run
    assert "checking" not in again.stdout and "Its one hint was shown:\n  1. the only doubles hint" in again.stdout


def test_hint_in_the_notebook_uses_the_checks_run_in_its_kernel(tiny):
    """The generated exercise imports `hint`; JupyterLab names the notebook to the kernel (JPY_SESSION_NAME)."""
    import nbformat
    from nbclient import NotebookClient

    exercise = tiny / "exercises/01_demo.ipynb"
    notebook = nbformat.reads(exercise.read_text().replace(STUB, "return a + b"), as_version=4)
    # before any check ran, only the notebook's path (its metadata) can say which exercise this is
    notebook.cells.insert(2, nbformat.v4.new_code_cell("hint()"))
    notebook.cells += [nbformat.v4.new_code_cell("hint()"), nbformat.v4.new_code_cell("hint()")]
    from coursekit.kernels import AsyncUnixSocketKernelManager

    client = NotebookClient(notebook, timeout=60, allow_errors=True, kernel_name="python3",
                            kernel_manager_class=AsyncUnixSocketKernelManager,
                            resources={"metadata": {"path": str(exercise.parent)}})
    client.execute(env={**os.environ, "PYTHONPATH": str(ROOT), "JPY_SESSION_NAME": str(exercise)})
    early, first, second = ("".join(o.get("text", "") for o in cell.outputs) for cell in (notebook.cells[2], *notebook.cells[-2:]))
    assert early.startswith("Run the check cells of exercise 01 first"), early
    assert "Exercise 01: the first check not passed is test_doubles (… not started)" in first, first
    assert "Hint 1 of 1: the only doubles hint" in first
    assert "Its one hint was shown:\n  1. the only doubles hint" in second, second
    assert json.loads((tiny / ".course/hints.json").read_text()) == {"01": {"test_doubles": 1}}


def test_hint_without_a_checks_run_asks_for_one_and_names_an_unknown_notebook(tmp_path, monkeypatch, capsys):
    from coursekit import checks, hints

    monkeypatch.setattr(checks, "KERNEL_RESULTS", {})
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)  # pytest run from a notebook kernel has it
    monkeypatch.chdir(ROOT)
    hints.hint(1)  # an int names the lesson too
    assert "Run the check cells of exercise 01 first" in capsys.readouterr().out
    hints.hint()  # no notebook path, no checks run: cannot tell
    assert "cannot tell which exercise this notebook is" in capsys.readouterr().out
    first_check = notebook_check_ids(read_notebook(LESSONS[1].solution))[0]
    monkeypatch.setattr(checks, "KERNEL_RESULTS", {first_check: {"status": "passed", "message": ""}})
    assert hints._lesson_from_checks({first_check}, ROOT) == LESSONS[1]


def test_the_notebook_path_may_be_the_servers_relative_one(tiny, monkeypatch):
    """JupyterLab names the notebook by its absolute path; a path relative to the server's folder works too."""
    from coursekit.hints import _notebook_path

    monkeypatch.chdir(tiny / "exercises")  # where a kernel runs
    monkeypatch.setenv("JPY_SESSION_NAME", "exercises/01_demo.ipynb")
    assert _notebook_path() == tiny / "exercises/01_demo.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(tiny / "exercises/01_demo.ipynb"))
    assert _notebook_path() == tiny / "exercises/01_demo.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "untitled.txt")
    assert _notebook_path() is None


def test_a_hunts_last_hint_names_the_real_package_as_the_answer():
    """A hunt's solution notebook holds only the checks: its answer is the package the copy was made from."""
    from coursekit.hints import worked_answer
    from coursekit.hunt import is_hunt

    hunts = [lesson for lesson in lessons() if is_hunt(lesson)]
    assert hunts, "no hunt exercise to test"
    for lesson in hunts:
        where, sentence = worked_answer(lesson)
        assert where == "capstone/taskservice" and "solutions/" not in sentence, sentence
        assert f"diff -ru {where} exercises/{lesson.stem}/taskservice" in sentence, sentence
    plain = next(lesson for lesson in lessons() if not is_hunt(lesson))
    assert worked_answer(plain)[0] == f"solutions/{plain.solution.name}"
