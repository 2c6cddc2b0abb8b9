"""How a check's outcome is classified, and the ipytest configuration."""

import pytest

from coursekit.checks import INNER_PYTEST_ARGS, classify, first_paragraph


def excinfo_of(exc):
    try:
        raise exc
    except BaseException:
        return pytest.ExceptionInfo.from_current()


def test_passed():
    assert classify(None, []) == ("passed", "")


def test_a_stub_is_not_started_even_when_wrapped():
    stub = NotImplementedError("not done yet: write it")
    try:
        try:
            raise stub
        except NotImplementedError as exc:
            raise RuntimeError("while handling the request") from exc
    except RuntimeError:
        info = pytest.ExceptionInfo.from_current()
    assert classify(info, []) == ("not-started", "not done yet: write it")
    group = ExceptionGroup("task group", [ValueError("x"), stub])
    assert classify(excinfo_of(group), [])[0] == "not-started"


def test_a_stub_behind_a_500_of_a_served_app_is_not_started():
    failed_assert = excinfo_of(AssertionError("expected 200, got 500"))
    assert classify(failed_assert, [NotImplementedError("not done yet: x")]) == ("not-started", "not done yet: x")
    assert classify(failed_assert, [KeyError("other")])[0] == "failed"


def test_a_plain_notimplementederror_is_an_error_not_a_stub():
    assert classify(excinfo_of(NotImplementedError("abstract")), []) == ("error", "NotImplementedError: abstract")


def test_failed_carries_the_assert_message_without_introspection():
    message = "POST /tasks answered 200, expected 201\nassert 200 == 201\n +  where 200 = ..."
    assert classify(excinfo_of(AssertionError(message)), []) == ("failed", "POST /tasks answered 200, expected 201")
    assert first_paragraph("assert 1 == 2") == ""
    assert classify(excinfo_of(AssertionError("assert 1 == 2")), [])[1] == "an assert failed (it has no message)"


def test_inner_runs_clear_project_options_and_need_no_colour():
    args = " ".join(INNER_PYTEST_ARGS)
    assert "-o addopts=" in args and "--color=no" in args and "-p coursekit.checks" in args
