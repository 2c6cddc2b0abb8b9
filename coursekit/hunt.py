"""The incident hunt (exercise 14): a copy of the capstone service with production bugs planted in it.

The buggy copy is never written by hand. `solutions/<stem>_incidents.toml` records, per incident, the
symptom the learner is told, the lesson that explains it, the check that judges it, and the exact
changes that plant it into the real package:

    package = "capstone/taskservice"        # the real service (the source of the copy)

    [[incident]]
    id = "pool_never_says_no"
    check = "test_a_full_pool_answers_503_fast"
    lesson = "07"
    symptom = "under a spike the database refuses connections and every route answers 500"
    [[incident.change]]
    file = "db.py"                           # relative to the package
    find = '''max_overflow=settings.db_max_overflow'''
    replace = '''max_overflow=-1'''

`course build` writes the real package with every change applied to `exercises/<stem>/taskservice/`,
plus a stamp (`exercises/<stem>/.generated.json`: each generated file's sha256). Each `find` must occur
exactly once in its file when it is applied, else the build stops with the incident's name: the recorded
changes cannot silently drift from the service. `course build --check` compares the folder with what
the changes generate now (tests/test_hunt.py).

The learner fixes the copy in place: those files are their work.
- `course build` / `course reset NN`: a file that differs from the stamp (edited since generated) and from
  git's staged version makes the whole folder be copied to `attempts/<stem>-<time>/` first; then the
  generated files are written (files the learner added are left where they are).
- `course update`: the copy's files are plain files to git-aware `course update` (coursekit/update.py):
  a file only the learner changed stays theirs, a file both changed is merged as text when the changes
  touch different lines, else the course's version is written and the learner's kept in
  `attempts/update-<time>/`.

A notebook finds the copy it tests with `service_under_test(stem)`: the exercise (its kernel runs in
`exercises/`) tests `exercises/<stem>/`, the solution (in `solutions/`) tests the real `capstone/`;
`HUNT_SERVICE_ENV` overrides both (the corpus harness points it at a patched copy).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from coursekit.manifest import CourseError, Lesson, course_root

HUNT_SERVICE_ENV = "COURSE_HUNT_SERVICE"
STAMP_NAME = ".generated.json"
PACKAGE_NAME = "taskservice"
SKIPPED = ("__pycache__", ".pytest_cache")
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class HuntError(CourseError):
    """The recorded incidents no longer apply to the service (or are malformed): one line, naming the incident."""


@dataclass(frozen=True)
class Change:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Incident:
    id: str
    check: str
    lesson: str
    symptom: str
    changes: tuple[Change, ...]


@dataclass
class Hunt:
    source: Path  # the real package folder (capstone/taskservice)
    incidents: list[Incident] = field(default_factory=list)

    def incident(self, incident_id: str) -> Incident:
        for incident in self.incidents:
            if incident.id == incident_id:
                return incident
        raise HuntError(f"no incident {incident_id!r} (known: {', '.join(i.id for i in self.incidents)})")


def incidents_path(lesson: Lesson) -> Path:
    return lesson.root / "solutions" / f"{lesson.stem}_incidents.toml"


def is_hunt(lesson: Lesson) -> bool:
    return incidents_path(lesson).is_file()


def copy_folder(lesson: Lesson) -> Path:
    """exercises/<stem>/: the folder holding the learner's copy of the package."""
    return lesson.root / "exercises" / lesson.stem


def _changes(raw: object, where: str) -> tuple[Change, ...]:
    if not isinstance(raw, list) or not raw:
        raise HuntError(f"{where}: needs at least one [[incident.change]] (file, find, replace)")
    changes = []
    for number, change in enumerate(raw, start=1):
        if not isinstance(change, dict) or set(change) != {"file", "find", "replace"}:
            raise HuntError(f"{where}, change #{number}: needs exactly file, find and replace")
        if not all(isinstance(change[k], str) for k in change) or not change["find"]:
            raise HuntError(f"{where}, change #{number}: file, find and replace are strings, find not empty")
        if change["find"] == change["replace"]:
            raise HuntError(f"{where}, change #{number}: replace is the same as find: it plants nothing")
        changes.append(Change(change["file"], change["find"], change["replace"]))
    return tuple(changes)


