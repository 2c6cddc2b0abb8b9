"""pytest wiring for the course (options live in pyproject.toml [tool.pytest.ini_options]).

- nbval validates notebooks/ and solutions/ against their committed outputs,
  with nbval_sanitize.cfg for what legitimately varies.
- exercises/ and attempts/ are learners' work: never collected, even when
  someone types `pytest --nbval` from the project root.
- xdist runs with --dist loadfile: all cells of one notebook on one worker, in order.
  The slow per-lesson invariants are split over three test files so they spread too.
"""

import pytest

collect_ignore_glob = ["exercises/*", "attempts/*", ".venv/*"]


ONE_UNIT_PER_ITEM = {
    "tests/test_lessons_run_twice.py",
    "tests/test_solutions_run_twice.py",
    "tests/test_exercise_stubs.py",
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class LessonScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in ONE_UNIT_PER_ITEM else path

    return LessonScheduling(config, log)
