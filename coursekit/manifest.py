"""The course manifest (course.toml): lessons in order, and where their notebooks are."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MANIFEST_NAME = "course.toml"
FOLDERS = ("notebooks", "solutions", "exercises")


class CourseError(Exception):
    """A problem to report to the user in one line (no traceback)."""


def course_root() -> Path:
    """The folder holding course.toml: $COURSE_ROOT, else the nearest above the cwd, else this package's."""
    if env := os.environ.get("COURSE_ROOT"):
        return Path(env).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder
    here = Path(__file__).resolve().parent.parent
    if (here / MANIFEST_NAME).is_file():
        return here
    raise CourseError(f"no {MANIFEST_NAME} found above {Path.cwd()}: run this from the course folder")


@dataclass(frozen=True)
class Lesson:
    id: str
    slug: str
    title: str
    summary: str
    root: Path

    @property
    def stem(self) -> str:
        return f"{self.id}_{self.slug}"

    def path(self, folder: str) -> Path:
        return self.root / folder / f"{self.stem}.ipynb"

    @property
    def notebook(self) -> Path:
        return self.path("notebooks")

    @property
    def solution(self) -> Path:
        return self.path("solutions")

    @property
    def exercise(self) -> Path:
        return self.path("exercises")


@cache
def _load(root: Path) -> tuple[Lesson, ...]:
    path = root / MANIFEST_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CourseError(f"cannot read {path}: {exc}") from exc
    lessons = []
    for n, entry in enumerate(data.get("lesson", []), start=1):
        missing = {"id", "slug", "title", "summary"} - entry.keys()
        if missing:
            raise CourseError(f"{MANIFEST_NAME}: lesson #{n} lacks {', '.join(sorted(missing))}")
        if not re.fullmatch(r"\d\d", entry["id"]) or not re.fullmatch(r"[a-z0-9_]+", entry["slug"]):
            raise CourseError(f"{MANIFEST_NAME}: lesson #{n}: id must be two digits and slug snake_case")
        lessons.append(Lesson(entry["id"], entry["slug"], entry["title"], entry["summary"], root))
    return tuple(lessons)


def lessons(root: Path | None = None) -> tuple[Lesson, ...]:
    return _load((root or course_root()).resolve())


def find_lesson(key: str, root: Path | None = None) -> Lesson:
    """A lesson by id ("1", "01"), stem or slug."""
    key = key.strip()
    for lesson in lessons(root):
        if key in (lesson.id, lesson.stem, lesson.slug) or (key.isdigit() and int(key) == int(lesson.id)):
            return lesson
    known = ", ".join(lesson.id for lesson in lessons(root))
    raise CourseError(f"no lesson {key!r} in {MANIFEST_NAME} (lessons: {known})")


def lesson_for_notebook(path: Path, root: Path | None = None) -> Lesson | None:
    """The lesson a notebook belongs to: by its metadata, else by its file name's stem or id prefix."""
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    return lesson_by_metadata(meta, root) or lesson_by_name(path, root)


def lesson_by_metadata(notebook, root: Path | None = None) -> Lesson | None:
    """The lesson a notebook's metadata names (course.lesson), if any; any other shape: None."""
    meta = notebook.get("metadata") if isinstance(notebook, dict) else None
    course = meta.get("course") if isinstance(meta, dict) else None
    key = course.get("lesson") if isinstance(course, dict) else None
    return next((lesson for lesson in lessons(root) if lesson.id == key), None) if isinstance(key, str) else None


def lesson_by_name(path: Path, root: Path | None = None) -> Lesson | None:
    """The lesson a file name names: its stem ("ada-01_status_codes...") or an id prefix ("01_...")."""
    for lesson in lessons(root):
        if lesson.stem in path.stem:
            return lesson
    match = re.search(r"(?:^|\D)(\d\d)[_\-]", path.name)
    return next((lesson for lesson in lessons(root) if match and lesson.id == match.group(1)), None)
