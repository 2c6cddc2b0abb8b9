"""tests/run_all_again.py: the second Run All in nbval's kernel catches what only a re-run shows."""

from tests.conftest import ROOT, write_notebook

pytest_plugins = ["pytester"]

ONLY_ONCE = 'assert "ran" not in globals(), "this cell ran before"\nran = True'
CHECKS_SETUP = "from coursekit import setup_checks\nsetup_checks()\nruns = globals().get('runs', 0) + 1"
CHECK_FIRST_RUN_ONLY = '%%ipytest\n\ndef test_first_run_only():\n    assert runs == 1, f"run {runs}: state left by the first run"'
CHECK_ALWAYS = "%%ipytest\n\ndef test_ok():\n    assert 1 + 1 == 2"


def test_the_second_run_fails_notebooks_that_break_on_a_rerun_and_only_those(pytester, monkeypatch):
    root = pytester.path
    write_notebook(root / "notebooks" / "01_breaks.ipynb", [("markdown", "# demo"), ("code", "x = 1"), ("code", ONLY_ONCE)])
    write_notebook(root / "solutions" / "01_breaks.ipynb", [("code", CHECKS_SETUP), ("code", CHECK_FIRST_RUN_ONLY)])
    write_notebook(root / "solutions" / "02_fine.ipynb", [("code", CHECKS_SETUP), ("code", CHECK_ALWAYS)])
    write_notebook(root / "elsewhere" / "scratch.ipynb", [("code", ONLY_ONCE)])  # not a course notebook: no second run
    pytester.makeini("[pytest]\n")  # the temporary folder is the course root
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess(
        "--nbval", "-p", "tests.run_all_again", "-p", "no:xdist", "-p", "no:cacheprovider", "-rA",
        # as the suite's addopts: an import and two plugins that play no part here (3-4 s of CPU)
        "-p", "coursekit.pytest_startup", "-p", "no:schemathesis", "-p", "no:hypothesispytest",
        "notebooks", "solutions", "elsewhere",
    )
    result.assert_outcomes(passed=8, failed=2)
    result.stdout.fnmatch_lines_random([
        "FAILED notebooks/01_breaks.ipynb::Run All again*",
        "FAILED solutions/01_breaks.ipynb::Run All again*",
        "PASSED solutions/02_fine.ipynb::Run All again*",
        "*Cell 1: AssertionError: this cell ran before*",
        "*the second Run All in one kernel failed*",
    ])
    result.stdout.no_fnmatch_line("*elsewhere*Run All again*")
