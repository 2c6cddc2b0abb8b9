"""`course grade` against hostile submissions: each is contained, and its CSV row says why.

One batch of hostile submissions of a tiny course (two plain checks, no FastAPI: a kernel each
costs little CPU), graded once with small limits and --jobs 4. Each test reads a row and asserts,
from outside, that the harm did not happen and that the row says why. The batch holding an honest submission that
scores 2/2 among them proves that no hostile one aborted it. Attempts that are cheap and do not
interfere share a kernel (the suite's CPU budget): one row then answers several tests.

The module's three `course grade` runs (that batch, the sleeper's short batch, the hostile files) are
independent: they start together, once, and each test waits only for the run it reads (most of a
run is waiting on its sandboxes; one after the other they cost the suite ~25 s more).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_bwrap, write_notebook
from tests.test_cli import course

pytestmark = needs_bwrap

SETUP = "from coursekit import setup_checks\nsetup_checks()\n"
ANSWER = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
CHECKS = '''%%ipytest

def test_adds():
    assert add(1, 2) == 3, "add(1, 2) should be 3"

def test_adds_negatives():
    assert add(-1, -2) == -3, "add(-1, -2) should be -3"
'''
SECRET = "grader-home-secret-7d1e"
ENV_SECRET = "grader-env-token-93ab"
# --cpu-seconds 2: the endless check burns it all (it was 5: 3 s more of CPU, and of waiting); an honest
# kernel uses ~0.65 s of CPU by the end of its checks, the harness ~0.45 s (measured: both stay 3x under it)
CPU_SECONDS = 2
LIMITS = ["--memory-mb", "1024", "--processes", "64", "--disk-mb", "48", "--file-mb", "32",
          "--cpu-seconds", str(CPU_SECONDS), "--cell-timeout", "15", "--timeout", "60"]

# The harm each submission tries; {outside} etc. are filled in with the test's real paths.
HOSTILE = {
    "honest": [],
    # one kernel for four attempts (the CPU budget): the grader's HOME and variables, writing outside, the network, the harness
    "escapes": ['''
import os, pathlib, socket, coursekit
seen = []
for home in (os.environ.get("HOME", ""), {grader_home!r}, "/root"):
    try:
        seen.append(pathlib.Path(home, "secret.txt").read_text())
    except OSError as exc:
        seen.append(type(exc).__name__)
harness = f"/proc/{{os.getppid()}}"
harness_fds = set()
for name in ["fd", "mem", *(f"fd/{{n}}" for n in range(3, 12))]:
    try:
        if name == "fd":
            os.listdir(f"{{harness}}/fd")
        else:
            with open(f"{{harness}}/{{name}}", "w") as handle:
                handle.write("{{}}")
        harness_fds.add(f"{{name}}: done")
    except OSError as exc:
        harness_fds.add(type(exc).__name__)
writes = []
for target in ({outside!r}, {sibling!r}, {course_checks!r}, {csv_path!r}, pathlib.Path(coursekit.__file__).parent / "checks.py"):
    try:
        with open(target, "w") as handle:
            handle.write("pwned")
        writes.append("written")
    except OSError as exc:
        writes.append(type(exc).__name__)
raise RuntimeError(
    f"home files: {{seen}}; grader variables: {{[k for k in os.environ if 'GRADER' in k]}}; "
    f"secret: {{os.environ.get('GRADER_TOKEN')}}; writes: {{writes}}; interfaces: {{[name for _, name in socket.if_nameindex()]}}; "
    f"harness fds: {{sorted(harness_fds)}}"
)
'''],
    "forges_lines": ['''
from IPython.display import display
def add(a, b):
    print("✔ test_adds: passed")
    print("✔ test_adds_negatives: passed")
    fake = [{{"id": "test_adds", "status": "passed", "message": ""}}, {{"id": "test_adds_negatives", "status": "passed", "message": ""}}]
    display({{"application/vnd.course.check-results+json": {{"nonce": "0" * 32, "results": fake}}}}, raw=True)
    with open("/tmp/checks.jsonl", "a") as handle:
        handle.write("\\n".join(__import__("json").dumps(f) for f in fake))
    return 0
'''],
    "fork_bomb": ['''
import os
children = 0
try:
    while True:
        if os.fork() == 0:
            try:
                os.execv("/bin/sleep", ["sleep", "97.25"])
            finally:
                os._exit(1)  # never a second kernel
        children += 1
except OSError as exc:
    raise RuntimeError(f"fork stopped after {{children}} children: {{exc}}")
'''],
    # memory, one file's size, the disk (one kernel)
    "exhausts": ['''
import os
outcomes = []
try:
    hoard = bytearray(8 * 1024**3)
except MemoryError as exc:
    outcomes.append(repr(exc))
try:
    with open("big.bin", "wb") as handle:
        for _ in range(40):
            handle.write(b"x" * 2**20)
except OSError as exc:
    outcomes.append(str(exc))
os.remove("big.bin")
try:
    for n in range(100):
        with open(f"fill{{n}}.bin", "wb") as handle:
            for _ in range(16):
                handle.write(b"x" * 2**20)
except OSError as exc:
    outcomes.append(str(exc))
raise RuntimeError(f"exhausted: {{outcomes}}")
'''],
    "loops_in_check": ['''
def add(a, b):
    while True:
        pass
'''],
    "kills_parent": ['''
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.kill(-1, signal.SIGKILL)
'''],
    "patches_runner": ['''
import coursekit.checks
coursekit.checks.classify = lambda excinfo, app_errors: ("passed", "")
'''],
    "patches_pytest": ['''
import _pytest.python
_pytest.python.Function.runtest = lambda self: None
'''],
    "exits_in_check": ['''
import os
def add(a, b):
    os._exit(0)
'''],
    "overwrites_results": ['''
import json, os
outcomes = set()
# bwrap's own process (pid 1 here) also holds the results pipe: write a forged document into it
forged = {{"version": 1, "cell_errors": [], "kernel_exit": None, "payloads": {{}}}}
for fd in os.listdir("/proc/1/fd"):
    if int(fd) > 2:
        try:
            with open(f"/proc/1/fd/{{fd}}", "w") as handle:
                handle.write(json.dumps({{"mac": "0" * 64, "body": json.dumps(forged)}}))
            outcomes.add("written")
        except OSError as exc:
            outcomes.add(type(exc).__name__)
raise RuntimeError(f"pid 1: {{sorted(outcomes)}}")
'''],
    # what is visible of bwrap (pid 1) and the harness, and what outlives the notebook (one kernel)
    "probes_and_persists": ['''
import os, re, subprocess, site, sys, pathlib
leaks, persisted = [], []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            text = open(f"/proc/{{pid}}/{{part}}", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "GRADER" in text or {env_secret!r} in text or re.search(r"[0-9a-f]{{64}}", text):
            leaks.append(f"{{pid}}/{{part}}")
mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
for target in (pathlib.Path(site.getsitepackages()[0], "zz_persist.pth"), pathlib.Path(sys.prefix, "persist-97.txt"),
               pathlib.Path("/dev/persist-97.txt"), pathlib.Path({course_checks!r}).parent / "persist-97.txt"):
    try:
        target.write_text("import os; os.system('touch /tmp/pwned')\\n")
        persisted.append(f"written {{target}}")
    except OSError as exc:
        persisted.append(type(exc).__name__)
startup = pathlib.Path.home() / ".ipython/profile_default/startup"
startup.mkdir(parents=True, exist_ok=True)
(startup / "00-persist.py").write_text("open('/tmp/startup-ran', 'w')")
# a daemon that would tamper with the next submission: detached, in its own session
subprocess.Popen(["/bin/sleep", "98.75"], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sizes = [os.statvfs(p).f_blocks * os.statvfs(p).f_frsize // 2**20 for p in ("/dev/shm", "/tmp")]
raise RuntimeError(f"leaks: {{leaks}}; persisted: {{persisted}}; RAM disks MB: {{sizes}}; mounts: {{sorted(set(mounts))}}")
'''],
    # rewrites every check cell before it runs (an IPython input transformer): reads the cell's
    # nonce and canary from its source and displays a "genuine" payload; no check name needed
    "transforms_checks": ['''
import re
def forge(lines):
    src = "".join(lines)
    if not src.lstrip().startswith("%%ipytest"):
        return lines
    nonce = re.search(r"--course-nonce=(\\w+)", src).group(1)
    canaries = re.findall(r"def (test_\\w+)\\(\\):\\n    assert \\d+ == 0, '(\\w+)'", src)
    results = [{{"id": n, "status": "failed", "message": m}} for n, m in canaries]
    results += [{{"id": n, "status": "passed", "message": ""}} for n in re.findall(r"def (test_\\w+)\\(", src)
                if n not in dict(canaries)]
    payload = {{"application/vnd.course.check-results+json": {{"nonce": nonce, "results": results}}}}
    return [f"from IPython.display import display\\ndisplay({{payload!r}}, raw=True)\\n"]
get_ipython().input_transformers_cleanup.insert(0, forge)
'''],
    # a Test class of its own with methods named as the checks, passing, after a placeholder that
    # keeps the name's place (pytest reports it after the real check); ipytest's clean-up disabled
    "shadows_checks": ['''
import ipytest, ipytest._impl
ipytest.clean = ipytest._impl.clean = lambda *args, **kwargs: None
def test_adds(): pass
def test_adds_negatives(): pass
class TestShadow:
    def test_adds(self): pass
    def test_adds_negatives(self): pass
    def test_\u0430dds(self): pass  # a lookalike name (Cyrillic a): no check of the course's
'''],
}
# Those whose add() is right: anything but 2/2 would be the sandbox breaking an honest answer.
RIGHT_ANSWER = {"honest", "escapes", "fork_bomb", "probes_and_persists"}


def _sleepers(mark: bytes = b"97.25") -> list[str]:
    """Processes on this machine running the fork bomb's `sleep 97.25` (or another mark)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if mark in cmdline.read_bytes():
                found.append(str(cmdline))
        except OSError:
            pass
    return found


