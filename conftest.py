"""pytest wiring for the course (options live in pyproject.toml [tool.pytest.ini_options]).

- nbval validates notebooks/ and solutions/ against their committed outputs,
  with nbval_sanitize.cfg for what legitimately varies.
- exercises/ and attempts/ are learners' work: never collected, even when
  someone types `pytest --nbval exercises/...` from the project root.
- Under xdist, all cells of one notebook must run on one worker, in order:
  each notebook's items get an xdist_group of their own (--dist loadgroup);
  other tests are spread one by one.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).parent
collect_ignore_glob = ["exercises/*", "attempts/*", ".venv/*"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group(item.path.relative_to(ROOT).as_posix()))
