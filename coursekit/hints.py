"""Hints that unlock, one at a time: `course hint NN` in a terminal, `hint()` in an exercise notebook.

The hints live beside the solutions, one TOML file per exercise (`solutions/hints/NN_slug.toml`),
one table per check (named by the check's test function), one to three hints each, the most
specific last:

    [test_some_check_name]
    hints = ["general direction", "more specific: which lesson section and which concept"]

Each call shows the next hint not yet seen for the first check that is not passed. What was shown
is remembered per exercise and check in `.course/hints.json` (git-ignored, beside the status cache
of `course status`); deleting that file starts every exercise's hints over.
"""

from __future__ import annotations

import json
import os
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

from coursekit.manifest import CourseError, Lesson, course_root, lesson_for_notebook, lessons

HINTS_FOLDER = Path("solutions") / "hints"
STATE_FILE = Path(".course") / "hints.json"
MAX_HINTS = 3
MARKS = {"passed": "✔", "failed": "✘", "not-started": "…", "error": "!", "not-run": "?"}
LABELS = {"passed": "passed", "failed": "failed", "not-started": "not started", "error": "error",
          "not-run": "not run yet"}


def hints_path(lesson: Lesson) -> Path:
    return lesson.root / HINTS_FOLDER / f"{lesson.stem}.toml"