class GradeRun:
    """`course grade ARGS` started in the background (output to files: no pipe to fill); `.done()` waits for it."""

    def __init__(self, folder: Path, args: list[str], cwd: Path, env: dict[str, str]):
        self.out, self.err = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "coursekit", "grade", *args], cwd=cwd, env=env,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def done(self, timeout: float) -> subprocess.CompletedProcess:
        returncode = self.process.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, returncode, self.out.read_text(encoding="utf-8"),
                                           self.err.read_text(encoding="utf-8"))

    def stop(self) -> None:
        if self.process.poll() is None:  # a test failed first: its sandboxes die with it (bwrap --die-with-parent)
            self.process.kill()
            self.process.wait()


# Hostile notebook FILES: refused by the grader before any kernel starts, each in its own row.
FORMULA = "=cmd|' -C calc'!A0-00_mini.ipynb"  # DDE; a file name has no "/"
# a name has no "/": U+2215, a lookalike
FORGED_LINE = "\x1b[1A\x1b[2K\u202e00_mini-honest.ipynb: 2\u22152 checks passed"


def _hostile_files(folder: Path, course: Path, honest: Path) -> None:
    folder.mkdir()
    (folder / "00_mini-link.ipynb").symlink_to(course / "solutions/00_mini.ipynb")  # the solution itself
    os.mkfifo(folder / "00_mini-fifo.ipynb")  # read as a file, it would block the grader forever
    with open(folder / "00_mini-huge.ipynb", "wb") as handle:
        handle.truncate(3 * 2**30)  # 3 GB, sparse: costs no disk
    (folder / "00_mini-cells.ipynb").write_text(json.dumps({"cells": [{"cell_type": "raw", "source": ""}] * 400_000}))
    (folder / "00_mini-list.ipynb").write_text("[]")  # once aborted the whole batch with a traceback
    (folder / "00_mini-badmeta.ipynb").write_text(json.dumps({"cells": [], "metadata": {"course": "01"}}))
    (folder / "00_mini-dotdot.ipynb").write_text(json.dumps({"cells": [], "metadata": {"course": {"lesson": "../../etc"}}}))
    (folder / "00_mini-badcell.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": 7}]}))
    (folder / "00_mini-invalid.ipynb").write_text('{"cells": [')
    other = json.loads(honest.read_text())
    other["metadata"]["course"] = {"lesson": "00"}  # a lesson-01 submission asking for lesson 00's checks
    (folder / "01_other-easier.ipynb").write_text(json.dumps(other))
    (folder / FORMULA).write_text("[]")
    (folder / f"00_mini-x{FORGED_LINE}\n.ipynb").write_text("[]")
    (folder / os.fsdecode(b"00_mini-latin1-caf\xe9.ipynb")).write_text("[]")  # not UTF-8: once lost the whole CSV


