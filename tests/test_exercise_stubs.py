"""Every check of every generated exercise reports not-started (the stub's "not done yet"), never a NameError.

An incident hunt (coursekit/hunt.py) has no stubs: its exercise tests a copy of the service with every incident
planted, so each check reports failed, with its teaching message (the incident is still happening).
"""

import pytest

from coursekit.hunt import is_hunt
from coursekit.manifest import lessons
from coursekit.runner import check
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_every_check_is_not_started_on_the_stub(lesson):
    report = check(lesson.exercise)
    if is_hunt(lesson):
        wrong = [(c.id, c.status, c.message) for c in report.checks if c.status != "failed" or len(c.message) < 40]
        assert not wrong, f"on the planted copy these checks do not fail with a teaching message: {wrong}"
        assert not report.problem, report.problem
        return
    wrong = [(c.id, c.status, c.message) for c in report.checks if c.status != "not-started"]
    assert not wrong, f"on the generated exercise these checks are not 'not-started': {wrong}"
    assert all("not done yet" in c.message for c in report.checks)
    assert not report.problem, report.problem
