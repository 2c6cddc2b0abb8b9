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
    "tests/test_openapi_contracts.py",  # one app per item: about 20-40 s each, mostly waiting on the app
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class LessonScheduling(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in ONE_UNIT_PER_ITEM else path

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                self.ordered = True
                for scope in work_order(self.workqueue):
                    self.workqueue.move_to_end(scope)
            super()._assign_work_unit(node)

    return LessonScheduling(config, log)


def work_order(units: dict[str, dict]) -> list[str]:
    """The order the workers take the units in.

    A corpus keeps a CPU busy; a lesson or solution notebook mostly waits (servers, sleeps that
    timing demos need). Each kind is spread evenly over the run, so the waits of one worker are
    filled by another's CPU work (all the corpora first left a tail of notebooks and idle CPUs).
    Within a kind, the largest first (items as the measure), so the run ends on small units.
    """
    def kind(scope: str) -> str:
        if scope.startswith("tests/corpus/"):
            return "corpus"
        if scope.startswith(("notebooks/", "solutions/")):
            return "notebook"
        return "other"

    by_kind: dict[str, list[str]] = {}
    for scope in sorted(units, key=lambda s: (-len(units[s]), s)):
        by_kind.setdefault(kind(scope), []).append(scope)
    # each unit at its fraction of the way through its own kind's list
    placed = [((index + 0.5) / len(scopes), scope) for scopes in by_kind.values() for index, scope in enumerate(scopes)]
    return [scope for _, scope in sorted(placed)]