@pytest.fixture(scope="module")
def grade_runs(tmp_path_factory):
    """The course, the submissions, and the module's three `course grade` runs, started together."""
    base = tmp_path_factory.mktemp("grade")
    course = base / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "course.toml").write_text('[[lesson]]\nid = "00"\nslug = "mini"\ntitle = "Mini"\nsummary = "Two checks."\n'
                                        '[[lesson]]\nid = "01"\nslug = "other"\ntitle = "Other"\nsummary = "One check."\n')
    write_notebook(course / "solutions/01_other.ipynb", [("code", SETUP), ("code", "%%ipytest\n\ndef test_hard():\n    assert False\n")])
    course_checks = write_notebook(course / "solutions/00_mini.ipynb", [("code", SETUP), ("code", ANSWER), ("code", CHECKS)])
    grader_home = base / "home"
    grader_home.mkdir()
    (grader_home / "secret.txt").write_text(SECRET)
    submissions = base / "submissions"
    paths = {"outside": str(base / "outside.txt"), "sibling": str(submissions / "00_mini-honest.ipynb"),
             "course_checks": str(course_checks), "csv_path": str(base / "grades.csv"), "grader_home": str(grader_home),
             "env_secret": ENV_SECRET}
    for name, hostile in HOSTILE.items():
        answer = ANSWER if name in RIGHT_ANSWER else WRONG
        cells = [("code", SETUP), ("code", answer)] + [("code", h.format(**paths)) for h in hostile] + [("code", CHECKS)]
        write_notebook(submissions / f"00_mini-{name}.ipynb", cells)
    before = {p: p.read_bytes() for p in (course_checks, *submissions.iterdir())}
    # the sleeper's batch (test_sleeping_just_under_...): its own limits
    sleeper = base / "sleeper"
    sleeper.mkdir()
    write_notebook(sleeper / "00_mini-sleeper.ipynb",
                   [("code", SETUP), ("code", ANSWER)] + [("code", "import time\ntime.sleep(3.5)")] * 4 + [("code", CHECKS)])
    files = base / "files"
    _hostile_files(files, course, Path(paths["sibling"]))
    logs = {name: base / f"log-{name}" for name in ("main", "sleeper", "files")}
    for folder in logs.values():
        folder.mkdir()
    runs = {
        "main": GradeRun(logs["main"], [str(submissions), "--csv", paths["csv_path"], "--jobs", "4", *LIMITS], ROOT,
                         {**os.environ, "COURSE_ROOT": str(course), "HOME": str(grader_home), "GRADER_TOKEN": ENV_SECRET}),
        "sleeper": GradeRun(logs["sleeper"], [str(sleeper), "--csv", str(sleeper / "g.csv"), "--cell-timeout", "4", "--timeout", "8"],
                            ROOT, {**os.environ, "COURSE_ROOT": str(course)}),
        "files": GradeRun(logs["files"], [".", "--csv", str(base / "files.csv")], files,
                          {**os.environ, "COURSE_ROOT": str(course), "PYTHONPATH": str(ROOT)}),
    }
    try:
        yield {"runs": runs, "paths": paths, "before": before, "course": course, "sleeper": sleeper, "files": files, "base": base}
    finally:
        for run in runs.values():
            run.stop()


