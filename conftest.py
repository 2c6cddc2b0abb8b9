"""pytest wiring for the course (options live in pyproject.toml [tool.pytest.ini_options]).

- nbval validates notebooks/ and solutions/ against their committed outputs,
  with nbval_sanitize.cfg for what legitimately varies.
- exercises/ and attempts/ are learners' work: never collected, even when
  someone types `pytest --nbval` from the project root.
- xdist runs with --dist loadfile: all cells of one notebook on one worker, in order.
  Each lesson's stub checks are a unit of their own, so they spread over the workers too.
- Each lesson and solution gets a second Run All in nbval's kernel (tests/run_all_again.py).
"""

import pytest

# Lessons and solutions: a second Run All in nbval's kernel (tests/run_all_again.py).
pytest_plugins = ["tests.run_all_again"]

collect_ignore_glob = ["exercises/*", "attempts/*", ".venv/*"]


ONE_UNIT_PER_ITEM = {
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
