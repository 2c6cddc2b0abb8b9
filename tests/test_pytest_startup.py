"""coursekit/pytest_startup.py: the xdist controller compiles the test modules once for all its workers.

Each worker imports every test module to collect it, and pytest rewrites its asserts first (about
1.4 s of CPU per worker for the suite's modules) unless a pyc of the rewritten module is beside it,
which pytest writes only where bytecode is written. Here, with PYTHONDONTWRITEBYTECODE as on the
machines the suite runs on, each pytest process records which modules it rewrote itself.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from coursekit.pytest_startup import _plain_pyc_is_current, modules_to_rewrite
from tests.conftest import ROOT

# Loaded by each pytest process (`-p recorder`): every file of the project it rewrites, one line in a file named by its role.
RECORDER = """
import os
from pathlib import Path

import _pytest.assertion.rewrite as rewrite

original = rewrite._rewrite_test

def recorded(fn, config):
    if not fn.is_relative_to(os.getcwd()):  # the plugins' own modules (xdist's scheduler, ...)
        return original(fn, config)
    role = os.environ.get("PYTEST_XDIST_WORKER", "controller")  # xdist sets it in each worker
    with open(Path(os.environ["REWRITES"]) / role, "a") as log:
        log.write(f"{fn.name}\\n")
    return original(fn, config)

rewrite._rewrite_test = recorded
"""
TEST_MODULE = "from capstone.helper import TWO\n\n\ndef test_one():\n    assert 1 + 1 == TWO\n"


def rewrites_by_process(project: Path, log_folder: Path, *options: str) -> dict[str, list[str]]:
    """Run the project's tests on one xdist worker; the files the controller and the worker (gw0) rewrote."""
    log_folder.mkdir()
    outer = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}  # this run's own worker
    env = {**outer, "PYTHONDONTWRITEBYTECODE": "1", "REWRITES": str(log_folder),
           "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "1", "-q", "-p", "recorder", *options,
         # plugins that take no part here (their imports cost 1-2 s of CPU per process)
         "-p", "no:cacheprovider", "-p", "no:nbval", "-p", "no:schemathesis", "-p", "no:hypothesispytest",
         "-p", "no:anyio", "tests"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    return {log.name: sorted(log.read_text().splitlines()) for log in log_folder.iterdir()}


def test_the_worker_reads_what_the_controller_compiled_and_an_edit_is_compiled_again(tmp_path):
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "capstone").mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "recorder.py").write_text(RECORDER)
    (project / "capstone" / "__init__.py").write_text("")
    helper = project / "capstone" / "helper.py"  # a module of a project package (PROJECT_PACKAGES)
    helper.write_text("TWO = 2\n")
    module = project / "tests" / "test_sample.py"
    module.write_text(TEST_MODULE)
    helper_pyc = Path(importlib.util.cache_from_source(str(helper)))

    # without the plugin (the control): nothing is written, the worker rewrites its test module itself
    assert rewrites_by_process(project, tmp_path / "without") == {"gw0": ["test_sample.py"]}
    assert not (project / "tests" / "__pycache__").exists() and not helper_pyc.exists()

    # with it: the controller rewrites the module once, before it starts the worker, which reads its pyc
    assert rewrites_by_process(project, tmp_path / "with", "-p", "coursekit.pytest_startup") == {"controller": ["test_sample.py"]}
    assert len(list((project / "tests" / "__pycache__").glob("test_sample.*-pytest-*.pyc"))) == 1
    assert _plain_pyc_is_current(helper, helper_pyc)  # and the package's plain pyc, which Python reads as usual

    # the pycs are checked against their source: an edited module is compiled again, once, by the controller
    module.write_text(TEST_MODULE + "\n\ndef test_two():\n    assert 2 * 2 == 4\n")
    helper.write_text("TWO = 1 + 1\n")
    assert rewrites_by_process(project, tmp_path / "edited", "-p", "coursekit.pytest_startup") == {"controller": ["test_sample.py"]}
    assert _plain_pyc_is_current(helper, helper_pyc)


def test_what_the_controller_compiles_is_what_the_workers_rewrite(tmp_path):
    """conftests and test files under the run's folders (not under norecursedirs), and Python files named on
    the command line; never a notebook named there (it parses as Python: its pyc would be junk in notebooks/)."""
    for path in ("conftest.py", "tests/conftest.py", "tests/test_a.py", "tests/helper.py", "tests/deep/b_test.py",
                 "tests/build/test_copy.py", "notebooks/01_x.ipynb", "scripts/check_x.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x = 1\n")
    ini = {"python_files": ["test_*.py", "*_test.py"], "norecursedirs": ["build"]}
    config = SimpleNamespace(getini=ini.__getitem__, rootpath=tmp_path, invocation_params=SimpleNamespace(dir=tmp_path),
                             args=["tests", "notebooks/01_x.ipynb", "scripts/check_x.py::test_it"])
    found = [path.relative_to(tmp_path).as_posix() for path in modules_to_rewrite(config)]
    assert found == ["conftest.py", "scripts/check_x.py", "tests/conftest.py", "tests/deep/b_test.py", "tests/test_a.py"]