@pytest.fixture(scope="module")
def graded(grade_runs):
    done = grade_runs["runs"]["main"].done(timeout=600)
    assert done.returncode == 0, done.stderr
    paths = grade_runs["paths"]
    rows = {Path(r["notebook"]).stem.split("-", 1)[1]: r for r in csv.DictReader(open(paths["csv_path"]))}
    return {"rows": rows, "before": grade_runs["before"], "paths": paths, "csv_text": Path(paths["csv_path"]).read_text(),
            "stdout": done.stdout, "sleepers_after": _sleepers(), "daemons_after": _sleepers(b"98.75"),
            "shm_after": sorted(os.listdir("/dev/shm"))}


def test_every_submission_gets_a_row_and_the_honest_one_scores_fully(graded):
    assert set(graded["rows"]) == set(HOSTILE)
    honest = graded["rows"]["honest"]
    assert (honest["passed"], honest["total"], honest["problem"]) == ("2", "2", "")


def test_the_graders_home_and_environment_are_out_of_reach(graded):
    row = graded["rows"]["escapes"]
    assert SECRET not in graded["csv_text"] and ENV_SECRET not in graded["csv_text"]
    assert "home files: ['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError']" in row["problem"], row["problem"]
    assert "grader variables: []; secret: None" in row["problem"]
    assert row["passed"] == "2"  # containment does not cost an honest answer its score


