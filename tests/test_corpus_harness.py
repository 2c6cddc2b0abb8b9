"""coursekit.corpus: the harness that proves each exercise's checks against wrong and right answers.

One kernel runs a tiny solution notebook; entries are judged the way tests/corpus/*.toml are.
"""

import pytest

from coursekit.corpus import CorpusRun, Entry, in_run_order, load, regions_of, replaced_cells, right_batches
from coursekit.manifest import CourseError
from tests.conftest import write_notebook

SETUP = "import pytest\nfrom coursekit import setup_checks\nsetup_checks()"
PARTS = '''def double(x):
    ### BEGIN SOLUTION: double it
    return 2 * x
    ### END SOLUTION


def triple(x):
    ### BEGIN SOLUTION
    return 3 * x
    ### END SOLUTION


def pair(x):
    ### BEGIN SOLUTION
    a = x
    ### END SOLUTION
    ### BEGIN SOLUTION
    b = x
    ### END SOLUTION
    return (a, b)'''
CHECKS = '''%%ipytest

def test_double():
    assert double(2) == 4, f"double(2) gave {double(2)}, expected 4"


def test_triple():
    assert triple(2) == 6


def test_pair():
    assert pair(1) == (1, 1), f"pair(1) gave {pair(1)}"'''


@pytest.fixture(scope="module")
def solution(tmp_path_factory):
    folder = tmp_path_factory.mktemp("course")
    return write_notebook(folder / "solutions" / "01_x.ipynb",
                          [("code", SETUP), ("code", PARTS), ("code", CHECKS), ("code", "print('after the checks')")])


@pytest.fixture(scope="module")
def run(solution):
    with CorpusRun(solution) as corpus_run:
        yield corpus_run


def wrong(check, code, name="double", message=""):
    return Entry("wrong", "w", {name: code}, "a concept", check, message)


def right(**regions):
    return Entry("right", "r", regions, "a reason")


def test_regions_are_named_by_their_function_and_order(solution):
    import json

    notebook = json.loads(solution.read_text())
    assert list(regions_of(notebook)) == ["double", "triple", "pair", "pair#2"]
    new = replaced_cells(notebook, {"pair#2": "b = -x\nb += 0"})[1]
    assert "    b = -x\n    b += 0\n    ### END SOLUTION\n    return (a, b)" in new
    assert "    a = x" in new  # the first region of pair is untouched


def test_a_caught_wrong_answer_holds_with_the_checks_message(run):
    result = run.try_entry(wrong("test_double", "return x + 1", message="expected 4"))
    assert result.ok, result.summary
    assert result.summary == "test_double failed: double(2) gave 3, expected 4"
    assert list(result.checks) == ["test_double"]  # a wrong answer runs only its check


def test_a_wrong_answer_that_passes_does_not_hold(run):
    result = run.try_entry(wrong("test_double", "return x + x"))
    assert not result.ok and "PASSED this wrong answer" in result.summary


def test_a_failure_without_a_message_does_not_hold(run):
    result = run.try_entry(wrong("test_triple", "return 0", name="triple"))
    assert not result.ok and "without a message" in result.summary


def test_a_crash_is_not_a_teaching_failure(run):
    result = run.try_entry(wrong("test_double", "return x.upper()"))
    assert not result.ok and "reported error" in result.summary and "AttributeError" in result.summary


def test_the_message_must_say_what_the_entry_expects(run):
    result = run.try_entry(wrong("test_double", "return 0", message="negative"))
    assert not result.ok and "does not say 'negative'" in result.summary


def test_right_answers_pass_every_check_and_the_solution_is_restored_after_each_entry(run):
    run.try_entry(wrong("test_double", "return 0"))
    result = run.try_entry(right(double="return x * 2", **{"pair#2": "b = 0 + x"}))
    assert result.ok, result.summary
    assert sorted(result.checks) == ["test_double", "test_pair", "test_triple"]
    refused = run.try_entry(right(triple="return 3"))
    assert not refused.ok and "a correct answer is refused: test_triple failed" in refused.summary
    assert run.try_entry(right(triple="return x * 3")).ok  # nothing of the refused entry stayed


def test_check_cells_above_the_replaced_region_run_too(tmp_path):
    path = write_notebook(tmp_path / "solutions" / "02_x.ipynb", [
        ("code", SETUP), ("code", "def first():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\ndef test_first():\n    assert later() == 2, f'later() gave {later()}'"),
        ("code", "def later():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\ndef test_later():\n    assert later() == 2, 'later() must be 2'"),
    ])
    with CorpusRun(path) as early:
        assert early.try_entry(wrong("test_first", "return 3", name="later")).ok
        result = early.try_entry(right(later="return 1 + 1"))
        assert result.ok and sorted(result.checks) == ["test_first", "test_later"], result.summary


