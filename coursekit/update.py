"""`course update`: bring a learner's checkout to the latest course without losing a keystroke.

Why not `git pull` (or nbgitpuller's `git merge -Xours`): notebook JSON merged line by line can
mix two versions of one cell, keep the learner's lines where both sides touched them (the
course's change is then dropped without notice) and merge a rename made in two cells (a stub
and its check) into a notebook whose check calls a function no cell defines.

What this does instead, knowing how the course is made:

1. Everything as it is (commits, uncommitted and untracked files) is first stored as one commit
   under `refs/course/before-update/<time>`: whatever happens next, `git checkout <ref> -- PATH`
   brings any file back.
2. `git fetch`, then the checkout moves to the course's latest commit (a history rewritten
   upstream is no special case: nothing is merged by git).
3. Each file the learner changed is decided by itself, three ways (the version the learner
   started from, theirs, the course's):
   - an exercise is merged cell by cell (cells keep their ids from the solution). A cell only one
     side changed takes that side. Where both changed one cell, the learner's work lives in
     answer regions (the stubs `course build` wrote): their code is put into the same regions of
     the course's new cell. What cannot be placed (an edit outside the regions, a region the new
     cell no longer has) is a conflict: the course's cell is kept, the learner's whole cell is
     kept right below it as a raw cell (shown, not run), and listed by file and cell.
   - lessons and solutions take the course's version: running and saving them in JupyterLab
     (outputs, `language_info`) is not the learner's work. If the learner edited a cell's
     source, a copy is kept in attempts/ and listed.
   - any other file: one side's change is kept; changes on both sides are merged as text when
     git can do it cleanly, else the course's version is taken and the learner's kept in
     attempts/ and listed. An untracked file where the course adds the same path goes there too.
4. The check cells of every exercise the learner started and the course changed are run
   (by the caller, `course update`), so a change that spans cells is reported now.

The version an exercise was started from is found by the digest `course build` stamps in its
metadata (`metadata.course.sources_sha256`), searched in the repository's history: that works
after nbgitpuller's merge commits and after a force-push as well.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from coursekit.build import dumps, edited_since_generated
from coursekit.manifest import CourseError
from coursekit.runner import _source

STUB_TODO = re.compile(r"^(?P<indent>[ \t]*)# TODO: (?P<hint>.*)$")
STUB_RAISE = re.compile(r"^[ \t]*raise NotImplementedError\(.*not done yet")
BACKUP_REFS = "refs/course/before-update/"
KEPT_MARK = "kept_by_update"
REMOVED = "the course removed this cell"  # cell metadata key of a learner's cell kept beside the course's
COURSE_NOTEBOOK_FOLDERS = ("notebooks/", "solutions/")
# plumbing commits (the snapshot) need an identity; a learner's machine may have none configured
GIT_IDENTITY = ["-c", "user.name=course update", "-c", "user.email=course-update@localhost"]


# ---------------------------------------------------------------- notebooks, cells and regions

def stamp_of(notebook: dict) -> str | None:
    return notebook.get("metadata", {}).get("course", {}).get("sources_sha256")


def stub_spans(lines: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, hint) of each generated stub: a `# TODO: hint` line and its `raise` line."""
    spans = []
    for i in range(len(lines) - 1):
        todo = STUB_TODO.match(lines[i])
        if todo and STUB_RAISE.match(lines[i + 1]):
            spans.append((i, i + 2, todo.group("hint").strip()))
    return spans