def test_nothing_outside_its_copy_can_be_written(graded):
    row = graded["rows"]["escapes"]
    assert not Path(graded["paths"]["outside"]).exists()
    for path, content in graded["before"].items():
        assert path.read_bytes() == content, f"{path} was changed"  # the course's checks, the other submissions
    # not mounted at all (four paths), or mounted read-only (the coursekit package)
    assert "writes: ['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'OSError']" in row["problem"]
    assert (ROOT / "coursekit/checks.py").read_text().count("pwned") == 0


def test_forged_result_lines_score_nothing(graded):
    row = graded["rows"]["forges_lines"]
    assert (row["passed"], row["test_adds"], row["test_adds_negatives"]) == ("0", "failed", "failed")
    assert "forged check results were ignored" in row["problem"]


def test_a_fork_bomb_stops_at_the_process_limit_even_as_root(graded):
    row = graded["rows"]["fork_bomb"]
    assert "exceeded the process limit (64 processes and threads)" in row["problem"], row["problem"]
    children = int(row["problem"].split("fork stopped after ")[1].split()[0])
    assert 0 < children < 64
    assert graded["sleepers_after"] == []  # its children died with its sandbox


def test_allocating_8_gb_fails_inside(graded):
    row = graded["rows"]["exhausts"]
    assert "exceeded the memory limit (1024 MB)" in row["problem"] and "MemoryError()" in row["problem"], row["problem"]
    assert row["passed"] == "0"


def test_filling_the_disk_stops_at_its_limits(graded):
    row = graded["rows"]["exhausts"]
    assert "exceeded the file size limit (32 MB)" in row["problem"], row["problem"]
    assert "exceeded the disk limit (48 MB)" in row["problem"], row["problem"]
    assert "File too large" in row["problem"] and "No space left on device" in row["problem"]


def test_an_endless_check_is_stopped_and_the_batch_goes_on(graded):
    row = graded["rows"]["loops_in_check"]
    # the kernel's CPU limit (2 s) ends the busy loop; on a very busy machine the cell's 15 s may come first
    assert f"exceeded the CPU time limit ({CPU_SECONDS} s)" in row["problem"] or "exceeded the time limit" in row["problem"], row["problem"]
    assert row["passed"] == "0" and row["test_adds"] == "error"


def test_killing_its_parent_loses_only_its_own_row(graded):
    row = graded["rows"]["kills_parent"]
    assert row["passed"] == "0" and "without results" in row["problem"], row["problem"]
    assert graded["rows"]["honest"]["passed"] == "2"


def test_the_only_network_interface_is_loopback(graded):
    assert "interfaces: ['lo']" in graded["rows"]["escapes"]["problem"]


@pytest.mark.parametrize("name", ["patches_runner", "patches_pytest"])
def test_a_check_runner_patched_by_an_earlier_cell_is_detected(graded, name):
    row = graded["rows"][name]
    assert "tampering: the check runner was changed" in row["problem"], row["problem"]
    assert row["passed"] == "0" and row["test_adds"] == "error"


def test_exiting_in_the_middle_of_the_checks_scores_nothing(graded):
    row = graded["rows"]["exits_in_check"]
    assert row["passed"] == "0" and row["test_adds"] == "error"
    assert "the kernel exited by itself (exit code 0)" in row["problem"], row["problem"]


def test_the_harness_memory_and_pipe_are_out_of_reach(graded):
    row = graded["rows"]["escapes"]
    assert "harness fds: ['PermissionError']" in row["problem"], row["problem"]
    assert row["passed"] == "2"  # its results arrived intact


def test_the_results_cannot_be_overwritten(graded):
    """bwrap's pid 1 in the sandbox also holds the results pipe. Graded as root, the pipe belongs to
    root and `nobody` cannot reopen it; graded as a user, it can, and the unsigned document voids the
    results. Either way no forged score."""
    row = graded["rows"]["overwrites_results"]
    assert row["passed"] == "0"
    if os.getuid() == 0:
        assert "pid 1: ['PermissionError']" in row["problem"], row["problem"]
        assert row["test_adds"] == "failed"  # its own wrong answer, judged from the genuine results
    else:
        assert "tampering: its results pipe held something else" in row["problem"], row["problem"]