def test_an_entry_is_judged_on_the_solution_even_when_an_earlier_one_changed_cells_above_it(tmp_path):
    # The kernel is restored lazily: an entry in a later cell must not see an earlier entry's code.
    path = write_notebook(tmp_path / "solutions" / "03_x.ipynb", [
        ("code", SETUP), ("code", "def first():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        ("code", "def later():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\ndef test_both():\n    assert (first(), later()) == (1, 2), f'got {(first(), later())}'"),
    ])
    broken_first, fine_later = wrong("test_both", "return 0", name="first"), right(later="return 1 + 1")
    assert in_run_order([broken_first, fine_later], path) == [fine_later, broken_first]  # lowest region first
    with CorpusRun(path) as run:
        assert run.try_entry(broken_first).ok  # leaves first() returning 0 in the kernel...
        result = run.try_entry(fine_later)     # ...which must be restored before this runs
        assert result.ok, result.summary


def test_right_answers_on_different_regions_are_judged_together_and_alone_when_one_is_refused(run):
    a = Entry("right", "a", {"double": "return x * 2"}, "why")
    b = Entry("right", "b", {"triple": "return x + x + x"}, "why")
    c = Entry("right", "c", {"double": "return x << 1"}, "why")  # same region as a: another group
    bad = Entry("right", "bad", {"pair": "a = -x"}, "why")
    assert right_batches([a, b, c, bad]) == [[a, b, bad], [c]]
    together = run.try_together([a, b])
    assert [r.ok for r in together] == [True, True] and "(together with b)" in together[0].summary
    assert sorted(together[0].checks) == ["test_double", "test_pair", "test_triple"]
    first, second = run.judge(a, [a, b, c]), run.judge(b, [a, b, c])  # one group: one run, stored for b
    assert first.ok and second.ok and "(together with b)" in first.summary and "(together with a)" in second.summary
    judged = run.try_together([a, bad, b])  # one refused answer: each is judged again on its own
    assert [(r.entry.id, r.ok) for r in judged] == [("a", True), ("bad", False), ("b", True)]
    assert "a correct answer is refused: test_pair failed" in judged[1].summary and "together" not in judged[0].summary


def test_unknown_regions_and_checks_are_named(run):
    assert "no answer region named ['nope']" in run.try_entry(wrong("test_double", "pass", name="nope")).summary
    assert "which the solution does not have" in run.try_entry(wrong("test_nope", "return 0")).summary


def test_a_malformed_corpus_file_says_what_is_wrong(tmp_path):
    path = tmp_path / "01_x.toml"
    path.write_text("[[wrong]]\nid = 'a'\nconcept = 'c'\n[wrong.regions]\ndouble = 'return 0'\n")
    with pytest.raises(CourseError, match="names the check that must catch it"):
        load(path)
    path.write_text("[[right]]\nid = 'a'\nwhy = 'w'\nregions = {double = 'x'}\n"
                    "[[right]]\nid = 'a'\nwhy = 'w'\nregions = {double = 'x'}\n")
    with pytest.raises(CourseError, match="used twice"):
        load(path)
    path.write_text("[[right]]\nid = 'a'\nwhy = 'w'\nchek = 'x'\nregions = {double = 'x'}\n")
    with pytest.raises(CourseError, match="unknown keys"):
        load(path)


def test_a_right_answer_that_timed_out_in_a_kernel_earlier_entries_left_is_judged_again_in_a_fresh_one(tmp_path):
    # The check hangs only in a kernel that a wrong answer "poisoned" (as a blocked thread or a used-up
    # executor would): the right answer then times out there, and passes in a fresh kernel.
    path = write_notebook(tmp_path / "solutions" / "03_x.ipynb", [
        ("code", SETUP),
        ("code", "def value():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\nimport builtins, time\n\n\ndef test_value():\n"
                 "    if getattr(builtins, 'poisoned', False) and value() == 1:\n        time.sleep(60)\n"
                 "    assert value() == 1, f'value() gave {value()}, expected 1'"),
    ])
    with CorpusRun(path, cell_timeout=3) as run:
        poison = "import builtins\nbuiltins.poisoned = True\nreturn 2"
        assert run.try_entry(wrong("test_value", poison, name="value", message="expected 1")).ok
        result = run.try_entry(right(value="return 0 + 1"))
        assert result.ok and result.checks == {"test_value": ("passed", "")}, result.summary
        # a wrong answer gets no second chance: one that times out is judged as it ran
        hung = run.try_entry(wrong("test_value", "import time\ntime.sleep(60)\nreturn 2", name="value", message="expected 1"))
        assert not hung.ok and "did not finish" in hung.summary, hung.summary


# Two check cells with a counting cell between them: a wrong answer whose check is in the first one
# stops there (the cells after a check cannot change what it reported); one whose check is in the
# last one runs every cell up to it, the first check cell left out.
STOP_CELLS = [
    ("code", SETUP),
    ("code", "def value():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
    ("code", "%%ipytest\n\ndef test_value():\n    assert value() == 1, f'value() gave {value()}, expected 1'"),
    ("code", "cells_after_the_first_check = globals().get('cells_after_the_first_check', 0) + 1"),
    ("code", "def later():\n    ### BEGIN SOLUTION\n    return 2 * value()\n    ### END SOLUTION"),
    ("code", "%%ipytest\n\ndef test_later():\n    assert later() == 2, f'later() gave {later()}, expected 2'"),
]


def kernel_value(run, expression):
    from coursekit.corpus import _code_cell

    cell = _code_cell(f"print(repr({expression}))")
    run._client.execute_cell(cell, 0)
    return "".join(output.get("text", "") for output in cell.outputs).strip()


def test_a_wrong_answer_stops_at_the_cell_holding_its_check_and_that_check_runs(tmp_path):
    path = write_notebook(tmp_path / "solutions" / "04_x.ipynb", STOP_CELLS)
    with CorpusRun(path) as run:
        assert kernel_value(run, "cells_after_the_first_check") == "1"  # the solution's run
        early = run.try_entry(wrong("test_value", "return 5", name="value", message="expected 1"))
        assert early.ok, early.summary
        assert early.checks == {"test_value": ("failed", "value() gave 5, expected 1")}
        assert kernel_value(run, "cells_after_the_first_check") == "1"  # stopped at its check's cell
        # its check in the last cell: every cell up to it runs, with only that check
        late = run.try_entry(wrong("test_later", "return 5", name="value", message="later() gave 10"))
        assert late.ok and list(late.checks) == ["test_later"], late.summary
        assert kernel_value(run, "cells_after_the_first_check") == "2"
        # the answer left value() returning 5 above this right answer's region: restored before it
        assert run.try_entry(right(later="return value() + 1")).ok
        assert kernel_value(run, "value()") == "1"


def test_a_wrong_answer_stopped_at_its_check_leaves_nothing_to_the_entries_after_it(tmp_path):
    # An entry in a lower cell, then one that stops above it: the lower cell still holds the first
    # entry's code (stale), and an entry that needs the solution there gets it back.
    path = write_notebook(tmp_path / "solutions" / "05_x.ipynb", STOP_CELLS)
    with CorpusRun(path) as run:
        assert run.try_entry(wrong("test_later", "return 3", name="later", message="later() gave 3")).ok
        assert run.try_entry(wrong("test_value", "return 7", name="value", message="value() gave 7")).ok
        assert kernel_value(run, "later()") == "3"  # not re-run: below the second entry's check
        judged = run.try_entry(Entry("right", "r", {"value": "return 2 - 1"}, "a reason"))
        assert judged.ok and sorted(judged.checks) == ["test_later", "test_value"], judged.summary
        assert kernel_value(run, "later()") == "2"


def test_a_cell_error_is_named_by_its_type_and_message_with_tracebacks_in_minimal_mode(run):
    # The corpus kernel renders tracebacks without frames (KERNEL_ARGUMENTS): an error is still
    # reported as its type and message, the only parts of it the judges read.
    try:
        errors = run._run(range(1, 2), {1: "def helper():\n    return 1 / 0\n\nhelper()"}, skip_checks=True)
        assert errors == ["cell 2: ZeroDivisionError: division by zero"]
        assert kernel_value(run, "get_ipython().InteractiveTB.mode") == "'Minimal'"
    finally:
        assert run._run(range(1, 2), {}, skip_checks=True) == []  # the solution's cell again
    result = run.try_entry(wrong("test_double", "return x.upper()"))
    assert "reported error" in result.summary and "AttributeError" in result.summary, result.summary


def test_the_corpus_kernel_runs_checks_without_assert_rewriting_and_a_learners_run_keeps_it(tmp_path):
    # A bare assert's text shows whether ipytest rewrote the cell: pytest's introspection
    # ("assert 4 == 5 ...") when rewritten, nothing when plain. The corpus kernel skips rewriting
    # (COURSE_CHECK_PLAIN_ASSERTS, see coursekit.checks.setup_checks); `course check` (a learner's
    # run, nbval too: neither sets it) keeps it.
    from coursekit.runner import check

    path = write_notebook(tmp_path / "solutions" / "04_x.ipynb", [
        ("code", SETUP), ("code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\ndef test_bare_assert():\n    try:\n        assert double(2) == 5\n"
                 "    except AssertionError as exc:\n        said = str(exc)\n"
                 "    assert False, f'a bare assert said {said!r}'"),
    ])
    with CorpusRun(path) as corpus_run:
        result = corpus_run.try_entry(wrong("test_bare_assert", "return x * 2"))
    assert result.checks["test_bare_assert"] == ("failed", "a bare assert said ''"), result.checks
    learners = {c.id: c for c in check(path).checks}["test_bare_assert"]
    assert learners.status == "failed", learners
    assert learners.message.startswith("a bare assert said 'assert 4 == 5"), learners.message


def test_the_corpus_kernel_compiles_each_text_once_and_runs_it_every_time(tmp_path):
    # compile_each_source_once: IPython's transforms, the cell's file name, its parse and its code
    # objects are kept per text; the code itself runs on every entry, and a changed text is new code.
    path = write_notebook(tmp_path / "solutions" / "06_x.ipynb", [
        ("code", SETUP), ("code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        ("code", "%%ipytest\n\nimport builtins\nbuiltins.check_cell_runs = getattr(builtins, 'check_cell_runs', 0) + 1\n\n\n"
                 "def test_double():\n    assert double(2) == 4, f'double(2) gave {double(2)}, expected 4'"),
    ])
    with CorpusRun(path) as run:
        assert kernel_value(run, "type(get_ipython().compile).__name__") == "'CompileOnce'"
        for answer in ("return x + 1", "return x + 1", "return x - 1"):
            result = run.try_entry(wrong("test_double", answer, message="expected 4"))
            assert result.ok, result.summary
        assert result.checks == {"test_double": ("failed", "double(2) gave 1, expected 4")}  # the third text ran
        assert kernel_value(run, "builtins.check_cell_runs") == "3"  # once per entry
        hits = kernel_value(run, "get_ipython().input_transformer_manager.transform_cell.cache_info().hits")
        assert int(hits) > 0
        # a crash is still located in the learner's cell (the file names are ipykernel's own)
        crash = run.try_entry(wrong("test_double", "return x.upper()"))
        assert "raised in double: `return x.upper()`" in crash.summary, crash.summary


def test_the_exercise_runs_first_in_the_fresh_kernel_as_course_check_runs_it(tmp_path):
    # CorpusRun(exercise=...): the generated exercise's Run All, in its own folder, before the solution;
    # its report is `course check`'s (a NameError in a check is an error there, not hidden by the
    # solution's definitions, which come after), and the entries are judged on the solution as before.
    from coursekit.checks import NOT_DONE_MARK

    path = write_notebook(tmp_path / "solutions" / "97_x.ipynb", [
        ("code", SETUP), ("code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        ("code", "helper = lambda: 1"),
        ("code", "%%ipytest\n\nimport os\n\n\ndef test_double():\n    assert double(2) == 4, f'double(2) gave {double(2)}, expected 4'\n\n\n"
                 "def test_helper():\n    assert helper() == 1, 'helper() must be 1'\n\n\n"
                 "def test_folder():\n    assert os.path.basename(os.getcwd()) == 'solutions', os.getcwd()"),
    ])
    exercise = write_notebook(tmp_path / "exercises" / "97_x.ipynb", [
        ("code", SETUP), ("code", f"def double(x):\n    raise NotImplementedError('{NOT_DONE_MARK}: double it')"),
        ("code", "%%ipytest\n\nimport os\n\n\ndef test_double():\n    assert double(2) == 4, 'x'\n\n\n"
                 "def test_helper():\n    assert helper() == 1, 'helper() must be 1'\n\n\n"
                 "def test_folder():\n    assert os.path.basename(os.getcwd()) == 'exercises', os.getcwd()"),
    ])
    with CorpusRun(path, exercise=exercise) as run:
        statuses = {c.id: c.status for c in run.exercise_report.checks}
        assert statuses == {"test_double": "not-started", "test_helper": "error", "test_folder": "passed"}, statuses
        assert "NameError" in {c.id: c.message for c in run.exercise_report.checks}["test_helper"]
        result = run.try_entry(wrong("test_double", "return x + 1", message="expected 4"))
        assert result.ok, result.summary
        assert run.try_entry(right(double="return x + x")).ok  # test_folder too: back in the solution's folder
