"""Generate exercises/ from solutions/: the solutions are the single source.

In a solution's code cell, an answer region is marked

        ### BEGIN SOLUTION: one-line hint for the learner (optional)
        ...the answer...
        ### END SOLUTION

and must sit inside a function body, so that the cell still defines every name and
the checks can call it. In the exercise the region becomes

        # TODO: one-line hint for the learner
        raise NotImplementedError("not done yet: one-line hint for the learner")

Outputs and execution counts are cleared. Notebook metadata records the lesson id.

Quieter exercises: each `%%ipytest` check cell opens with its code collapsed (JupyterLab's cell
metadata `"jupyter": {"source_hidden": true}`), so the learner sees the task, their code and the
✔/✘ lines; the first markdown cell gets a note on how to expand the checks and ask for a hint,
and the setup cell (the one calling `setup_checks()`) imports `hint`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from coursekit.manifest import CourseError, Lesson, lessons

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?::\s*(?P<hint>.*\S))?\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
KEPT_CELL_METADATA = ("tags",)
CHECK_MAGIC = "%%ipytest"
# JupyterLab (4.x: Cell.loadCollapseState) shows a cell whose metadata has this as one placeholder line.
COLLAPSED_INPUT = {"jupyter": {"source_hidden": True}}
SETUP_CALL = re.compile(r"^(?P<indent>[ \t]*)setup_checks\(\)\s*$", re.M)
HINT_IMPORT = "from coursekit import hint  # stuck on a check? run hint() in a cell: each call shows the next hint"


def exercise_note(lesson_id: str) -> str:
    """What the build adds to an exercise's first markdown cell."""
    return (
        "\n\n**How this notebook works.** The check cells are collapsed: you see their ✔/✘ lines, not "
        "their code. To read a check, click its collapsed line (`%%ipytest ⋯`) or the bar at its left "
        "(*View → Expand All Code* opens them all). Stuck on a check? Run `hint()` in a cell (or "
        f"`course hint {lesson_id}` in a terminal): each call shows the next hint for your first check "
        "not passed, the last one names the lesson section to reread."
    )


class MarkerError(CourseError):
    pass


def stub_source(source: str, where: str) -> str:
    """Replace each answer region of one cell's source with its stub."""
    out: list[str] = []
    region_start: int | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if region_start is not None:
                raise MarkerError(f"{where}, line {number}: BEGIN SOLUTION inside the region opened at line {region_start}")
            indent = begin.group("indent")
            if not indent:
                raise MarkerError(
                    f"{where}, line {number}: an answer region must sit inside a function body "
                    "(indented), so the exercise cell still defines its names"
                )
            if _in_class_body(out, indent):
                raise MarkerError(
                    f"{where}, line {number}: an answer region directly in a class body raises when the class is "
                    "defined (the exercise cell would stop there): put it inside a method or a function"
                )
            hint = begin.group("hint") or "replace this line with your code"
            out.append(f"{indent}# TODO: {hint}")
            out.append(f"{indent}raise NotImplementedError({('not done yet: ' + hint)!r})")
            region_start = number
        elif end:
            if region_start is None:
                raise MarkerError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            region_start = None
        elif region_start is None:
            out.append(line)
    if region_start is not None:
        raise MarkerError(f"{where}: the region opened at line {region_start} has no END SOLUTION")
    return "\n".join(out)


def _in_class_body(lines_before: list[str], indent: str) -> bool:
    """Whether the nearest less-indented line above opens a class (not a def)."""
    for line in reversed(lines_before):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and len(line) - len(line.lstrip()) < len(indent):
            return bool(re.match(r"class\s", stripped))
    return False


