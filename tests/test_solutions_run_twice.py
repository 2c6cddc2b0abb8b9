"""Every solution survives Run All twice in one kernel, and every check passes both times."""

import pytest

from coursekit.manifest import lessons
from coursekit.runner import execute, notebook_check_ids, read_notebook
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_solution_survives_run_all_twice_and_passes_every_check(lesson):
    expected = notebook_check_ids(read_notebook(lesson.solution))
    runs = execute(lesson.solution, runs=2)
    for n, run in enumerate(runs, start=1):
        assert run.cell_errors == [], f"run {n}: {run.cell_errors}"
        assert [c.id for c in run.checks] == expected, f"run {n}: checks that ran: {[c.id for c in run.checks]}"
        failing = [(c.id, c.status, c.message) for c in run.checks if c.status != "passed"]
        assert not failing, f"run {n}: {failing}"
