"""The course in JupyterLab, in a real browser, as a learner uses it.

JupyterLab is started with start.py's own command (`start.jupyter_command`, what `python3 start.py`
execs after its setup) on a copy of the course in a temporary folder, so no notebook of the
repository is touched. Headless Chromium then opens lesson 00 and runs Run > Run All Cells: every
code cell must run, in order, with no error output. Then File > Open from Path: the exercise's
check cell must read "… not started" (the cell opened collapsed, its code shown by a click), and
`hint()` typed in a new cell must give the first hint (the kernel knows its notebook); the
solution's "✔ passed". The screenshot of the solution is
kept in build/test-artifacts/. The server, its kernels and the browser are stopped, always.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.browser import POLL_MS, chromium_page, chromium_path, screenshot
from tests.conftest import ROOT, import_start
from tests.test_jupyterlab import first_answer, served_port, stop, without_iri_grammar

# JupyterLab's user settings for the run: every cell in the page (no windowing, so all can be read),
# no autosave (nothing is written back), no update check or news (no network here).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}
START_NOTEBOOK, EXERCISE, SOLUTION = (f"{folder}/00_start_here.ipynb" for folder in ("notebooks", "exercises", "solutions"))
# each takes the open notebook's panel (a CSS selector)
CELL_PROMPTS = """panel => [...document.querySelectorAll(panel + ' .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"""
ERROR_OUTPUTS = """panel => [...document.querySelectorAll(panel + ' .jp-OutputArea-output')]
  .filter(out => out.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr')
  .map(out => out.textContent.slice(0, 500))"""
LAST_OUTPUT = """panel => [...document.querySelectorAll(panel + ' .jp-CodeCell')].pop().querySelector('.jp-OutputArea').textContent"""


def course_copy(where: Path) -> Path:
    """The course's notebooks and manifest in a temporary root: JupyterLab and its kernels work there."""
    where.mkdir()
    shutil.copy2(ROOT / "course.toml", where / "course.toml")
    for folder in ("notebooks", "exercises", "solutions"):
        # not ipytest's t_<hex>.py: a check cell running on another worker writes and deletes it in that folder
        shutil.copytree(ROOT / folder, where / folder,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "t_*.py", "__pycache__"))
    return where


def repository_notebooks() -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in ("notebooks", "exercises", "solutions") for p in (ROOT / folder).glob("00_*.ipynb")}


