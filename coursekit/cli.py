"""The `course` command (also `python -m coursekit`).

  course build [--check]          write exercises/ from solutions/ (or only compare)
  course check NN|PATH [--json]   run one exercise headless and report each check
  course status [--json]          every exercise's progress (re-runs only changed ones)
  course update [--no-check]      the course's latest version; your work is kept (and checked)
  course workshop-link --repo URL [--hub URL]   (instructors) nbgitpuller and Binder links
  course reset NN                 a fresh exercise; your attempt is kept in attempts/
  course hint NN                  the next hint for the exercise's first check not passed
  course grade DIR [--csv FILE]   check every notebook in a folder of submissions, each in a sandbox
  course record NN|all            (authors) re-execute lesson + solution, store outputs
  course corpus NN [--only ID]    (authors) run the exercise's wrong/right-answer corpus
  course site [--output DIR]      the course as a static website in build/site/ (offline)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from pathlib import Path

from coursekit.manifest import CourseError, Lesson, course_root, find_lesson, lessons

LABELS = {"passed": "passed", "failed": "FAILED", "not-started": "not started", "error": "ERROR"}
MARKS = {"passed": "✔", "failed": "✘", "not-started": "…", "error": "!"}
STATUS_CACHE = Path(".course") / "status.json"


def _out(text: str = "") -> None:
    print(text, flush=True)


def _notebook_arg(key: str) -> Path:
    """An exercise by lesson id/stem, or any notebook path."""
    path = Path(key)
    if path.suffix == ".ipynb" or path.exists():
        if not path.is_file():
            raise CourseError(f"{key}: no such notebook")
        return path
    return find_lesson(key).exercise


def _shown(path: str) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _print_report(report) -> None:  # a runner.Report
    _out(_shown(report.notebook))
    width = max((len(c.id) for c in report.checks), default=0)
    for check in report.checks:
        line = f"  {MARKS[check.status]} {check.id:<{width}}  {LABELS[check.status]}"
        if check.message and check.status != "passed":
            line += f": {check.message}"
        _out(line)
    counts = {s: sum(c.status == s for c in report.checks) for s in LABELS}
    summary = ", ".join(f"{n} {LABELS[s].lower()}" for s, n in counts.items() if n)
    _out(f"  {summary}")
    if report.problem:
        _out(f"  note: {report.problem}")


def cmd_check(args: argparse.Namespace) -> int:
    from coursekit.runner import check

    path = _notebook_arg(args.notebook)
    report = check(path, cell_timeout=args.cell_timeout, total_timeout=args.timeout)
    _remember(path, report)
    if args.json:
        _out(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_report(report)
    return 0 if report.all_passed else 1


def _digest(path: Path) -> str:
    """The notebook's sha256; for an incident hunt's exercise, the service copy it tests counts too."""
    from coursekit.hunt import HUNT_SERVICE_ENV, copy_folder, is_hunt, package_files
    from coursekit.manifest import lesson_for_notebook

    digest = hashlib.sha256(path.read_bytes())
    try:
        lesson = lesson_for_notebook(path)
    except CourseError:
        lesson = None
    if lesson is not None and is_hunt(lesson) and path.resolve() == lesson.exercise.resolve():
        # the folder the checks test: $COURSE_HUNT_SERVICE when set, else the learner's copy (a result cached
        # under the copy's digest must come from the copy, or `course hint` reports an unfixed copy as done)
        override = os.environ.get(HUNT_SERVICE_ENV)
        folder = (Path(override) if override else copy_folder(lesson)) / "taskservice"
        for rel, text in (package_files(folder).items() if folder.is_dir() else ()):
            digest.update(f"\0{rel}\0{text}".encode())
    return digest.hexdigest()


def _cache_path() -> Path:
    return course_root() / STATUS_CACHE


def _load_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remember(path: Path, report) -> None:
    cache = _load_cache()
    cache[str(path.resolve())] = {"sha256": _digest(path), "report": report.to_json()}
    _cache_path().parent.mkdir(exist_ok=True)
    _cache_path().write_text(json.dumps(cache, indent=1), encoding="utf-8")


def _untouched_report(lesson: Lesson) -> dict | None:
    """A pristine exercise (as generated) has every check not started: no need to run it."""
    from coursekit.build import generate
    from coursekit.hunt import is_hunt
    from coursekit.runner import notebook_check_ids, read_notebook

    if is_hunt(lesson):  # an incident hunt's work is in its copy of the service: untouched only if that is too
        from coursekit.hunt import edited_files

        if edited_files(lesson):
            return None
    if lesson.exercise.read_text(encoding="utf-8") != generate(lesson):
        return None
    ids = notebook_check_ids(read_notebook(lesson.solution))
    return {
        "notebook": str(lesson.exercise),
        "checks": [{"id": i, "status": "not-started", "message": "untouched since generated"} for i in ids],
    }


def _current_report(lesson: Lesson, args: argparse.Namespace, *, quiet: bool = False) -> dict:
    """The exercise's check results: cached by `course check`/`status` while the file is unchanged, else run now."""
    path = lesson.exercise
    if not path.is_file():
        raise CourseError(f"{path.relative_to(lesson.root)} is missing: `course reset {lesson.id}` makes a fresh one")
    entry = _load_cache().get(str(path.resolve()))
    if entry and entry["sha256"] == _digest(path):
        return entry["report"]
    if (data := _untouched_report(lesson)) is not None:
        return data
    from coursekit.runner import check

    if not quiet:
        _out(f"checking {path.relative_to(lesson.root)} (changed since its last check) ...")
    report = check(path, cell_timeout=args.cell_timeout, total_timeout=args.timeout)
    _remember(path, report)
    return report.to_json()