def learner_fills(base: str, mine: str) -> tuple[dict[int, list[str]], bool]:
    """The learner's code in each stub of the base cell, by stub index; and whether they also
    changed lines outside the stubs (then the cell cannot be rebuilt from regions alone)."""
    b, m = base.splitlines(), mine.splitlines()
    spans = stub_spans(b)
    matcher = difflib.SequenceMatcher(None, b, m, autojunk=False)
    to_mine = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            to_mine[block.a + k] = block.b + k
    fills: dict[int, list[str]] = {}
    covered: set[int] = set()  # learner lines accounted for by a region
    for index, (start, end, _) in enumerate(spans):
        before = to_mine.get(start - 1, None) if start > 0 else -1
        after = to_mine.get(end, None) if end < len(b) else len(m)
        if before is None or after is None or after <= before:
            return {}, True  # the lines around the stub were changed too: cannot tell the region
        fill = m[before + 1 : after]
        covered.update(range(before + 1, after))
        if fill != b[start:end]:
            fills[index] = fill
    inside = {i for start, end, _ in spans for i in range(start, end)}
    matched_mine = set(to_mine.values())
    outside_changed = any(i not in to_mine for i in range(len(b)) if i not in inside) or any(
        j not in covered and j not in matched_mine for j in range(len(m))
    )
    return fills, outside_changed


def place_fills(base: str, course: str, fills: dict[int, list[str]]) -> tuple[str, list[int]]:
    """The course's new cell with the learner's fills put into its stubs (matched by hint, then
    by order); returns the cell and the base stub indexes that found no place."""
    base_spans, new_spans = stub_spans(base.splitlines()), stub_spans(course.splitlines())
    pairs: dict[int, int] = {}
    free = list(range(len(new_spans)))
    for i, (_, _, hint) in enumerate(base_spans):
        same = [j for j in free if new_spans[j][2] == hint]
        if same:
            pairs[i] = same[0]
            free.remove(same[0])
    unpaired = [i for i in range(len(base_spans)) if i not in pairs]
    if len(unpaired) == len(free):  # hints reworded: the regions are still in the same order
        pairs.update(zip(unpaired, free))
    lines = course.splitlines()
    unplaced = []
    for i in sorted(fills, key=lambda i: -new_spans[pairs[i]][0] if i in pairs else 0):
        if i not in pairs:
            unplaced.append(i)
            continue
        start, end, _ = new_spans[pairs[i]]
        lines[start:end] = fills[i]  # from the last stub up, so earlier positions stay valid
    return "\n".join(lines), sorted(unplaced)


@dataclass
class CellNote:
    cell: int  # 1-based position in the merged notebook
    cell_id: str
    what: str


@dataclass
class ExerciseMerge:
    notebook: dict
    conflicts: list[CellNote] = field(default_factory=list)
    reapplied: list[CellNote] = field(default_factory=list)  # learner's regions put into a changed cell
    restored: list[CellNote] = field(default_factory=list)  # cells the learner deleted and the course changed


def _kept_cell(cell_id: str, source: str, reason: str, taken: set[str]) -> dict:
    new_id = f"{cell_id}-yours"[:64]
    n = 1
    while new_id in taken:
        n += 1
        new_id = f"{cell_id}-yours-{n}"[:64]
    taken.add(new_id)
    if reason == REMOVED:
        header = ("# course update: YOUR version of a cell the course removed, from before the update.\n"
                  "# It is kept here as raw text (not run). Copy what you still need, then delete this cell.\n")
    else:
        header = (f"# course update: YOUR version of the cell above, from before the update ({reason}).\n"
                  "# It is kept here as raw text (not run). Copy what you need into the cell above, then delete this cell.\n")
    return {"cell_type": "raw", "id": new_id, "metadata": {"course": {KEPT_MARK: {"cell": cell_id, "reason": reason}}},
            "source": header + source}


