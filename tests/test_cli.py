"""The `course` CLI as a learner and an instructor use it, broken notebooks included."""

import csv
import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_bwrap, write_notebook

CHECKS = '''%%ipytest
import pytest

def test_passes():
    assert add(1, 2) == 3

def test_fails():
    assert add(2, 2) == 5, "add(2, 2) should be 5 in this test, to fail on purpose"

def test_not_started():
    assert todo() == 1

def test_errors():
    {}["missing"]
'''
SETUP = '''from coursekit import setup_checks
setup_checks()

def add(a, b):
    return a + b

def todo():
    raise NotImplementedError("not done yet: write todo")
'''


@dataclass
class Ran:
    """What a `course` command returned and printed (the fields of subprocess.CompletedProcess the tests read)."""

    returncode: int
    stdout: str
    stderr: str


def course(*args: str, cwd: Path = ROOT, env: dict | None = None) -> Ran:
    """`course ARGS` as a learner types it, run by the CLI's own `main` in this process: its working
    directory and environment variables set for the call and restored after, its output captured, the
    manifest read afresh (a new process reads it anew). A new Python per call cost ~0.6 s of CPU in
    imports (nbclient, jupyter_client, nbformat) the test process has already made; what a command
    starts (kernels, sandboxes, git) is a process of its own either way. The process boundary itself
    (exit status, a closed pipe) is tested by test_output_into_a_closed_pipe_ends_quietly."""
    from coursekit.cli import main
    from coursekit.manifest import _load

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        _load.cache_clear()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main(list(args))
        finally:
            _load.cache_clear()  # nothing read under this call's COURSE_ROOT outlives it
    return Ran(code, out.getvalue(), err.getvalue())