def cmd_status(args: argparse.Namespace) -> int:
    rows = []
    for lesson in lessons():
        if not lesson.exercise.is_file():
            rows.append((lesson, None, "missing: run `course reset " + lesson.id + "`"))
            continue
        rows.append((lesson, _current_report(lesson, args, quiet=args.json), ""))
    if args.json:
        _out(json.dumps([{"lesson": lesson.id, **(data or {"error": note}), **_exercise_news(lesson, data)}
                         for lesson, data, note in rows], indent=2))
        return 0
    _out(f"{'lesson':<44} {'passed':>7}  progress")
    for lesson, data, note in rows:
        name = f"{lesson.id} {lesson.title}"[:44]
        if data is None:
            _out(f"{name:<44} {'-':>7}  {note}")
            continue
        checks = data["checks"]
        passed = sum(c["status"] == "passed" for c in checks)
        bar = "".join(MARKS[c["status"]] for c in checks)
        _out(f"{name:<44} {passed:>3}/{len(checks):<3}  {bar}")
    news = {lesson.id: _exercise_news(lesson, data) for lesson, data, _ in rows}
    for lesson in (lesson for lesson, _, _ in rows if news[lesson.id]):
        rel = lesson.exercise.relative_to(lesson.root)
        if changed := news[lesson.id].get("changed_upstream"):
            _out(f"\n{rel}: the course changed this exercise since you started it; "
                 "`course update` brings the change in and keeps your answers:")
            for line in changed[:12]:
                _out(f"  {line}")
        if kept := news[lesson.id].get("kept_cells"):
            _out(f"\n{rel}: cells `course update` kept for you to merge by hand (your version, as a raw cell):")
            for line in kept:
                _out(f"  {line}")
    _out(f"\n{MARKS['passed']} passed  {MARKS['failed']} failed  {MARKS['not-started']} not started  {MARKS['error']} error"
         "   details: course check NN")
    return 0


