"""Exercise check cells: ipytest's configuration and the plugin that reports each check.

A check cell is a `%%ipytest` cell of small pytest tests. Each test's outcome is sorted:
- passed
- not-started: the code it exercises still raises the stub's NotImplementedError("not done yet ...")
- failed: an assert did not hold; the message is the assert's message (it teaches)
- error: anything else (the one-line cause)

In a notebook the plugin prints one line per check. When COURSE_CHECK_REPORT names a
file (set by `course check`), it also appends one JSON line per check there.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any

import pytest

REPORT_ENV = "COURSE_CHECK_REPORT"
NONCE_OPTION = "--course-nonce"
# `course grade` reads each check cell's results from one display message of this type that
# carries the nonce it put on the cell's `%%ipytest` line (see coursekit/sandbox.py)
RESULTS_MIMETYPE = "application/vnd.course.check-results+json"
DEADLINE_ENV = "COURSE_CHECK_DEADLINE_S"
# Set to "1" by the corpus harness (coursekit/corpus.py) in its kernels only: checks run without
# ipytest's assert rewriting there. Learners, nbval and `course check` keep it.
PLAIN_ASSERTS_ENV = "COURSE_CHECK_PLAIN_ASSERTS"
DEFAULT_DEADLINE_S = 60.0  # far above any honest check (they take well under 10 s), far below "forever"
NOT_DONE_MARK = "not done yet"
SYMBOLS = {"passed": "✔", "failed": "✘", "not-started": "…", "error": "!"}
LABELS = {"passed": "passed", "failed": "failed", "not-started": "not started", "error": "error"}
# The latest result of each check run in this process (a notebook's kernel): what `hint()` reads.
KERNEL_RESULTS: dict[str, dict[str, str]] = {}

INNER_PYTEST_ARGS = [
    "-q",
    "--color=no",
    # The plugin below prints one line per check with its teaching message: pytest's own
    # tracebacks and progress dots would bury it.
    "--tb=no",
    "-rN",
    "-o", "console_output_style=classic",
    "-p", "no:warnings",
    "-p", "no:cacheprovider",
    # Plugins a check never needs; loading them costs about 2.5 s per check cell.
    "-p", "no:nbval",
    "-p", "no:xdist",
    # schemathesis (and hypothesis, which it brings) register pytest plugins: importing schemathesis's
    # costs about 0.35 s of CPU in each kernel's first check run, for checks that never use it.
    "-p", "no:schemathesis",
    "-p", "no:hypothesispytest",
    # These two run gc.collect() twice per pytest session, to surface exceptions raised in __del__
    # and in threads as warnings, which are off here (no:warnings). In a kernel that has imported
    # FastAPI, SQLAlchemy and matplotlib, that is about 0.2 s per check cell: most of its overhead.
    "-p", "no:unraisableexception",
    "-p", "no:threadexception",
    # Check cells are rewritten by ipytest itself; pytest's own rewriting only re-compiles plugin
    # modules (anyio's, ...) in every kernel's first check run, about half a second of CPU.
    "--assert=plain",
    # The project's own pytest options (--nbval, -n 2, ...) must not leak into the inner run.
    "-o", "addopts=",
    # Nor its conftest.py files (the check cell's folder is inside the project): they wire the project's
    # own suite, and loading them imported nbval, jsonschema and its IRI grammar: 1.6 s per kernel.
    "--noconftest",
    "-p", "coursekit.checks",
]


def setup_checks() -> None:
    """Configure ipytest once per notebook, in its setup cell.

    run_in_thread: `@pytest.mark.anyio` tests need an event loop of their own, and the
    notebook's loop is already running. raise_on_error: a failing check cell raises,
    so nbval (and Run All) stop on a solution whose checks fail.

    rewrite_asserts (ipytest's AST transformer, on every cell run after this one) is off only where
    PLAIN_ASSERTS_ENV is "1": the corpus harness, whose judges read a check's own message and never
    pytest's `assert a == b` introspection (first_paragraph drops it), and which pays 0.04-0.06 s of
    CPU per run of a 500-line check cell for it.
    """
    import ipytest

    ipytest.autoconfig(run_in_thread=True, raise_on_error=True, addopts=list(INNER_PYTEST_ARGS),
                       rewrite_asserts=os.environ.get(PLAIN_ASSERTS_ENV) != "1")


def _chain(exc: BaseException | None) -> list[BaseException]:
    """The exception, its causes/contexts and, for groups, their members."""
    seen: list[BaseException] = []
    todo = [exc] if exc is not None else []
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend([current.__cause__, current.__context__])
        todo.extend(getattr(current, "exceptions", ()) or ())
    return seen


def _is_stub(exc: BaseException) -> bool:
    return isinstance(exc, NotImplementedError) and NOT_DONE_MARK in str(exc).lower()


def is_not_done(exc: BaseException | None) -> bool:
    """True when `exc`, or anything it wraps, is a stub's "not done yet" error."""
    return any(_is_stub(e) for e in _chain(exc))


def first_paragraph(text: str) -> str:
    """An assert's own message, without pytest's `assert a == b` introspection."""
    lines = []
    for line in text.strip().splitlines():
        if line.startswith("assert ") or not line.strip():
            break
        lines.append(line.rstrip())
    return " ".join(lines).strip()


def classify(
    excinfo: pytest.ExceptionInfo[BaseException] | None, app_errors: list[BaseException]
) -> tuple[str, str]:
    """(status, message) for one finished check; app_errors: raised meanwhile by served apps."""
    if excinfo is None:
        return "passed", ""
    exc = excinfo.value
    stubs = [e for e in _chain(exc) if _is_stub(e)] or [
        e for app_exc in app_errors for e in _chain(app_exc) if _is_stub(e)
    ]
    if stubs:
        return "not-started", str(stubs[0])
    if isinstance(exc, AssertionError):
        return "failed", first_paragraph(str(exc)) or "an assert failed (it has no message)"
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return "error", message + _where_in_notebook(excinfo)


def _where_in_notebook(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """", raised in create_task: `return tasks[task_id]`" for the innermost frame of a notebook cell.

    Each notebook cell's code runs from its own file, /tmp/ipykernel_<pid>/<hash>.py: a frame from
    such a file other than the check cell's is the learner's code.
    """
    try:
        check_files = {entry.path for entry in excinfo.traceback if entry.name.startswith("test_")}
        for entry in reversed(excinfo.traceback):
            if "ipykernel_" in str(entry.path) and entry.path not in check_files:
                return f", raised in {entry.name}: `{str(entry.statement).strip()}`"
    except Exception:  # a location is a courtesy: never let it hide the result
        pass
    return ""


class _Recorder:
    def __init__(self, config: pytest.Config | None = None) -> None:
        self.config = config
        self.results: list[dict[str, str]] = []
        self._app_errors_before = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        from coursekit.server import RECENT_APP_ERRORS

        self._app_errors_before = len(RECENT_APP_ERRORS)
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        outcome = yield
        report = outcome.get_result()
        if call.when == "call" or (call.when == "setup" and report.failed):
            from coursekit.server import RECENT_APP_ERRORS

            new_app_errors = RECENT_APP_ERRORS[self._app_errors_before :] if call.when == "call" else []
            status, message = classify(call.excinfo, new_app_errors)
            name = getattr(item, "originalname", None) or item.name
            self.results.append({"id": name, "status": status, "message": message})
            KERNEL_RESULTS[name] = {"status": status, "message": message}

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Any:
        """No progress letters (".F"): the one-line-per-check summary says it better."""
        if report.when == "call" or report.failed:
            return report.outcome, "", report.outcome.upper()
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        terminalreporter.write_line("")
        for result in self.results:
            line = f"{SYMBOLS[result['status']]} {result['id']}: {LABELS[result['status']]}"
            if result["message"]:
                line += f": {result['message']}"
            terminalreporter.write_line(line)
        nonce = self.config.getoption("course_nonce", None) if self.config else None
        if nonce:
            from IPython.display import display

            display({RESULTS_MIMETYPE: {"nonce": nonce, "results": self.results}}, raw=True)
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as report:
                for result in self.results:
                    report.write(json.dumps(result) + "\n")


class DeadlineExceeded(AssertionError):
    """A test stopped by its deadline: it failed because it ran out of time, whatever it asserts.

    An AssertionError, so a check reports it as failed; a type of its own, so code that grades a
    failure (exercise 09 counts a failing learner test as a caught bug) can tell it from a real one.
    """


def with_deadline(test: Any, seconds: float, message: str | None = None) -> Any:
    """An async test that fails (DeadlineExceeded: `message`) after `seconds` instead of hanging.

    A hung async check cannot be stopped from JupyterLab (the checks run in a thread, and
    interrupting the kernel does not reach it); a deadline inside its own event loop can.
    """
    import anyio  # here, not at the top: the CLI imports this module and never needs it

    message = message or (
        f"did not finish within {seconds:g} s: something waits forever (a stream that never ends "
        "read in-process, a lock or event never released, a request to a server that is not running?)"
    )

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            with anyio.fail_after(seconds):
                return await test(*args, **kwargs)
        except TimeoutError:
            raise DeadlineExceeded(message) from None

    return bounded


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seconds = float(os.environ.get(DEADLINE_ENV) or DEFAULT_DEADLINE_S)
    for item in items:
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test):
            item.obj = with_deadline(test, seconds)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(NONCE_OPTION, dest="course_nonce", default=None, help="(course grade) tag this run's results")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Recorder(config), "coursekit-check-recorder")