def merge_exercise(base: dict, mine: dict, course: dict) -> ExerciseMerge:
    """Three-way merge of an exercise by cell id (base: the generated version the learner
    started from; mine: theirs; course: the new generated version). Nothing of `mine` is lost."""
    by_id = lambda nb: {c.get("id"): c for c in nb["cells"] if c.get("id")}  # noqa: E731
    b, m = by_id(base), by_id(mine)
    course_ids = {c.get("id") for c in course["cells"]}
    taken = set(course_ids) | set(m)
    result = ExerciseMerge(notebook={})
    out: list[dict] = []
    notes: list[tuple[str, CellNote]] = []  # (kind, note) with positions filled in at the end

    def note(kind: str, cell: dict, what: str) -> None:
        notes.append((kind, CellNote(0, cell.get("id", ""), what)))
        cell.setdefault("_notes", []).append(len(notes) - 1)

    for new in course["cells"]:
        cid = new.get("id")
        old, own = b.get(cid), m.get(cid)
        cell = {k: v for k, v in new.items()}
        if old is None or own is None:
            if old is not None and own is None and _source(new) != _source(old):
                note("restored", cell, "you had deleted this cell; the course changed it, so its new version is back")
            elif old is not None and own is None:
                continue  # deleted by the learner, unchanged by the course: stays deleted
            out.append(cell)
            continue
        mine_src, base_src, new_src = _source(own), _source(old), _source(new)
        if mine_src == base_src:
            out.append(own if new_src == base_src else cell)  # own keeps the learner's outputs
        elif new_src == base_src or new_src == mine_src:
            out.append(own)
        else:
            fills, outside = learner_fills(base_src, mine_src)
            placed, unplaced = place_fills(base_src, new_src, fills)
            merged = {**cell, "source": placed}
            out.append(merged)
            if outside or unplaced:
                why = "you changed lines outside the answer regions" if outside else "the course removed an answer region you filled"
                note("conflicts", merged, f"both you and the course changed this cell: {why}; your version is kept below it as a raw cell")
                out.append(_kept_cell(cid, mine_src, "you and the course both changed it", taken))
            else:
                note("reapplied", merged, "the course changed this cell; your answer is in its new version")
    # cells only the learner has (added by them), and edited cells the course removed
    position = {id(c): i for i, c in enumerate(out)}
    placed_ids = {c.get("id") for c in out}
    anchor_index = -1
    inserts: list[tuple[int, dict]] = []
    for own in mine["cells"]:
        cid = own.get("id")
        if cid in placed_ids:
            match = next(c for c in out if c.get("id") == cid)
            anchor_index = position[id(match)]
            continue
        if cid in b and cid not in course_ids:  # the course removed it
            if _source(own) == _source(b[cid]):
                continue
            kept = _kept_cell(cid, _source(own), REMOVED, taken)
            note("conflicts", kept, "you changed this cell and the course removed it; your version is kept as a raw cell")
            inserts.append((anchor_index, kept))
        elif cid not in b:  # added by the learner
            inserts.append((anchor_index, own))
    for count, (after, cell) in enumerate(inserts):  # in order; each after its anchor
        out.insert(after + 1 + count, cell)
    final_notes: dict[str, list[CellNote]] = {"conflicts": [], "reapplied": [], "restored": []}
    for number, cell in enumerate(out, start=1):
        for index in cell.pop("_notes", []):
            kind, cn = notes[index]
            cn.cell = number
            final_notes[kind].append(cn)
    metadata = {**mine.get("metadata", {}), **course.get("metadata", {})}
    result.notebook = {**course, "cells": out, "metadata": metadata}
    result.conflicts, result.reapplied, result.restored = (final_notes[k] for k in ("conflicts", "reapplied", "restored"))
    return result


def kept_cells(notebook: dict) -> list[tuple[int, str]]:
    """(position, reason) of every learner's cell an update kept to merge by hand, still there."""
    return [(i, c["metadata"]["course"][KEPT_MARK]["reason"]) for i, c in enumerate(notebook.get("cells", []), start=1)
            if isinstance(c.get("metadata", {}).get("course"), dict) and KEPT_MARK in c["metadata"]["course"]]