def cmd_hint(args: argparse.Namespace) -> int:
    from coursekit.hints import Outcome, load_hints, next_hint
    from coursekit.runner import notebook_check_ids, read_notebook

    lesson = find_lesson(args.lesson)
    load_hints(lesson)  # no hints file: say so before running any check
    data = _current_report(lesson, args)
    outcomes = {c["id"]: Outcome(c["id"], c["status"], c.get("message", "")) for c in data["checks"]}
    expected = notebook_check_ids(read_notebook(lesson.solution))
    _out(next_hint(lesson, expected, outcomes, f"`course hint {lesson.id}` again"))
    if data.get("problem"):
        _out(f"note: {data['problem']}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from coursekit.build import build

    results = build(check=args.check)
    stale = [r for r in results if r.status == "stale"]
    for r in results:
        rel = r.target.relative_to(r.lesson.root)
        if r.status == "stale" and r.path is not None:
            _out(f"stale: {rel}/ differs from what solutions/{r.lesson.stem}_incidents.toml plants into the service")
        elif r.status == "stale":
            _out(f"stale: {rel} differs from what {r.lesson.solution.relative_to(r.lesson.root)} generates")
        elif r.status == "written":
            _out(f"wrote {rel}" + (f" (the previous version, edited by hand, is kept in {r.saved.relative_to(r.lesson.root)})" if r.saved else ""))
        elif r.status == "learner-edited":
            _out(f"ok: {rel} (edited in the working tree; the committed version is current)")
    if args.check:
        if stale:
            _out("exercises/ is out of date: run `course build` and commit the result")
            return 1
        copies = sum(r.path is not None for r in results)
        _out(f"exercises/ is in sync with solutions/ ({len(results) - copies} notebooks"
             + (f", {copies} incident hunt's service copy)" if copies == 1 else f", {copies} service copies)" if copies else ")"))
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from coursekit.build import reset, reset_hunt_copy
    from coursekit.hunt import copy_folder, is_hunt

    lesson = find_lesson(args.lesson)
    saved = reset(lesson)
    rel = lesson.exercise.relative_to(lesson.root)
    kept = f" Your attempt is kept in {saved.relative_to(lesson.root)}" if saved else " (it had no edits of yours to keep.)"
    _out(f"{rel} is fresh again." + kept)
    if is_hunt(lesson):
        saved = reset_hunt_copy(lesson)
        rel = copy_folder(lesson).relative_to(lesson.root)
        kept = f" Your fixes are kept in {saved.relative_to(lesson.root)}/" if saved else " (it had no edits of yours to keep.)"
        _out(f"{rel}/ (the service with its incidents) is fresh again." + kept)
    return 0


def _grade_one(path: Path, forced: Lesson | None, limits, sandboxed: bool) -> dict:
    """One CSV row for one submission; nothing a submission does aborts the batch."""
    from coursekit.sandbox import grade_submission, printable

    try:
        # The submission's own check cells are not trusted: the course's originals are run.
        row = grade_submission(path, forced, limits, sandboxed=sandboxed)
    except Exception as exc:  # a bug of ours on one submission must not lose the others' grades
        row = {"notebook": str(path), "lesson": forced.id if forced else "", "passed": 0, "total": 0,
               "problem": f"not graded: the grader failed ({type(exc).__name__}: {exc})"}
    # its file name and its messages are the submission's text: shown, never interpreted by a terminal
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


def grade_csv_fields(rows: list[dict]) -> list[str]:
    """The CSV's columns: the row's summary, then the checks in the exercise's order (the order of
    its sections, as the learner met them), each lesson's after the previous one's."""
    fields = ["notebook", "lesson", "passed", "total", "problem"]
    return fields + list(dict.fromkeys(k for row in rows for k in row if k not in fields))


def cmd_grade(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from coursekit.sandbox import INSTALL_HINT, UNSAFE_WARNING, Limits, bwrap, preflight, spreadsheet_safe

    folder = Path(args.folder)
    if not folder.is_dir():
        raise CourseError(f"{folder}: not a folder")
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise CourseError(f"{folder}: no .ipynb files in it")
    sandboxed = not args.unsafe_no_sandbox
    if sandboxed and bwrap() is None:
        raise CourseError(INSTALL_HINT)
    if sandboxed and (why := preflight()):
        raise CourseError(why)
    if not sandboxed:
        print(UNSAFE_WARNING, file=sys.stderr, flush=True)
    limits = Limits(cell_timeout=args.cell_timeout, total_timeout=args.timeout, memory_mb=args.memory_mb,
                    cpu_seconds=args.cpu_seconds, processes=args.processes, file_mb=args.file_mb, disk_mb=args.disk_mb)
    forced = find_lesson(args.lesson) if args.lesson else None
    jobs = [(path, forced) for path in notebooks]  # each one's lesson: read in _grade_one, bounded
    # Each submission runs in its own sandbox process: threads here only wait for them.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda job: _grade_one(*job, limits, sandboxed), jobs))
    for row in rows:
        if row["total"]:
            _out(f"{row['notebook']}: {row['passed']}/{row['total']} checks passed" + (f" ({row['problem']})" if row["problem"] else ""))
        else:
            _out(f"{row['notebook']}: not graded: {row['problem']}")
    if args.csv:
        fields = grade_csv_fields(rows)
        with open(args.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)
        _out(f"wrote {args.csv}")
    if not sandboxed:
        print(UNSAFE_WARNING, file=sys.stderr, flush=True)  # again, below the rows, where it is read
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from coursekit.build import build
    from coursekit.record import record

    chosen = list(lessons()) if args.lesson == "all" else [find_lesson(args.lesson)]
    for lesson in chosen:
        for path in (lesson.notebook, lesson.solution):
            seconds = record(path)
            _out(f"recorded {path.relative_to(lesson.root)} ({seconds:.1f} s)")
    build(only=chosen)
    return 0


def _exercise_news(lesson: Lesson, data: dict | None) -> dict:
    """For `course status`: changed by the course since the learner started it; cells an update kept."""
    from coursekit.update import exercise_news

    return exercise_news(lesson) if data is not None else {}


def cmd_update(args: argparse.Namespace) -> int:
    from coursekit.manifest import _load
    from coursekit.update import update

    root = course_root()
    report = update(root)
    _load.cache_clear()  # the course's manifest may have changed (a new lesson)
    if args.json and args.no_check:
        _out(json.dumps(report.to_json(), indent=1, ensure_ascii=False))
        return 1 if report.not_restored else 0
    say = (lambda text="": None) if args.json else _out
    say(f"course update: {report.previous[:10]} -> {report.upstream[:10]}")
    if not report.arrived:
        say("nothing new from the course: you already have its latest version (your files are as they were)")
    if report.arrived:
        say(f"from the course ({len(report.arrived)}): " + ", ".join(report.arrived))
    for title, items in (("your answers re-applied to the course's new cells:", report.reapplied),
                         ("CONFLICTS: both versions kept, merge by hand:", report.conflicts),
                         ("your work kept:", report.kept)):
        if items:
            say(title)
            for item in items:
                say(f"  {item}")
    if report.replaced_runs:
        say("run and saved in JupyterLab, now the course's version (outputs only, no edit of yours): "
            + ", ".join(report.replaced_runs))
    if report.not_restored:
        say("NOT PUT BACK (your version is safe in the git ref below):")
        for item in report.not_restored:
            say(f"  {item}")
    say(f"everything as it was before: git ref {report.backup_ref} "
        f"(`git checkout {report.backup_ref} -- PATH` brings a file back)")
    drift = []
    checked = {}
    if not args.no_check:
        from coursekit.runner import check

        cache = _load_cache()
        for rel, before_sha in report.merged_exercises.items():
            path = root / rel
            say(f"checking {rel} (your work, changed by the course) ...")
            entry = cache.get(str(path.resolve()))
            before = {c["id"]: c["status"] for c in entry["report"]["checks"]} if entry and entry["sha256"] == before_sha else {}
            result = check(path, cell_timeout=args.cell_timeout, total_timeout=args.timeout)
            _remember(path, result)
            checked[rel] = result.to_json()
            for c in result.checks:
                was = before.get(c.id)
                line = f"  {MARKS[c.status]} {c.id}  {LABELS[c.status]}"
                if c.message and c.status != "passed":
                    line += f": {c.message}"
                if was == "passed" and c.status != "passed":
                    line += "   (passed before the update)"
                    drift.append(f"{rel}: {c.id}")
                say(line)
            if result.problem:
                say(f"  note: {result.problem}")
        if drift:
            say(f"drift: {len(drift)} check(s) that passed before the update do not pass now: " + ", ".join(drift))
    if args.json:
        _out(json.dumps({**report.to_json(), "checks": checked, "drift": drift}, indent=1, ensure_ascii=False))
    return 1 if report.not_restored else 0


def cmd_workshop_link(args: argparse.Namespace) -> int:
    from coursekit.workshop import binder_badge, binder_link, hub_link

    options = {"branch": args.branch, "folder": args.folder}
    web = ("https://", "http://")
    if args.hub:
        # a link without the scheme is relative: learners' browsers would open a page of the site it is posted on
        if not args.hub.startswith(web):
            raise CourseError(f"--hub {args.hub}: give the hub's full address, e.g. https://{args.hub.lstrip('/')}")
        # the hub clones as each learner, with no keys of yours: an ssh address (git@...) cannot be cloned there
        if not args.repo.startswith(web):
            raise CourseError(f"--repo {args.repo}: give the course's public https:// git address (the hub clones it without your keys)")
        _out(f"JupyterHub (nbgitpuller): {hub_link(args.hub, args.repo, **options)}")
    if args.repo.startswith("https://github.com/"):
        _out(f"Binder: {binder_link(args.repo, branch=args.branch)}")
        _out(f"Binder badge: {binder_badge(args.repo, branch=args.branch)}")
    elif not args.hub:
        raise CourseError("give --hub URL (nbgitpuller link), or a https://github.com/... --repo (Binder link)")
    else:
        _out("Binder: no link (this command makes Binder links for a https://github.com/OWNER/REPO --repo only)")
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from coursekit.corpus import lesson_by_key, run_corpus

    lesson = lesson_by_key(args.lesson, course_root())
    held = 0
    results = []
    for result in run_corpus(lesson, lesson.root, only=args.only):
        held += result.ok
        results.append(result)
        if args.json:
            continue
        mark = "✔" if result.ok else "✘"
        _out(f"{mark} {result.entry.kind:<5} {result.entry.id} ({result.seconds:.1f} s): {result.summary}")
    if args.json:
        _out(json.dumps([{"kind": r.entry.kind, "id": r.entry.id, "ok": r.ok, "summary": r.summary,
                          "checks": r.checks} for r in results], indent=1))
    else:
        _out(f"{held} of {len(results)} entries hold")
    return 0 if held == len(results) else 1


def cmd_site(args: argparse.Namespace) -> int:
    from coursekit.site import main as site_main

    return site_main(args.output)


def parser() -> argparse.ArgumentParser:
    from coursekit.sandbox import Limits

    p = argparse.ArgumentParser(prog="course", description="FastAPI Advanced Patterns: course tools")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="write exercises/ from solutions/")
    b.add_argument("--check", action="store_true", help="only compare; exit 1 when exercises/ is stale")
    b.set_defaults(func=cmd_build)

    for name, func, helptext in (("check", cmd_check, "run one exercise and report each check"),
                                 ("status", cmd_status, "progress of every exercise"),
                                 ("hint", cmd_hint, "the next hint for the exercise's first check not passed"),
                                 ("grade", cmd_grade, "check every notebook in a folder")):
        c = sub.add_parser(name, help=helptext)
        if name == "check":
            c.add_argument("notebook", help="lesson id (01), stem, or a notebook path")
        if name == "hint":
            c.add_argument("lesson", help="lesson id (01) or stem")
        if name == "grade":
            c.add_argument("folder")
            c.add_argument("--csv", metavar="FILE", help="also write the results as CSV")
            c.add_argument("--lesson", help="grade every notebook as this lesson (default: from metadata or file name)")
            c.add_argument("--jobs", type=int, default=1, help="notebooks checked at once (default 1; each runs a kernel)")
            limits = Limits()
            c.add_argument("--memory-mb", type=int, default=limits.memory_mb, help=f"address space per process ({limits.memory_mb})")
            c.add_argument("--cpu-seconds", type=int, default=limits.cpu_seconds, help=f"CPU seconds per process ({limits.cpu_seconds})")
            c.add_argument("--processes", type=int, default=limits.processes, help=f"processes and threads per submission ({limits.processes})")
            c.add_argument("--file-mb", type=int, default=limits.file_mb, help=f"largest file a submission writes ({limits.file_mb})")
            c.add_argument("--disk-mb", type=int, default=limits.disk_mb, help=f"writable space per submission ({limits.disk_mb})")
            c.add_argument("--unsafe-no-sandbox", action="store_true",
                           help="run submissions WITHOUT the bubblewrap sandbox, as yourself (only for code you trust)")
        if name in ("check", "status"):
            c.add_argument("--json", action="store_true", help="machine-readable output")
        c.add_argument("--timeout", type=float, default=600, help="seconds for the whole notebook (600)")
        c.add_argument("--cell-timeout", type=float, default=120, help="seconds for one cell (120)")
        c.set_defaults(func=func)

    u = sub.add_parser("update", help="bring the course to its latest version; your work is kept")
    u.add_argument("--no-check", action="store_true", help="do not run the checks of the exercises the update merged")
    u.add_argument("--json", action="store_true", help="machine-readable output")
    u.add_argument("--timeout", type=float, default=600, help="seconds for one exercise's checks (600)")
    u.add_argument("--cell-timeout", type=float, default=120, help="seconds for one cell (120)")
    u.set_defaults(func=cmd_update)

    w = sub.add_parser("workshop-link", help="(instructors) the nbgitpuller link for a JupyterHub, the Binder link")
    w.add_argument("--repo", required=True, help="the course's public git URL")
    w.add_argument("--hub", help="the JupyterHub's URL (https://hub.example.org)")
    w.add_argument("--branch", default="main", help="the course's branch learners pull (main)")
    w.add_argument("--folder", default="fastapi-advanced-patterns", help="folder in each learner's home")
    w.set_defaults(func=cmd_workshop_link)

    r = sub.add_parser("reset", help="fresh exercise; your attempt is kept in attempts/")
    r.add_argument("lesson", help="lesson id (01) or stem")
    r.set_defaults(func=cmd_reset)

    rec = sub.add_parser("record", help="(authors) execute lesson + solution in place, rebuild the exercise")
    rec.add_argument("lesson", help="lesson id, or all")
    rec.set_defaults(func=cmd_record)

    cor = sub.add_parser("corpus", help="(authors) prove the checks: every wrong answer fails, every right one passes")
    cor.add_argument("lesson", help="lesson id or stem")
    cor.add_argument("--only", nargs="+", metavar="ID", help="only these entries")
    cor.add_argument("--json", action="store_true", help="machine-readable output")
    cor.set_defaults(func=cmd_corpus)

    site = sub.add_parser("site", help="the course as a static website (build/site/), from the stored outputs")
    site.add_argument("--output", metavar="DIR", help="write here instead of build/site/")
    site.set_defaults(func=cmd_site)
    return p


def main(argv: list[str] | None = None) -> int:
    # jsonschema (imported by nbformat) compiles an IRI grammar from rfc3987_syntax on import,
    # about 2 s on this stack; notebooks hold no IRI formats, so the CLI goes without it.
    sys.modules.setdefault("rfc3987_syntax", None)
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except CourseError as exc:
        print(f"course: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("course: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `course status | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit flush
        return 141  # as a process killed by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