def test_check_reports_each_status_as_json(tmp_path):
    notebook = write_notebook(tmp_path / "mine.ipynb", [("code", SETUP), ("code", CHECKS)])
    done = course("check", str(notebook), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["notebook"] == str(notebook)
    assert [(c["id"], c["status"]) for c in report["checks"]] == [
        ("test_passes", "passed"), ("test_fails", "failed"), ("test_not_started", "not-started"), ("test_errors", "error"),
    ]
    messages = {c["id"]: c["message"] for c in report["checks"]}
    assert messages["test_fails"] == "add(2, 2) should be 5 in this test, to fail on purpose"
    assert messages["test_not_started"] == "not done yet: write todo"
    assert messages["test_errors"] == "KeyError: 'missing'"


def test_check_exits_zero_only_when_all_pass(tmp_path):
    passing = CHECKS.split("def test_fails")[0]
    notebook = write_notebook(tmp_path / "ok.ipynb", [("code", SETUP), ("code", passing)])
    done = course("check", str(notebook))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✔ test_passes" in done.stdout


def test_a_syntax_error_gets_a_one_line_cause_not_a_traceback(tmp_path):
    notebook = write_notebook(tmp_path / "broken.ipynb", [("code", SETUP.replace("return a + b", "return a +")), ("code", CHECKS)])
    done = course("check", str(notebook))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "note: cell 1: SyntaxError" in done.stdout
    assert len(done.stdout.splitlines()) <= 8


def test_a_cell_that_never_ends_is_interrupted_and_reported(tmp_path):
    # endless, and idle while it waits: a `while True: pass` burnt the kernel's CPU for the whole timeout
    endless = "import time\nwhile True:\n    time.sleep(0.05)"
    notebook = write_notebook(tmp_path / "endless.ipynb", [("code", SETUP), ("code", endless), ("code", CHECKS)])
    done = course("check", str(notebook), "--cell-timeout", "3", "--json")
    report = json.loads(done.stdout)
    assert "cell 2: still running after 3 s, interrupted" in report["problem"]
    # the kernel was interrupted, not killed: the checks after it still ran
    assert report["checks"][0] == {"id": "test_passes", "status": "passed", "message": ""}


def test_a_deleted_check_cell_is_reported_per_check(tmp_path):
    exercise = json.loads((ROOT / "exercises/00_start_here.ipynb").read_text())
    exercise["cells"] = [c for c in exercise["cells"] if "%%ipytest" not in "".join(c["source"])]
    path = tmp_path / "00_start_here.ipynb"
    path.write_text(json.dumps(exercise))
    done = course("check", str(path), "--json")
    checks = json.loads(done.stdout)["checks"]
    assert [c["id"] for c in checks] == ["test_hello_greets_by_name", "test_hello_defaults_to_world"]
    assert all(c["status"] == "error" and "not in the notebook" in c["message"] for c in checks)


@pytest.mark.parametrize("content", ["not json at all", '{"no": "cells"}'])
def test_a_file_that_is_not_a_notebook_gets_one_line(tmp_path, content):
    path = tmp_path / "x.ipynb"
    path.write_text(content)
    done = course("check", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith("course: ") and len(done.stderr.strip().splitlines()) == 1


def test_unknown_lesson_lists_the_known_ones():
    done = course("check", "99")
    assert done.returncode == 2 and "no lesson '99'" in done.stderr and "00" in done.stderr


@pytest.fixture
def course_copy(tmp_path):
    for name in ("course.toml",):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("solutions", "exercises"):
        # not ipytest's t_<hex>.py: a check cell running on another worker writes and deletes it in that folder
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("t_*.py", "__pycache__"))
    return tmp_path


def test_status_reruns_only_changed_exercises(course_copy):
    env = {"COURSE_ROOT": str(course_copy)}
    first = course("status", cwd=course_copy, env=env)
    assert first.returncode == 0, first.stderr
    assert "checking" not in first.stdout  # untouched exercises are known to be not started
    assert "00 Start here" in first.stdout and "0/2" in first.stdout

    # the learner solves exercise 00 (here: by taking the solution's cells)
    solved = json.loads((course_copy / "solutions/00_start_here.ipynb").read_text())
    (course_copy / "exercises/00_start_here.ipynb").write_text(json.dumps(solved))
    second = course("status", cwd=course_copy, env=env)
    assert second.stdout.count("checking") == 1 and "checking exercises/00_start_here.ipynb" in second.stdout
    assert "2/2" in second.stdout

    third = course("status", "--json", cwd=course_copy, env=env)
    assert "checking" not in third.stdout
    rows = {row["lesson"]: row for row in json.loads(third.stdout)}
    assert [c["status"] for c in rows["00"]["checks"]] == ["passed", "passed"]


def test_reset_keeps_the_attempt(course_copy):
    env = {"COURSE_ROOT": str(course_copy)}
    exercise = course_copy / "exercises/00_start_here.ipynb"
    exercise.write_text(exercise.read_text().replace("# TODO", "# my attempt"))
    done = course("reset", "0", cwd=course_copy, env=env)
    assert done.returncode == 0, done.stderr
    (saved,) = (course_copy / "attempts").glob("00_start_here-*.ipynb")
    assert "# my attempt" in saved.read_text() and "# my attempt" not in exercise.read_text()


@pytest.fixture(scope="module")
def graded_folder(tmp_path_factory):
    """One folder of submissions graded once, --jobs 3: the two tests below read their own rows (one
    `course grade` less: its sandbox preflight, and mallory's kernel runs beside ada's and bob's)."""
    tmp_path = tmp_path_factory.mktemp("graded")
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copy(ROOT / "solutions/00_start_here.ipynb", submissions / "ada-00_start_here.ipynb")
    shutil.copy(ROOT / "exercises/00_start_here.ipynb", submissions / "bob.ipynb")  # lesson known from metadata
    (submissions / "carol.ipynb").write_text(json.dumps(json.loads((ROOT / "solutions/00_start_here.ipynb").read_text())))
    # A submission whose check cell was edited into `pass` (lesson known from metadata)
    exercise = json.loads((ROOT / "exercises/00_start_here.ipynb").read_text())
    for cell in exercise["cells"]:
        if "%%ipytest" in "".join(cell["source"]):
            cell["source"] = "%%ipytest\ndef test_hello_greets_by_name():\n    pass\n\ndef test_hello_defaults_to_world():\n    pass\n"
    (submissions / "mallory.ipynb").write_text(json.dumps(exercise))
    # --lesson applies to every notebook of the folder: carol's alone is graded again, by a `course grade`
    # of its own process that runs while the folder is graded in this one
    only_carol = tmp_path / "carol"
    only_carol.mkdir()
    shutil.copy(submissions / "carol.ipynb", only_carol / "carol.ipynb")
    forced = subprocess.Popen([sys.executable, "-m", "coursekit", "grade", str(only_carol), "--lesson", "00"], cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = tmp_path / "grades.csv"
        done = course("grade", str(submissions), "--csv", str(out), "--jobs", "3")
        forced_out, forced_err = forced.communicate(timeout=300)
    finally:
        if forced.poll() is None:
            forced.kill()
            forced.wait()
    assert done.returncode == 0, done.stderr
    assert forced.returncode == 0, forced_err
    return {"done": done, "out": out, "submissions": submissions, "forced": forced_out,
            "rows": {Path(r["notebook"]).name: r for r in csv.DictReader(out.open())}}


@needs_bwrap
def test_grade_a_folder_of_submissions(graded_folder):
    rows, out = graded_folder["rows"], graded_folder["out"]
    assert rows["carol.ipynb"]["problem"].startswith("cannot tell which lesson")  # no metadata, no NN_ name
    assert "carol.ipynb: 2/2 checks passed" in graded_folder["forced"]  # graded with --lesson 00
    assert rows["ada-00_start_here.ipynb"]["passed"] == "2" and rows["ada-00_start_here.ipynb"]["total"] == "2"
    assert rows["bob.ipynb"]["passed"] == "0" and rows["bob.ipynb"]["test_hello_greets_by_name"] == "not-started"
    # the check columns in the exercise's order (they were sorted by name: lesson 03's import checks landed
    # between its API checks), so a row reads like the notebook
    header = next(csv.reader(out.open()))
    assert header == ["notebook", "lesson", "passed", "total", "problem", "test_hello_greets_by_name", "test_hello_defaults_to_world"]


@needs_bwrap
def test_grading_runs_the_courses_checks_not_the_submissions(graded_folder):
    """A submission whose check cell was edited into `pass` must not score."""
    row = graded_folder["rows"]["mallory.ipynb"]
    assert row["passed"] == "0", graded_folder["done"].stdout
    assert row["test_hello_greets_by_name"] == "not-started"
    assert "graded with the original checks" in row["problem"]
    assert course("check", str(graded_folder["submissions"] / "mallory.ipynb")).returncode == 0  # the learner's own run trusts them


def test_output_into_a_closed_pipe_ends_quietly():
    # `course --help | head -1`-like: the reader is gone before the CLI writes
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "coursekit", "build", "--check"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    reader_gone.stdout.close()
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_an_async_check_that_never_finishes_fails_at_its_deadline(tmp_path):
    hanging = '''%%ipytest
import asyncio
import pytest

@pytest.mark.anyio
async def test_waits_forever():
    await asyncio.Event().wait()  # e.g. an endless stream read in-process

def test_after_it():
    assert add(1, 2) == 3
'''
    notebook = write_notebook(tmp_path / "hangs.ipynb", [("code", SETUP), ("code", hanging)])
    done = course("check", str(notebook), "--json", env={"COURSE_CHECK_DEADLINE_S": "1"})
    report = json.loads(done.stdout)
    statuses = {c["id"]: (c["status"], c["message"]) for c in report["checks"]}
    assert statuses["test_waits_forever"][0] == "failed", statuses
    assert statuses["test_waits_forever"][1].startswith("did not finish within 1 s: something waits forever")
    assert statuses["test_after_it"] == ("passed", "")  # the cell went on to the next check


def test_corpus_reports_each_entry_and_exits_by_the_verdict():
    result = course("corpus", "00", "--only", "plain_def", "name_required")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✔ wrong name_required") and "test_hello_defaults_to_world failed: " in lines[0]
    assert lines[1].startswith("✔ right plain_def") and lines[1].endswith("all 2 checks passed")
    assert lines[-1] == "2 of 2 entries hold"
    missing = course("corpus", "99")
    assert missing.returncode == 2 and "no lesson '99'" in missing.stderr
