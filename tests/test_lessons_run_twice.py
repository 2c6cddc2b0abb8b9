"""Every lesson notebook survives Run All twice in one kernel."""

import pytest

from coursekit.manifest import lessons
from coursekit.runner import execute
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_lesson_survives_run_all_twice(lesson):
    runs = execute(lesson.notebook, runs=2)
    assert [run.cell_errors for run in runs] == [[], []]