def exercise_from_solution(solution: dict, lesson_id: str, source_name: str, *, regions_needed: bool = True) -> dict:
    """The exercise notebook (as a dict) generated from a solution notebook (as a dict).

    regions_needed=False: an incident hunt (coursekit/hunt.py), whose learner's work is the service's
    generated copy, not answer regions in the notebook."""
    cells = []
    regions = 0
    for index, cell in enumerate(solution.get("cells", []), start=1):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = {
            "cell_type": cell["cell_type"],
            "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA},
            "source": source,
        }
        if cell.get("id"):
            new["id"] = cell["id"]
        if cell["cell_type"] == "code":
            stubbed = stub_source(source, f"{source_name}, cell {index}")
            regions += stubbed != source
            new.update(source=stubbed, outputs=[], execution_count=None)
            if source.lstrip().startswith(CHECK_MAGIC):
                new["metadata"].update(json.loads(json.dumps(COLLAPSED_INPUT)))
        cells.append(new)
    if not regions and regions_needed:
        raise MarkerError(f"{source_name}: no ### BEGIN SOLUTION region: an exercise needs at least one")
    _add_hint_helper(cells, lesson_id)
    metadata = {k: v for k, v in solution.get("metadata", {}).items() if k in ("kernelspec", "language_info")}
    metadata["course"] = {"lesson": lesson_id, "generated_from": source_name, "sources_sha256": sources_digest(cells)}
    return {
        "cells": cells,
        "metadata": metadata,
        "nbformat": solution.get("nbformat", 4),
        "nbformat_minor": solution.get("nbformat_minor", 5),
    }


def _add_hint_helper(cells: list[dict], lesson_id: str) -> None:
    """The note on the first markdown cell, and `hint` imported after the setup cell's `setup_checks()`.

    A notebook without either (a tool's test notebook) is left as it is; the course's own exercises
    are held to both by tests/test_build.py.
    """
    markdown = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if markdown is not None:
        markdown["source"] = markdown["source"].rstrip() + exercise_note(lesson_id)
    for cell in cells:
        match = SETUP_CALL.search(cell["source"]) if cell["cell_type"] == "code" else None
        if match:
            source = cell["source"]
            cell["source"] = f"{source[: match.end()]}\n{match.group('indent')}{HINT_IMPORT}{source[match.end():]}"
            return


