"""The README tells the truth: the course map is current, and CI runs its test command."""

import json
import re
import subprocess
import sys
import tomllib

from coursekit.readme import render
from tests.conftest import ROOT, import_start

README = (ROOT / "README.md").read_text()


def test_course_map_is_current():
    assert render(README) == README, "the course map is stale: run `python -m coursekit.readme`"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command_exactly():
    test_command = ".venv/bin/python -m pytest"
    assert test_command in readme_commands()
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], ".ci/run must call the README's test command as written"
    assert "python3 start.py --setup" in ci, ".ci/run installs the way a learner does"


def test_start_py_opens_the_start_notebook():
    start = import_start()
    command = start.jupyter_command(["--no-browser"])
    assert command[1:5] == ["-m", "jupyter", "lab", "notebooks/00_start_here.ipynb"]
    assert (ROOT / start.START_NOTEBOOK).is_file()
    assert "python3 start.py" in readme_commands()


def test_start_py_refuses_an_old_python_with_a_clear_message():
    code = (
        "import sys; sys.version_info = (3, 10, 0); sys.argv = ['start.py', '--setup']; "
        "exec(compile(open('start.py').read(), 'start.py', 'exec'), {'__name__': '__main__', '__file__': 'start.py'})"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "needs Python 3.11 or newer" in done.stderr


def test_pytest_nbval_never_collects_exercises():
    """An instructor's `pytest --nbval` validates lessons and solutions, never learners' unfinished work."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--collect-only", "-q", "-p", "no:xdist", "-o", "addopts=",
         # as the suite's addopts: plugins and an import that take no part in collecting notebooks (3-4 s of CPU)
         "-p", "coursekit.pytest_startup", "-p", "no:schemathesis", "-p", "no:hypothesispytest",
         # collecting runs no assert: no rewriting of every test module's asserts (~1 s of CPU where no .pyc is written)
         "--assert=plain"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any(line.startswith("notebooks/") for line in collected)
    assert any(line.startswith("solutions/") for line in collected)
    assert not [line for line in collected if line.startswith("exercises/")]


def test_tests_readme_names_every_test_file():
    listed = (ROOT / "tests/README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "tests").glob("*.py")) if p.name != "__init__.py" and f"`{p.name}`" not in listed]
    assert not missing, f"tests/README.md has no line for {missing}: add one"


def test_start_notebooks_stored_course_map_lists_every_lesson():
    # its output is not compared by nbval (NBVAL_IGNORE_OUTPUT), but it is what a reader sees unrun
    notebook = json.loads((ROOT / "notebooks/00_start_here.ipynb").read_text(encoding="utf-8"))
    stored = json.dumps([c.get("outputs", []) for c in notebook["cells"]])
    titles = [lesson["title"] for lesson in tomllib.loads((ROOT / "course.toml").read_text())["lesson"]]
    missing = [t for t in titles if t not in stored]
    assert not missing, f"the stored course map in 00_start_here lacks {missing}: run `course record 00`"
