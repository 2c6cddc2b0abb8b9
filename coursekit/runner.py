"""Run a notebook headless and report each check (what `course check` and the tests use)."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coursekit.checks import REPORT_ENV, RESULTS_MIMETYPE
from coursekit.manifest import CourseError, Lesson, lesson_for_notebook

STATUSES = ("passed", "failed", "not-started", "error")
CHECK_MAGIC = "%%ipytest"


@dataclass
class CheckResult:
    id: str
    status: str
    message: str = ""


@dataclass
class RunResult:
    """One "Run All": the first cell error (if any) and every check's result."""

    checks: list[CheckResult]
    cell_errors: list[str] = field(default_factory=list)  # "cell 4: NameError: name 'x' is not defined"
    seconds: float = 0.0
    # sealed runs (grading): each check cell's index -> the results messages it displayed, unjudged
    payloads: dict[int, list] = field(default_factory=dict)
    kernel_exit: int | None = None  # the kernel's exit code when it died (-N: killed by signal N)


@dataclass
class Report:
    notebook: str
    checks: list[CheckResult]
    problem: str = ""  # one line about the notebook itself (syntax error, timeout, ...)

    @property
    def all_passed(self) -> bool:
        return bool(self.checks) and all(c.status == "passed" for c in self.checks)

    def to_json(self) -> dict:
        data = {"notebook": self.notebook, "checks": [asdict(c) for c in self.checks]}
        if self.problem:
            data["problem"] = self.problem
        return data


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _is_check_cell(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and _source(cell).lstrip().startswith(CHECK_MAGIC)


# CPython 3.11's AST constructor counts its recursion depth in state the threads share: two threads parsing
# at once can fail with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905; seen
# under load when a thread parsed beside the main thread). `course grade --jobs N` prepares submissions in
# threads, so the parses here take turns.
_AST_PARSE = threading.Lock()


def check_ids(cell_source: str) -> list[str]:
    """Names of the test functions in one %%ipytest cell (in order)."""
    body = cell_source.split("\n", 1)[1] if "\n" in cell_source else ""
    try:
        with _AST_PARSE:
            tree = ast.parse(body)
    except SyntaxError:
        return re.findall(r"^\s*(?:async\s+)?def\s+(test_\w+)", body, flags=re.M)
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


def notebook_check_ids(notebook: dict) -> list[str]:
    ids: list[str] = []
    for cell in notebook.get("cells", []):
        if _is_check_cell(cell):
            ids.extend(check_ids(_source(cell).lstrip()))
    return ids


def read_notebook(path: Path) -> dict:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CourseError(f"{path}: no such notebook") from None
    except (OSError, ValueError) as exc:
        raise CourseError(f"{path}: not a readable notebook ({exc})") from None
    if not isinstance(notebook, dict) or "cells" not in notebook:
        raise CourseError(f"{path}: not a notebook (no cells)")
    return notebook


def _timed_out(index: int, seconds: float) -> str:
    return f"cell {index + 1}: still running after {seconds:.0f} s, interrupted (an endless loop or a wait that never ends?)"


def _report_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _first_error(cell: dict) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename')}: {value[0]}" if value else str(output.get("ename"))
    return None


KERNEL_START_ATTEMPTS = 3


@contextlib.contextmanager
def _kernel_started(client, env: dict[str, str]):
    """client.setup_kernel, tried again when the kernel died at its start because one of its ports was taken.

    jupyter_client picks five free ports, releases them and hands them to the kernel, which binds them a
    moment later: a kernel started meanwhile by another process (xdist workers, another run) can take one
    first, and the kernel dies with "Address already in use" ("Kernel died before replying to kernel_info").
    A new start picks new ports.
    """
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        started = client.setup_kernel(env=env)
        try:
            started.__enter__()
        except RuntimeError as exc:
            if "died before replying to kernel_info" not in str(exc) or attempt == KERNEL_START_ATTEMPTS:
                raise
            client.km = client.kc = None  # the next start makes a new kernel manager, with new ports
            continue
        break
    try:
        yield
    except BaseException as exc:
        if not started.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        started.__exit__(None, None, None)


def execute(
    path: Path,
    *,
    runs: int = 1,
    cell_timeout: float = 120,
    total_timeout: float = 600,
    kernel_name: str = "python3",
    notebook_data: dict | None = None,
    sealed: bool = False,
    workdir: Path | None = None,
) -> list[RunResult]:
    """Run every cell of a notebook `runs` times in ONE kernel ("Run All" repeated).

    Errors do not stop the run: each later cell still executes, as each check is
    reported on its own. A cell that runs past its time is interrupted and reported.
    The notebook file is not modified. `notebook_data`, when given, is run instead of the
    file's content (in the file's folder, or in `workdir`).

    sealed=True (grading, inside the sandbox): no report file the kernel could write to; each
    check cell's results messages are returned as they came (RunResult.payloads) for the grader
    to judge outside the sandbox.
    """
    import nbformat
    from nbclient import NotebookClient

    from coursekit.kernels import AsyncUnixSocketKernelManager

    notebook = nbformat.reads(json.dumps(notebook_data or read_notebook(path)), as_version=4)
    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        report_file = Path(tmp) / "checks.jsonl"
        env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        if not sealed:
            env[REPORT_ENV] = str(report_file)
        client = NotebookClient(
            notebook,
            timeout=cell_timeout,
            allow_errors=True,
            interrupt_on_timeout=True,
            kernel_name=kernel_name,
            kernel_manager_class=AsyncUnixSocketKernelManager,  # no TCP ports to race for (coursekit/kernels.py)
            record_timing=False,
            # no TCP-transport warning on stderr; no IPython history file (a SQLite write per cell, nbval's choice too)
            extra_arguments=["--IPKernelApp.log_level=ERROR", "--HistoryManager.hist_file=:memory:"],
            resources={"metadata": {"path": str(workdir or path.parent.resolve())}},
        )
        results: list[RunResult] = []
        deadline = time.monotonic() + total_timeout
        with _kernel_started(client, env):
            for _ in range(runs):
                results.append(run_cells(client, notebook, None if sealed else report_file, cell_timeout=cell_timeout,
                                         deadline=deadline, total_timeout=total_timeout, sealed=sealed))
    return results


def run_cells(client, notebook, report_file: Path | None, *, cell_timeout: float, deadline: float,
              total_timeout: float, sealed: bool = False) -> RunResult:
    """One Run All of `notebook` (an nbformat node) in the kernel of `client` (see execute).

    The checks' results are read from `report_file` (the kernel's COURSE_CHECK_REPORT), which is
    then removed; sealed runs keep each check cell's results messages instead.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    payloads: dict[int, list] = {}
    kernel_exit = None
    started = time.monotonic()
    errors: list[str] = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"cell {index + 1}: not run, the notebook's time limit ({total_timeout:.0f} s) was used up")
            break
        client.timeout = max(1, int(min(cell_timeout, left)))  # nbclient: an int (a float raises TraitError)
        cell.outputs = []
        size_before = _report_size(report_file) if report_file else 0
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            errors.append(_timed_out(index, client.timeout))
            continue
        except DeadKernelError:
            errors.append(f"cell {index + 1}: the kernel died (out of memory, or the process exited)")
            kernel_exit = _exit_code(client)
            break
        finally:
            if sealed and _is_check_cell(cell):
                payloads[index] = [o["data"][RESULTS_MIMETYPE] for o in cell.outputs
                                   if o.get("output_type") == "display_data" and RESULTS_MIMETYPE in o.get("data", {})]
        problem = _first_error(cell)
        if problem is not None and problem.startswith("KeyboardInterrupt"):
            # nbclient interrupted the kernel at the time limit (interrupt_on_timeout)
            errors.append(_timed_out(index, client.timeout))
            continue
        if problem is None or problem.startswith("NotImplementedError: not done yet"):
            continue  # a stub raising is the exercise's normal state, not a problem
        if _is_check_cell(cell) and (payloads.get(index) or (report_file and _report_size(report_file) > size_before)):
            continue  # checks ran and reported: failing checks are results, not problems
        errors.append(f"cell {index + 1}: {problem}")
    recorded = []
    if report_file and report_file.exists():
        recorded = [json.loads(line) for line in report_file.read_text(encoding="utf-8").splitlines() if line]
        report_file.unlink()
    return RunResult(
        checks=[CheckResult(r["id"], r["status"], r["message"]) for r in recorded],
        cell_errors=errors,
        seconds=time.monotonic() - started,
        payloads=payloads,
        kernel_exit=kernel_exit,
    )


def _exit_code(client) -> int | None:
    """The dead kernel's exit code (-N when a signal killed it), when the client can tell."""
    try:
        process = getattr(client.km.provisioner, "process", None)
        return process.wait(timeout=5) if process is not None else None
    except Exception:  # a courtesy for the report: never let it hide the run's result
        return None


def expected_checks(path: Path, notebook: dict, lesson: Lesson | None = None) -> list[str]:
    """The checks a notebook should have: its lesson's solution's, else its own."""
    if lesson is None:
        try:
            lesson = lesson_for_notebook(path)
        except CourseError:
            pass
    if lesson is not None and lesson.solution.is_file() and lesson.solution.resolve() != path.resolve():
        return notebook_check_ids(read_notebook(lesson.solution))
    return notebook_check_ids(notebook)


def with_original_checks(notebook: dict, solution: dict) -> tuple[dict, bool]:
    """The notebook with its check cells replaced by the solution's, in order (missing ones appended).

    Returns (notebook, whether any check cell differed): a grader must not trust checks that a
    submission could have edited into `def test_...(): pass`.
    """
    originals = [cell for cell in solution["cells"] if _is_check_cell(cell)]
    cells, used, changed = [], 0, False
    for cell in notebook["cells"]:
        if _is_check_cell(cell):
            if used < len(originals):
                changed |= _source(cell) != _source(originals[used])
                cells.append({**cell, "source": _source(originals[used])})
                used += 1
            else:
                changed = True  # an extra check cell of the submission's: not graded
            continue
        cells.append(cell)
    if used < len(originals):
        changed = True
        cells.extend({**cell, "outputs": [], "execution_count": None} for cell in originals[used:])
    return {**notebook, "cells": cells}, changed


def check(
    path: Path,
    *,
    cell_timeout: float = 120,
    total_timeout: float = 600,
    original_checks: bool = False,
    lesson: Lesson | None = None,
) -> Report:
    """Run one exercise (or any) notebook and report every expected check.

    original_checks=True (grading): the lesson's solution's check cells are run in place of the
    notebook's own, and an edited check cell is reported as a problem. `lesson` overrides the
    lesson found from the notebook's metadata or name.
    """
    path = Path(path)
    notebook = read_notebook(path)
    expected = expected_checks(path, notebook, lesson)
    present = set(notebook_check_ids(notebook))
    if not expected:
        raise CourseError(f"{path}: has no check cells (%%ipytest cells with test_ functions)")
    edited = False
    if original_checks:
        lesson = lesson or lesson_for_notebook(path)
        if lesson is None or not lesson.solution.is_file():
            raise CourseError(f"{path}: cannot tell which lesson this is, so its checks cannot be verified")
        notebook, edited = with_original_checks(notebook, read_notebook(lesson.solution))
        present = set(expected)
    run = execute(path, cell_timeout=cell_timeout, total_timeout=total_timeout, notebook_data=notebook)[0]
    return report_of(path, run, expected, present, edited)


def report_of(path: Path, run: RunResult, expected: list[str], present: set[str], edited: bool = False) -> Report:
    """The Report of one Run All: every expected check, in order, then the checks a learner added."""
    got: dict[str, CheckResult] = {}
    for result in run.checks:
        got[result.id] = result  # the last run of a check wins (a cell run twice)
    problem = run.cell_errors[0] if run.cell_errors else ""
    if edited:
        problem = "its check cells differ from the course's: graded with the original checks" + (f"; {problem}" if problem else "")
    checks = []
    for check_id in expected:
        if check_id in got:
            checks.append(got[check_id])
        elif check_id not in present:
            checks.append(CheckResult(check_id, "error", "this check is not in the notebook (a check cell was deleted or edited?): `course reset NN` gives a fresh exercise with every check; your attempt is saved in attempts/ to copy your code back from"))
        else:
            checks.append(CheckResult(check_id, "error", f"did not run: {problem}" if problem else "did not run"))
    for result in run.checks:  # checks a learner added: report them too
        if result.id not in expected:
            checks.append(result)
    return Report(notebook=str(path), checks=checks, problem=problem)
