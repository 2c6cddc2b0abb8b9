"""coursekit.hunt: the incident hunt's buggy copy generated from the real service by recorded changes.

A tiny course (one lesson, a two-file package) proves the machinery: generation, drift caught loudly,
`course build --check`, a learner's fixes kept in attempts/ before any rewrite, a fresh import of the
copy a notebook tests, and corpus entries that patch the copy. The real exercise's incidents are held
to their rules at the end (symptoms that name no file, no fix's code in a check message or hint).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit.build import build, reset_hunt_copy
from coursekit.corpus import CorpusRun, load, right_batches
from coursekit.hunt import (
    HUNT_SERVICE_ENV,
    HuntError,
    copy_folder,
    edited_files,
    generated_files,
    incidents_path,
    is_hunt,
    load_hunt,
    load_service,
    service_under_test,
)
from coursekit.manifest import CourseError, lessons
from tests.conftest import ROOT, write_notebook

SETTINGS = 'POOL_SIZE = 5\nTIMEOUT = 2.0\n'
MAIN = 'from taskservice.settings import POOL_SIZE, TIMEOUT\n\n\ndef pool():\n    return {"size": POOL_SIZE, "timeout": TIMEOUT}\n'
INCIDENTS = '''package = "capstone/taskservice"

[[incident]]
id = "pool_waits_forever"
check = "test_pool_has_a_timeout"
lesson = "07"
symptom = "under a spike requests hang instead of failing fast"
[[incident.change]]
file = "settings.py"
find = "TIMEOUT = 2.0"
replace = "TIMEOUT = None"

[[incident]]
id = "pool_too_small"
check = "test_pool_is_sized"
lesson = "07"
symptom = "p99 jumps under load"
[[incident.change]]
file = "settings.py"
find = "POOL_SIZE = 5"
replace = "POOL_SIZE = 1"
'''


@pytest.fixture
def course(tmp_path):
    (tmp_path / "course.toml").write_text('[[lesson]]\nid = "14"\nslug = "hunt"\ntitle = "Hunt"\nsummary = "A hunt."\n')
    package = tmp_path / "capstone" / "taskservice"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS)
    (package / "main.py").write_text(MAIN)
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "14_hunt_incidents.toml").write_text(INCIDENTS)
    write_notebook(tmp_path / "solutions" / "14_hunt.ipynb", [
        ("markdown", "# 14 · Hunt"),
        ("code", "from coursekit import setup_checks\nsetup_checks()"),
        ("code", "%%ipytest\n\ndef test_pool_has_a_timeout():\n    assert True, 'x'\n"),
    ])
    return tmp_path


def the_lesson(course):
    (lesson,) = lessons(course)
    return lesson


def test_build_writes_the_copy_with_every_incident_planted_and_check_sees_it_in_sync(course):
    results = build(course)
    assert [r.status for r in results] == ["written", "written"]  # the notebook (no regions needed), the copy
    copy = course / "exercises" / "14_hunt" / "taskservice"
    assert (copy / "settings.py").read_text() == "POOL_SIZE = 1\nTIMEOUT = None\n"
    assert (copy / "main.py").read_text() == MAIN and (copy / "__init__.py").is_file()
    assert (course / "capstone/taskservice/settings.py").read_text() == SETTINGS  # the service is untouched
    assert [r.status for r in build(course, check=True)] == ["unchanged", "unchanged"]
    assert not edited_files(the_lesson(course))


def test_a_change_that_no_longer_applies_stops_the_build_naming_the_incident(course):
    build(course)
    (course / "capstone/taskservice/settings.py").write_text(SETTINGS.replace("TIMEOUT = 2.0", "TIMEOUT = 3.0"))
    with pytest.raises(HuntError, match=r"incident pool_waits_forever: the text to find \('TIMEOUT = 2.0' \.\.\.\) is no longer in settings.py"):
        build(course, check=True)
    (course / "capstone/taskservice/settings.py").write_text(SETTINGS + "TIMEOUT = 2.0\n")
    with pytest.raises(HuntError, match="is 2 times in settings.py"):
        build(course)


def test_the_copy_is_stale_when_the_service_or_the_recorded_changes_move(course):
    build(course)
    (course / "capstone/taskservice/main.py").write_text(MAIN + "\n# a new line in the service\n")
    assert build(course, check=True)[1].status == "stale"  # the service changed: the copy must follow
    build(course)
    incidents = course / "solutions/14_hunt_incidents.toml"
    incidents.write_text(INCIDENTS.replace('replace = "POOL_SIZE = 1"', 'replace = "POOL_SIZE = 2"'))
    assert build(course, check=True)[1].status == "stale"


def test_malformed_incidents_are_refused_in_one_line(course):
    path = incidents_path(the_lesson(course))
    for text, message in (
        (INCIDENTS.replace('lesson = "07"\n', "", 1), "needs exactly"),
        (INCIDENTS.replace('replace = "TIMEOUT = None"', 'replace = "TIMEOUT = 2.0"'), "plants nothing"),
        (INCIDENTS.replace('file = "settings.py"', 'file = "gone.py"', 1), "has no file 'gone.py'"),
        ("package = 1\n", "is missing"),
    ):
        path.write_text(text)
        with pytest.raises(HuntError, match=message):
            generated_files(the_lesson(course))


def test_a_learners_fixes_are_kept_in_attempts_before_build_or_reset_rewrites_the_copy(course):
    build(course)
    lesson = the_lesson(course)
    fixed = copy_folder(lesson) / "taskservice" / "settings.py"
    fixed.write_text("POOL_SIZE = 5\nTIMEOUT = 2.0  # fixed\n")
    (copy_folder(lesson) / "taskservice" / "notes.py").write_text("# the learner's own file\n")
    assert edited_files(lesson) == ["notes.py", "settings.py"]
    saved = reset_hunt_copy(lesson)
    assert saved is not None and saved.parent == course / "attempts"
    assert (saved / "taskservice" / "settings.py").read_text().endswith("# fixed\n")
    assert fixed.read_text() == "POOL_SIZE = 1\nTIMEOUT = None\n"  # fresh again
    assert (copy_folder(lesson) / "taskservice" / "notes.py").is_file()  # a file of theirs is never deleted
    fixed.write_text("POOL_SIZE = 5\nTIMEOUT = 1.0\n")
    (course / "capstone/taskservice/main.py").write_text(MAIN + "# changed\n")
    copy_result = build(course)[1]  # outside git: an edited copy is saved before it is rewritten
    assert copy_result.saved is not None and (copy_result.saved / "taskservice/settings.py").read_text().endswith("1.0\n")
    assert reset_hunt_copy(lesson) is not None  # notes.py is still theirs: kept again, never lost


def test_an_untouched_copy_is_not_saved_and_git_staged_copies_are_no_attempt(course):
    build(course)
    lesson = the_lesson(course)
    assert reset_hunt_copy(lesson) is None
    subprocess.run(["git", "init", "-q"], cwd=course, check=True)
    (copy_folder(lesson) / "taskservice" / "settings.py").write_text("POOL_SIZE = 5\n")
    subprocess.run(["git", "add", "-A"], cwd=course, check=True)  # an author's edit, staged
    assert build(course, check=True)[1].status == "stale"
    (copy_folder(lesson) / "taskservice" / "settings.py").write_text("POOL_SIZE = 1\nTIMEOUT = None\n")
    subprocess.run(["git", "add", "-A"], cwd=course, check=True)
    (copy_folder(lesson) / "taskservice" / "settings.py").write_text("POOL_SIZE = 7\n")  # a learner's, unstaged
    assert build(course, check=True)[1].status == "learner-edited"


def test_a_notebook_tests_the_copy_beside_it_else_the_real_service(course, monkeypatch):
    build(course)
    monkeypatch.setenv("COURSE_ROOT", str(course))
    monkeypatch.delenv(HUNT_SERVICE_ENV, raising=False)
    monkeypatch.chdir(course / "exercises")
    assert service_under_test("14_hunt") == course / "exercises" / "14_hunt"
    monkeypatch.chdir(course / "solutions")
    assert service_under_test("14_hunt") == course / "capstone"
    monkeypatch.setenv(HUNT_SERVICE_ENV, str(course / "exercises" / "14_hunt"))
    assert service_under_test("14_hunt") == course / "exercises" / "14_hunt"
    monkeypatch.setenv(HUNT_SERVICE_ENV, str(course))
    with pytest.raises(CourseError, match="no taskservice package there"):
        service_under_test("14_hunt")


def test_load_service_imports_the_package_afresh_from_each_folder(course, monkeypatch):
    build(course)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # sys.modules itself, not a replacement dict (the import system keeps using the original): another test
    # on this worker may have imported the real service; it gets its modules back afterwards
    def service_modules() -> dict[str, object]:
        return {name: module for name, module in sys.modules.items()
                if name == "taskservice" or name.startswith("taskservice.")}

    before = service_modules()
    try:
        check_fresh_imports(course)
    finally:
        for name in service_modules():
            del sys.modules[name]
        sys.modules.update(before)


def check_fresh_imports(course: Path) -> None:
    buggy = load_service(course / "exercises" / "14_hunt")
    assert buggy.__file__.startswith(str(course / "exercises"))
    assert __import__("taskservice.main").main.pool() == {"size": 1, "timeout": None}
    real = load_service(course / "capstone")
    assert __import__("taskservice.main").main.pool() == {"size": 5, "timeout": 2.0} and real is not buggy
    (course / "capstone/taskservice/settings.py").write_text("POOL_SIZE = 6\nTIMEOUT = 2.0\n")  # a fix, saved
    load_service(course / "capstone")
    assert __import__("taskservice.main").main.pool()["size"] == 6


CORPUS = '''[[wrong]]
id = "bigger_pool"
concept = "a bigger pool does not give it a timeout"
check = "test_pool_has_a_timeout"
incident = "pool_waits_forever"
[[wrong.patch]]
file = "settings.py"
find = "POOL_SIZE = 5"
replace = "POOL_SIZE = 50"

[[right]]
id = "timeout_as_int"
why = "2 is as good as 2.0"
incident = "pool_waits_forever"
[[right.patch]]
file = "settings.py"
find = "TIMEOUT = None"
replace = "TIMEOUT = 2"

[[right]]
id = "bigger_but_sized"
why = "any pool of 3 or more"
incident = "pool_too_small"
[[right.patch]]
file = "settings.py"
find = "POOL_SIZE = 1"
replace = "POOL_SIZE = 8"
'''
HUNT_CHECKS = '''%%ipytest

def test_pool_has_a_timeout():
    timeout = service.main.pool()["timeout"]
    assert timeout is not None, f"requests hang under a spike: the pool's timeout is {timeout}"


def test_pool_is_sized():
    size = service.main.pool()["size"]
    assert size >= 3, f"the pool holds {size} connections"
'''


def test_corpus_patch_entries_run_the_checks_against_a_patched_copy(course, monkeypatch):
    monkeypatch.setenv("COURSE_ROOT", str(course))
    monkeypatch.delenv(HUNT_SERVICE_ENV, raising=False)
    lesson = the_lesson(course)
    solution = write_notebook(lesson.solution, [
        ("code", "import pytest\nfrom coursekit import setup_checks\nsetup_checks()"),
        ("code", "import importlib\nfrom coursekit.hunt import load_service, service_under_test\n"
                 "service = load_service(service_under_test('14_hunt'))\nimportlib.import_module('taskservice.main')\n"
                 "print(service.__file__)"),
        ("code", HUNT_CHECKS),
    ])
    (course / "tests" / "corpus").mkdir(parents=True)
    corpus = course / "tests" / "corpus" / "14_hunt.toml"
    corpus.write_text(CORPUS)
    entries = load(corpus)
    assert [e.incidents for e in entries] == [["pool_waits_forever"]] * 2 + [["pool_too_small"]]
    assert [[e.id for e in group] for group in right_batches(entries)] == [["timeout_as_int", "bigger_but_sized"]]
    with CorpusRun(solution) as run:  # its lesson found from the notebook (the harness passes it)
        wrong = run.judge(entries[0], entries)
        assert wrong.ok and "requests hang under a spike: the pool's timeout is None" in wrong.summary, wrong.summary
        assert all(r.ok for r in (run.judge(e, entries) for e in entries[1:]))
        from coursekit.hunt import Change

        comment_only = [Change("main.py", "def pool():", "def pool():  # looked at")]
        planted_only = run.try_entry(entries[2].__class__("right", "r", {}, "x", incidents=["pool_too_small"],
                                                          patches=comment_only))
        assert not planted_only.ok and "test_pool_is_sized failed: the pool holds 1 connections" in planted_only.summary
        broken = run.try_entry(entries[2].__class__("right", "r2", {}, "x", incidents=["pool_too_small"],
                                                    patches=entries[1].patches))
        assert not broken.ok and "entry r2: the text to find" in broken.summary, broken.summary  # TIMEOUT = None is not planted here
        # after the entries, the kernel tests the real service again
        run._restore(len(run.notebook["cells"]))
        run._run(range(2, 3), {})
        assert run._recorded(0)  # checks ran
    text = corpus.read_text()
    corpus.write_text(text.replace('incident = "pool_waits_forever"\n', "", 1))
    with pytest.raises(CourseError, match="names the incident it starts from"):
        load(corpus)
    corpus.write_text(text.replace("[[wrong.patch]]", "[wrong.regions]\nx = 'y'\n[[wrong.patch]]"))
    with pytest.raises(CourseError, match="not both"):
        load(corpus)


# ------------------------------------------------------------------ the real exercise


HUNTS = [lesson for lesson in lessons(ROOT) if is_hunt(lesson)]


@pytest.mark.parametrize("lesson", HUNTS, ids=[lesson.stem for lesson in HUNTS])
def test_each_incident_is_judged_by_a_check_and_told_by_its_symptom_only(lesson):
    from coursekit.runner import _is_check_cell, _source, notebook_check_ids, read_notebook
    from tests.test_exercise_design import strings_in

    hunt = load_hunt(incidents_path(lesson), ROOT)
    solution = read_notebook(lesson.solution)
    checks = notebook_check_ids(solution)
    assert len(hunt.incidents) >= 8, f"{len(hunt.incidents)} incidents, at least 8"
    assert sorted(i.check for i in hunt.incidents) == sorted(checks), "one check per incident, one incident per check"
    markdown = "\n".join(_source(c) for c in solution["cells"] if c["cell_type"] == "markdown")
    from coursekit.hints import load_hints

    hints = [text for texts in load_hints(lesson).values() for text in texts]
    messages = [text for cell in solution["cells"] if _is_check_cell(cell) for text in strings_in(_source(cell))]
    files = {change.file for incident in hunt.incidents for change in incident.changes}
    for incident in hunt.incidents:
        assert incident.symptom in " ".join(markdown.split()), f"{incident.id}: its symptom is not in the exercise's text"
        for name in files:
            assert name not in incident.symptom, f"{incident.id}: the symptom names the file {name}"
        # the fix is the real service's code: none of its lines (20+ characters) in a message or a hint
        fix_lines = {line.strip() for change in incident.changes for line in change.find.splitlines() if len(line.strip()) >= 20}
        leaks = sorted(line for line in fix_lines for text in messages + hints if line in text)
        assert not leaks, f"{incident.id}: the fix's code is shown to the learner: {leaks}"


@pytest.mark.parametrize("lesson", HUNTS, ids=[lesson.stem for lesson in HUNTS])
def test_the_committed_copy_carries_every_incident(lesson):
    generated = generated_files(lesson)
    stamp = json.loads(generated[f"exercises/{lesson.stem}/.generated.json"])
    assert set(stamp["sha256"]) == {rel.split("/taskservice/", 1)[1] for rel in generated if "/taskservice/" in rel}
    for rel, text in generated.items():
        assert (ROOT / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run `course build`"


# ------------------------------------------------------------------ status and update keep the learner's fixes


def test_status_reruns_the_checks_when_only_the_copy_changed(course, monkeypatch):
    from coursekit import cli

    build(course)
    monkeypatch.setenv("COURSE_ROOT", str(course))
    lesson = the_lesson(course)
    untouched = cli._untouched_report(lesson)  # notebook and copy as generated: not started, no need to run
    assert untouched and {c["status"] for c in untouched["checks"]} == {"not-started"}
    before = cli._digest(lesson.exercise)
    (copy_folder(lesson) / "taskservice" / "settings.py").write_text("POOL_SIZE = 5\nTIMEOUT = 2.0\n")
    assert cli._untouched_report(lesson) is None  # a pristine notebook says nothing: the work is in the copy
    assert cli._digest(lesson.exercise) != before, "a fixed file must make `course status` run the checks again"


def test_a_result_is_cached_under_the_service_the_checks_tested(course, monkeypatch):
    """With $COURSE_HUNT_SERVICE set the checks test that folder: a result stored under the unfixed copy's
    digest would make `course status` and `course hint` call the copy fixed (a learner trial found it)."""
    from coursekit import cli
    from coursekit.hunt import HUNT_SERVICE_ENV

    build(course)
    monkeypatch.setenv("COURSE_ROOT", str(course))
    lesson = the_lesson(course)
    copy_digest = cli._digest(lesson.exercise)
    monkeypatch.setenv(HUNT_SERVICE_ENV, str(course / "capstone"))
    assert cli._digest(lesson.exercise) != copy_digest, "a run against capstone/ is not a run against the copy"
    monkeypatch.setenv(HUNT_SERVICE_ENV, str(copy_folder(lesson)))
    assert cli._digest(lesson.exercise) == copy_digest


def test_course_update_merges_the_courses_change_into_a_fixed_copy_and_keeps_a_conflicting_fix(course, tmp_path):
    from tests.test_update import LEARNER_ENV
    from tests.test_update import course as course_cli
    from tests.test_update import git

    shutil.copy(ROOT / ".gitignore", course / ".gitignore")
    build(course)
    bare = tmp_path / "course.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(course, "init", "-q", "-b", "main")
    git(course, "add", "-A")
    git(course, "commit", "-q", "-m", "version 1")
    git(course, "remote", "add", "origin", str(bare))
    git(course, "push", "-q", "origin", "main")
    learner = tmp_path / "learner"
    git(tmp_path, "clone", "-q", str(bare), "learner", env=LEARNER_ENV)
    settings = learner / "exercises/14_hunt/taskservice/settings.py"
    main = learner / "exercises/14_hunt/taskservice/main.py"
    settings.write_text("POOL_SIZE = 5\nTIMEOUT = None\n")  # a fix, uncommitted
    main.write_text(MAIN.replace('return {"size"', 'return {  # mine\n        "size"'))  # another, far from the course's
    # the course changes the service's main.py at its top (merges with the learner's fix), and an incident on
    # the line the learner fixed in settings.py
    (course / "capstone/taskservice/main.py").write_text('"""The pool."""\n' + MAIN)
    (course / "solutions/14_hunt_incidents.toml").write_text(INCIDENTS.replace('"POOL_SIZE = 1"', '"POOL_SIZE = 2"'))
    build(course)
    git(course, "add", "-A")
    git(course, "commit", "-q", "-m", "version 2")
    git(course, "push", "-q", "origin", "main")
    done = course_cli(learner, "update", "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert main.read_text().startswith('"""The pool."""') and "# mine" in main.read_text()  # both changes
    assert settings.read_text() == "POOL_SIZE = 2\nTIMEOUT = None\n"  # the course's version: both changed line 1
    [kept] = (learner / "attempts").glob("update-*/exercises/14_hunt/taskservice/settings.py")
    assert kept.read_text() == "POOL_SIZE = 5\nTIMEOUT = None\n", "the learner's fix is kept, never lost"
    assert "settings.py" in done.stdout and "attempts/update-" in done.stdout


def test_course_grade_refuses_a_hunt_notebook_it_would_grade_against_the_real_service(course, monkeypatch):
    from coursekit.sandbox import Limits, grade_submission

    build(course)
    monkeypatch.setenv("COURSE_ROOT", str(course))
    row = grade_submission(course / "exercises" / "14_hunt.ipynb", the_lesson(course), Limits(), sandboxed=False)
    assert row["total"] == 0 and "not graded" in row["problem"] and "exercises/14_hunt/" in row["problem"]