def changed_cells(old: dict, new: dict) -> list[str]:
    """A short description of what changed between two versions of a generated exercise."""
    before = {c.get("id"): (i, _source(c)) for i, c in enumerate(old["cells"], start=1)}
    lines = []
    for i, cell in enumerate(new["cells"], start=1):
        was = before.pop(cell.get("id"), None)
        if was is None:
            lines.append(f"cell {i}: new")
        elif was[1] != _source(cell):
            diff = difflib.unified_diff(was[1].splitlines(), _source(cell).splitlines(), lineterm="", n=0)
            changes = [d for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---")]
            lines.append(f"cell {i}: " + "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else ""))
    lines.extend(f"cell {i} (before): removed" for i, _ in before.values())
    return lines


def sources(text: bytes | str) -> list[str] | None:
    try:
        return [_source(c) for c in json.loads(text)["cells"]]
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- git


class Git:
    def __init__(self, root: Path):
        self.root = root

    def run(self, *args: str, env: dict | None = None, check: bool = True, data: bytes | None = None) -> bytes:
        try:
            done = subprocess.run(["git", *args], cwd=self.root, capture_output=True, input=data,
                                  env={**os.environ, "LANG": "C", **(env or {})}, timeout=300)
        except OSError as exc:
            raise CourseError(f"cannot run git ({exc.strerror}): install git, then run this again") from exc
        if check and done.returncode != 0:
            why = (done.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1]
            raise CourseError(f"git {args[0]} failed: {why} (nothing of yours was changed)")
        return done.stdout

    def text(self, *args: str, **kw) -> str:
        return self.run(*args, **kw).decode().strip()

    def ok(self, *args: str) -> bool:
        try:
            return subprocess.run(["git", *args], cwd=self.root, capture_output=True).returncode == 0
        except OSError as exc:
            raise CourseError(f"cannot run git ({exc.strerror}): install git, then run this again") from exc

    def tree(self, commit: str | None) -> dict[str, str]:
        """path -> blob id of every file in a commit."""
        if not commit:
            return {}
        out = self.run("ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0")
        files = {}
        for entry in filter(None, out):
            meta, path = entry.split(b"\t", 1)
            files[path.decode()] = meta.split()[2].decode()
        return files

    def links(self, commit: str) -> set[str]:
        """The paths of a commit that are symbolic links (mode 120000; their blob is the link's target)."""
        out = self.run("ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0")
        return {e.split(b"\t", 1)[1].decode() for e in filter(None, out) if e.startswith(b"120000 ")}

    def blob(self, sha: str | None) -> bytes | None:
        return None if sha is None else self.run("cat-file", "blob", sha)


def published_sources(git: Git, rel: str, refs: list[str], limit: int = 100) -> list[list[str]]:
    """The cell sources of every version of a notebook in the course's history (not the learner's)."""
    log = git.run("log", f"-{limit}", "--format=%H", *refs, "--", rel, check=False).decode().split()
    blobs = {git.run("rev-parse", f"{commit}:{rel}", check=False).decode().strip() for commit in log}
    found = [sources(git.blob(blob)) for blob in blobs if blob]
    return [s for s in found if s is not None]


def find_generated(git: Git, rel: str, stamp: str, limit: int = 300) -> dict | None:
    """The generated exercise `rel` whose sources digest is `stamp`, from any commit git has."""
    log = git.run("log", "--all", "--reflog", f"-{limit}", "--format=%H", "--", rel, check=False).decode().split()
    seen = set()
    for commit in log:
        blob = git.run("rev-parse", f"{commit}:{rel}", check=False).decode().strip()
        if not blob or blob in seen:
            continue
        seen.add(blob)
        text = git.blob(blob).decode("utf-8", errors="replace")
        try:
            notebook = json.loads(text)
        except ValueError:
            continue
        if stamp_of(notebook) == stamp and not edited_since_generated(text):
            return notebook
    return None


# ---------------------------------------------------------------- the update


@dataclass
class UpdateReport:
    upstream: str = ""
    previous: str = ""
    backup_ref: str = ""
    attempts_dir: str = ""
    arrived: list[str] = field(default_factory=list)  # paths the course added or changed that arrived
    kept: list[str] = field(default_factory=list)  # "path: what happened to the learner's version"
    conflicts: list[str] = field(default_factory=list)  # "path, cell N: ..."
    reapplied: list[str] = field(default_factory=list)
    replaced_runs: list[str] = field(default_factory=list)  # lessons run/saved, replaced by the course's
    # exercises the learner started and the course changed -> sha256 of the learner's file before
    merged_exercises: dict[str, str] = field(default_factory=dict)
    not_restored: list[str] = field(default_factory=list)  # "path: why, and the git command that brings it back"

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _now_stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def update(root: Path) -> UpdateReport:
    git = Git(root)
    if not git.ok("rev-parse", "--git-dir"):
        raise CourseError(f"{root} is not a git checkout: `course update` needs the course cloned with git")
    top = Path(git.text("rev-parse", "--show-toplevel")).resolve()
    if top != root.resolve():
        raise CourseError(f"the course folder {root} is not the top of its git checkout ({top})")
    git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
    for busy in ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD"):
        if (git_dir / busy).exists():
            raise CourseError("a git merge or rebase is in progress: finish it (or `git merge --abort`), then run `course update`")
    branch = git.text("symbolic-ref", "--short", "-q", "HEAD", check=False)
    if not branch:
        raise CourseError("HEAD is detached: `git switch main` (your files stay as they are), then run `course update`")
    remote = git.text("config", f"branch.{branch}.remote", check=False)
    merge_ref = git.text("config", f"branch.{branch}.merge", check=False)
    if not remote or not merge_ref or remote == ".":
        raise CourseError(f"your branch {branch!r} follows no branch of the course: "
                          "`git branch --set-upstream-to=origin/main`, then run `course update`")
    tracking = f"refs/remotes/{remote}/{merge_ref.removeprefix('refs/heads/')}"
    report = UpdateReport()
    head = git.text("rev-parse", "HEAD")
    old_upstream = git.text("rev-parse", "-q", "--verify", tracking, check=False) or None
    base = (git.text("merge-base", head, old_upstream, check=False) if old_upstream else "") or head

    # 1. everything as it is now, as one commit (parent: HEAD) under refs/course/
    stamp, n = _now_stamp(), 1
    while git.ok("rev-parse", "-q", "--verify", BACKUP_REFS + stamp) or (root / "attempts" / f"update-{stamp}").exists():
        n += 1  # two updates in one second: never overwrite the first one's backup
        stamp = f"{_now_stamp()}-{n}"
    index = git_dir / "course-update.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git.run("read-tree", "HEAD", env=env)
        git.run("add", "-A", env=env)
        snapshot_tree = git.text("write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    snapshot = git.text(*GIT_IDENTITY, "commit-tree", snapshot_tree, "-p", head,
                        "-m", f"course update {stamp}: the checkout as it was before the update")
    report.backup_ref = BACKUP_REFS + stamp
    git.run("update-ref", report.backup_ref, snapshot)

    moved = False  # True once the checkout is at the course's commit: the learner's work then lives in the ref
    try:
        # 2. the course's latest
        git.run("fetch", "--quiet", remote)
        upstream = git.text("rev-parse", tracking)
        report.upstream, report.previous = upstream, head

        mine, started, latest = git.tree(snapshot), git.tree(base), git.tree(upstream)
        course_refs = [upstream] + ([old_upstream] if old_upstream else [])  # the course's history only
        attempts = Path("attempts") / f"update-{stamp}"
        report.attempts_dir = attempts.as_posix()
        writes: dict[str, bytes | None] = {}  # what to put on disk after the checkout moved (None: remove)
        copies: dict[str, bytes] = {}  # learner's versions kept in attempts/update-<stamp>/

        def keep_copy(path: str, data: bytes) -> str:
            copies[path] = data
            return (attempts / path).as_posix()

        for path in sorted(set(mine) | set(started) | set(latest)):
            w, b, u = mine.get(path), started.get(path), latest.get(path)
            if u is not None and u != b:
                report.arrived.append(path)
            if w == u or w == b:
                continue  # nothing of the learner's here (or the same as the course's): the course's version
            w_data = git.blob(w)
            if path.startswith("exercises/") and path.endswith(".ipynb") and w and u:
                handled = _update_exercise(git, path, w_data, git.blob(b), git.blob(u), report, writes, keep_copy)
                if handled:
                    continue
            if path.startswith(COURSE_NOTEBOOK_FOLDERS) and path.endswith(".ipynb") and w and u:
                mine_src = sources(w_data)
                if mine_src is not None and mine_src == sources(git.blob(u)):
                    if u == b:
                        writes[path] = w_data  # run and saved; the course did not change it: keep the outputs
                    else:
                        report.replaced_runs.append(path)
                    continue
                if mine_src is not None and mine_src in published_sources(git, path, course_refs):
                    report.replaced_runs.append(path)  # an older version of the course's, run and saved
                    continue
                if u == b:
                    writes[path] = w_data  # edited by the learner, unchanged by the course
                else:
                    report.kept.append(f"{path}: you edited it; the course's new version is in place, yours is kept in {keep_copy(path, w_data)}")
                continue
            if u == b:  # only the learner changed it (or added it, or deleted it): theirs stays
                writes[path] = w_data
                continue
            if w is None:
                report.kept.append(f"{path}: you had deleted it; the course changed it, so its new version is back")
                continue
            if u is None:
                writes[path] = w_data
                report.kept.append(f"{path}: the course removed it; your changed version stays")
                continue
            if b is None:
                report.kept.append(f"{path}: the course added a file at this path; yours is kept in {keep_copy(path, w_data)}")
                continue
            merged = _merge_text(git, w_data, git.blob(b), git.blob(u)) if not path.endswith(".ipynb") else None
            if merged is not None:
                writes[path] = merged
                report.kept.append(f"{path}: your changes and the course's merged (they touched different lines)")
            else:
                report.conflicts.append(f"{path}: you and the course both changed it; the course's version is in place, yours is kept in {keep_copy(path, w_data)}")

        # 3. store the learner's copies first, then move the checkout, then put their work back
        for path, data in copies.items():
            target = root / attempts / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        moved = True  # from here (even if reset fails half-way) the learner's files may differ from the snapshot
        git.run("reset", "--quiet", "--hard", upstream)
        links = git.links(snapshot)
        for path, data in writes.items():  # one path that cannot be written never stops the others
            try:
                _put_back(root / path, data, is_link=path in links)
            except OSError as exc:
                report.not_restored.append(f"{path}: could not be put back ({exc.strerror or exc}); "
                                           f"`git checkout {report.backup_ref} -- {path}` brings it back")
        if not copies:
            report.attempts_dir = ""
        state = root / ".course" / "update.json"
        state.parent.mkdir(exist_ok=True)
        state.write_text(json.dumps({"when": stamp, **report.to_json()}, indent=1), encoding="utf-8")
    except Exception as exc:  # a traceback would hide where the learner's work is
        if not moved and isinstance(exc, CourseError):
            raise
        where = "your checkout is moved to the course's version; " if moved else "nothing of yours was changed; "
        why = str(exc).removesuffix(" (nothing of yours was changed)")
        raise CourseError(f"the update stopped ({type(exc).__name__}: {why}); {where}everything as it was before is "
                          f"in git ref {report.backup_ref}: `git checkout {report.backup_ref} -- PATH` brings a file back") from exc
    return report


def _put_back(target: Path, data: bytes | None, is_link: bool) -> None:
    """Write the learner's version of one path; a symbolic link (a `.venv` linked elsewhere) stays a
    link, and nothing is ever written through a link into the file or folder it points to."""
    if data is None:
        target.unlink(missing_ok=True)
        return
    if is_link:
        link_to = os.fsdecode(data)
        if target.is_symlink() and os.readlink(target) == link_to:
            return  # untracked, so `reset --hard` left it as it was
        if target.is_symlink() or target.is_file():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_to, target)
        return
    if target.is_symlink():
        target.unlink()
    elif target.is_file() and target.read_bytes() == data:
        return  # untracked, so `reset --hard` left it as it was
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _merge_text(git: Git, mine: bytes, base: bytes, course: bytes) -> bytes | None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="course-merge-") as tmp:
        paths = []
        for name, data in (("mine", mine), ("base", base), ("course", course)):
            (Path(tmp) / name).write_bytes(data)
            paths.append(str(Path(tmp) / name))
        done = subprocess.run(["git", "merge-file", "-p", *paths], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def _update_exercise(git, path, w_data, b_data, u_data, report, writes, keep_copy) -> bool:
    """Decide one exercise; False leaves it to the generic rules (not a course notebook)."""
    try:
        mine, course = json.loads(w_data), json.loads(u_data)
    except ValueError:
        return False
    mine_text = w_data.decode("utf-8", errors="replace")
    if not stamp_of(mine):
        return False  # not a generated exercise (a file of the learner's at that path)
    if not edited_since_generated(mine_text):
        if stamp_of(mine) == stamp_of(course):
            writes[path] = w_data  # run but not edited, unchanged by the course: keep the outputs
        return True  # not edited: the course's version
    if stamp_of(mine) == stamp_of(course):
        writes[path] = w_data  # the course did not change this exercise: the learner's file stays
        return True
    base = None
    if b_data is not None:
        try:
            candidate = json.loads(b_data)
            if stamp_of(candidate) == stamp_of(mine) and not edited_since_generated(b_data.decode()):
                base = candidate
        except ValueError:
            pass
    if base is None and stamp_of(mine):
        base = find_generated(git, path, stamp_of(mine))
    copy = keep_copy(path, w_data)
    if base is None:
        writes[path] = w_data
        report.conflicts.append(f"{path}: the version you started from is not in this repository's history, so the "
                                f"course's changes could not be merged into yours: your file stays; the course's new "
                                f"version is `git show {report.upstream[:12] or 'origin'}:{path}`")
        return True
    if not all(c.get("id") for nb in (base, mine, course) for c in nb["cells"]):
        writes[path] = w_data  # cells without ids (nbformat < 4.5) cannot be paired: nothing is guessed
        report.conflicts.append(f"{path}: a cell has no id, so the course's changes could not be merged into yours: "
                                f"your file stays; the course's new version is `git show {report.upstream[:12]}:{path}`")
        return True
    merged = merge_exercise(base, mine, course)
    writes[path] = dumps(merged.notebook).encode("utf-8")
    report.merged_exercises[path] = hashlib.sha256(w_data).hexdigest()
    report.reapplied.extend(f"{path}, cell {n.cell}: {n.what}" for n in merged.reapplied)
    report.kept.extend(f"{path}, cell {n.cell}: {n.what}" for n in merged.restored)
    report.conflicts.extend(f"{path}, cell {n.cell}: {n.what}" for n in merged.conflicts)
    report.kept.append(f"{path}: your exercise as it was before the update is kept in {copy}")
    return True


def exercise_news(lesson) -> dict:
    """What `course status` says about one exercise beyond its checks: whether the course changed
    it since the learner's copy was generated (and how), and the cells an update kept to merge."""
    from coursekit.build import generate

    try:
        mine = json.loads(lesson.exercise.read_text(encoding="utf-8"))
        current = json.loads(generate(lesson))
    except (OSError, ValueError, CourseError):
        return {}
    news: dict = {}
    if kept := kept_cells(mine):
        news["kept_cells"] = [f"cell {i}: {reason}" for i, reason in kept]
    started_from = stamp_of(mine)
    if started_from and started_from != stamp_of(current):
        git = Git(lesson.root)
        rel = lesson.exercise.relative_to(lesson.root).as_posix()
        base = find_generated(git, rel, started_from) if git.ok("rev-parse", "--git-dir") else None
        news["changed_upstream"] = changed_cells(base, current) if base else ["(the version you started from is not in git's history)"]
    return news