def sources_digest(cells: list[dict]) -> str:
    """A digest of every cell's source: what a learner edits (running cells only adds outputs)."""
    sources = ("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()


def edited_since_generated(text: str) -> bool:
    """True unless the exercise's sources are exactly as the builder wrote them (its own stamp says so).

    An exercise that cannot be read, or carries no stamp, counts as edited: better a needless copy
    in attempts/ than a learner's work lost.
    """
    try:
        notebook = json.loads(text)
        stamp = notebook["metadata"]["course"]["sources_sha256"]
        return sources_digest(notebook["cells"]) != stamp
    except (ValueError, KeyError, TypeError):
        return True


def dumps(notebook: dict) -> str:
    """Stable notebook text (the layout nbformat and JupyterLab write)."""
    for cell in notebook["cells"]:
        if isinstance(cell["source"], str):
            cell["source"] = cell["source"].splitlines(keepends=True)
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(lesson: Lesson) -> str:
    if not lesson.solution.is_file():
        raise CourseError(f"{lesson.solution.relative_to(lesson.root)} is missing")
    from coursekit.hunt import is_hunt

    solution = json.loads(lesson.solution.read_text(encoding="utf-8"))
    return dumps(exercise_from_solution(solution, lesson.id, f"solutions/{lesson.solution.name}",
                                        regions_needed=not is_hunt(lesson)))


def _git_index_text(path: Path, root: Path) -> str | None:
    """The file as staged in git (None outside git, or when it is not tracked)."""
    try:
        done = subprocess.run(
            ["git", "show", f":{path.relative_to(root).as_posix()}"],
            cwd=root, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass
class BuildResult:
    lesson: Lesson
    status: str  # "written", "unchanged", "stale", "learner-edited"
    saved: Path | None = None  # where a hand-edited exercise was kept before it was rewritten
    path: Path | None = None  # what was built: the exercise notebook, or an incident hunt's copy folder

    @property
    def target(self) -> Path:
        return self.path or self.lesson.exercise


def build(root: Path | None = None, *, check: bool = False, only: list[Lesson] | None = None) -> list[BuildResult]:
    """Write (or with check=True, only compare) every exercise generated from its solution.

    In check mode an exercise is in sync when the working file, or the version staged
    in git, equals the generated text: a learner's edits to exercises/ in the working
    tree are their work, not a stale build ("learner-edited").
    """
    results = []
    for lesson in only or lessons(root):
        text = generate(lesson)
        current = lesson.exercise.read_text(encoding="utf-8") if lesson.exercise.is_file() else None
        if current == text:
            results.append(BuildResult(lesson, "unchanged"))
        elif check:
            staged = _git_index_text(lesson.exercise, lesson.root) if current is not None else None
            results.append(BuildResult(lesson, "learner-edited" if staged == text else "stale"))
        else:
            saved = None
            if (
                current is not None
                and current != _git_index_text(lesson.exercise, lesson.root)
                and edited_since_generated(current)
            ):
                saved = save_attempt(lesson)  # edited by hand (a learner's work): keep a copy
            lesson.exercise.parent.mkdir(parents=True, exist_ok=True)
            lesson.exercise.write_text(text, encoding="utf-8")
            results.append(BuildResult(lesson, "written", saved))
        results.extend(_build_hunt_copy(lesson, check))
    return results


def _build_hunt_copy(lesson: Lesson, check: bool) -> list[BuildResult]:
    """An incident hunt's buggy copy of the service (coursekit/hunt.py), compared or written like a notebook."""
    from coursekit.hunt import copy_folder, generated_files, is_hunt, write_copy

    if not is_hunt(lesson):
        return []
    files = generated_files(lesson)  # HuntError (a CourseError) when a recorded change no longer applies
    folder = copy_folder(lesson)
    current = {rel: (lesson.root / rel).read_text(encoding="utf-8") if (lesson.root / rel).is_file() else None
               for rel in files}
    if all(current[rel] == text for rel, text in files.items()):
        return [BuildResult(lesson, "unchanged", path=folder)]
    if check:
        staged = all(current[rel] == text or _git_index_text(lesson.root / rel, lesson.root) == text
                     for rel, text in files.items())
        return [BuildResult(lesson, "learner-edited" if staged else "stale", path=folder)]
    committed = lambda rel, text: _git_index_text(lesson.root / rel, lesson.root) == text  # noqa: E731
    saved = write_copy(lesson, files, is_committed=committed)
    return [BuildResult(lesson, "written", saved, path=folder)]


def save_attempt(lesson: Lesson) -> Path:
    """Copy the learner's exercise to attempts/<stem>-<timestamp>.ipynb; return that path."""
    from datetime import datetime

    folder = lesson.root / "attempts"
    folder.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder / f"{lesson.stem}-{stamp}.ipynb"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{lesson.stem}-{stamp}-{n}.ipynb"
    target.write_bytes(lesson.exercise.read_bytes())
    return target


def reset(lesson: Lesson) -> Path | None:
    """Regenerate one exercise; the learner's current version is saved first (returned).

    An incident hunt's copy of the service is regenerated too: see `reset_hunt_copy`."""
    fresh = generate(lesson)
    current = lesson.exercise.read_text(encoding="utf-8") if lesson.exercise.is_file() else None
    untouched = current is None or not edited_since_generated(current)  # run, perhaps, but not edited
    saved = None if untouched else save_attempt(lesson)
    lesson.exercise.parent.mkdir(parents=True, exist_ok=True)
    lesson.exercise.write_text(fresh, encoding="utf-8")
    return saved


def reset_hunt_copy(lesson: Lesson) -> Path | None:
    """Regenerate an incident hunt's copy of the service; the learner's edited folder is saved first (returned)."""
    from coursekit.hunt import generated_files, is_hunt, write_copy

    if not is_hunt(lesson):
        return None
    return write_copy(lesson, generated_files(lesson))
