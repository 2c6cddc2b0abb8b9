"""Every check of every generated exercise reports not-started (the stub's "not done yet"), never a NameError.

An incident hunt (coursekit/hunt.py) has no stubs: its exercise tests a copy of the service with every incident
planted, so each check reports failed, with its teaching message (the incident is still happening).

The exercise runs in its corpus unit's kernel, before the solution (coursekit.corpus.CorpusRun._check_exercise:
the Run All of `course check`, in a kernel nothing else has run in): the item
`tests/corpus/NN_slug.toml::stub::every_check_is_not_started` (tests/conftest.py) judges its report with
`assert_the_stub_reports_not_started` below. One kernel start and one import of each lesson's stack serve both.
"""

import pytest

from coursekit.hunt import is_hunt
from coursekit.manifest import lessons
from coursekit.runner import CheckResult, Report
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


def assert_the_stub_reports_not_started(lesson, report: Report) -> None:
    if is_hunt(lesson):
        wrong = [(c.id, c.status, c.message) for c in report.checks if c.status != "failed" or len(c.message) < 40]
        assert not wrong, f"on the planted copy these checks do not fail with a teaching message: {wrong}"
        assert not report.problem, report.problem
        return
    wrong = [(c.id, c.status, c.message) for c in report.checks if c.status != "not-started"]
    assert not wrong, f"on the generated exercise these checks are not 'not-started': {wrong}"
    assert all("not done yet" in c.message for c in report.checks)
    assert not report.problem, report.problem


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_every_exercise_is_run_by_its_corpus_unit(lesson, request):
    # every lesson has a corpus file, and the file's first item is the exercise's stub run
    path = ROOT / "tests" / "corpus" / f"{lesson.stem}.toml"
    assert path.is_file(), f"{lesson.stem}: no corpus file, so nothing runs its generated exercise"
    from tests.conftest import CorpusFile

    items = list(CorpusFile.from_parent(request.session, path=path).collect())
    assert items[0].name == "stub::every_check_is_not_started", [item.name for item in items[:3]]


def test_the_stub_judge_fails_a_check_that_is_not_not_started():
    lesson = next(lesson for lesson in LESSONS if not is_hunt(lesson))
    started = Report("x.ipynb", [CheckResult("test_a", "not-started", "not done yet: part 1"),
                                 CheckResult("test_b", "error", "NameError: name 'helper' is not defined")])
    with pytest.raises(AssertionError, match="not 'not-started'.*NameError"):
        assert_the_stub_reports_not_started(lesson, started)
    with pytest.raises(AssertionError, match="cell 3"):
        assert_the_stub_reports_not_started(lesson, Report("x.ipynb", [started.checks[0]], problem="cell 3: NameError: x"))
    assert_the_stub_reports_not_started(lesson, Report("x.ipynb", [started.checks[0]]))