def code_cells(notebook: Path) -> int:
    return sum(c["cell_type"] == "code" for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"])


def notebook_ready(page, path: str, cells: int) -> str:
    """The panel of the notebook at `path`, once its cells are shown and its kernel is started and idle.

    Its toolbar says "idle" before any kernel exists ("No Kernel"); Run All then asks to select one.
    """
    # a tab's tooltip holds its document's path ("Path: exercises/..."): the same names in three folders
    tab = page.locator(f'.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current[title*="Path: {path}"]')
    tab.wait_for(timeout=60_000)
    panel = f"#{tab.get_attribute('data-id')}"
    page.wait_for_function(f"document.querySelectorAll('{panel} .jp-CodeCell').length === {cells}", timeout=60_000,
                           polling=POLL_MS)
    page.locator(f"{panel} .jp-Toolbar-kernelName", has_text="Python 3").wait_for(timeout=60_000)
    page.locator(f"{panel} .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
    return panel


def run_all_cells(page, path: str, cells: int, timeout_s: float) -> tuple[str, list[str]]:
    """Run > Run All Cells in the open notebook; wait until every code cell has run (a number in its prompt)."""
    panel = notebook_ready(page, path, cells)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(f"""() => {{ const prompts = ({CELL_PROMPTS})('{panel}');
        return prompts.every(p => /^\\[\\d+\\]:$/.test(p)); }}""", timeout=timeout_s * 1000, polling=POLL_MS)
    page.locator(f"{panel} .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
    return panel, page.evaluate(CELL_PROMPTS, panel)


@contextmanager
def _screenshot_on_failure(page):
    """What the page showed when a step failed (build/test-artifacts/jupyterlab_failure.png), and any dialog's text."""
    try:
        yield
    except Exception as exc:
        screenshot(page, "jupyterlab_failure.png")
        dialogs = page.locator(".jp-Dialog").all_text_contents()
        if dialogs:
            raise AssertionError(f"JupyterLab showed a dialog: {dialogs}") from exc
        raise


def open_from_path(page, path: str) -> None:
    """File > Open from Path…, as a learner types it."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Open from Path")).click()
    page.locator(".jp-Dialog input").fill(path)
    page.keyboard.press("Enter")


def test_a_learner_runs_lesson_00_the_exercise_and_the_solution_in_jupyterlab(tmp_path):
    chromium_path()  # skip (or fail in CI) before starting anything
    before = repository_notebooks()
    root = course_copy(tmp_path / "course")
    settings = tmp_path / "settings"
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values), encoding="utf-8")
    start = import_start()
    token = secrets.token_hex(16)
    options = ["--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}"]
    command = start.jupyter_command(options, python=sys.executable)
    # start.py serves the repository (root_dir); this run serves the copy (traitlets takes one value)
    [root_option] = [n for n, arg in enumerate(command) if arg.startswith("--ServerApp.root_dir=")]
    command[root_option] = f"--ServerApp.root_dir={root}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = subprocess.Popen(command, cwd=root, env=without_iri_grammar(env, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Chromium starts while JupyterLab does (seconds each, neither needs the other)
        with chromium_page(viewport={"width": 1400, "height": 1000}) as page:
            port = served_port(server, tmp_path / "runtime")  # port 0: see served_port
            base = f"http://127.0.0.1:{port}"
            contents = first_answer(server, lambda: httpx.get(f"{base}/api/contents",
                                                              headers={"Authorization": f"token {token}"}, timeout=5), port=port)
            assert {"course.toml", "notebooks"} <= {item["name"] for item in contents.json()["content"]}

            with _screenshot_on_failure(page):
                page.goto(f"{base}/lab/tree/{START_NOTEBOOK}?token={token}", wait_until="load")
                cells = code_cells(root / START_NOTEBOOK)
                panel, prompts = run_all_cells(page, START_NOTEBOOK, cells, timeout_s=120)
                assert prompts == [f"[{n}]:" for n in range(1, cells + 1)], f"not every cell ran, in order: {prompts}"
                assert page.evaluate(ERROR_OUTPUTS, panel) == [], "lesson 00 shows an error or stderr output"

                open_from_path(page, EXERCISE)
                # quieter exercises (coursekit.build): the check cell opens as one line, and a click on it shows
                # the checks' code (a collapsed cell has no prompt to read, so it is expanded before Run All)
                panel = notebook_ready(page, EXERCISE, code_cells(root / EXERCISE))
                check_cell = page.locator(f"{panel} .jp-CodeCell").last
                placeholder = check_cell.locator(".jp-InputPlaceholder")
                assert placeholder.text_content().strip() == "%%ipytest", "the exercise's check cell did not open collapsed"
                assert check_cell.locator(".cm-content").count() == 0, "a collapsed check cell shows its editor"
                placeholder.locator(".jp-Placeholder-content").click()
                check_cell.locator(".cm-content", has_text="def test_hello_greets_by_name").wait_for(timeout=10_000)
                panel, _ = run_all_cells(page, EXERCISE, code_cells(root / EXERCISE), 120)
                exercise_checks = page.evaluate(LAST_OUTPUT, panel)
                assert "… test_hello_greets_by_name: not started" in exercise_checks, exercise_checks
                assert "passed" not in exercise_checks.replace("not started", ""), exercise_checks
                # hint() in a new cell: JupyterLab names the notebook to its kernel, so hint() knows the exercise
                check_cell.locator(".jp-OutputArea").click()
                for key in ("Escape", "b", "Enter"):
                    page.keyboard.press(key)
                page.keyboard.type("hint()")
                page.keyboard.press("Enter")
                page.keyboard.type("print(__session__)")  # how it knows (ipykernel stores JPY_SESSION_NAME there)
                page.keyboard.press("Control+Enter")
                hinted = page.locator(f"{panel} .jp-CodeCell").last.locator(".jp-OutputArea")
                hinted.filter(has_text="Hint 1 of").wait_for(timeout=60_000)
                hint_text = hinted.text_content()
                assert "Exercise 00: the first check not passed is test_hello_greets_by_name" in hint_text, hint_text
                assert hint_text.rstrip().endswith(str(root / EXERCISE)), hint_text

                open_from_path(page, SOLUTION)
                cells = code_cells(root / SOLUTION)
                panel, prompts = run_all_cells(page, SOLUTION, cells, 120)
                solution_checks = page.evaluate(LAST_OUTPUT, panel)
                assert "✔ test_hello_greets_by_name: passed" in solution_checks, solution_checks
                assert "✔ test_hello_defaults_to_world: passed" in solution_checks and "✘" not in solution_checks
                assert prompts == [f"[{n}]:" for n in range(1, cells + 1)] and page.evaluate(ERROR_OUTPUTS, panel) == []
                page.locator(f"{panel} .jp-CodeCell").last.scroll_into_view_if_needed()
                screenshot(page, "jupyterlab_solution_00.png")
    finally:
        stop(server, seconds=30)
    assert repository_notebooks() == before, "a notebook of the repository changed during the test"