def test_without_bwrap_grading_refuses_in_one_line(tmp_path):
    write_notebook(tmp_path / "00_start_here-x.ipynb", [("code", SETUP)])
    # in-process (tests/test_cli.py's `course` says why); PATH without bwrap for the call
    done = course("grade", str(tmp_path), env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "apt-get install bubblewrap" in done.stderr
    assert "--unsafe-no-sandbox" in done.stderr


def test_a_root_grader_makes_sandbox_folders_that_nobody_can_reach(tmp_path, monkeypatch):
    """As root, bwrap runs as `nobody`: under a TMPDIR closed to others (the suite's 0700 session folder
    on /dev/shm) every sandbox once failed to start ("Can't find source path ...: Permission denied")."""
    import tempfile

    from coursekit.sandbox import _run_dir_parent

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(closed))
    assert _run_dir_parent() == ("/tmp" if os.geteuid() == 0 else None)
    with tempfile.TemporaryDirectory(dir="/tmp") as open_to_all:  # it, /tmp and /: all open to others
        os.chmod(open_to_all, 0o755)
        monkeypatch.setattr(tempfile, "tempdir", open_to_all)
        assert _run_dir_parent() is None  # the system's temporary folder stays the one used


def test_unsafe_no_sandbox_is_loud_and_grades_the_same(grade_runs, tmp_path):
    # the module's batches run meanwhile (grade_runs started them): this one does not wait for them
    honest = Path(grade_runs["paths"]["sibling"])
    (tmp_path / honest.name).write_bytes(honest.read_bytes())
    done = course("grade", str(tmp_path), "--unsafe-no-sandbox",  # in-process: the harness is a process of its own
                  env={"COURSE_ROOT": str(grade_runs["course"])})
    assert done.returncode == 0, done.stderr
    assert "2/2 checks passed" in done.stdout
    assert done.stderr.count("WARNING --unsafe-no-sandbox") == 2



def test_bwrap_and_the_harness_show_no_secret_and_nothing_persists(graded):
    """bwrap's own process (pid 1) once kept the grader's whole environment, readable in
    /proc/1/environ; the HMAC key travels on stdin, never in an argv or environment."""
    row = graded["rows"]["probes_and_persists"]
    assert ENV_SECRET not in graded["csv_text"]
    assert "leaks: []" in row["problem"], row["problem"]
    # the venv, its site-packages (.pth) and /dev are read-only, the course is absent; /dev/shm and /tmp are
    # the sandbox's own RAM disks, each bounded by --disk-mb (--dev's tmpfs was half the RAM, writable)
    assert "persisted: ['OSError', 'OSError', 'OSError', 'FileNotFoundError']" in row["problem"], row["problem"]
    assert "RAM disks MB: [48, 48]" in row["problem"], row["problem"]
    assert "persist-97.txt" not in graded["shm_after"]
    assert not list(Path(sys.prefix).rglob("zz_persist.pth")) and not (Path(sys.prefix) / "persist-97.txt").exists()
    assert "/home" not in row["problem"].split("mounts: ")[1]  # no folder of the grader's is mounted
    assert graded["daemons_after"] == []  # its detached daemon died with its sandbox
    assert row["passed"] == "2"


def test_a_startup_file_or_daemon_of_one_submission_does_not_reach_the_next(graded):
    """Every sandbox has its own /tmp (HOME, IPython's startup folder): nothing one writes there
    runs in another's kernel. The honest rows still score fully, with no problem."""
    for name in ("honest", "escapes", "probes_and_persists"):
        assert graded["rows"][name]["passed"] == "2"
    assert not Path("/tmp/startup-ran").exists() and not Path("/tmp/pwned").exists()


def test_checks_rewritten_before_they_run_are_flagged_for_review(graded):
    """OPEN (README, "does not guarantee"): code in the kernel sees each check cell's nonce and
    canary before it runs, so an input transformer can replace the cell with a forged payload and
    the score cannot be trusted. What the grader does: flag the row for review by hand, naming the
    kernel internals the solution never uses."""
    row = graded["rows"]["transforms_checks"]
    assert row["passed"] == "2"  # its add() is wrong: the forged score stands (README says so); fixing it updates this line
    assert "review by hand: its code uses get_ipython, input_transformers" in row["problem"], row["problem"]
    assert "a passed check may be forged" in row["problem"]
    assert graded["rows"]["honest"]["problem"] == ""  # the solution's own code raises no flag


