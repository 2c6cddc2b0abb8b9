"""Every check of every generated exercise reports not-started (the stub's "not done yet"), never a NameError."""

import pytest

from coursekit.manifest import lessons
from coursekit.runner import check
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_every_check_is_not_started_on_the_stub(lesson):
    report = check(lesson.exercise)
    wrong = [(c.id, c.status, c.message) for c in report.checks if c.status != "not-started"]
    assert not wrong, f"on the generated exercise these checks are not 'not-started': {wrong}"
    assert all("not done yet" in c.message for c in report.checks)
    assert not report.problem, report.problem