def load_hints(lesson: Lesson) -> dict[str, list[str]]:
    """{check id: [hint, ...]} from the exercise's hints file; a missing or malformed file is a CourseError."""
    path = hints_path(lesson)
    where = path.relative_to(lesson.root).as_posix()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CourseError(
            f"exercise {lesson.id} has no hints yet ({where} is missing): the worked answer is "
            f"solutions/{lesson.solution.name}"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CourseError(f"{where}: cannot be read ({exc})") from None
    hints: dict[str, list[str]] = {}
    for check_id, table in data.items():
        texts = table.get("hints") if isinstance(table, dict) else None
        if (
            not isinstance(texts, list)
            or not 1 <= len(texts) <= MAX_HINTS
            or not all(isinstance(t, str) and t.strip() for t in texts)
            or set(table) != {"hints"}
        ):
            raise CourseError(
                f"{where}: [{check_id}] must hold only `hints = [...]`, 1 to {MAX_HINTS} non-empty strings"
            )
        hints[check_id] = [" ".join(t.split()) for t in texts]
    return hints


def _state_path(root: Path) -> Path:
    return root / STATE_FILE


def load_state(root: Path) -> dict[str, dict[str, int]]:
    """{lesson id: {check id: hints shown}}; an unreadable file starts over (it only holds progress)."""
    try:
        data = json.loads(_state_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(root: Path, state: dict) -> None:
    path = _state_path(root)
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)  # a hint call interrupted mid-write never leaves half a file


@dataclass
class Outcome:
    id: str
    status: str  # a runner status, or "not-run" (the notebook helper: not run in this kernel)
    message: str = ""


def first_not_passed(expected: list[str], outcomes: dict[str, Outcome]) -> Outcome | None:
    """The first expected check, in the exercise's order, whose outcome is not `passed`."""
    for check_id in expected:
        outcome = outcomes.get(check_id) or Outcome(check_id, "not-run")
        if outcome.status != "passed":
            return outcome
    return None


def _wrapped(prefix: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=prefix, subsequent_indent=" " * len(prefix))


def worked_answer(lesson: Lesson) -> tuple[str, str]:
    """(where the answer is, the sentence naming it) for the last hint. A hunt's answer is not its solution
    notebook (that holds the checks only) but the real package its copy was made from."""
    from coursekit.hunt import copy_folder, incidents_path, is_hunt, load_hunt  # hunt imports manifest only

    if is_hunt(lesson):
        try:
            source = load_hunt(incidents_path(lesson), lesson.root).source.relative_to(lesson.root).as_posix()
        except Exception:  # a malformed incidents file is reported by `course build`, not by a hint
            source = "capstone/taskservice"
        copy = f"{copy_folder(lesson).relative_to(lesson.root).as_posix()}/{Path(source).name}"
        return source, (f"the answer is the real service, {source}/: your copy was made from it with the bugs "
                        f"planted, so diffing the two (`diff -ru {source} {copy}`) is the answer key")
    solution = f"solutions/{lesson.solution.name}"
    return solution, f"the worked answer is in {solution} (its check cells are the same as yours)"


def next_hint(lesson: Lesson, expected: list[str], outcomes: dict[str, Outcome], again: str) -> str:
    """The text to show for the exercise's state; records the hint shown. `again`: how to ask for the next one."""
    solution, answer = worked_answer(lesson)
    target = first_not_passed(expected, outcomes)
    if target is None:
        return f"Every check of exercise {lesson.id} passes ({len(expected)} of {len(expected)}): no hint needed."
    hints = load_hints(lesson)
    head = f"Exercise {lesson.id}: the first check not passed is {target.id} ({MARKS[target.status]} {LABELS[target.status]})"
    lines = [head]
    if target.message and target.status in ("failed", "error"):
        lines.append(_wrapped("  check says: ", target.message))
    texts = hints.get(target.id)
    if not texts:
        lines.append(f"No hint is written for this check yet: its message above and {solution} are your guides.")
        return "\n".join(lines)
    state = load_state(lesson.root)
    shown = state.get(lesson.id, {}).get(target.id, 0)
    shown = shown if isinstance(shown, int) and shown >= 0 else 0
    if shown >= len(texts):
        lines.append("Its one hint was shown:" if len(texts) == 1 else f"All {len(texts)} hints for this check were shown:")
        lines += [_wrapped(f"  {n}. ", text) for n, text in enumerate(texts, start=1)]
        lines.append(_wrapped("", f"Still stuck? {answer[0].upper()}{answer[1:]}."))
        return "\n".join(lines)
    number = shown + 1
    last = number == len(texts)
    lines.append(_wrapped(f"Hint {number} of {len(texts)}: ", texts[shown]))
    if last:
        lines.append(_wrapped("", f"That was the last hint for this check; {answer}."))
    else:
        lines.append(f"{again} for the next hint.")
    state.setdefault(lesson.id, {})[target.id] = number
    _save_state(lesson.root, state)
    return "\n".join(lines)


# --- in a notebook ---------------------------------------------------------------------------------


def _notebook_path() -> Path | None:
    """The notebook this kernel runs: JupyterLab/Notebook tell the kernel (JPY_SESSION_NAME, which
    ipykernel stores as `__session__`); VS Code sets `__vsc_ipynb_file__`."""
    namespace: dict = {}
    try:
        from IPython import get_ipython

        shell = get_ipython()
        namespace = shell.user_ns if shell is not None else {}
    except ImportError:
        pass
    for value in (namespace.get("__session__"), namespace.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(value, str) and value.endswith(".ipynb"):
            path = Path(value)
            if not path.is_absolute() and not path.is_file():
                # a server path (relative to where JupyterLab was started, the course folder)
                try:
                    path = course_root() / path
                except CourseError:
                    pass
            return path
    return None


def _lesson_from_checks(ran: set[str], root: Path | None) -> Lesson | None:
    """The one lesson whose solution has every check this kernel ran (check names differ across lessons)."""
    from coursekit.runner import notebook_check_ids, read_notebook

    if not ran:
        return None
    matches = [
        lesson for lesson in lessons(root)
        if lesson.solution.is_file() and ran <= set(notebook_check_ids(read_notebook(lesson.solution)))
    ]
    return matches[0] if len(matches) == 1 else None


def hint(lesson: str | int | None = None) -> None:
    """Print the next hint for the first check of this exercise that is not passed.

    Uses the results of the check cells run in this kernel (run them first); `lesson` ("03")
    is only needed where the notebook's lesson cannot be found (its path, metadata or checks).
    """
    from coursekit.checks import KERNEL_RESULTS
    from coursekit.manifest import find_lesson
    from coursekit.runner import notebook_check_ids, read_notebook

    try:
        path = _notebook_path()
        found = None
        if lesson is not None:
            found = find_lesson(str(lesson))  # hint(3) as well as hint("03")
        elif path is not None and path.is_file():
            found = lesson_for_notebook(path)
        found = found or _lesson_from_checks(set(KERNEL_RESULTS), None)
        if found is None:
            raise CourseError(
                "cannot tell which exercise this notebook is: run its check cells first, or name it: hint(\"03\")"
            )
        expected = notebook_check_ids(read_notebook(found.solution))
        if not any(check_id in KERNEL_RESULTS for check_id in expected):
            print(
                f"Run the check cells of exercise {found.id} first: hint() gives the next hint for the "
                "first check that does not pass."
            )
            return
        outcomes = {check_id: Outcome(check_id, r["status"], r["message"]) for check_id, r in KERNEL_RESULTS.items()}
        print(next_hint(found, expected, outcomes, "Call hint() again"))
    except CourseError as exc:
        print(f"hint: {exc}")