def load_hunt(path: Path, root: Path) -> Hunt:
    """The incidents file, validated; HuntError naming the place for anything malformed."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HuntError(f"{path.name}: not readable ({exc})") from None
    unknown = set(data) - {"package", "incident"}
    if unknown:
        raise HuntError(f"{path.name}: unknown top-level keys {sorted(unknown)} (package, [[incident]])")
    if not isinstance(data.get("package"), str):
        raise HuntError(f"{path.name}: `package = \"capstone/taskservice\"` (the real service) is missing")
    hunt = Hunt(source=root / data["package"])
    for number, raw in enumerate(data.get("incident", []), start=1):
        where = f"{path.name}: incident #{number} ({raw.get('id', 'no id')})"
        needed = {"id", "check", "lesson", "symptom", "change"}
        if set(raw) != needed:
            raise HuntError(f"{where}: needs exactly {sorted(needed)}; has {sorted(raw)}")
        if not all(isinstance(raw[k], str) and raw[k].strip() for k in needed - {"change"}):
            raise HuntError(f"{where}: id, check, lesson and symptom are non-empty strings")
        hunt.incidents.append(Incident(raw["id"], raw["check"], raw["lesson"], " ".join(raw["symptom"].split()),
                                       _changes(raw["change"], where)))
    ids = [i.id for i in hunt.incidents]
    if len(set(ids)) != len(ids) or not ids:
        raise HuntError(f"{path.name}: needs incidents with distinct ids (got {ids})")
    return hunt


def package_files(folder: Path) -> dict[str, str]:
    """Every source file of a package folder: relative posix path -> text (caches skipped)."""
    if not folder.is_dir():
        raise HuntError(f"{folder}: the service's package is not there")
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_dir() or any(part in SKIPPED for part in rel.parts) or path.suffix in SKIPPED_SUFFIXES:
            continue
        files[rel.as_posix()] = path.read_text(encoding="utf-8")
    return files


def apply_changes(files: dict[str, str], changes: tuple[Change, ...] | list[Change], who: str,
                  fix: str = "the service changed: update the recorded change") -> dict[str, str]:
    """The files with each change applied in order; HuntError when a `find` is not there exactly once."""
    files = dict(files)
    for change in changes:
        if change.file not in files:
            raise HuntError(f"{who}: the service has no file {change.file!r} ({fix})")
        count = files[change.file].count(change.find)
        if count != 1:
            seen = "is no longer" if count == 0 else f"is {count} times"
            first = change.find.strip().splitlines()[0][:80]
            raise HuntError(f"{who}: the text to find ({first!r} ...) {seen} in {change.file} ({fix})")
        files[change.file] = files[change.file].replace(change.find, change.replace)
    return files


def planted(hunt: Hunt, only: list[str] | None = None, extra: list[Change] | None = None, who: str = "") -> dict[str, str]:
    """The package with every incident planted (or the `only` ones), then `extra` changes (a corpus entry's fix)."""
    files = package_files(hunt.source)
    chosen = hunt.incidents if only is None else [hunt.incident(i) for i in only]
    for incident in chosen:
        files = apply_changes(files, incident.changes, f"incident {incident.id}")
    if extra:
        files = apply_changes(files, extra, who or "the patch", "a patch's find must match the copy with its incident planted")
    return files


def write_package(files: dict[str, str], folder: Path) -> None:
    """The files under folder/taskservice/, and the stamp of what was written."""
    for rel, text in files.items():
        target = folder / PACKAGE_NAME / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    (folder / STAMP_NAME).write_text(stamp_text(files), encoding="utf-8")


def stamp_text(files: dict[str, str]) -> str:
    digests = {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in sorted(files.items())}
    note = "written by `course build` from solutions/*_incidents.toml: the files the learner fixes are in taskservice/"
    return json.dumps({"note": note, "sha256": digests}, indent=1, sort_keys=True) + "\n"


def generated_files(lesson: Lesson) -> dict[str, str]:
    """Path relative to the course root -> text, of everything `course build` writes for a hunt's copy."""
    hunt = load_hunt(incidents_path(lesson), lesson.root)
    files = planted(hunt)
    base = copy_folder(lesson).relative_to(lesson.root)
    out = {(base / PACKAGE_NAME / rel).as_posix(): text for rel, text in files.items()}
    out[(base / STAMP_NAME).as_posix()] = stamp_text(files)
    return out


def edited_files(lesson: Lesson) -> list[str]:
    """Files of the learner's copy changed since `course build` wrote them (per its stamp); all of them
    when the stamp is missing or unreadable (better a needless copy in attempts/ than lost work)."""
    folder = copy_folder(lesson)
    if not folder.is_dir():
        return []
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        stamp = {}
    edited = []
    current = package_files(folder / PACKAGE_NAME) if (folder / PACKAGE_NAME).is_dir() else {}
    for rel, text in current.items():
        if stamp.get(rel) != hashlib.sha256(text.encode()).hexdigest():
            edited.append(rel)
    return edited


def save_copy(lesson: Lesson) -> Path:
    """Copy the learner's whole folder to attempts/<stem>-<time>/; return that path."""
    folder = lesson.root / "attempts"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = folder / f"{lesson.stem}-{stamp}", 1
    while target.exists():
        n += 1
        target = folder / f"{lesson.stem}-{stamp}-{n}"
    shutil.copytree(copy_folder(lesson), target, ignore=shutil.ignore_patterns(*SKIPPED, "*.pyc"))
    return target


def write_copy(lesson: Lesson, files: dict[str, str], *, keep_edits: bool = True,
               is_committed=lambda rel, text: False) -> Path | None:
    """Write the generated copy; the learner's edited folder is copied to attempts/ first (returned).

    `is_committed(rel, text)`: whether the current text of a file is the version git has staged (an
    author's build, not a learner's edit: no copy needed).
    """
    saved = None
    folder = copy_folder(lesson)
    if keep_edits:
        root_rel = folder.relative_to(lesson.root) / PACKAGE_NAME
        changed = [rel for rel in edited_files(lesson)
                   if not is_committed((root_rel / rel).as_posix(), (folder / PACKAGE_NAME / rel).read_text(encoding="utf-8"))]
        if changed:
            saved = save_copy(lesson)
    base = folder.relative_to(lesson.root)
    package = {rel.removeprefix(f"{(base / PACKAGE_NAME).as_posix()}/"): text
               for rel, text in files.items() if rel.startswith(f"{(base / PACKAGE_NAME).as_posix()}/")}
    write_package(package, folder)
    return saved


# ------------------------------------------------------------------ in the notebook


def service_under_test(stem: str) -> Path:
    """The folder whose `taskservice` package this notebook's checks test.

    $COURSE_HUNT_SERVICE when set (the corpus harness); else the exercise's copy when the kernel runs
    beside it (an exercise's kernel starts in exercises/); else the real service, capstone/.
    """
    if env := os.environ.get(HUNT_SERVICE_ENV):
        folder = Path(env)
    elif (Path.cwd() / stem / PACKAGE_NAME).is_dir():
        folder = Path.cwd() / stem
    else:
        folder = course_root() / "capstone"
    if not (folder / PACKAGE_NAME / "__init__.py").is_file():
        raise CourseError(f"{folder}: no {PACKAGE_NAME} package there (`course reset 14` writes the exercise's copy)")
    return folder.absolute()


def load_service(folder: Path):
    """Import `taskservice` afresh from `folder` (a module object); any earlier import of it is dropped,
    so a fixed file is what runs after the cell is run again."""
    folder = str(Path(folder).resolve())
    for name in [n for n in sys.modules if n == PACKAGE_NAME or n.startswith(PACKAGE_NAME + ".")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not _holds_package(p)]
    sys.path.insert(0, folder)
    importlib.invalidate_caches()
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no .pyc that a quick re-edit could outlive
    try:
        return importlib.import_module(PACKAGE_NAME)
    finally:
        sys.dont_write_bytecode = writes


def _holds_package(entry: str) -> bool:
    try:
        return (Path(entry) / PACKAGE_NAME / "__init__.py").is_file()
    except (OSError, ValueError):
        return False
