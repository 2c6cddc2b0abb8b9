"""Exercises that need understanding (issue 18) and corpora that prove their checks (issue 10).

- verbatim: at most 25% of an exercise's non-trivial solution lines appear as-is in its lesson
  (stripped lines longer than 12 characters, comments excluded), so copying the lesson is not
  enough;
- no answer in a message: no solution line of 20+ characters inside any string of a check cell,
  in a stub's hint or in the exercise's hints file (solutions/hints/NN_slug.toml);
- every exercise has a corpus (tests/corpus/NN_slug.toml): at least 12 wrong answers that reach
  every answer region and name existing checks, and at least 3 right answers. The warm-up
  exercise 00 has a smaller one. The corpus entries themselves run in tests/corpus (conftest.py).
"""

import ast
import re

import pytest

from coursekit.build import BEGIN, END
from coursekit.corpus import corpus_path, load, regions_of
from coursekit.hints import hints_path, load_hints
from coursekit.manifest import lessons
from coursekit.runner import _is_check_cell, _source, notebook_check_ids, read_notebook
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
EXERCISES = [lesson for lesson in LESSONS if lesson.id != "00"]
MAX_VERBATIM = 0.25


def code_sources(notebook: dict) -> list[str]:
    return [_source(cell) for cell in notebook["cells"] if cell.get("cell_type") == "code"]


def solution_lines(notebook: dict, min_length: int) -> list[str]:
    lines = []
    for source in code_sources(notebook):
        inside = False
        for line in source.splitlines():
            if BEGIN.match(line):
                inside = True
            elif END.match(line):
                inside = False
            elif inside and len(line.strip()) > min_length and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def verbatim_share(lesson) -> tuple[float, list[str]]:
    answer = solution_lines(read_notebook(lesson.solution), 12)
    taught = {line.strip() for source in code_sources(read_notebook(lesson.notebook)) for line in source.splitlines()}
    same = [line for line in answer if line in taught]
    return len(same) / max(1, len(answer)), same


def strings_in(source: str) -> list[str]:
    """Every string literal (f-string pieces included) of a check cell's Python body."""
    body = source.lstrip().split("\n", 1)[1] if "\n" in source.lstrip() else ""
    return [node.value for node in ast.walk(ast.parse(body)) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


@pytest.mark.parametrize("lesson", EXERCISES, ids=[lesson.stem for lesson in EXERCISES])
def test_copying_the_lesson_is_not_enough(lesson):
    share, same = verbatim_share(lesson)
    assert share <= MAX_VERBATIM, (
        f"{share:.0%} of the solution's non-trivial lines appear verbatim in the lesson (at most "
        f"{MAX_VERBATIM:.0%}): {same}"
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.stem for lesson in LESSONS])
def test_no_check_message_or_hint_holds_the_answer(lesson):
    notebook = read_notebook(lesson.solution)
    answer = set(solution_lines(notebook, 19))
    texts = [text for cell in notebook["cells"] if _is_check_cell(cell) for text in strings_in(_source(cell))]
    texts += [match.group("hint") or "" for source in code_sources(notebook)
              for match in map(BEGIN.match, source.splitlines()) if match]
    if hints_path(lesson).is_file():  # a missing file is test_hints.py's to report
        texts += [text for hints in load_hints(lesson).values() for text in hints]
    leaks = sorted({line for line in answer for text in texts if line in text})
    assert not leaks, f"solution code shown to the learner in a check message or hint: {leaks}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.stem for lesson in LESSONS])
def test_every_exercise_has_a_corpus_that_reaches_every_answer_region(lesson):
    path = corpus_path(lesson, ROOT)
    assert path.is_file(), f"no corpus for exercise {lesson.id}: add {path.relative_to(ROOT)}"
    entries = load(path)
    notebook = read_notebook(lesson.solution)
    wrong = [e for e in entries if e.kind == "wrong"]
    right = [e for e in entries if e.kind == "right"]
    least_wrong, least_right = (3, 2) if lesson.id == "00" else (12, 3)
    assert len(wrong) >= least_wrong, f"{len(wrong)} wrong answers, at least {least_wrong}"
    assert len(right) >= least_right, f"{len(right)} right answers, at least {least_right}"
    checks = set(notebook_check_ids(notebook))
    assert {e.check for e in wrong} <= checks, f"unknown checks: {sorted({e.check for e in wrong} - checks)}"
    regions = set(regions_of(notebook))
    named = {name for e in entries for name in e.regions}
    assert named <= regions, f"unknown regions: {sorted(named - regions)}"
    untouched = sorted(regions - {name for e in wrong for name in e.regions})
    assert not untouched, f"answer regions no wrong answer reaches: {untouched}"
    assert all(re.fullmatch(r"[a-z0-9_]+", e.id) for e in entries), "entry ids are snake_case"
