"""pytest wiring for the course (options live in pyproject.toml [tool.pytest.ini_options]).

- nbval validates notebooks/ and solutions/ against their committed outputs,
  with nbval_sanitize.cfg for what legitimately varies.
- exercises/ and attempts/ are learners' work: never collected, even when
  someone types `pytest --nbval` from the project root.
- xdist runs with --dist loadfile: all cells of one notebook on one worker, in order.
  The slow per-lesson invariants are split over three test files so they spread too.
"""

collect_ignore_glob = ["exercises/*", "attempts/*", ".venv/*"]