def test_a_test_of_the_same_name_as_a_check_counts_as_the_worst_of_the_two(graded):
    """Once the last report of a name won: the submission's passing twin scored 2/2 on a wrong add()."""
    row = graded["rows"]["shadows_checks"]
    assert (row["passed"], row["test_adds"], row["test_adds_negatives"]) == ("0", "failed", "failed"), row
    assert "test_adds was reported 2 times" in row["problem"], row["problem"]
    assert not any("dds" in column for column in row if column not in ("test_adds", "test_adds_negatives"))


def test_sleeping_just_under_the_cell_timeout_in_every_cell_hits_the_notebook_limit(grade_runs):
    """Its own short batch (the shared one's 60 s would cost the suite a minute of waiting), run
    beside it. The last cell's timeout is the seconds left, which nbclient once refused as a float
    (TraitError): the harness crashed and the row said only "without results"."""
    done = grade_runs["runs"]["sleeper"].done(timeout=120)
    assert done.returncode == 0, done.stderr
    row = next(csv.DictReader(open(grade_runs["sleeper"] / "g.csv")))
    # the total ends it: its next cell is not run, or is cut to the seconds left (then interrupted)
    assert "exceeded the time limit" in row["problem"], row["problem"]
    assert "time limit (8 s) was used up" in row["problem"] or "interrupted" in row["problem"], row["problem"]
    assert "without results" not in row["problem"]
    assert row["passed"] == "0" and row["test_adds"] == "error"


@pytest.fixture(scope="module")
def refused(grade_runs):
    done = grade_runs["runs"]["files"].done(timeout=120)
    assert done.returncode == 0, done.stderr
    folder, csv_path = grade_runs["files"], grade_runs["base"] / "files.csv"
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    return {"rows": {r["notebook"].split("-")[-1].removesuffix(".ipynb"): r for r in rows}, "raw": rows,
            "stdout": done.stdout, "csv_text": csv_path.read_text(encoding="utf-8"), "files": len(os.listdir(folder))}


@pytest.mark.parametrize("name, why", [
    ("link", "a symbolic link, not a notebook file: not followed"),
    ("fifo", "not a regular file"),
    ("huge", "3072 MB, larger than a notebook may be (16 MB)"),
    ("cells", "400000 cells, more than a notebook may have (2000)"),
    ("list", "not a notebook (no list of cells)"),
    ("badcell", "cell 1 is not a notebook cell"),
    ("invalid", "not a readable notebook"),
    ("easier", "its metadata says lesson 00 but its file name says lesson 01"),
])
def test_a_hostile_notebook_file_is_refused_in_its_own_row(refused, name, why):
    row = refused["rows"][name]
    assert why in row["problem"], row["problem"]
    assert (row["passed"], row["total"]) == ("0", "0")


@pytest.mark.parametrize("name", ["badmeta", "dotdot"])
def test_metadata_that_is_no_lesson_falls_back_to_the_name(refused, name):
    # {"course": "01"} once aborted the batch; a path is no lesson id (only the manifest's ids are)
    assert refused["rows"][name]["lesson"] == "00"


def test_a_file_name_that_is_not_utf8_keeps_the_csv(refused):
    assert refused["rows"]["caf\\udce9"]["problem"].endswith("not a notebook (no list of cells)")
    assert len(refused["raw"]) == refused["files"] == 13  # every file of the folder has its row


def test_file_names_and_messages_cannot_forge_a_row_or_a_formula(refused):
    # one stdout line per submission plus "wrote": a newline in a name makes no extra row
    assert len(refused["stdout"].splitlines()) == len(refused["raw"]) + 1
    assert "\x1b" not in refused["stdout"] + refused["csv_text"] and "\u202e" not in refused["stdout"] + refused["csv_text"]
    assert "\\x1b[1A" in refused["stdout"] and "\\x0a" in refused["stdout"]  # shown escaped, not lost
    formula = [r for r in refused["raw"] if "calc" in r["notebook"]]
    assert len(formula) == 1 and formula[0]["notebook"] == "'" + FORMULA
    assert not any(value.startswith(("=", "+", "-", "@")) for r in refused["raw"] for value in r.values())
