"""Run All again, in the kernel nbval just used: a pytest plugin (loaded by the root conftest.py).

Every lesson and every solution must survive "Run All" twice in one kernel (learners re-run
notebooks all the time). nbval's own run is the first Run All: it starts a fresh kernel, runs
every cell and compares the outputs. This plugin adds one item after each notebook's last nbval
cell, `<notebook>::Run All again`, which re-executes every code cell in that same kernel
before nbval stops it. For a solution it also reads each check's result from the second run:
every check of the notebook must report `passed` (the first run's results are compared by
nbval, as the stored outputs of the check cells).

Reusing nbval's kernel instead of starting one of our own halves what the invariant costs:
one extra Run All per notebook, no extra kernel start.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from queue import Empty

import pytest

from coursekit.checks import REPORT_ENV
from coursekit.runner import notebook_check_ids

FOLDERS = ("notebooks", "solutions")
ITEM_NAME = "Run All again"


class RunAllAgainFailed(Exception):
    pass


def _is_course_notebook(path: Path, root: Path) -> bool:
    return path.suffix == ".ipynb" and path.parent.name in FOLDERS and path.parent.parent == root


def pytest_collection_modifyitems(session, config, items):
    if not config.pluginmanager.hasplugin("nbval"):  # -p no:nbval, or not installed: no nbval items
        return
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval absent: nothing to extend
        return
    last_cell_of = {}
    for index, item in enumerate(items):
        if isinstance(item, IPyNbCell) and _is_course_notebook(Path(item.parent.path), Path(config.rootpath)):
            last_cell_of[item.parent] = index
    if not last_cell_of:
        return
    extended = []
    for index, item in enumerate(items):
        extended.append(item)
        if isinstance(item, IPyNbCell) and last_cell_of.get(item.parent) == index:
            extended.append(RunAllAgain.from_parent(item.parent, name=ITEM_NAME))
    items[:] = extended


class RunAllAgain(pytest.Item):
    """The second Run All of one notebook, in the kernel of nbval's first."""

    def runtest(self):
        notebook_file = self.parent  # nbval's IPyNbFile: its kernel and its parsed notebook
        kernel = notebook_file.kernel
        if kernel is None or not kernel.is_alive():
            raise RunAllAgainFailed("the kernel of the first Run All is gone (it died or timed out): no second run")
        timeout = self.config.option.nbval_cell_timeout
        with tempfile.TemporaryDirectory(prefix="course-again-") as tmp:
            report = Path(tmp) / "checks.jsonl"
            # Where the checks of the second run report (coursekit.checks reads it at report time).
            setup_error = self._execute(kernel, f"import os as _os; _os.environ[{REPORT_ENV!r}] = {str(report)!r}; del _os", timeout)
            if setup_error:
                raise RunAllAgainFailed(f"could not prepare the kernel: {setup_error}")
            errors = []
            code_cells = [cell for cell in notebook_file.nb.cells if cell.cell_type == "code"]
            for number, cell in enumerate(code_cells):
                error = self._execute(kernel, cell.source, timeout)
                if error:
                    errors.append(f"Cell {number}: {error}")
                    if error.startswith("the kernel"):
                        break
            if errors:
                raise RunAllAgainFailed("the second Run All in one kernel failed:\n  " + "\n  ".join(errors))
            if Path(notebook_file.path).parent.name == "solutions":
                self._assert_every_check_passed(notebook_file.nb, report)

    def _assert_every_check_passed(self, notebook, report: Path) -> None:
        expected = notebook_check_ids(notebook)
        results = []
        if report.exists():
            results = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines() if line]
        # pytest may reorder tests (anyio parametrizes async ones): compare as sets
        ran = sorted(r["id"] for r in results)
        if ran != sorted(expected):
            raise RunAllAgainFailed(f"second run: the checks that ran {ran} are not the notebook's {sorted(expected)}")
        failing = [(r["id"], r["status"], r["message"]) for r in results if r["status"] != "passed"]
        if failing:
            raise RunAllAgainFailed(f"second run: checks that did not pass: {failing}")

    @staticmethod
    def _execute(kernel, source: str, timeout: float) -> str | None:
        """Run one cell; return its error as one line, or None."""
        msg_id = kernel.execute_cell_input(source, allow_stdin=False)
        try:
            kernel.await_reply(msg_id, timeout=timeout)
        except Empty:
            kernel.interrupt()
            try:
                kernel.await_idle(msg_id, 10)
            except Empty:
                return "the kernel did not answer after an interrupt"
            return f"still running after {timeout:.0f} s, interrupted"
        error = None
        while True:  # drain this cell's messages until the kernel is idle again
            try:
                msg = kernel.get_message(stream="iopub", timeout=timeout)
            except Empty:
                return "the kernel sent no idle status"
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error" and error is None:
                value = str(msg["content"].get("evalue", "")).strip().splitlines()
                error = f"{msg['content'].get('ename')}: {value[0] if value else ''}".rstrip(": ")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return error

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, RunAllAgainFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.parent.name}: {ITEM_NAME}"
